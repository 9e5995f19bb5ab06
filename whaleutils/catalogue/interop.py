"""A catalogue in the formats other photo-ID tools and population studies read.

- **Wild Me COCO** (Wildbook / Flukebook exports, as ``wildlife-datasets`` reads them): one
  image per photo (``file_name``, ``width``, ``height``, ``date_captured``, ``NA`` where
  unknown; ``gps_lat_captured`` / ``gps_lon_captured``) and one annotation per photo (``name``:
  the individual, ``viewpoint``, ``bbox`` [x, y, width, height], its ``segmentation`` polygon,
  ``category_id``: the species). Each annotation also carries ``whaleutils``: the catalogue
  row's cells exactly as written, so that :func:`read_coco` of :func:`coco_document` gives the
  same ``train.csv``.
- **Darwin Core** occurrences (:func:`darwin_core`): one row per photo, ``occurrenceID``,
  ``organismID``, ``eventID``, ``eventDate``, ``decimalLatitude``, ``decimalLongitude``,
  ``associatedMedia``, ...
- **Capture histories** (:func:`capture_history`): individuals x sampling occasions (1: seen),
  as a CSV and as Program MARK's ``.inp`` (:func:`mark_input`).
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from whaleutils.contracts import submission
from whaleutils.datasets import data, encounters

COCO_EXTRA = "whaleutils"  # the annotation key holding the row's own cells
UNNAMED = "____"  # Wild Me's name for an annotation of no known individual
OCCASIONS = ("day", "week", "month", "year")
# Darwin Core scientific names of the Happywhale species (vernacular names as data.py spells
# them); a species not listed keeps only its vernacularName.
SCIENTIFIC_NAMES = {
    "beluga": "Delphinapterus leucas",
    "blue_whale": "Balaenoptera musculus",
    "bottlenose_dolphin": "Tursiops truncatus",
    "brydes_whale": "Balaenoptera brydei",
    "commersons_dolphin": "Cephalorhynchus commersonii",
    "common_dolphin": "Delphinus delphis",
    "cuviers_beaked_whale": "Ziphius cavirostris",
    "dusky_dolphin": "Lagenorhynchus obscurus",
    "false_killer_whale": "Pseudorca crassidens",
    "fin_whale": "Balaenoptera physalus",
    "frasiers_dolphin": "Lagenodelphis hosei",
    "gray_whale": "Eschrichtius robustus",
    "humpback_whale": "Megaptera novaeangliae",
    "killer_whale": "Orcinus orca",
    "long_finned_pilot_whale": "Globicephala melas",
    "melon_headed_whale": "Peponocephala electra",
    "minke_whale": "Balaenoptera acutorostrata",
    "pantropic_spotted_dolphin": "Stenella attenuata",
    "pygmy_killer_whale": "Feresa attenuata",
    "rough_toothed_dolphin": "Steno bredanensis",
    "sei_whale": "Balaenoptera borealis",
    "short_finned_pilot_whale": "Globicephala macrorhynchus",
    "southern_right_whale": "Eubalaena australis",
    "spinner_dolphin": "Stenella longirostris",
}


def _table(catalogue_dir) -> tuple[data.Layout, pd.DataFrame]:
    layout = data.Layout(catalogue_dir)
    table = data.read_csv(layout.train_csv)  # every cell as written
    missing = [column for column in data.TRAIN_COLUMNS if column not in table]
    if missing:
        raise ValueError(f"{layout.train_csv}: missing column(s) {missing}")
    return layout, table


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def _new_file(path) -> Path:
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; not overwritten (choose a new file)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_new(path: Path, text: str) -> None:
    """``text`` into the new file ``path``, whole or not at all (written aside, then renamed)."""
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


# ------------------------------------------------------------------------------- COCO


def coco_document(catalogue_dir) -> dict:
    """The catalogue ``train.csv`` + ``train_images/`` as a Wild Me COCO document (a dict).

    Raises
    ------
    ValueError
        Naming the photo that cannot be read (its size is needed) or a malformed box.
    """
    layout, table = _table(catalogue_dir)
    species = sorted(set(table["species"]))
    category = {name: number for number, name in enumerate(species, start=1)}
    images, annotations = [], []
    for number, row in enumerate(table.to_dict("records"), start=1):
        path = layout.photo("train", row["image"])
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: not a readable photo ({error})") from None
        box = data.parse_box(row.get("box", ""))
        left, top, right, bottom = box if box else (0, 0, width, height)
        record = {
            "id": number, "file_name": row["image"], "width": width, "height": height,
            "date_captured": row.get("date", "").strip() or "NA",
        }  # fmt: skip
        latitude, longitude = row.get("latitude", "").strip(), row.get("longitude", "").strip()
        if latitude and longitude:
            record["gps_lat_captured"], record["gps_lon_captured"] = (
                float(latitude),
                float(longitude),
            )
        images.append(record)
        polygon = [left, top, right, top, right, bottom, left, bottom]
        viewpoint = row.get("viewpoint", "").strip() or "unknown"
        annotations.append({
            "id": number, "image_id": number, "category_id": category[row["species"]],
            "name": row["individual_id"], "viewpoint": viewpoint,
            "bbox": [left, top, right - left, bottom - top],
            "area": (right - left) * (bottom - top), "segmentation": [polygon], "iscrowd": 0,
            COCO_EXTRA: row,
        })  # fmt: skip
    return {
        "info": {"description": f"photo-ID catalogue {Path(catalogue_dir).name}",
                 "date_created": date.today().isoformat(), "version": "1.0"},
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": number, "name": name, "supercategory": "cetacean"}
            for name, number in category.items()
        ],
    }  # fmt: skip


def read_coco(annotations_path, images_dir, out_dir) -> dict:
    """A new catalogue in ``out_dir`` (``train.csv``, ``train_images/`` with the photos copied,
    an empty test part) from a Wild Me COCO file and its images folder. The cells a
    ``whaleutils`` export carries are taken as they are; otherwise the species is the
    category's name, the individual the annotation's ``name``, the box its ``bbox``, the date
    ``date_captured``, the place ``gps_lat_captured``/``gps_lon_captured``. Annotations named
    ``____`` (no known individual) are left out and counted.

    Returns a summary: ``photos``, ``individuals``, ``unnamed`` (left out).

    Raises
    ------
    ValueError
        Naming the annotation or image at fault: a photo with two annotations (a catalogue row
        is one animal in one photo), an annotation of no image or an unknown category, a photo
        missing from ``images_dir``, metadata that ``validate`` would refuse.
    FileExistsError
        If ``out_dir`` exists and is not empty.
    """
    annotations_path, images_dir, out_dir = Path(annotations_path), Path(images_dir), Path(out_dir)
    if _inside(out_dir, images_dir):
        raise ValueError(f"--out {out_dir} is inside the images folder {images_dir}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; import writes a new catalogue")
    try:
        document = json.loads(annotations_path.read_text(encoding="utf-8"))
        images = {int(image["id"]): image for image in document["images"]}
        categories = {int(c["id"]): str(c["name"]) for c in document["categories"]}
        annotations = list(document["annotations"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{annotations_path}: not a COCO file ({error!r})") from None
    rows, seen, unnamed = [], {}, 0
    for annotation in annotations:
        where = f"{annotations_path}: annotation {annotation.get('id')!r}"
        image = images.get(int(annotation.get("image_id", -1)))
        if image is None:
            raise ValueError(f"{where}: no image {annotation.get('image_id')!r}")
        name = str(image["file_name"])
        if name in seen:
            raise ValueError(
                f"{where}: photo {name} has a second annotation (also {seen[name]!r}); a "
                "catalogue row is one animal in one photo: split the photo first"
            )
        seen[name] = annotation.get("id")
        if str(annotation.get("name", UNNAMED)) == UNNAMED:
            unnamed += 1
            continue
        if int(annotation.get("category_id", -1)) not in categories:
            raise ValueError(f"{where}: unknown category {annotation.get('category_id')!r}")
        rows.append(_row_of(annotation, image, categories))
    table = pd.DataFrame(rows).fillna("")
    for name in table.get("image", []):
        if not (images_dir / name).is_file():
            raise ValueError(f"{annotations_path}: photo {name} not found in {images_dir}")
    problems = encounters.check_metadata(table, annotations_path.name) if len(table) else []
    if problems:
        raise ValueError("\n".join(problems))
    layout = data.Layout(out_dir)
    layout.images("train").mkdir(parents=True, exist_ok=True)
    layout.images("test").mkdir(exist_ok=True)
    for name in table["image"]:
        shutil.copy2(images_dir / name, layout.photo("train", name))
    table.to_csv(layout.train_csv, index=False)
    pd.DataFrame(columns=list(submission.SUBMISSION_COLUMNS)).to_csv(
        layout.sample_submission, index=False
    )
    return {
        "photos": len(table),
        "individuals": int(table["individual_id"].nunique()) if len(table) else 0,
        "unnamed": unnamed,
    }


def _row_of(annotation: dict, image: dict, categories: dict) -> dict:
    extra = annotation.get(COCO_EXTRA)
    if isinstance(extra, dict) and extra.get("image") == image["file_name"]:
        return {str(key): str(value) for key, value in extra.items()}  # as it was written
    left, top, width, height = (round(float(v)) for v in annotation["bbox"])
    row = {
        "image": str(image["file_name"]),
        "species": categories[int(annotation["category_id"])],
        "individual_id": str(annotation["name"]),
        "box": data.format_box((left, top, left + width, top + height)),
    }
    if str(image.get("date_captured", "NA")).strip() not in ("", "NA"):
        captured = str(image["date_captured"]).strip()
        row["date"] = captured.replace(" ", "T", 1)  # COCO's "YYYY-MM-DD HH:MM:SS"
    if image.get("gps_lat_captured") is not None and image.get("gps_lon_captured") is not None:
        row["latitude"] = f"{float(image['gps_lat_captured']):.6f}"
        row["longitude"] = f"{float(image['gps_lon_captured']):.6f}"
    viewpoint = str(annotation.get("viewpoint", "")).strip()
    if viewpoint and viewpoint != "unknown":
        row["viewpoint"] = {"up": "top", "down": "bottom"}.get(viewpoint, viewpoint)
    return row


# -------------------------------------------------------------------------- Darwin Core

DARWIN_CORE_COLUMNS = (
    "occurrenceID", "basisOfRecord", "organismID", "eventID", "eventDate", "decimalLatitude",
    "decimalLongitude", "geodeticDatum", "locality", "recordedBy", "scientificName",
    "vernacularName", "associatedMedia", "dynamicProperties",
)  # fmt: skip


def darwin_core(catalogue_dir) -> pd.DataFrame:
    """One Darwin Core occurrence per catalogue photo (the columns ``DARWIN_CORE_COLUMNS``):
    the photo is the occurrence (``associatedMedia``: its path in the catalogue), the
    individual the organism, the encounter the event; the viewpoint and box go into
    ``dynamicProperties`` (JSON)."""
    layout, table = _table(catalogue_dir)

    def cell(column):
        return table[column] if column in table else pd.Series("", index=table.index)

    species = data.normalize_species(table["species"])
    has_place = (cell("latitude") != "") & (cell("longitude") != "")
    extras = [
        json.dumps({k: v for k, v in (("viewpoint", view), ("box", box)) if v})
        for view, box in zip(cell("viewpoint"), cell("box"), strict=True)
    ]
    return pd.DataFrame(
        {
            "occurrenceID": table["image"],
            "basisOfRecord": "HumanObservation",
            "organismID": table["individual_id"],
            "eventID": cell("encounter"),
            "eventDate": cell("date"),
            "decimalLatitude": cell("latitude"),
            "decimalLongitude": cell("longitude"),
            "geodeticDatum": np.where(has_place, "EPSG:4326", ""),
            "locality": cell("location"),
            "recordedBy": cell("photographer"),
            "scientificName": species.map(SCIENTIFIC_NAMES).fillna(""),
            "vernacularName": species.str.replace("_", " "),
            "associatedMedia": [f"{layout.TRAIN_IMAGES}/{name}" for name in table["image"]],
            "dynamicProperties": [text if text != "{}" else "" for text in extras],
        },
        columns=list(DARWIN_CORE_COLUMNS),
    )


# ----------------------------------------------------------------------- capture history


def occasion_starts(first: date, last: date, occasion: str | int) -> list[date]:
    """The first day of each sampling occasion from ``first`` to ``last``: calendar ``day``,
    ``week`` (from ``first``), ``month`` or ``year``, or a number of days.

    >>> occasion_starts(date(2024, 1, 15), date(2024, 3, 2), "month")
    [datetime.date(2024, 1, 1), datetime.date(2024, 2, 1), datetime.date(2024, 3, 1)]
    """
    if isinstance(occasion, str) and occasion.isdigit():
        occasion = int(occasion)
    if isinstance(occasion, int):
        if occasion < 1:
            raise ValueError(f"an occasion lasts at least 1 day, got {occasion}")
        days = occasion
    elif occasion in ("day", "week"):
        days = 1 if occasion == "day" else 7
    elif occasion == "month":
        starts, current = [], date(first.year, first.month, 1)
        while current <= last:
            starts.append(current)
            current = date(current.year + current.month // 12, current.month % 12 + 1, 1)
        return starts
    elif occasion == "year":
        return [date(year, 1, 1) for year in range(first.year, last.year + 1)]
    else:
        raise ValueError(
            f"occasion must be one of {OCCASIONS} or a number of days, got {occasion!r}"
        )
    count = (last - first).days // days + 1
    return [first + timedelta(days=days * i) for i in range(count)]


def capture_history(catalogue_dir, occasion: str | int = "month") -> tuple[pd.DataFrame, int]:
    """Individuals x occasions: 1 where the individual was photographed in that occasion.

    Returns (the matrix: index ``individual_id``, one column per occasion named by its first
    day; the number of photos left out because they have no date).

    Raises
    ------
    ValueError
        If the catalogue has no ``date`` column or no dated photo, or a date is malformed
        (naming the line).
    """
    _, table = _table(catalogue_dir)
    if "date" not in table:
        raise ValueError(f"{catalogue_dir}: train.csv has no date column: no capture history")
    dated = table[table["date"].str.strip() != ""]
    if dated.empty:
        raise ValueError(f"{catalogue_dir}: no photo of the catalogue has a date")
    days = []
    for line, text in zip(dated.index + 2, dated["date"], strict=True):
        try:
            days.append(encounters.parse_date(text))
        except ValueError as error:
            raise ValueError(f"train.csv line {line}: {error}") from None
    starts = occasion_starts(min(days), max(days), occasion)
    column = (
        np.searchsorted(np.array(starts, "datetime64[D]"), np.array(days, "datetime64[D]"), "right")
        - 1
    )
    ids = sorted(set(dated["individual_id"]))
    matrix = np.zeros((len(ids), len(starts)), np.int8)
    row_of = {individual: i for i, individual in enumerate(ids)}
    matrix[[row_of[i] for i in dated["individual_id"]], column] = 1
    frame = pd.DataFrame(matrix, index=pd.Index(ids, name="individual_id"),
                         columns=[s.isoformat() for s in starts])  # fmt: skip
    return frame, len(table) - len(dated)


def mark_input(history: pd.DataFrame) -> str:
    """The capture history in Program MARK's ``.inp`` format: per individual its encounter
    history, a frequency of 1 and ``;``, the id as a comment."""
    lines = [f"/* occasions: {', '.join(history.columns)} */"]
    for individual, row in history.iterrows():
        safe = str(individual).replace("*/", "* /")
        lines.append(f"{''.join(map(str, row.to_numpy()))} 1; /* {safe} */")
    return "\n".join(lines) + "\n"


def write_export(catalogue_dir, out, format: str, occasion: str | int = "month") -> dict:
    """``export``'s work: the catalogue as ``format`` (``coco``, ``dwc``, ``capture-history``)
    in the new file ``out`` (capture histories: ``out`` as CSV and ``out`` with ``.inp`` for
    MARK). Returns what was written, for the command's report.

    Raises
    ------
    ValueError
        If ``out`` lies inside the catalogue (no command writes into a data set it reads).
    """
    if _inside(out, catalogue_dir):
        raise ValueError(
            f"--out {out} is inside the catalogue {catalogue_dir}: choose another place"
        )
    if format == "coco":
        document = coco_document(catalogue_dir)
        out = _new_file(out)
        _write_new(out, json.dumps(document, indent=1) + "\n")
        return {"files": [out], "photos": len(document["images"])}
    if format == "dwc":
        table = darwin_core(catalogue_dir)
        out = _new_file(out)
        _write_new(out, table.to_csv(index=False))
        return {"files": [out], "photos": len(table)}
    if format == "capture-history":
        history, undated = capture_history(catalogue_dir, occasion)
        out = _new_file(out)
        inp = _new_file(Path(out).with_suffix(".inp"))
        _write_new(out, history.to_csv())
        _write_new(inp, mark_input(history))
        return {"files": [out, inp], "individuals": len(history),
                "occasions": history.shape[1], "undated": undated}  # fmt: skip
    raise ValueError(f"format must be coco, dwc or capture-history, got {format!r}")
