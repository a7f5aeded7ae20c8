"""The decision table as a pure function: every row, both age orders, every held key."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import lambda_function
from lambda_function import Holders, KeyState, RotationPlan, parse_secret_ids, plan_rotation

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def plan_for(keys: list[KeyState], held: str | None, **holders) -> RotationPlan:
    """The plan when the secret's AWSCURRENT holds `held` (and `holders` says who else holds what)."""
    return plan_rotation(keys, Holders(current=held, **holders))


def key(key_id: str, status: str, age_days: int) -> KeyState:
    """A key created age_days days before T0 (bigger is older)."""
    return KeyState(key_id=key_id, status=status, created=T0 - timedelta(days=age_days))


def test_none_creates_and_stores():
    assert plan_for([], None) == RotationPlan()
    assert plan_for([], None).steps() == ["create new", "store new"]


def test_one_active_deactivates_it_after_store():
    plan = plan_for([key("A", "Active", 1)], "A")
    assert plan == RotationPlan(deactivate_after=("A",))
    assert plan.steps() == ["create new", "store new", "deactivate A"]


def test_one_active_not_held_is_still_kept_as_fallback():
    assert plan_for([key("A", "Active", 1)], None) == RotationPlan(deactivate_after=("A",))


def test_one_inactive_not_held_is_deleted_first():
    assert plan_for([key("I", "Inactive", 1)], None) == RotationPlan(delete_first=("I",))


def test_one_inactive_held_is_deleted_only_after_store():
    plan = plan_for([key("I", "Inactive", 1)], "I")
    assert plan == RotationPlan(delete_after=("I",))
    assert plan.steps() == ["create new", "store new", "delete I"]


@pytest.mark.parametrize("active_age, inactive_age", [(2, 1), (1, 2)], ids=["active-older", "inactive-older"])
def test_active_and_inactive_delete_inactive_then_deactivate_active(active_age, inactive_age):
    keys = [key("A", "Active", active_age), key("I", "Inactive", inactive_age)]
    for held in ("A", None, "someone-elses-key"):
        assert plan_for(keys, held) == RotationPlan(delete_first=("I",), deactivate_after=("A",))


@pytest.mark.parametrize("active_age, inactive_age", [(2, 1), (1, 2)], ids=["active-older", "inactive-older"])
def test_active_and_held_inactive_never_deletes_held_key_first(active_age, inactive_age):
    # The secret holds the inactive key: the unheld active key makes room.
    keys = [key("A", "Active", active_age), key("I", "Inactive", inactive_age)]
    plan = plan_for(keys, "I")
    assert plan == RotationPlan(delete_first=("A",), delete_after=("I",))
    assert "I" not in plan.delete_first


def test_two_inactive_deletes_both():
    keys = [key("I1", "Inactive", 2), key("I2", "Inactive", 1)]
    assert plan_for(keys, None) == RotationPlan(delete_first=("I1", "I2"))


@pytest.mark.parametrize("held, other", [("I1", "I2"), ("I2", "I1")])
def test_two_inactive_deletes_held_one_after_store(held, other):
    keys = [key("I1", "Inactive", 2), key("I2", "Inactive", 1)]
    assert plan_for(keys, held) == RotationPlan(delete_first=(other,), delete_after=(held,))


@pytest.mark.parametrize("held, other", [("OLD", "NEW"), ("NEW", "OLD")])
def test_two_active_keeps_held_key(held, other):
    keys = [key("OLD", "Active", 2), key("NEW", "Active", 1)]
    plan = plan_for(keys, held)
    assert plan == RotationPlan(delete_first=(other,), deactivate_after=(held,))


def test_two_active_holding_neither_deletes_oldest():
    keys = [key("NEW", "Active", 1), key("OLD", "Active", 2)]
    assert plan_for(keys, None) == RotationPlan(delete_first=("OLD",), deactivate_after=("NEW",))


def test_two_active_same_age_order_is_stable():
    keys = [key("B", "Active", 1), key("A", "Active", 1)]
    assert plan_for(keys, None) == plan_for(list(reversed(keys)), None)


@pytest.mark.parametrize(
    "statuses",
    [(), ("Active",), ("Inactive",), ("Active", "Inactive"), ("Inactive", "Active"),
     ("Inactive", "Inactive"), ("Active", "Active")],
)
def test_every_plan_leaves_room_and_never_deletes_held_key_first(statuses):
    keys = [key(f"K{i}", s, 10 - i) for i, s in enumerate(statuses)]
    for held in [None] + [k.key_id for k in keys]:
        plan = plan_for(keys, held)
        assert held is None or held not in plan.delete_first
        assert len(keys) - len(plan.delete_first) < lambda_function.MAX_KEYS_PER_USER
        retired = plan.delete_first + plan.deactivate_after + plan.delete_after
        assert sorted(retired) == sorted(k.key_id for k in keys), "every old key is dealt with once"
        assert len(plan.deactivate_after) <= 1, "at most one inactive fallback"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("a;b", ("a", "b")),
        (" a ; ;b;; a ;", ("a", "b")),
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf",
         ("arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf",)),
        ("iam-keys/*;x", ("iam-keys/*", "x")),
        ("", ()),
        (" ; ", ()),
        (None, ()),
    ],
)
def test_parse_secret_ids_ignores_blanks_and_repeats(value, expected):
    assert parse_secret_ids(value) == expected


def table_rows(text: str) -> list[tuple[str, str]]:
    """The rows of the first '| keys found | what happens |' table in text."""
    start = text.index("| keys found | what happens |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        line = line.strip()
        if not line.startswith("|"):
            break
        rows.append(tuple(cell.strip() for cell in line.strip("|").split("|")))
    return rows


def test_readme_table_matches_code_table():
    # The decision table lives in docs/design.md (the README links to it).
    readme = (Path(__file__).parent.parent / "docs" / "design.md").read_text()
    code = re.sub(r"^ {4}", "", plan_rotation.__doc__, flags=re.M)
    assert table_rows(readme) == table_rows(code)
    assert len(table_rows(code)) == 6
