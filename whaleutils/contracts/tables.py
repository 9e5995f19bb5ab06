"""CSV tables as every stage reads them: strings as they are, errors that name the file; and
cells a spreadsheet would run as a formula, found and made safe."""

from __future__ import annotations

import os
import re
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


# ---------------------------------------------------------------- rewriting cells in place

_FIELD = re.compile(r'"(?:[^"]|"")*"|[^,]*')
_NEEDS_QUOTES = re.compile(r'[",\r\n]')


def _records(text: str) -> list[tuple[int, int]]:
    """The (start, end) of each CSV record of ``text`` (RFC 4180: a quoted field may hold line
    breaks), its line ending excluded; a blank line is a record of its own (an empty span)."""
    spans, start, position, quotes = [], 0, 0, 0
    for line in re.finditer(r"[^\r\n]*(?:\r\n|\n|\r|$)", text):
        if line.start() == len(text) and line.start() > 0:
            break  # the empty match after the last line ending
        body = line.group().rstrip("\r\n")
        quotes += body.count('"')
        position = line.start() + len(body)
        if quotes % 2 == 0:
            spans.append((start, position))
            start, quotes = line.end(), 0
    if quotes % 2:
        raise ValueError("a quoted field is not closed before the end of the file")
    return spans


def _fields(record: str) -> list[tuple[int, int]]:
    """The (start, end) of each field of one record (within the record)."""
    spans, position = [], 0
    while True:
        found = _FIELD.match(record, position)
        spans.append((found.start(), found.end()))
        position = found.end()
        if position == len(record):
            return spans
        if record[position] != ",":
            raise ValueError(f"text after a closing quote: {record[found.start() :][:40]!r}")
        position += 1


def _value(raw: str) -> str:
    return raw[1:-1].replace('""', '"') if raw.startswith('"') and len(raw) > 1 else raw


def _encoded(value: str, old: str) -> str:
    """``value`` as the field that replaces the field ``old``: quoted where it must be, or
    where ``old`` was quoted without needing it (the file's style), so that writing the old
    value back gives the old bytes (except after a file's needless quotes were replaced by a
    value that needs them)."""
    styled = old.startswith('"') and not _NEEDS_QUOTES.search(_value(old))
    if styled or _NEEDS_QUOTES.search(value):
        return '"' + value.replace('"', '""') + '"'
    return value


def rewrite_cells(payload: bytes, key: str, column: str, values: dict[str, str]) -> bytes:
    """A CSV file's bytes with the ``column`` cell of the rows whose ``key`` cell is in
    ``values`` replaced by ``values[key cell]``; every other byte (the other cells, quoting,
    line endings, a byte-order mark, a missing final line ending) as it was. A replaced cell
    is quoted where it must be or where the old one was quoted without needing it, so writing
    the old values back gives the old bytes.

    >>> rewrite_cells(b'image,id\\r\\na.jpg,"w1"\\r\\nb.jpg,w2', "image", "id", {"a.jpg": "w9"})
    b'image,id\\r\\na.jpg,"w9"\\r\\nb.jpg,w2'

    Raises
    ------
    ValueError
        Naming the line of a malformed record, a ``key`` or ``column`` the header lacks, a key
        in ``values`` that no row has or that two rows have.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    spans = _records(text)
    if not spans:
        raise ValueError("empty file, no header")
    header_start, header_end = spans[0]
    header_text = text[header_start:header_end]
    header = [_value(header_text[a:b]) for a, b in _fields(header_text)]
    header[0] = header[0].removeprefix("\ufeff")
    for name in (key, column):
        if name not in header:
            raise ValueError(f"no {name} column (the header has {header})")
    key_at, column_at = header.index(key), header.index(column)
    pieces, done, copied = [], {}, 0
    for line, (start, end) in enumerate(spans[1:], start=2):
        record = text[start:end]
        if not record:
            continue
        try:
            fields = _fields(record)
        except ValueError as error:
            raise ValueError(f"line {line}: {error}") from None
        if len(fields) <= max(key_at, column_at):
            continue  # a short row: pandas would read it with empty cells; not one of ours
        name = _value(record[slice(*fields[key_at])])
        if name not in values:
            continue
        if name in done:
            raise ValueError(f"line {line}: {key} {name!r} is on line {done[name]} too")
        done[name] = line
        cell_start, cell_end = fields[column_at]
        raw = record[cell_start:cell_end]
        pieces += [text[copied : start + cell_start], _encoded(values[name], raw)]
        copied = start + cell_end
    missing = sorted(set(values) - set(done))
    if missing:
        raise ValueError(f"no row with {key} {missing[:5]}" + (" ..." if len(missing) > 5 else ""))
    pieces.append(text[copied:])
    return "".join(pieces).encode("utf-8")
