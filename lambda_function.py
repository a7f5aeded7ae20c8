"""Rotate IAM user access keys held in Secrets Manager secrets.

Handler: ``lambda_function.lambda_handler``. One file, read top to bottom: each section calls only what stands
above it.

1. Vocabularies and errors: ``Status``, ``KeyStatus``; ``RotationError(secret, why)`` for one secret,
   ``ConfigError`` for the invocation, ``RotationFailed`` at the end of a run in which any secret failed.
2. Settings and logging: ``SETTINGS_TABLE`` (each setting named, typed, bounded, explained once);
   ``load_settings(environ, event)`` parses every setting and event control once, strictly, into ``Settings``.
3. Functional core (pure, no AWS): ``plan_rotation`` (the decision table is its docstring), ``rotation_due``,
   ``due_after_days`` (the deadline), ``retirement`` (the grace period), the user-tag evidence (``made_marker``,
   ``made_candidates``, ``parse_adopted``), the redelivery token.
4. Records: what a run reads (``SecretRecord``), what it concludes of each secret (``Found``, each pass's
   conclusion recorded whole by the run) and what one pass hands the next (``Rotate``, ``Settling``, ``Stored``,
   ``Cleanup``, ``Restore``), all frozen; the outcome (``Outcome``), which the last passes complete (the deadline's
   figures, a leak's facts) and every output is rendered from.
5. Clients and AWS steps: clients with a per-call time budget and a per-rotation deadline; one small function
   per AWS step, each raising a RotationError; verification with STS (``verify_keys``).
6. Authority, holders and the guard: ``Run`` (who holds, uses or may act for each user's keys), ``guard``,
   ``secret_settings``, resolving and claiming the secrets.
7. Settling: the usage gate of a previous or adopted key (``settle_decision``, ``settle``).
8. Rollback: ``restore_previous``, the one way back to AWSPREVIOUS's key, for ``rollback_secret`` and for
   ``repair`` (the key the secret holds is gone or off).
9. Compliance and the account report: the deadline's figures per secret, IAM's credential report, (with
   LOOKUP_HOLDOUTS) who CloudTrail shows still using a key, and (``{"report": true, "roles": true}``,
   ``roles_report``) which Active keys a role could replace, from CloudTrail (reads only).
10. The core and the batch's entry points: an entry point turns its event into ``Work`` (the secrets, its claim,
    its work, its answer); ``run_work`` reads every secret, authorises, and works them: decide (6.), ``assess``
    (reads only) and ``act`` in waves (``waves_of``), verify every key together, ``finish``. The batch's entry
    points (schedule, console, CLI, targeted, rollback) are ``batch_work``. The passes never ask which entry
    point asked; a work item carries its policy (at_once: retire at once, no grace period).
11. Leaks (AWS Health's RISK events, ``{"exposed": [...]}``): ``leak_work``, an entry point whose event names
    keys, not secrets: ``exposure_of`` finds the secret each leaked key's user names (authority as everywhere),
    ``assess_exposed`` plans it (replace now, retire at once, never delete a leaked key) and
    ``answer_exposures`` says what was done and what is left.
12. Notices: the run's summary and metrics (``report``), the SNS message, the EventBridge events, the keys'
    owners' messages (``tell_owners``), each made from the run's typed outcomes.
13. Secrets Manager rotation mode (``Step`` events): ``serve_rotation_step``, one function per step.
14. The handler: ``handle(event, context, environ, clock)``.

The safety rules, each with the one function that enforces it, and the documented exceptions:

- One guard, one order, every entry point (batch, targeted, force, rollback, settle, each rotation step):
  settings (``load_settings``; a step's controls refused by ``step_controls``), metadata (``guard``; a step's in
  ``step_guard``, before any value is read), authority (``Run.refusal``), effective settings
  (``secret_settings``). A hold (dry run, a skip or dry-run tag) is decided there and binds them all: the batch
  turns a decision into a plan in one place (``act``), a rotation step refuses (``serve_rotation_step``).
- Authority: with the user-tag guard on, only the secret the user's key-rotation-secret tag names acts for the
  user or holds its keys (``Run.refusal``, used by ``guard`` and ``Run.may_hold``).
- Narrowing: the event and the secret's tags only make the function do less or later (``event_controls``,
  ``resolve_secret_ids``, ``secret_settings``).
- Holders: who holds or uses each key is worked out once (``Run.holders``); the plan never deletes a held,
  another secret's or an adopted key (``plan_rotation``); a held key is retired only after the key the secret
  holds authenticated (``verify_keys`` before ``finish``/``settle``; ``verify_current_first`` for force); an
  adopted key only through the usage gate, never in the run that adopts it (``adopted_retirement``). Exceptions:
  ``{"force": true}`` retires held keys (after the current key authenticated) and frees an adopted one;
  ``VERIFY_TIMEOUT_SECONDS=0`` skips verification; rotation mode deactivates the old key at ``finishSecret``.
- Evidence, not what a writer controls: the grace period, the usage gate and the rollback window count from
  IAM's creation date of the key the secret holds (``store_time``); an adoption from the user's tag
  (``record_adoptions``); the function's own unstored key is known by its mark on the user
  (``make_room_and_create``, ``made_candidates``) and deleted by a later run of either mode (``delete_lost``,
  ``plan_rotation``).
- Evidence that cannot lag: a key is deleted as the function's own lost key only once IAM's last-used data
  (LAST_USED_LAG behind) shows it unused in its first day (``Run.holders``: LOST_KEY_WAIT; until then
  ``Holders.unproven``, touched by no plan but a leak's); an
  adoption ends with its key, and a key turned on again is a new adoption (``record_adoptions``); a secret only
  ListSecrets (five minutes behind) found that DescribeSecret shows deleted is skipped, one sec names fails
  (``read_secrets``); a key the secret holds that IAM does not list yet, or lists Inactive just after the
  secret changed (a rollback), is judged next run (``list_lags``: LIST_LAG). What each destructive step acts on,
  and how stale it may be: docs/design.md.
- The new key is stored at once; a definite refusal deletes it, an ambiguous failure re-reads first
  (``store_key``); a lost CreateAccessKey answer leaves no unknown key behind (``create_key``); a clean-up runs
  inside TIME_MARGIN_SECONDS (``CallBudget.cleanup``).
- The deadline: no managed Active key outlives MAX_KEY_AGE_DAYS (``due_after_days``, which counts an adopted
  key's gate and then the grace period; ``past_deadline``, which ends an old key's usage gate in time); what is
  overdue is reported whatever the hold (``report_compliance``, ``compliance``).
- Blast radius: at most MAX_FAILURES rotations half done (``waves_of``, ``Run.stopped``); answers are checked
  against the question (``current_values``, ``record_of``, ``list_prefix``).
- Values are data: a secret's UserName and AccessKeyId are checked against IAM's shapes and never quoted
  (``parse_value``); every event field and SNS line is clipped, PutEvents calls kept within their limits and one
  refused entry costs no other its delivery (``event_entries``, ``put_batches``, ``put_batch``); summaries and
  events go to this account or CENTRAL_ACCOUNT_ID's only, and a bus of this region only
  (``check_destinations``).
- Owners hear first: each message is made from the run's typed outcomes (``owner_notices``), falls to one run
  of the daily schedule (``in_this_run``), is sent once per run however often the run is delivered
  (``run_mark``, ``mark_told``), only to this account's or CENTRAL_ACCOUNT_ID's topics (``foreign_account``),
  and never fails the run (``send_owner``).
- No SecretAccessKey (nor an SES SMTP password derived from it, ``new_value``) is ever logged, returned, published
  or put in an error message, and no AWS error message of a call that carries one is repeated anywhere
  (``describe_error``, ``loads_or_none``, ``event_entries``).
- A key and what is derived from it are stored together: the one store (``store_key``, its value from
  ``new_value``) writes a new key with its SMTP passwords (tag key-rotation:smtp-regions, checked in
  ``secret_settings``) in one version, for every entry point that makes a key.
"""

from __future__ import annotations

__version__ = "1.0.0"  # the release (semantic versioning): the VERSION file, CHANGELOG.md, make release's names

import base64
import csv
import hashlib
import hmac
import io
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, make_dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError

# ---------------------------------------------------------------------------
# 1. Vocabularies and errors
# ---------------------------------------------------------------------------


class KeyStatus(StrEnum):
    ACTIVE = "Active"
    INACTIVE = "Inactive"
    EXPIRED = "Expired"  # IAM's API lists it; an Expired key authenticates no one, like an Inactive one


class Status(StrEnum):
    """What happened to one secret in a run."""

    ROTATED = "rotated"  # new key stored and verified (old key retired, or kept through the grace period)
    RETIRED = "retired"  # the previous key was deactivated after its grace period
    WAITING = "waiting"  # the previous key is still in its grace period or in use: kept Active
    ROLLED_BACK = "rolled_back"  # AWSCURRENT moved back to the previous version
    SKIPPED = "skipped"  # nothing to do, or not ours to do
    PLANNED = "planned"  # dry run
    FAILED = "failed"
    NOT_ATTEMPTED = "not_attempted"  # too little Lambda time left to start


FAILING = (Status.FAILED, Status.NOT_ATTEMPTED)

MAX_KEYS_PER_USER = 2  # IAM's fixed quota of access keys per user
CURRENT, PREVIOUS, PENDING = "AWSCURRENT", "AWSPREVIOUS", "AWSPENDING"


class RotationError(Exception):
    """One secret could not be handled. Carries the secret and the reason; str() is "secret 'x': why"."""

    def __init__(self, secret: str, why: str, stored_key_id: str | None = None, code: str | None = None,
                 made_nothing: bool = False) -> None:
        super().__init__(f"secret {secret!r}: {why}")
        self.secret, self.why = secret, why
        self.stored_key_id = stored_key_id  # a new key the secret holds although the rotation failed
        self.code = code  # the AWS error code behind it, as data (never read back out of ``why``)
        self.made_nothing = made_nothing  # CreateAccessKey refused outright: it made no key


class ConfigError(Exception):
    """A setting or the event is not understood; nothing was touched."""


class RotationFailed(Exception):
    """Raised at the end of an invocation in which any secret failed (after the report and metrics)."""


# ---------------------------------------------------------------------------
# 2. Settings and logging
# ---------------------------------------------------------------------------


TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
RETRY_MODES = ("adaptive", "standard", "legacy")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The event's controls and their types. A key that means one of these once case and every character but letters
# and digits are ignored (dryRun, DRY_RUN, dry-run, "dry run", dry.run) is refused, never ignored.
EVENT_CONTROLS: dict[str, type] = {"dry_run": bool, "force": bool, "secrets": list, "rollback": list,
                                   "report": bool, "exposed": list, "roles": bool}
# AWS Health's events for an access key found exposed (service RISK), each naming the key in affectedEntities.
EXPOSURE_CODES = ("AWS_RISK_CREDENTIALS_EXPOSED", "AWS_RISK_CREDENTIALS_COMPROMISED",
                  "AWS_RISK_CREDENTIALS_EXPOSURE_SUSPECTED", "AWS_RISK_CREDENTIALS_COMPROMISE_SUSPECTED")
DEFAULT_MAX_GRACE_HOURS = 168.0
# A scheduled event is a redelivery candidate only this close to its own time:
# EventBridge and Lambda give up on an event within a day. Older (the console's
# 1970 sample) or far-future events run as a manual invocation would.
REDELIVERY_WINDOW = timedelta(hours=25)


CLEANUP_SECONDS = 10.0  # a new key's clean-up after a failed store or create: kept at the end of the margin


def env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS + FALSE_WORDS:
        return word in TRUE_WORDS
    raise ConfigError(f"setting {name}={raw!r} is not understood; use one of {'/'.join(TRUE_WORDS + FALSE_WORDS)}")


def env_number(environ: Mapping[str, str], name: str, default: float, low: float, high: float,
               kind: type = float) -> Any:
    """A finite number within [low, high], or a ConfigError naming the setting and the bounds."""
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return kind(default)
    accepted = f"{'a whole' if kind is int else 'a'} number from {low:g} to {high:g}"
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ConfigError(f"setting {name}={raw!r} is not understood; use {accepted}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"setting {name}={raw!r} is out of range; use {accepted}")
    return value


def env_choice(environ: Mapping[str, str], name: str, default: str, choices: tuple[str, ...],
               fold: Callable[[str], str] = str.lower) -> str:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    if fold(raw.strip()) not in choices:
        raise ConfigError(f"setting {name}={raw!r} is not understood; use one of {', '.join(choices)}")
    return fold(raw.strip())


def parse_secret_ids(value: str | None) -> tuple[str, ...]:
    """Split ``sec`` on ';', dropping blanks and repeats, keeping order; refuse what cannot be a secret."""
    raw = value or ""
    if "," in raw:  # no secret name or ARN holds a comma
        raise ConfigError(f"setting sec={raw!r}: separate the secrets with ';', not ','")
    ids = tuple(dict.fromkeys(part.strip() for part in raw.split(";") if part.strip()))
    for entry in ids:
        if "*" in entry[:-1] or entry == "*":
            raise ConfigError(f"setting sec: entry {entry!r} is not understood; a prefix entry is a name "
                              "followed by one '*' at its end, like 'iam-keys/*'")
    return ids


def is_access_key_id(value: Any) -> bool:
    """An IAM user's access key id, as AWS documents and makes them: AKIA and 16 capital letters or digits. A
    SecretAccessKey (40 characters, either case, / and +) never is, so one in the wrong field is never shown."""
    return isinstance(value, str) and len(value) == 20 and value.startswith("AKIA") and value.isascii() \
        and all(ch.isupper() or ch.isdigit() for ch in value[4:])


def is_user_name(value: Any) -> bool:
    """IAM's user name rule: 1 to 64 of letters, digits and +=,.@_-."""
    return isinstance(value, str) and 0 < len(value) <= 64 and value.isascii() \
        and all(ch.isalnum() or ch in "+=,.@_-" for ch in value)


def folded(key: str) -> str:
    """An event key as it is compared with the controls' names: lower case, letters and digits only."""
    return "".join(ch for ch in key.casefold() if ch.isalnum())


def step_controls(event: dict) -> None:
    """A rotation step takes no control: Secrets Manager sends none, so one there (or a near miss) is a mistake
    that would otherwise be ignored, a dry run that changes keys. Refused before anything is read."""
    named = sorted(str(key) for key in event if folded(str(key)) in {folded(name) for name in EVENT_CONTROLS})
    if named:
        raise ConfigError(f"a Secrets Manager rotation step takes no control, but the event has {named}: for a dry "
                          "run set DRY_RUN on the function or tag the secret key-rotation:mode=dry-run; nothing "
                          "changed")


def event_controls(event: Any) -> dict[str, Any]:
    """The event's controls, checked: types as documented, near-miss spellings refused."""
    if event is None:
        return {}
    if not isinstance(event, dict):
        raise ConfigError(f"the event must be a JSON object, not {type(event).__name__}")
    meant = {folded(name): name for name in EVENT_CONTROLS}
    controls: dict[str, Any] = {}
    for key, value in event.items():
        control = meant.get(folded(str(key)))
        if control is None:
            continue  # other keys (the console's key1...) are not ours
        if key != control:
            raise ConfigError(f"event key {key!r} is not understood; did you mean {control!r}?")
        if EVENT_CONTROLS[control] is bool and not isinstance(value, bool):
            raise ConfigError(f'event "{control}" must be true or false (JSON), not {json.dumps(value)}')
        if EVENT_CONTROLS[control] is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value) \
                    or not any(v.strip() for v in value):
                what = "access key ids" if control == "exposed" else "secret names or ARNs"
                raise ConfigError(f'event "{control}" must be a non-empty list of {what}')
            value = tuple(dict.fromkeys(v.strip() for v in value if v.strip()))
        controls[control] = value
    if "secrets" in controls and "rollback" in controls:
        raise ConfigError('event: use "secrets" or "rollback", not both')
    if "exposed" in controls and set(controls) - {"exposed", "dry_run"}:
        raise ConfigError('event: "exposed" goes alone (or with "dry_run")')
    if controls.get("roles") and not controls.get("report"):
        raise ConfigError('event: "roles" goes with "report": true ({"report": true, "roles": true}: a report that '
                          "reads only); nothing changed")
    return controls


def exposed_keys(event: Any, controls: Mapping[str, Any]) -> tuple[str, ...]:
    """The access keys an event says are exposed: an AWS Health RISK event's affected entities, or the
    operator's ``{"exposed": [...]}``. A key id of the wrong shape is refused without being shown (it may be a
    secret pasted by mistake); a Health event of another kind is not understood."""
    if isinstance(event, dict) and event.get("source") == "aws.health":
        detail = event.get("detail") if isinstance(event.get("detail"), dict) else {}
        if detail.get("service") != "RISK" or detail.get("eventTypeCode") not in EXPOSURE_CODES:
            raise ConfigError("an AWS Health event this function does not act on: it answers RISK events of an "
                              f"exposed access key ({', '.join(EXPOSURE_CODES)}); nothing changed")
        entities = detail.get("affectedEntities")
        keys = [e.get("entityValue") for e in entities if isinstance(e, dict)] if isinstance(entities, list) else []
        if not keys:
            raise ConfigError("the AWS Health event names no access key (detail.affectedEntities); nothing changed")
    else:
        keys = list(controls.get("exposed", ()))
    bad = sum(not is_access_key_id(k) for k in keys)
    if bad:
        raise ConfigError(f"the event names {bad} exposed key id(s) that are not access key ids (AKIA and 16 capital "
                          "letters or digits); not shown, nothing changed")
    return tuple(dict.fromkeys(keys))


def arn_fields(arn: str | None) -> list[str]:
    """An ARN's fields (arn, partition, service, region, account, resource...); [] for anything else."""
    parts = (arn or "").split(":")
    return parts if len(parts) >= 6 and parts[0] == "arn" else []


def is_region(word: str) -> bool:
    """A region name's shape: eu-west-1, us-gov-west-1, cn-north-1 (lower-case words, a number last). Never a
    wildcard: a policy built from it names one region."""
    parts = word.split("-")
    return len(parts) >= 3 and len(parts[0]) == 2 and parts[-1].isdigit() and word.isascii() and len(word) <= 30 \
        and all(p.isalnum() and p == p.lower() for p in parts)


def is_partition(word: str) -> bool:
    """A partition's shape: aws, aws-cn, aws-us-gov, aws-iso-b... (never a wildcard)."""
    parts = word.split("-")
    return parts[0] == "aws" and word.isascii() and all(p.isalpha() and p == p.lower() for p in parts)


def arn_in_place(fields: list[str], service: str) -> bool:
    """Does an ARN name one service's resource in one partition, region and account (no wildcard in any)?"""
    return len(fields) >= 6 and fields[2] == service and is_partition(fields[1]) and is_region(fields[3]) \
        and len(fields[4]) == 12 and fields[4].isdigit()


def account_of(arn: str | None) -> str | None:
    """The account id of an ARN (None for a name or an ARN without twelve digits there)."""
    account = (arn_fields(arn) or [""] * 6)[4]
    return account if len(account) == 12 and account.isdigit() else None


def region_of(arn: str | None) -> str | None:
    """The region of an ARN (None for a name, or an ARN without one)."""
    return (arn_fields(arn) or [""] * 6)[3] or None


def parse_event_bus(value: str | None) -> str | None:
    """EVENT_BUS: a bus name, or an event bus ARN (arn:PARTITION:events:REGION:ACCOUNT:event-bus/NAME)."""
    if value is None:
        return None
    fields = arn_fields(value)
    name = fields[5].removeprefix("event-bus/") if len(fields) == 6 and fields[5].startswith("event-bus/") else value
    good_arn = not value.startswith("arn:") or (name != value and arn_in_place(fields, "events"))
    if not good_arn or not 0 < len(name) <= 256 or not all(ch.isalnum() or ch in "._-/" for ch in name):
        raise ConfigError("setting EVENT_BUS is not understood; use a bus name (letters, digits, ._-/) or an event "
                          "bus ARN (arn:aws:events:REGION:ACCOUNT_ID:event-bus/NAME)")
    return value


def central_account(value: str | None) -> str | None:
    """CENTRAL_ACCOUNT_ID: twelve digits, or unset."""
    if value is not None and not (len(value) == 12 and value.isascii() and value.isdigit()):
        raise ConfigError("setting CENTRAL_ACCOUNT_ID is not understood; use a 12-digit AWS account id")
    return value


def is_email(value: Any) -> bool:
    """An e-mail address's shape: local@domain.tld, printable ASCII, no spaces, at most 254 characters. (Whether
    SES may send from or to it is SES's to say.)"""
    if not isinstance(value, str) or not 3 <= len(value) <= 254 or not value.isascii():
        return False
    local, at, domain = value.rpartition("@")
    return bool(at and local and "." in domain.strip(".") and not domain.startswith(".") and ".." not in domain
                and all(ch.isalnum() or ch in "-." for ch in domain)
                and all(ch.isprintable() and ch not in ' "(),:;<>[\\]@' for ch in local))


def owner_sender(value: str | None) -> str | None:
    """OWNER_SENDER: an e-mail address (an identity verified in SES), or unset."""
    if value is not None and not is_email(value):
        raise ConfigError("setting OWNER_SENDER is not understood; use an e-mail address verified in SES, like "
                          "key-rotation@example.com")
    return value


def foreign_account(account: str | None, home: str | None, central: str | None) -> bool:
    """The one rule for where the function's messages may go (a topic, a bus, an owner's topic): this account
    (``home``) or CENTRAL_ACCOUNT_ID's; any other account is foreign."""
    return account is not None and account not in (home, central)


OWNER_TAG = "key-rotation-owner"  # on the IAM user: who owns its keys, e-mail addresses and SNS topic ARNs


@dataclass(frozen=True)
class Owner:
    """One address of the user's key-rotation-owner tag: an e-mail address (SES) or an SNS topic ARN."""

    address: str
    topic: bool


def is_topic_arn(value: str) -> bool:
    """An SNS topic ARN's shape: arn:PARTITION:sns:REGION:ACCOUNT:NAME (NAME: letters, digits, - and _, .fifo)."""
    parts = arn_fields(value)
    name = parts[5].removesuffix(".fifo") if len(parts) == 6 else ""
    return len(parts) == 6 and value.isascii() and arn_in_place(parts, "sns") and 0 < len(name) <= 256 \
        and all(ch.isalnum() or ch in "-_" for ch in name)


def parse_notify_topic(topic: str | None) -> str | None:
    """NOTIFY_TOPIC_ARN: an SNS topic ARN, or unset."""
    if topic is not None and not is_topic_arn(topic):
        raise ConfigError(f"setting NOTIFY_TOPIC_ARN={topic!r} is not understood; use an SNS topic ARN "
                          "(arn:aws:sns:REGION:ACCOUNT_ID:NAME)")
    return topic


def parse_owners(value: str | None) -> tuple[tuple[Owner, ...], tuple[str, ...]]:
    """The key-rotation-owner tag: its addresses, separated by spaces, each checked against its shape (an
    e-mail address or an SNS topic ARN); and the parts that are neither (reported, never sent to)."""
    owners, malformed = [], []
    for part in dict.fromkeys((value or "").split()):
        if is_topic_arn(part):
            owners.append(Owner(part, topic=True))
        elif is_email(part):
            owners.append(Owner(part, topic=False))
        else:
            malformed.append(part)
    return tuple(owners), tuple(malformed)


ROLE_REGIONS_MOST = 10  # regions the roles report reads at most: each costs a paced lookup per key


def role_regions(value: str | None, environ: Mapping[str, str]) -> tuple[str, ...]:
    """ROLE_REGIONS: region names separated by spaces (default: the function's own region, AWS_REGION)."""
    words = tuple(dict.fromkeys((value or "").split())) or tuple(
        r for r in (environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "",) if r)
    for word in words:
        if not is_region(word):
            raise ConfigError(f"setting ROLE_REGIONS names {word[:40]!r}, not a region; use region names like "
                              "eu-west-1, separated by spaces")
    if len(words) > ROLE_REGIONS_MOST:
        raise ConfigError(f"setting ROLE_REGIONS names {len(words)} regions; the roles report reads at most "
                          f"{ROLE_REGIONS_MOST} (each costs a paced CloudTrail call per key)")
    return words


@dataclass(frozen=True)
class Setting:
    """One row of the settings table: the one place a setting is named, typed, bounded and explained.

    ``load_settings`` reads every row into its field of ``Settings``, which is made from the rows; the Makefile,
    ``tools/deploy_config.py``, the template and the README's settings table are checked against it by tests.
    ``deployed``: what ``make create`` and the template deploy when not told (production defaults), where that
    differs from the function's own default.
    """

    name: str
    kind: Any  # bool, int, float, "choice" or "text"
    default: Any
    meaning: str
    low: float = 0
    high: float = 0
    choices: tuple[str, ...] = ()
    deployed: str | None = None
    attribute: str | None = None  # its field of Settings (default: the name in lower case)
    check: Callable[[Any], Any] | None = None  # what the value read must also be, and becomes (an ARN's shape...)

    @property
    def field(self) -> str:
        return self.attribute or self.name.lower()


SETTINGS_TABLE: dict[str, Setting] = {s.name: s for s in (
    Setting("sec", "text", "", "the secrets to rotate: names, ARNs and 'prefix*' entries, separated by ';'",
            attribute="secret_ids", check=parse_secret_ids),
    Setting("DRY_RUN", bool, False, "plan and report, change nothing (every entry point)"),
    Setting("REQUIRE_USER_TAG", bool, True, "only the secret a user's key-rotation-secret tag names acts for it"),
    Setting("ROTATE_AFTER_DAYS", float, 0, "rotate a held key once it is this old (0: every run)", 0, 3650,
            deployed="80"),
    Setting("MAX_KEY_AGE_DAYS", float, 90, "no managed Active key may be older (0: off); rotations fall due in time",
            0, 3650),
    Setting("GRACE_HOURS", float, 0, "keep the old key Active this long after the store (0: deactivate at once)",
            0, 8760, deployed="24"),
    Setting("MAX_GRACE_HOURS", float, DEFAULT_MAX_GRACE_HOURS,
            "a retiring key still in use is deactivated anyway after this long (at least GRACE_HOURS)", 0, 8760),
    Setting("ROLLBACK_HOURS", float, 168, "a rollback is refused once the current version is older than this",
            0, 8760),
    Setting("VERIFY_TIMEOUT_SECONDS", float, 30, "how long a new key may take to authenticate with STS (0: skip)",
            0, 600, attribute="verify_timeout"),
    Setting("TIME_MARGIN_SECONDS", float, None, "no rotation starts with less Lambda time left "
            "(default VERIFY_TIMEOUT_SECONDS + 30)", 0, 900, attribute="time_margin"),
    Setting("MAX_WORKERS", int, 8, "secrets handled at once", 1, 64),
    Setting("MAX_FAILURES", int, 5, "after this many rotations that acted and failed, no new one starts (0: off)",
            0, 100000),
    Setting("AWS_MAX_ATTEMPTS", int, 10, "attempts per AWS call, the first included (1: no retries)", 1, 20,
            attribute="max_attempts"),
    Setting("AWS_RETRY_MODE", "choice", "adaptive", "botocore's retry mode", choices=RETRY_MODES,
            attribute="retry_mode"),
    Setting("LOG_LEVEL", "choice", "INFO", "the function's log level (wire loggers stay at WARNING)",
            choices=LOG_LEVELS),
    Setting("METRICS_NAMESPACE", "text", "IAMKeyRotation", "the CloudWatch namespace of the run's metrics"),
    Setting("NOTIFY_TOPIC_ARN", "text", None, "an SNS topic told of every run that changed or failed anything",
            check=parse_notify_topic),
    Setting("ACCOUNT_REPORT", bool, False, "each run also reads IAM's credential report and lists every Active "
            "key past MAX_KEY_AGE_DAYS in the account (needs the report's two IAM read actions)"),
    Setting("EVENT_BUS", "text", None, "an EventBridge bus (name or ARN) told of each secret whose keys changed, "
            "that failed, whose old key is still in use or that is overdue (empty: none)", check=parse_event_bus),
    Setting("CENTRAL_ACCOUNT_ID", "text", None, "the one other account (12 digits) whose SNS topic or EventBridge "
            "bus may receive the run's summaries and events: an organisation's central account (empty: this "
            "account's only)", check=central_account),
    Setting("LOOKUP_HOLDOUTS", bool, False, "ask CloudTrail who still uses a previous key kept Active (or "
            "deactivated) although in use (needs cloudtrail:LookupEvents)"),
    Setting("ROLE_LOOKBACK_DAYS", int, 30, "the roles report ({\"report\": true, \"roles\": true}) reads this many "
            "days of CloudTrail's event history per key (at most 90, what LookupEvents keeps)", 1, 90),
    Setting("ROLE_REGIONS", "text", None, "the regions whose CloudTrail event history the roles report reads, "
            "separated by spaces (default: the function's own region)", check=lambda value: role_regions(value, {})),
    Setting("OWNER_SENDER", "text", None, "the e-mail address, verified in SES, that tells each key's owner (the "
            "user's key-rotation-owner tag) what will happen to the key (empty: e-mail owners are not told; "
            "SNS topic owners still are)", check=owner_sender),
)}


def setting(environ: Mapping[str, str], name: str, default: Any = None) -> Any:
    """One setting, read and checked as its row of SETTINGS_TABLE says (``default`` for a derived default)."""
    row = SETTINGS_TABLE[name]
    default = row.default if default is None else default
    try:
        if row.kind is bool:
            return env_bool(environ, name, default)
        if row.kind in (int, float):
            return env_number(environ, name, default, row.low, row.high, row.kind)
        if row.kind == "choice":
            return env_choice(environ, name, default, row.choices, str.upper if name == "LOG_LEVEL" else str.lower)
    except ConfigError as err:  # said with what the setting is for, from the table
        raise ConfigError(f"{err} ({name}: {row.meaning})") from None
    return (environ.get(name) or "").strip() or default


CALL_BUDGET_SHARE = 0.25
# The record's defaults where the table's is derived from another setting's (at that setting's default).
DERIVED_DEFAULTS = {"TIME_MARGIN_SECONDS": 60.0, "ROLE_REGIONS": ()}
# The rows the rules that join settings read (``environment_settings``), each read there alone.
JOINED = (*DERIVED_DEFAULTS, "GRACE_HOURS", "MAX_GRACE_HOURS", "MAX_KEY_AGE_DAYS")
# The event's part of the record: the controls (``event_controls``), a leak's keys, a scheduled event's identity.
EVENT_FIELDS: tuple[tuple[str, Any, Any], ...] = (
    ("targets", tuple[str, ...] | None, None),  # event "secrets": a subset of what sec selects
    ("rollback", tuple[str, ...], ()),  # event "rollback"
    ("force", bool, False),
    ("report", bool, False),  # event "report": read IAM's credential report, change nothing (a dry run besides)
    ("exposed", tuple[str, ...], ()),  # event "exposed" or an AWS Health RISK event: keys to replace and revoke now
    ("roles", bool, False),  # event "roles" (with "report"): which Active keys a role could replace, from CloudTrail
    ("event_id", str | None, None),  # a recent scheduled event's id; redeliveries repeat it
    ("event_time", datetime | None, None),
)


def call_budget(self: Any) -> float:
    """Seconds one AWS call may spend retrying: a fixed share of the margin, so a started rotation ends in it."""
    return self.time_margin * CALL_BUDGET_SHARE


def record_default(row: Setting) -> Any:
    default = DERIVED_DEFAULTS.get(row.name, row.default)
    return row.check(default) if row.check and row.name not in DERIVED_DEFAULTS else default


# One invocation's settings: every row of the table under its field name, then the event's part. Parsed once, by
# ``load_settings``; made from the table, so a setting is declared in its row alone.
Settings = make_dataclass(
    "Settings", [(row.field, row.kind if isinstance(row.kind, type) else Any, field(default=record_default(row)))
                 for row in SETTINGS_TABLE.values()]
    + [(name, kind, field(default=default)) for name, kind, default in EVENT_FIELDS],
    frozen=True, namespace={"call_budget": property(call_budget), "__doc__": "One invocation's settings: the "
                            "environment (SETTINGS_TABLE), narrowed by the event. Parsed once, by load_settings."})


def is_rotation_event(event: Any) -> bool:
    """Is this Secrets Manager invoking us as the secret's rotation function?"""
    return isinstance(event, dict) and "Step" in event


def is_scheduled(event: Any) -> bool:
    """Is this an EventBridge (scheduled) event, which may be delivered more than once?"""
    return isinstance(event, dict) and (
        event.get("source") == "aws.events" or event.get("detail-type") == "Scheduled Event")


def scheduled_time(event: Any, now: datetime) -> datetime | None:
    """The time of a scheduled event close enough to now to be redelivered; None otherwise.

    A scheduled event without a readable ``time`` is refused: without it redelivery protection would be off,
    and a redelivery would rotate again and retire the key the first delivery just stored.
    """
    if not is_scheduled(event):
        return None
    raw = event.get("time")
    try:
        if not isinstance(raw, str):
            raise ValueError(raw)
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError(f'scheduled event "time" must be an ISO 8601 time, not {json.dumps(raw)}; without it a '
                          "redelivered event would rotate again") from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return when if abs(now - when) <= REDELIVERY_WINDOW else None


def grace_and_deadline(environ: Mapping[str, str]) -> tuple[float, float, float]:
    """GRACE_HOURS, MAX_GRACE_HOURS and MAX_KEY_AGE_DAYS, with the rules that join them (one place)."""
    grace_hours = setting(environ, "GRACE_HOURS")
    max_grace = setting(environ, "MAX_GRACE_HOURS", max(DEFAULT_MAX_GRACE_HOURS, grace_hours))
    if max_grace < grace_hours:
        raise ConfigError(f"setting MAX_GRACE_HOURS={max_grace:g} is below GRACE_HOURS={grace_hours:g}; "
                          "use a number at least GRACE_HOURS")
    max_age = setting(environ, "MAX_KEY_AGE_DAYS")
    if max_age > 0 and max_grace / 24 >= max_age:
        raise ConfigError(f"setting MAX_GRACE_HOURS={max_grace:g} alone reaches MAX_KEY_AGE_DAYS={max_age:g}: a "
                          "previous key kept that long would be past the deadline; lower MAX_GRACE_HOURS")
    return grace_hours, max_grace, max_age


def environment_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """Every row of SETTINGS_TABLE, read once as its row says, under its field name; then the rules that join
    settings, in one place: the derived defaults (TIME_MARGIN_SECONDS, MAX_GRACE_HOURS, ROLE_REGIONS) and the
    bounds between GRACE_HOURS, MAX_GRACE_HOURS and MAX_KEY_AGE_DAYS (``grace_and_deadline``)."""
    values = {row.field: row.check(setting(environ, row.name)) if row.check else setting(environ, row.name)
              for row in SETTINGS_TABLE.values() if row.name not in JOINED}
    values["grace_hours"], values["max_grace_hours"], values["max_key_age_days"] = grace_and_deadline(environ)
    values["time_margin"] = setting(environ, "TIME_MARGIN_SECONDS", values["verify_timeout"] + 30)
    values["role_regions"] = role_regions(setting(environ, "ROLE_REGIONS"), environ)
    return values


def load_settings(environ: Mapping[str, str], event: Any, now: datetime | None = None) -> Settings:
    """Every setting and event control, parsed strictly, once. Raises ConfigError before anything is touched. The
    event only narrows: it may add a dry run or a report, never take one away."""
    if is_rotation_event(event):
        step_controls(event)
    controls = {} if is_rotation_event(event) else event_controls(event)
    values = environment_settings(environ)
    event_time = scheduled_time(event, now or datetime.now(UTC))
    return Settings(**{
        **values,
        "dry_run": controls.get("dry_run", False) or controls.get("report", False) or values["dry_run"],
        "account_report": controls.get("report", False) or values["account_report"],
        "targets": controls.get("secrets"), "rollback": controls.get("rollback", ()),
        "force": controls.get("force", False), "report": controls.get("report", False),
        "roles": controls.get("roles", False),
        "exposed": () if is_rotation_event(event) else exposed_keys(event, controls),
        "event_id": f"{event.get('id')}@{event.get('time')}" if event_time and event.get("id") else None,
        "event_time": event_time,
    })


logger = logging.getLogger("key_rotation")
# Loggers whose DEBUG output carries request and response bodies, and so
# secret values: they stay at WARNING whatever LOG_LEVEL says.
WIRE_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")


def configure_logging(level: str = "INFO") -> None:
    """Set our level; keep the wire loggers (and any child someone turned up) at WARNING."""
    logger.setLevel(level)
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in list(logging.root.manager.loggerDict):
        child = logging.getLogger(name)
        if name.split(".")[0] in WIRE_LOGGERS and logging.NOTSET < child.level < logging.WARNING:
            child.setLevel(logging.WARNING)


def log_action(action: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured line. Callers pass ids and names, never secrets."""
    logger.log(level, json.dumps({"action": action, **fields}, default=str))


# ---------------------------------------------------------------------------
# 3. Functional core (pure, no AWS)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyState:
    """One access key of the user, as ListAccessKeys reports it."""

    key_id: str
    status: str
    created: datetime

    @property
    def active(self) -> bool:
        return self.status == KeyStatus.ACTIVE


@dataclass(frozen=True)
class Holders:
    """Who holds which of the user's keys.

    ``current``: the key in this secret's AWSCURRENT version. ``ours``: keys in
    its AWSPREVIOUS and AWSPENDING versions. ``others``: key id -> the other
    authorised secret (of those ``sec`` selects) that holds it. ``adopted``:
    Active keys nobody holds that IAM shows in use (used, or made, within
    MAX_GRACE_HOURS, or the user's key-rotation-adopted tag names): key id -> its last use, least recently
    used first. ``lost``: keys this function made and never stored (``lost_keys``): nobody can use them.
    ``unproven``: keys that look like the function's own lost ones but are younger than LOST_KEY_WAIT, so
    IAM's silence does not yet prove them unused (a person's key made and used a minute ago looks the same):
    key id -> the time (ISO) from which IAM's data covers their life. No plan touches them; a rotation that
    needs their place waits.
    """

    current: str | None = None
    ours: frozenset[str] = frozenset()
    others: Mapping[str, str] = field(default_factory=dict)
    adopted: Mapping[str, str] = field(default_factory=dict)
    lost: frozenset[str] = frozenset()
    unproven: Mapping[str, str] = field(default_factory=dict)
    retiring: frozenset[str] = frozenset()  # adopted as the last create's old key: the function's, not a person's
    adopted_since: Mapping[str, datetime] = field(default_factory=dict)  # adopted key -> since when (``adopted``)
    adopted_new: frozenset[str] = frozenset()  # adopted by this run (the user's key-rotation-adopted tag lacks it)


@dataclass(frozen=True)
class RotationPlan:
    """What to do to one user's keys, in order, with the create and store between."""

    deactivate_first: tuple[str, ...] = ()  # force only: held keys retired before they are deleted
    delete_first: tuple[str, ...] = ()
    deactivate_after: tuple[str, ...] = ()
    delete_after: tuple[str, ...] = ()
    blocked: str | None = None  # why no new key can be made without touching a key someone holds
    freed_adopted: str | None = None  # force only: the least recently used adopted key, deleted to make room

    @property
    def retires_held_first(self) -> bool:
        """Does the plan retire a held key before the new key exists? Then the current key authenticates first.
        (An adopted key force frees is held by no secret: there is no held key to authenticate for it.)"""
        return bool(self.deactivate_first)

    def steps(self, new_key_id: str = "new", keep_until: str | None = None) -> list[str]:
        """The plan as readable steps: ['delete AKIA1', 'create new', 'store new', ...].

        With ``keep_until`` (a grace period) the old key is kept Active, not deactivated.
        """
        return (
            [f"deactivate {key}" for key in self.deactivate_first]
            + [f"delete {key}" for key in self.delete_first]
            + [f"create {new_key_id}", f"store {new_key_id}"]
            + [f"delete {key}" for key in self.delete_after]
            + [f"keep {key} Active until {keep_until}" if keep_until else f"deactivate {key}"
               for key in self.deactivate_after]
        )


def find_key(keys: Iterable[KeyState], key_id: str | None) -> KeyState | None:
    return next((k for k in keys if k.key_id == key_id), None)


def unless_held_elsewhere(current: KeyState | None, others: Mapping[str, Any]) -> KeyState | None:
    """The key the secret holds, as the plan or a rollback may touch it; None when another secret holds it too: it
    stays as it is (the one place this is decided)."""
    return None if current is None or current.key_id in others else current


def sorted_out(keys: list[KeyState], holders: Holders, current: KeyState | None) -> tuple[list[KeyState], ...]:
    """The keys a plan may act on, besides the current one and those another secret holds or someone uses: the
    function's own lost keys; Active keys this secret's AWSPREVIOUS or AWSPENDING holds; and the free ones (the
    lost, the not Active, then the Active nobody holds), oldest first."""
    mine = [k for k in keys if k.key_id not in holders.others and k is not current
            and k.key_id not in holders.unproven and not (k.active and k.key_id in holders.adopted)]
    lost = [k for k in mine if k.key_id in holders.lost]
    mine = [k for k in mine if k not in lost]
    in_use = [k for k in mine if k.active and k.key_id in holders.ours]
    free = lost + [k for k in mine if not k.active] + [k for k in mine if k.active and k.key_id not in holders.ours]
    return lost, in_use, free


def facts(*parts: str | None) -> list[str]:
    """A reason's facts, in order, the empty ones left out: joined once, where the reason is shown."""
    return [part for part in parts if part]


def unproven_why(key_id: str, until: str) -> str:
    return (f"{key_id} may be this function's own unstored key, but it is too young for IAM's last-used data "
            f"(hours behind) to show nobody uses it: left Active, judged again from {until}")


def no_room(kept: list[KeyState], keys: list[KeyState], holders: Holders, adopted: list[str]) -> str:
    """Why a plan is blocked: who holds or uses each key that stays."""
    why = [f"{k.key_id} is Active and held by this secret's AWSPREVIOUS or AWSPENDING version" for k in kept]
    why += [f"{k.key_id} is held by secret {holders.others[k.key_id]!r}" for k in keys if k.key_id in holders.others]
    why += [f"{key_id} is held by no secret but in use (last used {holders.adopted[key_id]})" for key_id in adopted]
    why += [unproven_why(key_id, until) for key_id, until in sorted(holders.unproven.items())]
    blocked = "no room for a new key without touching a key someone holds: " + "; ".join(why)
    if adopted:
        blocked += '; {"force": true} deletes the least recently used key in use to make room'
    return blocked


def plan_rotation(keys: list[KeyState], holders: Holders, force: bool = False) -> RotationPlan:
    """Decide which keys to delete and deactivate around creating a new one.

    | keys found | what happens |
    |---|---|
    | none | create one, store it |
    | 1 active | create, store, deactivate the old one |
    | 1 inactive | delete it, create, store |
    | 1 active + 1 inactive (either age order) | delete the inactive, create, store, deactivate the old active |
    | 2 inactive | delete both, create, store |
    | 2 active | delete one, create, store, deactivate the other |

    Holders win over the table. The key the secret holds (AWSCURRENT) is never deleted before the new key is
    stored: Inactive, it is deleted after the store; Active, it is the one deactivated. A key another secret
    holds is never touched. An Active key the secret's AWSPREVIOUS or AWSPENDING version holds is never deleted
    (``force`` deactivates, then deletes it). Only keys already Inactive, or Active keys nobody holds, are
    deleted; of two Active keys the unheld one goes (the older if neither is held). No room left: ``blocked``.
    An adopted key (Active, held by no secret, in use) is never deleted nor deactivated by the plan: the usage
    gate retires it (``settle``); if it alone leaves no room, ``force`` deletes the least recently used one
    and the plan names it. The function's own never stored key (``lost``) is deleted first; one IAM cannot yet
    prove unused (``unproven``) stays. Expired keys (IAM) are planned like Inactive ones.
    """
    by_age = sorted(keys, key=lambda k: (k.created, k.key_id))
    current = find_key(by_age, holders.current)
    lost, in_use, free = sorted_out(by_age, holders, current)
    deactivate_first = in_use if force else []
    delete_first = free + deactivate_first
    current = unless_held_elsewhere(current, holders.others)
    keep = current if current is not None and current.active else None
    unheld_active = [k for k in free if k.active and k not in lost]
    if keep is None and unheld_active and len(keys) - len(delete_first) + 1 < MAX_KEYS_PER_USER:
        keep = unheld_active[-1]  # nobody is known to use it, but keep the newest as a fallback
        delete_first.remove(keep)
    blocked, freed = None, None
    adopted = [key_id for key_id in holders.adopted if find_key(by_age, key_id) is not None
               and key_id not in holders.others and (current is None or key_id != current.key_id)]
    if len(keys) - len(delete_first) >= MAX_KEYS_PER_USER and force and adopted:
        freed = adopted[0]  # the least recently used
        delete_first.append(find_key(by_age, freed))
    if len(keys) - len(delete_first) >= MAX_KEYS_PER_USER:
        blocked = no_room([k for k in in_use if k not in deactivate_first], by_age, holders, adopted)
    return RotationPlan(
        deactivate_first=tuple(k.key_id for k in deactivate_first),
        delete_first=tuple(k.key_id for k in delete_first),
        deactivate_after=(keep.key_id,) if keep is not None else (),
        delete_after=(current.key_id,) if current is not None and not current.active else (),
        blocked=blocked,
        freed_adopted=freed,
    )


def needs_repair(keys: list[KeyState], held_key_id: str | None) -> bool:
    """Are the keys off the steady state (held key Active, any other Inactive)?"""
    held = find_key(keys, held_key_id)
    return held is None or not held.active or any(k.active and k is not held for k in keys)


DEADLINE_MARGIN_DAYS = 2.0  # one failed or late daily run still leaves the next one inside the deadline
# IAM's last-used data lags by hours: an adopted key is not retired sooner than this after its adoption.
ADOPTED_MIN_WAIT_HOURS = 24.0
SCHEDULE_PERIOD = timedelta(days=1)  # the daily schedule: the next run may come this much later


def due_after_days(rotate_after_days: float, grace_hours: float, max_grace_hours: float,
                   max_key_age_days: float) -> float:
    """The age at which a held key is due for rotation: ROTATE_AFTER_DAYS (or the secret's tag), brought
    forward so that no Active key outlives MAX_KEY_AGE_DAYS, two waits in a row included: the deadline, less
    the longest an adopted key may hold the rotation back (its usage gate: MAX_GRACE_HOURS, at least
    ADOPTED_MIN_WAIT_HOURS), less the grace period the rotation then gives the old key (GRACE_HOURS), less
    DEADLINE_MARGIN_DAYS; never below 0 (every run). An old key still used after its grace period is kept no
    later than the deadline (``past_deadline``). With MAX_KEY_AGE_DAYS=0 the deadline is off."""
    if max_key_age_days <= 0:
        return rotate_after_days
    allowance = (max(max_grace_hours, ADOPTED_MIN_WAIT_HOURS) + grace_hours) / 24
    return min(rotate_after_days, max(0.0, max_key_age_days - allowance - DEADLINE_MARGIN_DAYS))


def age_days(created: datetime, now: datetime) -> float:
    return round((now - created).total_seconds() / 86400, 1)


def rotation_due(keys: list[KeyState], held_key_id: str | None, now: datetime, rotate_after_days: float) -> bool:
    """Rotate when the held key is old enough, or whenever the keys need repair."""
    if rotate_after_days <= 0 or needs_repair(keys, held_key_id):
        return True
    held = find_key(keys, held_key_id)
    return now - held.created >= timedelta(days=rotate_after_days)


# A daily schedule fires a few seconds short of 24 hours after the run that
# stored the key: the grace period counts as over this much early.
GRACE_TOLERANCE = timedelta(minutes=15)


def reached(now: datetime, moment: datetime) -> bool:
    """Has ``moment`` come, give or take GRACE_TOLERANCE (a run's own work, a schedule's jitter)? The one way the
    waits that end on a schedule's run are compared with the clock: the grace period, the usage gate, an
    adoption's end, the deadline, a reminder's run."""
    return now + GRACE_TOLERANCE >= moment


def is_whole_run(settings: Settings) -> bool:
    """A run over every secret ``sec`` selects (not a targeted, rollback or leak run): its state is the account's."""
    return settings.targets is None and not settings.rollback and not settings.exposed


def schedule_anchor(settings: Settings, now: datetime) -> datetime | None:
    """The time a whole run answers for (the scheduled event's, exact on every redelivery; a console run's, now),
    else None: a targeted, rollback or leak run tells no reminder (it would tell one again: an event never makes
    the function do more). Two console runs in a day both tell that day's reminders (docs/reference.md)."""
    return (settings.event_time or now) if is_whole_run(settings) else None


def in_this_run(moment: datetime, anchor: datetime | None) -> bool:
    """Does ``moment`` (a reminder's time, an adoption) fall to this run of the daily schedule? Each run owns one
    SCHEDULE_PERIOD: the one that ends at its scheduled time (``anchor``: the scheduled event's time, exact on
    every redelivery; ``schedule_anchor``), shifted by GRACE_TOLERANCE for the run's own work. The runs of the
    schedule tile time, so a moment falls to exactly one of them, without any state kept; a run that is not the
    schedule's (no anchor) owns none."""
    return anchor is not None and reached(anchor, moment) and not reached(anchor - SCHEDULE_PERIOD, moment)


class Retire(StrEnum):
    """What to do with a previous key still Active, once the current key has authenticated."""

    WAIT_GRACE = "wait_grace"  # the grace period is not over
    CHECK_USE = "check_use"  # over: ask IAM when the previous key was last used
    RETIRE = "retire"  # not used since the store: deactivate
    WAIT_USE = "wait_use"  # used since the store: keep
    PAST_MAX_GRACE = "past_max_grace"  # still used past MAX_GRACE_HOURS: deactivate anyway, loudly
    DEADLINE = "deadline"  # still used, but kept it would outlive MAX_KEY_AGE_DAYS: deactivate anyway, loudly


def retirement(now: datetime, stored_at: datetime, used_at: datetime | None | bool,
               grace_hours: float, max_grace_hours: float) -> Retire:
    """The grace-period decision. ``used_at`` is False while not yet asked, else IAM's answer (None: never)."""
    if not reached(now, stored_at + timedelta(hours=grace_hours)):
        return Retire.WAIT_GRACE
    if used_at is False:
        return Retire.CHECK_USE
    if used_at is None or used_at < stored_at:
        return Retire.RETIRE
    if reached(now, stored_at + timedelta(hours=max_grace_hours)):
        return Retire.PAST_MAX_GRACE
    return Retire.WAIT_USE


def past_deadline(created: datetime, now: datetime, max_key_age_days: float) -> bool:
    """Would a key made at ``created`` and kept Active outlive MAX_KEY_AGE_DAYS before the next daily run? Then
    the usage gate deactivates it now, whatever its use (0: the deadline is off)."""
    return max_key_age_days > 0 and reached(now + SCHEDULE_PERIOD, created + timedelta(days=max_key_age_days))


# Evidence kept where a writer of the secret cannot reach it: tags on the IAM user, which only IAM
# administrators and this function (those two keys alone, by its policy) may set.
MADE_TAG = "key-rotation-made"  # written just before CreateAccessKey: "<when> <the keys the user had then>"
ADOPTED_TAG = "key-rotation-adopted"  # the keys in use the function adopted: "<key>@<when> ..."
# A key made this close to the marker's time, not among the keys the marker lists, held by no secret and never
# used, is the function's own: its secret was only ever in a lost answer (a crash, a lost reply, a failed store
# whose clean-up failed too). Wide enough for the call's retries and the clocks' skew.
MADE_WINDOW = timedelta(minutes=5)
# IAM's last-used data lags the use: "recent activity usually appears within 4 hours" (IAM User Guide, "Refine
# permissions in AWS using last accessed information", tracking period). A key younger than this may have been
# used with no sign of it yet: IAM's "never used" proves nothing about it, so no such key is deleted as unused.
LAST_USED_LAG = timedelta(hours=4)
# A key that looks like the function's own lost key is deleted only once nobody has used it in its first day as
# IAM shows it LAST_USED_LAG later: a person who makes a key and uses it within a day is seen to (the rule that
# makes any key younger than MAX_GRACE_HOURS someone's in use, at its shortest: ADOPTED_MIN_WAIT_HOURS).
LOST_KEY_WAIT = LAST_USED_LAG + timedelta(hours=ADOPTED_MIN_WAIT_HOURS)
# IAM's lists lag a change too (IAM User Guide, "Troubleshoot IAM": changes are not always immediately visible;
# no bound is given, seconds in practice): a key the function made this recently may not be listed yet, so its
# absence from ListAccessKeys is no proof that it is gone.
LIST_LAG = timedelta(minutes=5)
CLOCK_SKEW = timedelta(minutes=1)  # Secrets Manager's clock against the function's: a date "just ahead" is now
HELD_PREFIX = "current="  # in the mark: the key the secret held at the create (the one the rotation retires)
MADE_SKEW = timedelta(seconds=30)  # IAM's clock and Lambda's may differ by this much; a key is made after its mark
NO_KEY_MADE = "none"  # the mark's token once the create was refused outright: it made no key


def parse_marker(marker: str | None) -> tuple[datetime | None, frozenset[str], str | None, str | None]:
    """The key-rotation-made mark: when, the keys the user had then, which of them the secret held, and the
    secret version the create was for (``none``: the create was refused, it made no key)."""
    parts = (marker or "").split()
    try:
        when = datetime.fromisoformat(parts[0].replace("Z", "+00:00")) if parts else None
    except ValueError:
        return None, frozenset(), None, None
    named = {p.split("=", 1)[0]: p.split("=", 1)[1] for p in parts[1:] if "=" in p}
    known = frozenset(p for p in parts[1:] if "=" not in p) | {named.get("current")} - {None}
    when = when if when is None or when.tzinfo else when.replace(tzinfo=UTC)
    return when, frozenset(known), named.get("current"), named.get("token")


def made_candidates(keys: list[KeyState], held: set[str | None], marker: str | None,
                    versions: Iterable[str]) -> list[str]:
    """Keys the mark says this function made (created in MADE_WINDOW after it, not listed in it) that no secret
    holds, if the create's secret version was never written (a stored key is no one's lost key) and the create
    was not refused. Each is the function's own lost key if IAM shows it never used (``Run.holders`` asks)."""
    when, known, _, token = parse_marker(marker)
    if when is None or token == NO_KEY_MADE or (token is not None and token in set(versions)):
        return []
    return [k.key_id for k in keys if k.key_id not in held and k.key_id not in known
            and when - MADE_SKEW <= k.created <= when + MADE_WINDOW]


ADOPTION_OVER = "off"  # in the key-rotation-adopted tag, "KEY@off": an adopted key since retired (or found off)


def parse_retired(value: str | None) -> frozenset[str]:
    """The key-rotation-adopted tag's keys whose adoption is over: retired, or found not Active. One of them
    Active again is a key someone turned on: a new adoption, whatever IAM's lagging last-used data shows."""
    return frozenset(part.partition("@")[0] for part in (value or "").split() if part.endswith("@" + ADOPTION_OVER))


def parse_adopted(value: str | None) -> dict[str, datetime]:
    """The key-rotation-adopted tag: key id -> when the function first adopted it (unreadable parts ignored)."""
    found = {}
    for part in (value or "").split():
        key_id, _, when = part.partition("@")
        try:
            moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            continue
        found[key_id] = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return found


VERSION_PREFIX = "key-rotation-"  # marks the secret versions this function writes


def version_token(event_id: str | None, secret_arn: str) -> str:
    """The id of the secret version a run writes: for a scheduled event, the same on every redelivery."""
    if event_id:
        return VERSION_PREFIX + str(uuid.uuid5(uuid.NAMESPACE_URL, f"key-rotation/{event_id}/{secret_arn}"))
    return VERSION_PREFIX + str(uuid.uuid4())


def arn_is_user(arn: str, user_name: str, partition: str, account: str) -> bool:
    """Is arn exactly user_name (any path) in this partition and account?"""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[1] != partition or parts[2] != "iam" or parts[4] != account:
        return False
    resource = parts[5]
    return resource.startswith("user/") and resource.rsplit("/", 1)[-1].casefold() == user_name.casefold()


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def made_marker(now: datetime, existing: Iterable[str], held: str | None, token: str | None) -> str:
    """The key-rotation-made tag's value: when, the keys the user had just before the create (the one the secret
    held marked ``current=KEY``), and the secret version the new key is for (``token=...``; none in rotation
    mode, whose AWSPENDING version exists before its key does)."""
    keys = [f"{HELD_PREFIX}{k}" if k == held else k for k in sorted(existing)]
    return " ".join([iso(now), *keys, *([f"token={token}"] if token else [])])


def format_adopted(adopted: Mapping[str, datetime], over: Iterable[str] = ()) -> str:
    return " ".join([f"{key_id}@{iso(when)}" for key_id, when in sorted(adopted.items())]
                    + [f"{key_id}@{ADOPTION_OVER}" for key_id in sorted(set(over) - set(adopted))])


# ---------------------------------------------------------------------------
# 4. Records: what a run reads and carries
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretRecord:
    """A secret as read: what DescribeSecret says and its AWSCURRENT value (never shown in repr). Frozen: what
    a run concludes of it is a ``Found``, kept by the run (``Run.found``), never written back here."""

    name: str  # as the caller named it
    arn: str
    secret_name: str
    value: dict[str, Any] = field(repr=False)
    user_name: str
    held_key_id: str | None
    version_id: str | None
    version_created: datetime | None
    stages: dict[str, list[str]] = field(default_factory=dict)  # version id -> staging labels
    rotation_enabled: bool = False
    rotation_lambda_arn: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    changed_at: datetime | None = None  # DescribeSecret's LastChangedDate: Secrets Manager's, no writer's

    def version_with(self, stage: str) -> str | None:
        return next((v for v, labels in self.stages.items() if stage in labels), None)

    @property
    def pending_in_flight(self) -> str | None:
        pending = self.version_with(PENDING)
        return pending if pending and CURRENT not in self.stages.get(pending, []) else None

    @property
    def partition_and_account(self) -> tuple[str, str]:
        parts = arn_fields(self.arn)
        return parts[1], parts[4]


@dataclass(frozen=True)
class Found:
    """What the run concluded of one secret, pass by pass: each conclusion is a new Found (``Run.conclude``).
    Present: the secret is authorised (its keys may be read and reported). The guard adds its effective settings
    (None: one of its tags was refused, or it is authorised only as its user's holder, a hold reported before any
    guard). The assessment adds the user's keys as listed, then who holds them (``holders``: the adopted keys among
    them, and since when); a rollback, and the report of a hold, add the keys alone."""

    effective: SecretSettings | None = None
    keys: tuple[KeyState, ...] | None = None
    holders: Holders | None = None


@dataclass
class AccessKey:
    """An access key and its secret. The secret part never leaves this record."""

    key_id: str
    secret_access_key: str = field(repr=False)


@dataclass(frozen=True)
class Holdout:
    """Who CloudTrail shows still using a key: a source IP, a user agent and an event source (each clipped), how
    often and last when. A row of the summary's and the event's holdouts (``row``)."""

    source_ip: str | None
    user_agent: str | None
    event_source: str | None
    count: int
    last_seen: str | None

    def row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Deadline:
    """The deadline's figures of one secret after the run (``compliance``), from the keys IAM listed."""

    overdue: bool = False  # a managed Active key is older than MAX_KEY_AGE_DAYS
    overdue_key_id: str | None = None
    overdue_key_age_days: float | None = None
    overdue_keys: int = 0
    key_age_days: float | None = None  # of the key the secret holds after the run (None: it holds none)
    next_rotation: str | None = None  # the UTC date the rotation falls due


@dataclass
class Leak:
    """A leak's facts, on the outcome of the secret that answered it (or of the key no secret may answer for)."""

    key_id: str
    quarantined: bool | None = None  # AWS attached its AWSCompromisedKeyQuarantine policy to the user (None: unknown)


# The summary's fields for one secret, in the order an operator reads them (the answer's JSON keeps it).
SUMMARY_FIELDS = ("secret", "status", "user", "old_key_id", "new_key_id", "steps", "reason", "retire_after",
                  "forced_in_use", "adopted", "restored_key_id", "retired_key_id", "overdue", "overdue_key_id",
                  "overdue_key_age_days", "key_age_days", "next_rotation", "stopped_early", "still_in_use",
                  "secret_arn", "current_key_id", "holdouts", "holdouts_note", "exposed", "exposed_key_id",
                  "quarantined", "owner")


@dataclass
class Outcome:
    """What happened to one secret: the core's facts, with the deadline's figures and a leak's facts as parts.
    The summary, the log lines, the SNS message, the events and the metrics are all rendered from it."""

    secret: str
    status: Status
    user: str | None = None
    old_key_id: str | None = None
    new_key_id: str | None = None
    steps: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # facts, each said once; joined where shown (``reason``)
    retire_after: str | None = None
    forced_in_use: bool = False
    adopted: str | None = None  # an Active key no secret held, in use: kept Active, retired through the usage gate
    restored_key_id: str | None = None  # rollback and repair: the key AWSCURRENT holds again
    retired_key_id: str | None = None  # rollback: the key deactivated
    stopped_early: bool = False  # not attempted: MAX_FAILURES rotations had failed
    still_in_use: bool = False  # waiting: IAM shows the previous (or adopted) key used since the store
    secret_arn: str | None = None
    current_key_id: str | None = None  # the key the secret holds after the run
    holdouts: list[Holdout] | None = None  # LOOKUP_HOLDOUTS: who CloudTrail shows using old_key_id
    holdouts_note: str | None = None  # why holdouts were not (all) found: not looked up, failed, first page only
    in_use_since: datetime | None = field(default=None, repr=False)  # the store: where a holdout lookup starts
    managed: bool = field(default=False, repr=False)  # an authorised secret names the user (the account report)
    retired_keys: list[str] = field(default_factory=list, repr=False)  # deactivated or deleted in this run
    owner: str | None = None  # the user's key-rotation-owner tag, as the run read it (clipped; None: none)
    deadline: Deadline = field(default_factory=Deadline)
    leak: Leak | None = None  # the run answered a leak of this key (an AWS Health event, or the operator)

    @property
    def reason(self) -> str | None:
        return "; ".join(self.reasons) or None

    def summary(self) -> dict[str, Any]:
        """The summary's entry for this secret: its facts in SUMMARY_FIELDS' order, the empty ones left out
        (holdouts shown once looked up, even if none); status and the deadline's figures always."""
        deadline, leak = self.deadline, self.leak
        values = {**self.__dict__, **asdict(deadline), "reason": self.reason, "exposed": leak is not None,
                  "exposed_key_id": leak and leak.key_id, "quarantined": leak and leak.quarantined,
                  "holdouts": None if self.holdouts is None else [h.row() for h in self.holdouts]}
        fields = {k: values[k] for k in SUMMARY_FIELDS
                  if values[k] not in (None, [], False) or (k == "holdouts" and values[k] is not None)}
        return {**fields, "status": str(self.status), "overdue": deadline.overdue,
                "key_age_days": deadline.key_age_days, "next_rotation": deadline.next_rotation}


@dataclass(frozen=True)
class Stored:
    """A rotation whose new key is in the secret: next, verify it, then retire or keep the old key."""

    record: SecretRecord
    plan: RotationPlan
    new_key: AccessKey
    effective: SecretSettings  # the secret's effective settings (the guard's)
    adopted: tuple[str, ...] = ()  # keys in use that no secret held: kept Active
    reasons: tuple[str, ...] = ()
    lost: frozenset[str] = frozenset()  # the function's own unstored keys, deleted before the create
    at_once: bool = False  # the entry point's policy (a leak's): the old key is retired at once, no grace period
    adopted_since: datetime | None = None  # when the adopted key kept Active was first adopted (its gate's start)


@dataclass(frozen=True)
class Settling:
    """A secret whose previous (or adopted) key is still Active: verify the current key, then retire or keep it."""

    record: SecretRecord
    previous_key_id: str
    effective: SecretSettings  # the secret's effective settings (the guard's)
    reasons: tuple[str, ...] = ()
    adopted: datetime | None = None  # an adopted key: when a run first adopted it (its usage gate counts from then)
    lost: frozenset[str] = frozenset()  # the function's own unstored keys: deleted first
    at_once: bool = False  # the entry point's policy (a leak's): retired once the current key authenticates, no gate
    also: tuple[str, ...] = ()  # more leaked keys of the user, deactivated with it
    at_deadline: bool = False  # an adopted key turned on again while the held key is at its deadline: no new wait


@dataclass(frozen=True)
class Restore:
    """The key the secret holds is gone or off: AWSPREVIOUS's key, Active and the same user's, to go back to."""

    version: str
    key: AccessKey
    found: str  # what was found, for the reason


@dataclass(frozen=True)
class Rotate:
    """A rotation decided on, from reads alone: the plan, and what the run found. Nothing has changed yet."""

    record: SecretRecord
    effective: SecretSettings  # the secret's effective settings (the guard's)
    keys: list[KeyState]
    holders: Holders
    plan: RotationPlan
    token: str
    kept: tuple[str, ...] = ()  # adopted keys the rotation keeps Active
    reasons: tuple[str, ...] = ()
    restore: Restore | None = None  # tried first; if its key does not authenticate, the rotation goes ahead
    lost: frozenset[str] = frozenset()  # the function's own unstored keys: deleted first (the plan is without them)
    at_once: bool = False  # the entry point's policy (a leak's): the old key is retired at once, no grace period


@dataclass(frozen=True)
class Cleanup:
    """Nothing is due but the function's own unstored keys: delete them, then report ``outcome``."""

    record: SecretRecord
    effective: SecretSettings  # the secret's effective settings (the guard's)
    lost: frozenset[str]
    outcome: Outcome


# ---------------------------------------------------------------------------
# 5. Clients and AWS steps
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Clock:
    """Time, passed in (as botocore's retry module does), so tests need no patching."""

    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


SYSTEM_CLOCK = Clock()


def back_off(clock: Clock, deadline: float, delay: float) -> float | None:
    """The one backoff (a key's propagation, IAM's credential report): sleep ``delay`` on the clock passed in and
    return the next wait (doubled, at most 8 s); None, without sleeping, when the sleep would end past
    ``deadline`` (a ``clock.monotonic`` reading)."""
    if clock.monotonic() + delay > deadline:
        return None
    clock.sleep(delay)
    return min(delay * 2, 8.0)


class CallTooSlow(Exception):
    """A call used up its retry budget: the last attempt may or may not have been applied."""


@dataclass
class CallBudget:
    """Stops botocore retrying one call once ``seconds`` have gone since the call began.

    Registered on the clients' events; the budget and clock are set per invocation.
    """

    seconds: float = 15.0
    clock: Clock = SYSTEM_CLOCK
    local: threading.local = field(default_factory=threading.local)  # this thread's rotation deadline

    def start(self, context: dict, **_: Any) -> None:
        context["key_rotation_started"] = self.clock.monotonic()

    @contextmanager
    def deadline(self, seconds: float, reserve: float = 0.0) -> Iterator[None]:
        """A deadline for every attempt this thread makes within: a whole rotation's (backoff sleeps and the
        adaptive rate limiter's waits included, since it is checked before each attempt is sent). Its last
        ``reserve`` seconds are kept for a clean-up (``cleanup``), so that too ends within ``seconds``."""
        previous = getattr(self.local, "deadline", None), getattr(self.local, "end", None)
        began = self.clock.monotonic()
        self.local.deadline, self.local.end = began + seconds - min(reserve, seconds / 2), began + seconds
        try:
            yield
        finally:
            self.local.deadline, self.local.end = previous

    @contextmanager
    def cleanup(self, seconds: float) -> Iterator[None]:
        """A clean-up's own short deadline, nested in a rotation's: a fresh ``seconds``, never past the end of
        the enclosing deadline (its reserve), so a clean-up cannot outlive TIME_MARGIN_SECONDS."""
        previous = getattr(self.local, "deadline", None), getattr(self.local, "end", None)
        fresh, end = self.clock.monotonic() + seconds, previous[1]
        self.local.deadline = fresh if end is None else min(fresh, end)
        try:
            yield
        finally:
            self.local.deadline, self.local.end = previous

    def check(self, request: Any, **_: Any) -> None:
        """Before each attempt is sent: a retry past the call's budget, or any attempt past the rotation's
        deadline, is not made."""
        context = getattr(request, "context", None) or {}
        started, attempt = context.get("key_rotation_started"), context.get("retries", {}).get("attempt", 1)
        if started is not None and attempt > 1 and self.clock.monotonic() - started > self.seconds:
            raise CallTooSlow(f"gave up retrying after {self.seconds:g}s (a share of TIME_MARGIN_SECONDS)")
        deadline = getattr(self.local, "deadline", None)
        if deadline is not None and self.clock.monotonic() > deadline:
            raise CallTooSlow("the rotation reached its deadline (TIME_MARGIN_SECONDS) before this attempt")


@dataclass
class Pacer:
    """Spaces the attempts of one client's calls at least ``interval`` seconds apart on the clock: for an API
    with a fixed request rate (CloudTrail's LookupEvents: 2 a second per account and region). Registered on
    ``request-created``, which botocore emits for every attempt, so its retries are paced too; the clock is
    set per invocation, as the budget's."""

    interval: float
    clock: Clock = SYSTEM_CLOCK
    last: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self, **_: Any) -> None:
        with self.lock:
            if self.last is not None:
                gap = self.clock.monotonic() - self.last
                if gap < self.interval:
                    self.clock.sleep(self.interval - gap)
            self.last = self.clock.monotonic()


class KeyIdentity:
    """STS GetCallerIdentity signed with a given key, on one shared client.

    Each call is signed with the key being checked (botocore's per-request
    signing credentials), so verifying a thousand keys does not make a
    thousand clients. If the key were ever missing, the call would be signed
    as the function's own role, which can never pass as the user: safe.
    """

    def __init__(self, session: Any) -> None:
        self.client = session.client("sts", config=Config(retries={"mode": "standard", "total_max_attempts": 3},
                                                          connect_timeout=5, read_timeout=10))
        self.local = threading.local()  # the key this thread is checking
        self.client.meta.events.register("before-call.sts.GetCallerIdentity", self._sign_with_key)

    def _sign_with_key(self, context: dict, **_: Any) -> None:
        key = getattr(self.local, "key", None)
        if key is None:
            raise RuntimeError("GetCallerIdentity without a key to check")
        context.setdefault("signing", {})["request_credentials"] = Credentials(key.key_id, key.secret_access_key)

    def caller_identity(self, key: AccessKey) -> dict:
        self.local.key = key
        try:
            return self.client.get_caller_identity()
        finally:
            self.local.key = None


@dataclass(frozen=True)
class Clients:
    """The clients every thread shares (botocore's clients are thread-safe). IAM, Secrets Manager and STS are
    made with the session; SNS, EventBridge and CloudTrail, which only some settings use, on first use."""

    session: Any
    iam: Any
    secrets: Any
    budget: CallBudget
    identity: KeyIdentity | None = None
    pacer: Pacer | None = None  # the cloudtrail client's
    make: Callable[[str], Any] | None = None  # the maker of an optional client, by service name
    made: dict[str, Any] = field(default_factory=dict, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def optional(self, service: str) -> Any:
        with self.lock:
            if service not in self.made:
                self.made[service] = self.make(service)
            return self.made[service]

    @property
    def sns(self) -> Any:
        return self.optional("sns")

    @property
    def events(self) -> Any:
        return self.optional("events")

    @property
    def cloudtrail(self) -> Any:
        return self.optional("cloudtrail")

    def cloudtrail_in(self, region: str) -> Any:
        """CloudTrail in one region (its event history is per region), paced by the same ``Pacer``."""
        return self.optional(f"cloudtrail@{region}")

    @property
    def ses(self) -> Any:
        return self.optional("ses")


# The environment that decides where clients connect and as whom. It does not
# change within a Lambda execution environment; a test may change it.
CLIENT_ENVIRONMENT = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ACCESS_KEY_ID",
                      "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@lru_cache(maxsize=8)
def session_for(environment: tuple[str | None, ...]) -> Any:
    """One boto3 session per environment (where clients connect, as whom): the clients' shared credentials."""
    return boto3.session.Session()


@lru_cache(maxsize=8)
def clients_for(environment: tuple[str | None, ...], retry_mode: str, max_attempts: int) -> Clients:
    """IAM, Secrets Manager, STS (and, on first use, SNS, EventBridge and CloudTrail) clients, from the
    environment's session, for one retry setting.

    botocore's retries (adaptive by default: client-side rate limiting) are
    the only retry layer; ``CallBudget`` bounds how long they may go on.
    """
    session = session_for(environment)
    # total_max_attempts counts the first attempt too, as AWS_MAX_ATTEMPTS does in botocore's own configuration
    # ("max_attempts" in a Config counts retries only: 10 would make 11 attempts).
    config = Config(retries={"mode": retry_mode, "total_max_attempts": max_attempts},
                    connect_timeout=5, read_timeout=15, max_pool_connections=64)
    budget, pacer = CallBudget(), Pacer(LOOKUP_INTERVAL_SECONDS)

    # SES (the owners' e-mail): botocore's standard retries, then the e-mail is given up for the run (``tell``)
    ses_config = config.merge(Config(retries={"mode": "standard", "total_max_attempts": max_attempts}))

    def make(name: str) -> Any:
        service, _, region = name.partition("@")  # "cloudtrail@eu-west-1": a client of that region
        client = session.client(service, config=ses_config if service == "ses" else config,
                                **({"region_name": region} if region else {}))
        if service == "cloudtrail":
            client.meta.events.register("request-created", pacer.wait)  # every attempt; before the budget's check
        client.meta.events.register("before-call", budget.start)
        client.meta.events.register("request-created", budget.check)  # once per attempt, retries included
        client.meta.events.register("before-send", budget.check)  # again after adaptive mode's rate limiter
        return client

    return Clients(session=session, iam=make("iam"), secrets=make("secretsmanager"), budget=budget,
                   identity=KeyIdentity(session), pacer=pacer, make=make)


def aws_clients(settings: Settings, clock: Clock = SYSTEM_CLOCK) -> Clients:
    """The shared clients: made once per execution environment and retry settings."""
    environment = tuple(os.environ.get(name) for name in CLIENT_ENVIRONMENT)
    clients = clients_for(environment, settings.retry_mode, settings.max_attempts)
    clients.budget.seconds, clients.budget.clock = settings.call_budget, clock
    if clients.pacer is not None:
        clients.pacer.clock = clock
    return clients


# Calls whose request or answer carries a secret value: their AWS error
# messages may echo it, so only the code and operation are ever repeated.
SECRET_CARRYING = {"GetSecretValue", "PutSecretValue", "BatchGetSecretValue", "GetCallerIdentity",
                   "CreateAccessKey"}
THROTTLING = {"Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
              "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded", "SlowDown"}


def error_code(err: BaseException) -> str | None:
    return err.response.get("Error", {}).get("Code") if isinstance(err, ClientError) else None


def describe_error(err: BaseException, operation: str | None = None) -> str:
    """A short description of a failure, without request parameters or (for secret-carrying calls) AWS's message."""
    if isinstance(err, ClientError):
        name = getattr(err, "operation_name", None) or operation or "AWS call"
        code = error_code(err) or "Unknown"
        if name in SECRET_CARRYING or operation in SECRET_CARRYING:
            return f"{name} failed: {code}"
        return f"{name} failed: {code}: {err.response.get('Error', {}).get('Message', '')}"
    if isinstance(err, RotationError):
        return err.why
    prefix = f"{operation} failed: " if operation else ""
    if isinstance(err, CallTooSlow):
        return f"{prefix}AWS kept throttling or failing the call past its share of TIME_MARGIN_SECONDS ({err})"
    if operation in SECRET_CARRYING or not isinstance(err, BotoCoreError | CallTooSlow):
        return f"{prefix}{type(err).__name__}"  # its text may quote a parameter
    return f"{prefix}{type(err).__name__}: {err}"


def is_definite_refusal(err: BaseException) -> bool:
    """Did AWS answer that it will not do it (4xx, throttling), as opposed to a timeout or 5xx that may hide success?"""
    if not isinstance(err, ClientError):
        return False
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return isinstance(status, int) and 400 <= status < 500


@contextmanager
def aws_step(secret: str, operation: str, user: str | None = None) -> Iterator[None]:
    """Context: turn any AWS failure into RotationError(secret, "<operation> failed: ..."), chaining nothing.

    The one place where IAM's NoSuchEntity for ``user`` becomes "IAM user ... not found".
    """
    try:
        yield
    except RotationError:
        raise
    except Exception as err:
        if error_code(err) == "NoSuchEntity" and user is not None:
            raise RotationError(secret, f"IAM user {user!r} not found") from None
        raise RotationError(secret, describe_error(err, operation)) from None


NOT_JSON = object()  # what loads_or_none gives for text that is not JSON (JSON null is None)


def loads_or_none(text: str, invalid: Any = None) -> Any:
    """json.loads, or ``invalid``. The parser's error is not kept: its ``doc`` is the whole (secret) text, and an
    exception raised while handling it would chain it."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return invalid


def parse_value(secret: str, response: dict, what: str = "value") -> dict[str, Any]:
    """A secret version's JSON object, checked: it must name a user. The value itself is never quoted."""
    if "SecretString" not in response:
        raise RotationError(secret, f"binary secret ({what}); expected a JSON SecretString")
    value = loads_or_none(response["SecretString"], NOT_JSON)
    if value is NOT_JSON:
        raise RotationError(secret, f"{what} is not valid JSON (or is nested too deep)")
    if not isinstance(value, dict):
        kind = "null" if value is None else type(value).__name__
        raise RotationError(secret, f"{what} must be a JSON object, not {kind}")
    user_name = value.get("UserName")
    if user_name is None:
        near = [k for k in value if isinstance(k, str) and k.casefold() == "username"]
        hint = f" (found {near[0]!r}: the key is spelled 'UserName')" if near else ""
        raise RotationError(secret, f"'UserName' is missing or empty in the {what}{hint}")
    if not isinstance(user_name, str):
        raise RotationError(secret, f"'UserName' must be a string, not {type(user_name).__name__}")
    if not user_name.strip():
        raise RotationError(secret, f"'UserName' is missing or empty in the {what}")
    if not is_user_name(user_name):  # said without quoting it: it may be anything, a secret pasted there too
        raise RotationError(secret, f"'UserName' in the {what} is not an IAM user name (1 to 64 letters, digits and "
                                    "+=,.@_-); its value is not shown")
    held = value.get("AccessKeyId")
    if held is not None and not isinstance(held, str):
        raise RotationError(secret, "'AccessKeyId' must be a string")
    if held and not is_access_key_id(held):
        raise RotationError(secret, f"'AccessKeyId' in the {what} is not an access key id (AKIA and 16 capital "
                                    "letters or digits); its value is not shown (a SecretAccessKey in the wrong "
                                    "field?)")
    return value


def describe_secret(clients: Clients, secret_id: str) -> dict:
    """DescribeSecret: ARN, stages, rotation, tags. A consistent read (ListSecrets, which lags, is not used
    for these: an in-flight rotation must never be missed)."""
    try:
        return clients.secrets.describe_secret(SecretId=secret_id)
    except (BotoCoreError, CallTooSlow) as err:  # no answer (a timeout, a connection lost): this secret fails
        raise RotationError(secret_id, describe_error(err, "DescribeSecret")) from None
    except ClientError as err:
        if error_code(err) == "ResourceNotFoundException":
            raise RotationError(secret_id, "not found", code="ResourceNotFoundException") from None
        if error_code(err) == "AccessDeniedException":
            raise RotationError(secret_id, f"{describe_error(err)} (is the secret under the prefix the "
                                           "role's policy allows, e.g. iam-keys/?)") from None
        raise RotationError(secret_id, describe_error(err)) from None


def current_value(clients: Clients, secret_id: str, arn: str) -> dict:
    """GetSecretValue of the AWSCURRENT version."""
    with aws_step(secret_id, "GetSecretValue"):
        return clients.secrets.get_secret_value(SecretId=arn, VersionStage=CURRENT)


def record_of(secret_id: str, meta: dict, response: dict) -> SecretRecord:
    """A SecretRecord from DescribeSecret's answer and the current version's value (which must be the same
    secret's: one user's key is never written into another's secret)."""
    if response.get("ARN") not in (None, meta["ARN"]):
        raise RotationError(secret_id, "the value read is another secret's; not trusted, nothing changed")
    value = parse_value(secret_id, response)
    return SecretRecord(
        name=secret_id, arn=meta["ARN"], secret_name=meta.get("Name", secret_id), value=value,
        user_name=value["UserName"], held_key_id=value.get("AccessKeyId") or None,
        version_id=response.get("VersionId"), version_created=response.get("CreatedDate"),
        stages={v: list(s) for v, s in (meta.get("VersionIdsToStages") or {}).items()},
        rotation_enabled=bool(meta.get("RotationEnabled")), rotation_lambda_arn=meta.get("RotationLambdaARN"),
        tags={t["Key"]: t["Value"] for t in meta.get("Tags") or []},
        changed_at=meta.get("LastChangedDate") if isinstance(meta.get("LastChangedDate"), datetime) else None,
    )


BATCH_SIZE = 20  # BatchGetSecretValue's most secrets by id a call


def current_values(clients: Clients, arns: list[str]) -> dict[str, dict | str]:
    """The AWSCURRENT values of up to BATCH_SIZE secrets in one BatchGetSecretValue: ARN -> the value's
    answer, or why not (an error code, or the whole call's failure)."""
    try:
        answer = clients.secrets.batch_get_secret_value(SecretIdList=arns)
    except Exception as err:  # each secret of the batch fails with it; the other batches go on
        return dict.fromkeys(arns, describe_error(err, "BatchGetSecretValue"))
    asked = set(arns)
    found: dict[str, dict | str] = {}
    for value in answer.get("SecretValues", []):
        if value.get("ARN") not in asked:  # an answer to a question not asked: none of this batch's is trusted
            return dict.fromkeys(arns, "BatchGetSecretValue answered for a secret it was not asked for; not trusted")
        found[value["ARN"]] = value
    for error in answer.get("Errors", []):  # each fails its own secret only (SecretId: the ARN or the name)
        found[error.get("SecretId", "")] = f"BatchGetSecretValue failed: {error.get('ErrorCode', 'Unknown')}"
    return found


def read_version_value(clients: Clients, record: SecretRecord, stage: str) -> dict[str, Any] | None:
    """The value of the version with ``stage``, or None if there is none (or it has no value yet)."""
    version = record.version_with(stage)
    if version is None:
        return None
    try:
        response = clients.secrets.get_secret_value(SecretId=record.arn, VersionId=version, VersionStage=stage)
    except ClientError as err:
        if error_code(err) == "ResourceNotFoundException":
            return None
        raise RotationError(record.name, describe_error(err)) from None
    return parse_value(record.name, response, f"{stage} version")


USER_TAG = "key-rotation-secret"


def user_tags(clients: Clients, record: SecretRecord) -> dict[str, str]:
    """The user's tags: the authority (key-rotation-secret names the secret's ARN) and the function's evidence."""
    with aws_step(record.name, "ListUserTags", record.user_name):
        tags = clients.iam.list_user_tags(UserName=record.user_name)["Tags"]
    return {tag["Key"]: tag["Value"] for tag in tags}


def tag_user(clients: Clients, record: SecretRecord, key: str, value: str) -> None:
    """Write one of the function's evidence tags on the user (MADE_TAG, ADOPTED_TAG)."""
    with aws_step(record.name, "TagUser", record.user_name):
        clients.iam.tag_user(UserName=record.user_name, Tags=[{"Key": key, "Value": value}])


def user_tag_refusal(record: SecretRecord, named: str | None) -> str | None:
    """Why the secret may not act for its user (None: it may): the user must name it back, by full ARN.

    Whoever can write a secret could otherwise point UserName at an admin and
    receive that admin's new key. A name is not enough: it survives the secret
    being deleted and re-created by someone else; the ARN does not. The text
    names the tag and the ARNs, never a command that would grant (the README
    shows how to tag a user).
    """
    if named == record.arn:
        return None
    if named is None:
        return (f"refused: IAM user {record.user_name!r} has no tag {USER_TAG!r}; only the secret that tag names "
                f"(by ARN) may rotate the user's keys; this secret is {record.arn}")
    return (f"refused: IAM user {record.user_name!r} has tag {USER_TAG!r} naming secret {named}, not this secret "
            f"{record.arn}; only the secret the tag names may rotate the user's keys")


def list_keys(clients: Clients, record: SecretRecord) -> list[KeyState]:
    with aws_step(record.name, "ListAccessKeys", record.user_name):
        response = clients.iam.list_access_keys(UserName=record.user_name)
    return [KeyState(key_id=k["AccessKeyId"], status=k["Status"], created=k["CreateDate"])
            for k in response["AccessKeyMetadata"]]


def delete_key(clients: Clients, record: SecretRecord, key_id: str) -> None:
    """Delete an access key; one already gone counts as deleted."""
    try:
        clients.iam.delete_access_key(UserName=record.user_name, AccessKeyId=key_id)
    except ClientError as err:
        if error_code(err) != "NoSuchEntity":
            raise
    log_action("delete_key", secret=record.name, user=record.user_name, key_id=key_id)


def set_key_status(clients: Clients, record: SecretRecord, key_id: str, status: KeyStatus) -> None:
    """Deactivate (or re-activate) a key. A key deleted by hand meanwhile has reached any goal: not a failure."""
    try:
        clients.iam.update_access_key(UserName=record.user_name, AccessKeyId=key_id, Status=str(status))
    except ClientError as err:
        if error_code(err) != "NoSuchEntity" or status == KeyStatus.ACTIVE:
            raise
        log_action("key_already_gone", logging.WARNING, secret=record.name, user=record.user_name, key_id=key_id)
        return
    log_action("deactivate_key" if status == KeyStatus.INACTIVE else "activate_key",
               secret=record.name, user=record.user_name, key_id=key_id)


def remove_unknown_keys(clients: Clients, record: SecretRecord, existing: set[str]) -> str:
    """Delete keys that were not there before a failed CreateAccessKey; say truthfully what is left."""
    try:
        unknown = [k.key_id for k in list_keys(clients, record) if k.key_id not in existing]
    except Exception:
        return "could not list the keys again, so a key may have been made that nobody holds (the next run " \
               "deletes it); old key unchanged"
    for key_id in unknown:
        try:
            delete_key(clients, record, key_id)
        except Exception as err:
            return f"key {key_id} made by the failed call is still there ({describe_error(err, 'DeleteAccessKey')})" \
                   "; old key unchanged"
    return "old key unchanged"


def create_key(clients: Clients, record: SecretRecord, existing: set[str]) -> AccessKey:
    """Create a new access key. A retried call (from any layer) or an ambiguous failure removes any key an
    attempt made whose answer was lost; a definite refusal on the first attempt deletes nothing."""
    try:
        response = clients.iam.create_access_key(UserName=record.user_name)
    except Exception as err:
        answer = err.response if isinstance(err, ClientError) else {}
        retried = bool(answer.get("ResponseMetadata", {}).get("RetryAttempts"))
        if is_definite_refusal(err) and not retried:
            if error_code(err) == "LimitExceeded":
                # This call made no key, yet the user has no room: one appeared since the
                # listing (made by hand?). It is not ours to delete.
                raise RotationError(record.name, "CreateAccessKey refused: LimitExceeded: a key appeared since the "
                                                 "keys were listed (made by hand?); nothing deleted, old key "
                                                 "unchanged", made_nothing=True) from None
            raise RotationError(record.name, f"{describe_error(err, 'CreateAccessKey')}; old key unchanged",
                                made_nothing=True) from None
        # A timeout can hide a success, and a retried call's earlier attempt may have made a
        # key whose answer was lost: a key made so is one whose secret nobody will ever hold.
        with clients.budget.cleanup(CLEANUP_SECONDS):
            cleanup = remove_unknown_keys(clients, record, existing)
        raise RotationError(record.name, f"{describe_error(err, 'CreateAccessKey')}; {cleanup}") from None
    key = response["AccessKey"]
    new_key = AccessKey(key_id=key["AccessKeyId"], secret_access_key=key["SecretAccessKey"])
    log_action("create_key", secret=record.name, user=record.user_name, key_id=new_key.key_id)
    if response.get("ResponseMetadata", {}).get("RetryAttempts"):
        remove_unknown_keys(clients, record, existing | {new_key.key_id})
    return new_key


def secret_holds(clients: Clients, record: SecretRecord, key_id: str, version_id: str) -> bool | None:
    """Re-read the version we tried to write: does it hold key_id? None if that cannot be known."""
    try:
        response = clients.secrets.get_secret_value(SecretId=record.arn, VersionId=version_id)
        value = loads_or_none(response.get("SecretString", ""))
        return isinstance(value, dict) and value.get("AccessKeyId") == key_id
    except ClientError as err:
        return False if error_code(err) == "ResourceNotFoundException" else None
    except Exception:
        return None


def discard_key(clients: Clients, record: SecretRecord, key_id: str) -> str:
    """Delete a new key the secret does not hold; say what is left."""
    try:
        delete_key(clients, record, key_id)
    except Exception as err:
        log_action("discard_failed", logging.WARNING, secret=record.name, key_id=key_id,
                   error=describe_error(err, "DeleteAccessKey"))
        return (f"new key {key_id} is not in the secret and deleting it failed "
                f"({describe_error(err, 'DeleteAccessKey')}): it is still there, nobody holds it, the next run "
                "deletes it; old key unchanged")
    return "new key deleted, old key unchanged"


# The regions with an SES SMTP endpoint (email-smtp.REGION.amazonaws.com), from AWS's "Amazon Simple Email Service
# endpoints and quotas" page, SMTP endpoints (https://docs.aws.amazon.com/general/latest/gr/ses.html#ses_smtp_endpoints)
# and AWS's own SMTP-credentials example (its SMTP_REGIONS). A password derived for another region authenticates
# nowhere, so a tag naming one is refused with this list; add a region here when AWS's page adds it.
SES_SMTP_REGIONS = (
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "af-south-1", "ap-south-1", "ap-south-2", "ap-southeast-1",
    "ap-southeast-2", "ap-southeast-3", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ca-central-1",
    "eu-central-1", "eu-west-1", "eu-west-2", "eu-west-3", "eu-south-1", "eu-north-1", "il-central-1", "me-south-1",
    "sa-east-1", "us-gov-east-1", "us-gov-west-1",
)
SMTP_FIELDS = ("SmtpUsername", "SmtpPasswords")  # what a secret tagged key-rotation:smtp-regions holds besides the key


def smtp_password(secret_access_key: str, region: str) -> str:
    """The SES SMTP password of a secret access key for one region, by AWS's documented algorithm ("Obtaining
    Amazon SES SMTP credentials by converting existing AWS credentials"): a SigV4-style HMAC-SHA256 chain from
    "AWS4" + the secret key over the fixed date "11111111", the region, "ses", "aws4_request", then the message
    "SendRawEmail"; the version byte 0x04 before it; base64. Its value is a secret: never logged or returned."""
    signature = ("AWS4" + secret_access_key).encode()
    for part in ("11111111", region, "ses", "aws4_request", "SendRawEmail"):
        signature = hmac.new(signature, part.encode(), hashlib.sha256).digest()
    return base64.b64encode(b"\x04" + signature).decode()


def new_value(record: SecretRecord, new_key: AccessKey, smtp_regions: tuple[str, ...]) -> dict[str, Any]:
    """The secret's next value: its other fields as they are, the new key, and with ``smtp_regions`` (the tag
    key-rotation:smtp-regions) the key's SMTP user name and a password per region, so that one version holds a
    consistent pair. Without the tag, SMTP fields an earlier version held are dropped: they belong to the old
    key and would be stale."""
    value = {k: v for k, v in record.value.items() if k not in SMTP_FIELDS}
    value.update(AccessKeyId=new_key.key_id, SecretAccessKey=new_key.secret_access_key)
    if smtp_regions:
        value["SmtpUsername"] = new_key.key_id
        value["SmtpPasswords"] = {region: smtp_password(new_key.secret_access_key, region) for region in smtp_regions}
    return value


def store_key(clients: Clients, record: SecretRecord, new_key: AccessKey, token: str, pending: bool = False, *,
              smtp_regions: tuple[str, ...]) -> None:
    """Write the new key into the secret (with its SMTP passwords, ``new_value``): as its new AWSCURRENT version,
    or as AWSPENDING version ``token``.

    A definite refusal means nothing was written: the new key is deleted. An
    ambiguous failure (timeout, 5xx, retry budget) re-reads the secret first.
    """
    value = new_value(record, new_key, smtp_regions)
    version: dict[str, Any] = {"ClientRequestToken": token}
    if pending:
        version["VersionStages"] = [PENDING]
    problem = code = None
    try:
        clients.secrets.put_secret_value(SecretId=record.arn, SecretString=json.dumps(value), **version)
    except Exception as err:  # whatever went wrong, the new key must not be lost or left unheld
        problem, definite, code = describe_error(err, "PutSecretValue"), is_definite_refusal(err), error_code(err)
    del value  # the new secret leaves scope before anything below can raise
    if problem is not None:
        # Raised outside the except block: the error (which may echo the request) is not chained.
        with clients.budget.cleanup(CLEANUP_SECONDS):  # the clean-up's own short bound, inside the margin
            confirmed = False if definite else secret_holds(clients, record, new_key.key_id, token)
            discarded = discard_key(clients, record, new_key.key_id) if confirmed is False else None
        if confirmed:  # applied, but the answer was lost
            log_action("store_confirmed", logging.WARNING, secret=record.name, key_id=new_key.key_id, error=problem)
        elif confirmed is False:
            raise RotationError(record.name, f"{problem}; {discarded}", code=code)
        else:
            raise RotationError(record.name, f"{problem}; could not re-read the secret, so new key "
                                             f"{new_key.key_id} was left in place for the next run to settle")
    log_action("store_key", secret=record.name, user=record.user_name, key_id=new_key.key_id)


def retire_keys(clients: Clients, record: SecretRecord, deactivate: Iterable[str], delete: Iterable[str] = (),
                done: str = "new key stored") -> None:
    """Deactivate, then delete, old keys once the key the secret holds is stored and verified."""
    try:
        for key_id in deactivate:
            set_key_status(clients, record, key_id, KeyStatus.INACTIVE)
        for key_id in delete:
            delete_key(clients, record, key_id)
    except Exception as err:
        raise RotationError(record.name, f"{done}, but retiring the old key failed: "
                                         f"{describe_error(err)}; the next run finishes it") from None


def last_used(clients: Clients, record: SecretRecord, key_id: str) -> tuple[datetime | None, str]:
    """When, by which service and where a key was last used (IAM's data lags by hours)."""
    with aws_step(record.name, "GetAccessKeyLastUsed"):
        used = clients.iam.get_access_key_last_used(AccessKeyId=key_id).get("AccessKeyLastUsed", {})
    when = used.get("LastUsedDate")
    where = f"{used.get('ServiceName', 'N/A')} in {used.get('Region', 'N/A')}"
    return when, where


# IAM is eventually consistent: a new key is refused like this for a few seconds.
NOT_YET_VALID = {"InvalidClientTokenId", "SignatureDoesNotMatch", "AuthFailure", "UnrecognizedClientException"}


class Verdict(StrEnum):
    OK = "ok"
    NOT_YET = "not yet"
    FAILED = "failed"


@dataclass
class Check:
    """A key to authenticate as its secret's user before anything older is retired."""

    record: SecretRecord
    key: AccessKey


def try_key(clients: Clients, check: Check) -> tuple[Verdict, str]:
    """Ask STS once who the key is."""
    record, key = check.record, check.key
    try:
        arn = clients.identity.caller_identity(key).get("Arn")
    except (ClientError, BotoCoreError) as err:
        if isinstance(err, ClientError) and error_code(err) not in NOT_YET_VALID | THROTTLING:
            return Verdict.FAILED, f"key {key.key_id} did not authenticate: {describe_error(err, 'GetCallerIdentity')}"
        return Verdict.NOT_YET, describe_error(err, "GetCallerIdentity")
    partition, account = record.partition_and_account
    if not isinstance(arn, str) or not arn_is_user(arn, record.user_name, partition, account):
        return Verdict.FAILED, (f"key {key.key_id} authenticates as {arn!r}, not as user {record.user_name!r} "
                                f"of account {account}")
    log_action("verify_key", secret=record.name, user=record.user_name, key_id=key.key_id)
    return Verdict.OK, ""


def safe_try_key(clients: Clients, check: Check) -> tuple[Verdict, str]:
    """try_key, with any surprise (an odd answer, a bug) a failure of that key alone."""
    try:
        return try_key(clients, check)
    except Exception as err:
        return Verdict.FAILED, f"verifying key {check.key.key_id}: {describe_error(err, 'GetCallerIdentity')}"


def verify_keys(clients: Clients, checks: list[Check], timeout: float, clock: Clock,
                map_: Callable = map, once: bool = False) -> dict[str, str]:
    """The one way a key is verified: wait until every key authenticates as its user; return why, by secret, for
    those that did not.

    All keys wait out IAM's propagation delay together (tried with ``map_``,
    e.g. a thread pool's), backing off 1, 2, 4, 8, 8... seconds until
    ``timeout`` is used up. A timeout of 0 skips verification. With ``once``,
    one attempt each and no wait, whatever the timeout: for an old key, which
    has no propagation to wait out.
    """
    problems: dict[str, str] = {}
    if timeout <= 0 and not once:
        return problems
    pending, deadline, delay = list(checks), clock.monotonic() + timeout, 1.0
    while pending:
        waiting = []
        for check, (verdict, why) in zip(pending, list(map_(lambda c: safe_try_key(clients, c), pending)),
                                         strict=True):
            if verdict == Verdict.FAILED:
                problems[check.record.name] = why
            elif verdict == Verdict.NOT_YET:
                waiting.append((check, why))
        pending = [check for check, _ in waiting]
        delay = None if once or not pending else back_off(clock, deadline, delay)
        if pending and delay is None:
            for check, why in waiting:
                problems[check.record.name] = why if once else (f"key {check.key.key_id} did not authenticate "
                                                                f"within {timeout:g}s ({why})")
            break
    return problems


def verify_one(clients: Clients, check: Check, settings: Settings, clock: Clock) -> None:
    problems = verify_keys(clients, [check], settings.verify_timeout, clock)
    if problems:
        raise RotationError(check.record.name, problems[check.record.name])


def held_key(record: SecretRecord, value: dict[str, Any] | None = None) -> AccessKey | None:
    """The key and secret a version's value holds, if it holds both."""
    value = record.value if value is None else value
    key_id, secret_key = value.get("AccessKeyId"), value.get("SecretAccessKey")
    return AccessKey(key_id, secret_key) if isinstance(key_id, str) and isinstance(secret_key, str) else None


def failure(secret: str, err: BaseException) -> Outcome:
    """A failed Outcome. Unexpected errors are logged with their traceback (no secret is in scope here)."""
    if isinstance(err, RotationError):
        reason = str(err)
        if err.stored_key_id:
            log_action("failed", logging.ERROR, secret=secret, reason=reason)
            return Outcome(secret=secret, status=Status.FAILED, reasons=[reason], new_key_id=err.stored_key_id)
    elif isinstance(err, ClientError | BotoCoreError | CallTooSlow):
        reason = str(RotationError(secret, describe_error(err)))
    else:
        reason = str(RotationError(secret, f"unexpected {type(err).__name__}"))
        logger.error(json.dumps({"action": "unexpected_error", "secret": secret}), exc_info=err)
    log_action("failed", logging.ERROR, secret=secret, reason=reason)
    return Outcome(secret=secret, status=Status.FAILED, reasons=[reason])


def isolated(secret_of: Callable[[Any], str], step: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """One pass's step for one item: Outcomes pass through; any exception becomes that secret's failure."""
    def run(item: Any) -> Any:
        if isinstance(item, Outcome):
            return item
        try:
            return step(item)
        except Exception as err:  # one secret's surprise must not stop the others
            return failure(secret_of(item), err)
    return run


def name_of(item: Any) -> str:
    """The secret an item of a pass is about, as the caller named it."""
    if isinstance(item, str):
        return item
    return item.record.name if hasattr(item, "record") else item.name


def described(clients: Clients, secret_id: str, listed: frozenset[str]) -> tuple[str, dict] | Outcome:
    """DescribeSecret of a secret to read. One only ListSecrets found (``listed``: neither sec nor the event names
    it) that DescribeSecret shows gone or scheduled for deletion was deleted since ListSecrets listed it (its list
    lags up to five minutes): skipped, not a failure. A secret named explicitly and not found fails."""
    try:
        meta = describe_secret(clients, secret_id)
    except RotationError as err:
        if secret_id not in listed or err.code != "ResourceNotFoundException":
            raise
        meta = {}
    if secret_id in listed and (not meta or meta.get("DeletedDate")):
        reason = (f"{'scheduled for deletion' if meta else 'not found'}: deleted since ListSecrets listed it (its "
                  "list lags up to five minutes); nothing to do")
        log_action("skip", secret=secret_id, reason=reason)
        return Outcome(secret=secret_id, status=Status.SKIPPED, reasons=[reason])
    return secret_id, meta


def read_secrets(clients: Clients, secret_ids: list[str], map_: Callable,
                 listed: frozenset[str] = frozenset()) -> list[SecretRecord | Outcome]:
    """Read many secrets: DescribeSecret each, then their values 20 a call (a secret the batch's answer
    leaves out, one GetSecretValue of its own). Of ``listed``, those deleted since ListSecrets listed them are
    skipped (``described``)."""
    metas = list(map_(isolated(name_of, lambda s: described(clients, s, listed)), secret_ids))
    arns = list(dict.fromkeys(m[1]["ARN"] for m in metas if not isinstance(m, Outcome)))
    values: dict[str, dict | str] = {}
    for found in map_(lambda i: current_values(clients, arns[i:i + BATCH_SIZE]), range(0, len(arns), BATCH_SIZE)):
        values.update(found)

    def record(item: tuple[str, dict]) -> SecretRecord:
        secret_id, meta = item
        answer = values.get(meta["ARN"], values.get(meta.get("Name", "")))
        if isinstance(answer, str):
            raise RotationError(secret_id, answer)
        if answer and answer.get("Name") not in (None, meta.get("Name")):
            raise RotationError(secret_id, f"BatchGetSecretValue answered with secret {answer.get('Name')!r} for "
                                           f"{meta.get('Name')!r}; not trusted, nothing changed")
        current = next((v for v, labels in (meta.get("VersionIdsToStages") or {}).items() if CURRENT in labels), None)
        if not answer or answer.get("VersionId") != current:
            # Left out of the batch, or not the version DescribeSecret saw as AWSCURRENT (written in between,
            # or a reader that does not follow staging labels): read the AWSCURRENT label itself.
            answer = current_value(clients, secret_id, meta["ARN"])
        return record_of(secret_id, meta, answer)

    return list(map_(isolated(lambda item: item[0], record), metas))


def time_left(context: Any) -> float | None:
    """Seconds left before Lambda stops the function, if the context says (a number)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    millis = remaining() if callable(remaining) else None
    return millis / 1000 if isinstance(millis, int | float) and not isinstance(millis, bool) else None


def same_user(record: SecretRecord, value: Mapping[str, Any]) -> bool:
    """Does a version's value name the secret's own user? (IAM user names are unique regardless of case.)"""
    return str(value.get("UserName")).casefold() == record.user_name.casefold()


def key_held_at(clients: Clients, record: SecretRecord, stage: str) -> str | None:
    """The key id the version with ``stage`` holds, for the same user."""
    value = read_version_value(clients, record, stage)
    return (value.get("AccessKeyId") or None) if value and same_user(record, value) else None


def move_current(run: Run, record: SecretRecord, version: str, current: str | None) -> None:
    """Move AWSCURRENT to ``version`` (Secrets Manager moves AWSPREVIOUS with it)."""
    with aws_step(record.name, "UpdateSecretVersionStage"):
        run.clients.secrets.update_secret_version_stage(SecretId=record.arn, VersionStage=CURRENT,
                                                        MoveToVersionId=version, RemoveFromVersionId=current)


# ---------------------------------------------------------------------------
# 6. Authority, holders and the guard
# ---------------------------------------------------------------------------


TAG_MODE = "key-rotation:mode"
TAG_ROTATE_AFTER = "key-rotation:rotate-after-days"
TAG_GRACE = "key-rotation:grace-hours"
TAG_MODES = ("rotate", "dry-run", "skip")
TAG_SMTP_REGIONS = "key-rotation:smtp-regions"  # adds fields: the new key's SES SMTP passwords, for these regions


@dataclass(frozen=True)
class SecretSettings:
    """The run's settings for one secret, after the secret's own tags (which may narrow, not widen)."""

    mode: str
    dry_run: bool
    rotate_after_days: float
    grace_hours: float
    smtp_regions: tuple[str, ...] = ()  # the key-rotation:smtp-regions tag: SES SMTP passwords kept with the key


def tagged_smtp_regions(record: SecretRecord) -> tuple[str, ...]:
    """The regions the secret's key-rotation:smtp-regions tag names (separated by spaces), checked: each one of
    SES_SMTP_REGIONS, or this secret fails before anything is made, naming the tag and the list."""
    if TAG_SMTP_REGIONS not in record.tags:
        return ()
    raw = record.tags[TAG_SMTP_REGIONS]
    regions = tuple(dict.fromkeys(raw.split()))
    unknown = [repr(r[:40]) for r in regions if r not in SES_SMTP_REGIONS]  # a tag's words, shown short
    if unknown or not regions:
        what = f"names {', '.join(unknown[:5])}, not" if unknown else "names no region; it takes"
        raise RotationError(record.name, f"tag {TAG_SMTP_REGIONS} {what} SES SMTP regions (separated by spaces): "
                                         f"{' '.join(SES_SMTP_REGIONS)}; nothing changed")
    return regions


def secret_settings(record: SecretRecord, settings: Settings) -> SecretSettings:
    """The effective settings for one secret: the environment (already narrowed by the event), narrowed by the
    secret's key-rotation:* tags. Tags only narrow: a hold (skip, dry-run) holds, and rotate-after-days and
    grace-hours may raise the run's values, never lower them (a lower tag is ignored). A bad value fails this
    secret, naming the tag. The one place every entry point takes a secret's settings from."""
    tags = record.tags
    mode = tags.get(TAG_MODE, "rotate").strip().lower()
    if mode not in TAG_MODES:
        raise RotationError(record.name, f"tag {TAG_MODE}={tags[TAG_MODE]!r} is not understood; use one of "
                                         f"{', '.join(TAG_MODES)}")
    if mode == "skip":  # a hold binds whatever the other tags say: nothing of this secret is read further
        return SecretSettings(mode=mode, dry_run=True, rotate_after_days=settings.rotate_after_days,
                              grace_hours=settings.grace_hours)
    try:
        rotate_after = env_number(tags, TAG_ROTATE_AFTER, settings.rotate_after_days, 0, 3650)
        grace = env_number(tags, TAG_GRACE, settings.grace_hours, 0, settings.max_grace_hours)
    except ConfigError as err:
        raise RotationError(record.name, str(err).replace("setting ", "tag ", 1)) from None
    return SecretSettings(mode=mode, dry_run=settings.dry_run or mode == "dry-run",
                          rotate_after_days=max(rotate_after, settings.rotate_after_days),
                          grace_hours=max(grace, settings.grace_hours), smtp_regions=tagged_smtp_regions(record))


def previous_key(run: Run, record: SecretRecord, keys: list[KeyState]) -> str | None:
    """The key AWSPREVIOUS holds, read only when some key besides the current one is Active."""
    if any(k.active and k.key_id != record.held_key_id for k in keys):
        return run.held_at(record, PREVIOUS)
    return None


@dataclass
class Run:
    """What one invocation shares across its secrets, in either mode: settings, clients, clock, who holds and
    may act for which user, what it concluded of each secret (``found``), and the reads it makes once (a key's
    last use, a version's key)."""

    settings: Settings
    clients: Clients
    clock: Clock
    context: Any = None
    by_user: dict[str, list[SecretRecord]] = field(default_factory=dict)  # casefolded user -> every secret read
    claimed: dict[str, str] = field(default_factory=dict)  # casefolded user -> the secret rotating it
    arns: dict[str, str] = field(default_factory=dict)  # secret ARN -> secret as listed
    user_tags: dict[str, dict[str, str]] = field(default_factory=dict)  # casefolded user -> its tags
    brought_forward: dict[str, tuple[float, float]] = field(default_factory=dict)  # secret -> (asked, due) days
    acted_failures: list[str] = field(default_factory=list)  # reasons of rotations that acted and failed
    exposed: dict[str, set[str]] = field(default_factory=dict)  # casefolded user -> its leaked keys this run answers
    exposures: dict[str, str] = field(default_factory=dict)  # leaked key -> the secret (ARN) that answers it
    found: dict[str, Found] = field(default_factory=dict)  # secret (as named) -> what the run concluded of it
    usage: dict[str, tuple[datetime | None, str]] = field(default_factory=dict)  # key -> last use, asked once
    version_keys: dict[tuple[str, str], str | None] = field(default_factory=dict)  # (secret, stage) -> key id
    lock: threading.Lock = field(default_factory=threading.Lock)

    def conclude(self, record: SecretRecord, **parts: Any) -> Found:
        """Record a pass's conclusion of this secret (authorised; and its settings, keys or holders) as a new
        ``Found``: the record stays as read, and what each pass concluded is read from here."""
        with self.lock:
            found = self.found[record.name] = replace(self.found.get(record.name, Found()), **parts)
        return found

    def count_failure(self, reason: str) -> None:
        with self.lock:
            self.acted_failures.append(reason)

    def stopped(self) -> str | None:
        """Why no new rotation may start (MAX_FAILURES reached), or None."""
        limit = self.settings.max_failures
        with self.lock:
            if limit <= 0 or len(self.acted_failures) < limit:
                return None
            first = "; ".join(self.acted_failures[:3])
        return (f"not attempted: MAX_FAILURES={limit} rotations failed after acting, so no new rotation starts "
                f"(a fault of the account, not of one secret?); the first: {first}")

    def add_holders(self, records: Iterable[Any]) -> None:
        for record in records:
            if isinstance(record, SecretRecord):
                self.by_user.setdefault(record.user_name.casefold(), []).append(record)

    def refusal(self, record: SecretRecord) -> str | None:
        """Authority: why this secret may neither act for its user nor hold the user's keys (None: it may).

        With the user-tag guard on, only the secret the user's key-rotation-secret tag names counts for the
        user. The tag is read once per user per invocation.
        """
        if not self.settings.require_user_tag:
            return None
        return user_tag_refusal(record, self.tags(record).get(USER_TAG))

    def tags(self, record: SecretRecord) -> dict[str, str]:
        """The user's tags, read once per user per invocation."""
        user = record.user_name.casefold()
        if user not in self.user_tags:
            self.user_tags[user] = user_tags(self.clients, record)
        return self.user_tags[user]

    def keys_of(self, record: SecretRecord) -> tuple[KeyState, ...]:
        """The user's keys as this run's assessment of the secret listed them (none before it)."""
        found = self.found.get(record.name)
        return found.keys if found is not None and found.keys is not None else ()

    def effective(self, record: SecretRecord) -> SecretSettings | None:
        """The secret's effective settings, as the guard concluded them (None: not guarded, or refused)."""
        found = self.found.get(record.name)
        return found.effective if found is not None else None

    def held_back(self, record: SecretRecord) -> bool:
        """Did the guard find this secret under a dry run (DRY_RUN, its dry-run tag)? (False: not guarded.)"""
        own = self.effective(record)
        return own is not None and own.dry_run

    def used(self, record: SecretRecord, key_id: str) -> tuple[datetime | None, str]:
        """When and where IAM shows a key last used, asked once per key per invocation."""
        if key_id not in self.usage:
            self.usage[key_id] = last_used(self.clients, record, key_id)
        return self.usage[key_id]

    def held_at(self, record: SecretRecord, stage: str) -> str | None:
        """The key id the version with ``stage`` holds, for the same user, read once per invocation."""
        if (record.name, stage) not in self.version_keys:
            self.version_keys[record.name, stage] = key_held_at(self.clients, record, stage)
        return self.version_keys[record.name, stage]

    def may_hold(self, record: SecretRecord) -> bool:
        """Does this (other) secret's versions count as holding its user's keys?"""
        try:
            return self.refusal(record) is None
        except RotationError:  # its user cannot be read: it authorises nothing
            return False

    def others_holding(self, record: SecretRecord, keys: list[KeyState]) -> dict[str, str]:
        """Keys that other authorised secrets hold for the same user: key id -> secret."""
        others = [r for r in self.by_user.get(record.user_name.casefold(), [])
                  if r.arn != record.arn and self.may_hold(r)]
        held: dict[str, str] = {}
        for other in others:
            if other.held_key_id:
                held[other.held_key_id] = other.name
        present = {k.key_id for k in keys if k.key_id not in held and k.key_id != record.held_key_id}
        for other in others:  # their other versions, only if some key is otherwise unexplained
            for stage in (PREVIOUS, PENDING):
                if present and other.version_with(stage):
                    key_id = self.held_at(other, stage)
                    if key_id in present:
                        held[key_id] = other.name
        return held

    def holders(self, record: SecretRecord, keys: list[KeyState], current: str | None = None) -> Holders:
        """Who holds, or uses, each of the user's keys: the one definition every entry point plans with.

        ``current`` stands for the key AWSCURRENT held before a rotation moved it (finishSecret's retry).
        """
        current = record.held_key_id if current is None else current
        others = self.others_holding(record, keys)
        ours = frozenset(k for k in (previous_key(self, record, keys),
                                     self.held_at(record, PENDING) if record.version_with(PENDING)
                                     else None) if k and k != current)
        held = {current, *ours, *others}
        leaked = self.exposed.get(record.user_name.casefold(), set())  # evidence: never anyone's lost key
        unused = [find_key(keys, k) for k in made_candidates(keys, held, self.tags(record).get(MADE_TAG),
                                                             record.stages)
                  if k not in leaked and self.used(record, k)[0] is None]
        proof = {k.key_id: k.created + LOST_KEY_WAIT for k in unused}  # unused a day, as IAM shows it 4 h late
        lost = frozenset(k for k, when in proof.items() if when <= self.clock.now())
        unproven = {k: iso(when) for k, when in proof.items() if k not in lost}
        adopted, since, new = self.adopted(record, keys, held | lost | set(unproven))
        made_at, _, replaced, token = parse_marker(self.tags(record).get(MADE_TAG))
        # the old key of a create this secret stored, within that create's usage gate
        stored = token in record.stages and made_at is not None \
            and self.clock.now() - made_at < timedelta(hours=self.settings.max_grace_hours)
        return Holders(current=current, ours=ours, others=others, lost=lost, unproven=unproven, adopted=adopted,
                       retiring=frozenset({replaced} & set(adopted)) if stored else frozenset(),
                       adopted_since=since, adopted_new=new)

    def adopted(self, record: SecretRecord, keys: list[KeyState],
                held: set[str | None]) -> tuple[dict[str, str], dict[str, datetime], frozenset[str]]:
        """Active keys no secret holds that are someone's in use: used within MAX_GRACE_HOURS, younger than that,
        adopted by an earlier run (the user's key-rotation-adopted tag), turned on again after its adoption was
        over (the tag's KEY@off), or an old key of the function's last create (the key-rotation-made mark names
        it current=) that a re-save left unheld. Key id -> its last use, least recently used first; then since
        when each is adopted (the first run that adopted it, or that create, whichever is earlier; a key turned on
        again, now), and those this run adopts."""
        now, window = self.clock.now(), timedelta(hours=self.settings.max_grace_hours)
        tag = self.tags(record).get(ADOPTED_TAG)
        named, again = parse_adopted(tag), parse_retired(tag)
        made_at, _, replaced, _ = parse_marker(self.tags(record).get(MADE_TAG))
        found, since_when, new = [], {}, set()
        for key in keys:
            if not key.active or key.key_id in held:
                continue
            when, where = self.used(record, key.key_id)
            retiring = made_at is not None and key.key_id == replaced  # the last create's old key, unheld by a write
            if key.key_id in again or key.key_id in named or retiring or now - key.created < window \
                    or (when and now - when < window):
                since = made_at if retiring and key.key_id not in again else now
                since_when[key.key_id] = since if key.key_id in again else min(named.get(key.key_id, now), since, now)
                if key.key_id not in named:  # its adoption is this run's: its owner hears of it now
                    new.add(key.key_id)
                used = f"{iso(when)} by {where}" if when else f"never; made {iso(key.created)}"
                found.append((when is not None, when or key.created, key.key_id, used))  # never used sorts first
        return {key_id: used for _, _, key_id, used in sorted(found)}, since_when, frozenset(new)


class Hold(Exception):
    """The secret is not to be acted on (a skip tag, or Secrets Manager rotates it): the batch reports it
    skipped; a rotation step refuses."""


class Entry(StrEnum):
    """The entry points. Every one passes ``guard`` before it touches a key."""

    BATCH = "batch"  # the daily schedule, the console, a targeted run, force
    ROLLBACK = "rollback"
    STEP = "step"  # a Secrets Manager rotation step (its metadata checks come first, in ``step_guard``)


def guard(run: Run, record: SecretRecord, entry: Entry) -> SecretSettings:
    """The one guard, in one order: metadata (rotation state, stages), authority, effective settings.

    Raises RotationError (refused: a failure) or Hold (leave it alone). Nothing has been touched yet.
    """
    if entry != Entry.STEP:
        if record.rotation_enabled:
            raise Hold("Secrets Manager rotation is enabled on this secret: its own rotation rotates it")
        if record.pending_in_flight:
            raise RotationError(record.name, f"version {record.pending_in_flight} is staged AWSPENDING but the "
                                             "secret's rotation is not enabled, so no rotation will finish it; "
                                             "clear it with: aws secretsmanager update-secret-version-stage "
                                             f"--secret-id {record.arn} --version-stage AWSPENDING "
                                             f"--remove-from-version-id {record.pending_in_flight}")
    why = run.refusal(record)
    if why:
        raise RotationError(record.name, why)
    run.conclude(record)  # authorised: its keys may be read and reported, even if one of its tags is refused
    own = run.conclude(record, effective=secret_settings(record, run.settings)).effective
    if own.mode == "skip":
        raise Hold(f"tag {TAG_MODE}=skip")
    return own


MAX_LIST_PAGES = 1000  # 100,000 secrets: far past any fleet; a service repeating itself is not paged for ever


def list_prefix(clients: Clients, prefix: str) -> list[str]:
    """Every secret (not scheduled for deletion) whose name starts with prefix, by name."""
    names, token, seen = [], None, set()
    for _ in range(MAX_LIST_PAGES):
        page = clients.secrets.list_secrets(Filters=[{"Key": "name", "Values": [prefix]}], MaxResults=100,
                                            **({"NextToken": token} if token else {}))
        names += [s["Name"] for s in page.get("SecretList", [])
                  if s["Name"].startswith(prefix) and not s.get("DeletedDate")]
        token = page.get("NextToken")
        if not token:
            return sorted(set(names))
        if token in seen:
            raise ConfigError(f"setting sec: listing secrets with prefix {prefix!r}: ListSecrets repeated a "
                              "NextToken; stopped rather than page for ever")
        seen.add(token)
    raise ConfigError(f"setting sec: listing secrets with prefix {prefix!r} went past {MAX_LIST_PAGES} pages")


def resolve_secret_ids(settings: Settings, clients: Clients,
                       wanted: tuple[str, ...] | None) -> tuple[list[str], frozenset[str]]:
    """sec's explicit entries as listed, then secrets found by its prefixes, by name; narrowed by ``wanted``.
    Apart, those of them only ListSecrets found (neither sec nor the event names them): its list lags."""
    if not settings.secret_ids:
        raise ConfigError("setting 'sec' is unset or empty: name the secrets to rotate, separated by ';' "
                          "(a name ending in '*' selects a prefix)")
    explicit = [s for s in settings.secret_ids if not s.endswith("*")]
    prefixes = [s[:-1] for s in settings.secret_ids if s.endswith("*")]
    if wanted is not None:
        outside = [w for w in wanted if w not in explicit and not any(w.startswith(p) for p in prefixes)]
        if outside:
            raise ConfigError(f"the event names secrets that 'sec' does not select: {outside}; an event cannot "
                              "widen what the function may touch")
        return list(wanted), frozenset()
    found: list[str] = []
    for prefix in prefixes:
        try:
            found += list_prefix(clients, prefix)
        except ClientError as err:
            raise ConfigError(f"setting sec: listing secrets with prefix {prefix!r} failed: "
                              f"{describe_error(err)}") from None
    listed = sorted(set(found) - set(explicit))
    return list(dict.fromkeys(explicit + listed)), frozenset(listed)


def holder_ids(settings: Settings, clients: Clients, acting: list[str]) -> list[str]:
    """The secrets ``sec`` selects besides those acting, read only as holders of their users' keys.

    With the user-tag guard on no other secret can hold a user's keys (only the one the tag names counts),
    so none is read.
    """
    if settings.require_user_tag or not settings.secret_ids:
        return []
    return [s for s in resolve_secret_ids(settings, clients, None)[0] if s not in acting]


def skipped(record: SecretRecord, reason: str) -> Outcome:
    log_action("skip", secret=record.name, user=record.user_name, reason=reason)
    return Outcome(secret=record.name, status=Status.SKIPPED, user=record.user_name, reasons=[reason])


def decide(run: Run, record: SecretRecord) -> SecretRecord | Outcome:
    """Second pass, in order: the guard; then the first authorised secret naming a user gets it."""
    if record.arn in run.arns:
        return skipped(record, f"same secret as {run.arns[record.arn]!r}")
    run.arns[record.arn] = record.name
    try:
        guard(run, record, Entry.BATCH)
    except Hold as hold:
        return skipped(record, str(hold))
    user = record.user_name.casefold()  # IAM user names are unique regardless of case
    if user in run.claimed:
        raise RotationError(record.name, f"IAM user {record.user_name!r} is also named by secret "
                                         f"{run.claimed[user]!r}; a user is rotated once per run")
    run.claimed[user] = record.name
    return record


def already_rotated(record: SecretRecord, settings: Settings, token: str) -> bool:
    """Did this scheduled event already rotate the secret (a redelivery)?

    Either a version of the secret is the one this event writes, or this
    function wrote the current version at or after the event's time. A version
    someone else wrote (a new secret) does not count.
    """
    if settings.event_id and token in record.stages:
        return True
    return (settings.event_time is not None and record.version_created is not None
            and (record.version_id or "").startswith(VERSION_PREFIX)
            and record.version_created >= settings.event_time)


# ---------------------------------------------------------------------------
# 7. Settling: the usage gate
# ---------------------------------------------------------------------------


def adopted_until(adopted_at: datetime, max_grace_hours: float) -> datetime:
    """An adopted key stays Active until MAX_GRACE_HOURS (at least a day) after the run that first adopted it."""
    return adopted_at + timedelta(hours=max(max_grace_hours, ADOPTED_MIN_WAIT_HOURS))


def adopted_retirement(now: datetime, adopted_at: datetime, last_seen: datetime, max_grace_hours: float) -> Retire:
    """The usage gate of an adopted key (someone's key in use that no secret holds), counted from the run that
    first adopted it (the user's key-rotation-adopted tag: IAM's, not the secret writer's): kept Active until
    ``adopted_until``, never retired in the run that adopts it; then deactivated, quietly if IAM shows it unused
    for MAX_GRACE_HOURS (``last_seen``: its last use, or its creation), loudly if not."""
    if not reached(now, adopted_until(adopted_at, max_grace_hours)):
        return Retire.WAIT_GRACE
    if reached(now, last_seen + timedelta(hours=max_grace_hours)):
        return Retire.RETIRE
    return Retire.PAST_MAX_GRACE


def store_time(record: SecretRecord, keys: Iterable[KeyState], now: datetime) -> datetime:
    """When the key the secret holds was made: IAM's creation date, which a writer of the secret cannot move
    (a version's date moves with every write). The grace period, the usage gate and the rollback window count
    from it. Unknown (the key is gone): now."""
    key = find_key(keys, record.held_key_id)
    return key.created if key is not None else now


def lost_reason(lost: Iterable[str]) -> str | None:
    lost = sorted(lost)
    if not lost:
        return None
    return (f"deleted {', '.join(lost)}: made by this function, never stored (its secret was only in a lost "
            "answer) and never used")


def delete_lost(run: Run, record: SecretRecord, lost: Iterable[str]) -> None:
    """Delete the function's own unstored keys (held by no secret, never used: nobody can use them)."""
    for key_id in sorted(lost):
        with aws_step(record.name, "DeleteAccessKey", record.user_name):
            delete_key(run.clients, record, key_id)
        log_action("lost_key_deleted", logging.WARNING, secret=record.name, user=record.user_name, key_id=key_id)


def record_adoptions(run: Run, record: SecretRecord, found: Found, retired: frozenset[str] = frozenset()) -> None:
    """Keep the user's ADOPTED_TAG true to the present: the keys the assessment adopted (``found``, less those
    just ``retired``), each with when it was first adopted, so its usage gate counts from then in later runs; a
    once adopted key that still exists but is not Active, as KEY@off: Active again one day, it is a key someone
    turned on, a new adoption with a gate of its own, never one that ran out long ago (nor one whose use IAM
    does not show yet). A deleted key leaves the tag. Written only when it changes. A failure is logged, not
    fatal: a key then stays Active longer, never shorter."""
    tag = run.tags(record).get(ADOPTED_TAG)
    since = found.holders.adopted_since if found.holders is not None else {}
    adopted = {k: v for k, v in since.items() if k not in retired}
    was = set(parse_adopted(tag)) | parse_retired(tag) | retired
    over = {k.key_id for k in found.keys or () if k.key_id in was and not k.active} | retired
    value = format_adopted(adopted, over)
    if value == format_adopted(parse_adopted(tag), parse_retired(tag)):
        return
    try:
        tag_user(run.clients, record, ADOPTED_TAG, value)
    except RotationError as err:
        log_action("adoption_not_recorded", logging.WARNING, secret=record.name, user=record.user_name,
                   error=err.why)
        return
    run.tags(record)[ADOPTED_TAG] = value


def settle_decision(run: Run, item: Settling) -> tuple[Retire, str, str]:
    """The usage gate's decision for a Settling, and the time it waits until and the last use it read. A previous
    key counts from the store (the current key's creation, ``store_time``); an adopted one from its adoption."""
    record, previous, now = item.record, item.previous_key_id, run.clock.now()
    max_grace = run.settings.max_grace_hours
    if item.at_once:  # the entry point's policy (a leak's): no grace period, no usage gate
        return Retire.RETIRE, iso(now), "retired at once"
    if item.adopted is not None:
        until = iso(adopted_until(item.adopted, max_grace))
        if not reached(now, adopted_until(item.adopted, max_grace)) and not item.at_deadline:
            return Retire.WAIT_GRACE, until, ""
        when, where = run.used(record, previous)
        key = find_key(run.keys_of(record), previous)
        last_seen = when or (key.created if key is not None else now)
        decision = adopted_retirement(now, item.adopted, last_seen, max_grace)
        if item.at_deadline:  # retired now: quietly if unused for MAX_GRACE_HOURS, else loudly
            unused = reached(now, last_seen + timedelta(hours=max_grace))
            decision = Retire.RETIRE if unused else Retire.DEADLINE
        return decision, until, f"last used {iso(when)} by {where}" if when else "never used"
    # The store: the current key's creation, or the previous key's if later (a writer who put an older key back
    # by hand does not make the previous key's clock start long ago).
    keys = run.keys_of(record)
    previous_key, stored_at = find_key(keys, previous), store_time(record, keys, now)
    stored_at = max(stored_at, previous_key.created if previous_key else stored_at)
    hours = item.effective.grace_hours
    until = iso(stored_at + timedelta(hours=hours))
    decision = retirement(now, stored_at, False, hours, max_grace)
    if decision != Retire.CHECK_USE:  # the grace period is a promise to consumers: the deadline waits for it too
        return decision, until, ""
    when, where = run.used(record, previous)
    decision = retirement(now, stored_at, when, hours, max_grace)
    if decision in (Retire.WAIT_USE, Retire.PAST_MAX_GRACE) and previous_key is not None \
            and past_deadline(previous_key.created, now, run.settings.max_key_age_days):
        decision = Retire.DEADLINE
    return decision, until, f"last used {iso(when)} by {where}" if when else "never used"


def settle(run: Run, item: Settling, problems: dict[str, str]) -> Outcome:
    """The usage gate: retire a previous (or adopted) key still Active once the current key has authenticated,
    as ``settle_decision`` says (at MAX_GRACE_HOURS, loudly, regardless)."""
    record, previous, own = item.record, item.previous_key_id, item.effective
    adopted = item.adopted is not None
    base = Outcome(secret=record.name, status=Status.WAITING, user=record.user_name, old_key_id=previous,
                   new_key_id=record.held_key_id, adopted=previous if adopted else None,
                   retired_keys=sorted(item.lost))
    if held_key(record) is None:
        raise RotationError(record.name, f"AWSCURRENT holds no usable key; previous key {previous} kept Active")
    if record.name in problems:
        raise RotationError(record.name, f"the key the secret holds, {problems[record.name]}; previous key "
                                         f"{previous} kept Active (roll back with {{\"rollback\": "
                                         f"[\"{record.name}\"]}} if the new key is bad)")
    decision, until, where = settle_decision(run, item)
    what = f"key {previous}, held by no secret but in use," if adopted else f"previous key {previous}"
    if decision == Retire.WAIT_GRACE:
        base.steps, base.retire_after = [f"keep {previous} Active until {until}"], until
        base.reasons = list(item.reasons) or [f"{what} is kept Active until {until}" if adopted
                                              else f"previous key {previous} is in its grace period until {until}"]
        return base
    if decision in (Retire.WAIT_USE, Retire.PAST_MAX_GRACE, Retire.DEADLINE):
        base.in_use_since = store_time(record, run.keys_of(record), run.clock.now()) if not adopted else item.adopted
    if decision == Retire.WAIT_USE:
        base.still_in_use = True
        base.steps = [f"keep {previous} Active: {where}"]
        base.reasons = [f"{what} was used since the new key was stored ({where}); kept Active "
                        f"until unused, or until MAX_GRACE_HOURS={run.settings.max_grace_hours:g} have passed"]
        return base
    if own.dry_run:
        base.status, base.steps = Status.PLANNED, [f"deactivate {previous}"]
        return base
    retire_keys(run.clients, record, (previous, *item.also), done=f"the current key {record.held_key_id} works")
    if adopted:  # its adoption is over: Active again one day, it is a new adoption
        record_adoptions(run, record, run.found[record.name], frozenset({previous}))
    base.status, base.steps, base.reasons = Status.RETIRED, [f"deactivate {k}" for k in (previous, *item.also)], \
        list(item.reasons)
    base.retired_keys += [previous, *item.also]
    if decision in (Retire.PAST_MAX_GRACE, Retire.DEADLINE):
        base.forced_in_use = True
        base.reasons = [f"{what} deactivated although still in use ({where}): " + (
            f"MAX_GRACE_HOURS={run.settings.max_grace_hours:g} passed" if decision == Retire.PAST_MAX_GRACE else
            "turned on again after its adoption ended, it would hold the key the secret holds past "
            f"MAX_KEY_AGE_DAYS={run.settings.max_key_age_days:g}" if adopted else
            f"kept Active, it would outlive MAX_KEY_AGE_DAYS={run.settings.max_key_age_days:g} before the next run")]
        log_action("forced_while_in_use", logging.WARNING, secret=record.name, user=record.user_name,
                   key_id=previous, last_use=where)
    return base


# ---------------------------------------------------------------------------
# 8. Rollback
# ---------------------------------------------------------------------------


def restore_previous(run: Run, record: SecretRecord, version: str, key: AccessKey, reactivate: bool) -> str | None:
    """The one way back to AWSPREVIOUS's key: re-activate it if it is not Active, check it authenticates (a key
    that never stopped working at once; a re-activated one waiting out IAM's propagation), then move AWSCURRENT
    back. Returns why not, with everything as it was; None once AWSCURRENT holds it again."""
    clients = run.clients
    if reactivate:
        with aws_step(record.name, "UpdateAccessKey"):
            set_key_status(clients, record, key.key_id, KeyStatus.ACTIVE)
        why = verify_keys(clients, [Check(record, key)], run.settings.verify_timeout, run.clock).get(record.name)
    else:  # an old key that never stopped working: no propagation to wait for
        why = verify_keys(clients, [Check(record, key)], 0, run.clock, once=True).get(record.name)
    if why:
        if reactivate:  # put it back as it was: nothing changed
            with aws_step(record.name, "UpdateAccessKey"):
                set_key_status(clients, record, key.key_id, KeyStatus.INACTIVE)
        return why
    move_current(run, record, version, record.version_id)
    return None


def repair(run: Run, record: SecretRecord, restore: Restore) -> Outcome | str:
    """The key the secret holds is gone or off: go back to AWSPREVIOUS's key if it authenticates at once
    (nothing deleted); else say why not (the caller rotates afresh)."""
    key = restore.key
    why = restore_previous(run, record, restore.version, key, reactivate=False)
    if why:
        return f"{restore.found}, and previous key {key.key_id} did not authenticate ({why}): rotated afresh"
    log_action("repaired", logging.WARNING, secret=record.name, user=record.user_name, key_id=key.key_id,
               version=restore.version)
    return Outcome(secret=record.name, status=Status.ROLLED_BACK, user=record.user_name, restored_key_id=key.key_id,
                   steps=[f"make version {restore.version} current"],
                   reasons=[restore.found, f"AWSCURRENT moved back to version {restore.version}, whose key "
                                           f"{key.key_id} is Active and authenticates; nothing deleted"])


def rollback_plan(run: Run, record: SecretRecord) -> tuple[str, AccessKey, KeyState, str | None]:
    """What a rollback would restore (AWSPREVIOUS's version, its key as IAM lists it) and retire (the current
    key, unless another secret holds it), or why it cannot. Reads only. The window counts from the current key's
    creation in IAM (``store_time``), which re-saving the secret does not move."""
    version, value = record.version_with(PREVIOUS), read_version_value(run.clients, record, PREVIOUS)
    if version is None or value is None:
        raise RotationError(record.name, "cannot roll back: the secret has no AWSPREVIOUS version; nothing changed")
    if not same_user(record, value):
        raise RotationError(record.name, "cannot roll back: the AWSPREVIOUS version names another user; "
                                         "nothing changed")
    keys = run.conclude(record, keys=tuple(list_keys(run.clients, record))).keys
    age = run.clock.now() - store_time(record, keys, run.clock.now())
    if age > timedelta(hours=run.settings.rollback_hours):
        raise RotationError(record.name, f"cannot roll back: the current key is {age.total_seconds() / 3600:.0f} "
                                         f"hours old, past ROLLBACK_HOURS={run.settings.rollback_hours:g}; the "
                                         "previous key was retired long ago (a leaked one, perhaps). Raise "
                                         "ROLLBACK_HOURS if you mean it; nothing changed")
    previous = held_key(record, value)
    if previous is not None and previous.key_id == record.held_key_id:
        raise RotationError(record.name, f"nothing to roll back: AWSPREVIOUS holds the key AWSCURRENT holds, "
                                         f"{previous.key_id} (the secret was saved again since its last rotation); "
                                         "nothing changed")
    found = find_key(keys, previous.key_id if previous else None)
    if previous is None or found is None:
        raise RotationError(record.name, f"cannot roll back: the previous key "
                                         f"{previous.key_id if previous else '(none)'} no longer exists; "
                                         "nothing changed")
    if found.status == KeyStatus.EXPIRED:
        raise RotationError(record.name, f"cannot roll back: the previous key {found.key_id} is Expired; "
                                         "nothing changed")
    current = find_key(keys, record.held_key_id)
    current = unless_held_elsewhere(current, run.others_holding(record, keys))
    retired = current.key_id if current is not None and current.active and current.key_id != found.key_id else None
    return version, previous, found, retired


def rollback_secret(run: Run, record: SecretRecord) -> Outcome:
    """Restore the previous key: re-activate it, verify it, move AWSCURRENT back, deactivate the current key."""
    clients = run.clients
    try:
        own = guard(run, record, Entry.ROLLBACK)
    except Hold as hold:
        return skipped(record, str(hold))
    version, previous, found, retired = rollback_plan(run, record)
    steps = ([f"activate {found.key_id}"] if not found.active else []) + [f"make version {version} current"]
    steps += [f"deactivate {retired}"] if retired else []
    outcome = Outcome(secret=record.name, status=Status.PLANNED, user=record.user_name,
                      restored_key_id=found.key_id, retired_key_id=retired, steps=steps)
    if own.dry_run:
        return outcome
    why = restore_previous(run, record, version, previous, reactivate=not found.active)
    if why:
        raise RotationError(record.name, f"cannot roll back: {why}; nothing changed")
    if retired:
        retire_keys(clients, record, (retired,), done=f"rolled back to key {found.key_id}")
    log_action("rolled_back", secret=record.name, user=record.user_name, key_id=found.key_id, version=version)
    outcome.status, outcome.retired_keys = Status.ROLLED_BACK, [retired] if retired else []
    return outcome


# ---------------------------------------------------------------------------
# 9. Compliance, the account report and who still uses a key
# ---------------------------------------------------------------------------


def active_after(record: SecretRecord, keys: tuple[KeyState, ...], outcome: Outcome,
                 now: datetime) -> tuple[dict[str, datetime], str | None]:
    """The user's Active keys after the run (key id -> IAM's creation date; a key made in the run, now) and the key
    the secret holds then: from the keys the run listed, and what it did."""
    gone = set(outcome.retired_keys)
    active = {k.key_id: k.created for k in keys if k.active and k.key_id not in gone}
    held_id = record.held_key_id
    if outcome.status == Status.ROTATED and outcome.new_key_id:
        held_id, active[outcome.new_key_id] = outcome.new_key_id, now
    elif outcome.status == Status.ROLLED_BACK and outcome.restored_key_id:
        held_id = outcome.restored_key_id
        active.update({k.key_id: k.created for k in keys if k.key_id == held_id})  # re-activated
    if outcome.retired_key_id:
        active.pop(outcome.retired_key_id, None)
    return active, held_id


def compliance(run: Run, record: SecretRecord, found: Found, outcome: Outcome) -> Deadline:
    """The deadline, per secret: the age of the key the secret holds after the run, and when its rotation falls
    due (``overdue`` adds any managed Active key older than MAX_KEY_AGE_DAYS)."""
    keys, now, settings = found.keys or (), run.clock.now(), run.settings
    active, held_id = active_after(record, keys, outcome, now)
    held_created = active.get(held_id) or next((k.created for k in keys if k.key_id == held_id), None)
    own = found.effective or SecretSettings("rotate", settings.dry_run, settings.rotate_after_days,
                                            settings.grace_hours)
    due = due_after_days(own.rotate_after_days, own.grace_hours, settings.max_grace_hours, settings.max_key_age_days)
    return Deadline(key_age_days=age_days(held_created, now) if held_created else None,
                    next_rotation=iso(max(now, held_created + timedelta(days=due)) if held_created else now)[:10])


def overdue(run: Run, record: SecretRecord, found: Found, outcome: Outcome, deadline: Deadline) -> Deadline:
    """``deadline`` with any Active key past MAX_KEY_AGE_DAYS after the run that no other secret holds (overdue).
    Apart from ``compliance``: a holder that cannot be read leaves the held key's figures said."""
    keys, now, max_age = found.keys or (), run.clock.now(), run.settings.max_key_age_days
    if max_age <= 0:
        return deadline
    others = run.others_holding(record, list(keys)) if run.by_user else {}
    late = sorted((created, key_id) for key_id, created in active_after(record, keys, outcome, now)[0].items()
                  if key_id not in others and now - created > timedelta(days=max_age))
    if not late:
        return deadline
    return replace(deadline, overdue=True, overdue_keys=len(late), overdue_key_id=late[0][1],
                   overdue_key_age_days=age_days(late[0][0], now))


def brought_forward_note(run: Run, record: SecretRecord) -> list[str]:
    """The reason a secret rotates earlier than asked: MAX_KEY_AGE_DAYS brings it forward (``due_days``)."""
    if record.name not in run.brought_forward:
        return []
    asked, due_day = run.brought_forward[record.name]
    return [f"rotation due at day {due_day:g}, not {asked:g}: MAX_KEY_AGE_DAYS="
            f"{run.settings.max_key_age_days:g} brings it forward"]


def report_compliance(run: Run, records: list[Any], outcomes: list[Outcome]) -> None:
    """Annotate every outcome with the deadline's figures; list the keys of a held (skip) secret to do so."""
    by_name = {r.name: r for r in records if isinstance(r, SecretRecord)}
    for outcome in outcomes:
        record = by_name.get(outcome.secret)
        if record is None:
            continue
        outcome.secret_arn, outcome.user = record.arn, outcome.user or record.user_name
        outcome.current_key_id = (outcome.restored_key_id if outcome.status == Status.ROLLED_BACK else
                                  outcome.new_key_id if outcome.status in (Status.ROTATED, Status.FAILED)
                                  and outcome.new_key_id else record.held_key_id)
        found = run.found.get(record.name)
        if found is None and outcome.status == Status.SKIPPED and run.may_hold(record):  # held before the guard
            found = run.conclude(record)
        outcome.managed = found is not None and outcome.status not in FAILING
        if found is not None and found.keys is None and outcome.status == Status.SKIPPED:  # a hold: reported too
            try:
                found = run.conclude(record, keys=tuple(list_keys(run.clients, record)))
            except RotationError:
                continue
        if found is None or found.keys is None:
            continue
        try:
            outcome.deadline = compliance(run, record, found, outcome)
            outcome.deadline = overdue(run, record, found, outcome, outcome.deadline)
            outcome.reasons += brought_forward_note(run, record)
        except Exception as err:  # a figure that cannot be worked out must not fail the run
            log_action("compliance_failed", logging.WARNING, secret=record.name, error=type(err).__name__)
    if run.brought_forward:
        days = sorted({due for _, due in run.brought_forward.values()})
        log_action("deadline", logging.WARNING, max_key_age_days=run.settings.max_key_age_days,
                   effective_rotate_after_days=days, secrets=sorted(run.brought_forward),
                   message="ROTATE_AFTER_DAYS (or a secret's tag) would let a key outlive MAX_KEY_AGE_DAYS: "
                           f"rotating at day {', '.join(f'{d:g}' for d in days)} instead")


LOOKUP_INTERVAL_SECONDS = 0.5  # LookupEvents allows 2 calls a second per account and region: one every 0.5 s
HOLDOUT_LOOKUPS_PER_RUN = 20  # keys a run asks CloudTrail about, at most (at 0.5 s each: 10 s)
HOLDOUT_EVENTS = 50  # LookupEvents' largest page; only the first is read
HOLDOUT_GROUPS = 10  # groups kept per key, the most recently seen first
HOLDOUT_TEXT = 160  # characters kept of a user agent (it is the caller's to choose)
HOLDOUT_TIME_RESERVE = 15.0  # seconds of Lambda time a lookup needs left (the report and its notices follow)


def clip(value: Any) -> str | None:
    """A caller-chosen string from CloudTrail, printable and short, for a log line or a message."""
    if not isinstance(value, str) or not value:
        return None
    text = "".join(ch if ch.isprintable() else "?" for ch in value)
    return text if len(text) <= HOLDOUT_TEXT else text[:HOLDOUT_TEXT - 3] + "..."


def trail_events(key_id: str, events: list[Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any], datetime | None]]:
    """LookupEvents' entries made with ``key_id``: (the entry, its CloudTrail record, its time). Entries for
    another key (an answer to another question) and entries that are not CloudTrail's shape are left out."""
    for event in events:
        if not isinstance(event, dict) or event.get("AccessKeyId", key_id) != key_id:
            continue
        record = loads_or_none(event.get("CloudTrailEvent") or "", {})
        record = record if isinstance(record, dict) else {}
        when = event.get("EventTime")
        if not isinstance(when, datetime):
            try:
                when = datetime.fromisoformat(str(record.get("eventTime", "")).replace("Z", "+00:00"))
            except ValueError:
                when = None
        yield event, record, when if when is None or when.tzinfo else when.replace(tzinfo=UTC)


def group_holdouts(key_id: str, events: list[Any]) -> list[Holdout]:
    """CloudTrail's events made with ``key_id``, grouped by source IP, user agent and event source: a count
    and the last time seen each, most recent first (``trail_events``)."""
    groups: dict[tuple, dict[str, Any]] = {}
    for event, record, when in trail_events(key_id, events):
        where = (clip(record.get("sourceIPAddress")), clip(record.get("userAgent")),
                 clip(record.get("eventSource") or event.get("EventSource")))
        group = groups.setdefault(where, {"source_ip": where[0], "user_agent": where[1], "event_source": where[2],
                                          "count": 0, "last_seen": None})
        group["count"] += 1
        if when is not None and (group["last_seen"] is None or iso(when) > group["last_seen"]):
            group["last_seen"] = iso(when)
    ordered = sorted(groups.values(), key=lambda g: g["last_seen"] or "", reverse=True)[:HOLDOUT_GROUPS]
    return [Holdout(**group) for group in ordered]


def describe_holdouts(groups: list[Holdout], most: int = 3) -> str:
    """The holdouts in a sentence: who (host and program), on which service, how often, last when."""
    parts = [f"{g.source_ip or 'an unknown address'} with {g.user_agent or 'an unknown program'} on "
             f"{g.event_source or 'an unknown service'} ({g.count}x, last {g.last_seen or 'unknown'})"
             for g in groups[:most]]
    more = f" and {len(groups) - most} more" if len(groups) > most else ""
    return "; ".join(parts) + more


def look_up_holdouts(run: Run, outcomes: list[Outcome]) -> None:
    """LOOKUP_HOLDOUTS: for each previous (or adopted) key kept Active because it was used since the store,
    or deactivated although still in use, the management events CloudTrail saw made with it since the store
    (LookupEvents, first page), as ``holdouts`` and a WARNING. At most HOLDOUT_LOOKUPS_PER_RUN keys, paced
    under CloudTrail's rate (``Pacer``); a lookup that fails changes nothing but the report. Reads only.
    A leaked key is always looked up, since its creation: who used it, the attacker beside the consumers."""
    wanted = [o for o in outcomes if o.in_use_since and (o.leak or (
        run.settings.lookup_holdouts and o.old_key_id and (o.still_in_use or o.forced_in_use)))]
    for index, outcome in enumerate(wanted):
        if index >= HOLDOUT_LOOKUPS_PER_RUN:
            outcome.holdouts_note = (f"not looked up: CloudTrail is asked about at most {HOLDOUT_LOOKUPS_PER_RUN} "
                                     "keys a run")
            continue
        left = time_left(run.context)
        if left is not None and left < HOLDOUT_TIME_RESERVE:
            outcome.holdouts_note = "not looked up: too little Lambda time left"
            continue
        key_id = outcome.leak.key_id if outcome.leak else outcome.old_key_id
        try:
            with run.clients.budget.deadline(HOLDOUT_TIME_RESERVE):
                answer = run.clients.cloudtrail.lookup_events(
                    LookupAttributes=[{"AttributeKey": "AccessKeyId", "AttributeValue": key_id}],
                    StartTime=outcome.in_use_since, EndTime=run.clock.now(), MaxResults=HOLDOUT_EVENTS)
        except Exception as err:  # the report only: the keys are as the rotation left them
            why = describe_error(err, "LookupEvents")
            if error_code(err) in ("AccessDenied", "AccessDeniedException"):
                why += "; LOOKUP_HOLDOUTS needs cloudtrail:LookupEvents"
            outcome.holdouts_note = f"CloudTrail: {why}"
            log_action("holdouts_failed", logging.WARNING, secret=outcome.secret, key_id=key_id, error=why)
            continue
        outcome.holdouts = group_holdouts(key_id, answer.get("Events") or [])
        if answer.get("NextToken"):
            outcome.holdouts_note = f"from CloudTrail's first page only (the {HOLDOUT_EVENTS} most recent events)"
        elif not outcome.holdouts:
            outcome.holdouts_note = ("CloudTrail shows no management event made with the key since the store "
                                     "(data events, such as S3 reads, do not show; events take up to 15 minutes "
                                     "to appear)")
        if outcome.holdouts:
            log_action("holdouts", logging.WARNING, secret=outcome.secret, user=outcome.user, key_id=key_id,
                       holdouts=[h.row() for h in outcome.holdouts],
                       message=f"key {key_id} is still used by: {describe_holdouts(outcome.holdouts)}")


REPORT_WAIT_SECONDS = 60.0  # how long GenerateCredentialReport may take, on the function's clock
ROOT_USER = "<root_account>"


@dataclass
class AccountReport:
    """What IAM's credential report showed the run (``read_account_report``): the summary's "report"."""

    overdue_managed: list[dict[str, Any]] = field(default_factory=list)  # Active keys past the deadline, managed
    overdue_unmanaged: list[dict[str, Any]] = field(default_factory=list)  # the same, of users no secret manages
    root_key_active: bool = False  # CIS asks that the root user have no key at all
    generated: str | None = None
    failed: str | None = None  # why the report could not be read (or understood): the run fails with it
    read: bool = True  # False: not read at all (only ``failed`` is known)

    def summary(self) -> dict[str, Any]:
        if not self.read:
            return {"failed": self.failed}
        return {"overdue_managed": self.overdue_managed, "overdue_unmanaged": self.overdue_unmanaged,
                "root_key_active": self.root_key_active, "generated": self.generated,
                **({"failed": self.failed} if self.failed else {})}


def read_credential_report(answer: dict, managed: set[str], now: datetime, max_age_days: float,
                           found: AccountReport, active: list[str] | None = None) -> None:
    """Every Active access key of the credential report older than ``max_age_days``, into ``found``; every user
    with an Active key (the root user aside) into ``active``. A row without a user, or a field that is not a
    date, is skipped; a report that is not CSV text raises."""
    limit = timedelta(days=max_age_days)
    content = answer.get("Content")
    text = content.decode() if isinstance(content, bytes) else content
    for row in csv.DictReader(io.StringIO(text)):
        user = row.get("user")
        if not isinstance(user, str):
            continue
        for slot in (1, 2):
            if row.get(f"access_key_{slot}_active") != "true":
                continue
            if user == ROOT_USER:
                found.root_key_active = True
                continue
            if active is not None and user not in active:
                active.append(user)
            try:
                rotated = datetime.fromisoformat(str(row.get(f"access_key_{slot}_last_rotated", "")))
            except ValueError:
                continue
            rotated = rotated if rotated.tzinfo else rotated.replace(tzinfo=UTC)
            if max_age_days > 0 and now - rotated > limit:
                kind = found.overdue_managed if user.casefold() in managed else found.overdue_unmanaged
                kind.append({"user": clip(user), "key_slot": slot, "age_days": age_days(rotated, now)})


@dataclass(frozen=True)
class NearDeadline:
    """An Active key of a user no secret of the run manages (IAM's credential report), on a day its owner is told:
    15 and 7 days before MAX_KEY_AGE_DAYS, and the day it is overdue (``days_left`` 0)."""

    user: str
    slot: int
    rotated: datetime
    days_left: int


OWNER_DAYS_BEFORE_DEADLINE = (15, 7, 0)


def near_deadline(answer: dict, managed: set[str], anchor: datetime | None,
                  max_age_days: float) -> list[NearDeadline]:
    """The credential report's Active keys of users no secret manages whose 15-day, 7-day or overdue day falls to
    this run (``in_this_run``): each told once, on the daily schedule, without state."""
    if max_age_days <= 0 or anchor is None:
        return []
    content = answer.get("Content")
    found = []
    for row in csv.DictReader(io.StringIO(content.decode() if isinstance(content, bytes) else content)):
        user = row.get("user")
        if not is_user_name(user) or user.casefold() in managed:
            continue
        for slot in (1, 2):
            try:
                rotated = datetime.fromisoformat(str(row.get(f"access_key_{slot}_last_rotated", "")))
            except ValueError:
                continue
            rotated = rotated if rotated.tzinfo else rotated.replace(tzinfo=UTC)
            for days in OWNER_DAYS_BEFORE_DEADLINE:
                if row.get(f"access_key_{slot}_active") == "true" and in_this_run(
                        rotated + timedelta(days=max_age_days - days), anchor):
                    found.append(NearDeadline(user, slot, rotated, days))
    return found


def read_account_report(clients: Clients, settings: Settings, clock: Clock, outcomes: list[Outcome],
                   active: list[str] | None = None, nearing: list[NearDeadline] | None = None) -> AccountReport:
    """IAM's credential report (one for the whole account): every Active access key older than
    MAX_KEY_AGE_DAYS, split by whether a secret of this run manages its user; into ``active``, every user with
    an Active key (the roles report's). Reads only."""
    try:
        deadline, delay = clock.monotonic() + REPORT_WAIT_SECONDS, 1.0
        while clients.iam.generate_credential_report().get("State") != "COMPLETE":
            delay = back_off(clock, deadline, delay)
            if delay is None:
                raise RotationError("credential report", f"IAM's credential report did not complete within "
                                                         f"{REPORT_WAIT_SECONDS:g}s; nothing changed")
        answer = clients.iam.get_credential_report()
    except RotationError as err:
        return AccountReport(failed=str(err), read=False)
    except Exception as err:
        why = describe_error(err, "GetCredentialReport")
        if error_code(err) in ("AccessDenied", "AccessDeniedException"):
            why += "; the report needs iam:GenerateCredentialReport and iam:GetCredentialReport"
        return AccountReport(failed=f"credential report: {why}", read=False)
    managed = {o.user.casefold() for o in outcomes if o.user and o.managed}
    found = AccountReport(generated=iso(answer["GeneratedTime"]) if answer.get("GeneratedTime") else None)
    try:
        read_credential_report(answer, managed, clock.now(), settings.max_key_age_days, found, active)
        if nearing is not None:  # the owners of keys no secret holds, told as their deadline nears
            nearing += near_deadline(answer, managed, schedule_anchor(settings, clock.now()),
                                     settings.max_key_age_days)
    except Exception as err:  # a report not as documented: said, never lost with the run's summary
        found.failed = f"credential report: not understood ({type(err).__name__}); nothing changed"
        return found
    log_action("account_report", overdue_managed=len(found.overdue_managed),
               overdue_unmanaged=len(found.overdue_unmanaged), root_key_active=found.root_key_active)
    return found


# The roles report: which Active keys a role could replace, judged from CloudTrail's management events made with
# each (a heuristic: the regions read, the lookback, the first page of each). Reads only.
ROLE_KEYS_PER_RUN = 100  # keys a run judges, at most (each a paced LookupEvents per region: 0.5 s); the rest said
ROLE_EVENTS = 50  # LookupEvents' largest page; the first (most recent) page per key and region is read
RUNS_IN_AWS = "runs in AWS: an execution role or instance profile would do"
CI_ROLE = "a CI role through OIDC would do"
KEEP = "keep, and rotate"
UNSEEN = "no management event seen: unused, or used only in regions not read"
VERDICTS = (KEEP, CI_ROLE, RUNS_IN_AWS, UNSEEN)  # a key's verdict is the first of these its events show
# How a CI system names itself in a user agent (the AWS SDKs and CLI append it from the CI's environment, or the
# CI's own AWS action sends it): GitHub Actions (aws-actions/configure-aws-credentials: "...-github-actions"),
# GitLab (GitLab-Runner, gitlab-ci), CircleCI (circleci, the aws-cli orb), Terraform Cloud (tfc-agent, "Terraform
# Cloud", app.terraform.io). Words, case ignored.
CI_AGENTS = ("github-actions", "github_actions", "githubactions", "gitlab", "circleci", "terraform cloud",
             "terraform-cloud", "tfc-agent", "app.terraform.io")
EXEC_ENV = "exec-env/"  # the AWS SDKs' AWS_EXECUTION_ENV in a user agent: AWS_Lambda_python3.11, AWS_ECS_FARGATE...


def role_verdict(record: Mapping[str, Any]) -> str:
    """One CloudTrail event's verdict: through a VPC endpoint or from an AWS execution environment (the user
    agent's exec-env/): runs in AWS; a user agent naming a CI system: a CI role; anything else: keep."""
    agent = str(record.get("userAgent") or "").casefold()
    if record.get("vpcEndpointId") or EXEC_ENV in agent:
        return RUNS_IN_AWS
    if any(name in agent for name in CI_AGENTS):
        return CI_ROLE
    return KEEP


@dataclass
class KeyUse:
    """One Active key, as the roles report judged it: its events by verdict (count, first and last seen)."""

    user: str
    key_id: str
    secret: str | None  # the secret of this run that holds it (None: no secret holds it)
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, verdict: str, when: datetime | None, example: str | None) -> None:
        seen = self.evidence.setdefault(verdict, {"count": 0, "first_seen": None, "last_seen": None,
                                                  "example": example})
        seen["count"] += 1
        self.events += 1
        if when is not None:
            seen["first_seen"] = min(filter(None, (seen["first_seen"], iso(when))))
            seen["last_seen"] = max(filter(None, (seen["last_seen"], iso(when))))

    @property
    def verdict(self) -> str:
        return next((v for v in VERDICTS if v in self.evidence), UNSEEN)


def role_candidates(clients: Clients, outcomes: list[Outcome], users: list[str]) -> tuple[list[KeyUse], list[dict]]:
    """Every Active key of the users the credential report shows with one, and of the run's managed users:
    ListAccessKeys each (a user whose keys cannot be listed is said, not guessed)."""
    held = {o.current_key_id: o.secret for o in outcomes if o.current_key_id and o.managed}
    names = list(dict.fromkeys([*users, *(o.user for o in outcomes if o.user and o.managed)]))
    found, unread = [], []
    for user in names:
        try:
            listed = clients.iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
        except Exception as err:
            why = describe_error(err, "ListAccessKeys")
            if error_code(err) in ("AccessDenied", "AccessDeniedException"):
                why += "; the role lists the keys of users tagged key-rotation-secret only (docs/reference.md)"
            unread.append({"user": clip(user), "key_id": None, "why": why})
            continue
        found += [KeyUse(user, k["AccessKeyId"], held.get(k["AccessKeyId"])) for k in listed
                  if k.get("Status") == KeyStatus.ACTIVE and is_access_key_id(k.get("AccessKeyId"))]
    return found, unread


def read_key_use(clients: Clients, settings: Settings, clock: Clock, use: KeyUse) -> None:
    """The management events CloudTrail kept of one key over ROLE_LOOKBACK_DAYS in each of ROLE_REGIONS (the
    first page each, paced by ``Pacer``), judged one by one. A failed lookup is said, never a verdict."""
    start, end = clock.now() - timedelta(days=settings.role_lookback_days), clock.now()
    for region in settings.role_regions:
        try:
            with clients.budget.deadline(HOLDOUT_TIME_RESERVE):
                answer = clients.cloudtrail_in(region).lookup_events(
                    LookupAttributes=[{"AttributeKey": "AccessKeyId", "AttributeValue": use.key_id}],
                    StartTime=start, EndTime=end, MaxResults=ROLE_EVENTS)
        except Exception as err:
            why = describe_error(err, "LookupEvents")
            if error_code(err) in ("AccessDenied", "AccessDeniedException"):
                why += "; the roles report needs cloudtrail:LookupEvents"
            use.notes.append(f"{region}: CloudTrail: {why}")
            continue
        for _, record, when in trail_events(use.key_id, answer.get("Events") or []):
            use.add(role_verdict(record), when, clip(record.get("userAgent")))
        if answer.get("NextToken"):
            use.notes.append(f"{region}: the {ROLE_EVENTS} most recent events only")


def key_use_row(use: KeyUse, regions: str) -> dict[str, Any]:
    """A judged key as the summary, the table and the event show it: ids and names only."""
    basis = f"heuristic, from {use.events} events in the regions read ({regions})"
    return {"user": clip(use.user), "key_id": use.key_id, "secret": use.secret, "verdict": use.verdict,
            "events": use.events, "basis": basis, "notes": use.notes,
            "evidence": [{"verdict": v, **use.evidence[v]} for v in VERDICTS if v in use.evidence]}


def roles_summary(uses: list[KeyUse], regions: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Each verdict with its keys, its events, first and last seen, over every key judged."""
    named = " ".join(regions)
    verdicts: dict[str, dict[str, Any]] = {}
    for use in uses:
        row = verdicts.setdefault(use.verdict, {"keys": 0, "events": 0, "first_seen": None, "last_seen": None})
        row["keys"] += 1
        row["events"] += use.events
        for seen in use.evidence.values():
            row["first_seen"] = min(filter(None, (row["first_seen"], seen["first_seen"])), default=None)
            row["last_seen"] = max(filter(None, (row["last_seen"], seen["last_seen"])), default=None)
    for row in verdicts.values():
        row["basis"] = f"heuristic, from {row['events']} events in the regions read ({named})"
    return {v: verdicts[v] for v in VERDICTS if v in verdicts}


@dataclass(frozen=True)
class RolesReport:
    """The roles report's findings: rendered as the summary's "roles" and the Access Keys Replaceable events."""

    regions_read: list[str]
    lookback_days: int
    verdicts: dict[str, dict[str, Any]]  # each verdict's counts (``roles_summary``)
    keys: list[dict[str, Any]] = field(default_factory=list)  # a row a key judged (``key_use_row``)
    not_read_this_run: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def roles_report(clients: Clients, settings: Settings, clock: Clock, context: Any, outcomes: list[Outcome],
                 users: list[str]) -> RolesReport:
    """{"report": true, "roles": true}: for each Active key (managed or not), CloudTrail's management events over
    ROLE_LOOKBACK_DAYS in ROLE_REGIONS, paced, at most ROLE_KEYS_PER_RUN keys a run (the rest said), each key
    and each verdict with its evidence. Reads only: IAM's lists and CloudTrail's history."""
    uses, unread = role_candidates(clients, outcomes, users)
    judged: list[KeyUse] = []
    for index, use in enumerate(uses):
        left = time_left(context)
        if index >= ROLE_KEYS_PER_RUN or (left is not None and left < HOLDOUT_TIME_RESERVE):
            why = (f"not read this run: at most {ROLE_KEYS_PER_RUN} keys a run" if index >= ROLE_KEYS_PER_RUN
                   else "not read this run: too little Lambda time left")
            unread.append({"user": clip(use.user), "key_id": use.key_id, "why": why})
            continue
        read_key_use(clients, settings, clock, use)
        judged.append(use)
    regions = " ".join(settings.role_regions)
    log_action("roles_report", keys=len(judged), not_read=len(unread), regions=list(settings.role_regions),
               verdicts={v: sum(u.verdict == v for u in judged) for v in VERDICTS})
    return RolesReport(list(settings.role_regions), settings.role_lookback_days,
                       roles_summary(judged, settings.role_regions), [key_use_row(use, regions) for use in judged],
                       unread)


# ---------------------------------------------------------------------------
# 10. The core's passes, and the batch's entry points
# ---------------------------------------------------------------------------


def out_of_time(run: Run, record: SecretRecord) -> Outcome | None:
    """NOT_ATTEMPTED when less Lambda time is left than TIME_MARGIN_SECONDS."""
    margin, left = run.settings.time_margin, time_left(run.context)
    if left is None or left >= margin:
        return None
    reason = str(RotationError(record.name, f"not attempted: less than {margin:g}s of the Lambda time limit left"))
    log_action("not_attempted", logging.ERROR, secret=record.name, reason=reason)
    return Outcome(secret=record.name, status=Status.NOT_ATTEMPTED, reasons=[reason])


def restorable(run: Run, record: SecretRecord, keys: list[KeyState],
               holders: Holders) -> tuple[Restore | None, str | None]:
    """The key the secret holds is gone from IAM (deleted by hand), Expired or Inactive: can AWSPREVIOUS's key,
    Active and the same user's, be restored (no STS wait for an old key)? Reads only. Returns the restore, or
    None with what was found (None for a key that is merely not Active: a row of the table)."""
    held = find_key(keys, record.held_key_id)
    what = f"the key the secret holds, {record.held_key_id}, " + (
        "no longer exists in IAM" if held is None else f"is {held.status}")
    version = record.version_with(PREVIOUS)
    value = read_version_value(run.clients, record, PREVIOUS) if version else None
    previous = held_key(record, value) if value is not None and same_user(record, value) else None
    found = find_key(keys, previous.key_id) if previous else None
    if previous is None or found is None or not found.active or previous.key_id in holders.others:
        return None, (None if held is not None else f"{what}, and no Active previous key to restore: rotated afresh")
    return Restore(version, previous, what), None


def held_at_deadline(run: Run, record: SecretRecord, keys: list[KeyState], own: SecretSettings) -> bool:
    """Is the key the secret holds so old that its rotation, the next run and its grace period would no longer end
    before MAX_KEY_AGE_DAYS if anything held the rotation back now? Then a key turned on again after its adoption
    was over gets no new adoption wait: it is retired at once, loudly if in use (a key in use is never deleted to
    make room, so one turned on again before every run holds the rotation: the held key is reported overdue)."""
    held, max_age = find_key(keys, record.held_key_id), run.settings.max_key_age_days
    room = own.grace_hours / 24 + SCHEDULE_PERIOD / timedelta(days=1)
    return held is not None and max_age > 0 and past_deadline(held.created, run.clock.now(), max(max_age - room, 0.01))


def settle_first(run: Run, record: SecretRecord, keys: list[KeyState], holders: Holders, own: SecretSettings,
                 redelivery: bool) -> Settling | None:
    """A previous key still Active (the grace period), or an adopted key, is settled before anything else
    (force aside): the key the secret holds must authenticate before either is retired."""
    if run.settings.force and not redelivery:
        return None
    previous = previous_key(run, record, keys)
    found = find_key(keys, previous)
    if found is not None and found.active and previous != record.held_key_id and previous not in holders.others:
        return Settling(record, previous, own, ("already rotated for this scheduled event",) if redelivery else (),
                        lost=holders.lost)
    adopted = [k for k in keys if k.key_id in holders.adopted]
    if adopted:
        return Settling(record, adopted[0].key_id, own, adopted=holders.adopted_since[adopted[0].key_id],
                        lost=holders.lost)
    return None


def unproven_reasons(holders: Holders) -> list[str]:
    return [unproven_why(k, until) for k, until in sorted(holders.unproven.items())]


def cleanup_or(record: SecretRecord, own: SecretSettings, holders: Holders, outcome: Outcome) -> Outcome | Cleanup:
    """Nothing is due: report ``outcome`` (and any key not yet proven the function's own), after deleting the
    function's own unstored keys if there are any."""
    outcome.reasons += unproven_reasons(holders)
    return Cleanup(record, own, holders.lost, outcome) if holders.lost else outcome


def planned(item: Rotate | Cleanup) -> Outcome:
    """A hold's answer: what acting would do, from the decision alone."""
    record = item.record
    if isinstance(item, Cleanup):
        return Outcome(secret=record.name, status=Status.PLANNED, user=record.user_name,
                       old_key_id=record.held_key_id, steps=[f"delete {k}" for k in sorted(item.lost)],
                       reasons=facts(lost_reason(item.lost)))
    if item.restore is not None:
        return Outcome(secret=record.name, status=Status.PLANNED, user=record.user_name,
                       restored_key_id=item.restore.key.key_id, reasons=[item.restore.found],
                       steps=[f"make version {item.restore.version} current"])
    return Outcome(secret=record.name, status=Status.PLANNED, user=record.user_name,
                   old_key_id=record.held_key_id, steps=[f"delete {k}" for k in sorted(item.lost)] + item.plan.steps(),
                   adopted=item.kept[0] if item.kept else None, reasons=list(item.reasons))


def due_days(run: Run, record: SecretRecord, own: SecretSettings) -> float:
    """The secret's rotation age after the deadline; a deadline that brings it forward is noted for the run."""
    due = due_after_days(own.rotate_after_days, own.grace_hours, run.settings.max_grace_hours,
                         run.settings.max_key_age_days)
    if due < own.rotate_after_days:
        run.brought_forward[record.name] = (own.rotate_after_days, due)
    return due


def freed_reason(plan: RotationPlan, holders: Holders) -> str | None:
    if plan.freed_adopted is None:
        return None
    return (f"force: deleted key {plan.freed_adopted}, held by no secret but in use (last used "
            f"{holders.adopted[plan.freed_adopted]}), to make room")


def plan_of(run: Run, record: SecretRecord, own: SecretSettings, keys: list[KeyState], holders: Holders,
            token: str, restore: Restore | None, found: str | None) -> Rotate | Outcome | Cleanup:
    """The rotation's plan over the keys besides the function's own lost ones (``act`` deletes those first),
    logged; a blocked plan fails the secret (nothing changed), or waits while a key in the way is one IAM's
    data cannot yet prove unused (``Holders.unproven``): the next run judges it."""
    keys = [k for k in keys if k.key_id not in holders.lost]
    plan = plan_rotation(keys, holders, run.settings.force)
    kept = tuple(k for k in holders.adopted if k != plan.freed_adopted and find_key(keys, k))
    log_action("plan", secret=record.name, user=record.user_name, held_key_id=record.held_key_id,
               keys=[f"{k.key_id}:{k.status}" for k in keys], steps=plan.steps(), dry_run=own.dry_run,
               blocked=plan.blocked, adopted=list(kept), lost=sorted(holders.lost))
    if plan.blocked and restore is None and holders.unproven:
        log_action("waiting_for_proof", secret=record.name, user=record.user_name, keys=sorted(holders.unproven))
        waiting = Outcome(secret=record.name, status=Status.WAITING, user=record.user_name,
                          old_key_id=record.held_key_id, reasons=[f"rotation waits: {plan.blocked}"])
        return Cleanup(record, own, holders.lost, waiting) if holders.lost else waiting
    if plan.blocked and restore is None:
        raise RotationError(record.name, plan.blocked)
    reasons = (*facts(found, freed_reason(plan, holders), lost_reason(holders.lost)), *unproven_reasons(holders))
    return Rotate(record, own, keys, holders, plan, token, kept, reasons, restore, holders.lost)


def made_lately(made_at: datetime | None, now: datetime) -> bool:
    """Did the function mark a create less than LIST_LAG ago (IAM's list may not show its key yet)?"""
    return made_at is not None and timedelta(0) <= now - made_at < LIST_LAG


def list_lags(run: Run, record: SecretRecord, keys: list[KeyState], held: KeyState | None) -> str | None:
    """Why IAM's list (a minute behind a change) cannot be judged on yet, else None: the key the secret holds is
    not listed less than LIST_LAG after the function made a key; or it is listed Inactive just after the secret
    changed (a rollback turns it on and moves AWSCURRENT to it; LastChangedDate is Secrets Manager's own, read
    consistently)."""
    now = run.clock.now()
    made_at = parse_marker(run.tags(record).get(MADE_TAG))[0]
    recent = made_lately(made_at, now)
    if held is None and record.held_key_id and recent:
        return (f"IAM does not list the key the secret holds, {record.held_key_id}, yet: its list lags a change, "
                f"and this function made a key at {iso(made_at)}; judged next run")
    if held is not None and held.status == KeyStatus.INACTIVE and len(record.stages) > 1 and record.changed_at \
            and -CLOCK_SKEW <= now - record.changed_at < LIST_LAG:
        return (f"IAM lists the key the secret holds, {held.key_id}, {held.status}, and the secret changed at "
                f"{iso(record.changed_at)}: IAM's list lags a change (a rollback turns a key on); judged next run")
    return None


@dataclass(frozen=True)
class Assessing:
    """What every assessment reads of one claimed secret, once, whichever entry point's: the effective settings
    (the guard, if the decide pass has not run it), the user's keys, the version token, and who holds them."""

    effective: SecretSettings
    keys: list[KeyState]
    token: str
    redelivery: bool
    holders: Holders


def assessing(run: Run, record: SecretRecord) -> Assessing:
    """The reads every assessment starts from; the keys and their holders are also the run's conclusion of the
    secret (``Run.conclude``), which the deadline's figures and the owners' notices read."""
    own = run.effective(record) or guard(run, record, Entry.BATCH)
    keys = list_keys(run.clients, record)
    run.conclude(record, keys=tuple(keys))  # the deadline's figures need them even if reading a holder fails
    token = version_token(run.settings.event_id, record.arn)
    redelivery, holders = already_rotated(record, run.settings, token), run.holders(record, keys)
    run.conclude(record, holders=holders)
    return Assessing(own, keys, token, redelivery, holders)


def assess(run: Run, record: SecretRecord) -> Outcome | Settling | Rotate | Cleanup:
    """What one claimed secret needs, from reads alone: restore a previous key, settle a previous or adopted key
    still Active, rotate, clean up the function's own unstored keys, or nothing. Nothing changes here."""
    settings, found_now = run.settings, assessing(run, record)
    own, keys, token, holders = found_now.effective, found_now.keys, found_now.token, found_now.holders
    redelivery = found_now.redelivery
    held = find_key(keys, record.held_key_id)
    lagging = list_lags(run, record, keys, held)
    if lagging:
        return skipped(record, lagging)
    held_ok = held is not None and held.active
    restore, found = (None, None)
    if record.held_key_id and not held_ok and not redelivery:
        restore, found = restorable(run, record, keys, holders)
    settling = settle_first(run, record, keys, holders, own, redelivery) if held_ok else None
    if settling is not None and settling.adopted is not None and held_at_deadline(run, record, keys, own) \
            and settling.previous_key_id in parse_retired(run.tags(record).get(ADOPTED_TAG)):
        settling = replace(settling, at_deadline=True)  # turned on again after its adoption was over: no new wait
    if settling is not None:
        return settling
    if redelivery:
        return cleanup_or(record, own, holders, skipped(record, "already rotated for this scheduled event"))
    due = due_days(run, record, own)
    # the function's own lost keys go in any case; one not yet proven so is judged when it can be
    remaining = [k for k in keys if k.key_id not in holders.lost and k.key_id not in holders.unproven]
    if not settings.force and not rotation_due(remaining, record.held_key_id, run.clock.now(), due):
        return cleanup_or(record, own, holders,
                          skipped(record, f"key {record.held_key_id} is younger than rotate-after-days={due:g}"))
    return plan_of(run, record, own, keys, holders, token, restore, found)


def verify_current_first(run: Run, record: SecretRecord, why: str) -> None:
    """Before a held key is retired, the key the secret holds now must authenticate (force included)."""
    key = held_key(record)
    if key is None:
        raise RotationError(record.name, f"{why}: the secret's AWSCURRENT holds no usable key, so no held key is "
                                         "retired; nothing changed")
    problems = verify_keys(run.clients, [Check(record, key)], run.settings.verify_timeout, run.clock)
    if problems:
        raise RotationError(record.name, f"{why}: the key the secret holds did not authenticate "
                                         f"({problems[record.name]}), so no held key is retired; nothing changed")


def outstanding(marker: str | None, now: datetime) -> bool:
    """Did the create this mark is for (less than LIST_LAG ago) perhaps make a key IAM's list does not show yet?
    Found by make fuzz: a rerun a moment after a lost CreateAccessKey answer did not list that key, was refused
    (two keys), and its "made nothing" mark over the old one let the lost key pass for a person's."""
    made_at, _, _, token = parse_marker(marker)
    return token != NO_KEY_MADE and made_lately(made_at, now)


def make_room_and_create(run: Run, record: SecretRecord, plan: RotationPlan, keys: list[KeyState],
                         token: str | None) -> AccessKey:
    """Deactivate (force only) and delete the keys the plan removes first, mark the user (MADE_TAG: when, and
    the keys it has), then create the new key. The mark is what lets a later run know a key made now, whose
    answer is lost, for the function's own."""
    clients = run.clients
    try:
        for key_id in plan.deactivate_first:
            set_key_status(clients, record, key_id, KeyStatus.INACTIVE)
        for key_id in plan.delete_first:
            delete_key(clients, record, key_id)
    except Exception as err:
        raise RotationError(record.name, f"{describe_error(err)}; old key unchanged") from None
    remaining = {k.key_id for k in keys} - set(plan.delete_first)
    earlier = run.tags(record).get(MADE_TAG)
    try:
        tag_user(clients, record, MADE_TAG, made_marker(run.clock.now(), remaining, record.held_key_id, token))
    except RotationError as err:
        raise RotationError(record.name, f"{err.why} (the function marks a user before it makes a key: "
                                         f"iam:TagUser for tag {MADE_TAG}); old key unchanged") from None
    try:
        return create_key(clients, record, remaining)
    except RotationError as err:
        if err.made_nothing:  # refused outright: this create made no key (a person's may appear)
            with suppress(RotationError):  # an earlier create's key IAM may not list yet keeps its mark
                tag_user(clients, record, MADE_TAG, earlier if outstanding(earlier, run.clock.now()) else
                         made_marker(run.clock.now(), remaining, record.held_key_id, NO_KEY_MADE))
        raise


def rotate(run: Run, item: Rotate) -> Outcome | Stored:
    """Restore a previous key if one works at once; else (MAX_FAILURES permitting) make room, mark, create and
    store the new key. From the first change on, a failure counts towards MAX_FAILURES."""
    record, plan = item.record, item.plan
    if item.restore is not None:
        restored = repair(run, record, item.restore)
        if isinstance(restored, Outcome):
            return restored
        item = replace(item, reasons=(*facts(restored), *item.reasons))
        if plan.blocked:
            raise RotationError(record.name, f"{restored}; {plan.blocked}")
    stopped = run.stopped()
    if stopped:
        log_action("not_attempted", logging.ERROR, secret=record.name, reason=stopped)
        return Outcome(secret=record.name, status=Status.NOT_ATTEMPTED, user=record.user_name,
                       reasons=[str(RotationError(record.name, stopped))], stopped_early=True)
    if plan.retires_held_first:
        verify_current_first(run, record, "force")
    try:
        new_key = make_room_and_create(run, record, plan, item.keys, item.token)
        store_key(run.clients, record, new_key, item.token, smtp_regions=item.effective.smtp_regions)
    except RotationError as err:  # the rotation acted: it counts towards MAX_FAILURES
        run.count_failure(str(err))
        raise
    return Stored(record, plan, new_key, item.effective, item.kept, item.reasons, item.lost, item.at_once,
                  item.holders.adopted_since.get(item.kept[0]) if item.kept else None)


def act(run: Run, item: Outcome | Settling | Rotate | Cleanup) -> Outcome | Stored | Settling:
    """Carry out what ``assess`` decided. Under a hold (dry run, the dry-run tag) nothing here changes anything:
    the decision becomes a plan (a Settling's retirement is planned by ``settle``, after verification)."""
    if isinstance(item, Outcome):
        return item
    if item.effective.dry_run:
        return item if isinstance(item, Settling) else planned(item)
    late = out_of_time(run, item.record)
    if late is not None:
        return late
    delete_lost(run, item.record, item.lost)
    record_adoptions(run, item.record, run.found[item.record.name])
    if isinstance(item, Cleanup):
        item.outcome.reasons += facts(lost_reason(item.lost))
        item.outcome.retired_keys = sorted(item.lost)
        return item.outcome
    if isinstance(item, Settling):
        return replace(item, reasons=(*item.reasons, *facts(lost_reason(item.lost))))
    return rotate(run, item)


def check_of(item: Stored | Settling) -> Check | None:
    """The key to authenticate before retiring anything: the new key, or the key the secret now holds."""
    if isinstance(item, Stored):
        return Check(item.record, item.new_key)
    key = held_key(item.record)
    return Check(item.record, key) if key else None


def finish(run: Run, item: Stored | Settling, problems: dict[str, str]) -> Outcome:
    """Last pass: retire old keys of a verified secret, or keep them through the grace period."""
    if isinstance(item, Settling):
        return settle(run, item, problems)
    record, plan, new_key, own = item.record, item.plan, item.new_key, item.effective
    if record.name in problems:
        raise RotationError(record.name, f"new key {new_key.key_id} is stored, but {problems[record.name]}; old key "
                                         "left Active, the next run verifies again before retiring it",
                            stored_key_id=new_key.key_id)
    keep_until = None
    if own.grace_hours > 0 and plan.deactivate_after and not item.at_once:
        keep_until = iso(run.clock.now() + timedelta(hours=own.grace_hours))
        retire_keys(run.clients, record, (), plan.delete_after)
    else:
        retire_keys(run.clients, record, plan.deactivate_after, plan.delete_after)
    retired = [*sorted(item.lost), *plan.deactivate_first, *plan.delete_first, *plan.delete_after,
               *(plan.deactivate_after if keep_until is None else ())]
    reasons, adopted_end = list(item.reasons), None
    if item.adopted:
        since = item.adopted_since or run.clock.now()
        adopted_end = iso(adopted_until(since, run.settings.max_grace_hours))
        reasons.append(f"key {item.adopted[0]} is held by no secret but in use: kept Active until {adopted_end}")
    outcome = Outcome(secret=record.name, status=Status.ROTATED, user=record.user_name,
                      old_key_id=record.held_key_id, new_key_id=new_key.key_id,
                      steps=plan.steps(new_key.key_id, keep_until), retire_after=adopted_end or keep_until,
                      adopted=item.adopted[0] if item.adopted else None, reasons=reasons, retired_keys=retired)
    log_action("rotated", secret=record.name, user=record.user_name, old_key_id=record.held_key_id,
               new_key_id=new_key.key_id, retire_after=outcome.retire_after, adopted=outcome.adopted)
    return outcome


CPU_SECONDS_PER_ROTATION = 0.017  # measured by make bench on a 2-core machine: a run is CPU-bound
FULL_VCPU_MB = 1769  # Lambda gives one vCPU at this memory size, proportionally less below


def capacity(memory_mb: float, seconds: float) -> int:
    """How many rotations an invocation can do in ``seconds`` at ``memory_mb`` (CPU-bound)."""
    return int(seconds * min(1.0, memory_mb / FULL_VCPU_MB) / CPU_SECONDS_PER_ROTATION)


def warn_if_too_many(count: int, context: Any, memory: Any) -> None:
    """A WARNING when the secrets selected cannot all be rotated in the time this memory size allows.
    Advisory: a context that cannot say (or fails to) changes nothing."""
    try:
        memory_mb = float(memory) if isinstance(memory, int | float | str) and memory else None
        left = time_left(context) if memory_mb else None
    except Exception:  # a stand-in context's clock may fail: the run's own checks report that
        return
    if left is None or memory_mb is None:
        return
    fits = capacity(memory_mb, left)
    if count > fits:
        log_action("too_many_secrets", logging.WARNING, selected=count, fit=fits, memory_mb=memory_mb,
                   message=f"{count} secrets selected, but about {fits} rotations fit in the time left at "
                           f"{memory_mb:g} MB (CPU-bound); raise the memory size or split the secrets")


def bounded(run: Run, step: Callable[..., Any]) -> Callable[[Any], Any]:
    """One secret's step under TIME_MARGIN_SECONDS, every attempt of every call (a clean-up's reserve inside)."""
    def run_one(item: Any) -> Any:
        with run.clients.budget.deadline(run.settings.time_margin, reserve=CLEANUP_SECONDS):
            return step(run, item)
    return run_one


def waves_of(assessed: list[Any], limit: int) -> list[list[int]]:
    """The blast-radius limit's waves: the first holds the first ``limit`` rotations that will act (and whatever
    else comes before the last of them), the second the rest. Outcomes are in neither."""
    todo = [i for i, item in enumerate(assessed) if not isinstance(item, Outcome)]
    acting = [i for i in todo if isinstance(assessed[i], Rotate) and not assessed[i].effective.dry_run]
    if limit <= 0 or len(acting) <= limit:
        return [todo]
    cut = acting[limit - 1]
    return [[i for i in todo if i <= cut], [i for i in todo if i > cut]]


def rotate_wave(run: Run, items: list[Any], map_: Callable) -> list[Outcome]:
    """Act on each, verify every new (or current) key together, finish each."""
    started = list(map_(isolated(name_of, bounded(run, act)), items))
    to_check = [s for s in started if isinstance(s, Stored | Settling)]
    checks = [c for c in map(check_of, to_check) if c is not None]
    try:
        # The keys wait out IAM's propagation delay together, not one after another.
        problems = verify_keys(run.clients, checks, run.settings.verify_timeout, run.clock, map_)
    except Exception as err:
        problems = {c.record.name: f"verification failed: {describe_error(err)}" for c in checks}
    outcomes = list(map_(isolated(name_of, bounded(run, lambda r, item: finish(r, item, problems))), started))
    for outcome, item in zip(outcomes, started, strict=True):
        if isinstance(item, Stored) and outcome.status == Status.FAILED:
            run.count_failure(outcome.reason or outcome.secret)
    return outcomes


def rotate_in_waves(run: Run, decided: list[Any], map_: Callable, assess_one: Callable = assess) -> list[Outcome]:
    """Assess every claimed secret (reads only), then act in waves: the first MAX_FAILURES rotations that will
    act are made and verified before the rest start, so a fault present from the start (an SCP denying STS, a
    disabled KMS key) leaves at most that many rotations half done; once MAX_FAILURES rotations that acted have
    failed, no new one starts."""
    results: list[Any] = list(map_(isolated(name_of, bounded(run, assess_one)), decided))
    for wave in waves_of(results, run.settings.max_failures):
        for index, outcome in zip(wave, rotate_wave(run, [results[i] for i in wave], map_), strict=True):
            results[index] = outcome
    return results


def rotate_claimed(run: Run, read: list[Any], map_: Callable, assess_one: Callable = assess) -> list[Outcome]:
    """The claimed secrets' ordinary work: decide in order (users claimed once), assess, act in waves."""
    decided = [isolated(name_of, lambda r: decide(run, r))(item) for item in read]
    return rotate_in_waves(run, decided, map_, assess_one)


def rolled_back(run: Run, read: list[Any], map_: Callable) -> list[Outcome]:
    """``{"rollback": [...]}``'s work: each named secret back to AWSPREVIOUS's key (``rollback_secret``)."""
    return list(map_(isolated(name_of, lambda r: rollback_secret(run, r)), read))


@dataclass(frozen=True)
class Work:
    """What an entry point asks of the core (``run_work``): the secrets it acts on (and those of them only
    ListSecrets found), those read only as holders, outcomes it made itself, and its own three steps: which
    secrets read act (``claim``), how the claimed ones are worked (``work``), what it adds to the outcomes
    (``answer``). The passes never ask which entry point asked."""

    acting: list[str]
    listed: frozenset[str] = frozenset()
    holders_only: list[str] = field(default_factory=list)
    made: list[Outcome] = field(default_factory=list)
    claim: Callable[[Run, list[Any]], list[Any]] = lambda run, read: read
    work: Callable[[Run, list[Any], Callable], list[Outcome]] = rotate_claimed
    answer: Callable[[Run, list[Any], list[Outcome]], None] = lambda run, read, outcomes: None


def batch_work(run: Run) -> Work:
    """The batch's entry points (the schedule, the console, the CLI): every secret ``sec`` selects; a targeted
    run the named ones (every secret sec selects is read as a holder too); ``{"rollback": [...]}`` rolls back."""
    settings = run.settings
    wanted = settings.rollback or settings.targets
    secret_ids, listed = resolve_secret_ids(settings, run.clients, wanted)
    holders_only = holder_ids(settings, run.clients, secret_ids) if wanted else []
    return Work(secret_ids, listed, holders_only, work=rolled_back if settings.rollback else rotate_claimed)


def run_work(run: Run, work: Work) -> list[Outcome]:
    """The core: read every secret, claim, authorise, then the entry point's work (decide, assess, act in waves:
    start, verify together, finish); its answer; who still uses a key (CloudTrail); last, the deadline's
    figures for every secret."""
    settings, context = run.settings, run.context
    workers = max(1, min(settings.max_workers, len(work.acting) + len(work.holders_only)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rotate") as pool:
        everything = read_secrets(run.clients, work.acting + work.holders_only, pool.map, work.listed)
        run.add_holders(everything)
        read = work.claim(run, everything[:len(work.acting)])
        warn_if_too_many(len(work.acting), context, getattr(context, "memory_limit_in_mb", None))
        # Read each user's tag once, in parallel, before the in-order decide pass uses it.
        list(pool.map(isolated(name_of, run.refusal), read))
        outcomes = work.work(run, read, pool.map) + work.made
    work.answer(run, read, outcomes)
    look_up_holdouts(run, outcomes)
    report_compliance(run, read, outcomes)
    return outcomes


# ---------------------------------------------------------------------------
# 11. Leaks: AWS Health's exposed-key events and {"exposed": [...]}
# ---------------------------------------------------------------------------
# A leak is an entry point (``leak_work``): its event names keys, not secrets. It becomes the core's ordinary
# work: the secret each leaked key's user names (``exposure_of``: authority as everywhere else), a plan for that
# secret that replaces the held key now and retires leaked keys at once, never deleting one (``assess_exposed``,
# the items' at_once policy), and its outcomes marked with what was done and what is left (``answer_exposures``).


QUARANTINE_POLICY = "AWSCompromisedKeyQuarantine"  # AWS attaches it (or its V2, V3) to a user whose key leaked


def secret_name_of(arn: str) -> str:
    """A secret's name from its ARN (arn:...:secret:NAME-6 random characters)."""
    name = arn.split(":secret:", 1)[-1]
    return name[:-7] if len(name) > 7 and name[-7] == "-" else name


def selects(settings: Settings, arn: str) -> bool:
    """Does ``sec`` select this secret (by ARN, name or prefix)? An event never widens what may be touched."""
    name = secret_name_of(arn)
    return any(arn == entry or name == entry or (entry.endswith("*") and name.startswith(entry[:-1]))
               for entry in settings.secret_ids)


def as_selected(settings: Settings, arn: str) -> str:
    """A secret as ``sec`` names it, the name every entry point reports it by: its ARN where ``sec`` lists the
    ARN, else its name (an entry by name, or found by a prefix, as the batch lists it)."""
    return arn if arn in settings.secret_ids else secret_name_of(arn)


def own_secret(run: Run, arn: str) -> bool:
    """Is the secret in this function's region (and, when the context says, account)?"""
    parts = arn_fields(arn)
    account = account_of(getattr(run.context, "invoked_function_arn", None))
    return len(parts) >= 7 and parts[3] == run.clients.secrets.meta.region_name and account in (None, parts[4])


def unmanaged_exposure(key_id: str, user: str | None) -> Outcome:
    """A leaked key no authorised secret holds: whose it is, and that nothing changed; nothing more (no use, no
    CloudTrail lookup: the function has no business reading who uses a key it does not manage)."""
    return Outcome(secret=f"exposed key {key_id}", status=Status.SKIPPED, user=user, leak=Leak(key_id),
                   reasons=[f"key {key_id} of IAM user {user!r} is exposed, but no secret "
                   "this function manages names the user back; nothing changed: give its consumers a new key, then "
                   "deactivate it (never delete it: it is evidence)"])


def exposure_of(run: Run, key_id: str) -> Outcome | str | None:
    """Whose leaked key this is (GetAccessKeyLastUsed names the user) and which secret manages it: the one the
    user's key-rotation-secret tag names, if ``sec`` selects it (authority as everywhere else). With the
    user-tag guard off, as in the batch, any secret ``sec`` selects that names the user (None: found once they
    are read). Else a report of the key that changes nothing."""
    iam, unmanaged = run.clients.iam, unmanaged_exposure(key_id, None)
    try:
        used = iam.get_access_key_last_used(AccessKeyId=key_id)
        user = used.get("UserName")
        tags = {t["Key"]: t["Value"] for t in iam.list_user_tags(UserName=user)["Tags"]} if is_user_name(user) else {}
    except Exception as err:
        unmanaged.status, unmanaged.reasons = Status.FAILED, [
            f"cannot tell whose key {key_id} is ({describe_error(err, 'GetAccessKeyLastUsed')}): the role reads only "
            "the keys of users tagged key-rotation-secret; nothing changed"]
        return unmanaged
    named = tags.get(USER_TAG)
    if is_user_name(user):  # read once: the guard's authority check and the owner's tag use them
        run.user_tags[user.casefold()] = tags
    if not run.settings.require_user_tag and is_user_name(user):
        run.exposed.setdefault(user.casefold(), set()).add(key_id)
        return None
    if named and selects(run.settings, named) and own_secret(run, named):
        run.exposed.setdefault(user.casefold(), set()).add(key_id)
        run.exposures[key_id] = as_selected(run.settings, named)
        return run.exposures[key_id]
    return unmanaged_exposure(key_id, user)


def naming_leaked_users(run: Run, read: list[Any]) -> list[Any]:
    """With the user-tag guard off: of the secrets read, those naming a leaked key's user act on it (the first
    one per user, as ``decide`` claims users in the batch); the others only hold their users' keys."""
    if run.settings.require_user_tag:
        return read
    acting = [r for r in read if not isinstance(r, SecretRecord) or r.user_name.casefold() in run.exposed]
    for record in (r for r in acting if isinstance(r, SecretRecord)):
        for key_id in run.exposed[record.user_name.casefold()]:
            run.exposures.setdefault(key_id, record.name)
    return acting


def quarantined(run: Run, user: str) -> bool | None:
    """Has AWS attached its quarantine policy to the user (it denies some actions to every key of the user, the
    new one too)? None: not known (the role lacks iam:ListAttachedUserPolicies, or the call failed)."""
    try:
        attached = run.clients.iam.list_attached_user_policies(UserName=user).get("AttachedPolicies", [])
    except Exception as err:
        log_action("quarantine_unknown", logging.WARNING, user=user, error=describe_error(err))
        return None
    return any(str(p.get("PolicyName", "")).startswith(QUARANTINE_POLICY) for p in attached)


def another_users_secret(key_id: str, user: str, record: SecretRecord) -> Outcome:
    """A leaked key whose user's tag names a secret that holds another user's keys: not this key's to answer."""
    return Outcome(secret=f"exposed key {key_id}", status=Status.FAILED, user=user, leak=Leak(key_id),
                   reasons=[f"key {key_id} of IAM user {user!r} is exposed and NOT revoked: "
                   f"the user's tag names secret {record.name!r}, which holds IAM user {record.user_name!r}'s keys; "
                   "nothing changed for it: give its consumers a new key, then deactivate it"])


def answer_exposures(run: Run, records: list[Any], outcomes: list[Outcome]) -> None:
    """Mark every outcome of a leak: each key with its own user's secret only (a key whose tag names a secret of
    another user is refused on its own), whether AWS quarantined the user, where CloudTrail's lookup starts (the
    key's creation; none for a key no authorised secret holds); a WARNING for each, loudest for one a hold kept
    from being revoked."""
    read = {r.name: r for r in records if isinstance(r, SecretRecord)}
    by_secret = {o.secret: o for o in outcomes}
    for user, leaked in run.exposed.items():  # every leaked key's secret says so, whatever became of it
        for key_id in sorted(leaked):
            record = read.get(run.exposures.get(key_id, ""))
            if key_id not in run.exposures:  # the guard off, and no secret sec selects names the user
                outcomes.append(unmanaged_exposure(key_id, user))
            elif record is not None and record.user_name.casefold() != user:
                outcomes.append(another_users_secret(key_id, user, record))
            elif record is not None and record.name in by_secret and by_secret[record.name].leak is None:
                by_secret[record.name].leak = Leak(key_id)
    for outcome in outcomes:
        if outcome.leak is None:
            continue
        key_id, record = outcome.leak.key_id, read.get(outcome.secret)
        if outcome.status in FAILING and outcome.secret == run.exposures.get(key_id):
            outcome.reasons = [f"exposed key {key_id} NOT replaced: {outcome.reason}"]
        if record is not None and record.name in run.found:  # else no authorised secret holds it: no detail
            found = find_key(run.keys_of(record), key_id)
            outcome.in_use_since = found.created if found else run.clock.now() - timedelta(days=90)
            outcome.leak.quarantined = quarantined(run, outcome.user) if is_user_name(outcome.user) else None
        held = outcome.status in (Status.SKIPPED, Status.PLANNED) and record is not None
        log_action("exposed_key_held" if held else "exposed_key", logging.WARNING, secret=outcome.secret,
                   user=outcome.user, key_id=key_id, status=str(outcome.status), quarantined=outcome.leak.quarantined,
                   message=f"exposed key {key_id}: {outcome.reason or outcome.status}")


def assess_exposed(run: Run, record: SecretRecord, found_now: Assessing,
                   leaked: set[str]) -> Outcome | Settling | Rotate:
    """Leaked keys of this secret's user. The key the secret holds is replaced now, whatever its age, and
    deactivated once the new key authenticates (force's plan: a previous key in the way is retired first); a
    previous or adopted key is deactivated once the current key authenticates. A leaked key is never deleted (it
    is evidence), nor a person's key in use freed for room: then the key the secret holds is NOT replaced, the
    other leaked keys are still deactivated, and the reason says what is in the way."""
    own, keys, token, holders = found_now.effective, found_now.keys, found_now.token, found_now.holders
    # a leak answers now: a key made just after the function's mark that IAM shows never used is taken for its own
    holders = replace(holders, lost=holders.lost | frozenset(holders.unproven), unproven={})
    # IAM's list lags a change by minutes: a key listed Inactive may have just been turned on (a rollback, a
    # person), one not listed just made. So nothing is claimed done on the list's word: a listed key of the leak is
    # deactivated whatever status the list gives (a no-op on an Inactive key), and one not listed is said NOT done
    listed = sorted(k for k in leaked if find_key(keys, k) is not None)
    unlisted = sorted(k for k in leaked if find_key(keys, k) is None)  # IAM named its user: it exists
    held = find_key(keys, record.held_key_id)
    if not listed or (record.held_key_id in leaked and held is not None and not held.active):
        seen = (f"IAM lists key {record.held_key_id}, the one the secret holds, as {held.status}" if listed
                else f"IAM does not list key {', '.join(unlisted)}")
        raise RotationError(record.name, f"{seen} (its list lags a change by minutes): if it is Active, send the "
                                         "event again in a few minutes")
    active = sorted(k for k in listed if find_key(keys, k).active)
    others, why = [k for k in listed if k != record.held_key_id], None
    if record.held_key_id in active:
        rest = [k for k in keys if k.key_id not in holders.lost]
        plan = plan_rotation(rest, holders, force=True)
        # the old key of the function's last create, unheld after a writer's re-save, is freed as a labelled
        # previous key would be; a person's key in use is not
        in_the_way = sorted(set(plan.delete_first) & leaked) + [k for k in [plan.freed_adopted]
                                                                if k and k not in holders.retiring]
        why = plan.blocked or (in_the_way and f"no room without deleting {', '.join(in_the_way)} (a leaked key is "
                                             "evidence; an adopted one is someone's key in use)")
        log_action("plan", secret=record.name, user=record.user_name, held_key_id=record.held_key_id,
                   exposed=active, steps=plan.steps(), dry_run=own.dry_run, blocked=why or None)
        if not why:
            kept = tuple(k for k in holders.adopted if k != plan.freed_adopted and find_key(rest, k))
            reasons = (f"key {record.held_key_id} was exposed: replaced now and deactivated at once, whatever its "
                       "age or GRACE_HOURS",)
            return Rotate(record, own, rest, holders, plan, token, kept, reasons, lost=holders.lost,
                          at_once=True)
    if not others:  # (a leak's failure says NOT replaced: ``answer_exposures``)
        raise RotationError(record.name, f"{why}: make room by hand and send the event again")
    not_replaced = (f"exposed key {record.held_key_id} NOT replaced: {why}: make room by hand and send the "
                    "event again") if why else None
    done = f"key {', '.join(others)} was exposed: deactivated at once, no grace period and no usage gate"
    return Settling(record, others[0], own, tuple(facts(done, not_replaced)), lost=holders.lost,
                    at_once=True, also=tuple(others[1:]))


def assess_leaked(run: Run, record: SecretRecord) -> Outcome | Settling | Rotate:
    """A leak's assessment: the same reads as every assessment, then the leak's plan for this user's keys."""
    found_now = assessing(run, record)
    leaked = run.exposed.get(record.user_name.casefold())
    if not leaked:
        return skipped(record, "names another user than the leaked key's; not acted on")
    return assess_exposed(run, record, found_now, leaked)


def leak_work(run: Run) -> Work:
    """The leak's entry point: the secret each leaked key's user names (with the guard off, every secret sec
    selects, as in the batch: those naming a leaked key's user act, ``naming_leaked_users``); every secret sec
    selects is read as a holder; a key no secret may answer for is reported as it is."""
    settings = run.settings
    found = [exposure_of(run, key_id) for key_id in settings.exposed]
    secret_ids, listed = list(dict.fromkeys(f for f in found if isinstance(f, str))), frozenset()
    if None in found:  # the guard off: every secret sec selects may name a leaked key's user, as in the batch
        secret_ids, listed = resolve_secret_ids(settings, run.clients, None)
    return Work(secret_ids, listed, holder_ids(settings, run.clients, secret_ids),
                [f for f in found if isinstance(f, Outcome)], claim=naming_leaked_users,
                work=lambda r, read, map_: rotate_claimed(r, read, map_, assess_leaked), answer=answer_exposures)


# ---------------------------------------------------------------------------
# 12. Notices: the summary, metrics, SNS and EventBridge
# ---------------------------------------------------------------------------


METRICS = {"Rotated": "rotated", "Retired": "retired", "Waiting": "waiting", "ForcedWhileInUse": "forced_in_use",
           "RolledBack": "rolled_back", "Skipped": "skipped", "Failed": "failed", "Succeeded": "succeeded",
           "OverdueKeys": "overdue_keys", "StoppedEarly": "stopped_early",
           "UnmanagedOverdueKeys": "unmanaged_overdue_keys", "OldestKeyAgeDays": "oldest_key_age_days"}
GAUGES = frozenset({"OldestKeyAgeDays"})  # a level, not a count: read with Maximum (days, unit None)


@dataclass(frozen=True)
class RunCounts:
    """The run's counts, from its typed outcomes (``run_counts``): the summary's, the run_complete line's, the
    metrics' (METRICS names each field) and the Access Keys Checked event's figures."""

    rotated: int = 0
    retired: int = 0
    waiting: int = 0
    rolled_back: int = 0
    skipped: int = 0
    planned: int = 0
    failed: int = 0  # failed and not attempted
    forced_in_use: int = 0
    overdue_keys: int = 0
    stopped_early: int = 0
    unmanaged_overdue_keys: int = 0
    oldest_key_age_days: float = 0


def run_counts(outcomes: list[Outcome], account: AccountReport | None) -> RunCounts:
    ages = [o.deadline.key_age_days for o in outcomes if isinstance(o.deadline.key_age_days, int | float)]
    return RunCounts(**{str(status): sum(o.status == status for o in outcomes) for status in Status
                        if status not in FAILING},
                     failed=sum(o.status in FAILING for o in outcomes),
                     forced_in_use=sum(o.forced_in_use for o in outcomes),
                     overdue_keys=sum(o.deadline.overdue_keys for o in outcomes),
                     stopped_early=int(any(o.stopped_early for o in outcomes)),
                     unmanaged_overdue_keys=len(account.overdue_unmanaged) if account else 0,
                     oldest_key_age_days=max(ages, default=0))


def emit_metrics(counts: dict[str, int], namespace: str, function_name: str | None,
                 metrics: Mapping[str, str] = METRICS) -> None:
    """Print one CloudWatch Embedded Metric Format line with the run's counts."""
    values = {metric: counts[key] for metric, key in metrics.items()}
    dimensions = {"FunctionName": function_name or "local"}
    document = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [{"Namespace": namespace, "Dimensions": [list(dimensions)],
                                   "Metrics": [{"Name": name, "Unit": "None" if name in GAUGES else "Count"}
                                               for name in values]}],
        },
        **dimensions,
        **values,
    }
    # stdout, not the logger: EMF needs the JSON alone on its log line.
    print(json.dumps(document), flush=True)


WHAT_TO_DO = {
    Status.FAILED: "read the reason; the secret still holds a working key",
    Status.NOT_ATTEMPTED: "raise the function's timeout or split the secrets",
    Status.WAITING: "move consumers still using the old key to the secret's current value",
    Status.RETIRED: "nothing; the old key is Inactive and the next rotation deletes it",
    Status.ROTATED: "nothing; consumers read the new key from the secret",
    Status.ROLLED_BACK: "fix the consumers; tag the secret key-rotation:mode=skip to hold rotation meanwhile",
}


EVENT_SOURCE = "key-rotation"
# Most significant first: an entry's detail-type is the first that applies.
DETAIL_TYPES: tuple[tuple[str, Callable[[Outcome], bool]], ...] = (
    ("Access Key Exposed", lambda o: o.leak is not None),
    ("Access Key Rotated", lambda o: o.status == Status.ROTATED),
    ("Previous Access Key Retired", lambda o: o.status == Status.RETIRED),
    ("Access Key Rolled Back", lambda o: o.status == Status.ROLLED_BACK),
    ("Access Key Rotation Failed", lambda o: o.status in FAILING),
    ("Previous Access Key Still In Use", lambda o: o.still_in_use),
    ("Access Key Overdue", lambda o: o.deadline.overdue),
)
EVENTS_PER_CALL = 10  # PutEvents' most entries a call
PUT_EVENTS_BYTES = 256 * 1024  # PutEvents' largest request, its entries' sizes added up as AWS counts them
EVENT_TEXT = 2048  # characters kept of any one text field of an event (a reason, a name): fields clipped, marked


def clip_text(text: str, most: int) -> str:
    """At most ``most`` characters, marked where cut."""
    return text if len(text) <= most else text[:most - 12] + "...(clipped)"


def event_entries(settings: Settings, outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """One PutEvents entry per secret whose keys changed, that failed, whose old key is still in use, or that
    is overdue. Ids and names only: never a secret value."""
    made = []
    for o in outcomes:
        detail_type = next((name for name, applies in DETAIL_TYPES if applies(o)), None)
        if detail_type is None:
            continue
        previous = o.retired_key_id or (o.old_key_id if o.old_key_id != o.current_key_id else None)
        detail = {"secret_arn": o.secret_arn, "secret": o.secret, "user": o.user, "status": str(o.status),
                  "current_key_id": o.current_key_id, "previous_key_id": previous, "retire_after": o.retire_after,
                  "reason": o.reason, "overdue": o.deadline.overdue, "holdouts": [h.row() for h in o.holdouts or []],
                  "forced_in_use": o.forced_in_use, "key_age_days": o.deadline.key_age_days,
                  **({"exposed": True, "exposed_key_id": o.leak.key_id, "quarantined": o.leak.quarantined}
                     if o.leak else {})}
        clipped = {k: clip_text(v, EVENT_TEXT) if isinstance(v, str) else v for k, v in detail.items()}
        if clipped != detail:
            clipped["clipped"] = True  # a consumer knows a field is cut short, and reads the summary for the rest
        arn = o.secret_arn
        made.append({"Source": EVENT_SOURCE, "DetailType": detail_type, "Detail": json.dumps(clipped),
                     "EventBusName": settings.event_bus,
                     **({"Resources": [clip_text(arn, EVENT_TEXT)]} if arn else {})})
    return made


def entry_size(entry: dict[str, Any]) -> int:
    """An entry's size as PutEvents counts it: 14 bytes of time, then the UTF-8 of its texts."""
    texts = [entry.get("Source", ""), entry.get("DetailType", ""), entry.get("Detail", ""),
             *entry.get("Resources", [])]
    return 14 + sum(len(t.encode()) for t in texts)


def put_batches(made: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The entries in calls of at most EVENTS_PER_CALL entries and PUT_EVENTS_BYTES."""
    batches: list[list[dict[str, Any]]] = []
    size = 0
    for entry in made:
        if not batches or len(batches[-1]) >= EVENTS_PER_CALL or size + entry_size(entry) > PUT_EVENTS_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(entry)
        size += entry_size(entry)
    return batches


def put_batch(clients: Clients, batch: list[dict[str, Any]]) -> int:
    """One PutEvents call (and its retries, as above); how many entries were not put."""
    for attempt in (1, 2):
        try:
            answer = clients.events.put_events(Entries=batch)
        except Exception as err:
            if len(batch) > 1 and is_definite_refusal(err):  # the request as a whole: each entry on its own
                return sum(put_batch(clients, [entry]) for entry in batch)
            log_action("events_failed", logging.WARNING, entries=len(batch), error=describe_error(err, "PutEvents"))
            return len(batch)
        results = answer.get("Entries", [])
        refused = [e for e, result in zip(batch, results, strict=False) if result.get("ErrorCode")]
        refused += batch[len(results):]  # entries the answer does not account for
        if not refused:
            return 0
        if attempt == 2:
            log_action("events_failed", logging.WARNING, entries=len(refused),  # what each was for, as made
                       refused=[(e.get("Resources") or [e["DetailType"]])[0] for e in refused])
            return len(refused)
        batch = refused
    return 0


# The code's own version: the first 16 hex digits of this file's SHA-256, as make org-package names the zip
# (iam-key-rotation/<version>.zip), so make org-report shows which code each account runs.
def code_version() -> str:
    """This file's version (its loader's reading of it: a zip's or a task directory's), or "unknown"."""
    try:
        return hashlib.sha256(__loader__.get_data(__file__)).hexdigest()[:16]
    except (AttributeError, OSError):
        return "unknown"


CODE_VERSION = code_version()  # read once, at import
REPLACEABLE = "Access Keys Replaceable"  # the roles report: which keys a role could replace, for a dashboard
REPLACEABLE_ROWS = 100  # keys per "Access Keys Replaceable" event (clipped fields: within PutEvents' 256 KiB)
CHECKED = "Access Keys Checked"  # a run's state: each secret it checked, its key age and next rotation
CHECKED_ROWS = 200  # secrets per "Access Keys Checked" event: about 150 KB at most, within PutEvents' 256 KiB


def checked_entries(settings: Settings, outcomes: list[Outcome], counts: RunCounts, run_id: str,
                    unmanaged_known: bool = True) -> list[dict[str, Any]]:
    """A run's "Access Keys Checked" events, for the organisation's report and dashboard: each secret's user,
    status, key age, next rotation and whether it is overdue, CHECKED_ROWS a part; ids and names only. A run
    over some secrets (targeted, rollback, leak) is marked ``partial``: its secrets' state is newer than the
    last whole run's, its counts are not the account's (the dashboard reads whole runs only). A partial run that
    checked no secret sends nothing. ``unmanaged_known``: the credential report was read (else that count is
    null: not known, never 0)."""
    whole = is_whole_run(settings)
    if not whole and not outcomes:
        return []
    rows = [{"secret": clip_text(o.secret, EVENT_TEXT), "user": clip_text(o.user or "", EVENT_TEXT),
             "status": str(o.status), "key_age_days": o.deadline.key_age_days,
             "next_rotation": o.deadline.next_rotation, "overdue": o.deadline.overdue,
             "owner": clip_text(o.owner or "", EVENT_TEXT)} for o in outcomes]
    parts = [rows[i:i + CHECKED_ROWS] for i in range(0, len(rows), CHECKED_ROWS)] or [[]]
    read = settings.account_report and unmanaged_known
    common = {"run": run_id, "parts": len(parts), "code": CODE_VERSION, "version": __version__,
              "dry_run": settings.dry_run,
              "secrets_checked": len(rows), "oldest_key_age_days": counts.oldest_key_age_days,
              "overdue_keys": counts.overdue_keys, "failed": counts.failed,
              "unmanaged_overdue_keys": counts.unmanaged_overdue_keys if read else None,
              **({} if whole else {"partial": True})}
    return [{"Source": EVENT_SOURCE, "DetailType": CHECKED, "Detail": json.dumps({**common, "part": number,
                                                                                   "secrets": part}),
             "EventBusName": settings.event_bus} for number, part in enumerate(parts, start=1)]


REPLACEABLE_TEXT = 256  # characters of one text of a key's row (a note, a user agent): many rows share an event
REPLACEABLE_BYTES = 200 * 1024  # a part's keys at most: within PutEvents' 256 KiB with its other fields


def replaceable_parts(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The keys' rows in parts of at most REPLACEABLE_ROWS rows and REPLACEABLE_BYTES."""
    parts: list[list[dict[str, Any]]] = [[]]
    size = 0
    for row in rows:
        row_size = len(json.dumps(row).encode())
        if parts[-1] and (len(parts[-1]) >= REPLACEABLE_ROWS or size + row_size > REPLACEABLE_BYTES):
            parts.append([])
            size = 0
        parts[-1].append(row)
        size += row_size
    return parts


def replaceable_entries(settings: Settings, roles: RolesReport, run_id: str) -> list[dict[str, Any]]:
    """The roles report's "Access Keys Replaceable" events: the verdicts and regions read in each, the keys in
    parts (``replaceable_parts``), every text clipped (a row's to REPLACEABLE_TEXT, at most 5 items a list);
    ids, names and counts only."""
    def clipped(value: Any, most: int, items: int) -> Any:
        if isinstance(value, str):
            return clip_text(value, most)
        if isinstance(value, list):
            return [clipped(v, most, items) for v in value[:items]]
        return {k: clipped(v, most, items) for k, v in value.items()} if isinstance(value, dict) else value

    parts = replaceable_parts([clipped(row, REPLACEABLE_TEXT, 5) for row in roles.keys])
    common = {"run": run_id, "parts": len(parts), "version": __version__,
              "regions_read": roles.regions_read, "lookback_days": roles.lookback_days,
              "verdicts": clipped(roles.verdicts, EVENT_TEXT, 20), "not_read_this_run": len(roles.not_read_this_run)}
    return [{"Source": EVENT_SOURCE, "DetailType": REPLACEABLE,
             "Detail": json.dumps({**common, "part": number, "keys": part}), "EventBusName": settings.event_bus}
            for number, part in enumerate(parts, start=1)]


def publish_events(clients: Clients, settings: Settings, outcomes: list[Outcome],
                   more: list[dict[str, Any]] = ()) -> int:
    """Put the run's events (and ``more``, made already), in calls within PutEvents' limits; an entry refused
    in a partial failure is retried once, and a call refused whole is tried again one entry a call, so one bad
    entry never costs another its delivery. A failure to publish never fails a rotation: it is logged, and the
    entries not put are counted."""
    if not settings.event_bus:
        return 0
    made = event_entries(settings, outcomes) + list(more)
    return sum(put_batch(clients, batch) for batch in put_batches(made))


def emit_events_metric(failed: int, settings: Settings, function_name: str | None) -> None:
    """EventsFailed, per run (EMF), only when events are published at all."""
    if settings.event_bus:
        emit_metrics({"events_failed": failed}, settings.metrics_namespace, function_name,
                     {"EventsFailed": "events_failed"})


SNS_MESSAGE_LIMIT = 256 * 1024  # bytes: SNS refuses a larger message
SNS_MESSAGE_ROOM = SNS_MESSAGE_LIMIT - 4 * 1024  # what the lines may use, leaving room for the counts and the tail
SNS_LINE = 4096  # characters of one secret's line at the most (clipped, marked): no one secret crowds out the rest


def fit_message(counts: RunCounts, ordered: list[str]) -> str:
    """The notification within SNS's limit: the counts, then the lines in their order (the caller puts failures
    first), as many as fit, then where to find the rest."""
    said_counts = ", ".join(f"{k} {getattr(counts, k)}" for k in ("rotated", "retired", "waiting", "rolled_back",
                                                                  "failed") if getattr(counts, k))
    kept, size = [], 0
    for line in ordered:
        size += len(line.encode()) + 1
        if size > SNS_MESSAGE_ROOM:
            break
        kept.append(line)
    message = "\n".join([f"IAM key rotation: {said_counts}", *kept])
    if len(kept) < len(ordered):
        message += (f"\n... and {len(ordered) - len(kept)} more secrets: the run's summary (the function's "
                    "answer) and its log line run_complete list every one")
    return message


def exposure_advice(outcome: Outcome) -> str:
    """What a leak's line adds: what was done, what is left to the operator."""
    if outcome.leak is None:
        return ""
    key, status = outcome.leak.key_id, outcome.status
    done = {Status.ROTATED: f"replaced by {outcome.new_key_id} and deactivated (not deleted: it is evidence); "
                            "a consumer still on it is broken until it reads the secret again",
            Status.RETIRED: "deactivated (not deleted: it is evidence)"}.get(status, "NOT revoked: see the reason")
    quarantine = {True: " AWS attached its quarantine policy to the user: remove it once you have checked the "
                        "key's use (see the incident guide).",
                  None: " Whether AWS quarantined the user is not known."}.get(outcome.leak.quarantined, "")
    return f". EXPOSED key {key}: {done}. Check who used it (the holdouts above, CloudTrail).{quarantine}"


def notify(clients: Clients, settings: Settings, outcomes: list[Outcome], counts: RunCounts) -> None:
    """One SNS message per run that rotated, retired, waited on or failed anything (no secret values)."""
    if not settings.notify_topic_arn:
        return
    told = sorted((o for o in outcomes if o.status in WHAT_TO_DO or o.leak), key=lambda o: o.status not in FAILING)
    lines = [clip_text(f"{o.secret}: {o.status}" + (f" ({o.reason})" if o.reason else "")
                       + (f". Who still uses {o.old_key_id}: {describe_holdouts(o.holdouts)}" if o.holdouts else "")
                       + (f". Holdouts: {o.holdouts_note}" if o.holdouts_note else "")
                       + f". What to do: {WHAT_TO_DO.get(o.status, 'read the reason')}" + exposure_advice(o), SNS_LINE)
             for o in told]
    if not lines:
        return
    try:
        clients.sns.publish(TopicArn=settings.notify_topic_arn, Subject="IAM key rotation",
                            Message=fit_message(counts, lines))
    except Exception as err:  # a notice that failed must not fail the run it reports
        log_action("notify_failed", logging.WARNING, error=describe_error(err, "Publish"))


class Case(StrEnum):
    """What an owner is told about."""

    ADOPTED = "adopted"  # a key in use no secret held: kept until T, then deactivated; read the secret instead
    STILL_IN_USE = "still_in_use"  # a previous key still used after a rotation: deactivated at MAX_GRACE_HOURS
    EXPOSED = "exposed"  # a leaked key: replaced and deactivated, or NOT replaced and why
    NEARING_DEADLINE = "nearing_deadline"  # a key no secret holds, 15 and 7 days before MAX_KEY_AGE_DAYS, overdue
    FAILED = "failed"  # a rotation of the user failed: what was left as it was
    MALFORMED_TAG = "malformed_tag"  # a part of the owner tag that is neither an e-mail address nor a topic ARN


OWNER_SUBJECT = 99  # characters: SNS takes a subject "less than 100 characters" (ASCII, one line); SES the same
OWNER_BODY = 4000  # characters of a message: one screen, far within SES's 10 MB and SNS's 256 KB
OWNER_FIELD = 400  # characters of any one value put in a message (a reason, a name, who used a key)
OWNER_SHOWN = 254  # characters of an owner's address in the summary and the log (an e-mail address's most)
OWNER_FOOTER = ("You receive this because the IAM user's tag key-rotation-owner names this address. The key rotation "
                "function never sends a secret value: read the secret itself for the key.")


@dataclass(frozen=True)
class OwnerNotice:
    """One message to the owners of one user's key: each field made by the code, from ids, names and times."""

    user: str
    case: Case
    key_id: str | None
    subject: str
    body: str
    fact: str  # what it says, as one line: its digest marks it told for a redelivery of the run
    secret: str | None = None
    until: str | None = None  # when the key is deactivated, if it will be
    reminder: str | None = None  # which reminder this is ("72 hours", "7 days"...), None for the first word
    planned: bool = False  # a dry run (or the secret's dry-run tag): listed, not sent


def said(value: Any) -> str:
    """A value as a message shows it: printable, clipped."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value))
    return clip_text(text, OWNER_FIELD)


def owner_notice(user: str, case: Case, key_id: str | None, fact: str, subject: str, lines: tuple[str, str, str],
                 **more: Any) -> OwnerNotice:
    """A notice: its subject ASCII on one line within OWNER_SUBJECT; its body what happened, what will happen and
    when, and the one thing to do, within OWNER_BODY."""
    subject = "".join(ch if " " <= ch <= "~" else "?" for ch in subject)
    happened, will, todo = lines
    body = "\n\n".join([f"What happened: {happened}", f"What will happen: {will}", f"What to do: {todo}",
                        OWNER_FOOTER])
    return OwnerNotice(user, case, key_id, clip_text(subject, OWNER_SUBJECT), clip_text(body, OWNER_BODY), fact,
                       **more)


def last_use(run: Run, key_id: str) -> str:
    when, where = run.usage.get(key_id, (None, ""))
    return f"last used {iso(when)} by {said(where)}" if when else "IAM shows no use yet"


def adopted_notice(run: Run, record: SecretRecord, holders: Holders, outcome: Outcome, key: str,
                   anchor: datetime | None) -> OwnerNotice | None:
    """Case 1: a key in use that no secret held was adopted: told in the run that adopts it (the one that writes it
    into the user's key-rotation-adopted tag: a later or redelivered run finds it there), then reminded 72 and 24
    hours before it is deactivated while IAM shows it used since its adoption."""
    since, found = holders.adopted_since.get(key), find_key(run.keys_of(record), key)
    if since is None or found is None or not found.active or key in outcome.retired_keys \
            or f"deactivate {key}" in outcome.steps:
        return None
    planned = run.held_back(record)
    recorded = key in parse_adopted(run.tags(record).get(ADOPTED_TAG))  # the cached tags, as the run left them
    until = adopted_until(since, run.settings.max_grace_hours)
    when = run.usage.get(key, (None, ""))[0]
    used = when is not None and when >= since  # IAM shows it used since its adoption: someone still on it
    first = key in holders.adopted_new and (recorded or planned)
    left = next((h for h in (72, 24) if in_this_run(until - timedelta(hours=h), anchor)), None) if used else None
    if not first and left is None:
        return None
    user, secret, t = record.user_name, said(record.secret_name), iso(until)
    subject = (f"Action needed: key {key} is deactivated {t[:16]}Z (IAM user {user})" if first else
               f"Reminder, {left} h left: key {key} is deactivated {t[:16]}Z (IAM user {user})")
    happened = (f"access key {key} of IAM user {user} is Active and may be in use ({last_use(run, key)}), but no "
                f"secret held it. The key rotation function adopted it on {iso(since)}: the secret {secret} now holds "
                "this user's keys." if first else f"access key {key} of IAM user {user}, adopted on {iso(since)}, is "
                f"still in use ({last_use(run, key)}).")
    will = f"{key} stays Active until {t}; then it is deactivated, and whatever still uses it stops working."
    todo = (f"make every program that uses {key} read its access key from the secret {secret} ({said(record.arn)}) "
            f"instead, before {t}.")
    return owner_notice(user, Case.ADOPTED, key, f"adopted {key} {t} {left or 'first'}", subject,
                        (happened, will, todo), secret=record.secret_name, until=t,
                        reminder=f"{left} hours" if left else None, planned=planned)


def still_in_use_until(run: Run, record: SecretRecord, key_id: str, stored: datetime) -> datetime:
    """When a previous key still in use is deactivated anyway: MAX_GRACE_HOURS after the store, or the run before
    it would outlive MAX_KEY_AGE_DAYS (``past_deadline``), whichever is first."""
    until = stored + timedelta(hours=run.settings.max_grace_hours)
    key, max_age = find_key(run.keys_of(record), key_id), run.settings.max_key_age_days
    if key is not None and max_age > 0:
        until = min(until, key.created + timedelta(days=max_age) - SCHEDULE_PERIOD)
    return until


def who_uses(run: Run, outcome: Outcome) -> str:
    """Who still uses a key: CloudTrail's hosts and programs (LOOKUP_HOLDOUTS, or a leak), or why not known."""
    if outcome.holdouts:
        return said(describe_holdouts(outcome.holdouts))
    if outcome.holdouts_note:
        return said(outcome.holdouts_note)
    return "not looked up (LOOKUP_HOLDOUTS is off: ask the operator to turn it on to see which hosts and programs)"


def still_in_use_notice(run: Run, record: SecretRecord, outcome: Outcome,
                        anchor: datetime | None) -> OwnerNotice | None:
    """Case 2: a previous key still used after a rotation: told in the run its grace period ends in (the first
    that finds it used), reminded 24 hours before it is deactivated."""
    old, stored = outcome.old_key_id, outcome.in_use_since
    if outcome.status != Status.WAITING or not outcome.still_in_use or outcome.adopted or not old or stored is None:
        return None
    own = run.effective(record)
    grace = own.grace_hours if own is not None else run.settings.grace_hours
    until = still_in_use_until(run, record, old, stored)
    first = in_this_run(stored + timedelta(hours=grace), anchor)
    if not first and not in_this_run(until - timedelta(hours=24), anchor):
        return None
    user, secret, t = record.user_name, said(record.secret_name), iso(until)
    subject = (f"Action needed: old key {old} still in use, deactivated {t[:16]}Z (IAM user {user})"
               if first else f"Reminder, 24 h left: old key {old} is deactivated {t[:16]}Z (IAM user {user})")
    happened = (f"the secret {secret} was given a new access key, {outcome.new_key_id}, on {iso(stored)}. The "
                f"previous key, {old}, is still in use ({last_use(run, old)}). Who uses it: "
                f"{who_uses(run, outcome)}.")
    will = (f"{old} is deactivated on {t} (MAX_GRACE_HOURS={run.settings.max_grace_hours:g} after the new key was "
            "stored, or sooner if the account's key age limit comes first); whatever still uses it then stops "
            "working.")
    todo = (f"make those programs read the secret {secret} again (restart them, or have them fetch its value) "
            f"before {t}.")
    return owner_notice(user, Case.STILL_IN_USE, old, f"still_in_use {old} {t} {'first' if first else '24h'}",
                        subject, (happened, will, todo), secret=record.secret_name, until=t,
                        reminder=None if first else "24 hours",
                        planned=run.held_back(record))


def exposed_notice(run: Run, record: SecretRecord | None, outcome: Outcome) -> OwnerNotice | None:
    """Case 3: a leaked key: replaced and deactivated (or NOT, and why), who used it. Told in the leak's run."""
    key, user = outcome.leak.key_id if outcome.leak else None, outcome.user
    if not key or not is_user_name(user):
        return None
    secret = said(record.secret_name) if record is not None else None
    status = outcome.status
    done = {Status.ROTATED: f"it was replaced by a new key, {outcome.new_key_id}, in the secret {secret}, and "
                            f"{key} was deactivated (not deleted: it is evidence)",
            Status.RETIRED: f"{key} was deactivated (not deleted: it is evidence)"}.get(
        status, f"{key} was NOT replaced nor deactivated")
    happened = (f"access key {key} of IAM user {user} was reported exposed (leaked): {done}. "
                f"{said(outcome.reason or '')} Who used it: {who_uses(run, outcome)}.")
    revoked = status in (Status.ROTATED, Status.RETIRED)
    # a hold (a dry run, a skip or dry-run tag, Secrets Manager's own rotation) binds the owners' messages too: the
    # message is planned, and no mark is written on the user
    held = record is not None and (status in (Status.SKIPPED, Status.PLANNED)
                                   or run.held_back(record))
    will = (f"{key} stays Inactive: it works for no one any more." if revoked else
            f"{key} still works, for whoever holds it, until someone deactivates it.")
    todo = (f"make sure your programs read the secret {secret}; check in CloudTrail what was done with {key}."
            if revoked else f"ask the account's operator to replace and deactivate {key} now; until then treat "
                            "whatever it can reach as exposed.")
    subject = f"Exposed access key {key} " + ("replaced and deactivated" if status == Status.ROTATED else
                                              "deactivated" if revoked else "NOT revoked") + f" (IAM user {user})"
    return owner_notice(user, Case.EXPOSED, key, f"exposed {key} {status}", subject, (happened, will, todo),
                        secret=record.secret_name if record is not None else None,
                        planned=run.settings.dry_run or held)


def failed_notice(run: Run, record: SecretRecord, outcome: Outcome) -> OwnerNotice | None:
    """Case 5: a rotation of the user failed (an authorised secret's: a writer of another secret cannot make its
    owner be told): what was left as it was."""
    mode = record.tags.get(TAG_MODE, "").strip().lower()  # a hold binds even when another tag failed the secret
    if outcome.status != Status.FAILED or outcome.leak or record.name not in run.found or mode == "skip":
        return None
    user, secret = record.user_name, said(record.secret_name)
    key = outcome.current_key_id or record.held_key_id
    happened = (f"the rotation of the access keys of IAM user {user} (the secret {secret}) failed: "
                f"{said(outcome.reason)}")
    will = (f"the secret still holds access key {key}, which it held before" if key == record.held_key_id else
            f"the secret holds access key {key}") + (
        "; nothing else was changed unless the reason above says so. The function tries again on its next run.")
    todo = (f"nothing, if your programs read the secret {secret}. If this comes again, tell the account's operator: "
            "the reason above says what is wrong.")
    return owner_notice(user, Case.FAILED, key, f"failed {record.arn} {key}",
                        f"Key rotation failed; the secret still holds {key} (IAM user {user})",
                        (happened, will, todo), secret=record.secret_name,
                        planned=run.settings.dry_run or run.held_back(record)
                        or mode == "dry-run")


def nearing_notice(run: Run, near: NearDeadline) -> OwnerNotice:
    """Case 4: a key no secret holds (the credential report), 15 and 7 days before MAX_KEY_AGE_DAYS, and overdue."""
    max_age = run.settings.max_key_age_days
    deadline = iso(near.rotated + timedelta(days=max_age))
    key, user = f"access key {near.slot}", near.user
    happened = (f"{key} of IAM user {user}, made (or last rotated) on {iso(near.rotated)}, is held by no secret the "
                "key rotation function manages: nothing rotates it.")
    will = (f"it reaches the account's key age limit (MAX_KEY_AGE_DAYS={max_age:g}) on {deadline}, in "
            f"{near.days_left} days; from then on it is reported overdue." if near.days_left else
            f"it is past the account's key age limit (MAX_KEY_AGE_DAYS={max_age:g}) since {deadline}: it is "
            "reported overdue every day.")
    todo = ("replace it: make a new key, move your programs to it, then deactivate and delete this one; or have "
            "the function rotate it (a secret under iam-keys/, and the user tagged key-rotation-secret with the "
            "secret's ARN: see the README).")
    subject = (f"Access key {near.slot} reaches the key age limit in {near.days_left} days (IAM user {user})"
               if near.days_left else f"Access key {near.slot} is past the key age limit (IAM user {user})")
    return owner_notice(user, Case.NEARING_DEADLINE, None, f"nearing {near.slot} {iso(near.rotated)} {near.days_left}",
                        subject, (happened, will, todo), until=deadline,
                        reminder=f"{near.days_left} days" if near.days_left else None, planned=run.settings.dry_run)


def owner_notices(run: Run, outcomes: list[Outcome], nearing: list[NearDeadline]) -> list[OwnerNotice]:
    """Every notice of the run, from the typed outcomes (and the credential report's keys no secret holds)."""
    anchor = schedule_anchor(run.settings, run.clock.now())  # reminders: whole runs only
    records = {r.name: r for found in run.by_user.values() for r in found}
    notices: list[OwnerNotice | None] = []
    for outcome in outcomes:
        record = records.get(outcome.secret)
        if outcome.leak:
            notices.append(exposed_notice(run, record, outcome))
        elif record is not None and record.name in run.found:
            holders = run.found[record.name].holders or Holders()
            notices += [adopted_notice(run, record, holders, outcome, key, anchor)
                        for key in sorted(holders.adopted_since)]
            notices += [still_in_use_notice(run, record, outcome, anchor), failed_notice(run, record, outcome)]
    notices += [nearing_notice(run, near) for near in nearing]
    return [n for n in notices if n is not None]


TOLD_TAG = "key-rotation-told"  # on the IAM user: "<this run's mark> <a digest of each notice told in it>"
TOLD_TAG_MOST = 256  # characters: IAM's limit for a tag's value


def run_mark(settings: Settings, context: Any) -> str | None:
    """The run's mark, the same for a redelivered scheduled event (its id and time) and for a retried invocation
    (Lambda keeps its request id); None when there is neither (no redelivery to recognise)."""
    request = getattr(context, "aws_request_id", None)
    basis = settings.event_id or (request if isinstance(request, str) and request else None)
    return hashlib.sha256(basis.encode()).hexdigest()[:12] if basis else None


def fact_mark(fact: str) -> str:
    return hashlib.sha256(fact.encode()).hexdigest()[:8]


def told_in_run(tags: Mapping[str, str], mark: str | None) -> set[str]:
    """The notices (digests) this very run told already, as the user's key-rotation-told tag records them."""
    parts = (tags.get(TOLD_TAG) or "").split()
    return set(parts[1:]) if mark and parts and parts[0] == mark else set()


def owner_tags(run: Run, user: str) -> dict[str, str] | str:
    """The user's tags as the run read them already (the guard's authority check, the holders' marks); read here
    only for a user the run has something to tell and has not read (a key no secret holds). Or why not."""
    cached = run.user_tags.get(user.casefold())
    if cached is not None:
        return cached
    try:
        tags = {t["Key"]: t["Value"] for t in run.clients.iam.list_user_tags(UserName=user)["Tags"]}
    except Exception as err:
        return f"the owner tag could not be read ({describe_error(err, 'ListUserTags')})"
    run.user_tags[user.casefold()] = tags
    return tags


def mark_told(run: Run, user: str, tags: dict[str, str], mark: str, told: set[str]) -> None:
    """Record, before sending, what this run tells the user's owners: a redelivery of the run, or a retry, finds it
    and sends nothing twice (a message lost in between is not sent again: at most once). A mark that cannot be
    written is logged; the messages go all the same (a redelivery might then repeat them)."""
    value = mark
    for digest in sorted(told):
        if len(value) + 1 + len(digest) > TOLD_TAG_MOST:
            break
        value += " " + digest
    try:
        run.clients.iam.tag_user(UserName=user, Tags=[{"Key": TOLD_TAG, "Value": value}])
        tags[TOLD_TAG] = value
    except Exception as err:
        log_action("owner_told_not_marked", logging.WARNING, user=user, error=describe_error(err, "TagUser"))


def home_account(run: Run, state: dict[str, Any]) -> str | None:
    """This account: the function's ARN, else a secret's (the run's secrets are its own), else STS (asked once)."""
    if "home" not in state:
        records = [r for found in run.by_user.values() for r in found]
        state["home"] = account_of(getattr(run.context, "invoked_function_arn", None)) or next(
            (account_of(r.arn) for r in records), None) or run.clients.optional("sts").get_caller_identity().get(
            "Account")
    return state["home"]


def send_owner(run: Run, owner: Owner, notice: OwnerNotice, state: dict[str, Any]) -> str | None:
    """Send one notice to one owner: an SNS topic (this account's or CENTRAL_ACCOUNT_ID's, as every destination)
    or an e-mail from OWNER_SENDER. None once sent; else why not (logged, never raised)."""
    settings = run.settings
    try:
        if owner.topic:
            account = account_of(owner.address)
            if foreign_account(account, None, settings.central_account_id) \
                    and foreign_account(account, home_account(run, state), settings.central_account_id):
                return (f"the topic is in account {account}, not this one nor CENTRAL_ACCOUNT_ID's: messages go to "
                        "no other account; refused")
            run.clients.sns.publish(TopicArn=owner.address, Subject=notice.subject, Message=notice.body)
            return None
        if not settings.owner_sender:
            return "OWNER_SENDER is not set: e-mail owners are not told (set it to an address verified in SES)"
        if state.get("ses"):
            return state["ses"]
        run.clients.ses.send_email(Source=settings.owner_sender, Destination={"ToAddresses": [owner.address]},
                                   Message={"Subject": {"Data": notice.subject, "Charset": "UTF-8"},
                                            "Body": {"Text": {"Data": notice.body, "Charset": "UTF-8"}}})
        return None
    except Exception as err:  # an owner not told must not fail the run: counted (OwnersNotTold) and logged
        why = describe_error(err, "Publish" if owner.topic else "SendEmail")
        if not owner.topic and (error_code(err) in THROTTLING or isinstance(err, CallTooSlow)):
            state["ses"] = f"SES kept throttling after botocore's retries ({why}): no more e-mail this run"
        log_action("owner_not_told", logging.WARNING, user=notice.user, case=str(notice.case),
                   owner=clip_text(owner.address, OWNER_SHOWN), error=why)
        return why


@dataclass(frozen=True)
class Told:
    """Who was told what (or planned, or not, and why): a line of the summary's owners_told (``entry``)."""

    user: str
    owner: str | None  # the address, as shown (clipped)
    case: Case
    status: str  # told, planned, already told, not told
    why: str | None = None
    notice: OwnerNotice | None = None  # None: a malformed part of the tag (no notice was made for it)

    def entry(self) -> dict[str, Any]:
        notice = self.notice
        entry = {"user": self.user, "owner": self.owner, "case": str(self.case),
                 "key_id": notice and notice.key_id, "secret": notice and notice.secret,
                 "until": notice and notice.until, "reminder": notice and notice.reminder, "status": self.status,
                 "why": self.why}
        return {k: v for k, v in entry.items() if v is not None}


def told_entry(notice: OwnerNotice, owner: str | None, status: str, why: str | None = None) -> Told:
    return Told(notice.user, clip_text(owner, OWNER_SHOWN) if owner else None, notice.case, status, why, notice)


def malformed_entries(user: str, malformed: Iterable[str]) -> list[Told]:
    return [Told(user, clip_text(said(part), OWNER_SHOWN), Case.MALFORMED_TAG, "not told",
                 f"in tag {OWNER_TAG}: neither an e-mail address nor an SNS topic ARN "
                 "(arn:aws:sns:REGION:ACCOUNT_ID:NAME); the other addresses are told") for part in malformed]


def tell_user(run: Run, user: str, notices: list[OwnerNotice], mark: str | None,
              state: dict[str, Any]) -> list[Told]:
    """Tell one user's owners each notice (planned in a dry run; not again in a redelivery of the run)."""
    tags = owner_tags(run, user)
    if isinstance(tags, str):
        return [told_entry(n, None, "not told", tags) for n in notices]
    owners, malformed = parse_owners(tags.get(OWNER_TAG))
    entries = malformed_entries(user, malformed)
    if not owners:
        return entries
    told = told_in_run(tags, mark)
    fresh = [n for n in notices if fact_mark(n.fact) not in told]
    entries += [told_entry(n, o.address, "already told") for n in notices if n not in fresh for o in owners]
    entries += [told_entry(n, o.address, "planned") for n in fresh if n.planned for o in owners]
    fresh = [n for n in fresh if not n.planned]
    if fresh and mark:
        mark_told(run, user, tags, mark, told | {fact_mark(n.fact) for n in fresh})
    for notice in fresh:
        for owner in owners:
            why = send_owner(run, owner, notice, state)
            entries.append(told_entry(notice, owner.address, "told" if why is None else "not told", why))
            if why is None:
                log_action("owner_told", user=notice.user, case=str(notice.case), key_id=notice.key_id,
                           owner=clip_text(owner.address, OWNER_SHOWN), reminder=notice.reminder)
    return entries


def note_owners(run: Run, outcomes: list[Outcome]) -> None:
    """Each managed secret's entry names its user's owners (make report shows who has none): from the tags the run
    read already, never a call of its own."""
    for outcome in outcomes:
        tags = run.user_tags.get((outcome.user or "").casefold())
        if tags is not None and outcome.managed and tags.get(OWNER_TAG, "").strip():
            outcome.owner = clip_text(said(tags[OWNER_TAG].strip()), OWNER_SHOWN)


def tell_owners(run: Run, outcomes: list[Outcome], nearing: list[NearDeadline] = ()) -> list[Told]:
    """The owners hear first: each user's key-rotation-owner tag told every notice of the run (the summary's
    owners_told); a malformed part of any tag the run read is reported. A run with nothing to say calls nothing.
    Never fails the run."""
    entries: list[Told] = []
    by_user: dict[str, list[OwnerNotice]] = {}
    try:
        for notice in owner_notices(run, outcomes, list(nearing)):
            by_user.setdefault(notice.user, []).append(notice)
    except Exception as err:  # a notice that cannot be made must not cost the run its summary
        log_action("owners_failed", logging.WARNING, error=type(err).__name__)
    mark, state = run_mark(run.settings, run.context), {}
    for user, notices in by_user.items():
        try:
            entries += tell_user(run, user, notices, mark, state)
        except Exception as err:
            log_action("owners_failed", logging.WARNING, user=user, error=describe_error(err))
            entries += [told_entry(n, None, "not told", describe_error(err)) for n in notices]
    note_owners(run, outcomes)
    seen = {user.casefold() for user in by_user}
    for user, tags in sorted(run.user_tags.items()):  # tags read already: their malformed parts cost no call
        if user not in seen:
            entries += malformed_entries(user, parse_owners(tags.get(OWNER_TAG))[1])
    return entries


def emit_owners_metric(entries: list[Told], settings: Settings, function_name: str | None) -> int:
    """OwnersNotTold, per run (EMF), when the run had owners to tell: the messages that were not sent."""
    failed = sum(e.status == "not told" and e.case != Case.MALFORMED_TAG for e in entries)
    if entries:
        emit_metrics({"owners_not_told": failed}, settings.metrics_namespace, function_name,
                     {"OwnersNotTold": "owners_not_told"})
    return failed


def report(outcomes: list[Outcome], settings: Settings, clients: Clients, context: Any = None,
           account: AccountReport | None = None, roles: RolesReport | None = None,
           owners: list[Told] | None = None) -> dict[str, Any]:
    """Summarise the run, emit its metrics, notify; then raise RotationFailed naming each failed secret."""
    failed = [o for o in outcomes if o.status in FAILING]
    counts = run_counts(outcomes, account)
    log_action("run_complete", dry_run=settings.dry_run, **asdict(counts))
    name = getattr(context, "function_name", None)
    function_name = name if isinstance(name, str) else os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    # succeeded: one a run, for the "no successful run for 36 hours" alarm
    emit_metrics({**asdict(counts), "succeeded": int(not failed)}, settings.metrics_namespace, function_name)
    summary = {**asdict(counts), "dry_run": settings.dry_run,
               "version": __version__, "secrets": [o.summary() for o in outcomes]}
    if account is not None:
        summary["report"] = account.summary()
    if roles is not None:
        summary["roles"] = roles.summary()
    summary["owners_told"] = [told.entry() for told in owners or []]
    emit_owners_metric(owners or [], settings, function_name)
    notify(clients, settings, outcomes, counts)
    run_id = getattr(context, "aws_request_id", None)
    run_id = run_id if isinstance(run_id, str) else str(uuid.uuid4())
    known = not (account and account.failed)  # the credential report was read (when the run asked for it)
    checked = checked_entries(settings, outcomes, counts, run_id, known) if settings.event_bus else []  # only sent
    checked += replaceable_entries(settings, roles, run_id) if roles is not None and settings.event_bus else []
    summary["events_failed"] = publish_events(clients, settings, outcomes, checked)
    emit_events_metric(summary["events_failed"], settings, function_name)
    if settings.dry_run:  # a plan or a report is the answer: the failed entries are in it, with the rest
        return summary
    if failed:
        reasons = "; ".join(o.reason or o.secret for o in failed)
        raise RotationFailed(f"{len(failed)} of {len(outcomes)} secrets failed: {reasons}")
    if account and account.failed:
        raise RotationFailed(account.failed)
    return summary


# ---------------------------------------------------------------------------
# 13. Secrets Manager rotation mode: the same table, one step per invocation
# ---------------------------------------------------------------------------


def unqualified(function_arn: str) -> str:
    """arn:aws:lambda:region:account:function:name[:qualifier] without the version or alias."""
    return ":".join(function_arn.split(":")[:7])


def step_guard(request: StepEvent, meta: dict, context: Any) -> bool:
    """A step's metadata checks, before any value is read: rotation enabled for this very function, the token
    a version of the secret staged AWSPENDING. True: the version is already current (a no-op)."""
    me = getattr(context, "invoked_function_arn", None)
    lambda_arn = meta.get("RotationLambdaARN")
    if not meta.get("RotationEnabled") or not isinstance(me, str) or not lambda_arn \
            or unqualified(lambda_arn) != unqualified(me):
        raise RotationError(request.secret_id, f"refused {request.step}: the secret's rotation is not enabled with "
                                               "this function as its rotation function; nothing changed")
    labels = (meta.get("VersionIdsToStages") or {}).get(request.token)
    if labels is None:
        raise RotationError(request.secret_id, f"refused {request.step}: version {request.token} is not a "
                                               "version of this secret")
    if CURRENT in labels and not (request.step == "finishSecret" and PENDING in labels):
        return True
    if PENDING not in labels:
        raise RotationError(request.secret_id, f"refused {request.step}: version {request.token} is not staged "
                                               "AWSPENDING; nothing changed")
    return False


CHANGING_STEPS = ("createSecret", "finishSecret")  # a dry run refuses these; testSecret and setSecret change nothing


@dataclass(frozen=True)
class StepDone:
    """What a rotation step did: said in its answer and log line; finishSecret's keys, for its event."""

    said: str
    new_key_id: str | None = None  # finishSecret: the key now current
    old_key_id: str | None = None  # finishSecret: the key it replaced


def step_event(run: Run, record: SecretRecord, outcome: Outcome) -> None:
    """Rotation mode publishes too: at finishSecret, and on a failed step (never failing the step for it)."""
    outcome.secret_arn = record.arn
    publish_events(run.clients, run.settings, [outcome])


def step_create_secret(run: Run, record: SecretRecord, token: str) -> StepDone:
    """createSecret: clean up as the table says, create the key, store it as AWSPENDING version ``token``."""
    clients = run.clients
    keys = list_keys(clients, record)
    pending = read_version_value(clients, record, PENDING)
    if pending is not None:
        pending_key = find_key(keys, pending.get("AccessKeyId"))
        if pending_key is not None and pending_key.active:
            return StepDone("pending version already exists")
        # Its key is gone (or Inactive): make a new one in its place so this token can converge.
        # (Real Secrets Manager refuses to rewrite a version: that refusal deletes the new key, and says what to do.)
        log_action("pending_key_gone", logging.WARNING, secret=record.name, version=token,
                   key_id=pending.get("AccessKeyId"))
    holders = run.holders(record, keys)
    plan = plan_rotation(keys, holders)
    log_action("plan", secret=record.name, user=record.user_name, held_key_id=record.held_key_id,
               keys=[f"{k.key_id}:{k.status}" for k in keys], steps=plan.steps(), version=token)
    found = run.conclude(record, keys=tuple(keys), holders=holders)
    # Written down as the batch does, so no later run takes the key for an idle one; as KEY@off ("a new adoption
    # when found Active"): rotation mode tells no owner and starts no gate, so the batch's first run after it
    # adopts the key afresh, tells its owner, and gives it its whole wait.
    record_adoptions(run, record, found, frozenset(holders.adopted_since))
    if plan.blocked:
        raise RotationError(record.name, plan.blocked)
    new_key = make_room_and_create(run, record, plan, keys, None)
    try:
        store_key(clients, record, new_key, token, pending=True, smtp_regions=found.effective.smtp_regions)
    except RotationError as err:
        if pending is not None and err.code == "ResourceExistsException":
            raise RotationError(record.name, f"{err.why}. Version {token} holds a key that no longer works and "
                                             "Secrets Manager does not let a version be rewritten: cancel this "
                                             f"rotation (aws secretsmanager cancel-rotate-secret --secret-id "
                                             f"{record.arn}) and rotate again") from None
        raise
    return StepDone(f"created {new_key.key_id}")


def step_set_secret(run: Run, record: SecretRecord, token: str) -> StepDone:
    """setSecret: nothing to do, IAM already holds the key createSecret made."""
    return StepDone("nothing to do: IAM already holds the key")


def pending_check(run: Run, record: SecretRecord, token: str) -> tuple[Check, list[KeyState]]:
    """The pending version's key, which must exist and be Active; and the user's keys as listed."""
    value = read_version_value(run.clients, record, PENDING)
    key = held_key(record, value) if value is not None else None
    if value is None or key is None:
        raise RotationError(record.name, f"pending version {token} holds no access key")
    if not same_user(record, value):
        raise RotationError(record.name, f"pending version {token} names another user; refused")
    keys = list_keys(run.clients, record)
    found = find_key(keys, key.key_id)
    if found is None or not found.active:
        state = "no longer exists" if found is None else f"is {found.status}"
        raise RotationError(record.name, f"pending version {token} holds key {key.key_id}, which {state}; refused")
    return Check(record, key), keys


def step_test_secret(run: Run, record: SecretRecord, token: str) -> StepDone:
    """testSecret: the pending key exists, is Active and authenticates as the user."""
    check, _ = pending_check(run, record, token)
    verify_one(run.clients, check, run.settings, run.clock)
    return StepDone(f"verified {check.key.key_id}")


def step_finish_secret(run: Run, record: SecretRecord, token: str) -> StepDone:
    """finishSecret: verify the pending key, make it AWSCURRENT, carry out the plan's retirement, then drop
    AWSPENDING.

    The retirement is the shared plan's: ``plan_rotation`` over the keys besides the new one, with the same
    holders createSecret planned with. The keys that plan deletes first are gone by now, so it yields the
    retirement createSecret's plan made (deactivate the old Active key, delete an Inactive one the secret
    held), never a deletion of an Active key. AWSPENDING goes last, so a finish interrupted after the move is
    finished by a retry.
    """
    clients = run.clients
    check, keys = pending_check(run, record, token)
    verify_one(clients, check, run.settings, run.clock)
    current = record.version_with(CURRENT)
    old_key = record.held_key_id if current != token else run.held_at(record, PREVIOUS)
    with aws_step(record.name, "UpdateSecretVersionStage"):
        if current != token:
            move_current(run, record, token, current)
            log_action("finish_secret", secret=record.name, version=token, previous_version=current)
    rest = [k for k in keys if k.key_id != check.key.key_id]  # moving a label changes no key: listed once
    plan = plan_rotation(rest, run.holders(record, rest, current=old_key or ""))
    retire_keys(clients, record, plan.deactivate_after, plan.delete_after)
    with aws_step(record.name, "UpdateSecretVersionStage"):
        clients.secrets.update_secret_version_stage(SecretId=record.arn, VersionStage=PENDING,
                                                    RemoveFromVersionId=token)
    said = (f"current is {check.key.key_id}; deactivated {', '.join(plan.deactivate_after) or 'nothing'}"
            + (f"; deleted {', '.join(plan.delete_after)}" if plan.delete_after else ""))
    return StepDone(said, check.key.key_id, old_key)


ROTATION_STEPS: dict[str, Callable[..., StepDone]] = {
    "createSecret": step_create_secret,
    "setSecret": step_set_secret,
    "testSecret": step_test_secret,
    "finishSecret": step_finish_secret,
}


@dataclass(frozen=True)
class StepEvent:
    """A typed view of a Secrets Manager rotation event."""

    step: str
    secret_id: str
    token: str

    @classmethod
    def parse(cls, event: dict) -> StepEvent:
        step, secret_id, token = event.get("Step"), event.get("SecretId"), event.get("ClientRequestToken")
        if step not in ROTATION_STEPS or not isinstance(secret_id, str) or not isinstance(token, str) or not token:
            raise ConfigError(f"rotation event needs Step (one of {', '.join(ROTATION_STEPS)}), SecretId and "
                              f"ClientRequestToken; got Step={step!r}")
        return cls(step, secret_id, token)


def serve_rotation_step(event: dict, context: Any, settings: Settings, clients: Clients, clock: Clock) -> dict:
    """One rotation step, behind the same guard as every entry point: metadata, then the value, authority and
    effective settings (a hold refuses: Secrets Manager marks the rotation failed), then the step."""
    request = StepEvent.parse(event)
    meta = describe_secret(clients, request.secret_id)
    if step_guard(request, meta, context):
        log_action("rotation_already_current", secret=request.secret_id, step=request.step, version=request.token)
        return {"secret": request.secret_id, "step": request.step, "status": "already current"}
    record = record_of(request.secret_id, meta, current_value(clients, request.secret_id, meta["ARN"]))
    run = Run(settings, clients, clock, context)
    try:
        own = guard(run, record, Entry.STEP)
    except Hold as hold:
        raise RotationError(record.name, f"refused {request.step}: {hold}; nothing changed") from None
    if own.dry_run and request.step in CHANGING_STEPS:
        raise RotationError(record.name, f"refused {request.step}: a dry run (DRY_RUN or tag {TAG_MODE}=dry-run) "
                                         "changes nothing; nothing changed")
    if request.step in CHANGING_STEPS:
        run.add_holders(read_secrets(clients, holder_ids(settings, clients, [record.name, record.arn]), map))
    try:
        done = ROTATION_STEPS[request.step](run, record, request.token)
    except RotationError as err:
        step_event(run, record, Outcome(secret=record.name, status=Status.FAILED, user=record.user_name,
                                        reasons=[str(err)], current_key_id=record.held_key_id))
        raise
    if done.new_key_id:
        step_event(run, record, Outcome(secret=record.name, status=Status.ROTATED, user=record.user_name,
                                        new_key_id=done.new_key_id, old_key_id=done.old_key_id,
                                        current_key_id=done.new_key_id))
    log_action("rotation_step", secret=request.secret_id, step=request.step, version=request.token,
               result=done.said)
    return {"secret": request.secret_id, "step": request.step, "status": done.said}


# ---------------------------------------------------------------------------
# 14. The handler
# ---------------------------------------------------------------------------


configure_logging()  # before any client exists


def check_destinations(settings: Settings, context: Any, clients: Clients) -> None:
    """Summaries and events go to this account's topic and bus, or CENTRAL_ACCOUNT_ID's: one in any other account
    is a ConfigError before anything is touched, and so is a bus in another region, which PutEvents never reaches
    (a rule forwards there: template.yaml's ForwardEventsRule). This account and region: the context's function
    ARN (STS and the session's region, without one)."""
    function_arn = getattr(context, "invoked_function_arn", None)
    bus_region, here = region_of(settings.event_bus), region_of(function_arn) or clients.session.region_name
    if bus_region is not None and bus_region != here:
        raise ConfigError(f"setting EVENT_BUS is in region {bus_region}, not this one ({here}): PutEvents reaches "
                          "only this region's buses; give a bus here and forward with a rule; nothing changed")
    foreign = [(name, account) for name, account in (("NOTIFY_TOPIC_ARN", account_of(settings.notify_topic_arn)),
                                                     ("EVENT_BUS", account_of(settings.event_bus)))
               if account is not None and account != settings.central_account_id]
    if not foreign:
        return
    home = account_of(function_arn)
    if home is None:
        home = clients.optional("sts").get_caller_identity().get("Account")
    for name, account in foreign:
        if foreign_account(account, home, settings.central_account_id):
            raise ConfigError(f"setting {name} is in account {account}, not this one ({home}); summaries and "
                              "events go to another account only when CENTRAL_ACCOUNT_ID names it; nothing changed")


def handle(event: Any, context: Any, environ: Mapping[str, str], clock: Clock,
           clients: Clients | None = None) -> dict[str, Any]:
    """The handler with its environment, clock and clients passed in."""
    settings = load_settings(environ, event, clock.now())
    configure_logging(settings.log_level)
    clients = clients or aws_clients(settings, clock)
    check_destinations(settings, context, clients)
    if is_rotation_event(event):
        return serve_rotation_step(event, context, settings, clients, clock)
    run = Run(settings, clients, clock, context)
    outcomes = run_work(run, leak_work(run) if settings.exposed else batch_work(run))
    active: list[str] = []  # the users with an Active key, from the credential report
    nearing: list[NearDeadline] = []
    account = read_account_report(clients, settings, clock, outcomes, active, nearing) if settings.account_report \
        else None
    roles = roles_report(clients, settings, clock, context, outcomes, active) if settings.roles else None
    return report(outcomes, settings, clients, context, account, roles, tell_owners(run, outcomes, nearing))


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Rotate every secret ``sec`` selects, or serve one Secrets Manager rotation step."""
    return handle(event, context, os.environ, SYSTEM_CLOCK)
