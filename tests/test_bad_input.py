"""Bad input: a clear error naming the secret, the secret untouched, the others rotated."""

from __future__ import annotations

import json

import pytest

import lambda_function
from faults import function_clients
from lambda_function import ConfigError, RotationFailed
from seed import seed_user


@pytest.fixture
def good(aws):
    """A healthy secret that must rotate whatever its neighbours do."""
    return seed_user(aws.iam, aws.secrets, "good-user", ("Active",), held=0)


def snapshot(aws, secret: str) -> tuple:
    """The secret's versions and values, to prove nothing changed."""
    response = aws.secrets.get_secret_value(SecretId=secret)
    return tuple(v["VersionId"] for v in aws.versions(secret)), response.get("SecretString"), response.get(
        "SecretBinary")


@pytest.mark.parametrize("sec", [None, "", " ; ;"], ids=["unset", "empty", "blanks"])
def test_missing_sec_names_the_setting_and_changes_nothing(aws, monkeypatch, good, sec):
    if sec is None:
        monkeypatch.delenv("sec", raising=False)
    else:
        monkeypatch.setenv("sec", sec)
    with pytest.raises(ConfigError, match="'sec'"):
        lambda_function.lambda_handler({}, None)
    assert aws.keys("good-user") == {good.key_ids[0]: "Active"}


BAD_VALUES = {
    "not-json": ("{not json", "value is not valid JSON"),
    "json-list": (json.dumps(["UserName", "x"]), "value must be a JSON object, not list"),
    "json-string": (json.dumps("x"), "value must be a JSON object, not str"),
    "no-user": (json.dumps({"AccessKeyId": "AKIAEXAMPLE"}), "'UserName' is missing or empty"),
    "empty-user": (json.dumps({"UserName": "  "}), "'UserName' is missing or empty"),
    "user-not-string": (json.dumps({"UserName": 7}), "'UserName' must be a string, not int"),
    "user-spelled-lower": (json.dumps({"username": "good-user"}),
                           "'UserName' is missing or empty in the value (found 'username': the key is spelled "
                           "'UserName')"),
    "nested-too-deep": ("[" * 100000 + "]" * 100000, "value is not valid JSON (or is nested too deep)"),
    "key-id-not-string": (json.dumps({"UserName": "good-user", "AccessKeyId": 7}), "'AccessKeyId' must be a string"),
    "no-such-user": (json.dumps({"UserName": "ghost"}), "IAM user 'ghost' not found"),
}


@pytest.mark.parametrize("name", BAD_VALUES)
def test_bad_secret_value_fails_by_name_and_others_rotate(aws, invoke, good, name):
    value, message = BAD_VALUES[name]
    aws.secrets.create_secret(Name=name, SecretString=value)
    before = snapshot(aws, name)

    with pytest.raises(RotationFailed) as failure:
        invoke(name, good.secret)

    assert f"secret '{name}': {message}" in str(failure.value)
    assert str(failure.value).startswith("1 of 2 secrets failed")
    assert snapshot(aws, name) == before
    aws.assert_converged(good.secret)
    assert len(aws.versions(good.secret)) == 2


def test_binary_secret_is_refused(aws, invoke, good):
    aws.secrets.create_secret(Name="binary", SecretBinary=b"\x00\x01")
    before = snapshot(aws, "binary")
    with pytest.raises(RotationFailed, match="secret 'binary': binary secret"):
        invoke("binary", good.secret)
    assert snapshot(aws, "binary") == before
    aws.assert_converged(good.secret)


def test_missing_secret_is_reported_and_others_rotate(aws, invoke, good):
    with pytest.raises(RotationFailed, match="secret 'nope': not found"):
        invoke(good.secret, "nope")
    aws.assert_converged(good.secret)


def test_error_never_quotes_the_secret_value(aws, invoke):
    aws.secrets.create_secret(Name="leaky", SecretString='{"SecretAccessKey": "TOPSECRET", oops')
    with pytest.raises(RotationFailed) as failure:
        invoke("leaky")
    assert "TOPSECRET" not in str(failure.value)


def test_two_secrets_for_one_user_rotate_it_once(aws, invoke, good, monkeypatch):
    monkeypatch.setenv("REQUIRE_USER_TAG", "false")  # with the guard on, "second" is refused first (below)
    held = good.key_ids[0]
    aws.secrets.create_secret(Name="second", SecretString=json.dumps({"UserName": "GOOD-USER"}))
    with pytest.raises(RotationFailed) as failure:
        invoke(good.secret, "second")
    assert "secret 'second': IAM user 'GOOD-USER' is also named by secret 'iam-keys/good-user'" in str(failure.value)
    keys = aws.keys("good-user")
    assert len(keys) == 2 and keys[held] == "Inactive"
    aws.assert_converged(good.secret)
    assert len(aws.versions("second")) == 1


def test_a_secret_the_user_does_not_name_claims_nothing_even_listed_first(aws, invoke, good):
    # A squatter listed (or sorted) first is refused by the tag guard before it can claim the user.
    aws.secrets.create_secret(Name="aaa-squatter", SecretString=json.dumps({"UserName": "good-user"}))
    with pytest.raises(RotationFailed) as failure:
        invoke("aaa-squatter", good.secret)
    assert "secret 'aaa-squatter': refused" in str(failure.value)
    assert str(failure.value).startswith("1 of 2")
    aws.assert_converged(good.secret)
    assert len(aws.versions(good.secret)) == 2 and len(aws.versions("aaa-squatter")) == 1


def test_failed_run_names_every_failed_secret(aws, invoke, good):
    aws.secrets.create_secret(Name="bad-1", SecretString="[]")
    aws.secrets.create_secret(Name="bad-2", SecretString="{}")
    with pytest.raises(RotationFailed) as failure:
        invoke("bad-1", good.secret, "bad-2")
    message = str(failure.value)
    assert message.startswith("2 of 3 secrets failed")
    assert "'bad-1'" in message and "'bad-2'" in message and "good-user" not in message


@pytest.mark.parametrize("order", ["listed-first-wins", "reversed"])
def test_first_secret_in_sec_naming_a_user_wins_even_when_read_last(aws, invoke, monkeypatch, order):
    import threading


    monkeypatch.setenv("REQUIRE_USER_TAG", "false")  # the user can name only one secret back: this is the claim rule
    first = seed_user(aws.iam, aws.secrets, "shared-user", ("Active",), held=0, secret="a-first")
    aws.secrets.create_secret(Name="b-second", SecretString=json.dumps({"UserName": "shared-user"}))
    listed = ["a-first", "b-second"] if order == "listed-first-wins" else ["b-second", "a-first"]
    events = function_clients().secrets.meta.events
    other_read = threading.Event()

    def hold_the_first_listed(params, context, **_):  # its DescribeSecret goes out after the other one's answer
        context["first_listed"] = json.loads(params["body"])["SecretId"] == listed[0]
        if context["first_listed"]:
            other_read.wait(10)

    def answered(context, **_):
        if context.get("first_listed") is False:
            other_read.set()

    events.register("before-call.secrets-manager.DescribeSecret", hold_the_first_listed)
    events.register("after-call.secrets-manager.DescribeSecret", answered)
    with pytest.raises(RotationFailed) as failure:
        invoke(*listed)
    assert f"secret '{listed[1]}': IAM user 'shared-user' is also named by secret '{listed[0]}'" in str(failure.value)
    assert len(aws.versions(listed[0])) == 2 and len(aws.versions(listed[1])) == 1
    assert first.key_ids[0] in aws.keys("shared-user")
