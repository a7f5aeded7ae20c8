"""Demo and test fixtures: IAM users and secrets in every row of the decision table."""

from __future__ import annotations

import json
from dataclasses import dataclass

ACCOUNT_ID = "123456789012"  # moto's default account
FUNCTION_ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:iam-key-rotation"
STALE_DAYS = 30  # past the default MAX_GRACE_HOURS (7 days): a key this old and never used is nobody's


@dataclass(frozen=True)
class Row:
    """A row of the decision table, in one place: the starting state (the user's keys, oldest first, and
    which one the secret holds) and the end state a rotation leaves (what each old key becomes; None:
    deleted). The new key, Active and in the secret, is there in every row."""

    name: str
    found: str  # the README table's "keys found" cell
    statuses: tuple[str, ...]
    held: int | None  # index into statuses, or None when the secret holds no key
    after: tuple[str | None, ...]


ROWS = [
    Row("none", "none", (), None, ()),
    Row("one-active", "1 active", ("Active",), 0, ("Inactive",)),
    Row("one-inactive", "1 inactive", ("Inactive",), 0, (None,)),
    Row("old-active-new-inactive", "1 active + 1 inactive (either age order)", ("Active", "Inactive"), 0,
        ("Inactive", None)),
    Row("old-inactive-new-active", "1 active + 1 inactive (either age order)", ("Inactive", "Active"), 1,
        (None, "Inactive")),
    Row("two-inactive", "2 inactive", ("Inactive", "Inactive"), 1, (None, None)),
    Row("two-active", "2 active", ("Active", "Active"), 0, ("Inactive", None)),  # the secret holds the older one
]


@dataclass(frozen=True)
class Seeded:
    user: str
    secret: str
    key_ids: tuple[str, ...]


def seed_user(iam, secrets, user: str, statuses: tuple[str, ...], held: int | None,
              secret: str | None = None, extra: dict | None = None, tag: bool = True, stale: bool = True) -> Seeded:
    """Create a user with keys in the given statuses and a secret holding one of them.

    With ``tag`` the user names the secret back (tag key-rotation-secret = the secret's ARN), as the
    function requires by default. With ``stale`` an Active key the secret does not hold is made to look
    unused for STALE_DAYS.
    """
    iam.create_user(UserName=user)
    keys = [iam.create_access_key(UserName=user)["AccessKey"] for _ in statuses]
    for key, status in zip(keys, statuses, strict=True):
        if status != "Active":
            iam.update_access_key(UserName=user, AccessKeyId=key["AccessKeyId"], Status=status)
    for index, (key, status) in enumerate(zip(keys, statuses, strict=True)):
        if stale and status == "Active" and index != held:
            # A table row's unheld Active key is one nobody uses: made long ago, never used. (A young or
            # recently used one is someone's key in use, which the function adopts and never deletes.)
            backdate_key(user, key["AccessKeyId"], STALE_DAYS)
    value = {"UserName": user, **(extra or {})}
    if held is not None:
        value["AccessKeyId"] = keys[held]["AccessKeyId"]
        value["SecretAccessKey"] = keys[held]["SecretAccessKey"]
    secret = secret or f"iam-keys/{user}"
    arn = secrets.create_secret(Name=secret, SecretString=json.dumps(value))["ARN"]
    if tag:
        iam.tag_user(UserName=user, Tags=[{"Key": "key-rotation-secret", "Value": arn}])
    return Seeded(user=user, secret=secret, key_ids=tuple(k["AccessKeyId"] for k in keys))


def seed_row(iam, secrets, row: Row, user: str | None = None) -> Seeded:
    """Seed one row of the decision table."""
    return seed_user(iam, secrets, user or f"demo-{row.name}", row.statuses, row.held)


def iam_secret_keys(user: str) -> dict[str, str]:
    """The SecretAccessKey of each of the user's keys, read from moto's own state.

    Works for mock_aws and for a ThreadedMotoServer in the same process.
    """
    from moto.iam.models import iam_backends

    iam_user = iam_backends[ACCOUNT_ID]["aws"].users[user]
    return {k.access_key_id: k.secret_access_key for k in iam_user.access_keys}


def iam_key_states() -> dict[str, dict[str, str]]:
    """Every user's keys and their statuses, from moto's own state (this process)."""
    from moto.iam.models import iam_backends

    return {name: {k.access_key_id: k.status for k in user.access_keys}
            for name, user in iam_backends[ACCOUNT_ID]["aws"].users.items()}


def backdate_key(user: str, key_id: str, days: float) -> None:
    """Make one of the user's keys look `days` old (moto's state, in this process)."""
    from datetime import UTC, datetime, timedelta

    from moto.iam.models import iam_backends

    for key in iam_backends[ACCOUNT_ID]["aws"].users[user].access_keys:
        if key.access_key_id == key_id:
            key.create_date = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=days)
            return
    raise KeyError(key_id)


def begin_rotation(secret: str, region: str = "us-east-1", function_arn: str | None = FUNCTION_ARN) -> str:
    """Do what RotateSecret does before it invokes the rotation function: enable rotation with
    ``function_arn`` as the rotation function and stage a new, empty AWSPENDING version (moto's
    state, in this process). Returns its token."""
    import time
    import uuid

    from moto.secretsmanager.models import secretsmanager_backends

    token = str(uuid.uuid4())
    stored = secretsmanager_backends[ACCOUNT_ID][region].secrets[secret]
    if function_arn:
        enable_rotation(secret, function_arn, region)
    stored.remove_version_stages_from_old_versions(["AWSPENDING"])
    stored.versions[token] = {"createdate": int(time.time()), "version_id": token, "version_stages": ["AWSPENDING"]}
    return token


def enable_rotation(secret: str, function_arn: str = FUNCTION_ARN, region: str = "us-east-1",
                    enabled: bool = True) -> None:
    """Turn on (or off) the secret's rotation with ``function_arn`` as its rotation function, without
    rotating (moto's state, in this process): what RotateSecret leaves behind."""
    from moto.secretsmanager.models import secretsmanager_backends

    stored = secretsmanager_backends[ACCOUNT_ID][region].secrets[secret]
    stored.rotation_requested, stored.rotation_enabled, stored.rotation_lambda_arn = True, enabled, function_arn


def set_last_used(user: str, key_id: str, when, service: str = "s3", region: str = "us-east-1") -> None:
    """Record that a key was last used at `when` by `service` in `region` (moto's state, this process)."""
    from moto.iam.models import AccessKeyLastUsed, iam_backends

    for key in iam_backends[ACCOUNT_ID]["aws"].users[user].access_keys:
        if key.access_key_id == key_id:
            key.last_used = AccessKeyLastUsed(timestamp=when, service=service, region=region)
            return
    raise KeyError(key_id)

