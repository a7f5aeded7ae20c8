"""Which keys a role could replace: {"report": true, "roles": true} (make report ROLES=true) judges each Active key,
managed or not, from the management events CloudTrail kept of it, and changes nothing.

moto has no CloudTrail LookupEvents: the stand-in of tests/conftest.py (``cloudtrail``) answers as CloudTrail does,
per region, at CloudTrail's rate (a third call within a second is throttled), from the events a test records.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from deploy_config import render_report

import lambda_function
from lambda_function import CI_ROLE, KEEP, REPLACEABLE, RUNS_IN_AWS, UNSEEN, ConfigError, load_settings
from seed import ROWS, iam_secret_keys, seed_row

LAMBDA_AGENT = "Boto3/1.34.0 md/Botocore#1.34.0 ua/2.0 os/linux#5.10 lang/python#3.11.6 exec-env/AWS_Lambda_python3.11"
FARGATE_AGENT = "aws-sdk-java/2.20.0 Linux/5.10 OpenJDK_64-Bit_Server_VM/17 exec-env/AWS_ECS_FARGATE"
GITHUB_AGENT = "aws-cli/2.15.0 Python/3.11.6 Linux/6.5 md/command#s3.cp configure-aws-credentials-for-github-actions"
GITLAB_AGENT = "aws-cli/2.15.0 Python/3.11.6 Linux/6.5 GitLab-Runner/16.6"
LAPTOP_AGENT = "aws-cli/2.15.0 Python/3.11.6 Darwin/23.1.0 exe/x86_64 prompt/off command/s3.ls"
REGIONS = "us-east-1 eu-west-1"
ROLES = {"report": True, "roles": True}


def user_with_key(aws, user: str) -> str:
    """A user no secret manages, with one Active key."""
    aws.iam.create_user(UserName=user)
    return aws.iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]


@pytest.fixture
def fleet(aws, cloudtrail, clock, monkeypatch):
    """Keys of every kind: a managed one used from Lambda, unmanaged ones used from CI, a laptop, a VPC endpoint,
    ECS in another region, and one never seen. Returns key id by role."""
    monkeypatch.setenv("ROLE_REGIONS", REGIONS)
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="lambda-app")
    keys = {"lambda": seeded.key_ids[0], "secret": seeded.secret}
    for name in ("ci", "gitlab", "laptop", "vpc", "ecs", "idle"):
        keys[name] = user_with_key(aws, f"{name}-user")
    keys["t0"] = clock.now()  # the events' times count back from here (the report's paced calls move the clock)
    ago = lambda hours: keys["t0"] - timedelta(hours=hours)  # noqa: E731
    for hours in (1, 5, 40):
        cloudtrail.record(keys["lambda"], ago(hours), source_ip="3.250.1.1", user_agent=LAMBDA_AGENT)
    cloudtrail.record(keys["ci"], ago(2), source_ip="140.82.112.3", user_agent=GITHUB_AGENT, region="eu-west-1")
    cloudtrail.record(keys["ci"], ago(30), source_ip="140.82.112.3", user_agent=GITHUB_AGENT)
    cloudtrail.record(keys["gitlab"], ago(3), user_agent=GITLAB_AGENT)
    cloudtrail.record(keys["laptop"], ago(4), source_ip="198.51.100.20", user_agent=LAPTOP_AGENT)
    cloudtrail.record(keys["laptop"], ago(6), source_ip="10.0.1.5", user_agent=LAPTOP_AGENT,
                      vpcEndpointId="vpce-0123456789abcdef0")
    cloudtrail.record(keys["vpc"], ago(7), source_ip="10.0.1.5", user_agent=LAPTOP_AGENT,
                      vpcEndpointId="vpce-0123456789abcdef0")
    cloudtrail.record(keys["ecs"], ago(8), source_ip="10.0.2.9", user_agent=FARGATE_AGENT, region="eu-west-1")
    cloudtrail.record(keys["ecs"], ago(24 * 40), user_agent=LAPTOP_AGENT)  # before ROLE_LOOKBACK_DAYS: not read
    cloudtrail.record(keys["idle"], ago(1), user_agent=LAPTOP_AGENT, region="ap-south-1")  # a region not read
    return keys


def by_key(result: dict) -> dict[str, dict]:
    return {row["key_id"]: row for row in result["roles"]["keys"]}


def test_each_active_key_gets_its_verdict_from_its_events_in_the_regions_read(aws, invoke, fleet):
    result = invoke(fleet["secret"], event=ROLES)
    rows = by_key(result)
    assert {name: rows[fleet[name]]["verdict"] for name in ("lambda", "ci", "gitlab", "laptop", "vpc", "ecs",
                                                            "idle")} == {
        "lambda": RUNS_IN_AWS, "ci": CI_ROLE, "gitlab": CI_ROLE, "laptop": KEEP, "vpc": RUNS_IN_AWS,
        "ecs": RUNS_IN_AWS, "idle": UNSEEN}
    assert result["roles"]["regions_read"] == REGIONS.split() and result["roles"]["lookback_days"] == 30
    assert rows[fleet["lambda"]]["secret"] == fleet["secret"], "the key a secret holds is said"
    assert rows[fleet["ci"]]["secret"] is None, "a key no secret holds is judged too"


def test_each_verdict_carries_its_evidence_counts_first_and_last_seen_and_says_it_is_a_heuristic(aws, invoke,
                                                                                                 fleet, clock):
    result = invoke(fleet["secret"], event=ROLES)
    row = by_key(result)[fleet["lambda"]]
    (evidence,) = row["evidence"]
    assert evidence["count"] == 3 and row["events"] == 3
    assert evidence["first_seen"] == lambda_function.iso(fleet["t0"] - timedelta(hours=40))
    assert evidence["last_seen"] == lambda_function.iso(fleet["t0"] - timedelta(hours=1))
    assert row["basis"] == f"heuristic, from 3 events in the regions read ({REGIONS})"
    laptop = by_key(result)[fleet["laptop"]]
    assert {e["verdict"]: e["count"] for e in laptop["evidence"]} == {KEEP: 1, RUNS_IN_AWS: 1}, \
        "a key used from outside AWS too is kept, with both kinds of evidence shown"
    assert by_key(result)[fleet["ci"]]["events"] == 2, "both regions read"
    assert by_key(result)[fleet["ecs"]]["events"] == 1, "nothing older than ROLE_LOOKBACK_DAYS"
    verdicts = result["roles"]["verdicts"]
    assert verdicts[RUNS_IN_AWS]["keys"] == 3 and verdicts[RUNS_IN_AWS]["events"] == 5  # lambda 3, vpc 1, ecs 1
    assert verdicts[CI_ROLE] == {**verdicts[CI_ROLE], "keys": 2, "events": 3,
                                 "basis": f"heuristic, from 3 events in the regions read ({REGIONS})"}
    assert verdicts[CI_ROLE]["last_seen"] == lambda_function.iso(fleet["t0"] - timedelta(hours=2))


def test_the_lookups_are_paced_within_cloudtrails_rate_through_the_injected_clock(aws, invoke, fleet, cloudtrail,
                                                                                  clock):
    invoke(fleet["secret"], event=ROLES)
    assert len(cloudtrail.calls) == 7 * 2, "each key, each region, once"
    assert {c["region"] for c in cloudtrail.calls} == set(REGIONS.split())
    assert cloudtrail.throttled == 0
    gaps = [b["at"] - a["at"] for a, b in zip(cloudtrail.calls, cloudtrail.calls[1:], strict=False)]
    assert min(gaps) >= lambda_function.LOOKUP_INTERVAL_SECONDS
    assert clock.sleeps.count(lambda_function.LOOKUP_INTERVAL_SECONDS) >= len(cloudtrail.calls) - 1


def test_keys_beyond_the_runs_bound_are_said_not_read_this_run(aws, invoke, fleet, cloudtrail, monkeypatch):
    monkeypatch.setattr(lambda_function, "ROLE_KEYS_PER_RUN", 3)
    result = invoke(fleet["secret"], event=ROLES)
    assert len(result["roles"]["keys"]) == 3
    unread = result["roles"]["not_read_this_run"]
    assert len(unread) == 4 and all(u["why"] == "not read this run: at most 3 keys a run" for u in unread)
    assert len(cloudtrail.calls) == 3 * 2


def test_the_report_changes_nothing(aws, invoke, fleet):
    users = ["lambda-app"] + [f"{n}-user" for n in ("ci", "gitlab", "laptop", "vpc", "ecs", "idle")]
    def state() -> tuple:  # the versions by id (a read moves moto's dates), their labels, the value
        return ({u: aws.keys(u) for u in users}, [v["VersionId"] for v in aws.versions(fleet["secret"])],
                aws.stages(fleet["secret"]), aws.value(fleet["secret"]))

    before = state()
    result = invoke(fleet["secret"], event=ROLES)
    assert result["dry_run"] is True
    assert state() == before


def test_no_secret_value_is_in_the_report_its_logs_its_table_or_its_events(aws, invoke, fleet, bus, caplog,
                                                                          capsys):
    with caplog.at_level(logging.DEBUG):
        result = invoke(fleet["secret"], event=ROLES)
    events = bus()
    replaceable = [e for e in events if e["detail-type"] == REPLACEABLE]
    assert replaceable and replaceable[0]["detail"]["verdicts"] == result["roles"]["verdicts"]
    assert {k["key_id"] for k in replaceable[0]["detail"]["keys"]} == set(by_key(result))
    said = json.dumps(result) + caplog.text + "".join(capsys.readouterr()) + json.dumps(events) \
        + render_report(result)
    secrets = [s for user in ("lambda-app", "ci-user", "laptop-user") for s in iam_secret_keys(user).values()]
    assert secrets and not any(secret in said for secret in secrets)


def test_the_account_reports_table_shows_each_keys_verdict_and_each_verdicts_counts(aws, invoke, fleet):
    table = render_report(invoke(fleet["secret"], event=ROLES))
    line = next(line for line in table.splitlines() if fleet["ci"] in line)
    assert "ci-user" in line and CI_ROLE in line and "no secret" in line
    assert f"{CI_ROLE}: 2 keys, 3 events" in table and f"heuristic, from 3 events in the regions read ({REGIONS})" \
        in table


def test_the_event_is_clipped_to_putevents_limits(aws, invoke, fleet, cloudtrail, bus, clock):
    cloudtrail.record(fleet["laptop"], clock.now() - timedelta(minutes=5), user_agent="x" * 5000)
    result = invoke(fleet["secret"], event=ROLES)
    assert result["events_failed"] == 0
    (event,) = [e for e in bus() if e["detail-type"] == REPLACEABLE]
    assert len(json.dumps(event["detail"]).encode()) < 256 * 1024


def test_a_lookup_cloudtrail_refuses_is_said_never_turned_into_a_verdict(aws, invoke, fleet, cloudtrail):
    cloudtrail.refuse = "AccessDeniedException"
    result = invoke(fleet["secret"], event=ROLES)
    row = by_key(result)[fleet["lambda"]]
    assert row["verdict"] == UNSEEN and row["events"] == 0
    assert any("needs cloudtrail:LookupEvents" in note for note in row["notes"])


@pytest.mark.parametrize("event, why", [({"roles": True}, '"roles" goes with "report"'),
                                        ({"report": True, "roles": "yes"}, "must be true or false"),
                                        ({"report": True, "Roles": True}, "did you mean 'roles'")])
def test_a_roles_event_the_function_does_not_understand_is_refused(event, why):
    with pytest.raises(ConfigError, match=why):
        load_settings({"AWS_REGION": "eu-west-1"}, event)


@pytest.mark.parametrize("environ, why", [({"ROLE_LOOKBACK_DAYS": "91"}, "out of range"),
                                          ({"ROLE_LOOKBACK_DAYS": "0"}, "out of range"),
                                          ({"ROLE_REGIONS": "eu-west-1 mars"}, "not a region"),
                                          ({"ROLE_REGIONS": " ".join(["eu-west-1"] * 1 + [f"us-east-{n}"
                                                                                      for n in range(1, 12)])},
                                           "at most 10")])
def test_a_roles_setting_out_of_bounds_is_refused(environ, why):
    with pytest.raises(ConfigError, match=why):
        load_settings({"AWS_REGION": "eu-west-1", **environ}, ROLES)


def test_the_regions_read_default_to_the_functions_own():
    assert load_settings({"AWS_REGION": "eu-west-1"}, ROLES).role_regions == ("eu-west-1",)
    assert load_settings({"AWS_REGION": "eu-west-1", "ROLE_REGIONS": "us-east-1  us-east-1 eu-west-1"},
                         ROLES).role_regions == ("us-east-1", "eu-west-1")


def test_the_replaceable_events_fit_put_events_however_long_each_key_s_notes_are():
    # 100 keys, each with notes of 2,048 characters from 10 regions refused, would make one part of 467 KB, which
    # PutEvents refuses whole: rows are clipped shorter and parts split by size.
    note = "AccessDenied: " + "x" * 3000
    rows = [{"user": f"u{i}", "key_id": f"AKIA{i:016d}", "verdict": lambda_function.KEEP, "notes": [note] * 10,
             "evidence": {v: {"count": 1, "example": "agent/" + "y" * 3000} for v in lambda_function.VERDICTS}}
            for i in range(250)]
    roles = lambda_function.RolesReport(regions_read=["eu-west-1"], lookback_days=30, verdicts={}, keys=rows)
    entries = lambda_function.replaceable_entries(lambda_function.Settings(event_bus="b"), roles, "r")
    assert all(lambda_function.entry_size(e) <= lambda_function.PUT_EVENTS_BYTES for e in entries)
    details = [json.loads(e["Detail"]) for e in entries]
    assert sum(len(d["keys"]) for d in details) == 250 and {d["parts"] for d in details} == {len(entries)}
