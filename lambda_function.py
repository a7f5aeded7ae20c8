"""Rotate IAM user access keys held in Secrets Manager secrets.

Handler: ``lambda_function.lambda_handler``. The environment variable ``sec``
names the secrets (names or ARNs, separated by ``;``). Each secret holds JSON
``{"UserName", "AccessKeyId", "SecretAccessKey"}``; for each one the function
plans the rotation with ``plan_rotation`` (a pure function, the decision
table), then carries the plan out in the only order that never loses a key:
make room, create the new key, store it in the secret, and only then
deactivate the old one.

No SecretAccessKey is ever logged, returned or put in an error message.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from time import monotonic, sleep
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

ACTIVE = "Active"
INACTIVE = "Inactive"
MAX_KEYS_PER_USER = 2  # IAM's fixed quota of access keys per user

logger = logging.getLogger("key_rotation")

# Loggers whose DEBUG output carries request and response bodies, and so
# secret values: they stay at WARNING whatever LOG_LEVEL says.
WIRE_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")


# ---------------------------------------------------------------------------
# Functional core: the decision table
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyState:
    """One access key of the user, as ListAccessKeys reports it."""

    key_id: str
    status: str
    created: datetime

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


@dataclass(frozen=True)
class RotationPlan:
    """What to do to one user's keys, in order: the create and store between."""

    delete_first: tuple[str, ...] = ()
    deactivate_after: tuple[str, ...] = ()
    delete_after: tuple[str, ...] = ()

    def steps(self, new_key_id: str = "new") -> list[str]:
        """The plan as readable steps: ['delete AKIA1', 'create new', 'store new', ...]."""
        return (
            [f"delete {key}" for key in self.delete_first]
            + [f"create {new_key_id}", f"store {new_key_id}"]
            + [f"deactivate {key}" for key in self.deactivate_after]
            + [f"delete {key}" for key in self.delete_after]
        )


def plan_rotation(keys: list[KeyState], held_key_id: str | None) -> RotationPlan:
    """Decide which keys to delete and deactivate around creating a new one.

    | keys found | what happens |
    |---|---|
    | none | create one, store it |
    | 1 active | create, store, deactivate the old one |
    | 1 inactive | delete it, create, store |
    | 1 active + 1 inactive (either age order) | delete the inactive, create, store, deactivate the old active |
    | 2 inactive | delete both, create, store |
    | 2 active | delete one, create, store, deactivate the other |

    Safety refinements: the key the secret holds (``held_key_id``) is never
    deleted before the new key is stored; if it is inactive it is deleted
    after the store instead. Of two active keys the one the secret does not
    hold is deleted (the older one if it holds neither). If the held key is
    inactive and another key is active, that active key is deleted to make
    room, since nobody is known to hold it.
    """
    by_age = sorted(keys, key=lambda k: (k.created, k.key_id))
    held = find_key(by_age, held_key_id)
    active = [k for k in by_age if k.active]
    # The old key kept, deactivated, as a fallback: the held one, else the newest.
    if held is not None and held.active:
        keep = held
    else:
        keep = active[-1] if active else None

    delete_first = [k for k in by_age if not k.active and k is not held]
    delete_first += [k for k in active if k is not keep]
    if keep is not None and keep is not held and len(keys) - len(delete_first) >= MAX_KEYS_PER_USER:
        delete_first.append(keep)  # no room beside the held (inactive) key
        keep = None

    return RotationPlan(
        delete_first=tuple(k.key_id for k in delete_first),
        deactivate_after=(keep.key_id,) if keep is not None else (),
        delete_after=(held.key_id,) if held is not None and not held.active else (),
    )


def find_key(keys: list[KeyState], key_id: str | None) -> KeyState | None:
    return next((k for k in keys if k.key_id == key_id), None)


def needs_repair(keys: list[KeyState], held_key_id: str | None) -> bool:
    """Are the keys off the steady state (held key Active, any other Inactive)?"""
    held = find_key(keys, held_key_id)
    return held is None or not held.active or any(k.active and k is not held for k in keys)


def rotation_due(keys: list[KeyState], held_key_id: str | None, now: datetime, rotate_after_days: float) -> bool:
    """Rotate when the held key is old enough, or whenever the keys need repair."""
    if rotate_after_days <= 0 or needs_repair(keys, held_key_id):
        return True
    held = find_key(keys, held_key_id)
    return now - held.created >= timedelta(days=rotate_after_days)


def plan_finish(keys: list[KeyState], held_key_id: str | None) -> tuple[str, ...]:
    """Active keys to deactivate to finish a rotation whose new key is already stored."""
    held = find_key(keys, held_key_id)
    if held is None or not held.active:
        return ()
    return tuple(k.key_id for k in keys if k.active and k is not held)


def parse_secret_ids(value: str | None) -> list[str]:
    """Split the ``sec`` setting on ';', dropping blanks and repeats, keeping order."""
    ids = (part.strip() for part in (value or "").split(";"))
    return list(dict.fromkeys(i for i in ids if i))


# ---------------------------------------------------------------------------
# Records and errors
# ---------------------------------------------------------------------------


class RotationError(Exception):
    """One secret could not be rotated; the message names the secret and why."""


class RotationFailed(Exception):
    """Raised at the end of an invocation in which any secret failed."""


class ConfigError(Exception):
    """The function's own settings are wrong; nothing was touched."""


@dataclass
class SecretRecord:
    """A secret as read: its value and the key it holds."""

    name: str  # as the caller named it
    arn: str
    secret_name: str  # the secret's own name
    value: dict[str, Any]
    user_name: str
    held_key_id: str | None
    version_id: str | None
    version_created: datetime | None


@dataclass
class NewKey:
    """A freshly created access key. The secret part never leaves this record."""

    key_id: str
    secret_access_key: str = field(repr=False)


@dataclass
class Outcome:
    """What happened to one secret."""

    secret: str
    status: str  # "rotated" | "skipped" | "planned" | "failed" | "not_attempted"
    user: str | None = None
    old_key_id: str | None = None
    new_key_id: str | None = None
    steps: list[str] = field(default_factory=list)
    reason: str | None = None

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [])}


@dataclass(frozen=True)
class Settings:
    """One invocation's settings, from the environment and the event."""

    secret_ids: list[str]
    event_id: str | None = None  # a scheduled event's id; redeliveries repeat it
    event_time: datetime | None = None  # a scheduled event's time
    dry_run: bool = False
    force: bool = False
    rotate_after_days: float = 0.0
    verify_timeout: float = 30.0
    max_workers: int = 8
    require_user_tag: bool = False
    time_margin: float = 60.0  # seconds of Lambda time a rotation may need at most


@dataclass
class RunState:
    """What one invocation shares across its secrets."""

    settings: Settings
    users: dict[str, str] = field(default_factory=dict)  # casefolded user -> secret
    arns: dict[str, str] = field(default_factory=dict)  # secret ARN -> secret as listed

    def claim(self, record: SecretRecord) -> bool:
        """Claim the secret and its user for this run; False if the secret is a repeat."""
        if record.arn in self.arns:
            return False
        user_key = record.user_name.casefold()  # IAM user names are unique regardless of case
        if user_key in self.users:
            raise RotationError(
                f"secret {record.name!r}: IAM user {record.user_name!r} is also named by secret "
                f"{self.users[user_key]!r}; a user is rotated once per run"
            )
        self.arns[record.arn] = record.name
        self.users[user_key] = record.name
        return True


# ---------------------------------------------------------------------------
# Imperative shell: AWS calls
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Clients:
    """The clients every thread shares, and the session that made them."""

    session: Any
    iam: Any
    secrets: Any
    lock: threading.Lock = field(default_factory=threading.Lock)  # a session is not thread-safe


def client_config() -> Config:
    """Retry throttling with client-side rate limiting, so a busy account slows the run down."""
    return Config(
        retries={
            "mode": os.environ.get("AWS_RETRY_MODE", "adaptive"),
            "max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", "10")),
        },
        connect_timeout=5,
        read_timeout=20,
        max_pool_connections=64,
    )


# Throttling error codes (as botocore's retry handler knows them). IAM's own
# "LimitExceeded" (two keys already) is not one of them: retrying cannot help.
THROTTLING = {"Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
              "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded", "SlowDown"}
PATIENCE = (0.5, 1.0, 2.0, 4.0)  # extra waits for throttling that outlasts botocore's retries


class Patient:
    """A boto3 client whose API calls wait out throttling that gets past botocore's own retries.

    A throttled call was refused, not applied, so calling again is safe.
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if name not in self.client.meta.method_to_api_mapping:
            return attr

        def call(**kwargs: Any) -> Any:
            for wait in PATIENCE:
                try:
                    return attr(**kwargs)
                except ClientError as err:
                    if error_code(err) not in THROTTLING:
                        raise
                    log_action("throttled", logging.WARNING, operation=err.operation_name, retry_in=wait)
                sleep(wait * (0.5 + random.random()))
            return attr(**kwargs)

        return call


# The environment that decides where clients connect and as whom. It does not
# change within a Lambda execution environment; a test may change it.
CLIENT_ENVIRONMENT = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ACCESS_KEY_ID",
                      "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS")


def aws_clients() -> Clients:
    """The shared clients: made once per execution environment (again only if its AWS settings change)."""
    return clients_for(tuple(os.environ.get(name) for name in CLIENT_ENVIRONMENT))


@lru_cache(maxsize=8)
def clients_for(environment: tuple[str | None, ...]) -> Clients:
    """Create the IAM and Secrets Manager clients from a session of their own."""
    session = boto3.session.Session()
    config = client_config()
    return Clients(
        session=session,
        iam=Patient(session.client("iam", config=config)),
        secrets=Patient(session.client("secretsmanager", config=config)),
    )


def sts_client(new_key: NewKey) -> Any:
    """An STS client that signs with the new key (and no session token)."""
    clients = aws_clients()
    with clients.lock:
        return clients.session.client(
            "sts",
            aws_access_key_id=new_key.key_id,
            aws_secret_access_key=new_key.secret_access_key,
            config=Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=5, read_timeout=10),
        )


def log_action(action: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured line. Callers pass ids and names, never secrets."""
    logger.log(level, json.dumps({"action": action, **fields}, default=str))


def describe_error(err: BaseException) -> str:
    """A short description of an AWS failure, without request parameters."""
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        operation = getattr(err, "operation_name", "AWS call")
        return f"{operation} failed: {error.get('Code', 'Unknown')}: {error.get('Message', '')}"
    # botocore's other errors (timeouts, connection errors) do not carry parameters.
    return f"{type(err).__name__}: {err}"


def error_code(err: BaseException) -> str | None:
    return err.response.get("Error", {}).get("Code") if isinstance(err, ClientError) else None


def read_secret(clients: Clients, secret_id: str, **version: str) -> SecretRecord:
    """Read the secret (its current version, or the one named) and check that its value names a user."""
    try:
        response = clients.secrets.get_secret_value(SecretId=secret_id, **(version or {"VersionStage": "AWSCURRENT"}))
    except ClientError as err:
        if error_code(err) == "ResourceNotFoundException":
            raise RotationError(f"secret {secret_id!r}: not found") from None
        raise RotationError(f"secret {secret_id!r}: {describe_error(err)}") from None
    if "SecretString" not in response:
        raise RotationError(f"secret {secret_id!r}: binary secret; expected a JSON SecretString")
    try:
        value = json.loads(response["SecretString"])
    except ValueError:
        # The value itself is never quoted: it may hold a secret.
        raise RotationError(f"secret {secret_id!r}: value is not valid JSON") from None
    if not isinstance(value, dict):
        raise RotationError(f"secret {secret_id!r}: value must be a JSON object, not {type(value).__name__}")
    user_name = value.get("UserName")
    if not isinstance(user_name, str) or not user_name.strip():
        raise RotationError(f"secret {secret_id!r}: 'UserName' is missing or empty")
    held = value.get("AccessKeyId")
    if held is not None and not isinstance(held, str):
        raise RotationError(f"secret {secret_id!r}: 'AccessKeyId' must be a string")
    return SecretRecord(
        name=secret_id,
        arn=response["ARN"],
        secret_name=response.get("Name", secret_id),
        value=value,
        user_name=user_name,
        held_key_id=held or None,
        version_id=response.get("VersionId"),
        version_created=response.get("CreatedDate"),
    )


USER_TAG = "key-rotation-secret"


def check_user_tag(clients: Clients, record: SecretRecord) -> None:
    """Refuse a secret whose IAM user does not name it back in its key-rotation-secret tag.

    Whoever can write a secret could otherwise point UserName at an admin and
    receive that admin's new key.
    """
    try:
        tags = clients.iam.list_user_tags(UserName=record.user_name)["Tags"]
    except ClientError as err:
        if error_code(err) == "NoSuchEntity":
            raise RotationError(f"secret {record.name!r}: IAM user {record.user_name!r} not found") from None
        raise RotationError(f"secret {record.name!r}: {describe_error(err)}") from None
    named = {tag["Key"]: tag["Value"] for tag in tags}.get(USER_TAG)
    if named is None:
        raise RotationError(f"secret {record.name!r}: IAM user {record.user_name!r} has no tag {USER_TAG!r}; "
                            "with REQUIRE_USER_TAG=true the user must carry it, naming this secret")
    if named not in (record.name, record.secret_name, record.arn):
        raise RotationError(f"secret {record.name!r}: IAM user {record.user_name!r} has tag {USER_TAG}={named!r}, "
                            "which names another secret")


def list_keys(clients: Clients, record: SecretRecord) -> list[KeyState]:
    """List the user's access keys."""
    try:
        response = clients.iam.list_access_keys(UserName=record.user_name)
    except ClientError as err:
        if error_code(err) == "NoSuchEntity":
            raise RotationError(f"secret {record.name!r}: IAM user {record.user_name!r} not found") from None
        raise RotationError(f"secret {record.name!r}: {describe_error(err)}") from None
    return [
        KeyState(key_id=k["AccessKeyId"], status=k["Status"], created=k["CreateDate"])
        for k in response["AccessKeyMetadata"]
    ]


def delete_key(clients: Clients, record: SecretRecord, key_id: str) -> None:
    """Delete an access key; one already gone counts as deleted."""
    try:
        clients.iam.delete_access_key(UserName=record.user_name, AccessKeyId=key_id)
    except ClientError as err:
        if error_code(err) != "NoSuchEntity":
            raise
    log_action("delete_key", secret=record.name, user=record.user_name, key_id=key_id)


def deactivate_key(clients: Clients, record: SecretRecord, key_id: str) -> None:
    """Set an access key Inactive."""
    clients.iam.update_access_key(UserName=record.user_name, AccessKeyId=key_id, Status=INACTIVE)
    log_action("deactivate_key", secret=record.name, user=record.user_name, key_id=key_id)


def create_key(clients: Clients, record: SecretRecord, existing: set[str]) -> NewKey:
    """Create a new access key; on failure remove any key the call made anyway."""
    try:
        response = clients.iam.create_access_key(UserName=record.user_name)
    except Exception as err:
        # A timeout can hide a success: a key made now is one whose secret
        # nobody will ever hold, so it goes.
        remove_unknown_keys(clients, record, existing)
        raise RotationError(f"secret {record.name!r}: {describe_error(err)}; old key unchanged") from None
    key = response["AccessKey"]
    new_key = NewKey(key_id=key["AccessKeyId"], secret_access_key=key["SecretAccessKey"])
    log_action("create_key", secret=record.name, user=record.user_name, key_id=new_key.key_id)
    if response.get("ResponseMetadata", {}).get("RetryAttempts"):
        # botocore retried: an earlier attempt may have made a key whose answer was lost.
        remove_unknown_keys(clients, record, existing | {new_key.key_id})
    return new_key


def remove_unknown_keys(clients: Clients, record: SecretRecord, existing: set[str]) -> None:
    """Delete keys that were not there before a failed CreateAccessKey (best effort)."""
    try:
        for key in list_keys(clients, record):
            if key.key_id not in existing:
                delete_key(clients, record, key.key_id)
    except Exception as err:
        log_action("cleanup_failed", logging.WARNING, secret=record.name, user=record.user_name,
                   error=str(err) if isinstance(err, RotationError) else describe_error(err))


def store_key(
    clients: Clients, record: SecretRecord, new_key: NewKey, token: str | None, pending: bool = False
) -> None:
    """Write the new key into the secret: as its new AWSCURRENT version, or as AWSPENDING version `token`."""
    value = {**record.value, "AccessKeyId": new_key.key_id, "SecretAccessKey": new_key.secret_access_key}
    version: dict[str, Any] = {"ClientRequestToken": token} if token else {}  # else botocore makes one up
    if pending:
        version["VersionStages"] = ["AWSPENDING"]
    try:
        clients.secrets.put_secret_value(SecretId=record.arn, SecretString=json.dumps(value), **version)
    except Exception as err:  # whatever went wrong, the new key must not be lost or left unheld
        problem = describe_error(err).replace(new_key.secret_access_key, "***")
        confirmed = secret_holds(clients, record, new_key.key_id, token if pending else None)
        if confirmed:  # applied, but the answer was lost
            log_action("store_confirmed", logging.WARNING, secret=record.name, user=record.user_name,
                       key_id=new_key.key_id, error=problem)
        elif confirmed is False:
            discard_key(clients, record, new_key.key_id)
            raise RotationError(f"secret {record.name!r}: {problem}; new key deleted, old key unchanged") from None
        else:
            raise RotationError(
                f"secret {record.name!r}: {problem}; could not re-read the secret, so new key "
                f"{new_key.key_id} was left in place for the next run to settle"
            ) from None
    log_action("store_key", secret=record.name, user=record.user_name, key_id=new_key.key_id)


def secret_holds(clients: Clients, record: SecretRecord, key_id: str, version_id: str | None = None) -> bool | None:
    """Re-read the secret: does its current (or the named) version hold key_id? None if unknown."""
    version = {"VersionId": version_id} if version_id else {"VersionStage": "AWSCURRENT"}
    try:
        response = clients.secrets.get_secret_value(SecretId=record.arn, **version)
        return json.loads(response["SecretString"]).get("AccessKeyId") == key_id
    except ClientError as err:
        return False if error_code(err) == "ResourceNotFoundException" else None  # no such version: not held
    except Exception:
        return None


def discard_key(clients: Clients, record: SecretRecord, key_id: str) -> None:
    """Delete a new key the secret does not hold (best effort)."""
    try:
        delete_key(clients, record, key_id)
    except Exception as err:
        log_action("discard_failed", logging.WARNING, secret=record.name, user=record.user_name,
                   key_id=key_id, error=describe_error(err))


VERSION_PREFIX = "key-rotation-"  # marks the secret versions this function writes


def version_token(event_id: str | None, record: SecretRecord) -> str:
    """The id of the secret version a run writes: for a scheduled event, the same on every redelivery."""
    if event_id:
        return VERSION_PREFIX + str(uuid.uuid5(uuid.NAMESPACE_URL, f"key-rotation/{event_id}/{record.arn}"))
    return VERSION_PREFIX + str(uuid.uuid4())


def already_rotated(record: SecretRecord, settings: Settings) -> bool:
    """Did this scheduled event already rotate the secret (a redelivery)?

    Either the current version is the one this event writes, or this function
    wrote it at or after the event's time. A version someone else wrote (a new
    secret) does not count.
    """
    if settings.event_id and record.version_id == version_token(settings.event_id, record):
        return True
    return (
        settings.event_time is not None
        and record.version_created is not None
        and (record.version_id or "").startswith(VERSION_PREFIX)
        and record.version_created >= settings.event_time
    )


def finish_rotation(clients: Clients, record: SecretRecord) -> tuple[str, ...]:
    """Deactivate the old active keys once the secret holds the new key; return them."""
    old_keys = plan_finish(list_keys(clients, record), record.held_key_id)
    retire_keys(clients, record, record.held_key_id or "", old_keys)
    return old_keys


# IAM is eventually consistent: a new key is refused like this for a few seconds.
NOT_YET_VALID = {"InvalidClientTokenId", "SignatureDoesNotMatch", "AuthFailure", "UnrecognizedClientException"}


def arn_names_user(arn: str, user_name: str) -> bool:
    """Is arn (arn:aws:iam::123:user/path/name) the IAM user user_name?"""
    resource = arn.split(":", 5)[-1]
    return resource.startswith("user/") and resource.rsplit("/", 1)[-1].casefold() == user_name.casefold()


@dataclass
class Stored:
    """A rotation whose new key is in the secret: next, verify it and retire the old keys."""

    record: SecretRecord
    plan: RotationPlan
    new_key: NewKey


def try_key(item: Stored) -> tuple[str, str] | None:
    """Ask STS once who the new key is: None if the user, else ("not yet" | "failed", why)."""
    record, new_key = item.record, item.new_key
    try:
        arn = sts_client(new_key).get_caller_identity()["Arn"]
    except (ClientError, BotoCoreError) as err:
        if isinstance(err, ClientError) and error_code(err) not in NOT_YET_VALID | THROTTLING:
            return "failed", (f"secret {record.name!r}: verifying new key {new_key.key_id}: "
                              f"{describe_error(err)}; old key left Active")
        return "not yet", describe_error(err)
    if not arn_names_user(arn, record.user_name):
        return "failed", (f"secret {record.name!r}: new key {new_key.key_id} authenticates as {arn}, "
                          f"not as user {record.user_name!r}; old key left Active")
    log_action("verify_key", secret=record.name, user=record.user_name, key_id=new_key.key_id)
    return None


def verify_keys(stored: list[Stored], timeout: float, map_: Any = map) -> dict[str, str]:
    """Wait until every new key authenticates as its user; return why, by secret, for those that did not.

    IAM is eventually consistent, so all the keys wait out its propagation
    delay together (tried with `map_`, e.g. a thread pool's), backing off 1, 2,
    4, 8, 8... seconds until `timeout` is used up.
    """
    problems: dict[str, str] = {}
    if timeout <= 0:
        return problems
    pending, deadline, delay = list(stored), monotonic() + timeout, 1.0
    while pending:
        waiting = []
        for item, result in zip(pending, list(map_(try_key, pending)), strict=True):
            if result is not None and result[0] == "failed":
                problems[item.record.name] = result[1]
            elif result is not None:
                waiting.append((item, result[1]))
        pending = [item for item, _ in waiting]
        if pending and monotonic() + delay > deadline:
            for item, why in waiting:
                problems[item.record.name] = (
                    f"secret {item.record.name!r}: new key {item.new_key.key_id} is stored but did not authenticate "
                    f"within {timeout:g}s ({why}); old key left Active, the next run settles it")
            break
        if pending:
            sleep(delay)
            delay = min(delay * 2, 8.0)
    return problems


def verify_key(record: SecretRecord, new_key: NewKey, timeout: float) -> None:
    """Check one new key authenticates as the user; raise RotationError if it does not."""
    problems = verify_keys([Stored(record, RotationPlan(), new_key)], timeout)
    if problems:
        raise RotationError(problems[record.name])


def make_room_and_create(clients: Clients, record: SecretRecord, plan: RotationPlan, keys: list[KeyState]) -> NewKey:
    """Delete the keys the plan deletes first, then create the new key."""
    try:
        for key_id in plan.delete_first:
            delete_key(clients, record, key_id)
    except Exception as err:
        raise RotationError(f"secret {record.name!r}: {describe_error(err)}; old key unchanged") from None
    remaining = {k.key_id for k in keys} - set(plan.delete_first)
    return create_key(clients, record, remaining)


def retire_keys(clients: Clients, record: SecretRecord, new_key_id: str,
                deactivate: tuple[str, ...], delete: tuple[str, ...] = ()) -> None:
    """Deactivate, then delete, old keys once the new key is stored."""
    try:
        for key_id in deactivate:
            deactivate_key(clients, record, key_id)
        for key_id in delete:
            delete_key(clients, record, key_id)
    except Exception as err:
        raise RotationError(
            f"secret {record.name!r}: new key {new_key_id} stored, but retiring the old key failed: "
            f"{describe_error(err)}; the next run finishes it"
        ) from None


def rotate_secret(clients: Clients, run: RunState, record: SecretRecord) -> Outcome | Stored:
    """Rotate one secret already read and claimed up to storing its new key, or say why not."""
    settings, secret_id = run.settings, record.name
    if already_rotated(record, settings):
        steps = [] if settings.dry_run else [f"deactivate {key}" for key in finish_rotation(clients, record)]
        log_action("skip_already_rotated", secret=secret_id, user=record.user_name, key_id=record.held_key_id)
        return Outcome(secret=secret_id, status="skipped", user=record.user_name, steps=steps,
                       reason="already rotated for this scheduled event")
    keys = list_keys(clients, record)
    now = datetime.now(UTC)
    if not settings.force and not rotation_due(keys, record.held_key_id, now, settings.rotate_after_days):
        reason = f"key {record.held_key_id} is younger than ROTATE_AFTER_DAYS={settings.rotate_after_days:g}"
        log_action("skip_not_due", secret=secret_id, user=record.user_name, key_id=record.held_key_id)
        return Outcome(secret=secret_id, status="skipped", user=record.user_name, reason=reason)
    plan = plan_rotation(keys, record.held_key_id)
    log_action("plan", secret=secret_id, user=record.user_name, held_key_id=record.held_key_id,
               keys=[f"{k.key_id}:{k.status}" for k in keys], steps=plan.steps(), dry_run=settings.dry_run)
    if settings.dry_run:
        return Outcome(secret=secret_id, status="planned", user=record.user_name,
                       old_key_id=record.held_key_id, steps=plan.steps())
    new_key = make_room_and_create(clients, record, plan, keys)
    store_key(clients, record, new_key, version_token(settings.event_id, record))
    return Stored(record, plan, new_key)


def finish_stored(clients: Clients, item: Stored, problems: dict[str, str]) -> Outcome:
    """Retire the old keys of a verified rotation; report one whose new key did not verify."""
    record, plan, new_key = item.record, item.plan, item.new_key
    if record.name in problems:
        raise RotationError(problems[record.name])
    retire_keys(clients, record, new_key.key_id, plan.deactivate_after, plan.delete_after)
    log_action("rotated", secret=record.name, user=record.user_name, old_key_id=record.held_key_id,
               new_key_id=new_key.key_id)
    return Outcome(secret=record.name, status="rotated", user=record.user_name,
                   old_key_id=record.held_key_id, new_key_id=new_key.key_id, steps=plan.steps(new_key.key_id))


# ---------------------------------------------------------------------------
# The batch run's passes: read, claim, rotate up to the store, verify and retire
# ---------------------------------------------------------------------------


def failure(secret_id: str, err: Exception) -> Outcome:
    """A failed Outcome whose reason names the secret and the problem."""
    if isinstance(err, RotationError):
        reason = str(err)
    elif isinstance(err, (ClientError, BotoCoreError)):
        reason = f"secret {secret_id!r}: {describe_error(err)}"
    else:
        reason = f"secret {secret_id!r}: unexpected {type(err).__name__}: {err}"
    log_action("failed", logging.ERROR, secret=secret_id, reason=reason)
    return Outcome(secret=secret_id, status="failed", reason=reason)


def read_or_report(clients: Clients, settings: Settings, secret_id: str) -> SecretRecord | Outcome:
    """First pass: read the secret and check its user's tag, or report why not."""
    try:
        record = read_secret(clients, secret_id)
        if settings.require_user_tag:
            check_user_tag(clients, record)
        return record
    except Exception as err:  # one secret's failure must not stop the others
        return failure(secret_id, err)


def claim_or_report(run: RunState, item: SecretRecord | Outcome) -> SecretRecord | Outcome:
    """Second pass, in the order of `sec`: the first secret naming a user gets it."""
    if isinstance(item, Outcome):
        return item
    try:
        if run.claim(item):
            return item
    except RotationError as err:
        return failure(item.name, err)
    log_action("skip_duplicate", secret=item.name, arn=item.arn)
    return Outcome(secret=item.name, status="skipped", user=item.user_name,
                   reason=f"same secret as {run.arns[item.arn]!r}")


def time_left(context: Any) -> float | None:
    """Seconds left before Lambda stops the function, if the context says."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    millis = remaining() if callable(remaining) else None
    return millis / 1000 if isinstance(millis, int | float) else None  # a test's stand-in may say anything


def rotate_or_report(
    clients: Clients, run: RunState, item: SecretRecord | Outcome, context: Any
) -> Outcome | Stored:
    """Third pass: rotate one claimed secret up to the store if there is time; any failure becomes an Outcome."""
    if isinstance(item, Outcome):
        return item
    margin, left = run.settings.time_margin, time_left(context)
    if left is not None and left < margin:
        reason = f"secret {item.name!r}: not attempted: less than {margin:g}s of the Lambda time limit left"
        log_action("not_attempted", logging.ERROR, secret=item.name, reason=reason)
        return Outcome(secret=item.name, status="not_attempted", reason=reason)
    try:
        return rotate_secret(clients, run, item)
    except Exception as err:  # one secret's surprise must not stop the others
        return failure(item.name, err)


def finish_or_report(clients: Clients, item: Stored | Outcome, problems: dict[str, str]) -> Outcome:
    """Last pass: finish a stored rotation; any failure becomes an Outcome."""
    if isinstance(item, Outcome):
        return item
    try:
        return finish_stored(clients, item, problems)
    except Exception as err:  # one secret's surprise must not stop the others
        return failure(item.record.name, err)


# ---------------------------------------------------------------------------
# Secrets Manager rotation: the same table, one step per invocation
# ---------------------------------------------------------------------------

ROTATION_STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")


def is_rotation_event(event: Any) -> bool:
    """Is this Secrets Manager invoking us as the secret's rotation function?"""
    return isinstance(event, dict) and "Step" in event


def rotation_step(clients: Clients, event: dict) -> dict[str, Any]:
    """Check the event and the token's staging, then run the step it names."""
    step, secret_id, token = event.get("Step"), event.get("SecretId"), event.get("ClientRequestToken")
    if step not in ROTATION_STEPS or not isinstance(secret_id, str) or not isinstance(token, str):
        raise ConfigError(f"rotation event needs Step (one of {', '.join(ROTATION_STEPS)}), SecretId and "
                          f"ClientRequestToken; got Step={step!r}")
    try:
        stages = clients.secrets.describe_secret(SecretId=secret_id).get("VersionIdsToStages", {})
    except ClientError as err:
        raise RotationError(f"secret {secret_id!r}: {describe_error(err)}") from None
    if token not in stages:
        raise RotationError(f"secret {secret_id!r}: version {token} has no stage for rotation")
    if step != "finishSecret" and "AWSCURRENT" in stages[token]:
        log_action("rotation_already_current", secret=secret_id, step=step, version=token)
        return {"secret": secret_id, "step": step, "status": "already current"}
    if step != "finishSecret" and "AWSPENDING" not in stages[token]:
        raise RotationError(f"secret {secret_id!r}: version {token} is not staged AWSPENDING")
    steps = {"createSecret": step_create_secret, "setSecret": step_set_secret, "testSecret": step_test_secret,
             "finishSecret": step_finish_secret}
    try:
        done = steps[step](clients, secret_id, token, stages)
    except (ClientError, BotoCoreError) as err:
        raise RotationError(f"secret {secret_id!r}: {step}: {describe_error(err)}") from None
    log_action("rotation_step", secret=secret_id, step=step, version=token, result=done)
    return {"secret": secret_id, "step": step, "status": done}


def step_create_secret(clients: Clients, secret_id: str, token: str, stages: dict) -> str:
    """createSecret: clean up as the table says, create the key, store it as AWSPENDING."""
    try:
        clients.secrets.get_secret_value(SecretId=secret_id, VersionId=token, VersionStage="AWSPENDING")
        log_action("create_secret_exists", secret=secret_id, version=token)
        return "pending version already exists"
    except ClientError as err:
        if error_code(err) != "ResourceNotFoundException":
            raise RotationError(f"secret {secret_id!r}: {describe_error(err)}") from None
    record = read_secret(clients, secret_id)  # AWSCURRENT: its key is never touched here
    if env_flag("REQUIRE_USER_TAG"):
        check_user_tag(clients, record)
    keys = list_keys(clients, record)
    plan = plan_rotation(keys, record.held_key_id)
    log_action("plan", secret=secret_id, user=record.user_name, held_key_id=record.held_key_id,
               keys=[f"{k.key_id}:{k.status}" for k in keys], steps=plan.steps(), version=token)
    new_key = make_room_and_create(clients, record, plan, keys)
    store_key(clients, record, new_key, token, pending=True)
    return f"created {new_key.key_id}"


def step_set_secret(clients: Clients, secret_id: str, token: str, stages: dict) -> str:
    """setSecret: nothing to do, IAM already holds the key createSecret made."""
    log_action("set_secret", secret=secret_id, version=token, note="nothing to do: IAM already holds the key")
    return "nothing to do"


def step_test_secret(clients: Clients, secret_id: str, token: str, stages: dict) -> str:
    """testSecret: the pending key authenticates as the user."""
    record = read_secret(clients, secret_id, VersionId=token, VersionStage="AWSPENDING")
    secret_key = record.value.get("SecretAccessKey")
    if not record.held_key_id or not isinstance(secret_key, str):
        raise RotationError(f"secret {secret_id!r}: pending version {token} holds no access key")
    verify_key(record, NewKey(record.held_key_id, secret_key), env_number("VERIFY_TIMEOUT_SECONDS", 30, 0))
    return f"verified {record.held_key_id}"


def step_finish_secret(clients: Clients, secret_id: str, token: str, stages: dict) -> str:
    """finishSecret: make the token's version AWSCURRENT, drop AWSPENDING, deactivate the old key."""
    current = next((v for v, labels in stages.items() if "AWSCURRENT" in labels), None)
    if current != token:
        clients.secrets.update_secret_version_stage(SecretId=secret_id, VersionStage="AWSCURRENT",
                                                    MoveToVersionId=token, RemoveFromVersionId=current)
        log_action("finish_secret", secret=secret_id, version=token, previous_version=current)
    if "AWSPENDING" in stages[token]:
        clients.secrets.update_secret_version_stage(SecretId=secret_id, VersionStage="AWSPENDING",
                                                    RemoveFromVersionId=token)
    record = read_secret(clients, secret_id, VersionId=token)
    if env_flag("REQUIRE_USER_TAG"):
        check_user_tag(clients, record)
    old_keys = finish_rotation(clients, record)
    return f"current is {record.held_key_id}; deactivated {', '.join(old_keys) or 'nothing'}"


# ---------------------------------------------------------------------------
# Handler
# ---------------------------------------------------------------------------


def configure_logging() -> None:
    """Set our level from LOG_LEVEL; keep the wire loggers quiet."""
    level = os.environ.get("LOG_LEVEL", "INFO").strip().upper()
    if level not in logging.getLevelNamesMapping():
        level = "INFO"
    logger.setLevel(level)
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in list(logging.root.manager.loggerDict):  # and children someone turned up, e.g. botocore.parsers
        child = logging.getLogger(name)
        if name.split(".")[0] in WIRE_LOGGERS and logging.NOTSET < child.level < logging.WARNING:
            child.setLevel(logging.WARNING)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def env_number(name: str, default: float, minimum: float, kind: type = float) -> Any:
    """A numeric setting, or a ConfigError naming it."""
    raw = os.environ.get(name, "").strip()
    try:
        value = kind(raw) if raw else kind(default)
    except ValueError:
        raise ConfigError(f"environment variable {name!r} must be a number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"environment variable {name!r} must be at least {minimum}, not {raw!r}")
    return value


def targeted_ids(event: dict, listed: list[str]) -> list[str]:
    """The event's "secrets", which must all be listed in ``sec``."""
    wanted = event["secrets"]
    if isinstance(wanted, str):
        wanted = [wanted]
    if not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
        raise ConfigError('event "secrets" must be a list of secret names or ARNs')
    wanted = parse_secret_ids(";".join(wanted))
    unlisted = [w for w in wanted if w not in listed]
    if unlisted:
        raise ConfigError(f"event names secrets not listed in 'sec': {unlisted}; an event cannot widen what "
                          "the function may touch")
    if not wanted:
        raise ConfigError('event "secrets" is empty')
    return wanted


def load_settings(event: Any) -> Settings:
    """Read the settings from the environment, narrowed by the event."""
    event = event if isinstance(event, dict) else {}
    secret_ids = secret_ids_from_env()
    if "secrets" in event:
        secret_ids = targeted_ids(event, secret_ids)
    verify_timeout = env_number("VERIFY_TIMEOUT_SECONDS", 30, 0)
    return Settings(
        secret_ids=secret_ids,
        event_id=scheduled_event_id(event),
        event_time=scheduled_time(event),
        dry_run=event.get("dry_run") is True or env_flag("DRY_RUN"),
        force=event.get("force") is True,
        rotate_after_days=env_number("ROTATE_AFTER_DAYS", 0, 0),
        verify_timeout=verify_timeout,
        max_workers=env_number("MAX_WORKERS", 8, 1, int),
        require_user_tag=env_flag("REQUIRE_USER_TAG"),
        time_margin=env_number("TIME_MARGIN_SECONDS", verify_timeout + 30, 0),
    )


def is_scheduled(event: Any) -> bool:
    """Is this an EventBridge (scheduled) event, which may be delivered more than once?"""
    return isinstance(event, dict) and (
        event.get("source") == "aws.events" or event.get("detail-type") == "Scheduled Event")


def scheduled_time(event: Any) -> datetime | None:
    """The time of an EventBridge event, or None for other events or an unreadable time."""
    if not is_scheduled(event):
        return None
    try:
        when = datetime.fromisoformat(str(event.get("time")))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def scheduled_event_id(event: Any) -> str | None:
    """The id of an EventBridge event (with its time), or None for other events."""
    if not is_scheduled(event) or not event.get("id"):
        return None
    return f"{event['id']}@{event.get('time')}"


def secret_ids_from_env() -> list[str]:
    """The secrets to rotate, from the ``sec`` environment variable."""
    ids = parse_secret_ids(os.environ.get("sec"))
    if not ids:
        raise ConfigError("environment variable 'sec' is unset or empty: name the secrets to rotate, separated by ';'")
    return ids


configure_logging()  # before any client exists


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Rotate every secret named in ``sec``, or serve one Secrets Manager rotation step."""
    configure_logging()
    if is_rotation_event(event):
        return rotation_step(aws_clients(), event)
    settings = load_settings(event)
    run = RunState(settings=settings)
    clients = aws_clients()
    workers = min(settings.max_workers, len(settings.secret_ids))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rotate") as pool:
        read = list(pool.map(lambda secret_id: read_or_report(clients, settings, secret_id), settings.secret_ids))
        claimed = [claim_or_report(run, item) for item in read]
        started = list(pool.map(lambda item: rotate_or_report(clients, run, item, context), claimed))
        # The new keys wait out IAM's propagation delay together, not one after another.
        problems = verify_keys([s for s in started if isinstance(s, Stored)], settings.verify_timeout, pool.map)
        outcomes = list(pool.map(lambda item: finish_or_report(clients, item, problems), started))
    return report(outcomes, settings, context)


def report(outcomes: list[Outcome], settings: Settings, context: Any = None) -> dict[str, Any]:
    """Summarise the run and emit its metrics; raise RotationFailed naming each failed secret."""
    failed = [o for o in outcomes if o.status in ("failed", "not_attempted")]
    counts = {
        "rotated": sum(o.status == "rotated" for o in outcomes),
        "skipped": sum(o.status == "skipped" for o in outcomes),
        "planned": sum(o.status == "planned" for o in outcomes),
        "failed": len(failed),
    }
    log_action("run_complete", dry_run=settings.dry_run, **counts)
    name = getattr(context, "function_name", None)
    emit_metrics(counts, name if isinstance(name, str) else os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
    if failed:
        reasons = "; ".join(o.reason or o.secret for o in failed)
        raise RotationFailed(f"{len(failed)} of {len(outcomes)} secrets failed: {reasons}")
    return {**counts, "dry_run": settings.dry_run, "secrets": [o.summary() for o in outcomes]}


METRICS_NAMESPACE = "IAMKeyRotation"


def emit_metrics(counts: dict[str, int], function_name: str | None) -> None:
    """Print one CloudWatch Embedded Metric Format line: Rotated, Skipped, Failed."""
    names = {"Rotated": counts["rotated"], "Skipped": counts["skipped"], "Failed": counts["failed"]}
    dimensions = {"FunctionName": function_name or "local"}
    document = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [{
                "Namespace": os.environ.get("METRICS_NAMESPACE", METRICS_NAMESPACE),
                "Dimensions": [list(dimensions)],
                "Metrics": [{"Name": name, "Unit": "Count"} for name in names],
            }],
        },
        **dimensions,
        **names,
    }
    # stdout, not the logger: EMF needs the JSON alone on its log line.
    print(json.dumps(document), flush=True)
