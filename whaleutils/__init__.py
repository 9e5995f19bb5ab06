"""whaleutils: the shared library of the whale and dolphin photo-identification notebooks.

Modules: ``data`` (format, species, labels, folds), ``validate``, ``prepare`` (a researcher's
catalogue), ``synth`` (the synthetic data set), ``metrics`` (MAP@5), ``submission``,
``baselines``. Run ``python -m whaleutils --help`` for the command line.
"""

__version__ = "0.1.0"
