"""The owner hears first: the IAM user's key-rotation-owner tag (e-mail addresses, SNS topic ARNs) is told before
anything happens to a key of theirs, once, never a secret value.

Read back from moto: SES keeps every e-mail it sent (``ses_backends[...].sent_messages``; it refuses a sender not
verified, as SES does), and an owner's SNS topic has an SQS queue subscribed. Time is the test's clock; daily runs
are scheduled events one day apart, each delivered twice (EventBridge delivers at least once).
"""

from __future__ import annotations

import json
from datetime import timedelta

import boto3
import pytest
from moto.ses.models import ses_backends

import lambda_function
from conftest import LambdaContext, drain, load_event
from faults import REFUSED
from seed import ACCOUNT_ID, ROWS, iam_secret_keys, seed_row, seed_user, set_last_used

HOUR, DAY = 3600, 86400
SENDER = "key-rotation@example.com"


class Owners:
    """An owner's inbox (SES's sent mail) and a team's topic (through SQS), each read once."""

    def __init__(self) -> None:
        self.sqs, sns = boto3.client("sqs"), boto3.client("sns")
        self.topic = sns.create_topic(Name="team")["TopicArn"]
        self.queue = self.sqs.create_queue(QueueName="team-inbox")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=self.topic, Protocol="sqs", Endpoint=arn)
        self.read = 0

    def mails(self) -> list:
        sent = ses_backends[ACCOUNT_ID]["us-east-1"].sent_messages
        new, self.read = sent[self.read:], len(sent)
        return new

    def posts(self) -> list[dict]:
        return [{"Subject": m.get("Subject"), "Message": m["Message"]} for m in drain(self.sqs, self.queue)]

    def tag(self, user: str, value: str) -> None:
        boto3.client("iam").tag_user(UserName=user, Tags=[{"Key": lambda_function.OWNER_TAG, "Value": value}])


@pytest.fixture
def owners(aws, monkeypatch):
    boto3.client("ses").verify_email_identity(EmailAddress=SENDER)
    monkeypatch.setenv("OWNER_SENDER", SENDER)
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "80")
    return Owners()


def scheduled(clock, day: int) -> dict:
    return load_event("eventbridge-scheduled", id=f"day-{day}", time=clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"))


def no_secret_in(user: str, texts: list[str]) -> None:
    for secret_key in iam_secret_keys(user).values():
        assert all(secret_key not in text for text in texts)


def adopted_user(aws, user: str = "bob"):
    """A user whose one key is in use and held by no secret: the function adopts it."""
    return seed_user(aws.iam, aws.secrets, user, ("Active",), None, stale=False)


def test_an_adopted_key_s_owner_is_told_what_when_and_to_read_the_secret(aws, invoke, owners, clock):
    seeded = adopted_user(aws)
    owners.tag("bob", f"bob@example.com {owners.topic}")
    set_last_used("bob", seeded.key_ids[0], (clock.now() - timedelta(hours=2)).replace(tzinfo=None))
    result = invoke(seeded.secret)
    (key,) = seeded.key_ids
    until = lambda_function.iso(clock.now() + timedelta(hours=168))[:16]
    (mail,) = owners.mails()
    assert mail.destinations["ToAddresses"] == ["bob@example.com"] and mail.source == SENDER
    assert mail.subject == f"Action needed: key {key} is deactivated {until}Z (IAM user bob)"
    for part in ("What happened:", "What will happen:", "What to do:", "adopted", seeded.secret, f"until {until}"):
        assert part in mail.body, part
    (post,) = owners.posts()
    assert post["Message"] == mail.body and post["Subject"] == mail.subject
    assert [(e["owner"], e["case"], e["key_id"], e["status"]) for e in result["owners_told"]] == [
        ("bob@example.com", "adopted", key, "told"), (owners.topic, "adopted", key, "told")]
    no_secret_in("bob", [mail.body, mail.subject, post["Message"], json.dumps(result)])
    assert len(mail.body.splitlines()) < 25, "one screen"


def test_reminders_fall_72_and_24_hours_before_the_deadline_once_each_over_a_month_of_daily_runs(
        aws, invoke, owners, clock):
    seeded = adopted_user(aws)
    (key,) = seeded.key_ids
    owners.tag("bob", "bob@example.com")
    told = {}
    for day in range(30):
        set_last_used("bob", key, (clock.now() - timedelta(hours=1)).replace(tzinfo=None))
        event = scheduled(clock, day)
        for _ in range(2):  # every event delivered twice: the second tells nothing again
            invoke(seeded.secret, event=dict(event), context=LambdaContext())
        mails = owners.mails()
        if mails:
            told[day] = [m.subject for m in mails]
        clock.advance(DAY)
    assert sorted(told) == [0, 4, 6], told
    assert [len(subjects) for subjects in told.values()] == [1, 1, 1]
    assert "72 h left" in told[4][0] and "24 h left" in told[6][0]
    assert aws.keys("bob")[key] == "Inactive"


def test_a_targeted_run_on_a_reminder_s_day_tells_nothing_the_schedule_s_run_tells_it(aws, invoke, owners, clock):
    # A reminder belongs to the batch's run whose day it falls in; a targeted (or leak) run on that day does not
    # send it again (an event never makes the function do more). Reminders come from whole runs only; an
    # adoption is told by whichever run records it.
    seeded = adopted_user(aws)
    (key,) = seeded.key_ids
    owners.tag("bob", "bob@example.com")
    set_last_used("bob", key, (clock.now() - timedelta(hours=1)).replace(tzinfo=None))
    invoke(seeded.secret)  # a console run adopts the key and tells its owner
    assert len(owners.mails()) == 1
    clock.advance(4 * DAY)
    set_last_used("bob", key, (clock.now() - timedelta(hours=1)).replace(tzinfo=None))
    for _ in range(2):  # the 72 h reminder's day: targeted runs
        invoke(seeded.secret, event={"secrets": [seeded.secret]}, context=LambdaContext())
    assert owners.mails() == []
    invoke(seeded.secret, event=scheduled(clock, 4), context=LambdaContext())
    (reminder,) = owners.mails()
    assert "72 h left" in reminder.subject


def test_no_reminder_once_the_adopted_key_is_no_longer_used(aws, invoke, owners, clock):
    seeded = adopted_user(aws)
    owners.tag("bob", "bob@example.com")
    set_last_used("bob", seeded.key_ids[0], (clock.now() - timedelta(hours=1)).replace(tzinfo=None))
    for day in range(8):  # used just before its adoption, never since
        invoke(seeded.secret, event=scheduled(clock, day))
        clock.advance(DAY)
    assert len(owners.mails()) == 1, "the adoption only: IAM shows the key unused for days before its reminders"


@pytest.fixture
def graced(aws, invoke, owners, monkeypatch):
    monkeypatch.setenv("GRACE_HOURS", "24")
    monkeypatch.setenv("MAX_GRACE_HOURS", "72")
    monkeypatch.setenv("LOOKUP_HOLDOUTS", "true")
    monkeypatch.delenv("ROTATE_AFTER_DAYS")


def test_a_previous_key_still_in_use_tells_its_owner_who_uses_it_and_when_it_goes(
        aws, invoke, owners, graced, clock, cloudtrail):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    owners.tag("alice", "alice@example.com")
    old = seeded.key_ids[0]
    told = {}
    for day in range(4):
        when = clock.now() - timedelta(hours=1)
        if day:
            set_last_used("alice", old, when.replace(tzinfo=None))
            cloudtrail.record(old, when, source_ip="198.51.100.23", user_agent="nightly-report/1.0")
        invoke(seeded.secret, event=scheduled(clock, day))
        mails = owners.mails()
        if mails:
            told[day] = mails
        clock.advance(DAY)
    assert sorted(told) == [1, 2], "the run that finds it still used, then 24 hours before it goes"
    (first,), (reminder,) = told[1], told[2]
    assert old in first.subject and "still in use" in first.subject
    assert "198.51.100.23 with nightly-report/1.0" in first.body and seeded.secret in first.body
    assert "24 h left" in reminder.subject
    assert aws.keys("alice")[old] == "Inactive"
    no_secret_in("alice", [first.body, reminder.body])


def test_daily_console_runs_tell_a_previous_key_s_owner_as_the_schedule_s_runs_do(aws, invoke, owners, graced, clock):
    # A whole run without a scheduled event (the console, the CLI) answers for its own time: its owner notices
    # fall to it as to a scheduled run's.
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    owners.tag("alice", "alice@example.com")
    old = seeded.key_ids[0]
    told = {}
    for day in range(4):
        if day:
            set_last_used("alice", old, (clock.now() - timedelta(hours=1)).replace(tzinfo=None))
        invoke(seeded.secret)
        told[day] = [m.subject for m in owners.mails()]
        clock.advance(DAY)
    assert [day for day, subjects in told.items() if any(old in s and "still in use" in s for s in subjects)] == [
        1], told
    assert aws.keys("alice")[old] == "Inactive"


def test_a_leaked_key_s_owner_is_told_it_was_replaced_and_deactivated(aws, invoke, owners):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    owners.tag("alice", owners.topic)
    (old,) = seeded.key_ids
    result = invoke(seeded.secret, event={"exposed": [old]}, context=LambdaContext())
    (post,) = owners.posts()
    assert post["Subject"] == f"Exposed access key {old} replaced and deactivated (IAM user alice)"
    assert aws.value(seeded.secret)["AccessKeyId"] in post["Message"] and "Who used it:" in post["Message"]
    assert [(e["case"], e["status"]) for e in result["owners_told"]] == [("exposed", "told")]
    no_secret_in("alice", [post["Message"]])


def test_a_failed_rotation_tells_the_owner_what_was_left_as_it_was(aws, invoke, owners, faults, monkeypatch):
    monkeypatch.delenv("ROTATE_AFTER_DAYS")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    owners.tag("alice", "alice@example.com")
    faults.inject("put_secret_value", REFUSED, error=("AccessDeniedException", "injected", 400))
    with pytest.raises(lambda_function.RotationFailed):
        invoke(seeded.secret)
    (mail,) = owners.mails()
    assert mail.subject == f"Key rotation failed; the secret still holds {seeded.key_ids[0]} (IAM user alice)"
    assert "PutSecretValue failed" in mail.body and f"still holds access key {seeded.key_ids[0]}" in mail.body


def test_keys_no_secret_holds_are_told_15_and_7_days_before_the_deadline_and_once_overdue(
        aws, invoke, owners, clock, monkeypatch):
    monkeypatch.setenv("ACCOUNT_REPORT", "true")
    monkeypatch.setenv("MAX_KEY_AGE_DAYS", "20")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    aws.iam.create_user(UserName="carol")
    aws.iam.create_access_key(UserName="carol")
    owners.tag("carol", "carol@example.com")
    told = {}
    for day in range(25):
        for _ in range(2):
            invoke(seeded.secret, event=scheduled(clock, day), context=LambdaContext())
        for mail in owners.mails():
            told[day] = mail.subject
        clock.advance(DAY)
    assert sorted(told) == [5, 13, 20], told
    assert "in 15 days" in told[5] and "in 7 days" in told[13] and "past the key age limit" in told[20]


def test_a_malformed_owner_tag_is_reported_and_the_rest_of_it_told(aws, invoke, owners):
    seeded = adopted_user(aws)
    owners.tag("bob", "not-an-address bob@example.com arn:aws:sqs:us-east-1:123456789012:q")
    result = invoke(seeded.secret)
    assert len(owners.mails()) == 1
    bad = [e for e in result["owners_told"] if e["case"] == "malformed_tag"]
    assert [e["owner"] for e in bad] == ["not-an-address", "arn:aws:sqs:us-east-1:123456789012:q"]
    assert all(e["status"] == "not told" for e in bad) and result["failed"] == 0


def test_an_unverified_sender_is_reported_counted_and_the_run_goes_on(aws, invoke, owners, monkeypatch, capsys):
    seeded = adopted_user(aws)
    owners.tag("bob", "bob@example.com")
    monkeypatch.setenv("OWNER_SENDER", "nobody@unverified.example")
    result = invoke(seeded.secret)
    (entry,) = result["owners_told"]
    assert entry["status"] == "not told" and "MessageRejected" in entry["why"] and result["rotated"] == 1
    assert owners.mails() == []
    (metric,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "OwnersNotTold" in line]
    assert metric["OwnersNotTold"] == 1


def test_a_throttled_ses_is_retried_by_botocore_then_given_up_for_the_run(aws, invoke, owners, faults, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    users = [adopted_user(aws, user) for user in ("bob", "dan")]
    for seeded in users:
        owners.tag(seeded.user, f"{seeded.user}@example.com")
    fault = faults.inject("send_email", REFUSED, error=("Throttling", "Rate exceeded", 400))
    result = invoke(*(s.secret for s in users))
    assert fault.failed == 3, "botocore's standard retries: three attempts in all"
    assert [e["status"] for e in result["owners_told"]] == ["not told", "not told"]
    assert "no more e-mail this run" in result["owners_told"][1]["why"] and result["rotated"] == 2


def test_an_ses_refusal_is_not_retried_and_the_next_owner_is_told(aws, invoke, owners, faults):
    users = [adopted_user(aws, user) for user in ("bob", "dan")]
    for seeded in users:
        owners.tag(seeded.user, f"{seeded.user}@example.com")
    faults.inject("send_email", REFUSED, error=("MessageRejected", "Email address is not verified.", 400))
    result = invoke(*(s.secret for s in users))
    assert [e["status"] for e in result["owners_told"]] == ["not told", "told"]
    assert len(owners.mails()) == 1


def test_a_topic_in_another_account_is_refused(aws, invoke, owners):
    seeded = adopted_user(aws)
    owners.tag("bob", "arn:aws:sns:us-east-1:999999999999:elsewhere")
    (entry,) = invoke(seeded.secret)["owners_told"]
    assert entry["status"] == "not told" and "account 999999999999" in entry["why"]


def test_without_owner_sender_mail_owners_are_not_told_and_topics_are(aws, invoke, owners, monkeypatch):
    monkeypatch.delenv("OWNER_SENDER")
    seeded = adopted_user(aws)
    owners.tag("bob", f"bob@example.com {owners.topic}")
    mail, topic = invoke(seeded.secret)["owners_told"]
    assert mail["status"] == "not told" and "OWNER_SENDER is not set" in mail["why"]
    assert topic["status"] == "told" and len(owners.posts()) == 1


def test_a_run_with_nothing_to_say_makes_no_owner_call(aws, invoke, owners, faults, monkeypatch):
    monkeypatch.delenv("ROTATE_AFTER_DAYS")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    owners.tag("alice", "alice@example.com")
    tags_read, tagged = faults.watch("list_user_tags"), faults.watch("tag_user")
    result = invoke(seeded.secret)
    assert result["rotated"] == 1 and result["owners_told"] == []
    assert len(tags_read) == 1, "the guard's own read"
    assert all(lambda_function.TOLD_TAG not in str(call["body"]) for call in tagged)
    assert owners.mails() == []


def test_an_owner_tag_parses_into_addresses_and_malformed_parts():
    owners, bad = lambda_function.parse_owners("a@example.com  arn:aws:sns:eu-west-1:111122223333:team a@example.com "
                                               "arn:aws:sns:eu-west-1:1111:x mailto:a@b <a@b.c>")
    assert owners == (lambda_function.Owner("a@example.com", False),
                      lambda_function.Owner("arn:aws:sns:eu-west-1:111122223333:team", True))
    assert bad == ("arn:aws:sns:eu-west-1:1111:x", "mailto:a@b", "<a@b.c>")
    assert lambda_function.parse_owners(None) == ((), ())


def test_owner_sender_must_be_an_e_mail_address():
    with pytest.raises(lambda_function.ConfigError, match="OWNER_SENDER"):
        lambda_function.load_settings({"OWNER_SENDER": "not an address"}, {})
    assert lambda_function.load_settings({"OWNER_SENDER": SENDER}, {}).owner_sender == SENDER


def test_every_field_of_a_message_is_clipped():
    notice = lambda_function.owner_notice("u", lambda_function.Case.FAILED, "AKIA", "f", "é" * 500,
                                          ("x" * 9000, lambda_function.said("y" * 9000), "z"))
    assert len(notice.subject) < 100 and notice.subject.isascii() and len(notice.body) <= 4000
    assert len(lambda_function.said("y" * 9000)) <= lambda_function.OWNER_FIELD


def test_an_adoption_is_told_by_the_run_that_records_it_and_by_no_later_run(aws, invoke, owners, clock):
    seeded = adopted_user(aws)
    owners.tag("bob", "bob@example.com")
    invoke(seeded.secret)  # a console run: no scheduled event, no mark; the adoption tag is the record
    clock.advance(3 * HOUR)
    again = invoke(seeded.secret)
    assert len(owners.mails()) == 1 and again["owners_told"] == []


def test_each_managed_secret_s_entry_names_its_owners_from_the_tags_the_run_read(aws, invoke, owners, monkeypatch):
    monkeypatch.delenv("ROTATE_AFTER_DAYS")
    told = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    silent = seed_row(aws.iam, aws.secrets, ROWS[1], user="dan")
    owners.tag("alice", "alice@example.com")
    entries = {e["user"]: e for e in invoke(told.secret, silent.secret, event={"report": True})["secrets"]}
    assert entries["alice"]["owner"] == "alice@example.com" and "owner" not in entries["dan"]


def test_every_moment_falls_to_exactly_one_run_of_the_daily_schedule():
    from datetime import UTC, datetime

    start = datetime(2030, 1, 1, 6, tzinfo=UTC)
    runs = [start + timedelta(days=d) for d in range(10)]
    for minutes in range(24 * 60, 8 * 24 * 60, 7):
        moment = start + timedelta(minutes=minutes)
        assert sum(lambda_function.in_this_run(moment, run) for run in runs) == 1, moment
