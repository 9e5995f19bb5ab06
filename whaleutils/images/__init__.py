"""Photos to model inputs: the one photo path (``photos``), ``tf.data`` pipelines
(``pipeline``) and the crop cache (``crops``).
"""
