"""Consumer events on EventBridge: one entry per secret whose keys changed, that failed, whose old key is still
in use or that is overdue; read back through a rule to an SQS queue in moto, as a consumer would."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError

import lambda_function
from conftest import STEPS, step
from lambda_function import RotationFailed
from seed import ROWS, begin_rotation, iam_secret_keys, seed_row, seed_user, set_last_used


def events_client():
    return lambda_function.aws_clients(lambda_function.Settings()).events


def test_a_rotation_publishes_access_key_rotated_with_the_key_ids_and_no_secret(aws, invoke, bus):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    invoke(seeded.secret)
    (event,) = bus()
    new = aws.value(seeded.secret)["AccessKeyId"]
    assert event["source"] == "key-rotation" and event["detail-type"] == "Access Key Rotated"
    detail = event["detail"]
    assert detail["secret"] == seeded.secret and detail["user"] == "alice" and detail["status"] == "rotated"
    assert detail["secret_arn"] == aws.secrets.describe_secret(SecretId=seeded.secret)["ARN"]
    assert (detail["current_key_id"], detail["previous_key_id"]) == (new, seeded.key_ids[0])
    assert detail["overdue"] is False and detail["holdouts"] == []
    for secret in iam_secret_keys("alice").values():
        assert secret not in json.dumps(event)


def test_a_failed_verification_still_says_the_key_the_secret_now_holds(aws, invoke, bus, sts, monkeypatch):
    monkeypatch.setenv("VERIFY_TIMEOUT_SECONDS", "2")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    sts.refusals = 10**6
    with pytest.raises(RotationFailed):
        invoke(seeded.secret)
    (event,) = bus()
    assert event["detail-type"] == "Access Key Rotation Failed"
    assert event["detail"]["current_key_id"] == aws.value(seeded.secret)["AccessKeyId"] != seeded.key_ids[0]


def test_grace_retirement_still_in_use_and_rollback_each_have_their_event(aws, invoke, bus, clock, monkeypatch):
    monkeypatch.setenv("GRACE_HOURS", "24")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    old = seeded.key_ids[0]
    invoke(seeded.secret)
    assert [e["detail-type"] for e in bus()] == ["Access Key Rotated"]
    clock.advance(25 * 3600)
    set_last_used("alice", old, clock.now())
    invoke(seeded.secret)
    (still,) = bus()
    assert still["detail-type"] == "Previous Access Key Still In Use" and still["detail"]["previous_key_id"] == old
    invoke(seeded.secret, event={"rollback": [seeded.secret]})
    (back,) = bus()
    assert back["detail-type"] == "Access Key Rolled Back" and back["detail"]["current_key_id"] == old
    invoke(seeded.secret)  # nothing changed for a secret whose keys are steady: no event
    assert [e["detail-type"] for e in bus()] in ([], ["Previous Access Key Retired"], ["Access Key Rotated"])


def test_entries_go_ten_to_a_call(aws, invoke, bus):
    seeded = [seed_row(aws.iam, aws.secrets, ROWS[1], user=f"u{i:02}") for i in range(25)]
    calls = []
    events_client().meta.events.register("provide-client-params.events.PutEvents",
                                         lambda params, **_: calls.append(len(params["Entries"])))
    invoke(*(s.secret for s in seeded))
    assert calls == [10, 10, 6], "25 key changes and the whole run's one Access Keys Checked"
    assert len(bus()) == 25


def test_an_entry_refused_in_a_partial_failure_is_retried_once(aws, invoke, bus):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    calls = []

    def refuse_first(parsed, **_):
        calls.append(len(parsed.get("Entries", [])))
        if len(calls) == 1:
            parsed["FailedEntryCount"] = 1  # the first entry refused, the rest put, one result each as AWS answers
            parsed["Entries"] = [{"ErrorCode": "InternalFailure"}, *parsed["Entries"][1:]]

    events_client().meta.events.register("after-call.events.PutEvents", refuse_first)
    result = invoke(seeded.secret)
    assert calls == [2, 1] and result["events_failed"] == 0, "the key change and Access Keys Checked; one again"


def test_a_refused_run_state_entry_never_fails_the_run(aws, invoke, bus):
    # Access Keys Checked names no secret: refused twice in a partial failure, it is counted and logged like any
    # other entry (it once failed the whole run with a KeyError, and Lambda retried the whole invocation).
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")

    def refuse_checked(parsed, params, **_):
        parsed["Entries"] = [{"ErrorCode": "InternalFailure"} if e["DetailType"] == lambda_function.CHECKED
                             else {"EventId": "put"} for e in params["Entries"]]
        parsed["FailedEntryCount"] = sum("ErrorCode" in e for e in parsed["Entries"])

    client = events_client()
    client.meta.events.register("provide-client-params.events.PutEvents",
                                lambda params, context, **_: context.update(entries=params["Entries"]))
    client.meta.events.register("after-call.events.PutEvents",
                                lambda parsed, context, **_: refuse_checked(parsed, {"Entries": context["entries"]}))
    result = invoke(seeded.secret)
    assert result["rotated"] == 1 and result["events_failed"] == 1
    aws.assert_converged(seeded.secret)


def test_a_publish_failure_never_fails_the_rotation(aws, invoke, bus):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")

    def refuse(**_):
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "PutEvents")

    events_client().meta.events.register("before-call.events.PutEvents", refuse)
    result = invoke(seeded.secret)
    assert result["rotated"] == 1 and result["events_failed"] == 2, "the key change and Access Keys Checked"
    aws.assert_converged(seeded.secret)


def test_without_event_bus_nothing_is_published(aws, invoke, monkeypatch):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    calls = []
    events_client().meta.events.register("before-call.events.PutEvents", lambda **_: calls.append(1))
    invoke(seeded.secret)
    assert calls == []


def test_rotation_mode_publishes_at_finish_secret(aws, bus):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    token = begin_rotation(seeded.secret)
    for name in STEPS:
        step(seeded.secret, token, name)
    (event,) = bus()
    assert event["detail-type"] == "Access Key Rotated"
    assert event["detail"]["current_key_id"] == aws.value(seeded.secret)["AccessKeyId"]
    assert event["detail"]["previous_key_id"] == seeded.key_ids[0]


def test_the_readmes_rule_brings_a_ci_systems_copy_up_to_date(aws, invoke, monkeypatch):
    # The README's rule, as written, on a bus with a queue behind it; the consumer, as the README describes it,
    # reads the secret the event names whenever current_key_id changed and writes the key into the CI's store.
    import re
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "docs" / "operate.md").read_text()  # the README links to it
    section = readme[readme.index("## Consumers: EventBridge events"):]
    pattern = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))
    events, sqs = boto3.client("events"), boto3.client("sqs")
    events.create_event_bus(Name="keys")
    queue = sqs.create_queue(QueueName="ci")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="ci-deployer-key", EventBusName="keys", EventPattern=json.dumps(pattern))
    events.put_targets(Rule="ci-deployer-key", EventBusName="keys", Targets=[{"Id": "ci", "Arn": queue_arn}])
    monkeypatch.setenv("EVENT_BUS", "keys")
    ci = seed_user(aws.iam, aws.secrets, "ci-deployer", ("Active",), held=0, secret="iam-keys/ci-deployer")
    other = seed_user(aws.iam, aws.secrets, "web", ("Active",), held=0, secret="iam-keys/web")
    ci_store = {"AWS_ACCESS_KEY_ID": ci.key_ids[0]}

    def consumer() -> int:
        handled = 0
        for message in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
            detail = json.loads(message["Body"])["detail"]
            if detail["current_key_id"] != ci_store["AWS_ACCESS_KEY_ID"]:
                value = json.loads(boto3.client("secretsmanager").get_secret_value(
                    SecretId=detail["secret_arn"])["SecretString"])
                ci_store.update(AWS_ACCESS_KEY_ID=value["AccessKeyId"], AWS_SECRET_ACCESS_KEY=value["SecretAccessKey"])
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            handled += 1
        return handled

    invoke(ci.secret, other.secret)
    assert consumer() == 1, "the rule matches the one secret's rotation, not the other's"
    assert ci_store["AWS_ACCESS_KEY_ID"] == aws.value(ci.secret)["AccessKeyId"] != ci.key_ids[0]
    assert ci_store["AWS_SECRET_ACCESS_KEY"] == iam_secret_keys("ci-deployer")[ci_store["AWS_ACCESS_KEY_ID"]]
    invoke(ci.secret, event={"rollback": [ci.secret]})
    assert consumer() == 1 and ci_store["AWS_ACCESS_KEY_ID"] == ci.key_ids[0], "a rollback is followed too"


def test_the_function_reports_its_release_in_the_summary_and_the_run_state_event(aws, invoke, bus):
    from pathlib import Path

    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    result = invoke(seeded.secret)
    release = (Path(__file__).parents[1] / "VERSION").read_text().strip()
    assert result["version"] == lambda_function.__version__ == release
    events = boto3.client("events")
    events.put_rule(Name="checked", EventBusName="keys", EventPattern=json.dumps({"detail-type": ["Access Keys "
                                                                                                 "Checked"]}))
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="checked")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_targets(Rule="checked", EventBusName="keys", Targets=[{"Id": "q", "Arn": arn}])
    invoke(seeded.secret)
    (checked,) = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=queue,
                                                                      MaxNumberOfMessages=10)["Messages"]]
    assert checked["detail"]["version"] == release


def test_a_targeted_run_sends_its_own_secrets_state_marked_partial(aws, invoke, bus):
    # make org-report shows a targeted rotation's secret as that run left it, not as the last whole run did: a
    # targeted run sends "Access Keys Checked" for the secrets it checked, marked partial (its counts are not the
    # account's: the dashboards read whole runs only).
    one, other = (seed_row(aws.iam, aws.secrets, ROWS[1], user=name) for name in ("alice", "bob"))
    sent = []
    events_client().meta.events.register("provide-client-params.events.PutEvents",
                                         lambda params, **_: sent.extend(params["Entries"]))
    invoke(one.secret, other.secret, event={"secrets": [one.secret]})
    (checked,) = [json.loads(e["Detail"]) for e in sent if e["DetailType"] == lambda_function.CHECKED]
    assert checked["partial"] is True and checked["secrets_checked"] == 1
    assert [(s["secret"], s["status"]) for s in checked["secrets"]] == [(one.secret, "rotated")]
    sent.clear()
    invoke(one.secret, other.secret)
    (whole,) = [json.loads(e["Detail"]) for e in sent if e["DetailType"] == lambda_function.CHECKED]
    assert "partial" not in whole and whole["secrets_checked"] == 2
    assert {e["detail-type"] for e in bus()} == {"Access Key Rotated"}, "a consumer's rule gets no run state"
