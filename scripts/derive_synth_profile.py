"""Derive the synthetic generator's label profile from the real Happywhale metadata.

Reads the competition's ``train.csv`` and ``test_image_sizes.csv`` and writes counts only (no
rows, no image names, no individual ids) to ``whaleutils/resources/synth_profile.json``:

- per normalised species: the raw spellings with their image counts, and the histogram of
  photos per individual (photos -> number of individuals);
- the test images' sizes, binned to 64 px, with counts.

Usage::

    python scripts/derive_synth_profile.py ../shared/data/happywhale [--out PATH]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from whaleutils.datasets.data import normalize_species

SIZE_BIN_PX = 64
DEFAULT_OUT = (
    Path(__file__).resolve().parents[1] / "whaleutils" / "resources" / "synth_profile.json"
)


def derive_profile(train: pd.DataFrame, sizes: pd.DataFrame) -> dict:
    train = train.assign(species_norm=normalize_species(train["species"]))
    species = {}
    for name, rows in sorted(train.groupby("species_norm")):
        photos = rows["individual_id"].value_counts()
        histogram = photos.value_counts().sort_index()
        species[name] = {
            "raw_names": {k: int(v) for k, v in rows["species"].value_counts().items()},
            "photos_per_individual": {str(k): int(v) for k, v in histogram.items()},
        }
    binned = pd.DataFrame(
        {
            "width": (sizes["width"] // SIZE_BIN_PX) * SIZE_BIN_PX + SIZE_BIN_PX // 2,
            "height": (sizes["height"] // SIZE_BIN_PX) * SIZE_BIN_PX + SIZE_BIN_PX // 2,
        }
    )
    size_counts = binned.value_counts().sort_index()
    return {
        "source": "Happywhale train.csv and test image sizes (counts only)",
        "n_images": int(len(train)),
        "n_individuals": int(train["individual_id"].nunique()),
        "species": species,
        "test_image_sizes": {
            "bin_px": SIZE_BIN_PX,
            "sizes": [[int(w), int(h), int(c)] for (w, h), c in size_counts.items()],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "metadata_dir", type=Path, help="folder with train.csv, test_image_sizes.csv"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    train = pd.read_csv(args.metadata_dir / "train.csv")
    sizes = pd.read_csv(args.metadata_dir / "test_image_sizes.csv")
    profile = derive_profile(train, sizes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(profile, separators=(",", ":")) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes): {len(profile['species'])} species")


if __name__ == "__main__":
    main()
