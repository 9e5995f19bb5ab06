"""CSV tables as every stage reads them: strings as they are, errors that name the file; and
cells a spreadsheet would run as a formula, found and made safe."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def read_csv(path: str | os.PathLike, **options) -> pd.DataFrame:
    """``pandas.read_csv`` (strings as they are unless ``options`` say otherwise) that names
    the file when it is missing, empty, not UTF-8 or not CSV (ValueError, FileNotFoundError)."""
    options = {"dtype": str, "keep_default_na": False, **options}
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: a folder, not a CSV file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        return pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty file, no header") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except pd.errors.ParserError as error:
        raise ValueError(f"{path}: not a readable CSV ({error})") from None


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets read as a formula


def looks_like_formula(value) -> bool:
    """Whether a cell would be run as a formula by a spreadsheet (OWASP's CSV injection): text
    starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return that is not a number.

    >>> looks_like_formula('=HYPERLINK("http://x")'), looks_like_formula("-70.35")
    (True, False)
    """
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return False
    try:
        float(value)
    except ValueError:
        return True
    return False


def spreadsheet_safe(value):
    """``value``, with a leading ``'`` where it :func:`looks_like_formula` (the cell then reads
    as the text it is); anything else as it is."""
    return f"'{value}" if looks_like_formula(value) else value
