"""Exploratory analysis of a Happywhale-format data set: tables and matplotlib figures."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from whaleutils.datasets.data import parse_box

# Claims of the paper about the competition data, checked against the data loaded.
PAPER_IMAGES = 51_033
PAPER_INDIVIDUALS = 15_587
PAPER_TOP5_SHARE = 0.647


def species_counts(train: pd.DataFrame) -> pd.DataFrame:
    """Images per normalised species and per raw spelling, most frequent first."""
    raw = train.groupby(["species", "species_raw"]).size().rename("images").reset_index()
    totals = train["species"].value_counts()
    raw["species_images"] = raw["species"].map(totals)
    return raw.sort_values(["species_images", "images"], ascending=False).reset_index(drop=True)


def paper_claims(train: pd.DataFrame) -> pd.DataFrame:
    """The paper's statements about the data next to the values computed here.

    The top-five share is computed on the normalised species and on the raw spellings (the
    paper does not say which it used).
    """
    normalised_top5 = train["species"].value_counts().head(5).sum() / len(train)
    raw_top5 = train["species_raw"].value_counts().head(5).sum() / len(train)
    rows = [
        ("training images", PAPER_IMAGES, len(train)),
        ("individuals", PAPER_INDIVIDUALS, train["individual_id"].nunique()),
        (
            "top five species' share of images (normalised species)",
            PAPER_TOP5_SHARE,
            round(normalised_top5, 4),
        ),
        ("top five species' share of images (raw spellings)", PAPER_TOP5_SHARE, round(raw_top5, 4)),
    ]
    table = pd.DataFrame(rows, columns=["claim", "paper", "this data"])
    table["agrees"] = [
        math.isclose(float(p), float(o), rel_tol=0, abs_tol=0.0005 if p < 1 else 0)
        for p, o in zip(table["paper"], table["this data"], strict=True)
    ]
    return table


def plot_species(train: pd.DataFrame):
    """Bar chart of images per species, raw spellings stacked in their species' bar."""
    table = species_counts(train)
    order = table.drop_duplicates("species")["species"].tolist()
    figure, axis = plt.subplots(figsize=(10, 6))
    left = pd.Series(0, index=order, dtype=float)
    for raw_name, rows in table.groupby("species_raw", sort=False):
        values = rows.set_index("species")["images"].reindex(order).fillna(0)
        typo = raw_name not in order
        axis.barh(
            order,
            values,
            left=left,
            color="tab:red" if typo else "tab:blue",
            label="raw spelling (typo or alias)" if typo else None,
        )
        left += values
    handles, labels = axis.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        axis.legend(unique.values(), unique.keys())
    axis.invert_yaxis()
    axis.set_xlabel("images")
    axis.set_title("Images per species (red: photos filed under a typo or alias)")
    figure.tight_layout()
    return figure


def plot_photos_per_individual(train: pd.DataFrame):
    """Histogram of photos per individual on log axes: the long tail."""
    photos = train["individual_id"].value_counts()
    figure, axis = plt.subplots(figsize=(8, 4.5))
    bins = np.unique(np.logspace(0, np.log10(photos.max() + 1), 30).astype(int))
    axis.hist(photos, bins=bins, color="tab:blue")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("photos of the individual")
    axis.set_ylabel("individuals")
    single = int((photos == 1).sum())
    axis.set_title(
        f"{len(photos):,} individuals; {single:,} ({single / len(photos):.0%}) have a single photo"
    )
    figure.tight_layout()
    return figure


def box_sizes(train: pd.DataFrame, image_dir: Path | None = None) -> pd.DataFrame:
    """Box width and height in pixels (and as a share of the image when ``image_dir`` is given)."""
    rows = []
    for image, text in zip(train["image"], train["box"], strict=True):
        box = parse_box(text)
        if box is None:
            continue
        row = {"image": image, "box_width": box[2] - box[0], "box_height": box[3] - box[1]}
        if image_dir is not None:
            with Image.open(Path(image_dir) / image) as photo:
                width, height = photo.size
            row["area_share"] = row["box_width"] * row["box_height"] / (width * height)
        rows.append(row)
    return pd.DataFrame(rows, columns=["image", "box_width", "box_height", "area_share"])


def plot_box_sizes(boxes: pd.DataFrame):
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].scatter(boxes["box_width"], boxes["box_height"], s=4, alpha=0.4)
    axes[0].set_xlabel("box width (px)")
    axes[0].set_ylabel("box height (px)")
    axes[0].set_title(f"{len(boxes):,} boxes")
    if boxes["area_share"].notna().any():
        axes[1].hist(boxes["area_share"].dropna(), bins=30, color="tab:green")
        axes[1].set_xlabel("box area / image area")
        axes[1].set_title("How much of the photo the animal fills")
    else:
        axes[1].set_axis_off()
    figure.tight_layout()
    return figure


def plot_samples(
    train: pd.DataFrame,
    image_dir: Path,
    species: list[str],
    per_species: int = 4,
    seed: int = 0,
    thumbnail: int = 160,
):
    """A grid of photos: one row per species, boxes drawn in red."""
    rng = np.random.default_rng(seed)
    figure, axes = plt.subplots(
        len(species), per_species, figsize=(2.4 * per_species, 2.0 * len(species)), squeeze=False
    )
    for row, name in enumerate(species):
        rows = train[train["species"] == name]
        picked = rows.iloc[rng.permutation(len(rows))[:per_species]]
        for column in range(per_species):
            axis = axes[row, column]
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(name.replace("_", " "), fontsize=8)
            if column >= len(picked):
                axis.set_axis_off()
                continue
            record = picked.iloc[column]
            with Image.open(Path(image_dir) / record["image"]) as photo:
                scale = thumbnail / max(photo.size)
                axis.imshow(
                    photo.convert("RGB").resize(
                        (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
                    )
                )
            box = parse_box(record["box"])
            if box is not None:
                left, top, right, bottom = (v * scale for v in box)
                axis.add_patch(
                    plt.Rectangle(
                        (left, top),
                        right - left,
                        bottom - top,
                        fill=False,
                        color="red",
                        linewidth=1,
                    )
                )
    figure.tight_layout()
    return figure
