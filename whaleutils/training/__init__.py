"""Models and training: layers (ArcFace), backbones (``models``, ``efficientnet_lite``,
``torchfile``), schedules, devices (``distribute``) and the fit loop (``train``).
"""
