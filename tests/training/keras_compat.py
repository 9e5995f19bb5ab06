"""The two halves of the cross-version test (``test_models.py``), each in its own process.

``python keras_compat.py save FOLDER`` (Keras on JAX, ``mixed_bfloat16``, as on Kaggle's TPUs):
trains a small EfficientNet + ArcFace model for one epoch, saves its embedding model with
``models.save_model`` and writes ``photos.npy``, ``bfloat16.npy`` (the embeddings as trained) and
``float32.npy`` (the same weights rebuilt in float32 on JAX).

``python keras_compat.py load FOLDER`` (any Keras, e.g. 3.10 on TensorFlow, as on Kaggle's GPU
image): loads the model with ``models.load_model`` and writes ``loaded.npy`` and ``report.json``
(the Keras version and file, the backend, the loaded model's dtype policies, and what loading
the ``.keras`` file alone said).
"""

import json
import sys
from pathlib import Path

import keras
import numpy as np

MODEL = "embedding_model.keras"


def save(folder: Path) -> None:
    from whaleutils.training import models, train

    keras.config.set_dtype_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    training_model, embedding_model = models.build_model(
        "keras-efficientnet-b0", n_classes=4, image_size=32, embedding_dim=16
    )  # the kaggle profile's keras.applications EfficientNet, at the smallest size
    train.compile_model(training_model, 1e-3)
    rng = np.random.default_rng(0)
    photos = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    labels = (np.arange(8) % 4).astype("int32")
    training_model.fit({"image": photos, "label": labels}, labels, batch_size=8, verbose=0)
    models.save_model(embedding_model, folder / MODEL)
    np.save(folder / "photos.npy", photos)
    np.save(folder / "bfloat16.npy", embedding_model.predict(photos, verbose=0))
    keras.config.set_dtype_policy("float32")
    np.save(folder / "float32.npy", models.load_model(folder / MODEL).predict(photos, verbose=0))


def load(folder: Path) -> None:
    from whaleutils.training import models

    model = models.load_model(folder / MODEL)
    np.save(folder / "loaded.npy", model.predict(np.load(folder / "photos.npy"), verbose=0))
    recipe, _ = models.portable_files(folder / MODEL)
    recipe.rename(recipe.with_name("set-aside.json"))  # the .keras file alone
    try:
        models.load_model(folder / MODEL)
        keras_file = "loaded"
    except ValueError as error:
        keras_file = str(error)
    report = {
        "keras_version": keras.__version__,
        "keras_file": keras.__file__,
        "backend": keras.backend.backend(),
        "policies": sorted({layer.dtype_policy.name for layer in model._flatten_layers()}),
        "keras_file_alone": keras_file,
    }
    (folder / "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    {"save": save, "load": load}[sys.argv[1]](Path(sys.argv[2]))
