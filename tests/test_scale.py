"""Scale: minimal calls, a bounded thread pool, throttling, and Lambda's time limit."""

from __future__ import annotations

import collections
import json
import threading
import urllib.request

import boto3
import pytest

import lambda_function
from fake_region import control, serve
from lambda_function import RotationFailed
from local_aws import FAKE_ENV
from seed import ROWS, iam_secret_keys, seed_row, seed_user


def record_calls(clients) -> collections.Counter:
    """Count the API calls the clients make, by operation (retries not included)."""
    counts: collections.Counter = collections.Counter()
    for client in (clients.iam, clients.secrets):
        client.meta.events.register("before-call.*.*", lambda model, **_: counts.update([model.name]))
    return counts


STEADY_STATE_CALLS = {
    # consistent reads: the secret's stages, rotation and tags; its current value (up to 20 a call)
    "DescribeSecret": 1, "BatchGetSecretValue": 1,
    # the user names the secret back (REQUIRE_USER_TAG); its keys
    "ListUserTags": 1, "ListAccessKeys": 1,
    # the table's row "1 active + 1 inactive": the previous key was already Inactive, so no holder is read
    "DeleteAccessKey": 1, "CreateAccessKey": 1, "PutSecretValue": 1, "UpdateAccessKey": 1,
    # the mark on the user just before the create (key-rotation-made), by which a later run knows a key whose
    # answer was lost for the function's own
    "TagUser": 1,
}


def test_steady_state_rotation_makes_one_call_of_each_kind(aws, invoke, monkeypatch):
    monkeypatch.setenv("VERIFY_TIMEOUT_SECONDS", "0")
    seeded = seed_user(aws.iam, aws.secrets, "alice", ("Inactive", "Active"), held=1)
    counts = record_calls(lambda_function.aws_clients(lambda_function.Settings()))
    invoke(seeded.secret)
    assert counts == STEADY_STATE_CALLS


def test_verification_adds_one_sts_call_when_the_key_works(aws, invoke):
    seeded = seed_user(aws.iam, aws.secrets, "alice", ("Inactive", "Active"), held=1)
    counts = record_calls(lambda_function.aws_clients(lambda_function.Settings()))
    invoke(seeded.secret)
    assert counts == STEADY_STATE_CALLS and aws.sts.calls == [aws.value(seeded.secret)["AccessKeyId"]]


def test_secrets_rotate_on_a_bounded_pool_of_shared_clients(aws, invoke, monkeypatch):
    monkeypatch.setenv("MAX_WORKERS", "3")
    monkeypatch.setenv("VERIFY_TIMEOUT_SECONDS", "0")
    seeded = [seed_row(aws.iam, aws.secrets, ROWS[i % len(ROWS)], user=f"user-{i}") for i in range(20)]
    threads, running, peak = set(), [0], [0]
    lock = threading.Lock()

    def enter(**_):
        with lock:
            threads.add(threading.current_thread().name)
            running[0] += 1
            peak[0] = max(peak[0], running[0])

    def leave(**_):
        with lock:
            running[0] -= 1

    clients = lambda_function.aws_clients(lambda_function.Settings())
    for client in (clients.iam, clients.secrets):
        client.meta.events.register("before-call.*.*", enter)
        client.meta.events.register("after-call.*.*", leave)
    made_before = lambda_function.clients_for.cache_info().misses

    result = invoke(*(s.secret for s in seeded))
    invoke(*(s.secret for s in seeded))  # a second invocation in the same environment

    assert result["rotated"] == 20
    assert 1 < len(threads) <= 3 and peak[0] <= 3
    assert lambda_function.clients_for.cache_info().misses == made_before, "clients are made once, not per run"
    assert lambda_function.aws_clients(lambda_function.Settings()) is clients
    for s in seeded:
        aws.assert_converged(s.secret)
    assert [s["secret"] for s in result["secrets"]] == [s.secret for s in seeded], "results stay in order"


@pytest.fixture
def region(monkeypatch):
    """A moto server on 127.0.0.1 behind a WSGI layer that can answer 'Rate exceeded'."""
    server, region, url = serve()
    control(url, "reset")  # moto's state is per process: clear what other tests left
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10)
    for name, value in {**FAKE_ENV, "AWS_ENDPOINT_URL": url}.items():
        monkeypatch.setenv(name, value)
    yield url
    server.shutdown()


def test_throttling_slows_the_run_instead_of_failing_it(region, monkeypatch, botocore_on_clock):
    import os

    # botocore's backoff and adaptive mode's rate limiter wait on the test's clock, as does verification.
    iam, secrets = boto3.client("iam"), boto3.client("secretsmanager")
    seeded = [seed_user(iam, secrets, f"user-{i}", ("Inactive", "Active"), held=1) for i in range(4)]
    monkeypatch.setenv("sec", ";".join(s.secret for s in seeded))
    throttle = {op: 1 for op in ("DescribeSecret", "BatchGetSecretValue", "ListUserTags", "ListAccessKeys",
                                 "DeleteAccessKey", "CreateAccessKey", "PutSecretValue", "UpdateAccessKey",
                                 "GetCallerIdentity")}
    control(region, "reset")
    control(region, "config", {"throttle": throttle})

    result = lambda_function.handle({}, None, os.environ, botocore_on_clock)

    stats = control(region, "stats")
    assert stats["throttled"] == throttle, "every operation was refused once"
    assert result["rotated"] == 4
    for s in seeded:
        value = json.loads(secrets.get_secret_value(SecretId=s.secret)["SecretString"])
        keys = {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName=s.user)["AccessKeyMetadata"]}
        assert keys == {s.key_ids[1]: "Inactive", value["AccessKeyId"]: "Active"}
        assert iam_secret_keys(s.user)[value["AccessKeyId"]] == value["SecretAccessKey"]
    # A throttled CreateAccessKey is retried without making a second key.
    assert stats["calls"]["CreateAccessKey"] == 4 + 1


def key_state(iam, secrets, seeded) -> tuple[dict, dict]:
    value = json.loads(secrets.get_secret_value(SecretId=seeded.secret, VersionStage="AWSCURRENT")["SecretString"])
    keys = {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName=seeded.user)["AccessKeyMetadata"]}
    return value, keys


@pytest.mark.parametrize("operation", ["CreateAccessKey", "PutSecretValue", "DeleteAccessKey", "UpdateAccessKey"])
def test_retried_call_whose_first_answer_was_lost_leaves_no_extra_key(region, monkeypatch, operation):
    # botocore retries a 5xx; the lost attempt was applied all the same.
    iam, secrets = boto3.client("iam"), boto3.client("secretsmanager")
    empty = seed_user(iam, secrets, "empty", (), held=None)  # room for two new keys
    steady = seed_user(iam, secrets, "steady", ("Inactive", "Active"), held=1)  # makes every call once
    monkeypatch.setenv("sec", f"{empty.secret};{steady.secret}")
    for seeded in (empty, steady):
        control(region, "reset")
        control(region, "config", {"lose": {operation: 1}})
        lost_create_without_room = operation == "CreateAccessKey" and seeded is steady
        if lost_create_without_room:
            # The lost attempt took the last free place, so the retry hits the two-key limit:
            # the run fails safe, removing the key whose secret nobody got.
            with pytest.raises(RotationFailed, match="LimitExceeded.*old key unchanged"):
                lambda_function.lambda_handler({"secrets": [seeded.secret]}, None)
        else:
            assert lambda_function.lambda_handler({"secrets": [seeded.secret]}, None)["rotated"] == 1
        assert control(region, "stats")["calls"].get(operation, 0) != 1, "a lost call is retried"
        value, keys = key_state(iam, secrets, seeded)
        assert [k for k, status in keys.items() if status == "Active"] == [value["AccessKeyId"]], keys
        assert iam_secret_keys(seeded.user)[value["AccessKeyId"]] == value["SecretAccessKey"]
        assert len(keys) <= 2


class Context:
    """A Lambda context whose clock runs down by `per_call` seconds each time it is asked."""

    function_name = "iam-key-rotation"

    def __init__(self, remaining: float, per_call: float = 0.0) -> None:
        self.remaining, self.per_call = remaining, per_call
        self.lock = threading.Lock()

    def get_remaining_time_in_millis(self) -> int:
        with self.lock:
            left, self.remaining = self.remaining, self.remaining - self.per_call
            return int(left * 1000)


def test_no_rotation_starts_without_enough_time(aws, invoke, monkeypatch):
    seeded = [seed_row(aws.iam, aws.secrets, ROWS[1], user=f"u{i}") for i in range(3)]
    monkeypatch.setenv("sec", ";".join(s.secret for s in seeded))
    with pytest.raises(RotationFailed) as failure:
        lambda_function.lambda_handler({}, Context(remaining=59))
    assert "3 of 3 secrets failed" in str(failure.value)
    assert "not attempted: less than 60s of the Lambda time limit left" in str(failure.value)
    assert all(len(aws.versions(s.secret)) == 1 and len(aws.keys(s.user)) == 1 for s in seeded)


def test_run_stops_starting_rotations_near_the_limit(aws, invoke, monkeypatch):
    monkeypatch.setenv("MAX_WORKERS", "1")
    monkeypatch.setenv("TIME_MARGIN_SECONDS", "100")
    seeded = [seed_row(aws.iam, aws.secrets, ROWS[1], user=f"u{i}") for i in range(5)]
    monkeypatch.setenv("sec", ";".join(s.secret for s in seeded))
    with pytest.raises(RotationFailed) as failure:
        lambda_function.lambda_handler({}, Context(remaining=130, per_call=10))  # 130, 120, 110, 100, 90
    message = str(failure.value)
    assert message.startswith("1 of 5 secrets failed") and f"secret '{seeded[4].secret}': not attempted" in message
    for s in seeded[:4]:
        aws.assert_converged(s.secret)  # every started rotation finished
    assert len(aws.versions(seeded[4].secret)) == 1 and len(aws.keys(seeded[4].user)) == 1


def test_a_context_without_a_clock_still_rotates(aws, monkeypatch):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="u")
    monkeypatch.setenv("sec", seeded.secret)
    assert lambda_function.lambda_handler({}, object())["rotated"] == 1


def test_throttling_without_let_up_fails_the_secret_within_its_share_of_the_margin(region, monkeypatch,
                                                                                   botocore_on_clock):
    import os

    iam, secrets = boto3.client("iam"), boto3.client("secretsmanager")
    seeded = seed_user(iam, secrets, "alice", ("Active",), held=0)
    monkeypatch.setenv("sec", seeded.secret)
    monkeypatch.setenv("TIME_MARGIN_SECONDS", "40")  # one call may retry for 10 s
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "20")
    monkeypatch.setenv("VERIFY_TIMEOUT_SECONDS", "0")  # moto's STS would accept anything
    control(region, "config", {"throttle": {"PutSecretValue": 1000}})  # refused before moto sees it
    clock = botocore_on_clock  # botocore's own backoff and rate limiter wait on it too: the test never sleeps

    with pytest.raises(RotationFailed, match="past its share of TIME_MARGIN_SECONDS") as failure:
        lambda_function.handle({}, None, os.environ, clock)

    attempts = control(region, "stats")["throttled"]["PutSecretValue"]
    assert "new key deleted, old key unchanged" in str(failure.value)
    assert 1 < attempts < 20, "botocore retried, then the budget stopped it"
    assert sum(clock.sleeps) <= 10 + 20, "at most the budget plus one backoff (botocore caps a backoff at 20 s)"
    value, keys = key_state(iam, secrets, seeded)
    assert keys == {seeded.key_ids[0]: "Active"} and value["AccessKeyId"] == seeded.key_ids[0]


def test_no_retry_layer_above_botocore(aws):
    # Throttling is botocore's to wait out (adaptive mode); the budget above bounds it.
    clients = lambda_function.aws_clients(lambda_function.Settings())
    assert type(clients.iam).__module__.startswith("botocore") and type(clients.secrets).__module__.startswith(
        "botocore")


def test_a_key_made_by_hand_between_list_and_create_is_not_deleted(aws, invoke, monkeypatch):
    seeded = seed_user(aws.iam, aws.secrets, "alice", ("Active",), held=0)
    clients = lambda_function.aws_clients(lambda_function.Settings())
    by_hand = []

    def make_one_by_hand(**_):
        if not by_hand:
            by_hand.append(aws.iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"])

    clients.iam.meta.events.register("after-call.iam.ListAccessKeys", make_one_by_hand)
    with pytest.raises(RotationFailed, match="LimitExceeded: a key appeared since the keys were listed"):
        invoke(seeded.secret)
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active", by_hand[0]: "Active"}
    assert aws.holds_working_key(seeded.secret) and len(aws.versions(seeded.secret)) == 1


def test_a_mock_context_is_not_taken_for_a_clock(aws, monkeypatch):
    from unittest.mock import MagicMock

    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="u")
    monkeypatch.setenv("sec", seeded.secret)
    assert lambda_function.lambda_handler({}, MagicMock())["rotated"] == 1
