"""Scores and studies: MAP@5 (``metrics``), prediction files (``submission``), Grad-CAM,
robustness and the blend.
"""
