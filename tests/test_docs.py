"""The README as the front door (at most 12 KB, the two commands first, a diagram, links that lead somewhere) and
docs/ holding the rest. The command blocks themselves are run by tests/test_readme.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
DOCS = {path: (ROOT / path).read_text() for path in ("README.md", "docs/operate.md", "docs/reference.md",
                                                      "docs/security.md", "docs/design.md")}

pytestmark = pytest.mark.unit


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_is_at_most_12_kb_and_opens_with_the_two_commands():
    assert len(README.encode()) <= 12 * 1024
    first_block = re.search(r"```sh\n(.*?)```", README, re.S).group(1)
    assert [line.split()[:2] for line in first_block.splitlines()] == [["make", "demo"], ["make", "test"]]
    assert README.index("```sh") < README.index("\n## "), "before anything else"


def test_the_readme_draws_secret_user_tag_role_schedule_and_consumers():
    diagram = re.search(r"```mermaid\n(.*?)```", README, re.S).group(1)
    for part in ("schedule", "role", "Secret", "key-rotation-secret", "Consumers"):
        assert part in diagram, part


def test_every_link_between_the_documents_leads_somewhere():
    for path, text in DOCS.items():
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)", text):
            if target.startswith("http"):
                continue
            linked = (ROOT / path).parent / target if target else ROOT / path
            assert linked.exists(), f"{path} links to {target}"
            if anchor:
                headings = re.findall(r"^#+ (.*)$", linked.read_text(), re.M)
                assert anchor in {slug(h) for h in headings}, f"{path} links to {target}#{anchor}"


def test_the_documents_tell_how_to_look_pause_undo_and_remove():
    text = "\n".join(DOCS.values())
    for what in ("make logs", "make status", "disable-rule", '{"rollback": [', "make rollback", "make skip",
                 "make unskip", "make destroy", "delete-stack", "key-rotation:mode", "make pause", "STACK="):
        assert what in text, what


def test_figures_say_how_to_reproduce_them_not_when():
    text = "\n".join(DOCS.values())
    assert not re.search(r"[Mm]easured (on )?20\d\d|on 20\d\d-\d\d-\d\d", text), "no dated figures"
    assert "make bench" in DOCS["docs/design.md"] and "make test" in DOCS["docs/design.md"]
    assert len(re.findall(r"\d+ ms of CPU per rotation", text)) == 1, "one CPU figure"


def test_four_alarms_everywhere():
    text = "\n".join(DOCS.values())
    assert "three alarms" not in text.lower()
    for name in ("errors", "no-success", "still-in-use", "overdue"):
        assert f"FUNCTION-{name}" in DOCS["docs/operate.md"], name


def test_the_reference_s_settings_table_says_each_row_s_bounds_choices_and_default():
    """docs/reference.md's settings table is the table in the code said for readers: each number's bounds and
    default, each choice's words, as the row in ``lambda_function.SETTINGS_TABLE`` has them."""
    import lambda_function

    text = DOCS["docs/reference.md"]
    table = text[text.index("## Settings"):text.index("## Secret tags")]
    lines = {name: next(line for line in table.splitlines() if f"`{name}`" in line.split(" | ")[0])
             for name in lambda_function.SETTINGS_TABLE}
    for name, row in lambda_function.SETTINGS_TABLE.items():
        _, _meaning, accepted, default = lines[name].strip("| ").split(" | ")
        if row.kind in (int, float):
            low = "`GRACE_HOURS`" if name == "MAX_GRACE_HOURS" else f"{row.low:g}"
            assert f"{low} to {row.high:g}" in accepted, name
            if row.default is not None:
                assert f"{row.default:g}" in default, name
        elif row.kind == "choice":
            assert all(choice.lower() in accepted.lower() for choice in row.choices), name
            assert row.default.lower() in default.lower(), name
        elif row.kind is bool:
            assert accepted == "boolean" and f"`{str(row.default).lower()}`" in default, name
