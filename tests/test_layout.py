"""The file as the team promises to keep it: read in one direction, short functions, a module docstring that
names only what exists, and one list of settings whose defaults the Settings record shares."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

import lambda_function

pytestmark = pytest.mark.unit
SOURCE = Path(lambda_function.__file__).read_text()
TREE = ast.parse(SOURCE)
TOP = {node.name: node.lineno for node in TREE.body if isinstance(node, ast.FunctionDef | ast.ClassDef)}


def names_used(node: ast.AST) -> set[str]:
    """Names a top-level definition loads, its annotations aside (they are strings, never run)."""
    found: set[str] = set()

    def visit(n: ast.AST) -> None:
        if isinstance(n, ast.arg) or (isinstance(n, ast.AnnAssign) and n.value is None):
            return
        if isinstance(n, ast.FunctionDef):
            for part in [*n.body, *n.decorator_list, *n.args.defaults]:
                visit(part)
            return
        if isinstance(n, ast.AnnAssign):
            visit(n.value)
            return
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            found.add(n.id)
        for child in ast.iter_child_nodes(n):
            visit(child)

    visit(node)
    return found


def test_no_function_is_longer_than_fifty_lines():
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(TREE)
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 50]
    assert long == []


def test_no_definition_uses_one_that_stands_below_it():
    back = sorted((node.name, name) for node in TREE.body if isinstance(node, ast.FunctionDef | ast.ClassDef)
                  for name in names_used(node) if name in TOP and TOP[name] > node.lineno and name != node.name)
    assert back == []


def test_the_module_docstring_names_only_what_exists_and_maps_every_section_in_order():
    doc = lambda_function.__doc__
    named = set(re.findall(r"``([A-Za-z_][A-Za-z_0-9]*(?:\.[A-Za-z_]+)?)``", doc))
    missing = [n for n in named if n not in ("finishSecret", "Step", "lambda_function.lambda_handler")
               and not hasattr(lambda_function, n.split(".")[0])]
    assert missing == []
    headers = re.findall(r"^# (\d+)\. (.+)$", SOURCE, re.M)
    mapped = re.findall(r"^(\d+)\. ", doc, re.M)
    assert [n for n, _ in headers] == mapped == [str(i) for i in range(1, len(headers) + 1)]


def test_each_definition_the_module_map_names_stands_in_the_section_that_names_it():
    defined = {n.name: n.lineno for n in TREE.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    defined |= {t.id: n.lineno for n in TREE.body if isinstance(n, ast.Assign) for t in n.targets
                if isinstance(t, ast.Name)}
    starts = {int(m.group(1)): SOURCE[:m.start()].count("\n") + 1 for m in re.finditer(r"^# (\d+)\. ", SOURCE, re.M)}
    ends = {n: starts.get(n + 1, len(SOURCE.splitlines()) + 1) for n in starts}
    sections = re.split(r"^(?=\d+\. )", lambda_function.__doc__.split("The safety rules")[0], flags=re.M)
    misplaced = [(int(text.split(".")[0]), name) for text in sections if re.match(r"\d+\. ", text)
                 for name in re.findall(r"``([A-Za-z_]\w*)(?:\.\w+)?``", text) if name in defined
                 and not starts[int(text.split(".")[0])] <= defined[name] < ends[int(text.split(".")[0])]]
    assert misplaced == []


def test_the_settings_record_s_defaults_are_the_settings_table_s():
    defaults = {f.name: f.default for f in dataclasses.fields(lambda_function.Settings)}
    for name, row in lambda_function.SETTINGS_TABLE.items():
        assert row.field in defaults, name
        if row.default is None or name == "sec":
            continue  # derived (TIME_MARGIN_SECONDS) or none (sec, topics, buses)
        assert defaults[row.field] == row.default, name


def test_what_a_run_reads_and_what_one_pass_hands_the_next_cannot_be_changed_after():
    """A record as read, a conclusion of the run (``Found``: authorised, settings, keys, holders) and what a pass
    hands the next are frozen: a later pass makes a new one, never writes an earlier pass's back."""
    records = ["SecretRecord", "Found", "KeyState", "Holders", "RotationPlan", "SecretSettings", "Assessing",
               "Rotate", "Settling", "Stored", "Cleanup", "Restore", "StepDone"]
    mutable = [name for name in records if not getattr(lambda_function, name).__dataclass_params__.frozen]
    assert mutable == []
    record = lambda_function.SecretRecord(name="s", arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:s",
                                          secret_name="s", value={}, user_name="u", held_key_id=None,
                                          version_id=None, version_created=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.held_key_id = "AKIAEXAMPLE"  # type: ignore[misc]
