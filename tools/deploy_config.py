"""The Makefile's deploy targets, in Python: every value is data, checked before any call.

    make TARGET VAR=value ...   # runs: PYTHON tools/deploy_config.py TARGET (.venv's python, else .venv-cli's)
    python tools/deploy_config.py --check TARGET   # the checks alone (make runs them before the target)
    python tools/deploy_config.py --targets        # each target and what it does (make help lists them)

Make hands the user's values over in the environment, never as shell text (it keeps each value as typed and
exports it, with GIVEN_SETTINGS naming the function's settings). Each target is an argparse subcommand whose
options are the values it takes: each option's default is the environment's value and its type the value's one
declaration (VALUES), so a value that is not what it names, or that starts with ``-``, is refused with exit 2
before anything is called. AWS is called with boto3 clients (the CLI's environment: AWS_PROFILE, the region,
AWS_ENDPOINT_URL; make's AWS='aws --profile p' too): no value is ever spliced into a command or a query.

The file, in order:
  errors         Refused, Stopped, Failed: one line and an exit code, never a stack trace
  the function   lambda_function, loaded on first use: its settings table and parser check the settings
  values         VALUES (one declaration per value), checked(), the function's settings, template.yaml's
                 parameters (read with PyYAML, CloudFormation's tags as data)
  policy         make policy: LambdaExecutionRole.json filled in as data, its destinations checked with the
                 function's own ARN readers (account_of, region_of, foreign_account, is_topic_arn, event_bus)
  AWS            Aws: boto3 clients, a failure said in one line naming what does not exist
  targets        TARGETS, declared once each by @target: the single-account ones, then the organisation's
  org-report     the central log group's events as one table
  main           the argparse parser built from TARGETS and VALUES
"""

from __future__ import annotations

import argparse
import calendar
import difflib
import functools
import hashlib
import importlib
import json
import os
import re
import shlex
import sys
import time
import types
import zipfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ALIASES = {"SEC": "sec"}  # make's variable for `sec`


class Refused(SystemExit):
    """A value that is not what it names, or a needed one missing: exit 2, before anything is called."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Stopped(Refused):
    """An expected refusal found once something was read (no such function, nothing to roll back, a stack's own
    function): one line, its reason, and a non-zero exit."""


class Failed(Stopped):
    """A failed AWS call, in one line (what does not exist, named), with AWS's error code (``error``)."""

    def __init__(self, message: str, error: str) -> None:
        super().__init__(message, 1)
        self.error = error


@functools.cache
def function_module() -> types.ModuleType:
    """lambda_function, imported on first use (a target that takes no setting never loads it; make help needs
    no boto3). Its settings table and parser are the only judges of a setting."""
    sys.path.insert(0, str(ROOT))
    return importlib.import_module("lambda_function")


def __getattr__(name: str) -> Any:
    """SETTINGS: the function's settings' names, loaded when first asked for."""
    if name == "SETTINGS":
        return tuple(function_module().SETTINGS_TABLE)
    raise AttributeError(name)


# --- what each value may be -------------------------------------------------------------------------------------

PARTITION = r"arn:aws(-[a-z]+)*"
REGION_RE = r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}"
ACCOUNT_RE = r"[0-9]{12}"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
MRK = r"mrk-[0-9a-f]{32}"
ALIAS = r"alias/[A-Za-z0-9/_-]{1,250}"
CRON_FIELD = r"[0-9A-Za-z*?,/#-]+"
OU_RE = r"ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}|r-[0-9a-z]{4,32}"
OVERRIDE_RE = rf"{ACCOUNT_RE}:[A-Za-z][A-Za-z0-9]{{0,254}}=[!-~]{{0,4096}}"  # a value without spaces
SECRET_NAME = r"[A-Za-z0-9/_+=.@-]{1,512}"


@dataclass(frozen=True)
class Value:
    """One value make may hand over: the pattern the whole value must match, what it is (said when refused), its
    default, its range, and what to say when a target needs it and it is missing."""

    pattern: str
    meaning: str
    default: str = ""
    low: int | None = None
    high: int | None = None
    missing: str = ""
    check: Callable[[str], bool] | None = None  # a further judge (an existing file, the function's topic ARN)


def is_topic(value: str) -> bool:
    return function_module().is_topic_arn(value)


PERCENT = "a percentage: a whole number from {} to 100"
VALUES: dict[str, Value] = {
    "FUNCTION": Value(r"[A-Za-z0-9_-]{1,64}", "a Lambda function name: 1 to 64 letters, digits, '-' or '_'",
                      missing="give FUNCTION=<the Lambda function's name>: it is never guessed"),
    "STACK": Value(r"[A-Za-z][A-Za-z0-9-]{0,127}",
                   "a CloudFormation stack name: a letter, then at most 127 letters, digits or '-'"),
    "ROLE": Value(rf"{PARTITION}:iam::{ACCOUNT_RE}:role/[A-Za-z0-9+=,.@_/-]{{1,512}}",
                  "a role ARN: arn:aws:iam::ACCOUNT_ID:role/NAME",
                  missing="make create needs ROLE=arn:aws:iam::ACCOUNT_ID:role/NAME"),
    "REGION": Value(REGION_RE, "a region like eu-west-1"),
    "ACCOUNT_ID": Value(ACCOUNT_RE, "an account id: 12 digits"),
    "TIMEOUT": Value(r"[1-9][0-9]{0,2}", "seconds: a whole number from 1 to 900", "900", 1, 900),
    "MEMORY": Value(r"[1-9][0-9]{2,4}", "megabytes: a whole number from 128 to 10240", "256", 128, 10240),
    "RETRIES": Value(r"[0-2]", "0, 1 or 2", "2"),
    "SCHEDULE": Value(rf"rate\([1-9][0-9]{{0,5}} (minutes?|hours?|days?)\)|cron\({CRON_FIELD}( {CRON_FIELD}){{5}}\)",
                      "an EventBridge schedule: cron(0 6 * * ? *) or rate(1 day)", "cron(0 6 * * ? *)"),
    "SINCE": Value(r"[0-9]{1,7}", "minutes: a whole number", "60"),
    "PREFIX": Value(SECRET_NAME, "a secret-name prefix: 1 to 512 letters, digits or /_+=.@- (what a Secrets "
                    "Manager name may hold)", "iam-keys/"),
    "KMS_KEY_ID": Value(rf"{UUID}|{MRK}|{ALIAS}|{PARTITION}:kms:{REGION_RE}:{ACCOUNT_RE}:(key/({UUID}|{MRK})|{ALIAS})",
                        "a KMS key id (a UUID or mrk-<32 hex>), alias/NAME, or a key or alias ARN"),
    # IAM's path rule, without the wildcards '*' and '?', which would widen the users the role reaches
    "USER_PATH": Value(r"/|/[!-)+->@-~]{1,510}/", "a user path like /key-rotation/ (no '*' or '?')",
                       "/key-rotation/"),
    "TOPIC": Value(r"arn:[!-~]{1,1000}", "an SNS topic ARN: arn:aws:sns:REGION:ACCOUNT_ID:NAME", check=is_topic),
    "EVENT": Value(r"[^\x00]+", "an existing JSON file", "events/dry-run.json", check=lambda v: Path(v).is_file()),
    "SECRET": Value(rf"{SECRET_NAME}|{PARTITION}:secretsmanager:{REGION_RE}:{ACCOUNT_RE}:secret:{SECRET_NAME}",
                    "a secret's name (1 to 512 letters, digits or /_+=.@-) or ARN, e.g. iam-keys/ci-deployer",
                    missing="give SECRET=<the secret's name or ARN>, e.g. SECRET=iam-keys/ci-deployer"),
    # the organisation's targets (make org-...): lists are separated by spaces or commas
    "OUS": Value(rf"(?:{OU_RE})([ ,]+(?:{OU_RE}))*", "organisational unit ids (ou-xxxx-xxxxxxxx, or the root "
                 "r-xxxx), separated by spaces or commas",
                 missing="give OUS=<the organisational units to deploy to>, e.g. OUS=ou-ab12-cd34ef56: never guessed"),
    "REGIONS": Value(rf"{REGION_RE}([ ,]+{REGION_RE})*", "regions like eu-west-1, separated by spaces or commas",
                     missing="give REGIONS=<the regions to deploy to>, e.g. REGIONS='eu-west-1 us-east-1': never "
                     "guessed"),
    "ARTIFACT_PREFIX": Value(r"[a-z0-9][a-z0-9-]{1,38}[a-z0-9]", "an S3 bucket name's start: 3 to 40 lowercase "
                             "letters, digits or '-' (each region's bucket is PREFIX-REGION)",
                             missing="give ARTIFACT_PREFIX=<the start of each region's code bucket name> (make "
                             "org-package's)"),
    "STACK_SET": Value(r"[A-Za-z][A-Za-z0-9-]{0,63}",  # each account's function is named so: 64 at most
                       "a stack set name: a letter, then at most 63 letters, digits or '-'", "iam-key-rotation"),
    "CALL_AS": Value(r"SELF|DELEGATED_ADMIN", "SELF (the management account) or DELEGATED_ADMIN", "SELF"),
    "CANARY": Value(ACCOUNT_RE, "the account deployed first: 12 digits"),
    "FAILURE_PERCENT": Value(r"[0-9]{1,3}", PERCENT.format(0), "10", 0, 100),
    "MAX_PERCENT": Value(r"[0-9]{1,3}", PERCENT.format(1), "25", 1, 100),
    "OVERRIDES": Value(rf"{OVERRIDE_RE}(\s+{OVERRIDE_RE})*",
                       "ACCOUNT_ID:Parameter=value, separated by spaces (e.g. 111122223333:DryRun=true)"),
    "ORG_ID": Value(r"o-[a-z0-9]{10,32}", "an organisation id: o- and 10 to 32 lowercase letters or digits"),
    "LOG_GROUP": Value(r"[A-Za-z0-9_/.#-]{1,512}", "a log group name, e.g. /aws/events/key-rotation",
                       "/aws/events/key-rotation"),
    "DAYS": Value(r"[1-9][0-9]{0,3}", "days: a whole number from 1 to 9999", "3"),
    "CENTRAL_PROFILE": Value(r"[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,127}",
                             "an AWS CLI profile's name (for the central account)"),
    "OUTPUT": Value(r"table|json", "table (one row a secret) or json (the function's whole answer)", "table"),
    "ROLES": Value(r"true|false", "true (also judge which Active keys a role could replace, from CloudTrail) or "
                   "false"),
    "OWNERS": Value(r"true|false", "true (the role may tell each key's owner: SES from OWNER_SENDER, SNS topics of "
                    "this account) or false"),
}
SEC_MISSING = "make create needs SEC='iam-keys/a;iam-keys/b' (or SEC='iam-keys/*')"


def shown(value: str) -> str:
    """A refused value as the message quotes it: repr (a newline shows as \\n), clipped."""
    return repr(value if len(value) <= 80 else value[:77] + "...")


def checked(name: str, value: str) -> str:
    """The value, if it is what `name` names; else Refused."""
    rule = VALUES[name]
    if not re.fullmatch(rule.pattern, value, re.ASCII) or (
            rule.low is not None and not rule.low <= int(value) <= (rule.high or 0)):
        raise Refused(f"{name} must be {rule.meaning}, not {shown(value)}")
    if value.startswith("-"):  # FUNCTION=--help or SECRET=-x: what an `aws` command line would read as an option
        raise Refused(f"{name} must not start with '-' (the AWS CLI would read it as an option), not {shown(value)}")
    if rule.check is not None and not rule.check(value):
        raise Refused(f"{name} must be {rule.meaning}, not {shown(value)}")
    return value


def nearest(name: str, known: Collection[str]) -> str:
    """'; did you mean NAME?' for the known name nearest a typo (case aside), or nothing."""
    near = difflib.get_close_matches(name.upper(), [k.upper() for k in known], n=1, cutoff=0.6)
    return f"; did you mean {next(k for k in known if k.upper() == near[0])}?" if near else ""


def given_settings(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """The function's settings given by name: GIVEN_SETTINGS lists the names, each value is in its own variable.
    A name is checked before its value is read: the function's own, or refused with the nearest one."""
    settings = tuple(function_module().SETTINGS_TABLE)
    given = []
    for raw in environ.get("GIVEN_SETTINGS", "").split():
        name = ALIASES.get(raw, raw)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", raw, re.ASCII) or name not in settings:
            raise Refused(f"refused, nothing written: {shown(raw)} is not a setting of the function"
                          f"{nearest(raw, settings)} (known: {', '.join(settings)})")
        given.append((name, environ.get(raw, "")))
    return given


def check_each_setting(given: list[tuple[str, str]]) -> None:
    """Each given value alone, by its row of the table (the whole is checked again with what it joins)."""
    function = function_module()
    judges = {"sec": function.parse_secret_ids, "CENTRAL_ACCOUNT_ID": function.central_account,
              "ROLE_REGIONS": lambda value: function.role_regions(value, {}), "OWNER_SENDER": function.owner_sender}
    for name, value in given:
        try:
            if value:
                function.setting({name: value}, name)
                judges.get(name, str)(value)
        except function.ConfigError as err:
            raise Refused(f"refused, nothing written: {err}") from None


def production_defaults() -> dict[str, str]:
    """What make create (and the template) deploy when not told: a grace period and a rotation age that keep
    every key under MAX_KEY_AGE_DAYS with the default MAX_GRACE_HOURS (80 + 7 + 2 <= 90)."""
    return {s.name: s.deployed for s in function_module().SETTINGS_TABLE.values() if s.deployed is not None}


def merge_environment(current: Mapping[str, str] | None, given: list[tuple[str, str]],
                      defaults: Mapping[str, str] | None = None) -> dict:
    """The function's variables with the given settings set (an empty value removes one); others kept. Checked
    whole with the function's own parser: nothing is written that the function would refuse."""
    function = function_module()
    variables = {**(defaults or {}), **(current or {})}
    for name, value in given:
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


def cloudformation_yaml(text: str) -> Any:
    """A CloudFormation template read by PyYAML: its short-form tags as the long form's data (!Ref X is
    {"Ref": "X"}, !GetAtt A.B is {"Fn::GetAtt": ["A", "B"]}, !Sub ... is {"Fn::Sub": ...})."""
    import yaml  # the AWS CLI brings PyYAML: make's python has it

    class Loader(yaml.SafeLoader):
        pass

    def tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict:
        constructs = {yaml.ScalarNode: loader.construct_scalar, yaml.SequenceNode: loader.construct_sequence,
                      yaml.MappingNode: loader.construct_mapping}
        value = constructs[type(node)](node, **({} if isinstance(node, yaml.ScalarNode) else {"deep": True}))
        if suffix == "Ref":
            return {"Ref": value}
        return {f"Fn::{suffix}": value.split(".", 1) if suffix == "GetAtt" and isinstance(value, str) else value}

    Loader.add_multi_constructor("!", tagged)
    return yaml.load(text, Loader=Loader)


@functools.cache
def template_parameters() -> dict[str, dict[str, Any]]:
    """template.yaml's parameters: name -> its Type, Default, AllowedPattern, AllowedValues... as text."""
    parameters = cloudformation_yaml((ROOT / "template.yaml").read_text())["Parameters"]
    return {name: {key: [str(v) for v in value] if isinstance(value, list) else str(value)
                   for key, value in parameter.items()} for name, parameter in parameters.items()}


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


# --- the role's policy, built as data ---------------------------------------------------------------------------

PLACEHOLDERS = re.compile(r"ACCOUNT_ID|REGION|FUNCTION_NAME|OWNER_SENDER|iam-keys/")
# The statements whose actions take no resource: AWS allows only "*" there.
STAR_RESOURCE = {"ListAndBatchReadSecrets", "ReadCredentialReport", "LookUpHoldouts"}


def policy_options(got: Mapping[str, str], given: list[tuple[str, str]]) -> dict[str, str]:
    settings = dict(given)
    return {"prefix": got.get("PREFIX", VALUES["PREFIX"].default), "kms_key_id": got.get("KMS_KEY_ID", ""),
            "user_path": got.get("USER_PATH", VALUES["USER_PATH"].default),
            "event_bus": settings.get("EVENT_BUS", ""), "account_report": settings.get("ACCOUNT_REPORT", ""),
            "lookup_holdouts": settings.get("LOOKUP_HOLDOUTS", ""),
            "notify_topic_arn": settings.get("NOTIFY_TOPIC_ARN", ""),
            "central_account_id": settings.get("CENTRAL_ACCOUNT_ID", ""), "owners": got.get("OWNERS", ""),
            "owner_sender": settings.get("OWNER_SENDER", ""), "roles": got.get("ROLES", "")}


def check_policy_values(account_id: str, region: str, function: str, prefix: str = "iam-keys/",
                        kms_key_id: str = "", user_path: str = "/", event_bus: str = "",
                        notify_topic_arn: str = "", central_account_id: str = "", **_flags: str) -> None:
    """Each value against what it names (the account and region only when known: make policy asks STS for them
    after these checks); the bus, topic and central account by the function's own readers. Refused before
    anything is called."""
    for name, value in (("ACCOUNT_ID", account_id), ("REGION", region), ("KMS_KEY_ID", kms_key_id)):
        if value:
            checked(name, value)
    checked("FUNCTION", function)
    checked("PREFIX", prefix)
    checked("USER_PATH", user_path or "/")
    lambda_function = function_module()
    try:
        lambda_function.event_bus(event_bus or None)
        lambda_function.central_account(central_account_id or None)
    except lambda_function.ConfigError as err:
        raise Refused(f"refused, nothing written: {err}") from None
    if not event_bus.isascii():
        raise Refused(f"EVENT_BUS must be an EventBridge bus name or ARN, not {shown(event_bus)}")
    if notify_topic_arn and not lambda_function.is_topic_arn(notify_topic_arn):
        raise Refused(f"NOTIFY_TOPIC_ARN must be {VALUES['TOPIC'].meaning}, not {shown(notify_topic_arn)}")


def check_destination(setting: str, arn: str, account_id: str, central_account_id: str, region: str = "") -> None:
    """A topic or bus ARN must be in this account, or in the one CENTRAL_ACCOUNT_ID names (the function's own
    rule, foreign_account); a bus (``region`` given) in this region, since PutEvents reaches no other
    (template.yaml forwards with ForwardEventsRule)."""
    function = function_module()
    where, account = function.region_of(arn), function.account_of(arn)
    if region and where != region:
        raise Refused(f"{setting} is in region {where}, not {region}: PutEvents reaches only its own region's buses "
                      "(give a bus here and forward with a rule, as template.yaml does); nothing written")
    if not function.foreign_account(account, account_id, central_account_id or None):
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


def wanted_statements(kms_key_id: str, event_bus: str, account_report: str, lookup_holdouts: str, owners: str,
                      owner_sender: str, roles: str) -> dict[str, bool]:
    """The optional statements, each on or off: without a KMS key id, no KMS statement; without an event bus, no
    events:PutEvents; the credential report's and CloudTrail's reads only when ACCOUNT_REPORT and LOOKUP_HOLDOUTS
    are on; with OWNERS=true, SNS topics of this account, the told mark, and SES from OWNER_SENDER only."""
    truthy = function_module().TRUE_WORDS
    return {"UseSecretsKeyOnlyViaSecretsManager": bool(kms_key_id), "PublishRotationEvents": bool(event_bus),
            "ReadCredentialReport": account_report.strip().lower() in truthy,
            "LookUpHoldouts": lookup_holdouts.strip().lower() in truthy or roles == "true",
            "ListEveryUsersKeys": roles == "true",  # the roles report: keys of users no secret manages too
            "TellOwnersByEmail": owners == "true" and bool(owner_sender), "TellOwnersTopics": owners == "true",
            "MarkToldOwners": owners == "true"}


def render_policy(account_id: str, region: str, function: str, prefix: str = "iam-keys/", kms_key_id: str = "",
                  user_path: str = "/", event_bus: str = "", account_report: str = "",
                  lookup_holdouts: str = "", notify_topic_arn: str = "", central_account_id: str = "",
                  owners: str = "", owner_sender: str = "", roles: str = "") -> dict:
    """LambdaExecutionRole.json, loaded as JSON, its placeholders filled in the strings that hold them, never in
    the text, with the optional statements wanted_statements keeps; a topic adds sns:Publish on it.
    ``user_path`` narrows the users whose keys the role may manage. A topic or bus in another account is
    refused unless ``central_account_id`` names that account."""
    if not account_id:
        raise Refused("ACCOUNT_ID must be an account id: 12 digits, not ''")
    if not region:
        raise Refused("give REGION=... (or configure the CLI's region)")
    check_policy_values(account_id, region, function, prefix, kms_key_id, user_path, event_bus,
                        notify_topic_arn, central_account_id)
    parts = {"ACCOUNT_ID": account_id, "REGION": region, "FUNCTION_NAME": function, "iam-keys/": prefix,
             "OWNER_SENDER": owner_sender}
    wanted = wanted_statements(kms_key_id, event_bus, account_report, lookup_holdouts, owners, owner_sender, roles)
    template = json.loads((ROOT / "LambdaExecutionRole.json").read_text())
    statements = []
    for statement in [filled(s, parts) for s in template["Statement"] if wanted.get(s["Sid"], True)]:
        if statement["Sid"] == "UseSecretsKeyOnlyViaSecretsManager":
            statement.update(kms_resource(kms_key_id, account_id, region, statement.get("Condition", {})))
        elif statement["Sid"] == "PublishRotationEvents":
            if event_bus.startswith("arn:"):
                check_destination("EVENT_BUS", event_bus, account_id, central_account_id, region)
            statement["Resource"] = event_bus if event_bus.startswith("arn:") else \
                f"arn:aws:events:{region}:{account_id}:event-bus/{event_bus}"
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


# --- AWS: boto3 clients, each failure said in one line ----------------------------------------------------------

# What does not exist, by the service that said so: one line, with what to check.
MISSING_THING = {
    "lambda": ("FUNCTION", "no function {named} {where}: make create FUNCTION={named} makes one (is FUNCTION=, "
                           "REGION= or the profile right?)"),
    "secretsmanager": ("SECRET", "no secret {named} {where} (the README's step 1 makes one; is SECRET=, REGION= or "
                                 "the profile right?)"),
    "cloudformation": ("STACK", "no stack {named} {where} (aws cloudformation list-stacks lists them; is STACK= or "
                                "REGION= right?)"),
    "logs": ("LOG_GROUP", "no log group {named} {where}: it is in the central account (central.yaml's stack): give "
                          "CENTRAL_PROFILE=<its CLI profile>, and REGION= its region"),
    "logs as profile": ("LOG_GROUP", "no log group {named} {where}: is central.yaml's stack there (REGION= its "
                                     "region, LOG_GROUP= its LogGroupName)?"),
}


def cli_options(aws: str) -> argparse.Namespace:
    """The options of make's AWS (the CLI as the user calls it, e.g. `aws --profile dev`) that name where the
    calls go: --profile, --region, --endpoint-url (the rest is the CLI's own, and no call of ours)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for option in ("--profile", "--region", "--endpoint-url"):
        parser.add_argument(option, default="")
    return parser.parse_known_args(shlex.split(aws)[1:])[0]


class Aws:
    """boto3 clients as the AWS CLI would call: the region REGION names (else the environment's or the profile's),
    the profile and endpoint of make's AWS (else AWS_PROFILE, AWS_ENDPOINT_URL: botocore reads them).
    ``names``: the target's values, to name what does not exist when a call fails. ``wire``: given each session
    made, to add botocore event hooks (tests answer at the wire there)."""

    def __init__(self, environ: Mapping[str, str], region: str = "", names: Mapping[str, str] | None = None,
                 wire: Callable[[Any], None] | None = None, profile: str = "") -> None:
        import boto3
        import botocore.exceptions

        options = cli_options(environ.get("AWS") or "aws")
        self.environ, self.names, self.wire = environ, dict(names or {}), wire
        self.profile = profile or options.profile
        region = region or options.region or environ.get("AWS_DEFAULT_REGION") or environ.get("AWS_REGION") or ""
        self.endpoint, self.region, self.clients = options.endpoint_url or None, region, {}
        try:
            self.session = boto3.Session(profile_name=self.profile or None, region_name=region or None)
        except botocore.exceptions.ProfileNotFound:
            raise Failed(f"no AWS CLI profile {self.profile!r} (aws configure list-profiles lists those there "
                         "are)", "ProfileNotFound") from None
        if wire is not None:
            wire(self.session)

    def __call__(self, service: str, operation: str, check: bool = True, **parameters: Any) -> Any:
        """The call's answer; a failure raises Failed in one line (check=False: None, said by no one)."""
        import botocore.exceptions

        try:
            if service not in self.clients:
                self.clients[service] = self.session.client(service, endpoint_url=self.endpoint)
            return getattr(self.clients[service], operation)(**parameters)
        except botocore.exceptions.ClientError as err:
            if not check:
                return None
            raise self.failure(service, err) from None
        except botocore.exceptions.BotoCoreError as err:
            if not check:
                return None
            raise Failed(" ".join(str(err).split()), type(err).__name__) from None

    def pages(self, service: str, operation: str, key: str, check: bool = True, **parameters: Any) -> list | None:
        """Every page's ``key`` items, one list (as the CLI joins them)."""
        items: list = []
        while True:
            page = self(service, operation, check, **parameters)
            if page is None:
                return None
            items += page.get(key) or []
            token = next(((k, page[k]) for k in ("NextToken", "nextToken", "Marker") if page.get(k)), None)
            if token is None:
                return items
            parameters[{"Marker": "Marker"}.get(token[0], token[0])] = token[1]

    def failure(self, service: str, err: Any) -> Failed:
        """What does not exist, named with what to check (MISSING_THING); anything else, AWS's own words."""
        error = err.response.get("Error", {}).get("Code", "")
        line = " ".join(str(err).split())
        where = f"in {self.session.region_name or 'the CLI region'}" + (
            f" as profile {self.profile}" if self.profile else "")
        kind = service + (" as profile" if self.profile and service == "logs" else "")
        name, said = MISSING_THING.get(kind, ("", ""))
        named = self.names.get(name, "")
        if error == "StackSetNotFoundException":
            line = f"no stack set {self.names.get('STACK_SET', '')} {where} " \
                   f"(CALL_AS={self.names.get('CALL_AS', 'SELF')}): make org-deploy creates it"
        elif named and (error == "ResourceNotFoundException" or "does not exist" in line):
            line = said.format(named=named, where=where)
        elif error == "ResourceConflictException" and "already exist" in line and service == "lambda":
            line = f"function {named} exists already {where}: make configure FUNCTION={named} NAME=value changes " \
                   f"its settings, make deploy FUNCTION={named} its code"
        return Failed(line, error)

    def in_region(self, region: str) -> Aws:
        """These clients in another region (empty: the environment's own)."""
        return Aws(self.environ, region, self.names, self.wire, self.profile)

    def as_profile(self, profile: str) -> Aws:
        """These clients as the named profile (which the CLI prefers to credentials in the environment)."""
        return Aws(self.environ, self.region, self.names, self.wire, profile) if profile else self


# --- the targets, each declared once --------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """A deploy target: what it runs, the values it needs and takes (in the order they are checked), its line in
    make help, which settings it takes by name ("function": the function's, "template": template.yaml's
    parameters), and its own defaults where the shared one does not suit."""

    run: Callable[[dict, list, Aws], None]
    needs: tuple[str, ...]
    takes: tuple[str, ...]
    help: str
    settings: str = ""
    defaults: Mapping[str, str] = field(default_factory=dict)


TARGETS: dict[str, Target] = {}


def target(name: str, needs: tuple[str, ...], takes: tuple[str, ...], help: str, settings: str = "",
           **defaults: str) -> Callable:
    """Declares the decorated function as the target ``name`` (see Target)."""
    def declare(run: Callable) -> Callable:
        TARGETS[name] = Target(run, needs, takes, help, settings, defaults)
        return run
    return declare


# The release (semantic versioning): VERSION, kept equal to lambda_function.__version__ and to the version tag the
# template gives its function (tests keep all three equal; make release and make org-package refuse otherwise).
VERSION_RE = r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})(-[0-9A-Za-z.-]{1,64})?"
VERSION_TAG = "key-rotation-version"  # the function's tag naming its release: make create, make deploy, the stack's
STACK_TAG = "aws:cloudformation:stack-name"  # CloudFormation's tag on each function a stack made
CODE_ZIP = ROOT / "dist" / "lambda.zip"
POLL_SECONDS = 10  # between two looks at a stack, a stack set operation or a Logs Insights query


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


POLICY_HELP = "dist/policy.json: the role's policy for ACCOUNT_ID and REGION (asked of STS if not given)"


@target("policy", ("FUNCTION",), ("ACCOUNT_ID", "REGION", "PREFIX", "KMS_KEY_ID", "USER_PATH", "OWNERS", "ROLES"),
        POLICY_HELP, "function")
def run_policy(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    account = got.get("ACCOUNT_ID") or aws("sts", "get_caller_identity")["Account"]
    region = got.get("REGION") or aws.session.region_name or ""
    policy = render_policy(account, region, got["FUNCTION"], **policy_options(got, given))
    Path("dist").mkdir(exist_ok=True)
    Path("dist/policy.json.tmp").write_text(json.dumps(policy, indent=2) + "\n")
    os.replace("dist/policy.json.tmp", "dist/policy.json")
    print(f"dist/policy.json ({account}, {region})")


@target("create", ("FUNCTION", "ROLE"), ("REGION", "TIMEOUT", "MEMORY", "RETRIES"),
        "first deployment: function, settings, concurrency 1, async retries", "function")
def run_create(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    function = got["FUNCTION"]
    environment = merge_environment({}, given, production_defaults())
    made = aws("lambda", "create_function", FunctionName=function, Runtime="python3.13", Role=got["ROLE"],
               Handler="lambda_function.lambda_handler", Timeout=int(got["TIMEOUT"]), MemorySize=int(got["MEMORY"]),
               Code={"ZipFile": CODE_ZIP.read_bytes()}, Environment=environment,
               Tags={VERSION_TAG: release_version()})
    print(made["FunctionArn"])
    aws("lambda", "put_function_concurrency", FunctionName=function, ReservedConcurrentExecutions=1)
    aws("lambda", "put_function_event_invoke_config", FunctionName=function,
        MaximumRetryAttempts=int(got["RETRIES"]), MaximumEventAgeInSeconds=21600)
    print(f"{function}: reserved concurrency 1, {got['RETRIES']} retries of an asynchronous run")


def variables(function: str, aws: Aws) -> dict[str, str]:
    """The function's environment variables as Lambda has them."""
    found = aws("lambda", "get_function_configuration", FunctionName=function).get("Environment") or {}
    return dict(found.get("Variables") or {})


@target("configure", ("FUNCTION",), ("REGION",), "change settings by name (SEC=... GRACE_HOURS=...), keeping the "
        "others", "function")
def run_configure(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    merged = merge_environment(variables(got["FUNCTION"], aws), given)
    done = aws("lambda", "update_function_configuration", FunctionName=got["FUNCTION"], Environment=merged)
    print(json.dumps((done.get("Environment") or {}).get("Variables") or {}, indent=4))


@target("deploy", ("FUNCTION",), ("REGION",), "upload new code to an existing function")
def run_deploy(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    """New code, and the function's version tag (what make status shows) naming its release."""
    version = release_version()
    done = aws("lambda", "update_function_code", FunctionName=got["FUNCTION"], ZipFile=CODE_ZIP.read_bytes())
    aws("lambda", "tag_resource", Resource=done["FunctionArn"], Tags={VERSION_TAG: version})
    print(f"{got['FUNCTION']}\t{done['CodeSha256']}\tversion {version}")


def function_info(got: dict[str, str], aws: Aws) -> dict[str, str]:
    """The function as Lambda has it: its ARN, role, last change, release (VERSION_TAG) and the stack that made
    it (STACK_TAG). No such function: one line naming it, non-zero (Failed)."""
    found = aws("lambda", "get_function", FunctionName=got["FUNCTION"])
    configuration, tags = found.get("Configuration") or {}, found.get("Tags") or {}
    stack = tags.get(STACK_TAG) or ""
    if stack:
        checked("STACK", stack)  # CloudFormation's own tag; a name that is not a stack's is never passed on
        aws.names.setdefault("STACK", stack)
    return {"arn": configuration.get("FunctionArn") or "", "role": configuration.get("Role") or "",
            "modified": configuration.get("LastModified") or "", "stack": stack,
            "version": tags.get(VERSION_TAG) or ""}


def stack_resource(stack: str, logical_id: str, aws: Aws) -> str:
    """The physical name of one of the stack's resources (a rule's generated name)."""
    found = aws.pages("cloudformation", "list_stack_resources", "StackResourceSummaries", StackName=stack)
    named = [r.get("PhysicalResourceId") for r in found if r.get("LogicalResourceId") == logical_id]
    if not named or not named[0]:
        raise Stopped(f"stack {stack} has no {logical_id}")
    return named[0]


def stack_has_rule(got: dict[str, str], info: dict[str, str], logical_id: str, aws: Aws) -> bool:
    """A stack's function has the stack's rules: said, and no second rule added beside them (two rules, one of
    them paused, would still run it)."""
    if not info["stack"]:
        return False
    rule = stack_resource(info["stack"], logical_id, aws)
    state = aws("events", "describe_rule", Name=rule)["State"]
    change = (f"its Schedule parameter says when (aws cloudformation deploy ... --parameter-overrides Schedule=...); "
              f"make pause FUNCTION={got['FUNCTION']} pauses it") if logical_id == "ScheduleRule" else \
        "the stack's own rule answers AWS Health's exposed-key events"
    print(f"{got['FUNCTION']} was made by the CloudFormation stack {info['stack']}: its rule {rule} ({state}) "
          f"runs it, so no second rule is added; {change}")
    return True


def rule_to_function(aws: Aws, function_arn: str, rule: str, target: str, **rule_args: str) -> str:
    """An EventBridge rule (put_rule with ``rule_args``) that invokes the function, with the grant it needs (one
    statement per rule, ``events-TARGET``, replaced, so running it again changes nothing). The rule's ARN."""
    function = function_arn.split(":")[6]
    rule_arn = aws("events", "put_rule", Name=rule, **rule_args)["RuleArn"]
    statement = "events-schedule" if target == "rotate" else f"events-{target}"
    aws("lambda", "remove_permission", False, FunctionName=function, StatementId=statement)
    aws("lambda", "add_permission", FunctionName=function, StatementId=statement, Action="lambda:InvokeFunction",
        Principal="events.amazonaws.com", SourceArn=rule_arn)
    aws("events", "put_targets", Rule=rule, Targets=[{"Id": target, "Arn": function_arn}])
    print(f"{rule_arn} -> {function_arn}")
    return rule_arn


@target("schedule", ("FUNCTION",), ("REGION", "SCHEDULE"), "the EventBridge rule (daily by default) and its "
        "permission to invoke")
def run_schedule(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    info = function_info(got, aws)
    if not stack_has_rule(got, info, "ScheduleRule", aws):
        rule_to_function(aws, info["arn"], f"{got['FUNCTION']}-schedule", "rotate", ScheduleExpression=got["SCHEDULE"])


@target("exposed-rule", ("FUNCTION",), ("REGION",), "route 2a: run the function the moment AWS Health reports a "
        "key exposed")
def run_exposed_rule(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    """Route 2a: a rule that runs the function on AWS Health's exposed-key events (the codes it answers)."""
    info = function_info(got, aws)
    if stack_has_rule(got, info, "ExposedKeyRule", aws):
        return
    pattern = {"source": ["aws.health"], "detail-type": ["AWS Health Event"],
               "detail": {"service": ["RISK"], "eventTypeCode": list(function_module().EXPOSURE_CODES)}}
    rule_to_function(aws, info["arn"], f"{got['FUNCTION']}-exposed", "exposed", EventPattern=json.dumps(pattern))
    if info["arn"].split(":")[3] != "us-east-1":
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


def invoke(function: str, event: str, aws: Aws) -> Any:
    """The function's answer to the event file, as JSON (kept in answer_file). Its failure (FunctionError) is one
    line, its type and message, never the stack trace it carries (that is in make logs): Stopped, exit 1."""
    answer = answer_file(function)
    answer.parent.mkdir(exist_ok=True)
    done = aws("lambda", "invoke", FunctionName=function, Payload=Path(event).read_bytes())
    answer.write_bytes(done["Payload"].read())
    try:
        said = json.loads(answer.read_text() or "null")
    except ValueError:
        said = answer.read_text().strip()
    if not done.get("FunctionError"):
        return said
    said = said if isinstance(said, dict) else {"errorMessage": clipped(str(said), 200)}  # not Lambda's shape
    message = " ".join(str(said.get("errorMessage") or "no message").split())
    raise Stopped(f"the function failed ({said.get('errorType') or done['FunctionError']}): {message} (its log "
                  f"lines: make logs FUNCTION={function}; its answer: {answer})", 1)


def render_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


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




@target("invoke", ("FUNCTION",), ("REGION", "EVENT", "OUTPUT"), "run it now with EVENT (default: a dry run): a row "
        "a secret, the answer in dist/ (OUTPUT=json); fails if one did")
def run_invoke(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    """The function's answer as a table (OUTPUT=json: as it is); non-zero when any secret failed, a dry run's
    included (a refused secret is a failure of the plan)."""
    summary = invoke(got["FUNCTION"], got["EVENT"], aws)
    print(json.dumps(summary) if got["OUTPUT"] == "json" else render_summary(summary, got["FUNCTION"]))
    failed = failures(summary)
    if failed:
        plan = " of the plan (a dry run)" if isinstance(summary, dict) and summary.get("dry_run") else ""
        raise Stopped(f"{failed} secrets failed{plan}: each one's reason is in its row, whole in "
                      f"{answer_file(got['FUNCTION'])}", 1)


@target("report", ("FUNCTION",), ("REGION", "ROLES"), "the account's keys past MAX_KEY_AGE_DAYS, managed or not, "
        "and what rotates when (ROLES=true: which a role could replace)")
def run_report(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
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




def metrics_namespace(function: str, aws: Aws) -> str:
    """The deployed function's METRICS_NAMESPACE (its settings table's default when it has none)."""
    namespace = variables(function, aws).get("METRICS_NAMESPACE")
    namespace = namespace or function_module().SETTINGS_TABLE["METRICS_NAMESPACE"].default
    if not re.fullmatch(NAMESPACE_RE, namespace, re.ASCII) or namespace.startswith("AWS/"):
        raise Stopped(f"{function}'s METRICS_NAMESPACE {shown(namespace)} is no CloudWatch namespace: no alarm made", 1)
    return namespace


@target("alarms", ("FUNCTION",), ("REGION", "TOPIC"), "route 2a: the template's alarms (errors, no good run for "
        "36 h, key in use, overdue)")
def run_alarms(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    """Each row of ALARMS, put as FUNCTION-<its name>, telling TOPIC when given."""
    function, topic = got["FUNCTION"], got.get("TOPIC")
    namespace = metrics_namespace(function, aws)
    for alarm in ALARMS:
        row = {key: value for key, value in alarm.items() if key not in ("Name", "Resource")}
        aws("cloudwatch", "put_metric_alarm", **row | {
            "AlarmName": f"{function}-{alarm['Name']}", "AlarmDescription": row["AlarmDescription"].format(f=function),
            "Namespace": row["Namespace"] or namespace, "Dimensions": [{"Name": "FunctionName", "Value": function}],
            **({"AlarmActions": [topic], "OKActions": [topic]} if topic else {})})
    print(f"{len(ALARMS)} alarms for {function} (its metrics in {namespace})" + (f", telling {topic}" if topic else ""))


def schedule_rules(got: dict[str, str], aws: Aws) -> list[tuple[str, str]]:
    """The rules that run the function daily, each with what made it: its stack's ScheduleRule (the stack the
    function's STACK_TAG names, or STACK=), and route 2a's FUNCTION-schedule if there is one (make schedule made
    one beside a stack's before it knew better: paused with it, never left running)."""
    info = function_info(got, aws)
    if got.get("STACK") and info["stack"] and got["STACK"] != info["stack"]:
        raise Stopped(f"{got['FUNCTION']} was made by the stack {info['stack']}, not STACK={got['STACK']}")
    stack = got.get("STACK") or info["stack"]
    rules = [(stack_resource(stack, "ScheduleRule", aws), f"the stack {stack}'s ScheduleRule")] if stack else []
    own = f"{got['FUNCTION']}-schedule"
    if (aws("events", "describe_rule", False, Name=own) or {}).get("Name") == own:
        rules.append((own, "make schedule's" if not stack else "a second rule beside the stack's, which make "
                      f"schedule added (remove it: aws events remove-targets --rule {own} --ids rotate; aws events "
                      f"delete-rule --name {own})"))
    if not rules:
        raise Stopped(f"no rule {own}: route 2a's schedule is made by make schedule FUNCTION={got['FUNCTION']}; "
                      f"for a CloudFormation stack (route 2b) give STACK=<the stack's name>, e.g. "
                      f"make pause FUNCTION={got['FUNCTION']} STACK=iam-key-rotation")
    return rules


@target("pause", ("FUNCTION",), ("REGION", "STACK"), "stop the daily runs (a stack's rule found by the function's "
        "tag); nothing else changes")
def run_pause(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    for rule, made in schedule_rules(got, aws):
        aws("events", "disable_rule", Name=rule)
        print(f"paused {rule} ({made})")


@target("resume", ("FUNCTION",), ("REGION", "STACK"), "start the daily runs again (a stack's rule too)")
def run_resume(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    for rule, made in schedule_rules(got, aws):
        aws("events", "enable_rule", Name=rule)
        print(f"resumed {rule} ({made})")


@target("logs", ("FUNCTION",), ("REGION", "SINCE"), "the function's log lines of the last SINCE minutes (default 60)")
def run_logs(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    """The log lines of the last SINCE minutes, one a line as Lambda wrote each."""
    start = (int(time.time()) - int(got["SINCE"]) * 60) * 1000
    group = f"/aws/lambda/{got['FUNCTION']}"
    try:
        found = aws.pages("logs", "filter_log_events", "events", logGroupName=group, startTime=start)
    except Failed as failed:
        if failed.error != "ResourceNotFoundException":
            raise
        function_info(got, aws)  # no such function: said so
        print(f"no log lines yet: Lambda makes {group} at the function's first run (make invoke "
              f"FUNCTION={got['FUNCTION']} runs it)")
        return
    for event in found:
        print(str(event.get("message")).rstrip("\n"))
    if not found:
        print(f"no log lines in {group} in the last {got['SINCE']} minutes (SINCE=... looks further back)")


@target("destroy", ("FUNCTION",), ("REGION", "STACK"), "route 2a: remove schedule, function, alarms, list what "
        "stays; a stack's: STACK=<it> deletes it")
def run_destroy(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    """Route 2a's function: the schedule, the function and its alarms (one fires on missing data once the
    function is gone); then what stays, each with the command that removes it. A stack's function: its stack."""
    function, rule = got["FUNCTION"], f"{got['FUNCTION']}-schedule"
    info = function_info(got, aws)
    if info["stack"] or got.get("STACK"):
        destroy_stack(got, info["stack"], aws)
        return
    for name, target_id in ((rule, "rotate"), (f"{function}-exposed", "exposed")):
        aws("events", "remove_targets", False, Rule=name, Ids=[target_id])
        aws("events", "delete_rule", False, Name=name)
    aws("lambda", "delete_function", FunctionName=function)
    print(f"removed {function} and its schedule ({rule})")
    names = [f"{function}-{alarm['Name']}" for alarm in ALARMS]
    alarms = [a["AlarmName"] for a in aws.pages("cloudwatch", "describe_alarms", "MetricAlarms", AlarmNames=names)]
    if alarms:
        aws("cloudwatch", "delete_alarms", AlarmNames=alarms)
        print(f"removed its alarms: {' '.join(alarms)}")
    group = f"/aws/lambda/{function}"
    groups = aws.pages("logs", "describe_log_groups", "logGroups", logGroupNamePrefix=group)
    print("left in place:")
    print(f"  the role {info['role']} ({role_removal(info['role'], aws)})")
    if group in [g.get("logGroupName") for g in groups]:
        print(f"  the log group {group} (aws logs delete-log-group --log-group-name {group}; a CloudFormation "
              f"stack with the function name {function} fails while it exists)")
    print("  the secrets, their keys and the users' key-rotation-secret tags")


def destroy_stack(got: dict[str, str], stack: str, aws: Aws) -> None:
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
    aws("cloudformation", "delete_stack", StackName=stack)
    aws.clients["cloudformation"].get_waiter("stack_delete_complete").wait(
        StackName=stack, WaiterConfig={"Delay": POLL_SECONDS, "MaxAttempts": 720})
    print(f"removed the stack {stack}: {function}, its role, rules, alarms, queue and log group")
    print("left in place: the secrets, their keys and the users' key-rotation-secret tags")


def role_removal(role: str, aws: Aws) -> str:
    """The commands that remove the role: each of its policies (inline, attached), then the role."""
    name = role.rsplit("/", 1)[-1]
    inline = aws.pages("iam", "list_role_policies", "PolicyNames", False, RoleName=name)
    attached = aws.pages("iam", "list_attached_role_policies", "AttachedPolicies", False, RoleName=name)
    steps = [f"aws iam delete-role-policy --role-name {name} --policy-name {policy}"
             for policy in (inline if inline is not None else ["key-rotation"])]
    steps += [f"aws iam detach-role-policy --role-name {name} --policy-arn {policy['PolicyArn']}"
              for policy in attached or []]
    return "; ".join([*steps, f"aws iam delete-role --role-name {name}"])


NOTHING_TO_ROLL_BACK = "nothing to roll back: the secret has no previous key"
NO_PREVIOUS = ("no AWSPREVIOUS version", "the previous key (none)")  # the function's reasons for it


def rollback(got: dict[str, str], aws: Aws, dry_run: bool) -> Any:
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




@target("rollback", ("FUNCTION", "SECRET"), ("REGION", "OUTPUT"), "undo SECRET's last rotation: planned first, "
        "then {\"rollback\": [SECRET]}")
def run_rollback(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
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



@target("skip", ("SECRET",), ("REGION",), "hold one secret: tag SECRET key-rotation:mode=skip (every entry point "
        "obeys)")
def run_skip(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    aws("secretsmanager", "tag_resource", SecretId=got["SECRET"], Tags=[{"Key": MODE_TAG, "Value": "skip"}])
    print(f"{got['SECRET']}: {MODE_TAG}=skip (every entry point leaves it alone; make unskip SECRET=... resumes)")


@target("unskip", ("SECRET",), ("REGION",), "release SECRET: remove its key-rotation:mode=skip tag")
def run_unskip(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    tags = aws("secretsmanager", "describe_secret", SecretId=got["SECRET"]).get("Tags") or []
    mode = next((tag.get("Value") for tag in tags if tag.get("Key") == MODE_TAG), None)
    if not mode:
        print(f"{got['SECRET']} has no {MODE_TAG} tag: nothing to do")
        return
    if mode != "skip":
        raise Stopped(f"{got['SECRET']} has {MODE_TAG}={mode}, not skip: left as it is (remove it with aws "
                      f"secretsmanager untag-resource --secret-id {got['SECRET']} --tag-keys {MODE_TAG})", 1)
    aws("secretsmanager", "untag_resource", SecretId=got["SECRET"], TagKeys=[MODE_TAG])
    print(f"{got['SECRET']}: {MODE_TAG} removed; the next run rotates it when due")


def last_run(events: list[dict]) -> tuple[int, dict] | None:
    """The last run_complete line's time (ms) and fields, from log events (Lambda's prefix
    "[INFO]\\tTIME\\tREQUEST\\t" removed)."""
    for event in sorted(events, key=lambda event: event.get("timestamp", 0), reverse=True):
        try:
            line = json.loads(str(event.get("message")).strip().split("\t")[-1])
        except ValueError:
            continue
        if isinstance(line, dict) and line.get("action") == "run_complete":
            return event.get("timestamp", 0), line
    return None


@target("status", ("FUNCTION",), ("REGION", "SINCE"), "its version, the last run's summary (SINCE minutes back, "
        "default a week), the alarms", SINCE="10080")
def run_status(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    """The function (its release, its stack), its last run's summary (the run_complete line within SINCE
    minutes) and the alarms named FUNCTION-... No such function: one line, non-zero."""
    function = got["FUNCTION"]
    info = function_info(got, aws)
    version = info["version"] or f"unknown (no {VERSION_TAG} tag: deployed before 1.0.0)"
    made = f", made by the stack {info['stack']}" if info["stack"] else ""
    print(f"function {function}: version {version}{made}, last changed {info['modified'] or 'at an unknown time'}")
    start = (int(time.time()) - int(got["SINCE"]) * 60) * 1000
    found = aws.pages("logs", "filter_log_events", "events", False, logGroupName=f"/aws/lambda/{function}",
                      startTime=start, filterPattern='"run_complete"')
    last = last_run(found or [])
    if last is None:
        print(f"last run: no run_complete line in /aws/lambda/{function} in the last {got['SINCE']} minutes "
              f"(SINCE=... looks further back; make logs FUNCTION={function} shows what there is)")
    else:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last[0] / 1000))
        counts = ", ".join(f"{last[1][name]} {name}" for name in COUNTS if last[1].get(name))
        ran = f", version {last[1]['version']}" if isinstance(last[1].get("version"), str) else ""
        print(f"last run {when}{' (dry run)' if last[1].get('dry_run') else ''}: {counts or 'nothing to do'}{ran}")
        if last[1].get("failed") or last[1].get("not_attempted"):
            print(f"  each failure's reason: make logs FUNCTION={function} (its \"failed\" lines)")
    alarms = aws.pages("cloudwatch", "describe_alarms", "MetricAlarms", AlarmNamePrefix=f"{function}-")
    if not alarms:
        print(f"alarms: none named {function}-... (make alarms FUNCTION={function} adds them; a stack names its own)")
    for alarm in alarms:
        print(f"alarm {alarm['AlarmName']}: {alarm['StateValue']}")


# --- the organisation's targets: one function per account, by a service-managed stack set ------------------------


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
def upload_code(regional: Aws, bucket: str, key: str, owner: str) -> str:
    """The version's zip into the bucket, unless it is there already (the same code: nothing to do). Other code
    under the version's key is refused: it would deploy under a version that names different code, and a stack set
    update with an unchanged key would leave every function's code as it was."""
    digest = code_digest()
    there = regional("s3", "head_object", False, Bucket=bucket, Key=key, ExpectedBucketOwner=owner)
    if there is not None:
        if (there.get("Metadata") or {}).get("code-sha256") != digest:
            raise Refused(f"refused: s3://{bucket}/{key} holds other code than dist/lambda.zip (a version names one "
                          f"code): give the new code a new version (VERSION, __version__, CHANGELOG.md)")
        return "already there"
    regional("s3", "put_object", Bucket=bucket, Key=key, Body=CODE_ZIP.read_bytes(), Metadata={"code-sha256": digest},
             ExpectedBucketOwner=owner)
    return "uploaded"


def bucket_policy(bucket: str, organisation: str) -> dict:
    """What each region's bucket needs: every principal of the organisation (each account's CloudFormation,
    deploying the function) may read the code, no one else."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "OrganisationReadsKeyRotationCode", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/iam-key-rotation/*",
        "Condition": {"StringEquals": {"aws:PrincipalOrgID": organisation}}}]}


def caller_account(aws: Aws) -> str:
    """The account these credentials are in (STS's GetCallerIdentity), checked: 12 digits."""
    account = str(aws("sts", "get_caller_identity").get("Account"))
    if not re.fullmatch(ACCOUNT_RE, account, re.ASCII):
        raise Refused(f"refused, nothing changed: sts get-caller-identity answered {shown(account)}, not an account id")
    return account


@target("org-package", ("REGIONS", "ARTIFACT_PREFIX"), ("ORG_ID",), "dist/lambda.zip as iam-key-rotation/VERSION.zip "
        "to each region's bucket; prints its policy")
def run_org_package(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    """dist/lambda.zip to PREFIX-REGION for each region (the bucket made if missing); each bucket's policy printed
    and written to dist/, to apply (aws s3api put-bucket-policy), never applied here. Bucket names are global:
    every call names this account as the bucket's expected owner, so a bucket of the same name someone else made
    first is never written to (its head fails, its create fails: the target stops there)."""
    key = code_key()
    organisation = got.get("ORG_ID") or aws("organizations", "describe_organization")["Organization"]["Id"]
    checked("ORG_ID", organisation)
    owner = caller_account(aws)
    for region in listed(got["REGIONS"]):
        regional, bucket = aws.in_region(region), f"{got['ARTIFACT_PREFIX']}-{region}"
        if regional("s3", "head_bucket", False, Bucket=bucket, ExpectedBucketOwner=owner) is None:
            place = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            regional("s3", "create_bucket", Bucket=bucket, **place)
        done = upload_code(regional, bucket, key, owner)
        policy = Path("dist") / f"bucket-policy-{bucket}.json"
        policy.write_text(json.dumps(bucket_policy(bucket, organisation), indent=2) + "\n")
        print(f"s3://{bucket}/{key} ({done})\n{policy.read_text()}  apply it: aws s3api put-bucket-policy "
              f"--bucket {bucket} --policy file://{policy} --region {region} --expected-bucket-owner {owner}")


def check_code(got: dict[str, str], aws: Aws, deployed: Collection[str] = ()) -> None:
    """Before the stack set changes: each region's bucket is this account's and holds this code (make org-package
    put it there), so no account is ever pointed at code someone else may write. The regions are REGIONS and
    those the stack set has instances in (``deployed``): its parameters name PREFIX-REGION for every region, and
    bucket names are global, so a region left unchecked could read a bucket someone else owns. Refused, naming
    every region without the code, before anything changes."""
    key, owner = code_key(), caller_account(aws)
    given = listed(got["REGIONS"])
    missing = [region for region in [*given, *sorted(set(deployed) - set(given))]
               if aws.in_region(region)("s3", "head_object", False, Bucket=f"{got['ARTIFACT_PREFIX']}-{region}",
                                        Key=key, ExpectedBucketOwner=owner) is None]
    if not missing:
        return
    outside = [region for region in missing if region not in given]
    said = f" (stack set {got['STACK_SET']} has instances in {' '.join(outside)}, not in REGIONS: its parameters " \
           f"reach them too)" if outside else ""
    raise Refused(f"refused, nothing changed: {key} is not in a bucket of this account in {' '.join(missing)}{said}: "
                  f"make org-package REGIONS='{' '.join(missing)}' ARTIFACT_PREFIX={got['ARTIFACT_PREFIX']} puts "
                  f"it there")


def stack_set(got: dict[str, str]) -> dict[str, str]:
    return {"StackSetName": got["STACK_SET"], "CallAs": got["CALL_AS"]}


def parameters(got: dict[str, str], given: list[tuple[str, str]], previous: list[str], new: bool = True) -> list:
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
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()] + kept


def preferences(got: dict[str, str], first: bool) -> dict:
    """The roll-out's pace: one account first, stopping at its failure; then a percentage at a time."""
    if first:
        return {"RegionConcurrencyType": "SEQUENTIAL", "FailureToleranceCount": 0, "MaxConcurrentCount": 1}
    return {"RegionConcurrencyType": "PARALLEL", "FailureTolerancePercentage": int(got["FAILURE_PERCENT"]),
            "MaxConcurrentPercentage": int(got["MAX_PERCENT"])}


def targets(got: dict[str, str], account: str | None = None) -> dict:
    """The OUs, or one account of them (INTERSECTION: only if it is in one of the OUs)."""
    chosen: dict[str, Any] = {"OrganizationalUnitIds": listed(got["OUS"])}
    if account:
        chosen |= {"Accounts": [account], "AccountFilterType": "INTERSECTION"}
    return chosen


def wait_for(got: dict[str, str], operation: str, stage: str, aws: Aws) -> None:
    """Until the operation ends; a failed or stopped one ends the roll-out there."""
    while True:
        status = aws("cloudformation", "describe_stack_set_operation", **stack_set(got),
                     OperationId=operation)["StackSetOperation"]["Status"]
        if status not in ("RUNNING", "QUEUED", "STOPPING"):
            break
        time.sleep(POLL_SECONDS)
    print(f"{stage}: {status}")
    if status != "SUCCEEDED":
        raise Stopped(f"{stage} ended {status}: the roll-out stops here (make org-status shows each account)", 1)


def canary(got: dict[str, str], aws: Aws) -> str | None:
    """The account deployed first: CANARY, or the first account of the first OU."""
    if got.get("CANARY"):
        return got["CANARY"]
    found = aws("organizations", "list_accounts_for_parent", False, ParentId=listed(got["OUS"])[0]) or {}
    first = str(((found.get("Accounts") or [{}])[0]).get("Id"))
    return first if re.fullmatch(ACCOUNT_RE, first, re.ASCII) else None


def staged(got: dict[str, str], action: str, aws: Aws, **arguments: Any) -> None:
    """`action` (create_stack_instances or update_stack_set) in two stages: the canary account in every region,
    then every account of the OUs."""
    first = canary(got, aws)
    stages = ([(f"stage 1, account {first}", targets(got, first), True)] if first else []) + \
        [(f"stage {2 if first else 1}, every account of {got['OUS']}", targets(got), False)]
    for stage, chosen, one in stages:
        operation = aws("cloudformation", action, **stack_set(got), DeploymentTargets=chosen,
                        Regions=listed(got["REGIONS"]), OperationPreferences=preferences(got, one),
                        **arguments)["OperationId"]
        wait_for(got, operation, stage, aws)


def stack_set_parameters(got: dict[str, str], aws: Aws) -> list[str] | None:
    """The stack set's parameter names, or None when there is no such stack set."""
    found = aws("cloudformation", "describe_stack_set", False, **stack_set(got))
    if found is None:
        return None
    return [p["ParameterKey"] for p in (found.get("StackSet") or {}).get("Parameters") or [] if "ParameterKey" in p]


def apply_overrides(got: dict[str, str], verb: str, aws: Aws, instances: Collection[tuple[str, str]] = ()) -> None:
    """OVERRIDES: each account's own parameters (a dry run in production first, an exemption), one at a time:
    update_stack_instances in the regions of REGIONS where the account has an instance (``instances``: its
    (account, region) pairs), create_stack_instances in the others (made with them, before the OUs' stages would
    make them without)."""
    existing = verb == "update_stack_instances"
    for account, assignments in overrides(got.get("OVERRIDES", "")).items():
        regions = [region for region in listed(got["REGIONS"]) if ((account, region) in instances) == existing]
        if not regions:
            continue
        operation = aws("cloudformation", verb, **stack_set(got), DeploymentTargets=targets(got, account),
                        Regions=regions, OperationPreferences=preferences(got, True),
                        ParameterOverrides=[{"ParameterKey": k, "ParameterValue": v} for k, v in assignments])
        wait_for(got, operation["OperationId"], f"overrides for {account}", aws)


def stack_instances(got: dict[str, str], aws: Aws) -> set[tuple[str, str]] | None:
    """Each (account, region) the stack set has an instance in, or None when these credentials cannot list them
    (they are not the management account's, or a delegated administrator's with CALL_AS=DELEGATED_ADMIN)."""
    found = aws.pages("cloudformation", "list_stack_instances", "Summaries", False, **stack_set(got))
    if found is None:
        return None
    pairs = [(summary.get("Account"), summary.get("Region")) for summary in found]
    good = {pair for pair in pairs if all(isinstance(value, str) and re.fullmatch(shape, value, re.ASCII)
                                          for shape, value in zip(PLACE_SHAPES[:2], pair, strict=True))}
    # a row not of the documented shape is not read as "no instance there": a region left out would go unchecked
    return good if len(good) == len(set(pairs)) else None


def update_existing(got: dict[str, str], given: list[tuple[str, str]], previous: list[str], aws: Aws) -> None:
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
    apply_overrides(got, "update_stack_instances", aws, instances)
    staged(got, "update_stack_set", aws, TemplateBody=(ROOT / "template.yaml").read_text(),
           Parameters=parameters(got, given, previous, new=False), Capabilities=["CAPABILITY_IAM"])
    apply_overrides(got, "create_stack_instances", aws, instances)


ORG_VALUES = ("STACK_SET", "CALL_AS", "CANARY", "FAILURE_PERCENT", "MAX_PERCENT", "OVERRIDES")


@target("org-deploy", ("OUS", "REGIONS", "ARTIFACT_PREFIX"), ORG_VALUES, "the stack set to every account of OUS in "
        "REGIONS: one account first, then MAX_PERCENT at a time", "template")
def run_org_deploy(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    """The stack set, created (service-managed, automatic deployment) or updated; the overridden accounts first,
    with their overrides; then its instances in every account of OUS and every region, staged."""
    previous = stack_set_parameters(got, aws)
    if previous is None and not dict(given).get("SecretNames"):
        raise Refused("make org-deploy creates the stack set: give SecretNames='iam-keys/*' (the function's sec)")
    if previous is None:
        check_code(got, aws)
        aws("cloudformation", "create_stack_set", **stack_set(got), TemplateBody=(ROOT / "template.yaml").read_text(),
            Parameters=parameters(got, given, [], new=True), Capabilities=["CAPABILITY_IAM"],
            PermissionModel="SERVICE_MANAGED", AutoDeployment={"Enabled": True, "RetainStacksOnAccountRemoval": False})
        print(f"stack set {got['STACK_SET']} (service-managed; an account joining {got['OUS']} gets the function, "
              f"one leaving loses it)")
        apply_overrides(got, "create_stack_instances", aws)
    else:
        update_existing(got, given, previous, aws)
    staged(got, "create_stack_instances", aws)


@target("org-update", ("OUS", "REGIONS", "ARTIFACT_PREFIX"), ORG_VALUES, "new code or parameters to every account, "
        "staged as org-deploy", "template")
def run_org_update(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    """New code or parameters to every instance, staged; accounts that joined the OUs since are covered too."""
    previous = stack_set_parameters(got, aws)
    if previous is None:
        raise Stopped(f"no stack set {got['STACK_SET']} ({got['CALL_AS']}): make org-deploy creates it", 1)
    update_existing(got, given, previous, aws)
    staged(got, "create_stack_instances", aws)


@target("org-status", (), ("STACK_SET", "CALL_AS"), "each account and region with its stack instance's status, and "
        "the code deployed")
def run_org_status(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    """Each account and region with its stack instance's status and the function's version: the stack set's
    code where the instance is CURRENT (it runs what the stack set holds), not yet that code elsewhere. The
    version is the zip's name, iam-key-rotation/X.Y.Z.zip (make org-package's), which each function reports itself
    (make org-report's version column)."""
    found = aws.pages("cloudformation", "list_stack_instances", "Summaries", **stack_set(got))
    described = aws("cloudformation", "describe_stack_set", **stack_set(got)).get("StackSet") or {}
    code = next((p.get("ParameterValue") or "" for p in described.get("Parameters") or []
                 if p.get("ParameterKey") == "CodeKey"), "")
    version = code.rpartition("/")[2].removesuffix(".zip")
    rows = [(s.get("Account") or "", s.get("Region") or "", s.get("Status") or "",
             (s.get("StackInstanceStatus") or {}).get("DetailedStatus") or "", s.get("StatusReason") or "")
            for s in found]
    print(render_table([("account", "region", "status", "detail", "function version", "reason"),
                        *[(*row[:4], version if row[2] == "CURRENT" else f"not yet {version}", row[4])
                          for row in rows]]))
    print(f"code: {code} (make org-update after make org-package deploys new code)")


@target("org-remove", ("OUS", "REGIONS"), ("STACK_SET", "CALL_AS", "FAILURE_PERCENT", "MAX_PERCENT"), "remove the "
        "function from every account of OUS in REGIONS (and the stack set once empty)")
def run_org_remove(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
    """The stack instances of OUS in REGIONS (their stacks deleted), then the stack set once it has none."""
    operation = aws("cloudformation", "delete_stack_instances", **stack_set(got), DeploymentTargets=targets(got),
                    Regions=listed(got["REGIONS"]), RetainStacks=False, OperationPreferences=preferences(got, False))
    wait_for(got, operation["OperationId"], f"removing {got['OUS']} in {got['REGIONS']}", aws)
    if aws.pages("cloudformation", "list_stack_instances", "Summaries", **stack_set(got)):
        print(f"stack set {got['STACK_SET']} kept: it still has instances (make org-status)")
        return
    aws("cloudformation", "delete_stack_set", **stack_set(got))
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


def query_results(got: dict[str, str], aws: Aws) -> list[list[dict]]:
    """REPORT_QUERY over the last DAYS of LOG_GROUP, waited for."""
    end = int(time.time()) + 60  # a minute ahead: an event of this very second is in
    query = aws("logs", "start_query", logGroupName=got["LOG_GROUP"], startTime=end - int(got["DAYS"]) * 86400,
                endTime=end, queryString=REPORT_QUERY)["queryId"]
    while True:
        answer = aws("logs", "get_query_results", queryId=query)
        if answer.get("status") not in ("Scheduled", "Running"):
            break
        time.sleep(POLL_SECONDS)
    if answer.get("status") != "Complete":
        raise Stopped(f"the query on {got['LOG_GROUP']} ended {answer.get('status')}", 1)
    return answer.get("results", [])


@target("org-report", (), ("REGION", "LOG_GROUP", "DAYS", "CENTRAL_PROFILE", "STACK_SET", "CALL_AS"), "one table of "
        "every account's secrets, key age, next rotation, overdue (central log group)")
def run_org_report(got: dict[str, str], given: list[tuple[str, str]], aws: Aws) -> None:
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




# --- the command line: one subcommand per target, its options the values it takes -------------------------------

def value_type(target: Target, name: str) -> Callable[[str], str]:
    """argparse's type for one value of a target: checked by its declaration, refused when needed and missing."""
    def judge(value: str) -> str:
        if not value and name in target.needs:
            raise Refused(VALUES[name].missing)
        return checked(name, value) if value else ""
    return judge


def parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The tool's parser: a subcommand per target, each value an option whose default is make's (the
    environment's), so a value make hands over is checked exactly as one typed after the subcommand."""
    tool = argparse.ArgumentParser(prog="deploy_config.py", description=__doc__.split("\n")[0], exit_on_error=False,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    tool.add_argument("--check", action="store_true", help="the checks alone: nothing is called")
    tool.add_argument("--targets", action="store_true", help="each target and what it does (make help)")
    commands = tool.add_subparsers(dest="target", metavar="TARGET")
    for name, target in TARGETS.items():
        command = commands.add_parser(name, help=target.help, description=target.help, exit_on_error=False)
        for value in dict.fromkeys((*target.needs, *target.takes, "REGION")):  # REGION: checked wherever given
            default = environ.get(value) or target.defaults.get(value) or VALUES[value].default
            command.add_argument(f"--{value}", default=default, type=value_type(target, value),
                                 help=VALUES[value].meaning)
    return tool


def check(name: str, environ: Mapping[str, str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Everything the target is given, checked, before anything is called: its values and, for the targets
    that take them, the function's settings (or the template's parameters) by name."""
    if name not in TARGETS:
        raise Refused(f"no such target: {shown(name)}")
    options = vars(parser(environ).parse_args([name]))
    target = TARGETS[name]
    got = {value: options[value] for value in (*target.needs, *target.takes, "REGION") if options.get(value)}
    given = given_settings(environ) if target.settings == "function" else []
    if target.settings == "template":
        given = stack_parameters(environ)
        overrides(got.get("OVERRIDES", ""))
    if name == "create":
        if not dict(given).get("sec"):
            raise Refused(SEC_MISSING)
        merge_environment({}, given, production_defaults())
    elif name == "configure":
        if not given:
            raise Refused("name a setting: make configure FUNCTION=f GRACE_HOURS=24")
        check_each_setting(given)
    elif name == "policy":
        merge_environment({}, given)
        check_policy_values(got.get("ACCOUNT_ID", ""), got.get("REGION", ""), got["FUNCTION"],
                            **policy_options(got, given))
    return got, given


def main(argv: list[str], environ: Mapping[str, str] = os.environ, wire: Callable[[Any], None] | None = None) -> int:
    """Runs the target argv names (--check: its checks alone) with the values make handed over in ``environ``;
    ``wire`` is given each boto3 session made. The exit code: 0, 1 (a call failed) or 2 (refused)."""
    try:
        options = parser(environ).parse_args(argv)
        if options.targets:
            print("\n".join(f"  {name}\t{target.help}" for name, target in TARGETS.items()))
            return 0
        if not options.target:
            parser(environ).print_help(sys.stderr)
            return 2
        got, given = check(options.target, {**environ, **{k: v for k, v in vars(options).items()
                                                         if k in VALUES and v}})
        if not options.check:
            TARGETS[options.target].run(got, given, Aws(environ, got.get("REGION", ""), got, wire))
        return 0
    except argparse.ArgumentError as err:
        print(err, file=sys.stderr)
        return 2
    except Refused as refused:
        print(refused.message, file=sys.stderr)
        return refused.code if isinstance(refused.code, int) and refused.code else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
