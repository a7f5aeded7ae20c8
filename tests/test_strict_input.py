"""Strict input, bounded failure: a setting or event the function does not understand is a ConfigError before
anything is touched; a fault never ends a run without a per-secret report and its metrics."""

from __future__ import annotations

import json

import pytest

import lambda_function
from conftest import LambdaContext, load_event
from faults import REFUSED
from lambda_function import ConfigError, RotationFailed, load_settings
from seed import ROWS, begin_rotation, seed_row


@pytest.fixture
def alice(aws):
    return seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")


def untouched(aws, seeded) -> bool:
    return aws.keys(seeded.user) == {seeded.key_ids[0]: "Active"} and len(aws.versions(seeded.secret)) == 1


# --- settings -------------------------------------------------------------------------------------------------------

BAD_SETTINGS = [
    ("DRY_RUN", "y"), ("DRY_RUN", "enabled"), ("REQUIRE_USER_TAG", "enabled"), ("REQUIRE_USER_TAG", "2"),
    ("VERIFY_TIMEOUT_SECONDS", "nan"), ("VERIFY_TIMEOUT_SECONDS", "inf"), ("VERIFY_TIMEOUT_SECONDS", "-1"),
    ("VERIFY_TIMEOUT_SECONDS", "601"), ("ROTATE_AFTER_DAYS", "ninety"), ("ROTATE_AFTER_DAYS", "-1"),
    ("TIME_MARGIN_SECONDS", "soon"), ("TIME_MARGIN_SECONDS", "1e9"), ("MAX_WORKERS", "0"), ("MAX_WORKERS", "2.5"),
    ("MAX_WORKERS", "65"), ("GRACE_HOURS", "-3"), ("GRACE_HOURS", "nan"), ("MAX_GRACE_HOURS", "1e99"),
    ("AWS_MAX_ATTEMPTS", "0"), ("AWS_MAX_ATTEMPTS", "many"), ("AWS_RETRY_MODE", "fast"), ("LOG_LEVEL", "verbose"),
    ("NOTIFY_TOPIC_ARN", "my-topic"), ("sec", "iam-keys/a,iam-keys/b"), ("sec", "iam-keys/*/x"), ("sec", "*"),
    # a wildcard in a topic's or bus's place would stand in make policy's grants as it stands here
    ("NOTIFY_TOPIC_ARN", "arn:aws:sns:*:111122223333:alerts"),
    ("NOTIFY_TOPIC_ARN", "arn:*:sns:eu-west-1:111122223333:a"),
    ("EVENT_BUS", "arn:*:events:eu-west-1:111122223333:event-bus/x"),
    ("EVENT_BUS", "arn:aws:events:eu-*:111122223333:event-bus/x"),
]


@pytest.mark.parametrize("name, value", BAD_SETTINGS, ids=[f"{n}={v}" for n, v in BAD_SETTINGS])
def test_a_setting_not_understood_names_itself_and_changes_nothing(aws, invoke, monkeypatch, alice, name, value):
    if name != "sec":
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name) as failure:
        invoke(alice.secret, sec=value if name == "sec" else None)
    assert "use" in str(failure.value) or "separate" in str(failure.value) or "prefix" in str(failure.value)
    assert untouched(aws, alice)


def test_a_setting_not_understood_refuses_a_rotation_step_too(aws, monkeypatch, alice):
    from conftest import LambdaContext
    from seed import begin_rotation

    monkeypatch.setenv("REQUIRE_USER_TAG", "enabled")
    token = begin_rotation(alice.secret)
    with pytest.raises(ConfigError, match="REQUIRE_USER_TAG"):
        lambda_function.lambda_handler({"Step": "createSecret", "SecretId": alice.secret,
                                        "ClientRequestToken": token}, LambdaContext())
    assert aws.keys("alice") == {alice.key_ids[0]: "Active"}


def test_grace_longer_than_its_maximum_is_refused(monkeypatch):
    with pytest.raises(ConfigError, match="MAX_GRACE_HOURS"):
        load_settings({"GRACE_HOURS": "48", "MAX_GRACE_HOURS": "24", "sec": "x"}, {})
    assert load_settings({"GRACE_HOURS": "200", "sec": "x"}, {}).max_grace_hours == 200, "default at least grace"


@pytest.mark.parametrize("word, meaning", [("TRUE", True), ("On", True), ("yes", True), ("1", True),
                                           ("false", False), ("OFF", False), ("No", False), ("0", False)])
def test_booleans_take_the_usual_words_in_any_case(word, meaning):
    assert load_settings({"DRY_RUN": word, "REQUIRE_USER_TAG": word}, {}).dry_run is meaning


def test_defaults_are_the_safe_choices():
    settings = load_settings({"sec": "x"}, {})
    assert settings.require_user_tag is True and settings.dry_run is False and settings.force is False
    assert settings.verify_timeout == 30 and settings.grace_hours == 0 and settings.max_grace_hours == 168


# --- events ---------------------------------------------------------------------------------------------------------

BAD_EVENTS = [
    ({"dry_run": "true"}, "dry_run"), ({"dryRun": True}, "dry_run"), ({"DryRun": True}, "dry_run"),
    ({"DRY_RUN": True}, "dry_run"), ({"dry-run": True}, "dry_run"), ({"dry run": True}, "dry_run"),
    ({"dry.run": True}, "dry_run"), ({" Dry_Run ": True}, "dry_run"), ({"force": 1}, "force"),
    ({"Force": True}, "force"), ({"secrets": "iam-keys/alice"}, "secrets"), ({"Secrets": ["x"]}, "secrets"),
    ({"rollback": []}, "rollback"), ({"roll_back": ["x"]}, "rollback"), (["dry_run"], "JSON object"),
    ({"secrets": ["iam-keys/alice"], "rollback": ["iam-keys/alice"]}, "not both"),
]


@pytest.mark.parametrize("event, named", BAD_EVENTS, ids=[json.dumps(e) for e, _ in BAD_EVENTS])
def test_an_event_control_not_understood_is_refused_before_anything_is_touched(aws, invoke, alice, event, named):
    with pytest.raises(ConfigError, match=named):
        invoke(alice.secret, event=event)
    assert untouched(aws, alice)


def test_the_consoles_default_test_event_still_rotates(aws, invoke, alice):
    assert invoke(alice.secret, event=load_event("console-test"))["rotated"] == 1


def test_the_consoles_sample_scheduled_event_does_not_make_every_later_test_a_redelivery(aws, invoke, alice):
    # The console's "Scheduled Event" template: a fixed id, a time in 1970.
    sample = load_event("eventbridge-scheduled", id="cdc73f9d-aea9-11e3-9d5a-835b769c0d9c",
                        time="1970-01-01T00:00:00Z")
    for _ in range(3):
        assert invoke(alice.secret, event=sample)["rotated"] == 1
    assert len(aws.versions(alice.secret)) >= 3


# --- faults never end a run without a report -----------------------------------------------------------------------


def emf(out: str) -> dict:
    (line,) = [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
    return line


def test_a_context_whose_clock_raises_fails_each_secret_and_still_reports(aws, invoke, alice, capsys):
    class BrokenClock:
        function_name = "f"

        def get_remaining_time_in_millis(self):
            raise RuntimeError("clock broke")

    with pytest.raises(RotationFailed, match="unexpected RuntimeError"):
        invoke(alice.secret, context=BrokenClock())
    assert emf(capsys.readouterr().out)["Failed"] == 1
    assert untouched(aws, alice)


def test_an_sts_answer_without_arn_fails_that_secret_and_keeps_the_old_key(aws, invoke, sts, alice, capsys):
    other = seed_row(aws.iam, aws.secrets, ROWS[1], user="bob")
    sts.answer = {"Account": "123456789012"}  # no Arn
    with pytest.raises(RotationFailed, match="2 of 2 secrets failed"):
        invoke(alice.secret, other.secret)
    assert emf(capsys.readouterr().out)["Failed"] == 2
    for seeded in (alice, other):
        assert aws.keys(seeded.user)[seeded.key_ids[0]] == "Active"
        assert aws.holds_working_key(seeded.secret)


DENIED = ("AccessDeniedException", "not allowed", 400)
DOWN = ("ServiceFailure", "down", 500)


def test_a_definite_refusal_of_the_write_deletes_the_new_key_without_a_re_read(aws, invoke, faults, alice):
    reads = faults.watch("get_secret_value")
    faults.inject("put_secret_value", REFUSED, error=DENIED)
    with pytest.raises(RotationFailed, match="AccessDeniedException; new key deleted, old key unchanged"):
        invoke(alice.secret)
    assert reads == [], "a definite refusal needs no re-read (the first read was batched)"
    assert untouched(aws, alice)


def test_a_new_key_that_cannot_be_deleted_is_named_as_still_there(aws, invoke, faults, alice):
    faults.inject("put_secret_value", REFUSED, error=DENIED)
    faults.inject("delete_access_key", REFUSED, error=DOWN)  # every attempt botocore makes
    with pytest.raises(RotationFailed) as failure:
        invoke(alice.secret)
    (new_key,) = set(aws.keys("alice")) - {alice.key_ids[0]}
    assert f"new key {new_key} is not in the secret and deleting it failed" in str(failure.value)
    assert "it is still there" in str(failure.value)
    assert aws.holds_working_key(alice.secret)


def test_a_failed_create_whose_clean_up_cannot_list_says_a_key_may_have_been_made(aws, invoke, faults, alice):
    faults.inject("create_access_key", REFUSED, error=DOWN)
    faults.inject("list_access_keys", REFUSED, nth=2, error=DOWN)  # the clean-up's listing
    with pytest.raises(RotationFailed, match="a key may have been made that nobody holds"):
        invoke(alice.secret)
    assert untouched(aws, alice)


def test_only_the_handler_reads_the_environment_for_settings():
    # Settings come from load_settings(environ, event), which the handler calls once; the rest take Settings.
    import inspect

    readers = {name for name, item in vars(lambda_function).items()
               if inspect.isfunction(item) and item.__module__ == "lambda_function"
               and "os.environ" in inspect.getsource(item)}
    # the handler passes os.environ in; clients read where to connect (boto3's own variables); the report reads
    # Lambda's own AWS_LAMBDA_FUNCTION_NAME
    assert readers == {"lambda_handler", "aws_clients", "report"}


@pytest.mark.parametrize("name", ["dry-run", "targeted", "force", "rollback", "report"])
def test_the_shipped_event_files_are_accepted(name):
    from pathlib import Path

    event = json.loads((Path(__file__).parent.parent / "events" / f"{name}.json").read_text())
    settings = lambda_function.load_settings({"sec": "iam-keys/*"}, event)
    assert (settings.dry_run, bool(settings.targets), settings.force, bool(settings.rollback), settings.report) == {
        "dry-run": (True, False, False, False, False), "targeted": (False, True, False, False, False),
        "force": (False, True, True, False, False), "rollback": (False, False, False, True, False),
        "report": (True, False, False, False, True)}[name]


# --- a rotation step takes no control ---------------------------------------------------------------------------------


@pytest.mark.parametrize("control", [{"dry_run": True}, {"dry run": True}, {"force": True}])
def test_a_rotation_step_with_a_control_is_refused_before_anything_is_read(aws, faults, control):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    token = begin_rotation(seeded.secret)
    reads = faults.watch("describe_secret")
    with pytest.raises(ConfigError, match="takes no control"):
        lambda_function.lambda_handler({"Step": "createSecret", "SecretId": seeded.secret,
                                        "ClientRequestToken": token, **control}, LambdaContext())
    assert reads == [] and aws.keys("alice") == {seeded.key_ids[0]: "Active"}
