"""README and docs/: every link resolves, every command is one README's tests run or one that
cannot run offline, and README stays a front page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO, readme_commands
from test_readme import NOT_RUN

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def heading_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation but ``-`` and ``_``
    dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # no code blocks
    return {heading_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


def test_heading_anchors_follow_githubs_rule():
    assert heading_anchor("The `local` profile") == "the-local-profile"
    assert heading_anchor("A researcher's catalogue: identify, review") == (
        "a-researchers-catalogue-identify-review"
    )
    assert heading_anchor("Blending across folds") == "blending-across-folds"


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` that name no file, or a heading the file lacks."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target):
            continue  # the web: not checked offline
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif anchor and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    return broken


def test_a_broken_link_or_anchor_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n## Its part\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n[fine](other.md#its-part) [here](#page) [web](https://example.org/x)\n"
        "[gone](missing.md) [no part](other.md#nope) ![figure](figures/none.png)\n"
        "```\n[in code](not-checked.md)\n```\n"
    )
    assert [b.split(":")[0] for b in broken_links(page)] == [
        "missing.md", "other.md#nope", "figures/none.png"
    ]  # fmt: skip


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves(page):
    """Relative links name files that exist, and their anchors headings that exist."""
    assert not broken_links(page)


def test_every_docs_command_is_tested_or_stated_as_not_run():
    """A ``bash`` command on a docs page is one of README's (which tests/test_readme.py runs)
    or needs the network (``NOT_RUN``): no page carries a command no test ran."""
    readme = set(readme_commands((REPO / "README.md").read_text()))
    untested = [
        (page.name, command)
        for page in PAGES[1:]
        for command in readme_commands(page.read_text())
        if command not in readme and not any(command.startswith(p) for p in NOT_RUN)
    ]
    assert not untested, untested


def test_readme_is_a_front_page():
    """At most ~150 lines, and it links every docs page."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 160
    linked = {Path(target.partition("#")[0]).name for target in LINK.findall(text)}
    assert {page.name for page in PAGES[1:]} <= linked
