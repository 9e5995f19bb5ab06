"""The notebook suite: the papermill runner and its summary, preflight and Kaggle staging
(the files between notebooks are ``contracts.outputs``).
"""
