"""Hardened against AWS's answers and limits: a bounded blast radius, attempts as botocore counts them,
answers checked against the question, messages within SNS's limit, a rollback window.

Faults are HTTP answers where botocore's retry handler must see them (``before-send`` returns the response
AWS would send), or edits of the parsed answer (``after-call``) where the answer itself is what is wrong."""

from __future__ import annotations

import pytest

import lambda_function
from faults import REFUSED
from lambda_function import ConfigError, RotationFailed
from seed import ROWS, backdate_key, seed_row


def function_clients():
    return lambda_function.aws_clients(lambda_function.Settings())


# --- MAX_FAILURES -----------------------------------------------------------------------------------------------------


def test_a_systemic_sts_denial_stops_after_max_failures_rotations(aws, invoke, sts):
    seeded = [seed_row(aws.iam, aws.secrets, ROWS[1], user=f"u{i:02}") for i in range(50)]
    sts.refusals, sts.refusal_code = 10**9, "AccessDenied"  # an SCP denying STS: every key fails at once
    with pytest.raises(RotationFailed) as failure:
        invoke(*(s.secret for s in seeded))
    touched = [s for s in seeded if len(aws.versions(s.secret)) > 1]
    assert len(touched) == 5, "the first wave only: at most MAX_FAILURES half-done rotations"
    for s in seeded:
        if s not in touched:
            assert aws.keys(s.user) == {s.key_ids[0]: "Active"} and len(aws.versions(s.secret)) == 1
        assert aws.keys(s.user)[s.key_ids[0]] == "Active", "no old key retired unverified"
    assert "not attempted: MAX_FAILURES=5" in str(failure.value)


def test_secrets_refused_for_their_own_value_do_not_count(aws, invoke):
    for i in range(6):
        aws.secrets.create_secret(Name=f"broken-{i}", SecretString="not json")
    good = [seed_row(aws.iam, aws.secrets, ROWS[1], user=f"g{i}") for i in range(3)]
    with pytest.raises(RotationFailed) as failure:
        invoke(*[f"broken-{i}" for i in range(6)], *(g.secret for g in good))
    assert str(failure.value).startswith("6 of 9")
    for g in good:
        aws.assert_converged(g.secret)


def test_max_failures_zero_turns_the_limit_off(aws, invoke, sts, monkeypatch):
    monkeypatch.setenv("MAX_FAILURES", "0")
    seeded = [seed_row(aws.iam, aws.secrets, ROWS[1], user=f"u{i}") for i in range(7)]
    sts.refusals, sts.refusal_code = 10**9, "AccessDenied"
    with pytest.raises(RotationFailed):
        invoke(*(s.secret for s in seeded))
    assert all(len(aws.versions(s.secret)) == 2 for s in seeded)


# --- AWS_MAX_ATTEMPTS: total attempts, the first included -----------------------------------------------------------


@pytest.mark.parametrize("attempts", [1, 2])
def test_aws_max_attempts_is_the_total_number_of_attempts(aws, invoke, faults, monkeypatch, attempts):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", str(attempts))
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    fault = faults.inject("list_access_keys", REFUSED)  # a 503 on every attempt
    with pytest.raises(RotationFailed, match="ListAccessKeys failed: ServiceUnavailable"):
        invoke(seeded.secret)
    assert fault.failed == attempts


# --- answers checked against the question ---------------------------------------------------------------------------


def test_a_batch_answer_for_a_secret_not_asked_for_fails_the_batch(aws, invoke):
    one = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    two = seed_row(aws.iam, aws.secrets, ROWS[1], user="bob")

    def swap(parsed, **_):
        for value in parsed.get("SecretValues", []):
            value["ARN"] = value["ARN"] + "-elsewhere"

    function_clients().secrets.meta.events.register("after-call.secrets-manager.BatchGetSecretValue", swap)
    with pytest.raises(RotationFailed, match="not asked for"):
        invoke(one.secret, two.secret)
    assert len(aws.versions(one.secret)) == 1 and len(aws.versions(two.secret)) == 1


def test_a_batch_answer_naming_another_secret_fails_that_secret(aws, invoke):
    one = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")

    def rename(parsed, **_):
        for value in parsed.get("SecretValues", []):
            value["Name"] = "iam-keys/someone-else"

    function_clients().secrets.meta.events.register("after-call.secrets-manager.BatchGetSecretValue", rename)
    with pytest.raises(RotationFailed, match="answered with secret 'iam-keys/someone-else'"):
        invoke(one.secret)
    assert len(aws.versions(one.secret)) == 1


def test_a_list_secrets_that_repeats_its_next_token_stops(aws, invoke):
    seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")

    def repeat(parsed, **_):
        parsed["NextToken"] = "1"  # (moto reads its tokens as numbers)

    function_clients().secrets.meta.events.register("after-call.secrets-manager.ListSecrets", repeat)
    with pytest.raises(ConfigError, match="repeated a NextToken"):
        invoke(sec="iam-keys/*")


def test_a_value_of_json_null_is_named(aws, invoke):
    aws.secrets.create_secret(Name="nothing", SecretString="null")
    with pytest.raises(RotationFailed, match="must be a JSON object, not null"):
        invoke("nothing")


# --- messages within SNS's limit ------------------------------------------------------------------------------------


@pytest.mark.unit
def test_a_summary_of_a_thousand_failures_fits_in_an_sns_message():
    lines = [f"iam-keys/secret-{i:04}: failed ({'x' * 400}). What to do: read the reason" for i in range(1000)]
    message = lambda_function.fit_message(lambda_function.RunCounts(failed=1000), lines)
    assert len(message.encode()) <= 256 * 1024
    assert "failed 1000" in message and "more secrets" in message


# --- the template's default user path -------------------------------------------------------------------------------


@pytest.mark.unit
def test_the_template_defaults_to_a_dedicated_user_path():
    from pathlib import Path

    text = (Path(__file__).parent.parent / "template.yaml").read_text()
    block = text.split("  UserPath:", 1)[1].split("\n  ", 4)
    assert "Default: /key-rotation/" in "\n".join(block[:3])


# --- a bounded rotation ----------------------------------------------------------------------------------------------


def test_a_rotation_deadline_is_checked_before_every_attempt_and_a_clean_up_gets_its_own(aws, clock):
    from lambda_function import CallTooSlow

    settings = lambda_function.load_settings({"TIME_MARGIN_SECONDS": "40"}, {})
    clients = lambda_function.aws_clients(settings, clock)
    with clients.budget.deadline(40):
        clients.iam.list_users()  # inside the deadline: sent
        clock.advance(41)  # backoff and rate-limiter waits count: they pass on this clock too
        with pytest.raises(CallTooSlow, match="reached its deadline"):
            clients.iam.list_users()
        with clients.budget.deadline(lambda_function.CLEANUP_SECONDS):  # a clean-up's own short bound
            clients.iam.list_users()
        with pytest.raises(CallTooSlow):
            clients.iam.list_users()
    clients.iam.list_users()  # outside any rotation: no deadline


def test_a_rotation_past_its_deadline_fails_safely_and_deletes_the_key_it_made(aws, invoke, clock, monkeypatch):
    # The store is reached only after the rotation's deadline (the clock jumps as CreateAccessKey answers): the
    # store is not attempted, as a refused call; the new key's clean-up runs in the reserve kept at the end of
    # TIME_MARGIN_SECONDS (the last CLEANUP_SECONDS of it).
    monkeypatch.setenv("TIME_MARGIN_SECONDS", "40")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    clients = lambda_function.aws_clients(lambda_function.load_settings({"TIME_MARGIN_SECONDS": "40"}, {}), clock)
    clients.iam.meta.events.register("after-call.iam.CreateAccessKey", lambda **_: clock.advance(32))
    with pytest.raises(RotationFailed, match="deadline") as failure:
        invoke(seeded.secret)
    assert "new key deleted, old key unchanged" in str(failure.value)
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active"} and len(aws.versions(seeded.secret)) == 1


def test_a_clean_up_never_runs_past_the_margin_and_a_later_run_deletes_what_it_left(aws, invoke, clock,
                                                                                    monkeypatch):
    # Past the whole margin nothing more is attempted, the clean-up included (Lambda would stop the run): the
    # new key is left, the reason says so, and the first run once IAM's last-used data covers the key's life knows
    # it for the function's own and deletes it.
    monkeypatch.setenv("TIME_MARGIN_SECONDS", "40")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    clients = lambda_function.aws_clients(lambda_function.load_settings({"TIME_MARGIN_SECONDS": "40"}, {}), clock)
    clients.iam.meta.events.register("after-call.iam.CreateAccessKey", lambda **_: clock.advance(45))
    start, sent = clock.monotonic(), []
    for client in (clients.iam, clients.secrets):  # what reaches the wire (after the budget's check)
        client.meta.events.register_first("before-send", lambda request, **_: sent.append(clock.monotonic()))
    with pytest.raises(RotationFailed, match="left in place"):
        invoke(seeded.secret)
    assert sent and all(at < start + 40 for at in sent), "nothing is sent past the margin's end"
    (left,) = set(aws.keys("alice")) - set(seeded.key_ids)
    lambda_function.clients_for.cache_clear()
    clock.advance(lambda_function.LOST_KEY_WAIT.total_seconds() + 60)
    (entry,) = invoke(seeded.secret)["secrets"]
    assert left not in aws.keys("alice") and "never stored" in entry["reason"]
    assert aws.holds_working_key(seeded.secret)


# --- the first wave: MAX_FAILURES counts rotations that act -----------------------------------------------------------


def test_the_first_wave_counts_rotations_not_secrets(aws, invoke, sts, monkeypatch):
    # Four secrets not due, then four due, STS refusing every new key: MAX_FAILURES=2 rotations are left half done,
    # the rest not attempted.
    monkeypatch.setenv("MAX_FAILURES", "2")
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "30")
    monkeypatch.setenv("VERIFY_TIMEOUT_SECONDS", "2")
    seeded = [seed_row(aws.iam, aws.secrets, ROWS[1], user=f"u{i}") for i in range(8)]
    for s in seeded[4:]:
        backdate_key(s.user, s.key_ids[0], 40)
    known = {k for s in seeded for k in s.key_ids}
    sts.not_yet = lambda key_id: key_id not in known
    with pytest.raises(RotationFailed):
        invoke(sec="iam-keys/*")
    half_done = [s.user for s in seeded if aws.value(s.secret)["AccessKeyId"] not in known]
    assert len(half_done) == 2, half_done
    untouched = [s.user for s in seeded if aws.keys(s.user) == {s.key_ids[0]: "Active"}]
    assert len(untouched) == 6
