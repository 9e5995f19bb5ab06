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
import warnings
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from whaleutils.catalogue import curation
from whaleutils.catalogue.enrolment import check_photo
from whaleutils.contracts import folders, outputs, submission
from whaleutils.contracts.tables import looks_like_formula, spreadsheet_safe
from whaleutils.datasets import data, encounters

COCO_EXTRA = "whaleutils"  # the annotation key holding the row's own cells
UNNAMED = "____"  # Wild Me's name for an annotation of no known individual
OCCASIONS = ("day", "week", "month", "year")
MANY_OCCASIONS = 5000  # more columns than a capture history is read with: a warning
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
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.partial")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.link(temporary, path)  # fails rather than replace a file made meanwhile
    except FileExistsError:
        raise FileExistsError(f"{path} exists; not overwritten (choose a new file)") from None
    finally:
        temporary.unlink(missing_ok=True)


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

    Nothing in the file is trusted: every ``file_name`` must name a readable photo directly in
    ``images_dir`` (no folder, no ``..``, no link leading out of it), ids must be unique whole
    numbers, boxes and positions finite numbers. The catalogue is written into a hidden folder
    beside ``out_dir`` and renamed into place: ``out_dir`` is either complete or not there.

    Returns a summary: ``photos``, ``individuals``, ``unnamed`` (left out).

    Raises
    ------
    ValueError
        Naming the annotation or image at fault: a photo with two annotations (a catalogue row
        is one animal in one photo), two images or annotations of one id, an annotation of no
        image or an unknown category, a photo missing from ``images_dir`` or outside it, a
        value that is not what COCO says, a cell a spreadsheet would run as a formula, metadata
        that ``validate`` would refuse.
    FileExistsError
        If ``out_dir`` exists and is not empty.
    """
    annotations_path, images_dir, out_dir = Path(annotations_path), Path(images_dir), Path(out_dir)
    if _inside(out_dir, images_dir):
        raise ValueError(f"--out {out_dir} is inside the images folder {images_dir}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not empty; import writes a new catalogue")
    if not images_dir.is_dir():
        raise ValueError(f"--images {images_dir}: not a folder")
    if not annotations_path.is_file():
        raise FileNotFoundError(f"{annotations_path}: file not found")
    document = outputs.read_json(annotations_path)
    images = _coco_records(document, "images", annotations_path, ("id", "file_name"))
    categories = _coco_records(document, "categories", annotations_path, ("id", "name"))
    annotations = _coco_records(document, "annotations", annotations_path, ("id", "image_id"))
    images = {image["id"]: image for image in images}
    categories = {category["id"]: str(category["name"]) for category in categories}
    rows, seen, unnamed = [], {}, 0
    for annotation in annotations:
        where = f"{annotations_path}: annotation {annotation['id']}"
        image = images.get(annotation["image_id"])
        if image is None:
            raise ValueError(f"{where}: no image {annotation['image_id']}")
        name = _photo_name(
            image["file_name"], images_dir, f"{annotations_path}: image {image['id']}"
        )
        if name in seen:
            raise ValueError(
                f"{where}: photo {name} has a second annotation (also {seen[name]}); a "
                "catalogue row is one animal in one photo: split the photo first"
            )
        seen[name] = annotation["id"]
        if str(annotation.get("name", UNNAMED)) == UNNAMED:
            unnamed += 1
            continue
        category = annotation.get("category_id")
        if not _whole(category) or category not in categories:
            raise ValueError(f"{where}: unknown category {str(category)[:40]!r}")
        rows.append(_row_of(annotation, image, categories, where))
    table = pd.DataFrame(rows).fillna("")
    formulas = [
        f"{annotations_path}: photo {row['image']}: {column} {str(value)[:60]!r} would run as a "
        "spreadsheet formula (it starts with =, +, -, @)"
        for row in rows
        for column, value in row.items()
        if looks_like_formula(value)
    ]
    if formulas:
        raise ValueError("\n".join(formulas[:20]))
    problems = encounters.check_metadata(table, annotations_path.name) if len(table) else []
    if problems:
        raise ValueError("\n".join(problems[:20]))
    for name in table.get("image", []):
        check_photo(images_dir / name)
    with folders.new_folder(out_dir) as building:  # whole or not at all
        layout = data.Layout(building)
        layout.images("train").mkdir(parents=True)
        layout.images("test").mkdir()
        for name in table["image"] if len(table) else []:
            shutil.copyfile(images_dir / name, layout.photo("train", name))
            shutil.copystat(images_dir / name, layout.photo("train", name))
        table.to_csv(layout.train_csv, index=False)
        pd.DataFrame(columns=list(submission.SUBMISSION_COLUMNS)).to_csv(
            layout.sample_submission, index=False
        )
    return {
        "photos": len(table),
        "individuals": int(table["individual_id"].nunique()) if len(table) else 0,
        "unnamed": unnamed,
    }


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _coco_records(document, key: str, path: Path, required: tuple[str, ...]) -> list[dict]:
    """``document[key]``: a list of objects, each with ``required`` fields and a unique whole
    ``id``; raises naming the file, the list and the record."""
    records = document.get(key)
    if not isinstance(records, list):
        raise ValueError(f"{path}: not a COCO file ('{key}' must be a list)")
    ids = set()
    for position, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(
                f"{path}: {key}[{position}] is a {type(record).__name__}, not an object"
            )
        missing = [field for field in required if field not in record]
        if missing:
            raise ValueError(f"{path}: {key}[{position}] has no {', '.join(missing)}")
        for field in ("id", *(f for f in required if f.endswith("_id"))):
            if not _whole(record[field]):
                raise ValueError(
                    f"{path}: {key}[{position}] {field} {str(record[field])[:40]!r} is not a "
                    "whole number"
                )
        if record["id"] in ids:
            raise ValueError(f"{path}: two {key} have the id {record['id']}; ids must be unique")
        ids.add(record["id"])
    return records


def _photo_name(file_name, images_dir: Path, where: str) -> str:
    """``file_name`` once it is known to name a file directly in ``images_dir`` and not to
    lead out of it (no folder, no ``..``, no absolute path, no link elsewhere)."""
    if not isinstance(file_name, str) or not file_name or file_name != Path(file_name).name:
        raise ValueError(
            f"{where}: file_name {str(file_name)[:80]!r} must be a file name directly in "
            f"{images_dir} (no folder, no absolute path)"
        )
    if file_name in (".", "..") or "\\" in file_name or not file_name.isprintable():
        raise ValueError(f"{where}: file_name {file_name[:80]!r} is not a photo's file name")
    path = images_dir / file_name
    if not path.is_file():
        raise ValueError(f"{where}: photo {file_name} not found in {images_dir}")
    if not _inside(path, images_dir):
        raise ValueError(f"{where}: photo {file_name} is a link leading out of {images_dir}")
    return file_name


def _finite(value, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ValueError(f"{where}: {what} {str(value)[:40]!r} is not a finite number")
    return float(value)


def _row_of(annotation: dict, image: dict, categories: dict, where: str) -> dict:
    extra = annotation.get(COCO_EXTRA)
    if isinstance(extra, dict) and extra.get("image") == image["file_name"]:
        return {str(key): str(value) for key, value in extra.items()}  # as it was written
    bbox = annotation.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise ValueError(f"{where}: bbox {str(bbox)[:60]!r} is not [x, y, width, height]")
    left, top, width, height = (round(_finite(v, where, "bbox value")) for v in bbox)
    if width <= 0 or height <= 0:
        raise ValueError(f"{where}: bbox {bbox} has no area")
    row = {
        "image": str(image["file_name"]),
        "species": categories[annotation["category_id"]],
        "individual_id": str(annotation["name"]),
        "box": data.format_box((left, top, left + width, top + height)),
    }
    if str(image.get("date_captured", "NA")).strip() not in ("", "NA"):
        captured = str(image["date_captured"]).strip()
        row["date"] = captured.replace(" ", "T", 1)  # COCO's "YYYY-MM-DD HH:MM:SS"
    if image.get("gps_lat_captured") is not None and image.get("gps_lon_captured") is not None:
        row["latitude"] = f"{_finite(image['gps_lat_captured'], where, 'gps_lat_captured'):.6f}"
        row["longitude"] = f"{_finite(image['gps_lon_captured'], where, 'gps_lon_captured'):.6f}"
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
    individual the organism, the encounter the event; the viewpoint, box and the photo's
    earlier ids (``previous_ids``, oldest first: those merges, renames and splits that stand,
    ``curation.previous_ids``) go into ``dynamicProperties`` (JSON)."""
    layout, table = _table(catalogue_dir)

    def cell(column):
        return table[column] if column in table else pd.Series("", index=table.index)

    species = data.normalize_species(table["species"])
    has_place = (cell("latitude") != "") & (cell("longitude") != "")
    earlier = curation.previous_ids(catalogue_dir)
    extras = [
        json.dumps(
            {k: v for k, v in (("viewpoint", view), ("box", box), ("previous_ids", before)) if v}
        )
        for view, box, before in zip(
            cell("viewpoint"),
            cell("box"),
            table["image"].map(lambda i: earlier.get(i, [])),
            strict=True,
        )
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
    if len(starts) > MANY_OCCASIONS:
        first, last = min(days), max(days)
        warnings.warn(
            f"{len(starts)} occasions from {first} to {last} ({occasion}): check the earliest "
            "and latest dates, or choose a longer --occasion",
            stacklevel=2,
        )
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
    if format == "dwc":  # a table for spreadsheets: no cell runs as a formula
        table = darwin_core(catalogue_dir).map(spreadsheet_safe)
        out = _new_file(out)
        _write_new(out, table.to_csv(index=False))
        return {"files": [out], "photos": len(table)}
    if format == "capture-history":
        if Path(out).suffix.lower() == ".inp":
            raise ValueError(
                f"--out {out}: name the CSV (e.g. {Path(out).with_suffix('.csv')}); MARK's .inp "
                "is written beside it"
            )
        history, undated = capture_history(catalogue_dir, occasion)
        out = _new_file(out)
        inp = _new_file(Path(out).with_suffix(".inp"))
        _write_new(out, history.map(spreadsheet_safe).rename(index=spreadsheet_safe).to_csv())
        try:
            _write_new(inp, mark_input(history))
        except BaseException:
            out.unlink(missing_ok=True)  # both or neither
            raise
        return {"files": [out, inp], "individuals": len(history),
                "occasions": history.shape[1], "undated": undated}  # fmt: skip
    raise ValueError(f"format must be coco, dwc or capture-history, got {format!r}")
