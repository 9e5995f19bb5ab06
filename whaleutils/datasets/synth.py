"""A synthetic data set in Happywhale's format, generated offline and deterministically.

Labels follow the real competition's statistics (``resources/synth_profile.json``, derived by
``scripts/derive_synth_profile.py`` from counts in the real ``train.csv``): the species mix,
the long tail of photos per individual (many single-photo individuals) and the raw species
spellings with their typos. Test image sizes follow the real test images' sizes.

Each photo renders one animal. The species decides the body (a humpback-like fluke, a dorsal fin
rising from the water, a beluga's white head and back, a rorqual's long back) and its colours;
the individual decides stable marks: notches cut into the trailing edge, scars, pigment patches
and small shape differences. Each photo then varies position, scale, rotation, partial crop,
waterline, water texture, lighting, colour cast, blur and sometimes grayscale, so that raw
pixels do not identify the animal but its marks do.

The files written are those of :mod:`whaleutils.datasets.data` plus ``test_solution.csv`` (image,
individual_id, species; ``new_individual`` for individuals absent from train),
``test_boxes.csv`` (the test photos' boxes, standing in for a detector's) and ``synth.json``
(the parameters and counts).
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from whaleutils.contracts import outputs
from whaleutils.datasets import data
from whaleutils.datasets.data import format_box
from whaleutils.datasets.encounters import ENCOUNTER_COLUMNS

FORMAT = 2  # 2: photos in encounters (sharing a scene) with their metadata; 1: photos alone
TEMPLATE_SIZE = (320, 200)  # (width, height) of an individual's canonical rendering
SUPERSAMPLE = 2  # templates are drawn at this multiple, then downsampled (anti-aliasing)

# Body family and colours per species: (family, body RGB, mark RGB). Marks are the pigment
# patches and scars; white-on-dark for most, grey-on-white for belugas.
SPECIES_LOOK = {
    "beluga": ("head", (226, 226, 218), (150, 150, 145)),
    "blue_whale": ("back", (96, 112, 128), (150, 165, 175)),
    "bottlenose_dolphin": ("dorsal", (110, 115, 122), (190, 190, 190)),
    "brydes_whale": ("back", (70, 72, 78), (140, 140, 140)),
    "commersons_dolphin": ("dorsal", (30, 30, 32), (235, 235, 235)),
    "common_dolphin": ("dorsal", (58, 60, 70), (205, 190, 140)),
    "cuviers_beaked_whale": ("back", (120, 100, 85), (215, 210, 200)),
    "dusky_dolphin": ("dorsal", (45, 50, 60), (200, 205, 210)),
    "false_killer_whale": ("dorsal", (35, 35, 38), (130, 130, 135)),
    "fin_whale": ("back", (80, 84, 90), (185, 185, 180)),
    "frasiers_dolphin": ("dorsal", (75, 80, 92), (190, 195, 205)),
    "gray_whale": ("fluke", (115, 118, 115), (200, 200, 190)),
    "humpback_whale": ("fluke", (30, 30, 34), (240, 240, 236)),
    "killer_whale": ("dorsal", (18, 18, 20), (175, 175, 180)),
    "long_finned_pilot_whale": ("dorsal", (28, 30, 34), (150, 150, 155)),
    "melon_headed_whale": ("dorsal", (40, 42, 48), (140, 140, 150)),
    "minke_whale": ("back", (65, 68, 74), (210, 210, 210)),
    "pantropic_spotted_dolphin": ("dorsal", (70, 76, 90), (210, 210, 215)),
    "pygmy_killer_whale": ("dorsal", (38, 38, 44), (160, 160, 165)),
    "rough_toothed_dolphin": ("dorsal", (72, 70, 80), (215, 205, 215)),
    "sei_whale": ("back", (62, 66, 74), (170, 175, 180)),
    "short_finned_pilot_whale": ("dorsal", (25, 26, 30), (120, 120, 126)),
    "southern_right_whale": ("fluke", (22, 22, 24), (210, 205, 190)),
    "spinner_dolphin": ("dorsal", (82, 86, 96), (200, 200, 205)),
    "spotted_dolphin": ("dorsal", (88, 92, 105), (225, 225, 230)),
    "white_sided_dolphin": ("dorsal", (45, 48, 56), (215, 215, 215)),
}

WATER_COLOURS = np.array(
    [
        (30, 70, 110),
        (40, 90, 120),
        (25, 60, 80),
        (60, 95, 105),
        (70, 90, 100),
        (20, 50, 70),
        (90, 110, 120),
        (45, 85, 90),
    ],
    dtype=np.float32,
)


@dataclass(frozen=True)
class SynthConfig:
    """Everything that decides a synthetic data set; one config gives identical bytes.

    Attributes
    ----------
    seed : random seed
    individuals : number of individuals in train
    max_side : longest image side in pixels (real sizes are scaled down to it, never up)
    max_photos : cap on one individual's training photos (the real maximum, 400, would let one
        animal dominate a small set)
    test_ratio : expected test photos per training photo of a known individual
    new_share : share of test images that show individuals absent from train
    """

    seed: int = 0
    individuals: int = 500
    max_side: int = 512
    max_photos: int = 20
    test_ratio: float = 0.25
    new_share: float = 0.15

    def __post_init__(self):
        if self.individuals < 5:
            raise ValueError(f"individuals must be at least 5, got individuals={self.individuals}")
        if not 32 <= self.max_side <= 4096:
            raise ValueError(f"max_side must be in [32, 4096] pixels, got max_side={self.max_side}")
        if self.max_photos < 1:
            raise ValueError(f"max_photos must be >= 1, got max_photos={self.max_photos}")
        if not 0 < self.test_ratio <= 1:
            raise ValueError(f"test_ratio must be in (0, 1], got test_ratio={self.test_ratio}")
        if not 0 <= self.new_share < 1:
            raise ValueError(f"new_share must be in [0, 1), got new_share={self.new_share}")


@lru_cache(maxsize=1)
def load_profile() -> dict:
    """The label profile shipped with the package (counts derived from the real train.csv)."""
    text = resources.files("whaleutils").joinpath("resources/synth_profile.json").read_text()
    return json.loads(text)


def _hex_names(rng: np.random.Generator, count: int, length: int, taken: set[str]) -> list[str]:
    names = []
    while len(names) < count:
        name = "".join(rng.choice(list("0123456789abcdef"), size=length))
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


def plan_labels(config: SynthConfig) -> pd.DataFrame:
    """Draw the label structure: one row per photo, before any pixel is rendered.

    Returns
    -------
    DataFrame
        Columns ``image, split ("train"/"test"), individual_id, individual_index, species,
        species_raw, is_new, encounter_index``, the encounter columns
        (``encounters.ENCOUNTER_COLUMNS``) and ``width, height`` (one size per encounter);
        train rows first.
    """
    profile = load_profile()
    rng = np.random.default_rng([config.seed, 0])
    species_names = sorted(profile["species"])
    individuals_per_species = np.array(
        [sum(profile["species"][s]["photos_per_individual"].values()) for s in species_names],
        dtype=float,
    )
    species_p = individuals_per_species / individuals_per_species.sum()

    def draw_individual():
        species = species_names[rng.choice(len(species_names), p=species_p)]
        histogram = profile["species"][species]["photos_per_individual"]
        photos = np.array([int(k) for k in histogram])
        weights = np.array(list(histogram.values()), dtype=float)
        n_photos = int(rng.choice(photos, p=weights / weights.sum()))
        return species, min(n_photos, config.max_photos)

    rows = []  # (individual_index, species, n_train, n_test, is_new)
    for index in range(config.individuals):
        species, n_train = draw_individual()
        rows.append((index, species, n_train, int(rng.binomial(n_train, config.test_ratio)), False))
    known_test = sum(r[3] for r in rows)
    target_new = config.new_share / (1 - config.new_share) * known_test
    new_test = 0
    while new_test < target_new:
        species, n_photos = draw_individual()
        rows.append((len(rows), species, 0, n_photos, True))
        new_test += n_photos

    taken: set[str] = set()
    ids = _hex_names(rng, len(rows), 12, taken)
    size_table = np.array(profile["test_image_sizes"]["sizes"], dtype=float)
    bin_px = profile["test_image_sizes"]["bin_px"]
    records = []
    for split in ("train", "test"):
        for index, species, n_train, n_test, is_new in rows:
            count = n_train if split == "train" else n_test
            raw = profile["species"][species]["raw_names"]
            raw_names, raw_weights = list(raw), np.array(list(raw.values()), dtype=float)
            for _ in range(count):
                records.append(
                    {
                        "split": split,
                        "individual_id": ids[index],
                        "individual_index": index,
                        "species": species,
                        "species_raw": raw_names[
                            rng.choice(len(raw_names), p=raw_weights / raw_weights.sum())
                        ],
                        "is_new": is_new,
                    }
                )
    plan = pd.DataFrame.from_records(records)
    plan.insert(0, "image", [f"{name}.jpg" for name in _hex_names(rng, len(plan), 14, taken)])
    plan = _plan_encounters(plan, rng)
    encounters = int(plan["encounter_index"].max()) + 1  # one camera each: one photo size
    picked = rng.choice(
        len(size_table), size=encounters, p=size_table[:, 2] / size_table[:, 2].sum()
    )
    jitter = rng.uniform(-bin_px / 2, bin_px / 2, size=(encounters, 2))
    original = np.maximum(size_table[picked, :2] + jitter, 32)
    scale = np.minimum(1.0, config.max_side / original.max(axis=1))
    sizes = np.maximum(np.round(original * scale[:, None]), 16).astype(int)[plan["encounter_index"]]
    plan["width"], plan["height"] = sizes[:, 0], sizes[:, 1]
    return plan


# Encounters: a season of surveys at a few sites (the training photos one year, the test photos
# the next), a handful of photographers; the viewpoints each kind of look is photographed from.
SITES = (
    ("Stellwagen Bank", 42.35, -70.35),
    ("Great South Channel", 41.25, -69.30),
    ("Bay of Fundy", 44.75, -66.60),
    ("Cape Cod Bay", 41.90, -70.30),
)
SEASON_STARTS = {"train": date(2024, 5, 1), "test": date(2025, 5, 1)}
SEASON_DAYS = 153  # May to September
PHOTOGRAPHERS = ("A. Rivera", "B. Chen", "C. Okafor", "D. Larsen", "E. Silva")
FAMILY_VIEWPOINTS = {
    "dorsal": ("left", "right"), "back": ("left", "right"), "fluke": ("fluke",), "head": ("top",)
}  # fmt: skip
MEAN_ENCOUNTER_PHOTOS = 2.0  # photos of one sighting: 1 + Poisson(1)


def _plan_encounters(plan: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Deal each individual's photos of each split into encounters (1 + Poisson(1) photos)
    and give every encounter a date in its split's season, a site (coordinates within about
    5 km of it), a photographer and a viewpoint of its species' look."""
    plan = plan.copy()
    encounter_of = np.zeros(len(plan), np.int64)
    records = []  # one per encounter
    for (_, _), rows in plan.groupby(["split", "individual_index"], sort=False):
        positions = rows.index.to_numpy()
        start = 0
        while start < len(positions):
            size = 1 + int(rng.poisson(MEAN_ENCOUNTER_PHOTOS - 1))
            members = positions[start : start + size]
            encounter_of[members] = len(records)
            site, latitude, longitude = SITES[rng.integers(len(SITES))]
            split, species = plan.at[members[0], "split"], plan.at[members[0], "species"]
            day = SEASON_STARTS[split] + timedelta(days=int(rng.integers(SEASON_DAYS)))
            views = FAMILY_VIEWPOINTS[SPECIES_LOOK[species][0]]
            records.append({
                "encounter": f"enc{len(records):05d}", "date": day.isoformat(),
                "latitude": f"{latitude + rng.normal(0, 0.03):.4f}",
                "longitude": f"{longitude + rng.normal(0, 0.04):.4f}", "location": site,
                "photographer": PHOTOGRAPHERS[rng.integers(len(PHOTOGRAPHERS))],
                "viewpoint": views[rng.integers(len(views))],
            })  # fmt: skip
            start += size
    plan["encounter_index"] = encounter_of
    return plan.join(pd.DataFrame.from_records(records), on="encounter_index")


# ---------------------------------------------------------------- rendering an individual


@dataclass(frozen=True)
class Marks:
    """An individual's stable appearance, in template coordinates scaled to [0, 1]."""

    shape: tuple[float, float]  # (height factor, sweep) of fin or fluke
    notches: tuple[tuple[float, float, float], ...]  # (position along edge, depth, width)
    patches: tuple[tuple[float, float, float, float, float], ...]  # (cx, cy, rx, ry, angle)
    scars: tuple[tuple[float, float, float, float], ...]  # (x0, y0, x1, y1)


def draw_marks(rng: np.random.Generator, family: str) -> Marks:
    n_patches = int(rng.integers(2, 7)) if family != "back" else int(rng.integers(6, 14))
    return Marks(
        shape=(float(rng.uniform(0.8, 1.2)), float(rng.uniform(-0.12, 0.12))),
        notches=tuple(
            (
                float(rng.uniform(0.1, 0.9)),
                float(rng.uniform(0.04, 0.11)),
                float(rng.uniform(0.02, 0.06)),
            )
            for _ in range(int(rng.integers(1, 5)))
        ),
        patches=tuple(
            (
                float(rng.uniform(0.1, 0.9)),
                float(rng.uniform(0.2, 0.9)),
                float(rng.uniform(0.03, 0.12)),
                float(rng.uniform(0.03, 0.09)),
                float(rng.uniform(0, 180)),
            )
            for _ in range(n_patches)
        ),
        scars=tuple(
            tuple(float(v) for v in rng.uniform(0.1, 0.9, size=4))
            for _ in range(int(rng.integers(0, 4)))
        ),
    )


def _body_outline(family: str, shape: tuple[float, float]) -> tuple[list, list]:
    """Body polygon and its trailing edge (where notches are cut), in [0, 1] coordinates."""
    height, sweep = shape
    t = np.linspace(0, 1, 24)
    if family == "fluke":
        # Two lobes seen from behind; the trailing edge runs tip - centre notch - tip.
        tip_y = 0.5 - 0.35 * height
        left_edge = [
            (0.03 + 0.45 * s, tip_y + (0.33 - tip_y) * s + 0.05 * math.sin(math.pi * s)) for s in t
        ]
        right_edge = [(1 - x, y) for x, y in left_edge[::-1]]
        lower = [(0.56, 0.62), (0.55, 0.98), (0.45, 0.98), (0.44, 0.62), (0.25, 0.5 + sweep)]
        outline = left_edge + [(0.5, 0.4)] + right_edge + [(0.75, 0.5 - sweep)] + lower
        return outline, left_edge + right_edge
    if family == "dorsal":
        # A falcate fin on a back arc rising from the water.
        tip = (0.55 + sweep, 0.92 - 0.82 * height)
        back = [(x, 1.0 - 0.32 * math.sin(math.pi * x)) for x in np.linspace(0, 1, 20)]
        leading = [(0.3 + (tip[0] - 0.3) * s, 0.75 - (0.75 - tip[1]) * s**0.7) for s in t]
        trailing = [
            (
                tip[0] + (0.68 - tip[0]) * s + 0.07 * math.sin(math.pi * s),
                tip[1] + (0.72 - tip[1]) * s,
            )
            for s in t
        ]
        outline = back[:7] + leading + trailing + back[13:] + [(1.0, 1.0), (0.0, 1.0)]
        return outline, trailing
    if family == "head":
        # A beluga's rounded melon and back, seen from the side above the water.
        outline = [
            (0.05 + 0.9 * s, 0.95 - (0.45 + 0.2 * height) * math.sin(math.pi * s) ** 0.6) for s in t
        ]
        melon = [
            (0.95 - 0.12 * math.sin(math.pi * s), 0.55 + 0.4 * s) for s in np.linspace(0, 1, 8)
        ]
        return outline + melon + [(0.05, 1.0)], outline[2:-2]
    # "back": a long rorqual back with a small fin near the tail.
    base = [(s, 0.98 - 0.35 * math.sin(math.pi * s * 0.9)) for s in np.linspace(0, 1, 30)]
    fin_x = 0.72 + sweep / 2
    fin = [(fin_x - 0.06, 0.7), (fin_x + 0.02, 0.72 - 0.3 * height), (fin_x + 0.07, 0.72)]
    outline = (
        [p for p in base if p[0] < fin_x - 0.06] + fin + [p for p in base if p[0] > fin_x + 0.07]
    )
    trailing = [(fin_x + 0.02 + 0.05 * s, 0.72 - 0.3 * height * (1 - s)) for s in t]
    return outline + [(1.0, 1.0), (0.0, 1.0)], trailing


@lru_cache(maxsize=4096)
def render_template(seed: int, individual_index: int, species: str) -> Image.Image:
    """An individual's canonical RGBA rendering; identical for every photo of it."""
    family, body_rgb, mark_rgb = SPECIES_LOOK[species]
    rng = np.random.default_rng([seed, 1, individual_index])
    marks = draw_marks(rng, family)
    width, height = TEMPLATE_SIZE[0] * SUPERSAMPLE, TEMPLATE_SIZE[1] * SUPERSAMPLE

    def px(points):
        return [(x * width, y * height) for x, y in points]

    outline, trailing = _body_outline(family, marks.shape)
    alpha = Image.new("L", (width, height), 0)
    draw_alpha = ImageDraw.Draw(alpha)
    draw_alpha.polygon(px(outline), fill=255)
    edge = np.array(trailing)
    cumulative = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(edge, axis=0).T))])
    for position, depth, notch_width in marks.notches:
        # A triangular bite into the trailing edge, pointing into the body.
        at = np.interp(position * cumulative[-1], cumulative, np.arange(len(edge)))
        i = min(int(at), len(edge) - 2)
        point = edge[i] + (at - i) * (edge[i + 1] - edge[i])
        tangent = (edge[i + 1] - edge[i]) / (np.linalg.norm(edge[i + 1] - edge[i]) + 1e-9)
        normal = np.array([tangent[1], -tangent[0]])
        centroid = np.mean(np.array(outline), axis=0)
        if np.dot(centroid - point, normal) < 0:
            normal = -normal
        bite = [
            point - tangent * notch_width,
            point + normal * depth,
            point + tangent * notch_width,
            point + tangent * notch_width - normal * 0.05,
            point - tangent * notch_width - normal * 0.05,
        ]
        draw_alpha.polygon(px(bite), fill=0)

    # Lit from above: one shaded column, stretched across the width.
    shade = np.linspace(1.12, 0.82, height, dtype=np.float32)[:, None, None]
    column = np.clip(np.array(body_rgb, dtype=np.float32)[None, None, :] * shade, 0, 255)
    body = Image.fromarray(column.astype(np.uint8)).resize(
        (width, height), Image.Resampling.NEAREST
    )
    draw_body = ImageDraw.Draw(body)
    around = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    for cx, cy, rx, ry, angle in marks.patches:
        turn = np.deg2rad(angle)
        ex, ey = rx * np.cos(around), ry * np.sin(around)
        ellipse = zip(
            cx + ex * np.cos(turn) - ey * np.sin(turn),
            cy + ex * np.sin(turn) + ey * np.cos(turn),
            strict=True,
        )
        draw_body.polygon(px(ellipse), fill=mark_rgb)
    for x0, y0, x1, y1 in marks.scars:
        draw_body.line(px([(x0, y0), (x1, y1)]), fill=mark_rgb, width=max(2, width // 120))
    body.putalpha(alpha)
    return body.reduce(SUPERSAMPLE)


# ---------------------------------------------------------------- rendering a photo


def _water(
    rng: np.random.Generator, width: int, height: int, scene: np.random.Generator
) -> Image.Image:
    """Water texture: a base colour (the ``scene``'s: one sea for an encounter), slow swell,
    ripples and grain (``rng``'s: the water moves between two photos).

    Drawn at half resolution and upsampled: the texture has no detail finer than that, and it
    halves the cost of the most expensive step of a photo.
    """
    small_w, small_h = max(2, width // 2), max(2, height // 2)
    base = WATER_COLOURS[scene.integers(len(WATER_COLOURS))] * scene.uniform(0.7, 1.3)
    coarse = rng.normal(0, 1, size=(4, 6)).astype(np.float32)
    swell = (
        np.asarray(
            Image.fromarray(((coarse + 3) * 40).clip(0, 255).astype(np.uint8)).resize(
                (small_w, small_h), Image.Resampling.BICUBIC
            ),
            dtype=np.float32,
        )
        / 40
        - 3
    )
    y = np.arange(small_h, dtype=np.float32)[:, None]
    x = np.arange(small_w, dtype=np.float32)[None, :]
    frequency = rng.uniform(0.1, 0.6) * 256 / max(small_w, small_h)
    ripples = np.sin(y * frequency + 3 * np.sin(x * frequency * 0.15 + rng.uniform(0, 6)))
    grain = rng.normal(0, 4, size=(small_h, small_w)).astype(np.float32)
    texture = 12 * swell + rng.uniform(4, 14) * ripples + grain
    pixels = np.clip(base[None, None, :] + texture[..., None], 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR)


def render_photo(row: dict, seed: int) -> tuple[bytes, tuple[int, int, int, int] | None]:
    """Render one planned photo: JPEG bytes and the animal's box (left, top, right, bottom).

    The photos of one encounter (``encounter_index``) share a scene, as a burst of photos of
    one sighting does: the sea's colour, the light, the colour cast, blur and grayscale, the
    pose and the framing's scale; each photo moves the water, the pose a little and the
    animal in the frame. A ``right`` viewpoint shows the individual's marks mirrored."""
    rng = np.random.default_rng([seed, 2, int(row["photo_index"])])
    scene = np.random.default_rng([seed, 3, int(row.get("encounter_index", row["photo_index"]))])
    width, height = int(row["width"]), int(row["height"])
    family = SPECIES_LOOK[row["species"]][0]
    template = render_template(seed, int(row["individual_index"]), row["species"])
    if row.get("viewpoint") == "right":  # the other flank: its marks seen mirrored
        template = template.transpose(Image.Transpose.FLIP_LEFT_RIGHT)

    # Pose and framing: scale to a share of the frame, rotate, place (sometimes cut by the edge).
    angle = float(np.clip(scene.normal(0, 12) + rng.normal(0, 3), -30, 30))
    animal = template.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    share = float(np.clip(scene.uniform(0.35, 0.9) * rng.uniform(0.92, 1.08), 0.3, 0.95))
    scale = min(share * width / animal.width, 0.95 * height / animal.height)
    size = (max(4, round(animal.width * scale)), max(4, round(animal.height * scale)))
    animal = animal.resize(size, Image.Resampling.BILINEAR)
    if family in ("dorsal", "back", "head") and rng.random() < 0.6:
        # Waterline: the lower part of the body is under a wavy surface.
        alpha = np.asarray(animal.getchannel("A"), dtype=np.uint8).copy()
        xs = np.arange(size[0])
        line = size[1] * rng.uniform(0.7, 0.95) + 0.03 * size[1] * np.sin(
            xs / max(size[0], 1) * rng.uniform(4, 12)
        )
        alpha[np.arange(size[1])[:, None] > line[None, :]] = 0
        animal.putalpha(Image.fromarray(alpha))
    if rng.random() < 0.2:  # partly out of frame
        cut = rng.uniform(0.1, 0.35) * size[0]
        left = int(-cut) if rng.random() < 0.5 else int(width - size[0] + cut)
    else:
        left = int(rng.uniform(0, max(1, width - size[0])))
    top = int(rng.uniform(0, max(1, height - size[1])))

    canvas = _water(rng, width, height, scene)
    canvas.paste(animal, (left, top), animal)
    bbox = animal.getchannel("A").getbbox()
    box = None
    if bbox is not None:
        box = (
            max(0, left + bbox[0]),
            max(0, top + bbox[1]),
            min(width, left + bbox[2]),
            min(height, top + bbox[3]),
        )
        if box[0] >= box[2] or box[1] >= box[3]:
            box = None

    # Light: gain, a gradient across the frame and a colour cast; then blur and grayscale.
    pixels = np.asarray(canvas, dtype=np.float32)
    direction = scene.uniform(0, 2 * np.pi)
    across = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    down = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    light = (
        scene.uniform(0.6, 1.25)
        * rng.uniform(0.95, 1.05)
        * (1 + scene.uniform(0, 0.25) * (np.cos(direction) * across + np.sin(direction) * down))
    )
    pixels *= light.astype(np.float32)[..., None]
    pixels *= scene.uniform(0.88, 1.12, size=3).astype(np.float32)
    photo = Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8))
    if scene.random() < 0.3:
        photo = photo.filter(
            ImageFilter.GaussianBlur(radius=scene.uniform(0.5, 2.0) * max(width, height) / 512)
        )
    if scene.random() < 0.1:
        photo = photo.convert("L").convert("RGB")
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=int(rng.integers(80, 96)))
    return buffer.getvalue(), box


def _render_rows(task: tuple[list[dict], int, str]) -> list[tuple[str, str]]:
    rows, seed, out_dir = task
    boxes = []
    for row in rows:
        jpeg, box = render_photo(row, seed)
        data.Layout(out_dir).photo(row["split"], row["image"]).write_bytes(jpeg)
        boxes.append((row["image"], format_box(box)))
    return boxes


# ---------------------------------------------------------------- writing a data set


def generate(
    out_dir: str | os.PathLike, config: SynthConfig = SynthConfig(), workers: int = 1
) -> dict:
    """Write a complete synthetic data set to ``out_dir`` and return its summary.

    ``out_dir`` must not exist or be empty, unless it already holds a data set generated from
    the same config, which is then kept as it is (so pipelines can call this unconditionally).
    Images are rendered in ``workers`` processes; the bytes do not depend on ``workers``.

    Returns
    -------
    dict
        The content of ``synth.json`` (the config and counts) plus, when it was generated now,
        ``seconds``, ``images_per_second`` and ``workers``.
    """
    out_dir = Path(out_dir)
    card_path = out_dir / "synth.json"
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1, got workers={workers!r}")
    if card_path.is_file():
        card = outputs.read_json(card_path)
        if (
            card.get("config") == asdict(config)
            and card.get("format") == FORMAT
            and card.get("complete")
        ):
            return card
        raise FileExistsError(
            f"{out_dir} holds another synthetic data set ({card_path}); choose a new folder"
        )
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} exists and is not empty; synth writes only to a new or empty folder"
        )
    started = time.perf_counter()
    plan = plan_labels(config)
    plan["photo_index"] = np.arange(len(plan))
    layout = data.Layout(out_dir)
    for part in ("train", "test"):
        layout.images(part).mkdir(parents=True, exist_ok=True)

    records = plan.to_dict("records")
    chunks = [records[i : i + 64] for i in range(0, len(records), 64)]
    tasks = [(chunk, config.seed, str(out_dir)) for chunk in chunks]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.map(_render_rows, tasks)
    else:
        results = [_render_rows(task) for task in tasks]
    boxes = dict(pair for result in results for pair in result)
    plan["box"] = plan["image"].map(boxes)

    train = plan[plan["split"] == "train"]
    test = plan[plan["split"] == "test"]
    train_out = train[["image", "species_raw", "individual_id", "box", *ENCOUNTER_COLUMNS]].rename(
        columns={"species_raw": "species"}
    )
    # test_boxes.csv: what a detector would give (the competition has no test boxes)
    data.write_tables(layout, train_out, test, test_boxes=True)
    seconds = time.perf_counter() - started
    card = {
        "config": asdict(config),
        "format": FORMAT,
        "complete": True,
        "train_images": int(len(train)),
        "test_images": int(len(test)),
        "individuals_train": int(train["individual_id"].nunique()),
        "individuals_new": int(test.loc[test["is_new"], "individual_id"].nunique()),
        "test_new_share": float(test["is_new"].mean()),
        "species": int(plan["species"].nunique()),
        "encounters": int(plan["encounter"].nunique()),
    }
    card_path.write_text(json.dumps(card, indent=1) + "\n")  # no timings: same seed, same bytes
    return {
        **card,
        "seconds": round(seconds, 2),
        "images_per_second": round(len(plan) / seconds, 1),
        "workers": workers,
    }
