"""The Makefile's deploy targets, in Python: every value is data, checked before any call.

    make TARGET VAR=value ...   # runs: PYTHON tools/deploy_config.py TARGET (.venv's python, else .venv-cli's)
    python tools/deploy_config.py --check TARGET   # the checks alone (make runs them before the target)
    python tools/deploy_config.py --targets        # each target and what it does (make help lists them)

Make hands the user's values over in the environment, never as shell text (it keeps each value as typed and
exports it, with GIVEN_SETTINGS naming the function's settings). Each target is an argparse subcommand whose
options are the values it takes: each option's default is the environment's value and its type the value's one
declaration (tools/deploy_values.py), so a value that is not what it names, or that starts with ``-``, is refused
with exit 2 before anything is called. AWS is called with boto3's clients as the CLI would call it (AWS_PROFILE,
the region, AWS_ENDPOINT_URL; make's AWS='aws --profile p' too): no value is spliced into a command or a query.

The file, in order (make policy's policy is built by tools/deploy_policy.py, the organisation's targets are
tools/deploy_org.py's):
  AWS           Aws: boto3 clients; a failure said in one line, naming what does not exist
  targets       each single-account target, declared once by @target beside what it runs
  main          the argparse parser built from TARGETS and VALUES; check(); main()
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import deploy_org  # noqa: F401 (declares the organisation's targets)
from deploy_org import CODE_ZIP, POLL_SECONDS
from deploy_policy import check_policy_values, policy_options, render_policy
from deploy_values import (
    ROOT,
    STACK_TAG,
    TARGETS,
    VALUES,
    VERSION_TAG,
    Failed,
    Refused,
    Stopped,
    Target,
    check_each_setting,
    checked,
    function_module,
    given_settings,
    merge_environment,
    overrides,
    production_defaults,
    release_version,
    render_table,
    shown,
    stack_parameters,
    target,
)

SEC_MISSING = "make create needs SEC='iam-keys/a;iam-keys/b' (or SEC='iam-keys/*')"


def __getattr__(name: str) -> Any:
    """SETTINGS: the function's settings' names, loaded when first asked for."""
    if name == "SETTINGS":
        return tuple(function_module().SETTINGS_TABLE)
    raise AttributeError(name)


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
    calls go: --profile, --region, --endpoint-url. Anything else (a wrapper such as aws-vault, another option)
    is refused, never dropped: the calls would go elsewhere than the user meant, as whoever the environment is."""
    where = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for option in ("--profile", "--region", "--endpoint-url"):
        where.add_argument(option, default="")
    words = shlex.split(aws)
    options, rest = where.parse_known_args(words[1:])
    if not words or Path(words[0]).name != "aws" or rest:
        raise Refused(f"AWS={shown(aws)}: the deploy targets call AWS themselves and read only the AWS CLI's "
                      "--profile, --region and --endpoint-url from AWS (e.g. AWS='aws --profile dev'); give "
                      "credentials by a profile or the environment (aws-vault exec prod -- make ...)")
    return options


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
        return self.attempt(service, check, lambda client: getattr(client, operation)(**parameters))

    def pages(self, service: str, operation: str, key: str, check: bool = True, **parameters: Any) -> list | None:
        """Every page's ``key`` items in one list, as the CLI joins them (botocore's paginator)."""
        return self.attempt(service, check, lambda client: client.get_paginator(operation).paginate(
            **parameters).build_full_result().get(key, []))

    def attempt(self, service: str, check: bool, call: Callable[[Any], Any]) -> Any:
        """``call`` on the service's client (made once); AWS's refusal or botocore's own failure, in one line."""
        import botocore.config
        import botocore.exceptions

        name, _, purpose = service.partition("/")
        try:
            if service not in self.clients:
                # "lambda/invoke": Invoke waits for the whole run (the function's 900 s at most) and is sent once:
                # botocore's retry of a timed-out Invoke would run a force, rollback or leak event again
                config = botocore.config.Config(read_timeout=960, retries={"total_max_attempts": 1}) \
                    if purpose == "invoke" else None
                self.clients[service] = self.session.client(name, endpoint_url=self.endpoint, config=config)
            return call(self.clients[service])
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            if not check:
                return None
            if isinstance(err, botocore.exceptions.ClientError):
                raise self.failure(name, err) from None
            raise Failed(" ".join(str(err).split()), type(err).__name__) from None

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


# --- the single-account targets, each declared once by @target beside what it runs --------------------------------

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
    done = aws("lambda/invoke", "invoke", FunctionName=function, Payload=Path(event).read_bytes())
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


# --- the command line: one subcommand per target, its options the values it takes -------------------------------

def value_type(declared: Target, name: str) -> Callable[[str], str]:
    """argparse's type for one value of a target: checked by its declaration, refused when needed and missing."""
    def judge(value: str) -> str:
        if not value and name in declared.needs:
            raise Refused(VALUES[name].missing)
        return checked(name, value) if value else ""
    return judge


def parser(environ: Mapping[str, str], only: str = "") -> argparse.ArgumentParser:
    """The tool's parser: a subcommand per target, each value an option whose default is make's (the
    environment's), so a value make hands over is checked exactly as one typed after the subcommand."""
    tool = argparse.ArgumentParser(prog="deploy_config.py", description=__doc__.split("\n")[0], exit_on_error=False,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    tool.add_argument("--check", action="store_true", help="the checks alone: nothing is called")
    tool.add_argument("--targets", action="store_true", help="each target and what it does (make help)")
    tool.add_argument("--names", choices=("targets", "values"), help="the targets' or the values' names (make's)")
    commands = tool.add_subparsers(dest="target", metavar="TARGET")
    for name, declared in [(only, TARGETS[only])] if only else TARGETS.items():  # only: that target's checks
        command = commands.add_parser(name, help=declared.help, description=declared.help, exit_on_error=False)
        for value in dict.fromkeys((*declared.needs, *declared.takes, "REGION")):  # REGION: checked wherever given
            default = environ.get(value) or declared.defaults.get(value) or VALUES[value].default
            command.add_argument(f"--{value}", default=default, type=value_type(declared, value),
                                 help=VALUES[value].meaning)
    return tool


def check(name: str, environ: Mapping[str, str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Everything the target is given, checked, before anything is called: its values and, for the targets
    that take them, the function's settings (or the template's parameters) by name."""
    if name not in TARGETS:
        raise Refused(f"no such target: {shown(name)}")
    options = vars(parser(environ, name).parse_args([name]))
    declared = TARGETS[name]
    got = {value: options[value] for value in (*declared.needs, *declared.takes, "REGION") if options.get(value)}
    given = given_settings(environ) if declared.settings == "function" else []
    if declared.settings == "template":
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
        if options.names:
            print(" ".join(TARGETS if options.names == "targets" else VALUES))
            return 0
        if options.targets:
            ordered = sorted(TARGETS.items(), key=lambda item: item[0].startswith("org-"))  # the account's first
            print("\n".join(f"  {name}\t{declared.help}" for name, declared in ordered))
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
