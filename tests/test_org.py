"""Every account of an organisation (issue 30): make org-* and central.yaml.

Most tests run tools/deploy_config.py's targets in-process with AWS answering at the wire (tests/aws_wire.py: each
call recorded as the tool built it, once botocore has checked it against the service's model, and answered from a
script): what is tested is the calls each target makes (values as data, the staged roll-out, the overrides) and
what it prints. The calls it builds are then given to moto's Organizations and CloudFormation StackSets, and moto
runs the template in each member account: its function, role and schedule are there. moto does not model
StackSets' operation preferences (every operation succeeds at once, none is paced), AccountFilterType (the first
stage's one account), automatic deployment to an account that joins an OU later (the test runs org-update's last
stage instead), the function running in a member account and its events reaching the central bus (not tested
here), nor CloudWatch Logs Insights (org-report's query is tested for what it asks, its table from a canned answer).
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import boto3
import deploy_config
import deploy_org
import deploy_values
import pytest
import yaml
from aws_wire import Call, Wire, error
from moto import mock_aws

import lambda_function

ROOT = Path(__file__).parent.parent
OU, OTHER_OU = "ou-ab12-cd34ef56", "ou-ab12-99999999"
PROD, CANARY, MANAGEMENT = "222222222222", "111111111111", "123456789012"
# AWS's answers when a test says nothing else: no stack set yet, the OU's first account, each operation started
# and succeeded, no instances, the management account's credentials.
ANSWERS = {"cloudformation DescribeStackSet": error("StackSetNotFoundException"),
           "organizations ListAccountsForParent": {"Accounts": [{"Id": CANARY}]},
           "cloudformation CreateStackInstances": {"OperationId": "op-1"},
           "cloudformation UpdateStackSet": {"OperationId": "op-2"},
           "cloudformation UpdateStackInstances": {"OperationId": "op-3"},
           "cloudformation DeleteStackInstances": {"OperationId": "op-4"},
           "cloudformation DescribeStackSetOperation": {"StackSetOperation": {"Status": "SUCCEEDED"}},
           "cloudformation ListStackInstances": {"Summaries": []},
           "sts GetCallerIdentity": {"Account": MANAGEMENT}}


@pytest.fixture
def org(tmp_path, monkeypatch):
    """Runs an org target with AWS answering at the wire: org(target, answers, **values) -> (exit code, calls)."""
    zipped = tmp_path / "lambda.zip"
    with zipfile.ZipFile(zipped, "w") as code:
        code.write(ROOT / "lambda_function.py", "lambda_function.py")
    monkeypatch.setattr(deploy_org, "CODE_ZIP", zipped)
    monkeypatch.setattr(deploy_org, "POLL_SECONDS", 0)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dist").mkdir()
    config = tmp_path / "config"  # the profile org-report's CENTRAL_PROFILE names
    config.write_text("[profile security]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))

    def run(target: str, script: dict | None = None, **values: str) -> tuple[int, list[Call]]:
        wire = Wire({**ANSWERS, **(script or {})})
        settings = [name for name in values if name not in deploy_config.VALUES]
        code = deploy_config.main([target], {**values, "GIVEN_SETTINGS": " ".join(settings)}, wire)
        run.calls = wire.calls
        return code, wire.calls

    return run


def named(calls: list[Call], operation: str) -> list[Call]:
    return [call for call in calls if call.operation == operation]


NO_CODE_YET = {"s3 HeadObject": error("404")}  # no object under the version's key in any bucket
DEPLOY = {"OUS": f"{OU},{OTHER_OU}", "REGIONS": "eu-west-1 us-east-1", "ARTIFACT_PREFIX": "acme-keys",
          "SecretNames": "iam-keys/*", "CentralAccountId": "999999999999",
          "EventBusName": "arn:aws:events:eu-west-1:999999999999:event-bus/key-rotation"}


@pytest.mark.unit
def test_org_deploy_creates_a_service_managed_stack_set_and_rolls_out_one_account_first(org):
    code, calls = org("org-deploy", **DEPLOY, CALL_AS="DELEGATED_ADMIN")
    assert code == 0
    (create,) = named(calls, "CreateStackSet")
    assert create.params["PermissionModel"] == "SERVICE_MANAGED"
    assert create.params["AutoDeployment"] == {"Enabled": True, "RetainStacksOnAccountRemoval": False}
    assert create.params["TemplateBody"] == (ROOT / "template.yaml").read_text()
    assert all(call.params["CallAs"] == "DELEGATED_ADMIN" for call in calls if call.service == "cloudformation")
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in create.params["Parameters"]}
    assert parameters["CodeBucket"] == "acme-keys" and parameters["CodeBucketPerRegion"] == "true"
    assert parameters["CodeKey"] == f"iam-key-rotation/{lambda_function.__version__}.zip", "named by the release"
    assert parameters["EventBusName"] == DEPLOY["EventBusName"] and parameters["SecretNames"] == "iam-keys/*"
    assert parameters["FunctionName"] == "iam-key-rotation", "one name in every account, not StackSet-...-UUID"
    first, rest = named(calls, "CreateStackInstances")
    assert first.params["DeploymentTargets"] == {"OrganizationalUnitIds": [OU, OTHER_OU], "Accounts": [CANARY],
                                                 "AccountFilterType": "INTERSECTION"}
    assert first.params["OperationPreferences"] == {"RegionConcurrencyType": "SEQUENTIAL",
                                                    "FailureToleranceCount": 0, "MaxConcurrentCount": 1}
    assert rest.params["DeploymentTargets"] == {"OrganizationalUnitIds": [OU, OTHER_OU]}
    assert rest.params["OperationPreferences"] == {"RegionConcurrencyType": "PARALLEL",
                                                   "FailureTolerancePercentage": 10, "MaxConcurrentPercentage": 25}
    assert first.params["Regions"] == ["eu-west-1", "us-east-1"]


@pytest.mark.unit
def test_a_failed_first_account_stops_the_roll_out(org, capsys):
    failed = {"cloudformation DescribeStackSetOperation": {"StackSetOperation": {"Status": "FAILED"}}}
    code, calls = org("org-deploy", failed, **DEPLOY)
    assert code == 1 and "stage 1, account 111111111111 ended FAILED: the roll-out stops here" in \
        capsys.readouterr().err
    assert len(named(calls, "CreateStackInstances")) == 1, "only the first account was tried"


@pytest.mark.unit
def test_overrides_deploy_their_accounts_first_with_their_own_parameters(org):
    code, calls = org("org-deploy", **DEPLOY, OVERRIDES=f"{PROD}:RotateAfterDays=30 {PROD}:DryRun=true",
                      CANARY=CANARY, MAX_PERCENT="50", FAILURE_PERCENT="0")
    assert code == 0
    overridden, first, rest = named(calls, "CreateStackInstances")
    assert overridden.params["DeploymentTargets"]["Accounts"] == [PROD]
    assert overridden.params["ParameterOverrides"] == [{"ParameterKey": "RotateAfterDays", "ParameterValue": "30"},
                                                       {"ParameterKey": "DryRun", "ParameterValue": "true"}]
    assert first.params["DeploymentTargets"]["Accounts"] == [CANARY]
    assert not named(calls, "ListAccountsForParent"), "CANARY given: not looked up"
    assert rest.params["OperationPreferences"]["MaxConcurrentPercentage"] == 50


def stack_set_of(*names: str) -> dict:
    """DescribeStackSet's answer: a stack set with these parameters."""
    return {"StackSet": {"Parameters": [{"ParameterKey": name, "ParameterValue": "x"} for name in names]}}


@pytest.mark.unit
def test_org_update_updates_the_stack_set_staged_keeping_parameters_not_given(org):
    exists = {"cloudformation DescribeStackSet": stack_set_of("SecretNames", "GraceHours", "CodeKey", "FunctionName")}
    code, calls = org("org-update", exists, OUS=OU, REGIONS="eu-west-1", ARTIFACT_PREFIX="acme-keys")
    assert code == 0
    first, rest = named(calls, "UpdateStackSet")
    kept = [p["ParameterKey"] for p in first.params["Parameters"] if p.get("UsePreviousValue")]
    assert kept == ["SecretNames", "GraceHours", "FunctionName"], "the code's parameters are set anew, the others " \
                                                                  "kept: a function is never renamed (replaced)"
    assert first.params["DeploymentTargets"]["Accounts"] == [CANARY]
    assert rest.params["DeploymentTargets"] == {"OrganizationalUnitIds": [OU]}
    assert named(calls, "CreateStackInstances"), "accounts that joined the OU since are covered"


@pytest.mark.unit
def test_a_new_stack_set_needs_secret_names_and_nothing_is_created_without(org):
    values = {k: v for k, v in DEPLOY.items() if k != "SecretNames"}
    code, calls = org("org-deploy", **values)
    assert code == 2 and [call.operation for call in calls] == ["DescribeStackSet"]


@pytest.mark.unit
@pytest.mark.parametrize("target, values, says", [
    ("org-deploy", {"REGIONS": "eu-west-1", "ARTIFACT_PREFIX": "acme"}, "give OUS="),
    ("org-deploy", {"OUS": OU, "ARTIFACT_PREFIX": "acme"}, "give REGIONS="),
    ("org-update", {"OUS": OU, "REGIONS": "eu-west-1"}, "give ARTIFACT_PREFIX="),
    ("org-remove", {"OUS": OU}, "give REGIONS="),
    ("org-package", {"ARTIFACT_PREFIX": "acme"}, "give REGIONS="),
    ("org-deploy", {**DEPLOY, "OUS": "ou-1; touch x"}, "OUS must be organisational unit ids"),
    ("org-deploy", {**DEPLOY, "REGIONS": "eu-west-1 $(id)"}, "REGIONS must be regions"),
    ("org-deploy", {**DEPLOY, "CALL_AS": "ADMIN"}, "CALL_AS must be SELF"),
    ("org-deploy", {**DEPLOY, "MAX_PERCENT": "0"}, "MAX_PERCENT must be a percentage"),
    ("org-deploy", {**DEPLOY, "OVERRIDES": "22:DryRun=true"}, "OVERRIDES must be ACCOUNT_ID:Parameter=value"),
    ("org-deploy", {**DEPLOY, "OVERRIDES": f"{PROD}:Mode=dry"}, "'Mode' is not a parameter given by name"),
    ("org-deploy", {**DEPLOY, "OVERRIDES": f"{PROD}:RequireUserTag=no"}, "RequireUserTag must be one of"),
    ("org-deploy", {**DEPLOY, "CodeKey": "x.zip"}, "CodeKey is set by ARTIFACT_PREFIX"),
    ("org-deploy", {**DEPLOY, "SecretName": "x"}, "did you mean SecretNames?"),
    ("org-deploy", {**DEPLOY, "CentralAccountId": "9999"}, "CentralAccountId must be what the template allows"),
    ("org-deploy", {**DEPLOY, "GraceHours": "1;id"}, "GraceHours must be what the template allows"),
    ("org-deploy", {**DEPLOY, "RotateAfterDays": "3651"}, "RotateAfterDays must be what the template allows"),
    ("org-package", {"REGIONS": "eu-west-1", "ARTIFACT_PREFIX": "Acme_Keys"}, "ARTIFACT_PREFIX must be"),
    ("org-report", {"LOG_GROUP": "/aws/events/x y"}, "LOG_GROUP must be a log group name"),
    ("org-report", {"CENTRAL_PROFILE": "security --debug"}, "CENTRAL_PROFILE must be an AWS CLI profile's name"),
    ("org-deploy", {**DEPLOY, "STACK_SET": "k" * 65}, "STACK_SET must be a stack set name"),
])
def test_org_targets_refuse_a_missing_or_bad_value_before_any_call(org, capsys, target, values, says):
    code, calls = org(target, **values)
    assert code == 2 and says in capsys.readouterr().err
    assert calls == []


def instance(account: str, region: str, status: str = "CURRENT", detail: str = "SUCCEEDED", **more: str) -> dict:
    """One of ListStackInstances' summaries."""
    return {"Account": account, "Region": region, "Status": status,
            "StackInstanceStatus": {"DetailedStatus": detail}, **more}


@pytest.mark.unit
def test_org_status_prints_each_account_and_region_with_its_instance_s_status(org, capsys):
    rows = [instance(CANARY, "eu-west-1"), instance(PROD, "us-east-1", "OUTDATED", "FAILED", StatusReason="boom")]
    code, calls = org("org-status", {"cloudformation ListStackInstances": {"Summaries": rows},
                                     "cloudformation DescribeStackSet": {"StackSet": {"Parameters": [
                                         {"ParameterKey": "CodeKey", "ParameterValue": "iam-key-rotation/0123.zip"}]}}})
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["account", "region", "status", "detail", "function", "version", "reason"]
    assert out[1].split() == [CANARY, "eu-west-1", "CURRENT", "SUCCEEDED", "0123"]
    assert out[2].split() == [PROD, "us-east-1", "OUTDATED", "FAILED", "not", "yet", "0123", "boom"]
    assert out[3].startswith("code: iam-key-rotation/0123.zip")


@pytest.mark.unit
def test_org_status_and_org_report_show_the_same_version_make_org_package_names_the_code_by(org, capsys):
    version = lambda_function.__version__
    code, _calls = org("org-status", {"cloudformation ListStackInstances": {"Summaries": [instance(CANARY,
                                                                                                   "eu-west-1")]},
                                      "cloudformation DescribeStackSet": {"StackSet": {"Parameters": [
                                          {"ParameterKey": "CodeKey", "ParameterValue": deploy_org.code_key()}]}}})
    assert code == 0 and capsys.readouterr().out.splitlines()[1].split() == [CANARY, "eu-west-1", "CURRENT",
                                                                             "SUCCEEDED", version]
    assert deploy_org.version_of({"version": version, "code": lambda_function.CODE_VERSION}) == version
    older = {"code": "0123456789abcdef"}  # a function from before 1.0.0 reports its code's hash only
    assert deploy_org.version_of(older) == "0123456789abcdef"
    assert deploy_org.version_of({"version": "1.0; rm -rf", "code": "unknown"}) == "unknown", "shapes only"


@pytest.mark.unit
def test_org_package_uploads_to_each_region_s_bucket_and_prints_the_organisation_s_policy(org, capsys):
    code, calls = org("org-package", {"s3 HeadBucket": error("404"), **NO_CODE_YET},
                      REGIONS="eu-west-1,us-east-1", ARTIFACT_PREFIX="acme-keys", ORG_ID="o-abcdefghij")
    assert code == 0
    made = {call.params["Bucket"]: call for call in named(calls, "CreateBucket")}
    assert made["acme-keys-eu-west-1"].params["CreateBucketConfiguration"] == {"LocationConstraint": "eu-west-1"}
    assert "CreateBucketConfiguration" not in made["acme-keys-us-east-1"].params
    keys = {call.params["Bucket"]: call.params["Key"] for call in named(calls, "PutObject")}
    assert set(keys) == {"acme-keys-eu-west-1", "acme-keys-us-east-1"}
    assert set(keys.values()) == {f"iam-key-rotation/{lambda_function.__version__}.zip"}
    digest = hashlib.sha256((ROOT / "lambda_function.py").read_bytes()).hexdigest()
    assert all(call.params["Metadata"] == {"code-sha256": digest} for call in named(calls, "PutObject"))
    assert {call.region for call in named(calls, "PutObject")} == {"eu-west-1", "us-east-1"}, "each in its region"
    policy = json.loads(Path("dist/bucket-policy-acme-keys-eu-west-1.json").read_text())
    (statement,) = policy["Statement"]
    assert statement["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij"}}
    assert statement["Action"] == "s3:GetObject" and statement["Resource"].endswith("/iam-key-rotation/*")
    assert "aws s3api put-bucket-policy --bucket acme-keys-eu-west-1" in capsys.readouterr().out
    assert not named(calls, "PutBucketPolicy"), "printed to apply, never applied"
    owned = named(calls, "HeadBucket") + named(calls, "HeadObject") + named(calls, "PutObject")
    assert len(owned) == 6 and all(call.params["ExpectedBucketOwner"] == MANAGEMENT for call in owned)


@pytest.mark.unit
def test_a_code_bucket_someone_else_made_first_is_never_written_and_never_deployed_from(org):
    # Bucket names are global: acme-keys-eu-west-1 may be another account's, made first (and open to its writes).
    # Its head as this account's fails, its create fails: nothing is uploaded. org-deploy checks each region's
    # code is in a bucket of this account before the stack set changes.
    taken = {"s3 HeadBucket": error("403"), "s3 CreateBucket": error("BucketAlreadyExists")}
    code, calls = org("org-package", taken, REGIONS="eu-west-1", ARTIFACT_PREFIX="acme-keys", ORG_ID="o-abcdefghij")
    assert code != 0, "AWS's own failure, in one line"
    assert named(calls, "CreateBucket") and not named(calls, "PutObject")
    code, calls = org("org-deploy", {"s3 HeadObject": error("403")}, **DEPLOY)
    assert code == 2 and named(calls, "HeadObject")[0].params["ExpectedBucketOwner"] == MANAGEMENT
    assert not [call for call in calls if call.operation in ("CreateStackSet", "UpdateStackSet",
                                                             "CreateStackInstances")], "nothing changed"


@pytest.mark.unit
def test_org_package_leaves_a_version_s_code_that_is_there_and_refuses_other_code_under_its_key(org, capsys):
    # A version names one code: rolling back to a version uploaded before uploads nothing; other code under the
    # version's key (a change without a new version) is refused, since an update with an unchanged key would leave
    # every function's code as it was.
    digest = hashlib.sha256((ROOT / "lambda_function.py").read_bytes()).hexdigest()
    same = {"s3 HeadObject": {"Metadata": {"code-sha256": digest}}}
    code, calls = org("org-package", same, REGIONS="eu-west-1", ARTIFACT_PREFIX="acme-keys", ORG_ID="o-abcdefghij")
    assert code == 0 and not named(calls, "PutObject")
    assert f"s3://acme-keys-eu-west-1/iam-key-rotation/{lambda_function.__version__}.zip (already there)" in \
        capsys.readouterr().out
    for there in ({"code-sha256": "0" * 64}, {}):
        code, calls = org("org-package", {"s3 HeadObject": {"Metadata": there}}, REGIONS="eu-west-1",
                          ARTIFACT_PREFIX="acme-keys", ORG_ID="o-abcdefghij")
        assert code == 2 and not named(calls, "PutObject")
        assert "holds other code than dist/lambda.zip (a version names one code)" in capsys.readouterr().err


@pytest.mark.unit
def test_code_whose_version_is_not_version_s_is_refused_before_any_call(org, capsys, tmp_path):
    zipped = tmp_path / "other.zip"
    source = (ROOT / "lambda_function.py").read_text().replace(f'__version__ = "{lambda_function.__version__}"',
                                                               '__version__ = "0.9.0"')
    with zipfile.ZipFile(zipped, "w") as code:
        code.writestr("lambda_function.py", source)
    deploy_org.CODE_ZIP = zipped  # the fixture's monkeypatch restores it
    code, calls = org("org-package", REGIONS="eu-west-1", ARTIFACT_PREFIX="acme-keys", ORG_ID="o-abcdefghij")
    assert code == 2 and calls == []
    assert f"dist/lambda.zip holds version 0.9.0, VERSION says {lambda_function.__version__}: make package" in \
        capsys.readouterr().err


EXISTING = {"cloudformation DescribeStackSet": stack_set_of("SecretNames", "DryRun", "FunctionName")}
CHANGES = ("CreateStackSet", "UpdateStackSet", "CreateStackInstances", "UpdateStackInstances",
           "DeleteStackInstances", "DeleteStackSet")


def deployed(*pairs: tuple[str, str]) -> dict:
    """ListStackInstances' answer: the stack set's instances, (account, region) each."""
    return {"cloudformation ListStackInstances": {"Summaries": [instance(*pair) for pair in pairs]}}


def changes(calls: list[Call]) -> list[Call]:
    return [call for call in calls if call.operation in CHANGES]


@pytest.mark.unit
@pytest.mark.parametrize("target", ["org-update", "org-deploy"])
def test_the_code_is_checked_in_every_region_the_stack_set_has_instances_in_not_only_regions(org, capsys, target):
    # The stack set's parameters name ARTIFACT_PREFIX-REGION in each of its regions and bucket names are global: a
    # region it has instances in that REGIONS leaves out (us-west-2) would read a bucket someone else may own.
    instances = deployed((CANARY, "eu-west-1"), (PROD, "eu-west-1"), (PROD, "us-west-2"))
    taken = {"s3 HeadObject acme-keys-us-west-2": error("403")}
    code, calls = org(target, {**EXISTING, **instances, **taken}, **{**DEPLOY, "REGIONS": "eu-west-1"})
    (said,) = capsys.readouterr().err.splitlines()
    assert code == 2 and changes(calls) == [], "nothing changed"
    assert {call.params["Bucket"]: call.params["ExpectedBucketOwner"] for call in named(calls, "HeadObject")} == {
        "acme-keys-eu-west-1": MANAGEMENT, "acme-keys-us-west-2": MANAGEMENT}
    assert said.startswith("refused, nothing changed: iam-key-rotation/") and " in us-west-2 (stack set " \
        "iam-key-rotation has instances in us-west-2, not in REGIONS" in said, said
    assert said.endswith("make org-package REGIONS='us-west-2' ARTIFACT_PREFIX=acme-keys puts it there"), said
    code, calls = org(target, {**EXISTING, **instances}, **{**DEPLOY, "REGIONS": "eu-west-1"})
    assert code == 0 and len(named(calls, "HeadObject")) == 2, "this account's code in both: the update goes on"
    assert all(call.params["Regions"] == ["eu-west-1"] for call in named(calls, "UpdateStackSet"))


@pytest.mark.unit
def test_org_update_refuses_when_the_stack_set_s_instances_cannot_be_read(org, capsys):
    unread = {"cloudformation ListStackInstances": error("AccessDenied")}
    code, calls = org("org-update", {**EXISTING, **unread}, **DEPLOY)
    assert code == 2 and changes(calls) == [] and not named(calls, "HeadObject")
    assert "stack set iam-key-rotation's instances could not be read" in capsys.readouterr().err


@pytest.mark.unit
def test_org_update_refuses_when_an_instance_row_is_not_of_the_documented_shape(org, capsys):
    # Found by the review: a row dropped as malformed was a region never code-checked. It is unread, as a whole.
    odd = {"cloudformation ListStackInstances": {"Summaries": [instance(CANARY, "eu-west-1"),
                                                               instance(CANARY, "mars-1"), {"Account": CANARY}]}}
    code, calls = org("org-update", {**EXISTING, **odd}, **DEPLOY)
    assert code == 2 and changes(calls) == []
    assert "instances could not be read" in capsys.readouterr().err


@pytest.mark.unit
@pytest.mark.parametrize("target", ["org-update", "org-deploy"])
def test_existing_instances_take_their_overrides_before_the_stack_set_s_parameters_change(org, target):
    # DryRun=false with OVERRIDES=PROD:DryRun=true: were the stack set updated first, production would rotate for
    # real until its override landed, and for good if the roll-out stopped before. PROD has no instance in
    # us-east-1 yet: it is made with its overrides once the stack set is updated, before the OUs' stages.
    instances = deployed((CANARY, "eu-west-1"), (CANARY, "us-east-1"), (PROD, "eu-west-1"))
    code, calls = org(target, {**EXISTING, **instances}, **DEPLOY, DryRun="false", OVERRIDES=f"{PROD}:DryRun=true",
                      CANARY=CANARY)
    assert code == 0
    order = [(call.operation, call.params["DeploymentTargets"].get("Accounts")) for call in changes(calls)]
    assert order == [("UpdateStackInstances", [PROD]), ("UpdateStackSet", [CANARY]), ("UpdateStackSet", None),
                     ("CreateStackInstances", [PROD]), ("CreateStackInstances", [CANARY]),
                     ("CreateStackInstances", None)]
    overridden, made = named(calls, "UpdateStackInstances")[0], named(calls, "CreateStackInstances")[0]
    dry = [{"ParameterKey": "DryRun", "ParameterValue": "true"}]
    assert overridden.params["Regions"] == ["eu-west-1"] and overridden.params["ParameterOverrides"] == dry
    assert made.params["Regions"] == ["us-east-1"] and made.params["ParameterOverrides"] == dry
    assert {"ParameterKey": "DryRun", "ParameterValue": "false"} in named(calls, "UpdateStackSet")[0].params[
        "Parameters"]


@pytest.mark.unit
@pytest.mark.parametrize("answer", [{"StackSet": {"Parameters": []}}, {"StackSet": {}}])
def test_an_existing_stack_set_whose_parameters_read_as_none_is_updated_never_named_anew(org, answer):
    # A new stack set's functions are named FunctionName=STACK_SET; an existing one's keep the name they have (a
    # new name replaces every account's function). Existing is said, never read from an empty list of parameters.
    code, calls = org("org-update", {"cloudformation DescribeStackSet": answer}, OUS=OU,
                      REGIONS="eu-west-1", ARTIFACT_PREFIX="acme-keys")
    assert code == 0 and not named(calls, "CreateStackSet")
    for update in named(calls, "UpdateStackSet"):
        assert "FunctionName" not in [parameter["ParameterKey"] for parameter in update.params["Parameters"]]
    got = {"STACK_SET": "keys", "ARTIFACT_PREFIX": "acme-keys"}
    assert "FunctionName" in [p["ParameterKey"] for p in deploy_org.parameters(got, [], [])]
    with pytest.raises(ValueError, match="a new stack set has no previous parameters"):
        deploy_org.parameters(got, [], ["SecretNames"], new=True)


@pytest.mark.unit
def test_org_remove_deletes_the_instances_then_the_empty_stack_set(org):
    code, calls = org("org-remove", {"cloudformation ListStackInstances": {"Summaries": []}}, OUS=OU,
                      REGIONS="eu-west-1")
    assert code == 0
    (delete,) = named(calls, "DeleteStackInstances")
    assert delete.params["RetainStacks"] is False
    assert delete.params["DeploymentTargets"] == {"OrganizationalUnitIds": [OU]}
    assert named(calls, "DeleteStackSet")


# --- org-report: the query asked, and the table from each account's latest Access Keys Checked -------------------

def checked_in_logs(account: str, region: str, when: str, rows: list[dict], run: str = "r1",
                    dry_run: bool = False, targets: tuple[str, ...] | None = None) -> list[list[dict]]:
    """Logs Insights' rows for one run (a whole run; ``targets``: a targeted one), its events made by the function
    (``checked_entries``) and delivered as EventBridge writes an event to a log group (the event's JSON, with its
    account, region, time)."""
    settings = lambda_function.Settings(event_bus="default", dry_run=dry_run, targets=targets)
    counts = lambda_function.RunCounts(oldest_key_age_days=max([(r["key_age_days"] or 0) for r in rows], default=0),
                                       overdue_keys=sum(r["overdue"] for r in rows))
    results = []
    for entry in lambda_function.checked_entries(settings, outcomes_of(rows), counts, run):
        event = {"version": "0", "id": "e", "detail-type": entry["DetailType"], "source": entry["Source"],
                 "account": account, "time": when, "region": region, "resources": [],
                 "detail": json.loads(entry["Detail"])}
        results.append([{"field": "@timestamp", "value": when.replace("T", " ")[:19] + ".000"},
                        {"field": "@message", "value": json.dumps(event)}])
    return results


def outcomes_of(rows: list[dict]) -> list[lambda_function.Outcome]:
    """The function's typed outcomes with these rows' figures (what a run's checked_entries reads)."""
    return [lambda_function.Outcome(secret=r["secret"], status=lambda_function.Status(r["status"]), user=r["user"],
                                    deadline=lambda_function.Deadline(key_age_days=r["key_age_days"],
                                                                      next_rotation=r["next_rotation"],
                                                                      overdue=r["overdue"]),
                                    owner=r.get("owner")) for r in rows]


def secret_row(secret: str, age: float, due: str, overdue: bool = False, status: str = "skipped") -> dict:
    return {"secret": secret, "user": secret.rsplit("/", 1)[-1], "status": status, "key_age_days": age,
            "next_rotation": due, "overdue": overdue}


@pytest.mark.unit
def test_org_report_prints_each_account_s_latest_whole_run_and_says_which_are_overdue_or_stale(org, capsys,
                                                                                              monkeypatch):
    answer = {"status": "Complete", "results": [
        *checked_in_logs(CANARY, "eu-west-1", "2026-01-12T06:00:00Z", [secret_row("iam-keys/ci", 11, "2026-03-22")],
                         run="new"),
        *checked_in_logs(CANARY, "eu-west-1", "2026-01-11T06:00:00Z", [secret_row("iam-keys/ci", 10, "2026-03-22"),
                                                                        secret_row("iam-keys/gone", 3, "x")]),
        *checked_in_logs(PROD, "us-east-1", "2026-01-09T06:00:00Z", [secret_row("iam-keys/app", 133, "2025-11-20",
                                                                               overdue=True)], dry_run=True),
        [{"field": "@message", "value": "not an event"}]]}
    monkeypatch.setattr(deploy_config.time, "time", lambda: 1768212000.0)  # 2026-01-12 10:00 UTC
    deployed = [instance(CANARY, "eu-west-1"), instance(PROD, "us-east-1"), instance(PROD, "eu-west-1")]
    code, calls = org("org-report", {"logs StartQuery": {"queryId": "q-1"}, "logs GetQueryResults": answer,
                                     "cloudformation ListStackInstances": {"Summaries": deployed}},
                      DAYS="7", CENTRAL_PROFILE="security")
    assert code == 0
    (start,) = named(calls, "StartQuery")
    (listed,) = named(calls, "ListStackInstances")
    assert start.profile == "security" and listed.profile != "security", "logs as the central account"
    assert listed.params["StackSetName"] == "iam-key-rotation"
    assert start.params["logGroupName"] == "/aws/events/key-rotation"
    assert start.params["queryString"] == deploy_org.REPORT_QUERY
    assert start.params["endTime"] - start.params["startTime"] == 7 * 86400
    assert f'`detail-type` = "{lambda_function.CHECKED}"' in deploy_org.REPORT_QUERY
    assert f'source = "{lambda_function.EVENT_SOURCE}"' in deploy_org.REPORT_QUERY
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["account", "region", "secret"]
    version = lambda_function.__version__  # what make org-package names the code by, and org-status shows
    assert lines[1].split() == [CANARY, "eu-west-1", "iam-keys/ci", "ci", "11", "2026-03-22", "skipped", version]
    assert lines[2].split() == [PROD, "us-east-1", "iam-keys/app", "app", "133", "2025-11-20", "OVERDUE", "(dry",
                                "run)", version]
    assert "iam-keys/gone" not in "\n".join(lines), "an older run's secret is not reported"
    assert lines[3].split() == [PROD, "eu-west-1", "-", "-", "-", "-", "MISSING", "-"], "deployed, never heard from"
    assert lines[4].startswith(f"{PROD} us-east-1: STALE, last checked 2026-01-09T06:00:00Z")
    assert lines[5] == "3 accounts and regions, 2 secrets, 1 overdue, 1 stale, 1 missing (each function's last " \
                       "whole run, and each secret a later run checked, in the last 7 days)"


@pytest.mark.unit
def test_org_report_shows_each_secret_as_the_newest_run_left_it_a_targeted_one_included():
    # Issue 40: after a real targeted rotation the table showed the account's last whole run ("planned (dry
    # run)"). A targeted, rollback or leak run sends its own secrets' state, marked partial; the table shows
    # each secret's newest state, whichever run set it, and the account's figures from its whole run.
    whole = checked_in_logs(CANARY, "eu-west-1", "2026-01-12T06:00:00Z",
                            [secret_row("iam-keys/ci", 80, "2026-01-22", status="planned"),
                             secret_row("iam-keys/app", 3, "2026-04-01")], run="daily", dry_run=True)
    older = checked_in_logs(CANARY, "eu-west-1", "2026-01-11T09:00:00Z",  # before the whole run: superseded
                            [secret_row("iam-keys/app", 2, "2026-04-01", status="rotated")], run="old",
                            targets=("iam-keys/app",))
    targeted = checked_in_logs(CANARY, "eu-west-1", "2026-01-12T09:00:00Z",
                               [secret_row("iam-keys/ci", 0, "2026-04-02", status="rotated")], run="t1",
                               targets=("iam-keys/ci",))
    only = checked_in_logs(PROD, "us-east-1", "2026-01-12T08:00:00Z",
                           [secret_row("iam-keys/web", 0, "2026-04-02", status="rotated")], run="t2",
                           targets=("iam-keys/web",))
    assert all(json.loads(r[1]["value"])["detail"]["partial"] is True for r in targeted + only)
    assert all("partial" not in json.loads(r[1]["value"])["detail"] for r in whole)
    rows, notes = deploy_org.report_rows(targeted + only + whole + older, 1768212000.0, {(PROD, "eu-west-1")})
    assert rows == [(CANARY, "eu-west-1", "iam-keys/ci", "ci", "0", "2026-04-02", "rotated",
                     lambda_function.__version__),
                    (CANARY, "eu-west-1", "iam-keys/app", "app", "3", "2026-04-01", "skipped (dry run)",
                     lambda_function.__version__),
                    (PROD, "us-east-1", "iam-keys/web", "web", "0", "2026-04-02", "rotated",
                     lambda_function.__version__),
                    (PROD, "eu-west-1", "-", "-", "-", "-", "MISSING", "-")]
    assert notes == [f"{PROD} us-east-1: STALE, no whole run in the window, only targeted, rollback or leak runs "
                     f"(is its daily schedule on?)"]


@pytest.mark.unit
def test_a_partial_run_that_checked_no_secret_sends_no_state():
    settings = lambda_function.Settings(event_bus="default", targets=("gone",))
    assert lambda_function.checked_entries(settings, [], lambda_function.RunCounts(), "r") == []


@pytest.mark.unit
def test_a_run_with_a_part_missing_is_said_so():
    rows = [secret_row(f"iam-keys/u{i:03}", 1, "2026-03-01") for i in range(lambda_function.CHECKED_ROWS + 1)]
    results = checked_in_logs(CANARY, "eu-west-1", "2026-01-12T06:00:00Z", rows)
    assert len(results) == 2, "two parts"
    table, notes = deploy_org.report_rows(results[:1], 1768212000.0)
    assert len(table) == lambda_function.CHECKED_ROWS
    assert notes == [f"{CANARY} eu-west-1: 1 parts of its last run arrived, not '2'"]


@pytest.mark.unit
def test_rows_not_as_the_function_writes_them_are_left_out_and_counted_never_printed(org, capsys, monkeypatch):
    # Any principal of the organisation may put events on the central bus: a forged row cannot add a line for
    # another account, move the terminal, or crash the report for everyone.
    forged = [secret_row("iam-keys/ok", 1, "2026-03-01"),
              secret_row("x\n111111111111  us-east-1  iam-keys/prod  u  1  2026-03-01  rotated", 1, "2026-03-01"),
              {**secret_row("iam-keys/esc", 1, "2026-03-01"), "user": "\x1b[2Kroot"},
              {**secret_row("iam-keys/age", 1, "2026-03-01"), "key_age_days": "1; 0"}, "not a row", None]
    results = checked_in_logs(PROD, "us-east-1", "2026-01-12T06:00:00Z", forged[:1])
    event = json.loads(results[0][1]["value"])
    event["detail"]["secrets"] = forged  # as a forger would put them on the bus
    results[0][1]["value"] = json.dumps(event)
    malformed = []
    for detail in ({"part": [1], "secrets": []}, {"part": 1, "secrets": "abc"}, {"part": "1", "secrets": []}):
        event = {"detail-type": lambda_function.CHECKED, "account": CANARY, "region": "eu-west-1",
                 "time": "2026-01-12T07:00:00Z", "detail": {"run": "m", "parts": 1, **detail}}
        malformed.append([{"field": "@message", "value": json.dumps(event)}])
    spoofed = event | {"account": "1111\n11111111", "time": "2026-01-12T08:00:00Z"}
    malformed.append([{"field": "@message", "value": json.dumps(spoofed)}])
    answer = {"status": "Complete", "results": results + malformed}
    monkeypatch.setattr(deploy_config.time, "time", lambda: 1768212000.0)
    code, _calls = org("org-report", {"logs StartQuery": {"queryId": "q-1"}, "logs GetQueryResults": answer})
    assert code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert [line.split()[:3] for line in lines[1:-2]] == [[PROD, "us-east-1", "iam-keys/ok"]]
    assert lines[-2] == f"{PROD} us-east-1: 5 rows not as the function writes them, left out"
    assert "\x1b" not in out and "111111111111" not in out


@pytest.mark.unit
def test_an_account_that_manages_no_secret_has_a_row_and_unreadable_instances_are_said_so(org, capsys,
                                                                                          monkeypatch):
    answer = {"status": "Complete", "results": checked_in_logs(PROD, "us-east-1", "2026-01-12T06:00:00Z", [])}
    monkeypatch.setattr(deploy_config.time, "time", lambda: 1768212000.0)
    code, _calls = org("org-report", {"logs StartQuery": {"queryId": "q-1"}, "logs GetQueryResults": answer,
                                      "cloudformation ListStackInstances": error("AccessDenied")})
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == [PROD, "us-east-1", "-", "-", "-", "-", "no", "secrets", lambda_function.__version__]
    assert lines[2].startswith("stack set iam-key-rotation's instances could not be read with these credentials")
    assert lines[3].startswith("1 accounts and regions, 0 secrets, 0 overdue, 0 stale, 0 missing")


@pytest.mark.unit
def test_keys_no_secret_holds_past_the_deadline_are_said_so_where_the_credential_report_was_read():
    # The function's own events (checked_entries): with ACCOUNT_REPORT, the count of Active keys past the deadline
    # that no secret holds; without it, or when the report failed, null (not known), never 0.
    def delivered(settings, known: bool) -> list[list[dict]]:
        (entry,) = lambda_function.checked_entries(settings, outcomes_of([secret_row("iam-keys/app", 3, "2026-03-01")]),
                                                   counts, "r", known)
        event = {"detail-type": entry["DetailType"], "source": entry["Source"], "account": PROD,
                 "region": "us-east-1", "time": "2026-01-12T06:00:00Z", "detail": json.loads(entry["Detail"])}
        return [[{"field": "@message", "value": json.dumps(event)}]]

    counts = lambda_function.RunCounts(oldest_key_age_days=3, unmanaged_overdue_keys=2)
    reading = lambda_function.Settings(event_bus="default", account_report=True)
    _rows, notes = deploy_org.report_rows(delivered(reading, True), 1768212000.0)
    assert notes == [f"{PROD} us-east-1: OVERDUE, 2 Active keys past the deadline that no secret holds (make report "
                     f"there names them)"]
    for settings, known in ((lambda_function.Settings(event_bus="default"), True), (reading, False)):
        (result,) = delivered(settings, known)
        assert json.loads(result[0]["value"])["detail"]["unmanaged_overdue_keys"] is None
        assert deploy_org.report_rows([result], 1768212000.0)[1] == []


@pytest.mark.unit
def test_a_query_filled_to_its_limit_is_said_so(org, capsys, monkeypatch):
    # Any account may put events on the central bus: enough of them push other accounts' runs out of the answer.
    flood = checked_in_logs(PROD, "us-east-1", "2026-01-12T06:00:00Z", []) * deploy_org.REPORT_LIMIT
    monkeypatch.setattr(deploy_config.time, "time", lambda: 1768212000.0)
    code, _calls = org("org-report", {"logs StartQuery": {"queryId": "q-1"}, "logs GetQueryResults": {
        "status": "Complete", "results": flood}})
    assert code == 0
    assert f"the query returned its most, {deploy_org.REPORT_LIMIT} events" in capsys.readouterr().out


@pytest.mark.unit
def test_a_retried_invocation_s_parts_are_its_newest():
    # Lambda retries an invocation that failed with the same request id: both attempts send the same run id.
    # The rows come newest first, and the retry's part is the one kept.
    first = checked_in_logs(PROD, "us-east-1", "2026-01-12T06:00:00Z",
                            [secret_row("iam-keys/app", 95, "2026-01-12", overdue=True, status="failed")], run="r")
    retry = checked_in_logs(PROD, "us-east-1", "2026-01-12T06:05:00Z",
                            [secret_row("iam-keys/app", 0, "2026-04-02", status="rotated")], run="r")
    rows, notes = deploy_org.report_rows(retry + first, 1768212000.0)
    assert [row[4:7] for row in rows] == [("0", "2026-04-02", "rotated")] and notes == []


# --- the template's parameters, read with PyYAML ------------------------------------------------------------------

class CfnLoader(yaml.SafeLoader):
    pass


CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def load(name: str) -> dict:
    return yaml.load((ROOT / name).read_text(), Loader=CfnLoader)


@pytest.mark.unit
def test_the_tool_reads_the_template_s_parameters_as_yaml_and_its_short_form_tags_as_data():
    parameters = load("template.yaml")["Parameters"]
    read = deploy_values.template_parameters()
    assert set(read) == set(parameters)
    for name, parameter in parameters.items():
        for key in ("Type", "Default", "AllowedPattern", "AllowedValues", "MinValue", "MaxValue"):
            if key in parameter:
                expected = [str(v) for v in parameter[key]] if key == "AllowedValues" else str(parameter[key])
                assert read[name][key] == expected, (name, key)
            else:
                assert key not in read[name], (name, key)
    tagged = deploy_values.cloudformation_yaml("a: !Ref B\nc: !GetAtt D.Arn\ne: !Sub [\"x-${Y}\", {Y: !Ref Z}]\n"
                                               "f: !If [C, !Ref G, !Ref AWS::NoValue]\n")
    assert tagged == {"a": {"Ref": "B"}, "c": {"Fn::GetAtt": ["D", "Arn"]},
                      "e": {"Fn::Sub": ["x-${Y}", {"Y": {"Ref": "Z"}}]},
                      "f": {"Fn::If": ["C", {"Ref": "G"}, {"Ref": "AWS::NoValue"}]}}
    whole = deploy_values.cloudformation_yaml((ROOT / "template.yaml").read_text())
    assert set(whole["Resources"]) == set(load("template.yaml")["Resources"])


# --- central.yaml ---------------------------------------------------------------------------------------------------

CENTRAL = (ROOT / "central.yaml").read_text()


@pytest.mark.unit
def test_the_central_bus_takes_events_from_the_organisation_only_and_keeps_every_one():
    template = load("central.yaml")
    resources = template["Resources"]
    statement = resources["BusPolicy"]["Properties"]["Statement"]
    assert statement["Action"] == "events:PutEvents" and "aws:PrincipalOrgID" in statement["Condition"]["StringEquals"]
    rule = resources["KeepEventsRule"]["Properties"]
    assert rule["EventPattern"] == {"source": [lambda_function.EVENT_SOURCE]}
    assert resources["LogGroup"]["Type"] == "AWS::Logs::LogGroup" and "LogRetentionDays" in template["Parameters"]
    assert '"Principal": {"Service": ["events.amazonaws.com"' in CENTRAL, "the logs resource policy EventBridge needs"
    alarms = {name for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert alarms == {"FailedAlarm", "OverdueAlarm", "ForcedWhileInUseAlarm"}


@pytest.mark.unit
def test_the_central_filters_match_the_events_the_function_sends():
    kinds = {name for name, _applies in lambda_function.DETAIL_TYPES} | {lambda_function.CHECKED}
    named_kinds = set(re.findall(r'\$\.detail-type = "([^"]+)"', CENTRAL))
    assert named_kinds and named_kinds <= kinds
    # the fields the filters read are the event's own (never a reason's wording)
    (made,) = lambda_function.event_entries(lambda_function.Settings(event_bus="keys"), [lambda_function.Outcome(
        secret="s", status=lambda_function.Status.RETIRED, forced_in_use=True,
        deadline=lambda_function.Deadline(overdue=True))])
    detail = json.loads(made["Detail"])
    for field in re.findall(r"\$\.detail\.([a-z_]+) IS TRUE", CENTRAL):
        assert detail[field] is True, field
    assert "$.detail.reason" not in CENTRAL


@pytest.mark.unit
def test_each_check_checkov_skips_in_central_yaml_is_explained_and_make_lint_runs_both():
    skips = re.findall(r"# checkov:skip=([A-Z_0-9]+)(?::(.*))?$", CENTRAL, re.M)
    assert all(reason and len(reason.split()) >= 5 for _check, reason in skips), skips
    makefile = (ROOT / "Makefile").read_text()
    assert "cfn-lint template.yaml central.yaml" in makefile and "$(CHECKOV) --file central.yaml" in makefile


# --- moto: the arguments the tool builds, against Organizations and StackSets as moto models them -------------------

def an_ou_of_two_accounts() -> tuple[Any, str, str, list[str]]:
    """moto's Organizations: the client, its root, an OU, and the OU's two accounts (dev, prod)."""
    organizations = boto3.client("organizations", region_name="us-east-1")
    organizations.create_organization(FeatureSet="ALL")
    root = organizations.list_roots()["Roots"][0]["Id"]
    ou = organizations.create_organizational_unit(ParentId=root, Name="workloads")["OrganizationalUnit"]["Id"]
    accounts = []
    for name in ("dev", "prod"):
        made = organizations.create_account(AccountName=name, Email=f"{name}@example.com")["CreateAccountStatus"]
        organizations.move_account(AccountId=made["AccountId"], SourceParentId=root, DestinationParentId=ou)
        accounts.append(made["AccountId"])
    return organizations, root, ou, accounts


@pytest.mark.unit
def test_the_stack_set_the_tool_describes_deploys_to_every_account_of_an_ou_in_moto(org, monkeypatch):
    # moto makes a stack instance per account and region of the OU and runs the template in each; it paces
    # nothing and ignores AccountFilterType (both stages here deploy the whole OU; test_org_central's stand-in
    # counts it as AWS does).
    with mock_aws():
        organizations, root, ou, accounts = an_ou_of_two_accounts()
        got = {**{k: v for k, v in DEPLOY.items() if k in deploy_config.VALUES}, "OUS": ou, "STACK_SET": "keys",
               "CALL_AS": "SELF", "FAILURE_PERCENT": "10", "MAX_PERCENT": "25"}
        for region in deploy_org.listed(got["REGIONS"]):  # make org-package's buckets
            s3 = boto3.client("s3", region_name=region)
            place = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            s3.create_bucket(Bucket=f"acme-keys-{region}", **place)
            s3.put_object(Bucket=f"acme-keys-{region}", Key=deploy_org.code_key(), Body=b"zip")
        cloudformation = boto3.client("cloudformation", region_name="us-east-1")
        cloudformation.create_stack_set(
            StackSetName="keys", TemplateBody=(ROOT / "template.yaml").read_text(),
            Parameters=deploy_org.parameters(got, [("SecretNames", "iam-keys/*")], [], new=True),
            Capabilities=["CAPABILITY_IAM"], PermissionModel="SERVICE_MANAGED", CallAs="SELF",
            AutoDeployment={"Enabled": True, "RetainStacksOnAccountRemoval": False})
        for first in (True, False):
            cloudformation.create_stack_instances(
                StackSetName="keys", Regions=deploy_org.listed(got["REGIONS"]), CallAs="SELF",
                DeploymentTargets=deploy_org.targets(got),
                OperationPreferences=deploy_org.preferences(got, first))
        instances = cloudformation.list_stack_instances(StackSetName="keys")["Summaries"]
        assert sorted((i["Account"], i["Region"]) for i in instances) == sorted(
            (a, r) for a in accounts for r in ("eu-west-1", "us-east-1"))
        for account in accounts:  # each member account has its own function, role and rules (moto ran the stack)
            monkeypatch.setenv("MOTO_ACCOUNT_ID", account)
            for region in ("eu-west-1", "us-east-1"):
                (function,) = boto3.client("lambda", region_name=region).list_functions()["Functions"]
                role = f"arn:aws:iam::{account}:role/key-rotation-function/keys-FunctionRole-"
                assert function["Role"].startswith(role)
                assert function["Environment"]["Variables"]["sec"] == "iam-keys/*"
                rules = boto3.client("events", region_name=region).list_rules()["Rules"]
                assert any(r.get("ScheduleExpression") == "cron(0 6 * * ? *)" for r in rules)
        monkeypatch.delenv("MOTO_ACCOUNT_ID")
        # An account joining the OU later: AWS's automatic deployment covers it; moto does not model that, and
        # org-update's last stage (create-stack-instances on the OUs) covers it.
        joined = organizations.create_account(AccountName="new", Email="new@example.com")["CreateAccountStatus"]
        organizations.move_account(AccountId=joined["AccountId"], SourceParentId=root, DestinationParentId=ou)
        cloudformation.create_stack_instances(
            StackSetName="keys", Regions=["eu-west-1"], CallAs="SELF",
            DeploymentTargets=deploy_org.targets(got),
            OperationPreferences=deploy_org.preferences(got, False))
        instances = cloudformation.list_stack_instances(StackSetName="keys")["Summaries"]
        assert (joined["AccountId"], "eu-west-1") in {(i["Account"], i["Region"]) for i in instances}


@pytest.mark.unit
def test_org_report_says_each_account_s_keys_a_role_could_replace_from_its_latest_roles_report():
    # Issue 41: the roles report's verdicts reach org-report too (each account's latest Access Keys Replaceable,
    # as the function makes it); a forged count is left out, never printed.
    def replaceable(account: str, when: str, verdicts: dict) -> list[dict]:
        roles = lambda_function.RolesReport(regions_read=["eu-west-1"], lookback_days=30, verdicts=verdicts)
        (entry,) = lambda_function.replaceable_entries(lambda_function.Settings(event_bus="default"), roles, "r")
        event = {"detail-type": entry["DetailType"], "account": account, "region": "eu-west-1", "time": when,
                 "detail": json.loads(entry["Detail"])}
        return [{"field": "@message", "value": json.dumps(event)}]

    counts = {lambda_function.RUNS_IN_AWS: {"keys": 3}, lambda_function.CI_ROLE: {"keys": 2},
              lambda_function.KEEP: {"keys": 1}}
    results = [replaceable(CANARY, "2026-01-12T06:00:00Z", counts),
               replaceable(CANARY, "2026-01-05T06:00:00Z", {lambda_function.KEEP: {"keys": 9}}),
               replaceable(PROD, "2026-01-11T06:00:00Z", {lambda_function.KEEP: {"keys": "9; rm"}})]
    assert deploy_org.replaceable_lines(results) == [
        f"{CANARY} eu-west-1: keys a role could replace (2026-01-12, heuristic): runs in AWS 3, CI role 2, keep 1, "
        f"unseen 0",
        f"{PROD} eu-west-1: keys a role could replace (2026-01-11, heuristic): runs in AWS 0, CI role 0, unseen 0"]
    assert f'`detail-type` = "{lambda_function.REPLACEABLE}"' in deploy_org.REPORT_QUERY


@pytest.mark.unit
def test_org_report_names_the_secrets_whose_users_have_no_owner_in_an_account_that_uses_owners():
    # Issue 39: org-report says whose owner is missing (each row carries the user's key-rotation-owner, as the
    # function read it); an account that tags no owner at all is not told about each of its secrets.
    rows = [{**secret_row("iam-keys/ci", 1, "2026-03-01"), "owner": "team-ci@example.com"},
            {**secret_row("iam-keys/app", 1, "2026-03-01"), "owner": None},
            {**secret_row("iam-keys/web", 1, "2026-03-01"), "owner": ""}]
    results = checked_in_logs(CANARY, "eu-west-1", "2026-01-12T06:00:00Z", rows)
    results += checked_in_logs(PROD, "eu-west-1", "2026-01-12T06:00:00Z", [secret_row("iam-keys/x", 1, "2026-03-01")])
    detail = json.loads(results[0][1]["value"])["detail"]
    assert [s["owner"] for s in detail["secrets"]] == ["team-ci@example.com", "", ""]
    _rows, notes = deploy_org.report_rows(results, 1768212000.0)
    assert notes == [f"{CANARY} eu-west-1: 2 secrets' users have no key-rotation-owner: iam-keys/app iam-keys/web"]
