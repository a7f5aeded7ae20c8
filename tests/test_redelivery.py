"""At-least-once delivery: a scheduled event seen twice rotates each secret once."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from conftest import load_event
from faults import CRASH, Crash
from seed import ROWS, seed_row


def scheduled_event(at: datetime) -> dict:
    return load_event("eventbridge-scheduled", time=at.strftime("%Y-%m-%dT%H:%M:%SZ"))


def console_event() -> dict:
    return load_event("console-test")


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def test_redelivered_scheduled_event_rotates_once(aws, invoke):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1])
    event = scheduled_event(now())
    first = invoke(seeded.secret, event=event)
    second = invoke(seeded.secret, event=copy.deepcopy(event))
    assert first["rotated"] == 1
    assert (second["rotated"], second["skipped"]) == (0, 1)
    assert len(aws.versions(seeded.secret)) == 2
    assert len(aws.keys(seeded.user)) == 2
    aws.assert_converged(seeded.secret)


def test_next_scheduled_event_rotates_again(aws, invoke, clock):
    # "Tomorrow" derives from the test's clock: a fixed date leaves the redelivery window and the test fails.
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1])
    today = scheduled_event(clock.now())
    invoke(seeded.secret, event=today)
    clock.advance(24 * 3600)
    tomorrow = {**scheduled_event(clock.now()), "id": "another-event-id"}
    assert invoke(seeded.secret, event=tomorrow)["rotated"] == 1
    assert invoke(seeded.secret, event=tomorrow)["skipped"] == 1
    assert len(aws.versions(seeded.secret)) == 3


@pytest.mark.parametrize("when", ["past", "future"])
def test_scheduled_event_time_does_not_skip_a_fresh_secret(aws, invoke, when):
    # The shared event's fixed time may lie before or after the secret was made.
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1])
    shift = timedelta(days=-400 if when == "past" else 400)
    assert invoke(seeded.secret, event=scheduled_event(now() + shift))["rotated"] == 1


def test_shared_scheduled_event_as_is_rotates_once(aws, invoke, clock):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1])
    event = load_event("eventbridge-scheduled")
    clock.state["now"] = datetime.fromisoformat(event["time"]) + timedelta(minutes=1)  # delivered on its day
    assert invoke(seeded.secret, event=event)["rotated"] == 1
    assert invoke(seeded.secret, event=copy.deepcopy(event))["skipped"] == 1
    aws.assert_converged(seeded.secret)


def test_console_events_always_rotate(aws, invoke):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1])
    invoke(seeded.secret, event=console_event())
    first = aws.value(seeded.secret)["AccessKeyId"]
    invoke(seeded.secret, event=console_event())
    assert aws.value(seeded.secret)["AccessKeyId"] != first


def test_scheduled_event_without_id_falls_back_to_its_time(aws, invoke):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1])
    event = scheduled_event(now())
    del event["id"]
    assert invoke(seeded.secret, event=event)["rotated"] == 1
    assert invoke(seeded.secret, event=event)["skipped"] == 1
    assert len(aws.versions(seeded.secret)) == 2


def test_redelivery_after_crash_past_store_finishes_the_rotation(aws, invoke, faults, monkeypatch):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1])
    event = scheduled_event(now())
    faults.inject("put_secret_value", CRASH)
    with pytest.raises(Crash):
        invoke(seeded.secret, event=event)
    faults.clear()
    new_key = aws.value(seeded.secret)["AccessKeyId"]
    assert aws.keys(seeded.user)[seeded.key_ids[0]] == "Active"

    result = invoke(seeded.secret, event=event)

    # The redelivery verifies the stored key, then retires the old one (it is not "skipped": it acted).
    assert result["retired"] == 1
    assert result["secrets"][0]["reason"] == "already rotated for this scheduled event"
    assert result["secrets"][0]["steps"] == [f"deactivate {seeded.key_ids[0]}"]
    assert aws.keys(seeded.user) == {seeded.key_ids[0]: "Inactive", new_key: "Active"}
    aws.assert_converged(seeded.secret)


def test_versions_this_function_writes_are_marked(aws, invoke):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1])
    invoke(seeded.secret, event=console_event())
    invoke(seeded.secret, event=scheduled_event(now() + timedelta(days=1)))
    ours = [v["VersionId"] for v in aws.versions(seeded.secret) if "AWSPREVIOUS" in v.get("VersionStages", []) or
            "AWSCURRENT" in v.get("VersionStages", [])]
    assert len(ours) == 2 and all(v.startswith("key-rotation-") for v in ours)


def test_rotation_by_this_function_after_the_event_time_counts_as_done(aws, invoke):
    # e.g. a console run after 06:00, then the 06:00 event delivered late (under another id)
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1])
    invoke(seeded.secret, event=console_event())
    late = {**scheduled_event(now() - timedelta(minutes=5)), "id": "a-late-delivery"}
    assert invoke(seeded.secret, event=late)["skipped"] == 1
    tomorrow = {**scheduled_event(now() + timedelta(days=1)), "id": "tomorrow"}
    assert invoke(seeded.secret, event=tomorrow)["rotated"] == 1


def test_a_version_written_by_someone_else_after_the_event_time_does_not_count(aws, invoke):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1])  # the seed wrote its version just now
    event = scheduled_event(now() - timedelta(minutes=5))
    assert invoke(seeded.secret, event=event)["rotated"] == 1
