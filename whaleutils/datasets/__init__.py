"""Data sets in Happywhale's format: the layout and readers (``data``), the synthetic set
(``synth``), your own catalogue (``prepare``), checks (``validate``), the EDA and the
baselines. No TensorFlow.
"""
