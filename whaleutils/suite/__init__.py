"""The notebook suite: the files between notebooks and their graph (``outputs``), the
papermill runner, the environment (Kaggle's mounts, backends) and Kaggle staging.
"""
