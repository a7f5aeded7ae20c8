"""What each value of the deploy targets may be, and each target: declared once, checked before any call.

tools/deploy_config.py (the command line, the single-account targets) and tools/deploy_org.py (the organisation's)
declare their targets here with @target; make hands each value over in the environment, and it is checked here.

The file, in order:
  errors        Refused, Stopped, Failed: one line and an exit code, never a stack trace
  the function  lambda_function, imported on first use: its settings table and parser judge every setting
  values        VALUES (one declaration per value) and checked(); the function's settings given by name
  template      template.yaml's parameters (PyYAML, CloudFormation's short-form tags as data), OVERRIDES
  targets       Target, TARGETS and @target; the release (VERSION); render_table, what every table prints with
"""

from __future__ import annotations

import difflib
import functools
import importlib
import re
import sys
import types
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deploy_config import Aws

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
    for name, value in given:
        try:
            if value:
                function.setting({name: value}, name)
                check = function.SETTINGS_TABLE[name].check  # the row's own further check (an ARN's shape...)
                if check is not None:
                    check(value)
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


def overrides(value: str) -> dict[str, list[tuple[str, str]]]:
    """OVERRIDES=ACCOUNT:Parameter=value ...: account -> its parameters, each checked as the template's."""
    found: dict[str, list[tuple[str, str]]] = {}
    for item in value.split():
        account, _, assignment = item.partition(":")
        name, _, setting = assignment.partition("=")
        found.setdefault(account, []).append((name, checked_parameter(name, setting)))
    return found


# --- the targets: each declared once, by @target where its run is defined ----------------------------------------

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


def render_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)

