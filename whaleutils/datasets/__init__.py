"""Data sets in Happywhale's format: the layout and readers (``data``), the synthetic set
(``synth``), your own catalogue (``prepare``), checks (``validate``), encounters and the EDA.
No TensorFlow.
"""
