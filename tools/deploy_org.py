"""make org-*: the function in every account of an organisation, by a service-managed stack set of template.yaml;
and make org-report, one table of every account's secrets from the central log group (central.yaml's stack).

The file, in order:
  the code      dist/lambda.zip, named by its release, in a bucket of this account in each region
  the targets   org-package, org-deploy, org-update, org-status, org-remove (each declared once, by @target)
  org-report    the central log group's events, read into one table (each cell of the function's own shape)
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
import time
import zipfile
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploy_values import (
    ACCOUNT_RE,
    ROOT,
    VERSION_RE,
    Refused,
    Stopped,
    checked,
    listed,
    overrides,
    release_version,
    render_table,
    shown,
    source_version,
    target,
)

if TYPE_CHECKING:
    from deploy_config import Aws

CODE_ZIP = ROOT / "dist" / "lambda.zip"
POLL_SECONDS = 10  # between two looks at a stack, a stack set operation or a Logs Insights query


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


# An account, a region and a time as AWS writes them (a stack instance's, an event's envelope): nothing else is read.
PLACE_SHAPES = (r"\d{12}", r"[a-z]{2}(-[a-z]+)+-\d{1,2}", r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z?")


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
               "key_age_days": r"-|\d{1,6}(\.\d{1,3})?", "next_rotation": r"-|\d{4}-\d{2}-\d{2}",
               "code": rf"{VERSION_RE}|[0-9a-f]{{16}}|unknown"}


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
    cells = {name: "-" if secret.get(name) is None else str(secret.get(name))  # no key yet: no age
             for name in CELL_SHAPES if name != "code"} | {"code": code}
    if not all(re.fullmatch(CELL_SHAPES[name], value, re.ASCII) for name, value in cells.items()):
        return None
    return cells


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

