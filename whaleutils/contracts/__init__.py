"""The ground floor: the file formats and facts every stage shares, importing no stage.

MAP@5 and the ``new_individual`` label (``metrics``), submissions and prediction files
(``submission``), CSV tables read with errors naming the file (``tables``), the files between
notebooks and a trained run's settings (``outputs``), and where things are on this machine or
on Kaggle (``environment``). No TensorFlow.
"""
