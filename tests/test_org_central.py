"""An organisation end to end, in moto: central.yaml in an audit account, template.yaml by a service-managed
stack set in every account of an OU in two regions, the function run in a member account's credentials, its
events forwarded to the central bus in another region and account, kept in the central log group and read by a
consumer's queue there, and make org-report's table made from that log group.

Where moto is not AWS, and what stands in (each at the wire, none in place of our code): tools/local_aws.py's
``organisation_stand_ins``, which `make local-aws` uses too:
- A rule whose target is another account's bus: moto puts a new event there, with the central account's id and
  region; AWS delivers the event itself, its ``account`` and ``region`` the sender's.
- moto delivers an event to a queue or a log group without its ``account`` field; AWS delivers the whole event.
- moto matches every event to a schedule rule (which has no pattern) and fails on its Lambda target; AWS matches
  no event to a schedule rule.
- moto's CloudFormation makes no metric filter and no alarm (it skips both): the filters are checked against the
  events the function sends by ``matches``, CloudWatch Logs' JSON filter syntax as far as central.yaml uses it.
- moto does not evaluate EventBridge resource policies (it ignores a bus's Policy and makes no EventBusPolicy):
  both buses' policies are evaluated as the AWS documents they are, by test_template.py's ``may_put_events``.
- Logs Insights: moto runs ``fields``, ``sort`` and ``limit``, not ``filter``; org-report reads each event's JSON
  itself and keeps only Access Keys Checked, so its table is the same on AWS.
- STS: the conftest stand-in judges the new key's signature in whichever account holds it.
- Stack sets: moto ignores DeploymentTargets' AccountFilterType (org-deploy's first stage, one account), and its
  update of a stack set never reaches the instances' stacks: the stand-ins do both as AWS does. moto paces nothing
  and has no automatic deployment (test_org.py says more).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import types
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import deploy_config
import deploy_org
import pytest
import yaml
from test_template import ORGANISATION, may_put_events, principal

import lambda_function
from conftest import drain, load_event
from local_aws import organisation_stand_ins
from seed import seed_user

ROOT = Path(__file__).parent.parent
CENTRAL_REGION, MEMBER_REGION = "eu-west-1", "us-east-1"


class Organisation:
    """Organizations with one OU of two member accounts, and an audit account outside it."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        organizations = boto3.client("organizations", region_name="us-east-1")
        organizations.create_organization(FeatureSet="ALL")
        self.root = organizations.list_roots()["Roots"][0]["Id"]
        self.ou = organizations.create_organizational_unit(ParentId=self.root, Name="workloads")[
            "OrganizationalUnit"]["Id"]
        self.members = [self.account(organizations, name, self.ou) for name in ("dev", "prod")]
        self.audit = self.account(organizations, "audit", None)

    def account(self, organizations, name: str, ou: str | None) -> str:
        made = organizations.create_account(AccountName=name, Email=f"{name}@example.com")["CreateAccountStatus"]
        if ou:
            organizations.move_account(AccountId=made["AccountId"], SourceParentId=self.root, DestinationParentId=ou)
        return made["AccountId"]

    def act_as(self, account: str | None, region: str = MEMBER_REGION) -> None:
        """The credentials' account (moto's MOTO_ACCOUNT_ID; None: the management account) and region."""
        if account is None:
            self.monkeypatch.delenv("MOTO_ACCOUNT_ID", raising=False)
        else:
            self.monkeypatch.setenv("MOTO_ACCOUNT_ID", account)
        for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            self.monkeypatch.setenv(name, region)
        lambda_function.clients_for.cache_clear()


def deploy_central(org: Organisation) -> dict:
    """central.yaml in the audit account, and a consumer's queue behind its bus: the stack's outputs."""
    org.act_as(org.audit, CENTRAL_REGION)
    cloudformation = boto3.client("cloudformation")
    cloudformation.create_stack(StackName="key-rotation-central", TemplateBody=(ROOT / "central.yaml").read_text(),
                                Parameters=[{"ParameterKey": "OrganizationId", "ParameterValue": ORGANISATION}])
    (stack,) = cloudformation.describe_stacks(StackName="key-rotation-central")["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    sqs, events = boto3.client("sqs"), boto3.client("events")
    queue = sqs.create_queue(QueueName="security-team")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bus = outputs["BusArn"].rsplit("/", 1)[1]
    events.put_rule(Name="security-team", EventBusName=bus, EventPattern=json.dumps({"source": ["key-rotation"]}))
    events.put_targets(Rule="security-team", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}])
    return {**outputs, "QueueUrl": queue}


def deploy_stack_set(org: Organisation, central: dict, tmp_path: Path) -> None:
    """make org-package's buckets and make org-deploy's stack set (its arguments, from the tool) in moto."""
    org.act_as(None)
    zipped = tmp_path / "lambda.zip"
    with zipfile.ZipFile(zipped, "w") as code:
        code.write(ROOT / "lambda_function.py", "lambda_function.py")
    org.monkeypatch.setattr(deploy_org, "CODE_ZIP", zipped)
    got = {"OUS": org.ou, "REGIONS": f"{CENTRAL_REGION} {MEMBER_REGION}", "ARTIFACT_PREFIX": "acme-keys",
           "STACK_SET": "keys", "CALL_AS": "SELF", "FAILURE_PERCENT": "10", "MAX_PERCENT": "25"}
    for region in deploy_org.listed(got["REGIONS"]):
        s3 = boto3.client("s3", region_name=region)
        place = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        s3.create_bucket(Bucket=f"acme-keys-{region}", **place)
        s3.put_object(Bucket=f"acme-keys-{region}", Key=deploy_org.code_key(), Body=zipped.read_bytes())
    given = [("SecretNames", "iam-keys/*"), ("EventBusName", central["BusArn"]), ("CentralAccountId", org.audit),
             ("DryRun", "false")]  # the template's default plans only
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    cloudformation.create_stack_set(
        StackSetName="keys", TemplateBody=(ROOT / "template.yaml").read_text(),
        Parameters=deploy_org.parameters(got, given, []), Capabilities=["CAPABILITY_IAM"],
        PermissionModel="SERVICE_MANAGED", CallAs="SELF",
        AutoDeployment={"Enabled": True, "RetainStacksOnAccountRemoval": False})
    cloudformation.create_stack_instances(
        StackSetName="keys", Regions=deploy_org.listed(got["REGIONS"]), CallAs="SELF",
        DeploymentTargets=deploy_org.targets(got),
        OperationPreferences=deploy_org.preferences(got, False))


def run_member_function(org: Organisation, account: str, clock) -> dict:
    """The member's function, as its stack deployed it (its environment), run in that account's credentials."""
    org.act_as(account, MEMBER_REGION)
    (function,) = boto3.client("lambda").list_functions()["Functions"]
    for name, value in function["Environment"]["Variables"].items():
        org.monkeypatch.setenv(name, str(value))  # moto keeps a template number as a number
    context = types.SimpleNamespace(invoked_function_arn=function["FunctionArn"],
                                    function_name=function["FunctionName"], aws_request_id=f"run-{account}",
                                    memory_limit_in_mb=256, get_remaining_time_in_millis=lambda: 900_000)
    return lambda_function.handle(load_event("eventbridge-scheduled", time=clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")),
                                  context, __import__("os").environ, clock)


def backdate(account: str, user: str, days: float) -> None:
    from moto.iam.models import iam_backends

    for key in iam_backends[account]["aws"].users[user].access_keys:
        key.create_date = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=days)


@pytest.fixture
def organisation(aws, monkeypatch):
    for owner, name, value in organisation_stand_ins():
        monkeypatch.setattr(owner, name, value)
    return Organisation(monkeypatch)


@pytest.mark.aws
def test_a_member_account_s_rotation_reaches_the_central_bus_in_another_region_and_org_report_shows_it(
        organisation, clock, tmp_path):
    org = organisation
    central = deploy_central(org)
    deploy_stack_set(org, central, tmp_path)
    member, other = org.members
    org.act_as(member, MEMBER_REGION)
    seeded = seed_user(boto3.client("iam"), boto3.client("secretsmanager"), "deployer", ("Active",), 0)
    backdate(member, "deployer", 85)

    summary = run_member_function(org, member, clock)

    assert summary["rotated"] == 1
    value = json.loads(boto3.client("secretsmanager").get_secret_value(SecretId=seeded.secret)["SecretString"])
    assert value["AccessKeyId"] != seeded.key_ids[0], "rotated in the member account"
    org.act_as(org.audit, CENTRAL_REGION)
    got = drain(boto3.client("sqs", region_name=CENTRAL_REGION), central["QueueUrl"])
    kinds = {(e["detail-type"], e["account"], e["region"]) for e in got}
    assert ("Access Key Rotated", member, MEMBER_REGION) in kinds, kinds
    assert ("Access Keys Checked", member, MEMBER_REGION) in kinds, kinds
    assert not any(e["account"] == other for e in got), "the other member ran nothing"
    rotated = next(e for e in got if e["detail-type"] == "Access Key Rotated")
    assert rotated["detail"]["current_key_id"] == value["AccessKeyId"]
    assert value["SecretAccessKey"] not in json.dumps(got), "ids and names only"

    # make org-report's query, run on the central log group as moto runs it, and the tool's table from it
    logs = boto3.client("logs")
    now = int(datetime.now(UTC).timestamp())
    query = logs.start_query(logGroupName=central["LogGroupName"], startTime=now - 3 * 86400, endTime=now + 60,
                             queryString=deploy_org.REPORT_QUERY)["queryId"]
    answer = logs.get_query_results(queryId=query)
    assert answer["status"] == "Complete"
    rows, notes = deploy_org.report_rows(answer["results"], now)
    assert rows == [(member, MEMBER_REGION, seeded.secret, "deployer", "0.0", rows[0][5], "rotated",
                     lambda_function.__version__)], rows
    assert notes == []


@pytest.mark.aws
def test_the_forwarding_role_may_put_events_on_the_central_bus_only(organisation, tmp_path):
    org = organisation
    central = deploy_central(org)
    deploy_stack_set(org, central, tmp_path)
    org.act_as(org.members[0], MEMBER_REGION)
    iam, events = boto3.client("iam"), boto3.client("events")
    (function,) = boto3.client("lambda").list_functions()["Functions"]
    own = function["Environment"]["Variables"]["EVENT_BUS"]
    assert own == "keys-events" and events.describe_event_bus(Name=own), "its own bus, in its own account"
    function_role = function["Role"].rsplit("/", 1)[1]
    granted = [iam.get_role_policy(RoleName=function_role, PolicyName=name)["PolicyDocument"]
               for name in iam.list_role_policies(RoleName=function_role)["PolicyNames"]]
    assert org.audit not in json.dumps(granted), "the function's role reaches nothing in another account"
    assert not [r for r in events.list_rules()["Rules"] if "ForwardEventsRule" in r["Name"]], "not the default bus"
    (rule,) = [r for r in events.list_rules(EventBusName=own)["Rules"] if "ForwardEventsRule" in r["Name"]]
    (target,) = events.list_targets_by_rule(Rule=rule["Name"], EventBusName=own)["Targets"]
    assert target["Arn"] == central["BusArn"]
    # moto keeps no bus policy (it ignores a bus's Policy and makes no EventBusPolicy): the role it made, read as
    # the central bus's policy reads it on AWS. The function's own role is not admitted there.
    bus, statements = central_bus_policy(org.audit)
    assert bus == central["BusArn"]
    assert may_put_events(statements, bus, principal(target["RoleArn"]))
    assert not may_put_events(statements, bus, principal(function["Role"]))
    forward_role = target["RoleArn"].rsplit("/", 1)[1]
    (name,) = iam.list_role_policies(RoleName=forward_role)["PolicyNames"]
    document = iam.get_role_policy(RoleName=forward_role, PolicyName=name)["PolicyDocument"]
    # moto keeps a template's inline policy as Python's repr of it; AWS answers the JSON document
    (statement,) = (ast.literal_eval(document) if isinstance(document, str) else document)["Statement"]
    assert (statement["Action"], statement["Resource"]) == ("events:PutEvents", central["BusArn"])


# --- the central bus admits the forwarding roles only -------------------------------------------------------------

def central_bus_policy(account: str) -> tuple[str, list[dict]]:
    """central.yaml's bus ARN in account and CENTRAL_REGION (OrganizationId=ORGANISATION, BusName's default), and
    its policy's statements: each EventBusPolicy's, every one on that bus."""
    template = yaml.load((ROOT / "central.yaml").read_text(), Loader=Loader)
    name = template["Parameters"]["BusName"]["Default"]
    bus = f"arn:aws:events:{CENTRAL_REGION}:{account}:event-bus/{name}"
    names = {"AWS::Partition": "aws", "AWS::Region": CENTRAL_REGION, "AWS::AccountId": account, "BusName": name,
             "OrganizationId": ORGANISATION}

    def value(node):
        if isinstance(node, dict) and set(node) == {"Ref"}:
            return names[node["Ref"]]
        if isinstance(node, dict) and set(node) == {"Sub"}:
            return re.sub(r"\$\{([^}]+)\}", lambda found: names[found[1]], node["Sub"])
        if isinstance(node, dict) and set(node) == {"GetAtt"}:
            assert node["GetAtt"] == "Bus.Arn"
            return bus
        if isinstance(node, dict):
            return {key: value(item) for key, item in node.items()}
        return [value(item) for item in node] if isinstance(node, list) else node

    policies = [value(r["Properties"]) for r in template["Resources"].values()
                if r["Type"] == "AWS::Events::EventBusPolicy"]
    assert policies and all(policy["EventBusName"] == name for policy in policies)
    assert "Policy" not in template["Resources"]["Bus"]["Properties"], "one way to write the bus's policy"
    return bus, [policy["Statement"] for policy in policies]


@pytest.mark.unit
def test_only_the_organisation_s_forwarding_roles_may_put_events_on_the_central_bus():
    """central.yaml's bus takes events:PutEvents from a member account's ForwardEventsRole (the path template.yaml
    gives it) and from no other principal: not another of a member account's, not one outside the organisation,
    not the central account's own. moto does not evaluate EventBridge resource policies, so the bus's policy is
    evaluated here as the AWS document it is."""
    audit, member, outsider = "999988887777", "111122223333", "444455556666"
    bus, statements = central_bus_policy(audit)
    path = yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)["Resources"]["ForwardEventsRole"][
        "Properties"]["Path"]
    forwarding = f"arn:aws:iam::{member}:role{path}StackSet-keys-0a1b-ForwardEventsRole-3C4D5E"
    assert may_put_events(statements, bus, principal(forwarding))
    for context in (principal(f"arn:aws:iam::{member}:role/Admin"), principal(f"arn:aws:iam::{member}:user/alice"),
                    principal(f"arn:aws:iam::{member}:root"),
                    principal(f"arn:aws:iam::{member}:role/StackSet-keys-0a1b-FunctionRole-6F7G8H"),
                    # a forwarding role made before it had its path: its account's stack is not yet updated
                    principal(f"arn:aws:iam::{member}:role/StackSet-keys-0a1b-ForwardEventsRole-9I0J1K"),
                    principal(forwarding.replace(member, outsider), organisation=None),
                    principal(forwarding.replace(member, outsider), organisation="o-zyxwvutsrq"),
                    principal(f"arn:aws:iam::{audit}:role/Admin"),  # this account's own, whatever its IAM policy
                    # and, were this account outside the organisation, a role of its own made with that path
                    principal(f"arn:aws:iam::{audit}:role{path}made-here", organisation=None)):
        assert not may_put_events(statements, bus, context), context


def test_the_central_account_s_own_function_may_put_on_the_central_bus_it_names_directly():
    # Found by the review: the central account's own stack instance in the central region names the central bus
    # directly (same account and region: nothing forwards), so its function puts as its own role. That role (by
    # the path template.yaml gives FunctionRole) is let through; a member's function role with that path is not.
    audit, member = "999988887777", "111122223333"
    bus, statements = central_bus_policy(audit)
    path = yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)["Resources"]["FunctionRole"][
        "Properties"]["Path"]
    assert may_put_events(statements, bus, principal(f"arn:aws:iam::{audit}:role{path}keys-FunctionRole-1A2B"))
    assert not may_put_events(statements, bus, principal(f"arn:aws:iam::{member}:role{path}keys-FunctionRole-3C4D"))
    assert not may_put_events(statements, bus, principal(f"arn:aws:iam::{audit}:role/Admin"))


# --- central.yaml's filters, read as CloudWatch Logs reads them (moto makes none) ----------------------------------

def matches(pattern: str, event: dict) -> bool:
    """A CloudWatch Logs JSON filter pattern, of the forms central.yaml uses: { $.a.b = "v" }, { $.a.b IS TRUE }
    and { $.a.b NOT EXISTS }, joined by &&."""
    body = re.fullmatch(r"\{\s*(.*?)\s*\}", pattern)
    assert body, pattern
    for term in re.split(r"\s*&&\s*", body[1]):
        found = re.fullmatch(r'\$\.([A-Za-z0-9_.-]+)\s*(?:=\s*"([^"]*)"|IS (TRUE|FALSE)|(NOT EXISTS))', term)
        assert found, f"a term outside the syntax this test reads: {term}"
        value, there = event, True
        for step in found[1].split("."):
            there = isinstance(value, dict) and step in value
            value = value.get(step) if isinstance(value, dict) else None
        if found[4] is not None and there:
            return False
        if found[2] is not None and value != found[2]:
            return False
        if found[3] is not None and value is not (found[3] == "TRUE"):
            return False
    return True


class Loader(yaml.SafeLoader):
    pass


Loader.add_multi_constructor("!", lambda loader, suffix, node: {suffix: loader.construct_scalar(node)}
                             if isinstance(node, yaml.ScalarNode) else None)


def filters() -> dict[str, dict]:
    resources = yaml.load((ROOT / "central.yaml").read_text(), Loader=Loader)["Resources"]
    return {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::Logs::MetricFilter"}


def as_delivered(entry: dict, account: str = "111111111111") -> dict:
    return {"source": entry["Source"], "detail-type": entry["DetailType"], "account": account,
            "region": MEMBER_REGION, "detail": json.loads(entry["Detail"])}


@pytest.mark.unit
def test_each_central_filter_counts_the_events_it_names_and_no_other():
    settings = lambda_function.Settings(event_bus="default")
    status, outcome, deadline = lambda_function.Status, lambda_function.Outcome, lambda_function.Deadline
    outcomes = [outcome("a", status.FAILED), outcome("b", status.ROTATED, deadline=deadline(key_age_days=0)),
                outcome("c", status.RETIRED, forced_in_use=True),
                outcome("d", status.SKIPPED, deadline=deadline(overdue=True, key_age_days=97))]
    sent = [as_delivered(e) for e in lambda_function.event_entries(settings, outcomes)]
    counts = lambda_function.RunCounts(oldest_key_age_days=97, overdue_keys=1, failed=1)
    sent += [as_delivered(e) for e in lambda_function.checked_entries(settings, outcomes, counts, "run-1")]
    targeted = lambda_function.Settings(event_bus="default", targets=("d",))  # its counts are not the account's
    its_counts = dataclasses.replace(counts, oldest_key_age_days=5)
    sent += [as_delivered(e) for e in lambda_function.checked_entries(targeted, outcomes[3:], its_counts, "run-2")]
    counted = {name: [e["detail"].get("secret") or e["detail-type"] for e in sent if matches(f["FilterPattern"], e)]
               for name, f in filters().items()}
    assert counted["FailedFilter"] == counted["FailedByAccountFilter"] == ["a"]
    assert counted["RotatedByAccountFilter"] == ["b"]
    assert counted["ForcedFilter"] == counted["ForcedByAccountFilter"] == ["c"]
    assert counted["OverdueFilter"] == counted["OverdueByAccountFilter"] == ["d"]
    assert counted["OldestKeyAgeByAccountFilter"] == [lambda_function.CHECKED]
    (age,) = filters()["OldestKeyAgeByAccountFilter"]["MetricTransformations"]
    assert age["MetricValue"] == "$.detail.oldest_key_age_days" and age["Dimensions"] == [
        {"Key": "Account", "Value": "$.account"}]


@pytest.mark.unit
def test_the_dashboards_read_metrics_the_function_or_the_central_filters_make():
    central = (ROOT / "central.yaml").read_text()
    made = {t["MetricName"] for f in filters().values() for t in f["MetricTransformations"]}
    shown = set(re.findall(r'MetricName=\\\\?"([A-Za-z]+)\\\\?"', central))
    assert shown and shown <= made, shown - made
    template = (ROOT / "template.yaml").read_text()  # each of its metrics the function's: test_template.py
    assert '["${MetricsNamespace}", "OldestKeyAgeDays", "FunctionName", "${Function}"]' in template
    assert "OldestKeyAgeDays" in lambda_function.METRICS


@pytest.mark.unit
def test_an_event_bus_in_another_region_is_refused_before_anything_is_touched(aws, invoke, monkeypatch):
    seeded = seed_user(aws.iam, aws.secrets, "alice", ("Active",), 0)
    monkeypatch.setenv("EVENT_BUS", "arn:aws:events:eu-west-1:123456789012:event-bus/keys")
    with pytest.raises(lambda_function.ConfigError, match="EVENT_BUS is in region eu-west-1, not this one"):
        invoke(seeded.secret)
    assert aws.keys("alice") == {seeded.key_ids[0]: "Active"} and len(aws.versions(seeded.secret)) == 1
    with pytest.raises(deploy_config.Refused, match="EVENT_BUS is in region eu-west-1, not us-east-1"):
        deploy_config.render_policy("123456789012", "us-east-1", "f", event_bus=
                                    "arn:aws:events:eu-west-1:123456789012:event-bus/keys")


@pytest.mark.aws
def test_org_deploy_s_first_stage_deploys_its_one_account_and_the_second_the_rest(organisation):
    # moto ignores AccountFilterType and would deploy every account of the OU at the first stage; the stand-in
    # (make local-aws's too) counts it as AWS does.
    org = organisation
    org.act_as(None)
    cloudformation = boto3.client("cloudformation", region_name=MEMBER_REGION)
    cloudformation.create_stack_set(StackSetName="s", PermissionModel="SERVICE_MANAGED",
                                    TemplateBody=json.dumps({"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}}),
                                    AutoDeployment={"Enabled": True, "RetainStacksOnAccountRemoval": False})
    first, _second = org.members

    def deployed() -> list[str]:
        return sorted(i["Account"] for i in cloudformation.list_stack_instances(StackSetName="s")["Summaries"])

    for chosen, expected in ((first, [first]), (None, sorted(org.members))):
        cloudformation.create_stack_instances(StackSetName="s", Regions=[MEMBER_REGION],
                                              DeploymentTargets=deploy_org.targets({"OUS": org.ou}, chosen))
        assert deployed() == expected
