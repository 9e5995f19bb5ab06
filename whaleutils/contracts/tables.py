"""CSV tables as every stage reads them: strings as they are, errors that name the file."""

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
