"""LOOKUP_HOLDOUTS: who still uses a previous key, from CloudTrail, in the summary, the WARNING, the SNS message
and the event.

moto has no CloudTrail LookupEvents: the ``cloudtrail`` fixture (conftest's CloudTrailLookups) answers it in
CloudTrail's documented shape (``Events[].CloudTrailEvent`` a JSON string carrying sourceIPAddress, userAgent
and eventSource), with CloudTrail's rate of 2 calls a second judged on the test's clock. The function's own
client, botocore and its retries run unchanged. IAM's last-used data is set in moto's backend.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

import lambda_function
from seed import ROWS, iam_secret_keys, seed_row, set_last_used

HOUR = 3600
LAPTOP = {"source_ip": "198.51.100.23", "user_agent": "aws-cli/2.15.0 Python/3.11 Linux/6.1",
          "event_source": "iam.amazonaws.com"}
BUILD_HOST = {"source_ip": "203.0.113.7", "user_agent": "Boto3/1.34.0 md/Botocore#1.34.0 ci-deployer",
              "event_source": "sts.amazonaws.com"}


@pytest.fixture
def graced(aws, invoke, clock, monkeypatch):
    """GRACE_HOURS=24 and LOOKUP_HOLDOUTS=true; returns a maker of secrets rotated once, old key kept Active."""
    monkeypatch.setenv("GRACE_HOURS", "24")
    monkeypatch.setenv("LOOKUP_HOLDOUTS", "true")

    def make(*users: str) -> list:
        seeded = [seed_row(aws.iam, aws.secrets, ROWS[1], user=user) for user in users]
        invoke(*(s.secret for s in seeded))
        return seeded

    return make


def use(cloudtrail, key_id: str, when, who: dict, times: int = 1) -> None:
    for i in range(times):
        cloudtrail.record(key_id, when - timedelta(minutes=i), source_ip=who["source_ip"],
                          user_agent=who["user_agent"], event_source=who["event_source"])


def stamp(when) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_key_kept_active_because_in_use_names_who_uses_it_everywhere(aws, invoke, graced, cloudtrail, clock,
                                                                       caplog, topic, bus):
    (seeded,) = graced("alice")
    bus()  # the rotation's own event
    old, new = seeded.key_ids[0], aws.value(seeded.secret)["AccessKeyId"]
    clock.advance(30 * HOUR)
    last = clock.now() - timedelta(hours=1)
    set_last_used("alice", old, last.replace(tzinfo=None), "iam", "us-east-1")
    use(cloudtrail, old, last, LAPTOP, times=3)
    use(cloudtrail, old, last - timedelta(hours=2), BUILD_HOST, times=2)
    use(cloudtrail, new, last, {**LAPTOP, "source_ip": "192.0.2.99"})  # the new key's use: not a holdout
    use(cloudtrail, old, clock.now() - timedelta(hours=40), {**LAPTOP, "source_ip": "192.0.2.1"})  # before the store
    with caplog.at_level(logging.WARNING):
        result = invoke(seeded.secret)
    (entry,) = result["secrets"]
    assert entry["status"] == "waiting" and entry["still_in_use"]
    assert entry["holdouts"] == [
        {**LAPTOP, "count": 3, "last_seen": stamp(last)},
        {**BUILD_HOST, "count": 2, "last_seen": stamp(last - timedelta(hours=2))},
    ]
    assert aws.keys("alice") == {old: "Active", new: "Active"}, "a lookup changes no key"
    (call,) = cloudtrail.calls
    assert call["LookupAttributes"] == [{"AttributeKey": "AccessKeyId", "AttributeValue": old}]
    assert call["StartTime"] <= (clock.now() - timedelta(hours=30)).timestamp() + 5  # since the store
    (warning,) = [r.getMessage() for r in caplog.records if '"holdouts"' in r.getMessage()
                  and r.levelno == logging.WARNING]
    assert "198.51.100.23" in warning and "aws-cli/2.15.0" in warning and "ci-deployer" in warning
    *_, message = topic()  # the rotation's message, then this run's
    assert f"Who still uses {old}: 198.51.100.23 with aws-cli/2.15.0" in message and "203.0.113.7" in message
    (event,) = bus()
    assert event["detail-type"] == "Previous Access Key Still In Use"
    assert event["detail"]["holdouts"] == entry["holdouts"]
    for secret in iam_secret_keys("alice").values():
        assert secret not in json.dumps(result) and secret not in message and secret not in json.dumps(event)


def test_a_key_deactivated_although_in_use_names_who_used_it(aws, invoke, graced, cloudtrail, clock, caplog):
    (seeded,) = graced("alice")
    old = seeded.key_ids[0]
    clock.advance(169 * HOUR)  # past MAX_GRACE_HOURS
    set_last_used("alice", old, (clock.now() - timedelta(hours=1)).replace(tzinfo=None), "sts", "us-east-1")
    seen = clock.now() - timedelta(hours=1)
    use(cloudtrail, old, seen, BUILD_HOST)
    result = invoke(seeded.secret)
    (entry,) = result["secrets"]
    assert entry["status"] == "retired" and entry["forced_in_use"]
    assert entry["holdouts"] == [{**BUILD_HOST, "count": 1, "last_seen": stamp(seen)}]
    assert aws.keys("alice")[old] == "Inactive"


def test_off_by_default_no_lookup_and_no_field(aws, invoke, graced, cloudtrail, clock, monkeypatch):
    monkeypatch.delenv("LOOKUP_HOLDOUTS")
    (seeded,) = graced("alice")
    clock.advance(30 * HOUR)
    set_last_used("alice", seeded.key_ids[0], clock.now().replace(tzinfo=None), "iam", "us-east-1")
    (entry,) = invoke(seeded.secret)["secrets"]
    assert entry["status"] == "waiting" and "holdouts" not in entry and cloudtrail.calls == []


def test_a_key_unused_since_the_store_is_not_looked_up(aws, invoke, graced, cloudtrail, clock):
    (seeded,) = graced("alice")
    clock.advance(25 * HOUR)
    result = invoke(seeded.secret)
    assert result["secrets"][0]["status"] == "retired" and cloudtrail.calls == []


def test_a_failed_lookup_changes_nothing_but_the_report(aws, invoke, graced, cloudtrail, clock, caplog, topic):
    seeded = graced("alice", "bob")
    clock.advance(30 * HOUR)
    for s in seeded:
        set_last_used(s.user, s.key_ids[0], clock.now().replace(tzinfo=None), "iam", "us-east-1")
        use(cloudtrail, s.key_ids[0], clock.now() - timedelta(minutes=5), LAPTOP)
    before = {s.user: aws.keys(s.user) for s in seeded}
    versions = {s.secret: aws.stages(s.secret) for s in seeded}
    cloudtrail.refuse = "AccessDeniedException"
    with caplog.at_level(logging.WARNING):
        result = invoke(*(s.secret for s in seeded))
    assert result["failed"] == 0 and result["waiting"] == 2
    assert {s.user: aws.keys(s.user) for s in seeded} == before
    assert {s.secret: aws.stages(s.secret) for s in seeded} == versions
    for entry in result["secrets"]:
        assert entry["status"] == "waiting" and "holdouts" not in entry
        assert "CloudTrail: LookupEvents failed: AccessDeniedException" in entry["holdouts_note"]
        assert "cloudtrail:LookupEvents" in entry["holdouts_note"]
    assert any("holdouts_failed" in r.getMessage() for r in caplog.records)
    assert "Holdouts: CloudTrail: LookupEvents failed" in topic()[-1]


def test_at_most_twenty_keys_are_looked_up_a_run_paced_under_cloudtrails_rate(aws, invoke, graced, cloudtrail,
                                                                                 clock):
    seeded = graced(*(f"u{i:02}" for i in range(22)))
    clock.advance(30 * HOUR)
    for s in seeded:
        set_last_used(s.user, s.key_ids[0], clock.now().replace(tzinfo=None), "iam", "us-east-1")
        use(cloudtrail, s.key_ids[0], clock.now() - timedelta(minutes=5), LAPTOP)
    sleeps_before = len(clock.sleeps)
    result = invoke(*(s.secret for s in seeded))
    entries = result["secrets"]
    assert (len(cloudtrail.calls), cloudtrail.throttled) == (20, 0), [c["at"] for c in cloudtrail.calls]
    gaps = [b["at"] - a["at"] for a, b in zip(cloudtrail.calls, cloudtrail.calls[1:], strict=False)]
    assert min(gaps) >= 0.5, "2 calls a second at most, on the function's clock"
    assert sum(clock.sleeps[sleeps_before:]) >= 19 * 0.5 - 1e-9, "the waits ran on the clock passed in"
    looked = [e for e in entries if "holdouts" in e]
    skipped = [e for e in entries if "holdouts" not in e]
    assert len(looked) == 20 and len(skipped) == 2
    assert all(e["holdouts"][0]["count"] == 1 for e in looked)
    assert all("not looked up" in e["holdouts_note"] and "20" in e["holdouts_note"] for e in skipped)
    assert result["waiting"] == 22


def test_a_throttled_lookup_is_retried_by_botocore_and_paced(aws, invoke, graced, cloudtrail, clock,
                                                             botocore_on_clock):
    (seeded,) = graced("alice")
    old = seeded.key_ids[0]
    clock.advance(30 * HOUR)
    set_last_used("alice", old, clock.now().replace(tzinfo=None), "iam", "us-east-1")
    use(cloudtrail, old, clock.now() - timedelta(minutes=5), LAPTOP)
    # another caller in the account has just used up this second's two calls
    cloudtrail.calls += [{"at": clock.monotonic()}, {"at": clock.monotonic()}]
    (entry,) = invoke(seeded.secret)["secrets"]
    assert cloudtrail.throttled >= 1 and entry["holdouts"][0]["source_ip"] == LAPTOP["source_ip"]
    ours = cloudtrail.calls[2:]
    assert len(ours) == cloudtrail.throttled + 1


def test_more_than_a_page_says_first_page_only_and_nothing_found_says_why(aws, invoke, graced, cloudtrail, clock):
    busy, quiet = graced("busy", "quiet")
    clock.advance(30 * HOUR)
    for s in (busy, quiet):
        set_last_used(s.user, s.key_ids[0], clock.now().replace(tzinfo=None), "s3", "us-east-1")
    seen = clock.now() - timedelta(minutes=1)
    use(cloudtrail, busy.key_ids[0], seen, LAPTOP, times=60)
    by_secret = {e["secret"]: e for e in invoke(busy.secret, quiet.secret)["secrets"]}
    assert by_secret[busy.secret]["holdouts"] == [{**LAPTOP, "count": 50, "last_seen": stamp(seen)}]
    assert "first page only" in by_secret[busy.secret]["holdouts_note"]
    assert by_secret[quiet.secret]["holdouts"] == []
    assert "data events, such as S3 reads, do not show" in by_secret[quiet.secret]["holdouts_note"]


@pytest.mark.unit
def test_grouping_skips_other_keys_and_odd_records_and_clips_what_callers_choose():
    seen = stamp(datetime.now(UTC) - timedelta(days=1))
    events = [
        {"AccessKeyId": "AKIAOLD", "CloudTrailEvent": json.dumps(
            {"sourceIPAddress": "10.0.0.1", "userAgent": "x" * 500 + "\x1b[31m", "eventSource": "iam.amazonaws.com",
             "eventTime": seen})},
        {"AccessKeyId": "AKIAOTHER", "CloudTrailEvent": json.dumps({"sourceIPAddress": "10.9.9.9"})},
        {"AccessKeyId": "AKIAOLD", "CloudTrailEvent": "not json", "EventSource": "s3.amazonaws.com"},
        "not an event",
    ]
    groups = lambda_function.group_holdouts("AKIAOLD", events)
    assert [g.source_ip for g in groups] == ["10.0.0.1", None]
    assert len(groups[0].user_agent) == lambda_function.HOLDOUT_TEXT and "\x1b" not in groups[0].user_agent
    assert groups[0].last_seen == seen and groups[1].event_source == "s3.amazonaws.com"
    assert "an unknown address" in lambda_function.describe_holdouts(groups)
