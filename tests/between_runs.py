"""What happens between the function's runs, outside it, that several test files replay: the daily schedule, a
writer re-saving the secret, IAM expiring a key."""

from __future__ import annotations

import json

from lambda_function import RotationFailed

DAY = 24 * 3600


def days_of_runs(invoke, clock, secret: str, days: int, each=None) -> list[dict]:
    """The daily schedule for ``days`` days: one run a day, ``each(day)`` before it."""
    entries = []
    for day in range(1, days + 1):
        clock.advance(DAY)
        if each:
            each(day)
        try:
            entries.append(invoke(secret)["secrets"][0])
        except RotationFailed as failed:
            entries.append({"status": "failed", "reason": str(failed)})
    return entries


def resave(aws, clock, secret: str, **extra) -> None:
    """A writer re-saves the secret (an application adding a field): a new version, dated now as AWS would date
    it (moto dates it by the real clock, which the tests' clock has left behind)."""
    from moto.secretsmanager.models import secretsmanager_backends

    from seed import ACCOUNT_ID

    value = aws.value(secret)
    version = aws.secrets.put_secret_value(SecretId=secret, SecretString=json.dumps({**value, **extra}))["VersionId"]
    stored = secretsmanager_backends[ACCOUNT_ID]["us-east-1"].secrets[secret]
    stored.versions[version]["createdate"] = int(clock.now().timestamp())


def expire(user: str, key_id: str) -> None:
    """IAM's API lists an Expired status; moto never sets it, so set it in moto's state."""
    from moto.iam.models import iam_backends

    from seed import ACCOUNT_ID

    next(k for k in iam_backends[ACCOUNT_ID]["aws"].users[user].access_keys if k.access_key_id == key_id).status = \
        "Expired"
