"""Scores and studies: the baselines, Grad-CAM, robustness and the blend (MAP@5 itself is
``contracts.metrics``).
"""
