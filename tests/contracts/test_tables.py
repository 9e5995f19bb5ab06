"""tables.rewrite_cells: one column's cells replaced, every other byte kept; the csv module is
the reference for what the file says before and after."""

import csv
import io

import pytest

from whaleutils.contracts import tables


def rows(payload: bytes) -> list[list[str]]:
    """The file as the csv module reads it (the reference), blank lines dropped as pandas does."""
    text = payload.decode("utf-8").removeprefix("\ufeff")
    return [row for row in csv.reader(io.StringIO(text, newline="")) if row]


@pytest.mark.parametrize(
    ("payload", "values", "expected"),
    [
        # plain, LF; the last line without its line ending
        (b"image,id\na.jpg,w1\nb.jpg,w2", {"b.jpg": "w9"}, b"image,id\na.jpg,w1\nb.jpg,w9"),
        # CRLF kept, a quoted cell stays quoted, so writing the old value back is exact
        (b'image,id\r\na.jpg,"w1"\r\n', {"a.jpg": "w9"}, b'image,id\r\na.jpg,"w9"\r\n'),
        # a value that needs quotes gets them; the id column first; a BOM kept
        (
            b"\xef\xbb\xbfid,image\nw1,a.jpg\n",
            {"a.jpg": 'x,"y"'},
            b'\xef\xbb\xbfid,image\n"x,""y""",a.jpg\n',
        ),
        # a quoted key with a comma and a line break in it, a blank line, an empty last cell
        (
            b'image,id,box\n"a,\nb.jpg",w1,"1 2 3 4"\n\nc.jpg,w2,\n',
            {"a,\nb.jpg": "w3", "c.jpg": "w4"},
            b'image,id,box\n"a,\nb.jpg",w3,"1 2 3 4"\n\nc.jpg,w4,\n',
        ),
        # a lone CR as the line ending
        (b"image,id\ra.jpg,w1\r", {"a.jpg": "w2"}, b"image,id\ra.jpg,w2\r"),
    ],
)
def test_rewrite_cells_keeps_every_other_byte(payload, values, expected):
    rewritten = tables.rewrite_cells(payload, "image", "id", values)
    assert rewritten == expected
    before, after = rows(payload), rows(rewritten)
    key, column = before[0].index("image"), before[0].index("id")
    for old, new in zip(before[1:], after[1:], strict=True):
        assert new[column] == values.get(old[key], old[column])  # the reference agrees
        assert [c for i, c in enumerate(new) if i != column] == [
            c for i, c in enumerate(old) if i != column
        ]
    back = {name: old[column] for old in before[1:] for name in [old[key]] if name in values}
    assert tables.rewrite_cells(rewritten, "image", "id", back) == payload  # and back, exactly


def test_rewrite_cells_refuses_what_it_cannot_do_by_name():
    payload = b"image,id\na.jpg,w1\na.jpg,w2\nb.jpg,w3\n"
    with pytest.raises(ValueError, match=r"line 3: image 'a.jpg' is on line 2 too"):
        tables.rewrite_cells(payload, "image", "id", {"a.jpg": "x"})
    with pytest.raises(ValueError, match=r"no row with image \['c.jpg'\]"):
        tables.rewrite_cells(payload, "image", "id", {"c.jpg": "x"})
    with pytest.raises(ValueError, match=r"no individual_id column"):
        tables.rewrite_cells(payload, "image", "individual_id", {"b.jpg": "x"})
    with pytest.raises(ValueError, match=r"line 2: text after a closing quote"):
        tables.rewrite_cells(b'image,id\n"a"x,w1\n', "image", "id", {"a": "x"})
    with pytest.raises(ValueError, match="not closed"):
        tables.rewrite_cells(b'image,id\n"a,w1\n', "image", "id", {"a": "x"})
    with pytest.raises(ValueError, match="not UTF-8"):
        tables.rewrite_cells(b"image,id\n\xff,w1\n", "image", "id", {"a": "x"})
