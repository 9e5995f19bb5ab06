"""Encounter metadata: which sighting a photo belongs to, when, where, by whom, from which side.

Optional columns of ``train.csv`` (the catalogue) and of ``test_metadata.csv`` (the new
photos), each cell a string kept byte for byte by every tool (empty: unknown)::

    encounter     an id shared by the photos of one sighting of one animal
    date          YYYY-MM-DD (ISO 8601; a time of day may follow: YYYY-MM-DDTHH:MM[:SS])
    latitude      decimal degrees, -90..90       (given with longitude, or neither)
    longitude     decimal degrees, -180..180
    location      a place name, free text
    photographer  free text
    viewpoint     one of VIEWPOINTS: the side or body part a photo shows

Photos of one encounter are near-identical (one light, one pose, seconds apart): folds that
keep them together (``data.make_folds`` with ``groups="encounter"``) stop a validation score
from matching an animal to its own burst. :class:`CandidateFilter` restricts a match to
comparable catalogue photos (species, viewpoint, date range, distance).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd
from PIL import Image

ENCOUNTER_COLUMNS = (
    "encounter", "date", "latitude", "longitude", "location", "photographer", "viewpoint"
)  # fmt: skip
# The sides of an animal ("top" as seen from above, a drone's; Wild Me COCO says "up"), plus
# the underside of a whale's tail fluke; "unknown" where nobody said.
VIEWPOINTS = (
    "left", "right", "top", "bottom", "front", "back", "fluke", "unknown"
)  # fmt: skip
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2})?)?")
FIRST_YEAR, LAST_YEAR = 1850, 2100  # a photo-ID date outside these is a typo (0024, 9999)
EARTH_RADIUS_KM = 6371.0088  # the mean radius (IUGG)


def parse_date(text: str) -> date:
    """The calendar date of ``YYYY-MM-DD`` (a ``THH:MM[:SS]`` time may follow).

    Raises
    ------
    ValueError
        Saying what was expected.

    Examples
    --------
    >>> parse_date("2024-06-30T14:05")
    datetime.date(2024, 6, 30)
    """
    text = str(text).strip()
    if not _DATE.fullmatch(text):
        raise ValueError(f"date {text!r} is not YYYY-MM-DD")
    try:
        day = date.fromisoformat(text[:10])
    except ValueError as error:
        raise ValueError(f"date {text!r}: {error}") from None
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise ValueError(
            f"date {text!r}: the year {day.year} is outside {FIRST_YEAR}-{LAST_YEAR} (a typo?)"
        )
    return day


def haversine_km(latitude, longitude, to_latitude: float, to_longitude: float) -> np.ndarray:
    """Great-circle distances in km from each (latitude, longitude) (degrees, arrays) to one
    point, on a sphere of the Earth's mean radius.

    Examples
    --------
    >>> round(float(haversine_km(0.0, 0.0, 0.0, 1.0)), 1)  # a degree along the equator
    111.2
    """
    phi1, phi2 = np.radians(np.asarray(latitude, float)), math.radians(to_latitude)
    dphi = phi2 - phi1
    dlambda = math.radians(to_longitude) - np.radians(np.asarray(longitude, float))
    a = np.sin(dphi / 2) ** 2 + np.cos(phi1) * math.cos(phi2) * np.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _number(text: str, low: float, high: float, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not low <= value <= high:  # also refuses nan
        raise ValueError(f"{what} {text!r} is outside {low:g}..{high:g}")
    return value


def check_metadata(frame: pd.DataFrame, file_name: str) -> list[str]:
    """Problems of the encounter columns ``frame`` has (read as strings), one per cell, naming
    the file, line, image and value: bad dates, coordinates out of range or given alone,
    unknown viewpoints, and an encounter whose photos disagree on date (the day) or place."""
    problems = []
    present = [column for column in ENCOUNTER_COLUMNS if column in frame.columns]
    if not present:
        return problems
    for row, record in enumerate(frame.to_dict("records")):
        where = f"{file_name} line {row + 2} ({record['image']!r})"
        text = {column: str(record[column]).strip() for column in present}
        if text.get("date"):
            try:
                parse_date(text["date"])
            except ValueError as error:
                problems.append(f"{where}: {error}")
        has_latitude, has_longitude = bool(text.get("latitude")), bool(text.get("longitude"))
        if has_latitude != has_longitude:
            given = "latitude" if has_latitude else "longitude"
            problems.append(f"{where}: {given} given without the other coordinate")
        for column, low, high in (("latitude", -90, 90), ("longitude", -180, 180)):
            if text.get(column):
                try:
                    _number(text[column], low, high, column)
                except ValueError as error:
                    problems.append(f"{where}: {error}")
        viewpoint = text.get("viewpoint")
        if viewpoint and viewpoint not in VIEWPOINTS:
            problems.append(
                f"{where}: unknown viewpoint {viewpoint!r}; known: {', '.join(VIEWPOINTS)}"
            )
    if "encounter" in present:
        problems += _encounter_consistency(frame, file_name, present)
    return problems


def _encounter_consistency(frame: pd.DataFrame, file_name: str, present: list[str]) -> list:
    """One sighting happens on one day at one place, of one animal."""
    problems = []
    columns = [c for c in ("individual_id", "date", "latitude", "longitude") if c in frame]
    named = frame[frame["encounter"].str.strip() != ""]
    for encounter, rows in named.groupby("encounter", sort=True):
        for column in columns:
            values = rows[column].str.strip()
            if column == "date":
                values = values.str[:10]
            values = sorted(set(values) - {""})
            if len(values) > 1:
                lines = ", ".join(str(i + 2) for i in rows.index[:5])
                problems.append(
                    f"{file_name}: encounter {encounter!r} (lines {lines}) has {len(values)} "
                    f"values of {column}: {values[:3]}"
                )
    return problems


@dataclass(frozen=True)
class CandidateFilter:
    """Which catalogue photos a match may return: those of the given ``species`` and
    ``viewpoints`` (any, if empty), dated within ``between`` (first, last; inclusive), within
    ``within_km`` of ``near`` (latitude, longitude). A photo that lacks a value a filter asks
    about (no date under ``between``) is left out, and counted (:meth:`describe`)."""

    species: tuple[str, ...] = ()
    viewpoints: tuple[str, ...] = ()
    between: tuple[date, date] | None = None
    near: tuple[float, float] | None = None
    within_km: float | None = None

    def __post_init__(self):
        if (self.near is None) != (self.within_km is None):
            raise ValueError("a distance filter needs both a place (near) and a distance (within)")
        if self.within_km is not None and not self.within_km > 0:
            raise ValueError(f"within must be a distance in km > 0, got {self.within_km!r}")
        if self.near is not None:
            _number(str(self.near[0]), -90, 90, "latitude")
            _number(str(self.near[1]), -180, 180, "longitude")
        if self.between is not None and self.between[0] > self.between[1]:
            raise ValueError(f"between: {self.between[0]} is after {self.between[1]}")
        unknown = sorted(set(self.viewpoints) - set(VIEWPOINTS))
        if unknown:
            raise ValueError(f"unknown viewpoint(s) {unknown}; known: {', '.join(VIEWPOINTS)}")

    @property
    def active(self) -> bool:
        return bool(self.species or self.viewpoints or self.between or self.near)

    def keep(self, catalogue: pd.DataFrame) -> np.ndarray:
        """A bool per catalogue row (``data.read_train``'s frame): may it be a candidate?

        Raises
        ------
        ValueError
            If a filter needs a column the catalogue lacks, naming it.
        """
        keep = np.ones(len(catalogue), bool)
        for needed, columns in (
            (self.viewpoints, ("viewpoint",)),
            (self.between, ("date",)),
            (self.near, ("latitude", "longitude")),
        ):
            missing = [c for c in columns if needed and c not in catalogue.columns]
            if missing:
                raise ValueError(
                    f"the catalogue has no {', '.join(missing)} column: it cannot be filtered by it"
                )
        if self.species:
            keep &= catalogue["species"].isin(self.species).to_numpy()
        if self.viewpoints:
            keep &= catalogue["viewpoint"].str.strip().isin(self.viewpoints).to_numpy()
        if self.between:
            first, last = self.between
            dates = [_date_or_none(text) for text in catalogue["date"]]
            keep &= np.array([d is not None and first <= d <= last for d in dates], bool)
        if self.near:
            latitude = pd.to_numeric(catalogue["latitude"].str.strip(), errors="coerce")
            longitude = pd.to_numeric(catalogue["longitude"].str.strip(), errors="coerce")
            distance = haversine_km(latitude, longitude, *self.near)
            keep &= np.nan_to_num(distance, nan=np.inf) <= self.within_km
        return keep

    def describe(self, catalogue: pd.DataFrame) -> str:
        """One line: the filters and how many catalogue photos and individuals they keep."""
        keep = self.keep(catalogue)
        parts = []
        if self.species:
            parts.append(f"species {', '.join(self.species)}")
        if self.viewpoints:
            parts.append(f"viewpoint {', '.join(self.viewpoints)}")
        if self.between:
            parts.append(f"dated {self.between[0]} to {self.between[1]}")
        if self.near:
            parts.append(f"within {self.within_km:g} km of {self.near[0]:g}, {self.near[1]:g}")
        kept = catalogue[keep]
        return (
            f"candidates restricted to {'; '.join(parts)}: {len(kept)} of {len(catalogue)} "
            f"catalogue photos, {kept['individual_id'].nunique()} individuals"
        )


EXIF_IFD, GPS_IFD = 0x8769, 0x8825
MAKE, MODEL, BODY_SERIAL_NUMBER = 271, 272, 0xA431
DATE_TIME_ORIGINAL, DATE_TIME = 36867, 306


def exif_metadata(path) -> dict[str, str]:
    """The date (``date``, ISO 8601 with the time of day) and place (``latitude``,
    ``longitude``, decimal degrees to 6 places) a photo's EXIF records, where it does: a
    camera's ``DateTimeOriginal`` (else ``DateTime``) and GPS position. Missing or unreadable
    tags are left out; a photo without EXIF gives ``{}``."""
    return _date_and_place(_exif_tags(path))


def _exif_tags(path) -> dict:
    """The EXIF tags this module reads, in one opening of the photo ({} where unreadable)."""
    try:
        with Image.open(path) as image:
            exif = image.getexif()
            inner = exif.get_ifd(EXIF_IFD)
            return {
                "stamp": inner.get(DATE_TIME_ORIGINAL) or exif.get(DATE_TIME),
                "gps": exif.get_ifd(GPS_IFD),
                "camera": (exif.get(MAKE), exif.get(MODEL), inner.get(BODY_SERIAL_NUMBER)),
            }
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return {}


def _date_and_place(tags: dict) -> dict[str, str]:
    """:func:`exif_metadata` of the tags :func:`_exif_tags` read."""
    found: dict[str, str] = {}
    if not tags:
        return found
    stamp, gps = tags["stamp"], tags["gps"]
    if isinstance(stamp, str):
        text = stamp.strip().replace(":", "-", 2).replace(" ", "T", 1)
        try:
            parse_date(text)
            found["date"] = text
        except ValueError:
            pass
    try:
        latitude = _degrees(gps[2], gps[1], "S")
        longitude = _degrees(gps[4], gps[3], "W")
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return found
    if -90 <= latitude <= 90 and -180 <= longitude <= 180:
        found["latitude"], found["longitude"] = f"{latitude:.6f}", f"{longitude:.6f}"
    return found


def _degrees(value, reference, negative: str) -> float:
    degrees, minutes, seconds = (float(part) for part in value)
    signed = degrees + minutes / 60 + seconds / 3600
    return -signed if str(reference).strip().upper() == negative else signed


def _date_or_none(text) -> date | None:
    try:
        return parse_date(text)
    except ValueError:
        return None


def exif_camera(path) -> str | None:
    """The camera a photo's EXIF names (make, model and body serial number, as far as
    recorded), or None without make and model."""
    return _camera(_exif_tags(path))


def _camera(tags: dict) -> str | None:
    """:func:`exif_camera` of the tags :func:`_exif_tags` read."""
    if not tags:
        return None
    parts = tags["camera"]
    named = [str(p).strip().strip("\x00") for p in parts if p is not None and str(p).strip()]
    return " ".join(named) if parts[0] is not None or parts[1] is not None else None


def exif_encounters(paths, minutes: float, metres: float | None = None) -> dict[str, str]:
    """Encounters of photos by their EXIF (photo, as given in ``paths`` -> encounter, named
    ``exif-0001``, ...): one camera's photos (:func:`exif_camera`), in the order they were
    taken, each within ``minutes`` of the encounter's previous photo and, with ``metres``,
    within ``metres`` of it (both with a GPS position). Photos without a camera or a time
    of day are left out: each is its own encounter.

    Raises
    ------
    ValueError
        For ``minutes`` or ``metres`` that are not positive numbers.
    """
    for name, value in (("minutes", minutes), ("metres", metres)):
        if value is None and name == "metres":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"encounter {name} must be a positive number, got {value!r}")
    taken = []
    for path in paths:
        tags = _exif_tags(path)
        camera, found = _camera(tags), _date_and_place(tags)
        try:
            when = datetime.fromisoformat(found.get("date", ""))
        except ValueError:
            continue
        if camera is None or "T" not in found["date"]:
            continue
        place = (
            (float(found["latitude"]), float(found["longitude"])) if "latitude" in found else None
        )
        taken.append((camera, when, str(path), place))
    taken.sort()
    result, previous, count = {}, None, 0
    for camera, when, name, place in taken:
        joins = (
            previous is not None and previous[0] == camera
            and (when - previous[1]).total_seconds() <= minutes * 60
        )  # fmt: skip
        if joins and metres is not None:
            joins = (
                place is not None
                and previous[3] is not None
                and (1000 * float(haversine_km(*previous[3], *place)) <= metres)
            )
        if not joins:
            count += 1
        result[name] = f"exif-{count:04d}"
        previous = (camera, when, name, place)
    return result
