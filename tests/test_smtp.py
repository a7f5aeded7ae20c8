"""SES SMTP users served: a secret tagged key-rotation:smtp-regions keeps, with every new key, the key's SMTP user
name and its SMTP password for each region, in the same version as the key (never a key without its passwords).

The derivation is checked against AWS's documented steps computed here independently (hmac/hashlib, and botocore's
own SigV4 signing-key chain), and against one fixed vector. AWS's documentation publishes the algorithm and a
sample program but no example input with its password, so the fixed vector below was computed outside Python, with
the openssl command line, from the documentation's steps and AWS's documented example secret key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from datetime import timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

import lambda_function
from conftest import step
from lambda_function import SES_SMTP_REGIONS, TAG_SMTP_REGIONS, RotationFailed, smtp_password
from seed import ROWS, begin_rotation, iam_secret_keys, seed_row, set_last_used

HOUR = 3600
AWS_EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's documented example secret access key
# printf-and-openssl: HMAC-SHA256 chain over 11111111, eu-west-1, ses, aws4_request, SendRawEmail from
# "AWS4" + the key; 0x04 before it; base64
OPENSSL_VECTOR = ("eu-west-1", "BMW5RDrXmmVs0lV7GpI4oLkHXpZ4stDsk6q91z1g38Pk")
secret_keys = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+", min_size=40,
                      max_size=40)


def documented_steps(secret_key: str, region: str) -> str:
    """AWS's documented steps, written out one by one."""
    def sign(key: bytes, message: str) -> bytes:
        return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()

    k_date = sign(("AWS4" + secret_key).encode("utf-8"), "11111111")
    k_region = sign(k_date, region)
    k_service = sign(k_region, "ses")
    k_terminal = sign(k_service, "aws4_request")
    k_message = sign(k_terminal, "SendRawEmail")
    return base64.b64encode(bytes([0x04]) + k_message).decode("utf-8")


def botocore_chain(secret_key: str, region: str) -> str:
    """The same password through botocore's SigV4 signer: its signing key for date 11111111, the region and
    service ses, signing the message SendRawEmail (the signer's own implementation, not ours)."""
    auth = SigV4Auth(Credentials("AKIAEXAMPLE", secret_key), "ses", region)
    request = AWSRequest(method="POST", url="https://example.com")
    request.context["timestamp"] = "11111111T000000Z"
    signature = bytes.fromhex(auth.signature("SendRawEmail", request))
    return base64.b64encode(b"\x04" + signature).decode()


def test_a_password_is_the_one_the_documentation_gives_for_awss_example_key():
    region, password = OPENSSL_VECTOR
    assert smtp_password(AWS_EXAMPLE_SECRET, region) == password


@settings(max_examples=50, deadline=None)
@given(secret_key=secret_keys, region=st.sampled_from(SES_SMTP_REGIONS))
def test_a_password_is_derived_as_the_documented_steps_and_botocores_signer_derive_it(secret_key, region):
    password = smtp_password(secret_key, region)
    assert password == documented_steps(secret_key, region) == botocore_chain(secret_key, region)
    assert base64.b64decode(password)[0] == 4 and len(base64.b64decode(password)) == 33


def test_each_region_has_its_own_password():
    passwords = {smtp_password(AWS_EXAMPLE_SECRET, region) for region in SES_SMTP_REGIONS}
    assert len(passwords) == len(SES_SMTP_REGIONS)


# --- stored with the key --------------------------------------------------------------------------------------------


def smtp_secret(aws, regions: str = "eu-west-1 us-east-1", user: str = "mailer", **extra):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user=user)
    if extra:
        value = {**aws.value(seeded.secret), **extra}
        aws.secrets.put_secret_value(SecretId=seeded.secret, SecretString=json.dumps(value))
    aws.secrets.tag_resource(SecretId=seeded.secret, Tags=[{"Key": TAG_SMTP_REGIONS, "Value": regions}])
    return seeded


def assert_consistent(aws, secret: str, stage: str = "AWSCURRENT", regions=("eu-west-1", "us-east-1")) -> dict:
    """The version's SMTP fields belong to its own key: the user name is its key id, each password derived from
    the SecretAccessKey IAM holds for that key."""
    value = aws.value(secret, stage)
    key_id = value["AccessKeyId"]
    real = iam_secret_keys(value["UserName"])[key_id]
    assert value["SecretAccessKey"] == real
    assert value["SmtpUsername"] == key_id
    assert value["SmtpPasswords"] == {region: documented_steps(real, region) for region in regions}
    return value


def test_a_tagged_secret_gets_the_new_keys_smtp_passwords_in_the_same_version_as_the_key(aws, invoke, sts):
    seeded = smtp_secret(aws)
    versions = len(aws.versions(seeded.secret))
    result = invoke(seeded.secret)
    assert result["rotated"] == 1
    assert len(aws.versions(seeded.secret)) == versions + 1, "one PutSecretValue: the key and its passwords"
    value = assert_consistent(aws, seeded.secret)
    assert sts.calls[-1] == value["AccessKeyId"], "the key is verified as any key is"
    aws.assert_converged(seeded.secret)


def test_every_rotation_replaces_the_passwords_with_the_new_keys(aws, invoke):
    seeded = smtp_secret(aws)
    invoke(seeded.secret)
    first = aws.value(seeded.secret)
    invoke(seeded.secret)
    second = assert_consistent(aws, seeded.secret)
    assert second["AccessKeyId"] != first["AccessKeyId"]
    assert set(second["SmtpPasswords"].values()).isdisjoint(first["SmtpPasswords"].values())
    assert aws.value(seeded.secret, "AWSPREVIOUS") == first, "the previous version keeps its own pair"


def test_the_other_fields_of_the_secret_are_kept_and_a_repeated_region_is_derived_once(aws, invoke):
    seeded = smtp_secret(aws, regions=" eu-west-1  eu-west-1 us-east-1 ", host="smtp.example.com")
    invoke(seeded.secret)
    value = assert_consistent(aws, seeded.secret)
    assert value["host"] == "smtp.example.com"


def test_a_secret_no_longer_tagged_drops_its_stale_smtp_fields_at_the_next_key(aws, invoke):
    seeded = smtp_secret(aws)
    invoke(seeded.secret)
    aws.secrets.untag_resource(SecretId=seeded.secret, TagKeys=[TAG_SMTP_REGIONS])
    invoke(seeded.secret)
    value = aws.value(seeded.secret)
    assert "SmtpPasswords" not in value and "SmtpUsername" not in value
    assert aws.holds_working_key(seeded.secret)


def test_the_rotation_steps_store_the_passwords_in_the_pending_version_with_its_key(aws, monkeypatch):
    seeded = smtp_secret(aws)
    monkeypatch.delenv("sec", raising=False)
    token = begin_rotation(seeded.secret)
    step(seeded.secret, token, "createSecret")
    assert_consistent(aws, seeded.secret, "AWSPENDING")
    for name in ("setSecret", "testSecret", "finishSecret"):
        step(seeded.secret, token, name)
    assert_consistent(aws, seeded.secret)
    aws.assert_converged(seeded.secret)


def test_the_old_key_and_its_passwords_keep_working_through_the_grace_period_then_retire(aws, invoke, clock,
                                                                                       monkeypatch):
    monkeypatch.setenv("GRACE_HOURS", "24")
    seeded = smtp_secret(aws)
    invoke(seeded.secret)
    first = assert_consistent(aws, seeded.secret)
    invoke(seeded.secret, event={"force": True})
    clock.advance(HOUR)
    second = assert_consistent(aws, seeded.secret)
    assert aws.value(seeded.secret, "AWSPREVIOUS") == first, "the old key's passwords stay with it"
    assert aws.keys(seeded.user)[first["AccessKeyId"]] == "Active", "its mail still goes through"
    clock.advance(24 * HOUR)
    set_last_used(seeded.user, first["AccessKeyId"], clock.now().replace(tzinfo=None) - timedelta(hours=30))
    assert invoke(seeded.secret)["retired"] == 1
    assert aws.keys(seeded.user) == {first["AccessKeyId"]: "Inactive", second["AccessKeyId"]: "Active"}


@pytest.mark.parametrize("regions", ["eu-west-1 mars-north-1", "", "EU-WEST-1", "eu-west-1,us-east-1"])
def test_a_tag_naming_a_region_without_an_smtp_endpoint_fails_the_secret_before_anything_is_made(aws, invoke,
                                                                                                 regions):
    seeded = smtp_secret(aws, regions=regions)
    before = (aws.keys(seeded.user), aws.stages(seeded.secret))
    with pytest.raises(RotationFailed) as failed:
        invoke(seeded.secret)
    assert TAG_SMTP_REGIONS in str(failed.value) and " ".join(SES_SMTP_REGIONS) in str(failed.value)
    assert (aws.keys(seeded.user), aws.stages(seeded.secret)) == before  # versions and their labels


def test_a_bad_region_tag_refuses_the_rotation_steps_too(aws, monkeypatch):
    seeded = smtp_secret(aws, regions="moon-1")
    monkeypatch.delenv("sec", raising=False)
    token = begin_rotation(seeded.secret)
    before = aws.keys(seeded.user)
    with pytest.raises(lambda_function.RotationError, match=TAG_SMTP_REGIONS):
        step(seeded.secret, token, "createSecret")
    assert aws.keys(seeded.user) == before


def test_no_password_is_ever_logged_returned_published_or_put_in_an_event(aws, invoke, topic, bus, caplog,
                                                                         capsys, monkeypatch):
    monkeypatch.setenv("GRACE_HOURS", "24")
    seeded = smtp_secret(aws)
    with caplog.at_level(logging.DEBUG):
        results = [invoke(seeded.secret), invoke(seeded.secret, event={"force": True}),
                   invoke(seeded.secret, event={"rollback": [seeded.secret]}), invoke(seeded.secret,
                                                                                      event={"report": True})]
    passwords = [p for stage in ("AWSCURRENT", "AWSPREVIOUS")
                 for p in aws.value(seeded.secret, stage)["SmtpPasswords"].values()]
    assert len(set(passwords)) == 4
    messages, events = topic(), bus()
    assert messages and events, "the run did publish: the scan has something to scan"
    said = json.dumps(results) + caplog.text + "".join(capsys.readouterr()) + "".join(messages) + json.dumps(events)
    for password in passwords:
        assert password not in said and password[:20] not in said
