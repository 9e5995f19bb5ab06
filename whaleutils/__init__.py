"""whaleutils: the shared library of the whale and dolphin photo-identification notebooks.

One module per stage (the README's Layout lists them): data sets (``data``, ``validate``,
``prepare``, ``synth``), one fold (``splits``), models and training (``pipeline``, ``layers``,
``models``, ``efficientnet_lite``, ``torchfile``, ``schedules``, ``distribute``, ``train``),
embeddings and heads (``embed``, ``knn``, ``heads``), scoring and files (``metrics``,
``submission``, ``outputs``), analyses (``gradcam``, ``robustness``, ``blend``, ``eda``,
``baselines``), identification of new photos (``identify``, ``review``) and running
(``runner``, ``environment``, ``kaggle_suite``, ``cli``). Run ``python -m whaleutils --help``
for the command line.
"""

__version__ = "0.1.0"
