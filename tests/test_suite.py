"""The suite itself: no test holds a date that will pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
# The tests whose outcome depends on what day it is: redelivery windows, grace periods, the deadline, ages.
TIME_SENSITIVE = ["tests/test_redelivery.py", "tests/test_grace.py", "tests/test_compliance.py",
                  "tests/test_operator_controls.py", "tests/test_entry_points.py", "tests/test_hardened.py"]


@pytest.mark.e2e
def test_the_time_sensitive_tests_pass_a_year_from_now():
    # Every clock in the child process (ours, moto's, botocore's signing) runs a year ahead.
    env = {**os.environ, "TEST_CLOCK_SHIFT_DAYS": "366"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "-x", *TIME_SENSITIVE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_the_sts_stand_in_refuses_a_deleted_an_inactive_and_a_wrongly_signed_key(aws):
    # Through the function's own KeyIdentity (per-request signing), against the stand-in that judges SigV4.
    import lambda_function
    from seed import iam_secret_keys

    aws.iam.create_user(UserName="alice")
    made = [aws.iam.create_access_key(UserName="alice")["AccessKey"] for _ in range(2)]
    identity = lambda_function.aws_clients(lambda_function.Settings()).identity

    def verdict(key_id: str, secret: str) -> str:
        try:
            return identity.caller_identity(lambda_function.NewKey(key_id, secret))["Arn"]
        except Exception as err:  # noqa: BLE001
            return lambda_function.error_code(err) or type(err).__name__

    good, other = made[0]["AccessKeyId"], made[1]["AccessKeyId"]
    assert verdict(good, iam_secret_keys("alice")[good]).endswith(":user/alice")
    assert verdict(good, iam_secret_keys("alice")[other]) == "SignatureDoesNotMatch"
    aws.iam.update_access_key(UserName="alice", AccessKeyId=good, Status="Inactive")
    assert verdict(good, iam_secret_keys("alice")[good]) == "InvalidClientTokenId"
    aws.iam.delete_access_key(UserName="alice", AccessKeyId=other)
    assert verdict(other, made[1]["SecretAccessKey"]) == "InvalidClientTokenId"
