"""The Makefile's deploy targets, in Python: every value is data, checked before any call.

    make TARGET VAR=value ...   # runs: python3 tools/deploy_config.py TARGET

Make hands this tool the user's values in the environment, never as shell text (the Makefile keeps each value
as typed and exports it); this tool checks each one against what it names (a Lambda function name, a stack
name, a whole number, an existing file, a secret-name prefix, a KMS key id...) and calls the AWS CLI with an
argument list: a quote, backquotes, ``$(...)``, ``;`` or a newline in a value is text, never a command. A value
that is not what it names, or that starts with ``-`` (the CLI would read it as an option), is refused with exit 2
before anything is called.

    python3 tools/deploy_config.py check TARGET     # the checks alone (make runs them before the CLI is installed)
    python3 tools/deploy_config.py TARGET           # policy create configure deploy schedule invoke report
                                                    # alarms pause resume logs destroy rollback skip unskip
                                                    # status, and the organisation's org-...
    python3 tools/deploy_config.py report-table FILE

What a target reads can refuse too: a function, stack, stack set, secret or CLI profile that does not exist, a
stack's function (make destroy), nothing to roll back, a failed secret (make invoke). Each is said in one line, with
what to do, and a non-zero exit; never a Python stack trace (Stopped, CliFailed).

The function's settings given by name (``GIVEN_SETTINGS``: the names, each value in its own variable) are
checked with the function's own table and parser (``lambda_function.SETTINGS_TABLE`` and ``load_settings``)
before anything is written: an unknown name is refused with the nearest known one, a bad value with the
function's own message, and ``NAME=`` removes the setting. The function is loaded with stand-ins for the few
boto3 and botocore names it imports (its settings parser uses none of them), so a deploy machine needs only
the AWS CLI.
"""

from __future__ import annotations

import calendar
import copy
import difflib
import functools
import hashlib
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
import types
import zipfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ALIASES = {"SEC": "sec"}  # make's variable for `sec`


class Refused(SystemExit):
    """A value that is not what it names, or a needed one missing: exit 2, before anything is called."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Stopped(Refused):
    """An expected refusal found once something was read (no such function, nothing to roll back, a stack's own
    function): one line, its reason, and a non-zero exit; never a Python stack trace."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class CliFailed(Stopped):
    """A call the AWS CLI failed: its error in one line (what does not exist, named), with the AWS error code
    (``error``) for a caller that expects one."""

    def __init__(self, message: str, error: str, code: int) -> None:
        super().__init__(message, code)
        self.error = error


@functools.cache
def function_module() -> types.ModuleType:
    """lambda_function, loaded without boto3: only its settings parser is used here, which needs none of the
    few botocore names the function imports. So a deploy machine needs no boto3, and each make target spends
    no time importing it (where the function is loaded already, as in the tests, it is used as it is). Loaded
    on first use: a target that takes no setting never loads it."""
    sys.path.insert(0, str(ROOT))

    class Stand(Exception):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args)

    stand_ins = {"boto3": {"session": None}, "botocore": {}, "botocore.config": {"Config": Stand},
                 "botocore.credentials": {"Credentials": Stand},
                 "botocore.exceptions": {"BotoCoreError": Stand, "ClientError": Stand}}
    if "lambda_function" not in sys.modules:
        for name, names in stand_ins.items():
            if sys.modules.get(name) is None:
                module = types.ModuleType(name)
                module.__dict__.update(names)
                sys.modules[name] = module
    return importlib.import_module("lambda_function")


def __getattr__(name: str) -> Any:
    """FUNCTION (the function's module) and SETTINGS (its settings' names), loaded when first asked for."""
    if name == "FUNCTION":
        return function_module()
    if name == "SETTINGS":
        return tuple(function_module().SETTINGS_TABLE)  # the function's settings a deployer may set by name
    raise AttributeError(name)


# --- what each value may be -------------------------------------------------------------------------------------

PARTITION = r"arn:aws(-[a-z]+)*"
REGION_RE = r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}"
ACCOUNT_RE = r"[0-9]{12}"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
MRK = r"mrk-[0-9a-f]{32}"
ALIAS = r"alias/[A-Za-z0-9/_-]{1,250}"
BUS_NAME = r"[A-Za-z0-9._/-]{1,256}"
TOPIC_ARN = rf"{PARTITION}:sns:{REGION_RE}:{ACCOUNT_RE}:[A-Za-z0-9_-]{{1,256}}(\.fifo)?"
BUS_ARN = rf"{PARTITION}:events:{REGION_RE}:{ACCOUNT_RE}:event-bus/{BUS_NAME}"
CRON_FIELD = r"[0-9A-Za-z*?,/#-]+"
OU_RE = r"ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}|r-[0-9a-z]{4,32}"
OVERRIDE_RE = rf"{ACCOUNT_RE}:[A-Za-z][A-Za-z0-9]{{0,254}}=[!-~]{{0,4096}}"  # a value without spaces

# Each value make hands over: the pattern the whole value must match, and what it is (said when refused).
RULES: dict[str, tuple[str, str]] = {
    "FUNCTION": (r"[A-Za-z0-9_-]{1,64}", "a Lambda function name: 1 to 64 letters, digits, '-' or '_'"),
    "STACK": (r"[A-Za-z][A-Za-z0-9-]{0,127}",
              "a CloudFormation stack name: a letter, then at most 127 letters, digits or '-'"),
    "ROLE": (rf"{PARTITION}:iam::{ACCOUNT_RE}:role/[A-Za-z0-9+=,.@_/-]{{1,512}}",
             "a role ARN: arn:aws:iam::ACCOUNT_ID:role/NAME"),
    "REGION": (REGION_RE, "a region like eu-west-1"),
    "ACCOUNT_ID": (ACCOUNT_RE, "an account id: 12 digits"),
    "TIMEOUT": (r"[1-9][0-9]{0,2}", "seconds: a whole number from 1 to 900"),
    "MEMORY": (r"[1-9][0-9]{2,4}", "megabytes: a whole number from 128 to 10240"),
    "RETRIES": (r"[0-2]", "0, 1 or 2"),
    "SCHEDULE": (rf"rate\([1-9][0-9]{{0,5}} (minutes?|hours?|days?)\)|cron\({CRON_FIELD}( {CRON_FIELD}){{5}}\)",
                 "an EventBridge schedule: cron(0 6 * * ? *) or rate(1 day)"),
    "SINCE": (r"[0-9]{1,7}", "minutes: a whole number"),
    "PREFIX": (r"[A-Za-z0-9/_+=.@-]{1,512}",
               "a secret-name prefix: 1 to 512 letters, digits or /_+=.@- (what a Secrets Manager name may hold)"),
    "KMS_KEY_ID": (rf"{UUID}|{MRK}|{ALIAS}|{PARTITION}:kms:{REGION_RE}:{ACCOUNT_RE}:(key/({UUID}|{MRK})|{ALIAS})",
                   "a KMS key id (a UUID or mrk-<32 hex>), alias/NAME, or a key or alias ARN"),
    # IAM's path rule, without the wildcards '*' and '?', which would widen the users the role reaches
    "USER_PATH": (r"/|/[!-)+->@-~]{1,510}/", "a user path like /key-rotation/ (no '*' or '?')"),
    "TOPIC": (TOPIC_ARN, "an SNS topic ARN: arn:aws:sns:REGION:ACCOUNT_ID:NAME"),
    "EVENT": (r"[^\x00]+", "a JSON file"),  # and an existing file: checked apart
    # a secret's name (what Secrets Manager allows in one) or its ARN
    "SECRET": (rf"[A-Za-z0-9/_+=.@-]{{1,512}}|{PARTITION}:secretsmanager:{REGION_RE}:{ACCOUNT_RE}:secret:"
               r"[A-Za-z0-9/_+=.@-]{1,512}",
               "a secret's name (1 to 512 letters, digits or /_+=.@-) or ARN, e.g. iam-keys/ci-deployer"),
    # the organisation's targets (make org-...): lists are separated by spaces or commas
    "OUS": (rf"(?:{OU_RE})([ ,]+(?:{OU_RE}))*", "organisational unit ids (ou-xxxx-xxxxxxxx, or the root r-xxxx), "
            "separated by spaces or commas"),
    "REGIONS": (rf"{REGION_RE}([ ,]+{REGION_RE})*", "regions like eu-west-1, separated by spaces or commas"),
    "ARTIFACT_PREFIX": (r"[a-z0-9][a-z0-9-]{1,38}[a-z0-9]",
                        "an S3 bucket name's start: 3 to 40 lowercase letters, digits or '-' (each region's "
                        "bucket is PREFIX-REGION)"),
    "STACK_SET": (r"[A-Za-z][A-Za-z0-9-]{0,63}",  # each account's function is named so: 64 at most
                  "a stack set name: a letter, then at most 63 letters, digits or '-'"),
    "CALL_AS": (r"SELF|DELEGATED_ADMIN", "SELF (the management account) or DELEGATED_ADMIN"),
    "CANARY": (ACCOUNT_RE, "the account deployed first: 12 digits"),
    "FAILURE_PERCENT": (r"[0-9]{1,3}", "a percentage: a whole number from 0 to 100"),
    "MAX_PERCENT": (r"[0-9]{1,3}", "a percentage: a whole number from 1 to 100"),
    "OVERRIDES": (rf"{OVERRIDE_RE}(\s+{OVERRIDE_RE})*",
                  "ACCOUNT_ID:Parameter=value, separated by spaces (e.g. 111122223333:DryRun=true)"),
    "ORG_ID": (r"o-[a-z0-9]{10,32}", "an organisation id: o- and 10 to 32 lowercase letters or digits"),
    "LOG_GROUP": (r"[A-Za-z0-9_/.#-]{1,512}", "a log group name, e.g. /aws/events/key-rotation"),
    "DAYS": (r"[1-9][0-9]{0,3}", "days: a whole number from 1 to 9999"),
    "CENTRAL_PROFILE": (r"[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,127}", "an AWS CLI profile's name (for the central account)"),
    "OUTPUT": (r"table|json", "table (one row a secret) or json (the function's whole answer)"),
    "ROLES": (r"true|false", "true (also judge which Active keys a role could replace, from CloudTrail) or false"),
    "OWNERS": (r"true|false", "true (the role may tell each key's owner: SES from OWNER_SENDER, SNS topics of this "
               "account) or false"),
}
RANGES = {"TIMEOUT": (1, 900), "MEMORY": (128, 10240), "FAILURE_PERCENT": (0, 100), "MAX_PERCENT": (1, 100)}
DEFAULTS = {"TIMEOUT": "900", "MEMORY": "256", "RETRIES": "2", "SCHEDULE": "cron(0 6 * * ? *)",
            "EVENT": "events/dry-run.json", "SINCE": "60", "PREFIX": "iam-keys/", "USER_PATH": "/key-rotation/",
            "STACK_SET": "iam-key-rotation", "CALL_AS": "SELF", "FAILURE_PERCENT": "10", "MAX_PERCENT": "25",
            "LOG_GROUP": "/aws/events/key-rotation", "DAYS": "3", "OUTPUT": "table"}
# Each deploy target: the values it needs, and the ones it may take.
TARGETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "policy": (("FUNCTION",), ("ACCOUNT_ID", "REGION", "PREFIX", "KMS_KEY_ID", "USER_PATH", "OWNERS", "ROLES")),
    "create": (("FUNCTION", "ROLE"), ("REGION", "TIMEOUT", "MEMORY", "RETRIES")),
    "configure": (("FUNCTION",), ("REGION",)),
    "deploy": (("FUNCTION",), ("REGION",)),
    "schedule": (("FUNCTION",), ("REGION", "SCHEDULE")),
    "exposed-rule": (("FUNCTION",), ("REGION",)),
    "invoke": (("FUNCTION",), ("REGION", "EVENT", "OUTPUT")),
    "report": (("FUNCTION",), ("REGION", "ROLES")),
    "alarms": (("FUNCTION",), ("REGION", "TOPIC")),
    "pause": (("FUNCTION",), ("REGION", "STACK")),
    "resume": (("FUNCTION",), ("REGION", "STACK")),
    "logs": (("FUNCTION",), ("REGION", "SINCE")),
    "destroy": (("FUNCTION",), ("REGION", "STACK")),
    "rollback": (("FUNCTION", "SECRET"), ("REGION", "OUTPUT")),
    "skip": (("SECRET",), ("REGION",)),
    "unskip": (("SECRET",), ("REGION",)),
    "status": (("FUNCTION",), ("REGION", "SINCE")),
    # the organisation's: a stack set of template.yaml in every account of OUS, in every one of REGIONS
    "org-package": (("REGIONS", "ARTIFACT_PREFIX"), ("ORG_ID",)),
    "org-deploy": (("OUS", "REGIONS", "ARTIFACT_PREFIX"),
                   ("STACK_SET", "CALL_AS", "CANARY", "FAILURE_PERCENT", "MAX_PERCENT", "OVERRIDES")),
    "org-update": (("OUS", "REGIONS", "ARTIFACT_PREFIX"),
                   ("STACK_SET", "CALL_AS", "CANARY", "FAILURE_PERCENT", "MAX_PERCENT", "OVERRIDES")),
    "org-status": ((), ("STACK_SET", "CALL_AS")),
    "org-remove": (("OUS", "REGIONS"), ("STACK_SET", "CALL_AS", "FAILURE_PERCENT", "MAX_PERCENT")),
    "org-report": ((), ("REGION", "LOG_GROUP", "DAYS", "CENTRAL_PROFILE", "STACK_SET", "CALL_AS")),
}
ORG_TARGETS = ("org-deploy", "org-update")  # the targets that take the template's parameters by name
# A target's own default where the shared one does not suit: status looks back a week for the last run.
TARGET_DEFAULTS = {("status", "SINCE"): "10080"}
SETTINGS_TARGETS = ("policy", "create", "configure")  # the targets that take the function's settings by name
MISSING = {
    "FUNCTION": "give FUNCTION=<the Lambda function's name>: it is never guessed",
    "ROLE": "make create needs ROLE=arn:aws:iam::ACCOUNT_ID:role/NAME",
    "sec": "make create needs SEC='iam-keys/a;iam-keys/b' (or SEC='iam-keys/*')",
    "SECRET": "give SECRET=<the secret's name or ARN>, e.g. SECRET=iam-keys/ci-deployer",
    "OUS": "give OUS=<the organisational units to deploy to>, e.g. OUS=ou-ab12-cd34ef56: never guessed",
    "REGIONS": "give REGIONS=<the regions to deploy to>, e.g. REGIONS='eu-west-1 us-east-1': never guessed",
    "ARTIFACT_PREFIX": "give ARTIFACT_PREFIX=<the start of each region's code bucket name> (make org-package's)",
}


def shown(value: str) -> str:
    """A refused value as the message quotes it: repr (a newline shows as \\n), clipped."""
    return repr(value if len(value) <= 80 else value[:77] + "...")


def checked(name: str, value: str) -> str:
    """The value, if it is what `name` names; else Refused."""
    pattern, meaning = RULES[name]
    if not re.fullmatch(pattern, value, re.ASCII):
        raise Refused(f"{name} must be {meaning}, not {shown(value)}")
    if name in RANGES and not RANGES[name][0] <= int(value) <= RANGES[name][1]:
        raise Refused(f"{name} must be {meaning}, not {shown(value)}")
    if value.startswith("-"):  # an argument of the CLI's: FUNCTION=--help or SECRET=-x would be read as an option
        raise Refused(f"{name} must not start with '-' (the AWS CLI would read it as an option), not {shown(value)}")
    if name == "EVENT" and not Path(value).is_file():
        raise Refused(f"EVENT must be an existing JSON file, not {shown(value)}")
    return value


def values(target: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The target's values from the environment make hands over, each checked: Refused before any call."""
    needed, optional = TARGETS[target]
    got: dict[str, str] = {}
    for name in (*needed, *optional):
        value = environ.get(name) or TARGET_DEFAULTS.get((target, name)) or DEFAULTS.get(name, "")
        if not value:
            if name in needed:
                raise Refused(MISSING[name])
            continue
        got[name] = checked(name, value)
    return got


def given_settings(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """The function's settings given by name: GIVEN_SETTINGS lists the names, each value is in its own variable.
    A name is checked before its value is read: the function's own, or refused with the nearest one."""
    settings = tuple(function_module().SETTINGS_TABLE)
    given = []
    for raw in environ.get("GIVEN_SETTINGS", "").split():
        name = ALIASES.get(raw, raw)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", raw, re.ASCII) or name not in settings:
            near = difflib.get_close_matches(raw.upper(), [s.upper() for s in settings], n=1, cutoff=0.6)
            hint = f"; did you mean {next(s for s in settings if s.upper() == near[0])}?" if near else ""
            raise Refused(f"refused, nothing written: {shown(raw)} is not a setting of the function{hint} "
                          f"(known: {', '.join(settings)})")
        given.append((name, environ.get(raw, "")))
    return given


def check_each_setting(given: list[tuple[str, str]]) -> None:
    """Each given value alone, by its row of the table (the whole is checked again with what it joins)."""
    function = function_module()
    for name, value in given:
        if not value:
            continue
        try:
            function.setting({name: value}, name)
            if name == "sec":
                function.parse_secret_ids(value)
            if name == "CENTRAL_ACCOUNT_ID":
                function.central_account(value)
            if name == "ROLE_REGIONS":
                function.role_regions(value, {})
            if name == "OWNER_SENDER":
                function.owner_sender(value)
        except function.ConfigError as err:
            raise Refused(f"refused, nothing written: {err}") from None


def production_defaults() -> dict[str, str]:
    """What make create (and the template) deploy when not told: a grace period and a rotation age that keep
    every key under MAX_KEY_AGE_DAYS with the default MAX_GRACE_HOURS (80 + 7 + 2 <= 90)."""
    return {s.name: s.deployed for s in function_module().SETTINGS_TABLE.values() if s.deployed is not None}


def merge_environment(current: str, assignments: list[str], defaults: dict[str, str] | None = None) -> dict:
    """The function's variables with the given NAME=VALUE set (an empty VALUE removes NAME); others kept.
    Checked whole with the function's own parser: nothing is written that the function would refuse."""
    function = function_module()
    settings = tuple(function.SETTINGS_TABLE)
    variables = json.loads(current) if current.strip() not in ("", "None", "null") else {}
    variables = {**(defaults or {}), **variables}
    for assignment in assignments:
        name, _, value = assignment.partition("=")
        name = ALIASES.get(name, name)
        if name not in settings:
            near = difflib.get_close_matches(name.upper(), [s.upper() for s in settings], n=1, cutoff=0.6)
            hint = f"; did you mean {next(s for s in settings if s.upper() == near[0])}?" if near else ""
            raise Refused(f"{shown(name)} is not a setting of the function{hint} (nothing written; known: "
                          f"{', '.join(settings)})")
        if value:
            variables[name] = value
        else:
            variables.pop(name, None)
    try:
        function.load_settings(variables, {})
    except function.ConfigError as err:
        raise Refused(f"refused, nothing written: {err}") from None
    return {"Variables": variables}


def listed(value: str) -> list[str]:
    """A list value's items (OUS, REGIONS: separated by spaces or commas), each once, in order."""
    return list(dict.fromkeys(item for item in re.split(r"[\s,]+", value) if item))


# Set by the org targets themselves (each region's bucket, the zip's key): never given.
DERIVED_PARAMETERS = ("CodeBucket", "CodeKey", "CodeBucketPerRegion")


PARAMETER_LINE = r"    (Type|Default|AllowedPattern|AllowedValues|MinValue|MaxValue): (.*?)(\s+#.*)?"


@functools.cache
def template_parameters() -> dict[str, dict[str, Any]]:
    """template.yaml's parameters: name -> its Default, AllowedPattern and AllowedValues, read line by line (the
    deploy machine has no YAML parser; the file's Parameters section is written one key a line, and a test
    keeps this reading equal to a YAML parser's)."""
    found: dict[str, dict[str, Any]] = {}
    inside, current = False, None
    for line in (ROOT / "template.yaml").read_text().splitlines():
        if not line.startswith(" ") and line.strip():
            inside = line.startswith("Parameters:")
            continue
        if not inside:
            continue
        if match := re.fullmatch(r"  ([A-Za-z0-9]+):", line):
            current = found.setdefault(match.group(1), {})
        elif current is not None and (match := re.fullmatch(PARAMETER_LINE, line)):
            key, raw = match.group(1), match.group(2)
            if key == "AllowedValues":
                current[key] = [v.strip().strip('"') for v in raw.strip("[]").split(",")]
            elif raw.startswith('"'):
                current[key] = json.loads(raw)
            else:
                current[key] = raw
    return found


def stack_parameters(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """The template's parameters given by name (make org-deploy SecretNames='iam-keys/*' ...), each name one of
    the template's and each value checked with the template's own AllowedPattern or AllowedValues."""
    parameters = template_parameters()
    given = []
    for name in environ.get("GIVEN_SETTINGS", "").split():
        if name in DERIVED_PARAMETERS:
            raise Refused(f"{name} is set by ARTIFACT_PREFIX and dist/lambda.zip (make org-package): not given")
        if name not in parameters:
            near = difflib.get_close_matches(name, list(parameters), n=1, cutoff=0.6)
            raise Refused(f"refused, nothing called: {shown(name)} is not a parameter of template.yaml"
                          f"{'; did you mean ' + near[0] + '?' if near else ''} (known: "
                          f"{', '.join(n for n in parameters if n not in DERIVED_PARAMETERS)})")
        given.append((name, checked_parameter(name, environ.get(name, ""))))
    return given


def checked_parameter(name: str, value: str) -> str:
    """A template parameter's value, if the template would take it; else Refused."""
    parameter = template_parameters().get(name)
    if parameter is None or name in DERIVED_PARAMETERS:
        raise Refused(f"refused, nothing called: {shown(name)} is not a parameter given by name")
    allowed, pattern = parameter.get("AllowedValues"), parameter.get("AllowedPattern")
    if parameter.get("Type") == "Number":
        low, high = float(parameter.get("MinValue", "-inf")), float(parameter.get("MaxValue", "inf"))
        pattern = r"-?[0-9]{1,9}(\.[0-9]{1,9})?"
        if re.fullmatch(pattern, value, re.ASCII) and not low <= float(value) <= high:
            pattern = f"a number from {parameter.get('MinValue')} to {parameter.get('MaxValue')}"
            value = value + " "  # refused below
    if not re.fullmatch(r"[ -~]{0,4096}", value, re.ASCII) or (allowed and value not in allowed) or \
            (pattern and not re.fullmatch(pattern, value)):
        what = f"one of {', '.join(allowed)}" if allowed else f"what the template allows ({pattern or 'text'})"
        raise Refused(f"refused, nothing called: {name} must be {what}, not {shown(value.rstrip(' '))}")
    return value


def overrides(value: str) -> dict[str, list[tuple[str, str]]]:
    """OVERRIDES=ACCOUNT:Parameter=value ...: account -> its parameters, each checked as the template's."""
    found: dict[str, list[tuple[str, str]]] = {}
    for item in value.split():
        account, _, assignment = item.partition(":")
        name, _, setting = assignment.partition("=")
        found.setdefault(account, []).append((name, checked_parameter(name, setting)))
    return found


def check(target: str, environ: Mapping[str, str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Everything the target is given, checked, before anything is called: its values and, for the targets
    that take them, the function's settings by name."""
    if target not in TARGETS:
        raise Refused(f"no such target: {shown(target)}")
    got = values(target, environ)
    if environ.get("REGION"):
        got["REGION"] = checked("REGION", environ["REGION"])
    given = given_settings(environ) if target in SETTINGS_TARGETS else []
    if target in ORG_TARGETS:
        given = stack_parameters(environ)
        overrides(got.get("OVERRIDES", ""))
    if target == "create":
        if not dict(given).get("sec"):
            raise Refused(MISSING["sec"])
        merge_environment("{}", [f"{n}={v}" for n, v in given], production_defaults())
    elif target == "configure":
        if not given:
            raise Refused("name a setting: make configure FUNCTION=f GRACE_HOURS=24")
        check_each_setting(given)
    elif target == "policy":
        merge_environment("{}", [f"{n}={v}" for n, v in given])
        options = policy_options(got, given)
        check_policy_values(got.get("ACCOUNT_ID", ""), got.get("REGION", ""), got["FUNCTION"], **options)
    return got, given


# --- the role's policy, built as data ---------------------------------------------------------------------------

PLACEHOLDERS = re.compile(r"ACCOUNT_ID|REGION|FUNCTION_NAME|OWNER_SENDER|iam-keys/")
# The statements whose actions take no resource: AWS allows only "*" there.
STAR_RESOURCE = {"ListAndBatchReadSecrets", "ReadCredentialReport", "LookUpHoldouts"}


def policy_options(got: Mapping[str, str], given: list[tuple[str, str]]) -> dict[str, str]:
    settings = dict(given)
    return {"prefix": got.get("PREFIX", DEFAULTS["PREFIX"]), "kms_key_id": got.get("KMS_KEY_ID", ""),
            "user_path": got.get("USER_PATH", DEFAULTS["USER_PATH"]),
            "event_bus": settings.get("EVENT_BUS", ""), "account_report": settings.get("ACCOUNT_REPORT", ""),
            "lookup_holdouts": settings.get("LOOKUP_HOLDOUTS", ""),
            "notify_topic_arn": settings.get("NOTIFY_TOPIC_ARN", ""),
            "central_account_id": settings.get("CENTRAL_ACCOUNT_ID", ""), "owners": got.get("OWNERS", ""),
            "owner_sender": settings.get("OWNER_SENDER", ""), "roles": got.get("ROLES", "")}


def check_policy_values(account_id: str, region: str, function: str, prefix: str = "iam-keys/",
                        kms_key_id: str = "", user_path: str = "/", event_bus: str = "", account_report: str = "",
                        lookup_holdouts: str = "", notify_topic_arn: str = "", central_account_id: str = "",
                        owners: str = "", owner_sender: str = "", roles: str = "") -> None:
    """Each value against what it names (the account and region only when known: make asks the CLI for them
    after these checks). Refused before anything is called."""
    if account_id:
        checked("ACCOUNT_ID", account_id)
    if region:
        checked("REGION", region)
    checked("FUNCTION", function)
    checked("PREFIX", prefix)
    checked("USER_PATH", user_path or "/")
    if kms_key_id:
        checked("KMS_KEY_ID", kms_key_id)
    if event_bus and not re.fullmatch(f"{BUS_NAME}|{BUS_ARN}", event_bus, re.ASCII):
        raise Refused(f"EVENT_BUS must be an EventBridge bus name or ARN, not {shown(event_bus)}")
    if notify_topic_arn and not re.fullmatch(TOPIC_ARN, notify_topic_arn, re.ASCII):
        raise Refused(f"NOTIFY_TOPIC_ARN must be {RULES['TOPIC'][1]}, not {shown(notify_topic_arn)}")
    if central_account_id and not re.fullmatch(ACCOUNT_RE, central_account_id, re.ASCII):
        raise Refused(f"CENTRAL_ACCOUNT_ID must be 12 digits, not {shown(central_account_id)}")


def check_destination(setting: str, arn: str, account_id: str, central_account_id: str, region: str = "") -> None:
    """A topic or bus ARN must be in this account, or in the one CENTRAL_ACCOUNT_ID names; a bus (``region``
    given) in this region, since PutEvents reaches no other (template.yaml forwards with ForwardEventsRule)."""
    if region and arn.split(":")[3] != region:
        raise Refused(f"{setting} is in region {arn.split(':')[3]}, not {region}: PutEvents reaches only its own "
                      "region's buses (give a bus here and forward with a rule, as template.yaml does); nothing "
                      "written")
    account = arn.split(":")[4]
    if account == account_id or (central_account_id and account == central_account_id):
        return
    allowed = f"this account ({account_id})" + (f" or CENTRAL_ACCOUNT_ID ({central_account_id})"
                                                if central_account_id else "")
    raise Refused(f"{setting} is in account {account}, not {allowed}: refused, nothing written (give "
                  f"CENTRAL_ACCOUNT_ID={account} if that is your organisation's central account)")


def filled(value: Any, parts: Mapping[str, str]) -> Any:
    """A policy statement with its placeholders filled in each string that holds one (one pass: a filled-in value
    is never read again for placeholders), never in the JSON text."""
    if isinstance(value, str):
        return PLACEHOLDERS.sub(lambda m: parts[m.group()], value)
    if isinstance(value, list):
        return [filled(v, parts) for v in value]
    if isinstance(value, dict):
        return {k: filled(v, parts) for k, v in value.items()}
    return value


def render_policy(account_id: str, region: str, function: str, prefix: str = "iam-keys/", kms_key_id: str = "",
                  user_path: str = "/", event_bus: str = "", account_report: str = "",
                  lookup_holdouts: str = "", notify_topic_arn: str = "", central_account_id: str = "",
                  owners: str = "", owner_sender: str = "", roles: str = "") -> dict:
    """LambdaExecutionRole.json, loaded as JSON, its placeholders filled in the strings that hold them, never
    in the text: without a KMS key id, no KMS statement; without an event bus, no events:PutEvents; with a
    topic, sns:Publish on it; the credential report's and CloudTrail's reads only when ACCOUNT_REPORT and
    LOOKUP_HOLDOUTS are on; with OWNERS=true, sns:Publish on this account's topics in REGION (and
    CENTRAL_ACCOUNT_ID's), the key-rotation-told mark, and ses:SendEmail from OWNER_SENDER only (none without
    it). ``user_path`` narrows the users whose keys the role may manage. A topic or bus in another account is
    refused unless ``central_account_id`` names that account."""
    if not account_id:
        raise Refused("ACCOUNT_ID must be an account id: 12 digits, not ''")
    if not region:
        raise Refused("give REGION=... (or configure the CLI's region)")
    check_policy_values(account_id, region, function, prefix, kms_key_id, user_path, event_bus, account_report,
                        lookup_holdouts, notify_topic_arn, central_account_id, owners, owner_sender, roles)
    parts = {"ACCOUNT_ID": account_id, "REGION": region, "FUNCTION_NAME": function, "iam-keys/": prefix,
             "OWNER_SENDER": owner_sender}
    truthy = function_module().TRUE_WORDS
    wanted = {"UseSecretsKeyOnlyViaSecretsManager": bool(kms_key_id), "PublishRotationEvents": bool(event_bus),
              "ReadCredentialReport": account_report.strip().lower() in truthy,
              "LookUpHoldouts": lookup_holdouts.strip().lower() in truthy or roles == "true",
              "ListEveryUsersKeys": roles == "true",  # the roles report: keys of users no secret manages too
              "TellOwnersByEmail": owners == "true" and bool(owner_sender), "TellOwnersTopics": owners == "true",
              "MarkToldOwners": owners == "true"}
    template = json.loads((ROOT / "LambdaExecutionRole.json").read_text())
    statements = []
    for statement in template["Statement"]:
        if not wanted.get(statement["Sid"], True):
            continue
        statement = filled(statement, parts)
        if statement["Sid"] == "UseSecretsKeyOnlyViaSecretsManager":
            statement.update(kms_resource(kms_key_id, account_id, region, statement.get("Condition", {})))
        elif statement["Sid"] == "PublishRotationEvents":
            if event_bus.startswith("arn:"):
                check_destination("EVENT_BUS", event_bus, account_id, central_account_id, region)
                statement["Resource"] = event_bus
            else:
                statement["Resource"] = f"arn:aws:events:{region}:{account_id}:event-bus/{event_bus}"
        elif statement["Sid"] == "TellOwnersTopics" and central_account_id:  # as every destination: or the central
            statement["Resource"] = [statement["Resource"], f"arn:aws:sns:{region}:{central_account_id}:*"]
        elif isinstance(statement["Resource"], str) and statement["Resource"].endswith(":user/*"):
            statement["Resource"] = statement["Resource"][:-len("/*")] + (user_path or "/") + "*"
        statements.append(statement)
    if notify_topic_arn:
        check_destination("NOTIFY_TOPIC_ARN", notify_topic_arn, account_id, central_account_id)
        statements.append({"Sid": "PublishRunSummaries", "Effect": "Allow", "Action": ["sns:Publish"],
                           "Resource": notify_topic_arn})
    policy = {**template, "Statement": statements}
    least_privilege(policy)
    return policy


def kms_resource(kms_key_id: str, account_id: str, region: str, condition: dict) -> dict:
    """The KMS statement's Resource (and Condition) for a key id, a key ARN, an alias or an alias ARN: an alias
    is no resource IAM authorises a key's use by, so the key is named by its alias in a condition."""
    if kms_key_id.startswith("arn:"):
        key_region, key_account, resource = kms_key_id.split(":")[3:6]
    else:
        key_region, key_account, resource = region, account_id, kms_key_id if kms_key_id.startswith("alias/") \
            else f"key/{kms_key_id}"
    if not resource.startswith("alias/"):
        return {"Resource": f"arn:aws:kms:{key_region}:{key_account}:{resource}"}
    return {"Resource": f"arn:aws:kms:{key_region}:{key_account}:key/*",
            "Condition": {**condition, "ForAnyValue:StringEquals": {"kms:ResourceAliases": resource}}}


def least_privilege(policy: dict) -> None:
    """What make policy writes grants named actions only (no wildcard) and "*" resources only where AWS
    allows nothing else: a last check, whatever the values were."""
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for action in actions:
            if not re.fullmatch(r"[a-z0-9-]+:[A-Za-z]+", action, re.ASCII):
                raise Refused(f"refused, nothing written: the policy would allow {shown(action)}")
        if statement["Effect"] != "Allow" or set(statement) - {"Sid", "Effect", "Action", "Resource", "Condition"}:
            raise Refused(f"refused, nothing written: statement {shown(statement['Sid'])} is not as the file has it")
        if "*" == statement["Resource"] and statement["Sid"] not in STAR_RESOURCE:
            raise Refused(f"refused, nothing written: statement {shown(statement['Sid'])} would reach every resource")


# --- the targets: the AWS CLI called with argument lists --------------------------------------------------------

class Cli:
    """The AWS CLI (make's AWS: a path, or words such as `aws --profile p`, split as words, never run by a
    shell), told the region if one is given (the CLI v1 reads only AWS_DEFAULT_REGION). ``names``: the target's
    values (FUNCTION, STACK, SECRET...), to name what does not exist when a call fails."""

    def __init__(self, environ: Mapping[str, str], region: str = "", names: Mapping[str, str] | None = None) -> None:
        self.program = shlex.split(environ.get("AWS") or "aws")
        self.env = dict(os.environ)
        self.names = dict(names or {})
        region = region or environ.get("AWS_DEFAULT_REGION") or environ.get("AWS_REGION") or ""
        if region:
            self.env["AWS_DEFAULT_REGION"] = region

    def __call__(self, *args: str, show: bool = False, check: bool = True, quiet: bool = False,
                 status: bool = False) -> Any:
        """The call's output (status=True: whether it failed). A failed call with check=True: CliFailed, its
        error in one line; the CLI's other messages (warnings) are passed on as it wrote them."""
        done = subprocess.run([*self.program, *args], env=self.env, text=True,
                              stdout=None if show else subprocess.PIPE,
                              stderr=subprocess.DEVNULL if quiet else subprocess.PIPE)
        failed = check and done.returncode != 0 and not status
        if done.stderr and not failed:
            sys.stderr.write(done.stderr)
        if status:
            return done.returncode != 0
        if failed:
            raise self.failure(args[0] if args else "", done.stderr or "", done.returncode)
        return (done.stdout or "").strip()

    def failure(self, service: str, stderr: str, code: int) -> CliFailed:
        """The CLI's error as one line: a function, secret, stack, stack set, log group or profile that does not
        exist is named with what to check; anything else is the CLI's own last line."""
        line = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()),
                    f"the AWS CLI failed (exit {code})")
        found = re.search(r"An error occurred \(([A-Za-z]+)\)", line)
        error = found.group(1) if found else ""
        where = f"in {self.env.get('AWS_DEFAULT_REGION') or 'the CLI region'}" + (
            f" as profile {self.program[self.program.index('--profile') + 1]}"
            if "--profile" in self.program[:-1] else "")
        name = {"lambda": "FUNCTION", "secretsmanager": "SECRET", "cloudformation": "STACK", "logs": "LOG_GROUP"}
        named = self.names.get(name.get(service, ""), "")
        profile = re.search(r"The config profile \((.*)\) could not be found", line)
        if profile:
            line = f"no AWS CLI profile {profile.group(1)!r} (aws configure list-profiles lists those there are)"
        elif error == "StackSetNotFoundException":
            line = f"no stack set {self.names.get('STACK_SET', '')} {where} " \
                   f"(CALL_AS={self.names.get('CALL_AS', 'SELF')}): make org-deploy creates it"
        elif named and (error == "ResourceNotFoundException" or "does not exist" in line):
            line = MISSING_THING[service + (" as profile" if "as profile" in where else "")].format(
                named=named, where=where)
        elif error == "ResourceConflictException" and "already exist" in line and service == "lambda":
            line = f"function {named} exists already {where}: make configure FUNCTION={named} NAME=value changes " \
                   f"its settings, make deploy FUNCTION={named} its code"
        return CliFailed(line, error, code)

    def in_region(self, region: str) -> Cli:
        """This CLI in another region (empty: the environment's own, as a Cli made without one)."""
        return Cli({"AWS": shlex.join(self.program)}, region, self.names)

    def as_profile(self, profile: str) -> Cli:
        """This CLI as the named profile (--profile, which the CLI prefers to credentials in the environment)."""
        other = copy.copy(self)
        other.program = [*self.program, "--profile", profile] if profile else self.program
        return other


# What does not exist, by the service that said so: one line, with what to check.
MISSING_THING = {
    "lambda": "no function {named} {where}: make create FUNCTION={named} makes one (is FUNCTION=, REGION= or the "
              "profile right?)",
    "secretsmanager": "no secret {named} {where} (the README's step 1 makes one; is SECRET=, REGION= or the profile "
                      "right?)",
    "cloudformation": "no stack {named} {where} (aws cloudformation list-stacks lists them; is STACK= or REGION= "
                      "right?)",
    "logs": "no log group {named} {where}: it is in the central account (central.yaml's stack): give "
            "CENTRAL_PROFILE=<its CLI profile>, and REGION= its region",
    "logs as profile": "no log group {named} {where}: is central.yaml's stack there (REGION= its region, LOG_GROUP= "
                       "its LogGroupName)?",
}
for service in ("lambda", "secretsmanager", "cloudformation"):
    MISSING_THING[f"{service} as profile"] = MISSING_THING[service]


ZIP = "fileb://dist/lambda.zip"
# The release (semantic versioning): VERSION, kept equal to lambda_function.__version__ and to the version tag the
# template gives its function (tests keep all three equal; make release and make org-package refuse otherwise).
VERSION_RE = r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})(-[0-9A-Za-z.-]{1,64})?"
VERSION_TAG = "key-rotation-version"  # the function's tag naming its release: make create, make deploy, the stack's
STACK_TAG = "aws:cloudformation:stack-name"  # CloudFormation's tag on each function a stack made


def source_version(source: str) -> str | None:
    """The ``__version__ = "X.Y.Z"`` a copy of lambda_function.py declares (read as text: nothing imported)."""
    found = re.search(r'^__version__ = "([^"\n]*)"', source, re.M)
    return found.group(1) if found else None


@functools.cache
def release_version(root: Path = ROOT) -> str:
    """VERSION, if it is a semantic version and lambda_function.py declares the same; else Refused."""
    version = (root / "VERSION").read_text().strip()
    declared = source_version((root / "lambda_function.py").read_text())
    if not re.fullmatch(VERSION_RE, version, re.ASCII):
        raise Refused(f"VERSION must be a semantic version like 1.2.3, not {shown(version)}")
    if declared != version:
        raise Refused(f"VERSION says {version} but lambda_function.py's __version__ is {shown(str(declared))}: keep "
                      "them equal (and CHANGELOG.md's newest section)")
    return version


def run_policy(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    account = got.get("ACCOUNT_ID") or aws("sts", "get-caller-identity", "--query", "Account", "--output", "text")
    region = got.get("REGION") or aws.env.get("AWS_DEFAULT_REGION") or aws("configure", "get", "region", check=False)
    policy = render_policy(account, region, got["FUNCTION"], **policy_options(got, given))
    Path("dist").mkdir(exist_ok=True)
    Path("dist/policy.json.tmp").write_text(json.dumps(policy, indent=2) + "\n")
    os.replace("dist/policy.json.tmp", "dist/policy.json")
    print(f"dist/policy.json ({account}, {region})")


def run_create(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    function = got["FUNCTION"]
    environment = merge_environment("{}", [f"{n}={v}" for n, v in given], production_defaults())
    print(aws("lambda", "create-function", "--function-name", function, "--runtime", "python3.13",
              "--handler", "lambda_function.lambda_handler", "--role", got["ROLE"], "--timeout", got["TIMEOUT"],
              "--memory-size", got["MEMORY"], "--zip-file", ZIP, "--environment", json.dumps(environment),
              "--tags", json.dumps({VERSION_TAG: release_version()}), "--query", "FunctionArn", "--output", "text"))
    aws("lambda", "put-function-concurrency", "--function-name", function, "--reserved-concurrent-executions", "1",
        show=True)
    aws("lambda", "put-function-event-invoke-config", "--function-name", function,
        "--maximum-retry-attempts", got["RETRIES"], "--maximum-event-age-in-seconds", "21600",
        "--query", "FunctionArn", "--output", "text", show=True)


def run_configure(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    function = got["FUNCTION"]
    current = aws("lambda", "get-function-configuration", "--function-name", function,
                  "--query", "Environment.Variables", "--output", "json")
    merged = merge_environment(current, [f"{n}={v}" for n, v in given])
    aws("lambda", "update-function-configuration", "--function-name", function, "--environment", json.dumps(merged),
        "--query", "Environment.Variables", "--output", "json", show=True)


def run_deploy(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    """New code, and the function's version tag (what make status shows) naming its release."""
    version = release_version()
    arn, sha = json.loads(aws("lambda", "update-function-code", "--function-name", got["FUNCTION"], "--zip-file",
                              ZIP, "--query", "[FunctionArn, CodeSha256]", "--output", "json") or '["", ""]')
    if arn:
        aws("lambda", "tag-resource", "--resource", arn, "--tags", json.dumps({VERSION_TAG: version}))
    print(f"{got['FUNCTION']}\t{sha}\tversion {version}")


def function_info(got: dict[str, str], aws: Cli) -> dict[str, str]:
    """The function as Lambda has it: its ARN, role, last change, release (VERSION_TAG) and the stack that made
    it (STACK_TAG). No such function: one line naming it, non-zero (CliFailed)."""
    found = aws("lambda", "get-function", "--function-name", got["FUNCTION"], "--query", "{arn: Configuration."
                "FunctionArn, role: Configuration.Role, modified: Configuration.LastModified, tags: Tags}",
                "--output", "json")
    try:
        info = json.loads(found or "{}")
    except ValueError:
        info = {}
    info = info if isinstance(info, dict) else {}
    tags = info.get("tags") if isinstance(info.get("tags"), dict) else {}
    stack = str(tags.get(STACK_TAG) or "")
    if stack:
        checked("STACK", stack)  # CloudFormation's own tag; a name that is not a stack's is never passed on
        aws.names.setdefault("STACK", stack)
    return {"arn": str(info.get("arn") or ""), "role": str(info.get("role") or ""),
            "modified": str(info.get("modified") or ""), "stack": stack, "version": str(tags.get(VERSION_TAG) or "")}


def stack_resource(stack: str, logical_id: str, aws: Cli) -> str:
    """The physical name of one of the stack's resources (a rule's generated name)."""
    found = aws("cloudformation", "list-stack-resources", "--stack-name", stack, "--query",
                f"StackResourceSummaries[?LogicalResourceId=='{logical_id}'].PhysicalResourceId", "--output", "text")
    if not found or found == "None":
        raise Stopped(f"stack {stack} has no {logical_id}")
    return found


def stack_has_rule(got: dict[str, str], info: dict[str, str], logical_id: str, aws: Cli) -> bool:
    """A stack's function has the stack's rules: said, and no second rule added beside them (two rules, one of
    them paused, would still run it)."""
    if not info["stack"]:
        return False
    rule = stack_resource(info["stack"], logical_id, aws)
    state = aws("events", "describe-rule", "--name", rule, "--query", "State", "--output", "text")
    change = (f"its Schedule parameter says when (aws cloudformation deploy ... --parameter-overrides Schedule=...); "
              f"make pause FUNCTION={got['FUNCTION']} pauses it") if logical_id == "ScheduleRule" else \
        "the stack's own rule answers AWS Health's exposed-key events"
    print(f"{got['FUNCTION']} was made by the CloudFormation stack {info['stack']}: its rule {rule} ({state}) "
          f"runs it, so no second rule is added; {change}")
    return True


def rule_to_function(aws: Cli, function: str, rule: str, target: str, *rule_args: str) -> tuple[str, str]:
    """An EventBridge rule (put-rule with ``rule_args``) that invokes the function, with the grant it needs (one
    statement per rule, ``events-TARGET``, replaced, so running it again changes nothing). (rule ARN, function ARN)."""
    function_arn = aws("lambda", "get-function", "--function-name", function,
                       "--query", "Configuration.FunctionArn", "--output", "text")
    rule_arn = aws("events", "put-rule", "--name", rule, *rule_args, "--query", "RuleArn", "--output", "text")
    statement = "events-schedule" if target == "rotate" else f"events-{target}"
    aws("lambda", "remove-permission", "--function-name", function, "--statement-id", statement,
        check=False, quiet=True)
    aws("lambda", "add-permission", "--function-name", function, "--statement-id", statement,
        "--action", "lambda:InvokeFunction", "--principal", "events.amazonaws.com", "--source-arn", rule_arn)
    aws("events", "put-targets", "--rule", rule, "--targets", json.dumps([{"Id": target, "Arn": function_arn}]))
    print(f"{rule_arn} -> {function_arn}")
    return rule_arn, function_arn


def run_schedule(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    if stack_has_rule(got, function_info(got, aws), "ScheduleRule", aws):
        return
    rule_to_function(aws, got["FUNCTION"], f"{got['FUNCTION']}-schedule", "rotate",
                     "--schedule-expression", got["SCHEDULE"])


def exposure_pattern() -> dict:
    """AWS Health's events for an exposed access key: the codes the function answers (its own list)."""
    return {"source": ["aws.health"], "detail-type": ["AWS Health Event"],
            "detail": {"service": ["RISK"], "eventTypeCode": list(function_module().EXPOSURE_CODES)}}


def run_exposed_rule(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    """Route 2a: a rule that runs the function the moment AWS Health reports one of the account's keys exposed."""
    if stack_has_rule(got, function_info(got, aws), "ExposedKeyRule", aws):
        return
    _, function_arn = rule_to_function(aws, got["FUNCTION"], f"{got['FUNCTION']}-exposed", "exposed",
                                       "--event-pattern", json.dumps(exposure_pattern()))
    if function_arn.split(":")[3] != "us-east-1":
        print("AWS Health delivers these events in us-east-1: forward them from there to this region's default "
              "bus (docs/operate.md, When a key leaks)")


COUNTS = ("rotated", "retired", "waiting", "rolled_back", "skipped", "planned", "failed", "not_attempted",
          "forced_in_use", "overdue_keys", "stopped_early", "unmanaged_overdue_keys")
FAILING = ("failed", "not_attempted")  # the statuses of a secret the run did not settle
REASON_WIDTH = 70  # make invoke's reason column, clipped: the whole reason is in the answer file and the logs


def clipped(text: str, width: int = REASON_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


def answer_file(function: str) -> Path:
    """Where the function's last answer is kept: make invoke names it, OUTPUT=json prints it."""
    return Path("dist") / f"invoke-{function}.json"


def invoke(function: str, event: str, aws: Cli) -> Any:
    """The function's answer to the event file, as JSON (kept in answer_file). Its failure (FunctionError) is one
    line, its type and message, never the stack trace it carries (that is in make logs): Stopped, exit 1."""
    answer = answer_file(function)
    answer.parent.mkdir(exist_ok=True)
    error = aws("lambda", "invoke", "--function-name", function, "--payload", f"fileb://{event}", str(answer),
                "--query", "FunctionError", "--output", "text")
    try:
        said = json.loads(answer.read_text() or "null")
    except ValueError:
        said = answer.read_text().strip()
    if error in ("", "None"):
        return said
    said = said if isinstance(said, dict) else {"errorMessage": clipped(str(said), 200)}  # not Lambda's shape
    message = " ".join(str(said.get("errorMessage") or "no message").split())
    raise Stopped(f"the function failed ({said.get('errorType') or error}): {message} (its log lines: make logs "
                  f"FUNCTION={function}; its answer: {answer})", 1)


def keys_cell(entry: Mapping[str, Any]) -> str:
    """What happened to the secret's keys: old -> new (a rotation), retired -> restored (a rollback), else the key
    it holds."""
    if entry.get("restored_key_id"):
        return f"{entry.get('retired_key_id') or '-'} -> {entry['restored_key_id']}"
    if entry.get("new_key_id"):
        return f"{entry.get('old_key_id') or '-'} -> {entry['new_key_id']}"
    return str(entry.get("current_key_id") or entry.get("old_key_id") or "-")


def render_summary(summary: Any, function: str) -> str:
    """make invoke's table: one row a secret (secret, status, keys, next rotation, reason clipped), the counts,
    and where the whole answer is."""
    if not isinstance(summary, dict):
        return json.dumps(summary)
    rows = [("secret", "status", "keys", "next rotation", "reason (or steps)")]
    for entry in [e for e in summary.get("secrets") or [] if isinstance(e, dict)]:
        steps = "; ".join(str(step) for step in entry.get("steps") or [])
        reason = str(entry.get("reason") or steps).removeprefix(f"secret {entry.get('secret')!r}: ")  # in its row
        rows.append((str(entry.get("secret")), str(entry.get("status")), keys_cell(entry),
                     str(entry.get("next_rotation") or "-"), clipped(reason)))
    counts = ", ".join(f"{summary[name]} {name}" for name in COUNTS if summary.get(name))
    lines = [render_table(rows) if len(rows) > 1 else "no secrets: sec selects none",
             f"{'dry run, nothing changed: ' if summary.get('dry_run') else ''}{counts or 'nothing to do'}"
             f"{' (version ' + str(summary['version']) + ')' if summary.get('version') else ''}",
             f"the whole answer: {answer_file(function)} (OUTPUT=json prints it)"]
    return "\n".join(lines)


def failures(summary: Any) -> int:
    """How many secrets the run did not settle: its "failed" and "not_attempted" counts, or its entries'."""
    if not isinstance(summary, dict):
        return 0
    counted = sum(summary.get(name) for name in FAILING if isinstance(summary.get(name), int))
    listed = sum(isinstance(e, dict) and e.get("status") in FAILING for e in summary.get("secrets") or [])
    return max(counted, listed)


def run_invoke(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    """The function's answer as a table (OUTPUT=json: as it is); non-zero when any secret failed, a dry run's
    included (a refused secret is a failure of the plan)."""
    summary = invoke(got["FUNCTION"], got["EVENT"], aws)
    print(json.dumps(summary) if got["OUTPUT"] == "json" else render_summary(summary, got["FUNCTION"]))
    failed = failures(summary)
    if failed:
        plan = " of the plan (a dry run)" if isinstance(summary, dict) and summary.get("dry_run") else ""
        raise Stopped(f"{failed} secrets failed{plan}: each one's reason is in its row, whole in "
                      f"{answer_file(got['FUNCTION'])}", 1)


def run_report(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    """make report (ROLES=true: with the roles report, events/report-roles.json): reads only."""
    event = "report-roles.json" if got.get("ROLES") == "true" else "report.json"
    summary = invoke(got["FUNCTION"], str(ROOT / "events" / event), aws)
    print(render_report(summary if isinstance(summary, dict) else {}))


# The four alarms, defined once: template.yaml's alarm resources are these (tests/test_template.py keeps each
# equal to its row) and make alarms puts them by name, FUNCTION-<name>. "{f}" is the function's name; the namespace
# None is the function's METRICS_NAMESPACE (the template's MetricsNamespace parameter), where its EMF metrics go.
ALARMS: tuple[dict[str, Any], ...] = (
    {"Name": "errors", "Resource": "ErrorsAlarm",
     "AlarmDescription": "{f} failed to rotate at least one secret: see its logs",
     "Namespace": "AWS/Lambda", "MetricName": "Errors", "Statistic": "Sum", "Period": 3600,
     "EvaluationPeriods": 1, "Threshold": 0, "ComparisonOperator": "GreaterThanThreshold",
     "TreatMissingData": "notBreaching"},
    {"Name": "no-success", "Resource": "NoSuccessAlarm",
     "AlarmDescription": "{f} has not completed a run without failures for 36 hours",
     "Namespace": None, "MetricName": "Succeeded", "Statistic": "Sum", "Period": 43200,
     "EvaluationPeriods": 3, "DatapointsToAlarm": 3, "Threshold": 1, "ComparisonOperator": "LessThanThreshold",
     "TreatMissingData": "breaching"},  # no run at all is the failure this alarm is for
    {"Name": "still-in-use", "Resource": "StillInUseAlarm",
     "AlarmDescription": "{f} deactivated an old key still in use after MAX_GRACE_HOURS: see its logs",
     "Namespace": None, "MetricName": "ForcedWhileInUse", "Statistic": "Sum", "Period": 86400,
     "EvaluationPeriods": 1, "Threshold": 0, "ComparisonOperator": "GreaterThanThreshold",
     "TreatMissingData": "notBreaching"},
    {"Name": "overdue", "Resource": "OverdueAlarm",
     "AlarmDescription": "{f} manages an Active key older than MAX_KEY_AGE_DAYS (CIS IAM.3): see the run's summary",
     "Namespace": None, "MetricName": "OverdueKeys", "Statistic": "Maximum", "Period": 86400,
     "EvaluationPeriods": 1, "Threshold": 0, "ComparisonOperator": "GreaterThanThreshold",
     "TreatMissingData": "notBreaching"},
)
NAMESPACE_RE = r"[!-9;-~][ -~]{0,254}"  # CloudWatch's: printable ASCII, not starting with ':', at most 255


def metrics_namespace(function: str, aws: Cli) -> str:
    """The deployed function's METRICS_NAMESPACE (its settings table's default when it has none)."""
    found = aws("lambda", "get-function-configuration", "--function-name", function,
                "--query", "Environment.Variables", "--output", "json")
    try:
        variables = json.loads(found or "null")
    except ValueError:
        variables = None
    namespace = variables.get("METRICS_NAMESPACE") if isinstance(variables, dict) else None
    namespace = namespace or function_module().SETTINGS_TABLE["METRICS_NAMESPACE"].default
    if not re.fullmatch(NAMESPACE_RE, namespace, re.ASCII) or namespace.startswith("AWS/"):
        raise SystemExit(f"{function}'s METRICS_NAMESPACE {shown(namespace)} is no CloudWatch namespace: "
                         f"no alarm made")
    return namespace


def alarm_arguments(alarm: Mapping[str, Any], function: str, namespace: str, topic: str | None) -> list[str]:
    """put-metric-alarm's arguments for one row of ALARMS."""
    optional = {"DatapointsToAlarm": "--datapoints-to-alarm"}
    return ["--alarm-name", f"{function}-{alarm['Name']}",
            "--alarm-description", alarm["AlarmDescription"].format(f=function),
            "--dimensions", json.dumps([{"Name": "FunctionName", "Value": function}]),
            "--namespace", alarm["Namespace"] or namespace, "--metric-name", alarm["MetricName"],
            "--statistic", alarm["Statistic"], "--period", str(alarm["Period"]),
            "--evaluation-periods", str(alarm["EvaluationPeriods"]),
            *[arg for key, flag in optional.items() if key in alarm for arg in (flag, str(alarm[key]))],
            "--threshold", str(alarm["Threshold"]), "--comparison-operator", alarm["ComparisonOperator"],
            "--treat-missing-data", alarm["TreatMissingData"],
            *(["--alarm-actions", topic, "--ok-actions", topic] if topic else [])]


def run_alarms(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    function, topic = got["FUNCTION"], got.get("TOPIC")
    namespace = metrics_namespace(function, aws)
    for alarm in ALARMS:
        aws("cloudwatch", "put-metric-alarm", *alarm_arguments(alarm, function, namespace, topic))
    print(f"{len(ALARMS)} alarms for {function} (its metrics in {namespace})" + (f", telling {topic}" if topic else ""))


def schedule_rules(got: dict[str, str], aws: Cli) -> list[tuple[str, str]]:
    """The rules that run the function daily, each with what made it: its stack's ScheduleRule (the stack the
    function's STACK_TAG names, or STACK=), and route 2a's FUNCTION-schedule if there is one (make schedule made
    one beside a stack's before it knew better: paused with it, never left running)."""
    info = function_info(got, aws)
    if got.get("STACK") and info["stack"] and got["STACK"] != info["stack"]:
        raise Stopped(f"{got['FUNCTION']} was made by the stack {info['stack']}, not STACK={got['STACK']}")
    stack = got.get("STACK") or info["stack"]
    rules = [(stack_resource(stack, "ScheduleRule", aws), f"the stack {stack}'s ScheduleRule")] if stack else []
    own = f"{got['FUNCTION']}-schedule"
    if aws("events", "describe-rule", "--name", own, "--query", "Name", "--output", "text", check=False,
           quiet=True) == own:
        rules.append((own, "make schedule's" if not stack else "a second rule beside the stack's, which make "
                      f"schedule added (remove it: aws events remove-targets --rule {own} --ids rotate; aws events "
                      f"delete-rule --name {own})"))
    if not rules:
        raise Stopped(f"no rule {own}: route 2a's schedule is made by make schedule FUNCTION={got['FUNCTION']}; "
                      f"for a CloudFormation stack (route 2b) give STACK=<the stack's name>, e.g. "
                      f"make pause FUNCTION={got['FUNCTION']} STACK=iam-key-rotation")
    return rules


def run_pause(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    for rule, made in schedule_rules(got, aws):
        aws("events", "disable-rule", "--name", rule)
        print(f"paused {rule} ({made})")


def run_resume(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    for rule, made in schedule_rules(got, aws):
        aws("events", "enable-rule", "--name", rule)
        print(f"resumed {rule} ({made})")


def run_logs(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    """The log lines of the last SINCE minutes, one a line as Lambda wrote each (read as JSON: the CLI's text
    output joins a list's items on one line)."""
    start = (int(time.time()) - int(got["SINCE"]) * 60) * 1000
    group = f"/aws/lambda/{got['FUNCTION']}"
    try:
        found = aws("logs", "filter-log-events", "--log-group-name", group, "--start-time", str(start),
                    "--query", "events[].message", "--output", "json")
    except CliFailed as failed:
        if failed.error != "ResourceNotFoundException":
            raise
        function_info(got, aws)  # no such function: said so
        print(f"no log lines yet: Lambda makes {group} at the function's first run (make invoke "
              f"FUNCTION={got['FUNCTION']} runs it)")
        return
    messages = json.loads(found or "[]") or []
    for message in messages:
        print(str(message).rstrip("\n"))
    if not messages:
        print(f"no log lines in {group} in the last {got['SINCE']} minutes (SINCE=... looks further back)")


def alarm_names(function: str) -> list[str]:
    """Route 2a's four alarms (make alarms) for the function, in ALARMS' order."""
    return [f"{function}-{alarm['Name']}" for alarm in ALARMS]


def run_destroy(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    """Route 2a's function: the schedule, the function and its alarms (one fires on missing data once the
    function is gone); then what stays, each with the command that removes it. A stack's function: its stack."""
    function, rule = got["FUNCTION"], f"{got['FUNCTION']}-schedule"
    info = function_info(got, aws)
    if info["stack"] or got.get("STACK"):
        destroy_stack(got, info["stack"], aws)
        return
    aws("events", "remove-targets", "--rule", rule, "--ids", "rotate", check=False, quiet=True)
    aws("events", "delete-rule", "--name", rule, check=False, quiet=True)
    aws("events", "remove-targets", "--rule", f"{function}-exposed", "--ids", "exposed", check=False, quiet=True)
    aws("events", "delete-rule", "--name", f"{function}-exposed", check=False, quiet=True)
    aws("lambda", "delete-function", "--function-name", function)
    print(f"removed {function} and its schedule ({rule})")
    found = aws("cloudwatch", "describe-alarms", "--alarm-names", *alarm_names(function),
                "--query", "MetricAlarms[].AlarmName", "--output", "json")
    alarms = json.loads(found or "[]")
    if alarms:
        aws("cloudwatch", "delete-alarms", "--alarm-names", *alarms)
        print(f"removed its alarms: {' '.join(alarms)}")
    group = f"/aws/lambda/{function}"
    groups = aws("logs", "describe-log-groups", "--log-group-name-prefix", group,
                 "--query", "logGroups[].logGroupName", "--output", "json")
    print("left in place:")
    print(f"  the role {info['role']} ({role_removal(info['role'], aws)})")
    if group in json.loads(groups or "[]"):
        print(f"  the log group {group} (aws logs delete-log-group --log-group-name {group}; a CloudFormation "
              f"stack with the function name {function} fails while it exists)")
    print("  the secrets, their keys and the users' key-rotation-secret tags")


def destroy_stack(got: dict[str, str], stack: str, aws: Cli) -> None:
    """A stack's function is the stack's to remove: removed alone, it would leave the stack's rules ENABLED
    pointing at nothing and the stack out of step. Refused, naming the stack and the command that removes it;
    with STACK= that stack, the stack is deleted (its function, role, rules, alarms, queue, log group)."""
    function = got["FUNCTION"]
    if not stack:
        raise Stopped(f"{function} was not made by a CloudFormation stack (it has no {STACK_TAG} tag): make destroy "
                      f"FUNCTION={function} without STACK= removes it")
    if got.get("STACK") != stack:
        wrong = f" (not STACK={got['STACK']})" if got.get("STACK") else ""
        raise Stopped(f"{function} was made by the CloudFormation stack {stack}{wrong}: remove the stack, and with "
                      f"it the function, its role, rules, alarms and log group: make destroy FUNCTION={function} "
                      f"STACK={stack}, or aws cloudformation delete-stack --stack-name {stack}")
    aws("cloudformation", "delete-stack", "--stack-name", stack)
    aws("cloudformation", "wait", "stack-delete-complete", "--stack-name", stack)
    print(f"removed the stack {stack}: {function}, its role, rules, alarms, queue and log group")
    print("left in place: the secrets, their keys and the users' key-rotation-secret tags")


def role_removal(role: str, aws: Cli) -> str:
    """The commands that remove the role: each of its policies (inline, attached), then the role."""
    name = role.rsplit("/", 1)[-1]
    inline = read_json(aws, "iam", "list-role-policies", "--role-name", name, "--query", "PolicyNames")
    attached = read_json(aws, "iam", "list-attached-role-policies", "--role-name", name, "--query",
                         "AttachedPolicies[].PolicyArn")
    steps = [f"aws iam delete-role-policy --role-name {name} --policy-name {policy}"
             for policy in (inline if isinstance(inline, list) else ["key-rotation"])]
    steps += [f"aws iam detach-role-policy --role-name {name} --policy-arn {arn}"
              for arn in (attached if isinstance(attached, list) else [])]
    return "; ".join([*steps, f"aws iam delete-role --role-name {name}"])


NOTHING_TO_ROLL_BACK = "nothing to roll back: the secret has no previous key"
NO_PREVIOUS = ("no AWSPREVIOUS version", "the previous key (none)")  # the function's reasons for it


def rollback(got: dict[str, str], aws: Cli, dry_run: bool) -> Any:
    """The event {"rollback": [SECRET]} (a plan with dry_run), written as JSON (the value is data) and sent as a
    file; the function's answer."""
    event = Path("dist") / f"rollback-{got['FUNCTION']}.json"
    event.parent.mkdir(exist_ok=True)
    event.write_text(json.dumps({"rollback": [got["SECRET"]], **({"dry_run": True} if dry_run else {})}) + "\n")
    return invoke(got["FUNCTION"], str(event), aws)


def rollback_refused(plan: Any, secret: str) -> str | None:
    """Why the plan says the rollback would change nothing (one line), or None when it would roll back."""
    entries = [e for e in (plan.get("secrets") or [] if isinstance(plan, dict) else []) if isinstance(e, dict)]
    refused = [e for e in entries if e.get("status") != "planned"]
    if not refused:
        return None
    reason = " ".join(str(refused[0].get("reason") or "").split())
    if any(words in reason for words in NO_PREVIOUS):
        return f"{NOTHING_TO_ROLL_BACK} (a rollback undoes a rotation that replaced a key); nothing changed"
    if reason.startswith("nothing to roll back"):
        return reason
    return f"{secret} was not rolled back ({refused[0].get('status')}): {reason or 'no reason given'}"


def run_rollback(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    """Planned first (a dry run): a rollback that cannot happen is refused in one line, exit 2, without a failed
    invocation (which would raise the Errors alarm); then done."""
    refused = rollback_refused(rollback(got, aws, dry_run=True), got["SECRET"])
    if refused:
        raise Stopped(refused)
    summary = rollback(got, aws, dry_run=False)
    print(json.dumps(summary) if got["OUTPUT"] == "json" else render_summary(summary, got["FUNCTION"]))
    if isinstance(summary, dict) and summary.get("dry_run"):
        raise Stopped(f"{got['FUNCTION']} runs dry (DRY_RUN=true; a stack's DryRun): nothing was rolled back", 1)
    if failures(summary):
        raise Stopped(f"{got['SECRET']} was not rolled back: its reason is in its row", 1)


MODE_TAG = "key-rotation:mode"


def run_skip(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    aws("secretsmanager", "tag-resource", "--secret-id", got["SECRET"],
        "--tags", json.dumps([{"Key": MODE_TAG, "Value": "skip"}]))
    print(f"{got['SECRET']}: {MODE_TAG}=skip (every entry point leaves it alone; make unskip SECRET=... resumes)")


def run_unskip(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    mode = aws("secretsmanager", "describe-secret", "--secret-id", got["SECRET"],
               "--query", f"Tags[?Key=='{MODE_TAG}'].Value | [0]", "--output", "text")
    if mode in ("", "None"):
        print(f"{got['SECRET']} has no {MODE_TAG} tag: nothing to do")
        return
    if mode != "skip":
        raise SystemExit(f"{got['SECRET']} has {MODE_TAG}={mode}, not skip: left as it is (remove it with aws "
                         f"secretsmanager untag-resource --secret-id {got['SECRET']} --tag-keys {MODE_TAG})")
    aws("secretsmanager", "untag-resource", "--secret-id", got["SECRET"], "--tag-keys", json.dumps([MODE_TAG]))
    print(f"{got['SECRET']}: {MODE_TAG} removed; the next run rotates it when due")


def last_run(events: list[list]) -> tuple[int, dict] | None:
    """The last run_complete line's time (ms) and fields, from [timestamp, message] pairs (Lambda's prefix
    "[INFO]\\tTIME\\tREQUEST\\t" removed)."""
    for timestamp, message in sorted(events, key=lambda event: event[0], reverse=True):
        try:
            line = json.loads(str(message).strip().split("\t")[-1])
        except ValueError:
            continue
        if isinstance(line, dict) and line.get("action") == "run_complete":
            return timestamp, line
    return None


def run_status(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    """The function (its release, its stack), its last run's summary (the run_complete line within SINCE
    minutes) and the alarms named FUNCTION-... No such function: one line, non-zero."""
    function = got["FUNCTION"]
    info = function_info(got, aws)
    version = info["version"] or f"unknown (no {VERSION_TAG} tag: deployed before 1.0.0)"
    made = f", made by the stack {info['stack']}" if info["stack"] else ""
    print(f"function {function}: version {version}{made}, last changed {info['modified'] or 'at an unknown time'}")
    start = (int(time.time()) - int(got["SINCE"]) * 60) * 1000
    found = aws("logs", "filter-log-events", "--log-group-name", f"/aws/lambda/{function}",
                "--start-time", str(start), "--filter-pattern", '"run_complete"',
                "--query", "events[].[timestamp, message]", "--output", "json", check=False, quiet=True)
    last = last_run(json.loads(found) if found.startswith("[") else [])
    if last is None:
        print(f"last run: no run_complete line in /aws/lambda/{function} in the last {got['SINCE']} minutes "
              f"(SINCE=... looks further back; make logs FUNCTION={function} shows what there is)")
    else:
        timestamp, summary = last
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp / 1000))
        counts = ", ".join(f"{summary[name]} {name}" for name in COUNTS if summary.get(name))
        ran = f", version {summary['version']}" if isinstance(summary.get("version"), str) else ""
        print(f"last run {when}{' (dry run)' if summary.get('dry_run') else ''}: {counts or 'nothing to do'}{ran}")
        if summary.get("failed") or summary.get("not_attempted"):
            print(f"  each failure's reason: make logs FUNCTION={function} (its \"failed\" lines)")
    alarms = aws("cloudwatch", "describe-alarms", "--alarm-name-prefix", f"{function}-",
                 "--query", "MetricAlarms[].[AlarmName, StateValue]", "--output", "json")
    states = json.loads(alarms or "[]")
    if not states:
        print(f"alarms: none named {function}-... (make alarms FUNCTION={function} adds them; a stack names its own)")
    for name, state in states:
        print(f"alarm {name}: {state}")


# --- the organisation's targets: one function per account, by a service-managed stack set ------------------------

CODE_ZIP = ROOT / "dist" / "lambda.zip"
POLL_SECONDS = 10  # between two looks at a stack set operation (or a Logs Insights query)


def packaged_code() -> bytes:
    """dist/lambda.zip's lambda_function.py, whose __version__ is VERSION (else Refused)."""
    if not CODE_ZIP.is_file():
        raise Refused("no dist/lambda.zip: make package (make org-package builds it)")
    try:
        with zipfile.ZipFile(CODE_ZIP) as code:
            source = code.read("lambda_function.py")
    except (KeyError, zipfile.BadZipFile):
        raise Refused("dist/lambda.zip holds no lambda_function.py: make package builds it") from None
    packaged = source_version(source.decode("utf-8", "replace"))
    if packaged != release_version():
        raise Refused(f"dist/lambda.zip holds version {packaged}, VERSION says {release_version()}: make package")
    return source


def code_key() -> str:
    """The zip's key in each region's bucket, named by its release (VERSION): what a platform team pins, compares
    (make org-status) and rolls back to. One version is one code: a new version is a new key, so a stack set
    update replaces the function's code, and make org-package never puts other code under a version's key."""
    packaged_code()
    return f"iam-key-rotation/{release_version()}.zip"


def code_digest() -> str:
    """The SHA-256 of the code under the version's key: kept with the object, compared before any upload."""
    return hashlib.sha256(packaged_code()).hexdigest()


def upload_code(regional: Cli, bucket: str, key: str, owner: list[str]) -> str:
    """The version's zip into the bucket, unless it is there already (the same code: nothing to do). Other code
    under the version's key is refused: it would deploy under a version that names different code, and a stack set
    update with an unchanged key would leave every function's code as it was."""
    digest = code_digest()
    there = regional("s3api", "head-object", "--bucket", bucket, "--key", key, *owner, "--query", "Metadata",
                     "--output", "json", check=False, quiet=True)
    if there:
        found = json.loads(there) if there.startswith("{") else {}
        if found.get("code-sha256") != digest:
            raise Refused(f"refused: s3://{bucket}/{key} holds other code than dist/lambda.zip (a version names one "
                          f"code): give the new code a new version (VERSION, __version__, CHANGELOG.md)")
        return "already there"
    regional("s3api", "put-object", "--bucket", bucket, "--key", key, "--body", str(CODE_ZIP), "--metadata",
             json.dumps({"code-sha256": digest}), *owner, "--output", "text")
    return "uploaded"


def bucket_policy(bucket: str, organisation: str) -> dict:
    """What each region's bucket needs: every principal of the organisation (each account's CloudFormation,
    deploying the function) may read the code, no one else."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "OrganisationReadsKeyRotationCode", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/iam-key-rotation/*",
        "Condition": {"StringEquals": {"aws:PrincipalOrgID": organisation}}}]}


def caller_account(aws: Cli) -> str:
    """The account these credentials are in (sts get-caller-identity), checked: 12 digits."""
    account = aws("sts", "get-caller-identity", "--query", "Account", "--output", "text")
    if not re.fullmatch(ACCOUNT_RE, account, re.ASCII):
        raise Refused(f"refused, nothing changed: sts get-caller-identity answered {shown(account)}, not an account id")
    return account


def run_org_package(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    """dist/lambda.zip to PREFIX-REGION for each region (the bucket made if missing); each bucket's policy printed
    and written to dist/, to apply (aws s3api put-bucket-policy), never applied here. Bucket names are global:
    every call names this account as the bucket's expected owner, so a bucket of the same name someone else made
    first is never written to (its head fails, its create fails: the target stops there)."""
    key = code_key()
    organisation = got.get("ORG_ID") or aws("organizations", "describe-organization", "--query", "Organization.Id",
                                            "--output", "text")
    checked("ORG_ID", organisation)
    owner = ["--expected-bucket-owner", caller_account(aws)]
    for region in listed(got["REGIONS"]):
        regional, bucket = aws.in_region(region), f"{got['ARTIFACT_PREFIX']}-{region}"
        if regional("s3api", "head-bucket", "--bucket", bucket, *owner, check=False, quiet=True, status=True):
            place = [] if region == "us-east-1" else ["--create-bucket-configuration",
                                                      json.dumps({"LocationConstraint": region})]
            regional("s3api", "create-bucket", "--bucket", bucket, *place, "--output", "text")
        done = upload_code(regional, bucket, key, owner)
        policy = Path("dist") / f"bucket-policy-{bucket}.json"
        policy.write_text(json.dumps(bucket_policy(bucket, organisation), indent=2) + "\n")
        print(f"s3://{bucket}/{key} ({done})\n{policy.read_text()}  apply it: aws s3api put-bucket-policy "
              f"--bucket {bucket} --policy file://{policy} --region {region} {' '.join(owner)}")


def check_code(got: dict[str, str], aws: Cli, deployed: Collection[str] = ()) -> None:
    """Before the stack set changes: each region's bucket is this account's and holds this code (make org-package
    put it there), so no account is ever pointed at code someone else may write. The regions are REGIONS and
    those the stack set has instances in (``deployed``): its parameters name PREFIX-REGION for every region, and
    bucket names are global, so a region left unchecked could read a bucket someone else owns. Refused, naming
    every region without the code, before anything changes."""
    key, owner = code_key(), ["--expected-bucket-owner", caller_account(aws)]
    given = listed(got["REGIONS"])
    missing = [region for region in [*given, *sorted(set(deployed) - set(given))]
               if aws.in_region(region)("s3api", "head-object", "--bucket", f"{got['ARTIFACT_PREFIX']}-{region}",
                                        "--key", key, *owner, check=False, quiet=True, status=True)]
    if not missing:
        return
    outside = [region for region in missing if region not in given]
    said = f" (stack set {got['STACK_SET']} has instances in {' '.join(outside)}, not in REGIONS: its parameters " \
           f"reach them too)" if outside else ""
    raise Refused(f"refused, nothing changed: {key} is not in a bucket of this account in {' '.join(missing)}{said}: "
                  f"make org-package REGIONS='{' '.join(missing)}' ARTIFACT_PREFIX={got['ARTIFACT_PREFIX']} puts "
                  f"it there")


def stack_set_call(got: dict[str, str]) -> list[str]:
    return ["--stack-set-name", got["STACK_SET"], "--call-as", got["CALL_AS"]]


def parameters_json(got: dict[str, str], given: list[tuple[str, str]], previous: list[str], new: bool = True) -> str:
    """The stack set's parameters: the code's (each region's bucket, the zip's key), a new stack set's function
    name (the stack set's, the same in every account, not its stack's StackSet-NAME-UUID; an update, new=False,
    keeps the name the functions have), those given, and each other one the stack set has kept as it was
    (UsePreviousValue). ``new`` is said, never read from ``previous``: an existing stack set's parameters may
    read as [], and naming its functions anew would replace every one."""
    if new and previous:
        raise ValueError("a new stack set has no previous parameters")
    named = {"FunctionName": got["STACK_SET"]} if new else {}  # a new stack set's; an old one's is kept
    values = {"CodeBucket": got["ARTIFACT_PREFIX"], "CodeKey": code_key(), "CodeBucketPerRegion": "true",
              **named, **dict(given)}
    kept = [{"ParameterKey": name, "UsePreviousValue": True} for name in previous if name not in values]
    return json.dumps([{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()] + kept)


def preferences(got: dict[str, str], first: bool) -> str:
    """The roll-out's pace: one account first, stopping at its failure; then a percentage at a time."""
    if first:
        return json.dumps({"RegionConcurrencyType": "SEQUENTIAL", "FailureToleranceCount": 0,
                           "MaxConcurrentCount": 1})
    return json.dumps({"RegionConcurrencyType": "PARALLEL", "FailureTolerancePercentage": int(got["FAILURE_PERCENT"]),
                       "MaxConcurrentPercentage": int(got["MAX_PERCENT"])})


def targets(got: dict[str, str], account: str | None = None) -> str:
    """The OUs, or one account of them (INTERSECTION: only if it is in one of the OUs)."""
    chosen: dict[str, Any] = {"OrganizationalUnitIds": listed(got["OUS"])}
    if account:
        chosen |= {"Accounts": [account], "AccountFilterType": "INTERSECTION"}
    return json.dumps(chosen)


def wait_for(got: dict[str, str], operation: str, stage: str, aws: Cli) -> None:
    """Until the operation ends; a failed or stopped one ends the roll-out there."""
    while True:
        status = aws("cloudformation", "describe-stack-set-operation", *stack_set_call(got), "--operation-id",
                     operation, "--query", "StackSetOperation.Status", "--output", "text")
        if status not in ("RUNNING", "QUEUED", "STOPPING"):
            break
        time.sleep(POLL_SECONDS)
    print(f"{stage}: {status}")
    if status != "SUCCEEDED":
        raise SystemExit(f"{stage} ended {status}: the roll-out stops here (make org-status shows each account)")


def canary(got: dict[str, str], aws: Cli) -> str | None:
    """The account deployed first: CANARY, or the first account of the first OU."""
    if got.get("CANARY"):
        return got["CANARY"]
    first = aws("organizations", "list-accounts-for-parent", "--parent-id", listed(got["OUS"])[0],
                "--query", "Accounts[0].Id", "--output", "text", check=False)
    return first if re.fullmatch(ACCOUNT_RE, first, re.ASCII) else None


def staged(got: dict[str, str], action: list[str], aws: Cli) -> None:
    """`action` (create-stack-instances or update-stack-set) in two stages: the canary account in every region,
    then every account of the OUs."""
    regions = ["--regions", *listed(got["REGIONS"])]
    first = canary(got, aws)
    stages = ([(f"stage 1, account {first}", targets(got, first), True)] if first else []) + \
        [(f"stage {2 if first else 1}, every account of {got['OUS']}", targets(got), False)]
    for stage, chosen, one in stages:
        operation = aws("cloudformation", *action, *stack_set_call(got), "--deployment-targets", chosen, *regions,
                        "--operation-preferences", preferences(got, one), "--query", "OperationId", "--output", "text")
        wait_for(got, operation, stage, aws)


UNREAD = object()  # a read that failed, or answered no JSON


def read_json(aws: Cli, *args: str) -> Any:
    """A read's answer (--output json), or UNREAD; its failure is the caller's to judge, and printed by no one."""
    try:
        return json.loads(aws(*args, "--output", "json", check=False, quiet=True))
    except ValueError:
        return UNREAD


def stack_set_parameters(got: dict[str, str], aws: Cli) -> list[str] | None:
    """The stack set's parameter names, or None when there is no such stack set."""
    names = read_json(aws, "cloudformation", "describe-stack-set", *stack_set_call(got), "--query",
                      "StackSet.Parameters[].ParameterKey")
    if names is UNREAD:
        return None
    return [name for name in names if isinstance(name, str)] if isinstance(names, list) else []


def update_stack_set(got: dict[str, str], given: list[tuple[str, str]], previous: list[str], aws: Cli) -> None:
    staged(got, ["update-stack-set", "--template-body", f"file://{ROOT / 'template.yaml'}", "--parameters",
                 parameters_json(got, given, previous, new=False), "--capabilities", "CAPABILITY_IAM"], aws)


def apply_overrides(got: dict[str, str], verb: str, aws: Cli, instances: Collection[tuple[str, str]] = ()) -> None:
    """OVERRIDES: each account's own parameters (a dry run in production first, an exemption), one at a time:
    update-stack-instances in the regions of REGIONS where the account has an instance (``instances``: its
    (account, region) pairs), create-stack-instances in the others (made with them, before the OUs' stages would
    make them without)."""
    existing = verb == "update-stack-instances"
    for account, assignments in overrides(got.get("OVERRIDES", "")).items():
        regions = [region for region in listed(got["REGIONS"]) if ((account, region) in instances) == existing]
        if not regions:
            continue
        operation = aws("cloudformation", verb, *stack_set_call(got), "--deployment-targets", targets(got, account),
                        "--regions", *regions, "--parameter-overrides",
                        json.dumps([{"ParameterKey": k, "ParameterValue": v} for k, v in assignments]),
                        "--operation-preferences", preferences(got, True), "--query", "OperationId",
                        "--output", "text")
        wait_for(got, operation, f"overrides for {account}", aws)


def update_existing(got: dict[str, str], given: list[tuple[str, str]], previous: list[str], aws: Cli) -> None:
    """An existing stack set, changed only once the code is checked in every region it has instances in. The
    overridden accounts' instances take their overrides before the stack set's parameters change: an account
    kept dry (OVERRIDES=ACCOUNT:DryRun=true) never runs the stack set's DryRun=false, not even until its
    override lands, nor for good when a stage fails and the roll-out stops. Its new instances are made with
    theirs after (they cannot be overridden before they exist), before the OUs' stages."""
    instances = stack_instances(got, aws)
    if instances is None:
        raise Refused(f"refused, nothing changed: stack set {got['STACK_SET']}'s instances could not be read "
                      f"(CALL_AS={got['CALL_AS']}), so the code of each region they are in cannot be checked")
    check_code(got, aws, {region for _account, region in instances})
    apply_overrides(got, "update-stack-instances", aws, instances)
    update_stack_set(got, given, previous, aws)
    apply_overrides(got, "create-stack-instances", aws, instances)


def run_org_deploy(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    """The stack set, created (service-managed, automatic deployment) or updated; the overridden accounts first,
    with their overrides; then its instances in every account of OUS and every region, staged."""
    previous = stack_set_parameters(got, aws)
    if previous is None and not dict(given).get("SecretNames"):
        raise Refused("make org-deploy creates the stack set: give SecretNames='iam-keys/*' (the function's sec)")
    if previous is None:
        check_code(got, aws)
        aws("cloudformation", "create-stack-set", *stack_set_call(got), "--template-body",
            f"file://{ROOT / 'template.yaml'}", "--parameters", parameters_json(got, given, [], new=True),
            "--capabilities", "CAPABILITY_IAM", "--permission-model", "SERVICE_MANAGED", "--auto-deployment",
            json.dumps({"Enabled": True, "RetainStacksOnAccountRemoval": False}), "--output", "text")
        print(f"stack set {got['STACK_SET']} (service-managed; an account joining {got['OUS']} gets the function, "
              f"one leaving loses it)")
        apply_overrides(got, "create-stack-instances", aws)
    else:
        update_existing(got, given, previous, aws)
    staged(got, ["create-stack-instances"], aws)


def run_org_update(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    """New code or parameters to every instance, staged; accounts that joined the OUs since are covered too."""
    previous = stack_set_parameters(got, aws)
    if previous is None:
        raise SystemExit(f"no stack set {got['STACK_SET']} ({got['CALL_AS']}): make org-deploy creates it")
    update_existing(got, given, previous, aws)
    staged(got, ["create-stack-instances"], aws)


def run_org_status(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    """Each account and region with its stack instance's status and the function's version: the stack set's
    code where the instance is CURRENT (it runs what the stack set holds), not yet that code elsewhere. The
    version is the zip's name, iam-key-rotation/X.Y.Z.zip (make org-package's), which each function reports itself
    (make org-report's version column)."""
    found = aws("cloudformation", "list-stack-instances", *stack_set_call(got), "--query",
                "Summaries[].[Account, Region, Status, StackInstanceStatus.DetailedStatus, StatusReason]",
                "--output", "json")
    code = aws("cloudformation", "describe-stack-set", *stack_set_call(got), "--query",
               "StackSet.Parameters[?ParameterKey=='CodeKey'].ParameterValue | [0]", "--output", "text")
    version = code.rpartition("/")[2].removesuffix(".zip")
    rows = [tuple("" if cell in (None, "None") else str(cell) for cell in row) for row in json.loads(found or "[]")]
    print(render_table([("account", "region", "status", "detail", "function version", "reason"),
                        *[(*row[:4], version if row[2] == "CURRENT" else f"not yet {version}", *row[4:])
                          for row in rows]]))
    print(f"code: {code} (make org-update after make org-package deploys new code)")


def run_org_remove(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    """The stack instances of OUS in REGIONS (their stacks deleted), then the stack set once it has none."""
    operation = aws("cloudformation", "delete-stack-instances", *stack_set_call(got), "--deployment-targets",
                    targets(got), "--regions", *listed(got["REGIONS"]), "--no-retain-stacks",
                    "--operation-preferences", preferences(got, False), "--query", "OperationId", "--output", "text")
    wait_for(got, operation, f"removing {got['OUS']} in {got['REGIONS']}", aws)
    left = aws("cloudformation", "list-stack-instances", *stack_set_call(got), "--query", "Summaries[].Account",
               "--output", "json")
    if json.loads(left or "[]"):
        print(f"stack set {got['STACK_SET']} kept: it still has instances (make org-status)")
        return
    aws("cloudformation", "delete-stack-set", *stack_set_call(got))
    print(f"removed stack set {got['STACK_SET']}; left in place: the code buckets and central.yaml's stack")


# make org-report: the central log group's events (central.yaml), one row per account, region and secret, from
# each function's latest whole run ("Access Keys Checked": key ages and next rotations as that account computed
# them, with its own settings), each secret that a later targeted, rollback or leak run checked (its event is
# marked "partial") shown as that run left it. The query asks for the events, newest first; the rows are read
# from each event's JSON here (so what the table says is what the function sent, whatever Logs Insights' parsing
# of fields).
REPORT_LIMIT = 10000  # Logs Insights' most rows a query returns
REPORT_QUERY = f"""fields @timestamp, @message
| filter source = "key-rotation"
| filter `detail-type` = "Access Keys Checked" or `detail-type` = "Access Keys Replaceable"
| sort @timestamp desc
| limit {REPORT_LIMIT}"""
STALE_HOURS = 36  # a function that has not checked its keys for this long is not running daily: said so


# Each cell of org-report's table, as the function makes it: any principal of the organisation may put events
# on the central bus, so a row that is not of these shapes is left out (and counted), never printed.
CELL_SHAPES = {"secret": r"[A-Za-z0-9/_+=.@!-]{1,512}", "user": r"[A-Za-z0-9_+=,.@-]{0,64}",
               "status": r"rotated|retired|waiting|rolled_back|skipped|planned|failed|not_attempted",
               "key_age_days": r"None|\d{1,6}(\.\d{1,3})?", "next_rotation": r"None|\d{4}-\d{2}-\d{2}",
               "code": rf"{VERSION_RE}|[0-9a-f]{{16}}|unknown"}
PLACE_SHAPES = (r"\d{12}", r"[a-z]{2}(-[a-z]+)+-\d{1,2}", r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z?")


def logged_event(result: list[dict], detail_type: str) -> tuple[str, str, str, dict] | None:
    """(account, region, time, detail) of one Logs Insights row holding an event of ``detail_type`` whose
    envelope is as EventBridge writes it, else None."""
    try:
        message = next((cell.get("value") for cell in result if cell.get("field") == "@message"), None)
        event = json.loads(message or "")
        detail, place = event["detail"], (str(event["account"]), str(event["region"]), str(event["time"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if event.get("detail-type") != detail_type or not isinstance(detail, dict) or not all(
            re.fullmatch(shape, value, re.ASCII) for shape, value in zip(PLACE_SHAPES, place, strict=True)):
        return None
    return (*place, detail)


def checked_event(result: list[dict]) -> tuple[str, str, str, dict] | None:
    """An Access Keys Checked event's (account, region, time, detail), its parts as the function writes them."""
    found = logged_event(result, "Access Keys Checked")
    if found is None or not isinstance(found[3].get("part"), int) or not isinstance(found[3].get("secrets"), list):
        return None
    return found


def latest_runs(results: list[list[dict]]) -> dict[tuple[str, str], dict]:
    """Per (account, region): its latest whole run's parts (rows come newest first; of a part sent twice, by a
    retried invocation with the same run id, the newest is kept)."""
    runs: dict[tuple[str, str], dict] = {}
    for result in results:
        found = checked_event(result)
        if found is None or found[3].get("partial") is True:
            continue
        account, region, when, detail = found
        run = runs.setdefault((account, region), {"run": str(detail.get("run")), "time": when, "parts": {}})
        if when > run["time"] and str(detail.get("run")) != run["run"]:  # an older run was read first
            run.update(run=str(detail.get("run")), time=when, parts={})
        if str(detail.get("run")) == run["run"]:
            run["parts"].setdefault(detail["part"], detail)
    return runs


def newer_secrets(results: list[list[dict]], runs: dict[tuple[str, str], dict]) -> dict[tuple[str, str], dict]:
    """Per (account, region): each secret a partial run (targeted, rollback, leak) checked after the latest whole
    run, as the newest such run left it: {secret name: (its row, its event's detail)}."""
    newer: dict[tuple[str, str], dict] = {}
    for result in results:  # newest first: a secret's first row is its newest
        found = checked_event(result)
        if found is None or found[3].get("partial") is not True:
            continue
        account, region, when, detail = found
        if (account, region) in runs and when <= runs[(account, region)]["time"]:
            continue
        for secret in detail["secrets"]:
            name = secret.get("secret") if isinstance(secret, dict) else None
            newer.setdefault((account, region), {}).setdefault(str(name), (secret, detail))
    return newer


def version_of(detail: dict) -> str:
    """The release the function reported (1.0.0 on: what make org-package names the code by, and make org-status
    shows), else the hash of its code (a function older than 1.0.0)."""
    version = str(detail.get("version"))
    return version if re.fullmatch(VERSION_RE, version, re.ASCII) else str(detail.get("code"))


def secret_cells(secret: Any, code: str) -> dict[str, str] | None:
    """A secret's cells, each of its shape (CELL_SHAPES), or None."""
    if not isinstance(secret, dict):
        return None
    cells = {name: str(secret.get(name)) for name in CELL_SHAPES if name != "code"} | {"code": code}
    if not all(re.fullmatch(CELL_SHAPES[name], value, re.ASCII) for name, value in cells.items()):
        return None
    return {name: "-" if value == "None" else value for name, value in cells.items()}  # no key yet: no age


def run_notes(account: str, region: str, run: dict | None, now: float) -> list[str]:
    """What is wrong with an account and region's latest whole run: none (only partial runs), older than
    STALE_HOURS, a part missing, Active keys past the deadline that no secret holds."""
    if run is None:
        return [f"{account} {region}: STALE, no whole run in the window, only targeted, rollback or leak runs (is "
                f"its daily schedule on?)"]
    notes, parts = [], [run["parts"][number] for number in sorted(run["parts"])]
    checked = calendar.timegm(time.strptime(run["time"][:19], "%Y-%m-%dT%H:%M:%S"))
    if (now - checked) / 3600 > STALE_HOURS:
        notes.append(f"{account} {region}: STALE, last checked {run['time']} (is its daily schedule on?)")
    if len(parts) != parts[0].get("parts"):
        notes.append(f"{account} {region}: {len(parts)} parts of its last run arrived, "
                     f"not {shown(str(parts[0].get('parts')))}")
    unmanaged = parts[0].get("unmanaged_overdue_keys")
    if isinstance(unmanaged, int) and not isinstance(unmanaged, bool) and unmanaged > 0:
        notes.append(f"{account} {region}: OVERDUE, {unmanaged} Active keys past the deadline that no secret holds "
                     f"(make report there names them)")
    return notes


def run_rows(account: str, region: str, run: dict | None, now: float,
             newer: dict | None = None) -> tuple[list[tuple[str, ...]], list[str]]:
    """One account and region's rows: its latest whole run's, each secret a later partial run checked (``newer``)
    as that run left it; and what is wrong (run_notes; rows not of the function's shapes are left out)."""
    notes = run_notes(account, region, run, now)
    parts = [run["parts"][number] for number in sorted(run["parts"])] if run else []
    checked = {str(secret.get("secret")) if isinstance(secret, dict) else str(id(secret)): (secret, detail)
               for detail in parts for secret in detail["secrets"]} | (newer or {})
    rows, bad = [], 0
    for secret, detail in checked.values():
        cells = secret_cells(secret, version_of(detail))
        if cells is None:
            bad += 1
            continue
        state = "OVERDUE" if secret.get("overdue") is True else cells["status"]
        rows.append((account, region, cells["secret"], cells["user"], cells["key_age_days"],
                     cells["next_rotation"], state + (" (dry run)" if detail.get("dry_run") is True else ""),
                     cells["code"]))
    owners = [(str(secret.get("secret")), secret.get("owner")) for secret, detail in checked.values()
              if secret_cells(secret, version_of(detail)) is not None]
    unowned = sorted(name for name, owner in owners if owner == "")
    if unowned and any(isinstance(owner, str) and owner for _name, owner in owners):  # an account using owners
        notes.append(f"{account} {region}: {len(unowned)} secrets' users have no key-rotation-owner: "
                     f"{' '.join(unowned[:5])}{' ...' if len(unowned) > 5 else ''}")
    if bad:
        notes.append(f"{account} {region}: {bad} rows not as the function writes them, left out")
    elif not rows and parts:  # it ran and manages no secret: a row all the same, so every account is on the table
        code = version_of(parts[0])
        rows.append((account, region, "-", "-", "-", "-", "no secrets",
                     code if re.fullmatch(CELL_SHAPES["code"], code, re.ASCII) else "-"))
    return rows, notes


def report_rows(results: list[list[dict]], now: float,
                instances: set[tuple[str, str]] | None = None) -> tuple[list[tuple[str, ...]], list[str]]:
    """The table's rows (account, region, secret, user, key age, next rotation, state, version), each account's
    latest whole run's with later partial runs' secrets over them, and what is wrong with a run; an account and
    region the stack set deployed to (``instances``) that sent no run is a row too: MISSING."""
    rows, notes = [], []
    runs = latest_runs(results)
    newer = newer_secrets(results, runs)
    for account, region in sorted(set(runs) | set(newer)):
        more, said = run_rows(account, region, runs.get((account, region)), now, newer.get((account, region)))
        rows += more
        notes += said
    for account, region in sorted((instances or set()) - set(runs) - set(newer)):
        rows.append((account, region, "-", "-", "-", "-", "MISSING", "-"))
    return rows, notes


# The roles report's verdicts (lambda_function.VERDICTS, by their first words), each account's latest
# "Access Keys Replaceable" as counts: what make report ROLES=true said there (a heuristic, from CloudTrail).
ROLE_VERDICTS = (("runs in AWS", "runs in AWS"), ("a CI role", "CI role"), ("keep", "keep"),
                 ("no management", "unseen"))


def replaceable_lines(results: list[list[dict]]) -> list[str]:
    """One line per account and region that sent a roles report: its latest run's keys per verdict and when.
    A count that is not a whole number, or a verdict not of the function's, is left out (never printed)."""
    latest: dict[tuple[str, str], tuple[str, dict]] = {}
    for result in results:  # newest first
        found = logged_event(result, "Access Keys Replaceable")
        if found is not None and isinstance(found[3].get("verdicts"), dict):
            latest.setdefault(found[:2], (found[2], found[3]["verdicts"]))
    lines = []
    for (account, region), (when, verdicts) in sorted(latest.items()):
        counts = []
        for start, name in ROLE_VERDICTS:
            named = [v.get("keys") for k, v in verdicts.items() if isinstance(k, str) and k.startswith(start)
                     and isinstance(v, dict)]
            count = named[0] if named else 0
            counts.append(f"{name} {count}" if isinstance(count, int) and not isinstance(count, bool) else "")
        lines.append(f"{account} {region}: keys a role could replace ({when[:10]}, heuristic): "
                     + ", ".join(c for c in counts if c))
    return lines


def stack_instances(got: dict[str, str], aws: Cli) -> set[tuple[str, str]] | None:
    """Each (account, region) the stack set has an instance in, or None when these credentials cannot list them
    (they are not the management account's, or a delegated administrator's with CALL_AS=DELEGATED_ADMIN)."""
    pairs = read_json(aws, "cloudformation", "list-stack-instances", *stack_set_call(got), "--query",
                      "Summaries[].[Account, Region]")
    if not isinstance(pairs, list):
        return None
    good = [pair for pair in pairs if isinstance(pair, list) and len(pair) == 2 and all(
        isinstance(value, str) and re.fullmatch(shape, value, re.ASCII)
        for shape, value in zip(PLACE_SHAPES[:2], pair, strict=True))]
    # a row not of the documented shape is not read as "no instance there": a region left out would go unchecked
    return {(pair[0], pair[1]) for pair in good} if len(good) == len(pairs) else None


def render_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def query_results(got: dict[str, str], aws: Cli) -> list[list[dict]]:
    """REPORT_QUERY over the last DAYS of LOG_GROUP, waited for."""
    end = int(time.time()) + 60  # a minute ahead: an event of this very second is in
    query = aws("logs", "start-query", "--log-group-name", got["LOG_GROUP"], "--start-time",
                str(end - int(got["DAYS"]) * 86400), "--end-time", str(end), "--query-string", REPORT_QUERY,
                "--query", "queryId", "--output", "text")
    while True:
        answer = json.loads(aws("logs", "get-query-results", "--query-id", query, "--output", "json") or "{}")
        if answer.get("status") not in ("Scheduled", "Running"):
            break
        time.sleep(POLL_SECONDS)
    if answer.get("status") != "Complete":
        raise SystemExit(f"the query on {got['LOG_GROUP']} ended {answer.get('status')}")
    return answer.get("results", [])


def run_org_report(got: dict[str, str], given: list[tuple[str, str]], aws: Cli) -> None:
    """One table of every account's managed secrets, from the central log group (a Logs Insights query, as
    CENTRAL_PROFILE when given), with each account and region the stack set deployed to and never heard from."""
    instances = stack_instances(got, aws.in_region(""))  # in the stack set's own region
    results = query_results(got, aws.as_profile(got.get("CENTRAL_PROFILE", "")))
    rows, notes = report_rows(results, time.time(), instances)
    if len(results) >= REPORT_LIMIT:  # any account may put events on the bus: many could push others' out
        notes.append(f"the query returned its most, {REPORT_LIMIT} events: an older run may be left out (an "
                     f"account MISSING may have reported; DAYS=1 looks at less)")
    print(render_table([("account", "region", "secret", "user", "key age (days)", "next rotation", "state",
                         "version"), *rows]))
    if instances is None:
        notes.append(f"stack set {got['STACK_SET']}'s instances could not be read with these credentials: an "
                     f"account that never reported is not listed (run from the management account, or "
                     f"CALL_AS=DELEGATED_ADMIN)")
    for note in notes + replaceable_lines(results):
        print(note)
    print(f"{len({row[:2] for row in rows})} accounts and regions, {sum(row[2] != '-' for row in rows)} secrets, "
          f"{sum(row[6].startswith('OVERDUE') for row in rows)} overdue, {sum('STALE' in n for n in notes)} stale, "
          f"{sum(row[6] == 'MISSING' for row in rows)} missing (each function's last whole run, and each secret a "
          f"later run checked, in the last {got['DAYS']} days)")


RUN = {"policy": run_policy, "create": run_create, "configure": run_configure, "deploy": run_deploy,
       "schedule": run_schedule, "exposed-rule": run_exposed_rule, "invoke": run_invoke, "report": run_report,
       "alarms": run_alarms,
       "pause": run_pause, "resume": run_resume, "logs": run_logs, "destroy": run_destroy,
       "rollback": run_rollback, "skip": run_skip, "unskip": run_unskip, "status": run_status,
       "org-package": run_org_package, "org-deploy": run_org_deploy, "org-update": run_org_update,
       "org-status": run_org_status, "org-remove": run_org_remove, "org-report": run_org_report}


def render_report(summary: dict) -> str:
    """make report: a table a person reads at a glance (user, key age, managed or not, next rotation, who owns the
    keys: the user's key-rotation-owner tag, or MISSING)."""
    rows = [("user", "key age (days)", "managed", "next rotation", "overdue", "owner")]
    for entry in summary.get("secrets", []):
        rows.append((str(entry.get("user")), str(entry.get("key_age_days")), f"yes ({entry['secret']})",
                     str(entry.get("next_rotation")), "OVERDUE" if entry.get("overdue") else "",
                     str(entry.get("owner") or "MISSING")))
    account = summary.get("report") or {}
    for entry in account.get("overdue_unmanaged", []):
        rows.append((entry["user"], str(entry["age_days"]), "no", "never (no secret)", "OVERDUE", "not read"))
    lines = [render_table(rows)]
    if account.get("root_key_active"):
        lines.append("the root user has an Active access key: CIS asks that it have none")
    if account.get("failed"):
        lines.append(account["failed"])
    roles = summary.get("roles")
    if isinstance(roles, dict):
        lines += render_roles(roles)
    return "\n".join(lines)


def render_roles(roles: dict) -> list[str]:
    """make report ROLES=true: each Active key's verdict (which a role could replace) with its evidence, then
    each verdict's counts; every verdict a heuristic from the events of the regions read."""
    rows = [("user", "key", "held by", "verdict", "events", "first seen", "last seen")]
    for key in roles.get("keys", []):
        seen = [e for e in key.get("evidence", []) if e.get("verdict") == key.get("verdict")] or [{}]
        rows.append((str(key.get("user")), str(key.get("key_id")), str(key.get("secret") or "no secret"),
                     str(key.get("verdict")), str(key.get("events")), str(seen[0].get("first_seen") or ""),
                     str(seen[0].get("last_seen") or "")))
    for key in roles.get("not_read_this_run", []):
        rows.append((str(key.get("user")), str(key.get("key_id") or "(keys not listed)"), "", str(key.get("why")),
                     "", "", ""))
    lines = ["", f"Which keys a role could replace (regions read: {' '.join(roles.get('regions_read') or [])}, "
                 f"{roles.get('lookback_days')} days of CloudTrail):", render_table(rows)]
    for verdict, row in (roles.get("verdicts") or {}).items():
        lines.append(f"{verdict}: {row.get('keys')} keys, {row.get('events')} events, first seen "
                     f"{row.get('first_seen') or '-'}, last seen {row.get('last_seen') or '-'} ({row.get('basis')})")
    return lines


def main(argv: list[str], environ: Mapping[str, str] = os.environ) -> int:
    try:
        if argv[:1] == ["check"] and len(argv) == 2:
            check(argv[1], environ)
            return 0
        if len(argv) == 1 and argv[0] in RUN:
            got, given = check(argv[0], environ)
            RUN[argv[0]](got, given, Cli(environ, got.get("REGION", ""), got))
            return 0
        if argv[:1] == ["report-table"] and len(argv) == 2:
            print(render_report(json.loads(Path(argv[1]).read_text())))
            return 0
    except Refused as refused:
        print(refused.message, file=sys.stderr)
        return refused.code if isinstance(refused.code, int) and refused.code else 2
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
