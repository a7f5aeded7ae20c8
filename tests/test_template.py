"""template.yaml: the role's policy is LambdaExecutionRole.json's, and the stack has what the README promises."""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short tags (!Ref, !Sub, ...) as {"Ref": ...} style dicts."""


def _tag(loader: CfnLoader, suffix: str, node: yaml.Node):
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _tag)
TEMPLATE = yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)
RESOURCES = TEMPLATE["Resources"]

# The template's substitutions, as the README's placeholders.
AS_PLACEHOLDERS = {"${AWS::Partition}": "aws", "${AWS::AccountId}": "ACCOUNT_ID", "${AWS::Region}": "REGION",
                   "${FunctionName}": "FUNCTION_NAME", "${SecretNamePrefix}": "iam-keys/", "${UserPath}": "/"}


def as_placeholders(value):
    if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
        text = value["Fn::Sub"]
        if isinstance(text, list):  # ["...${Name}...", {"Name": the function's name}]
            text = text[0].replace("${Name}", "${FunctionName}")
        for template_name, placeholder in AS_PLACEHOLDERS.items():
            text = text.replace(template_name, placeholder)
        return text
    if isinstance(value, dict) and set(value) == {"Fn::If"} and value["Fn::If"][0] == "GuardUsers":
        return as_placeholders(value["Fn::If"][1])  # REQUIRE_USER_TAG=true, the default
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] == "KmsKeyArn":
        return "arn:aws:kms:REGION:ACCOUNT_ID:key/KMS_KEY_ID"
    if isinstance(value, dict):
        return {k: as_placeholders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_placeholders(v) for v in value]
    return value


def test_role_policy_matches_lambda_execution_role_json():
    policies = RESOURCES["FunctionRole"]["Properties"]["Policies"]
    (policy,) = [p for p in policies if isinstance(p, dict) and p.get("PolicyName") == "key-rotation"]
    statements = []
    for statement in policy["PolicyDocument"]["Statement"]:
        if "Fn::If" in statement:  # the KMS statement, present when a key is given
            condition, present, _absent = statement["Fn::If"]
            assert condition == "HasKmsKey"
            statement = present
        statements.append(as_placeholders(statement))
    expected = json.loads((ROOT / "LambdaExecutionRole.json").read_text())["Statement"]
    # The events statement is a resource of its own in the template, present only with EventBusName.
    optional = [s for s in expected if s["Sid"] in ("PublishRotationEvents", "ReadCredentialReport", "LookUpHoldouts",
                                                   "TellOwnersByEmail", "TellOwnersTopics", "MarkToldOwners",
                                                   "ListEveryUsersKeys")]
    assert statements == [s for s in expected if s not in optional]
    assert RESOURCES["ReportPolicy"]["Condition"] == "WithAccountReport"
    assert RESOURCES["HoldoutsPolicy"]["Condition"] == "WithHoldoutLookup"
    (lookup,) = RESOURCES["HoldoutsPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert lookup == {**next(s for s in expected if s["Sid"] == "LookUpHoldouts")}
    assert RESOURCES["Function"]["Properties"]["Environment"]["Variables"]["LOOKUP_HOLDOUTS"] == {
        "Ref": "LookupHoldouts"}
    assert TEMPLATE["Parameters"]["LookupHoldouts"]["Default"] == "false"
    # the roles report: LookupEvents (HoldoutsPolicy's, whose condition takes RolesReport too) and every user's keys
    assert RESOURCES["RolesReportPolicy"]["Condition"] == "WithRolesReport"
    (listing,) = RESOURCES["RolesReportPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert as_placeholders(listing) == next(s for s in expected if s["Sid"] == "ListEveryUsersKeys")
    assert TEMPLATE["Conditions"]["WithHoldoutLookup"] == {"Fn::Or": [
        {"Fn::Equals": [{"Ref": "LookupHoldouts"}, "true"]}, {"Fn::Equals": [{"Ref": "RolesReport"}, "true"]}]}
    assert TEMPLATE["Parameters"]["RolesReport"]["Default"] == "false"
    assert RESOURCES["OwnersPolicy"]["Condition"] == "WithOwners"
    mail, topics, told = RESOURCES["OwnersPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert mail["Fn::If"][0] == "WithOwnerSender" and mail["Fn::If"][1]["Condition"] == {
        "StringEquals": {"ses:FromAddress": {"Ref": "OwnerSender"}}}
    assert topics["Action"] == ["sns:Publish"] and told["Condition"] == next(
        s for s in expected if s["Sid"] == "MarkToldOwners")["Condition"]
    assert TEMPLATE["Parameters"]["TellOwners"]["Default"] == "false"
    assert RESOURCES["EventsPolicy"]["Condition"] == "EventBusAllowed"
    (granted,) = RESOURCES["EventsPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    by_name = granted["Resource"]["Fn::If"][2]["Fn::If"][2]  # a bus name: this account's bus of that name
    assert granted["Action"] == "events:PutEvents"
    assert "${AWS::AccountId}:event-bus/${EventBusName}" in by_name["Fn::Sub"]


def test_stack_runs_daily_one_at_a_time_with_deliberate_retries_and_an_alarm():
    function = RESOURCES["Function"]["Properties"]
    assert function["Runtime"] == "python3.13" and function["Handler"] == "lambda_function.lambda_handler"
    assert function["ReservedConcurrentExecutions"] == 1
    assert function["Code"] == {"S3Bucket": {"Fn::If": ["BucketPerRegion", {"Fn::Sub": "${CodeBucket}-${AWS::Region}"},
                                                    {"Ref": "CodeBucket"}]}, "S3Key": {"Ref": "CodeKey"}}
    assert function["Environment"]["Variables"]["sec"] == {"Ref": "SecretNames"}
    assert RESOURCES["AsyncInvokeConfig"]["Properties"]["MaximumRetryAttempts"] == {"Ref": "AsyncRetries"}
    assert TEMPLATE["Parameters"]["AsyncRetries"]["Default"] == 2
    rule = RESOURCES["ScheduleRule"]["Properties"]
    assert TEMPLATE["Parameters"]["Schedule"]["Default"] == "cron(0 6 * * ? *)"
    assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": "Function.Arn"}
    permission = RESOURCES["SchedulePermission"]["Properties"]
    assert permission["Principal"] == "events.amazonaws.com"
    assert permission["SourceArn"] == {"Fn::GetAtt": "ScheduleRule.Arn"}
    assert RESOURCES["LogGroup"]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    alarm = RESOURCES["ErrorsAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", "Errors")


def test_failed_events_go_to_an_encrypted_queue_and_silence_raises_an_alarm():
    destination = RESOURCES["AsyncInvokeConfig"]["Properties"]["DestinationConfig"]["OnFailure"]["Destination"]
    assert destination == {"Fn::GetAtt": "FailedEvents.Arn"}
    assert RESOURCES["FailedEvents"]["Properties"]["SqsManagedSseEnabled"] is True
    quiet = RESOURCES["NoSuccessAlarm"]["Properties"]
    assert quiet["TreatMissingData"] == "breaching" and quiet["MetricName"] == "Succeeded"
    assert quiet["Period"] * quiet["EvaluationPeriods"] == 36 * 3600
    assert RESOURCES["StillInUseAlarm"]["Properties"]["MetricName"] == "ForcedWhileInUse"


def test_two_stacks_do_not_collide_and_a_redeploy_is_not_blocked():
    function = RESOURCES["Function"]["Properties"]
    assert function["FunctionName"] == {"Fn::If": ["HasFunctionName", {"Ref": "FunctionName"},
                                                   {"Ref": "AWS::StackName"}]}
    assert RESOURCES["LogGroup"]["DeletionPolicy"] == "Delete"


def test_the_publish_permission_exists_only_while_a_topic_is_set():
    notify = RESOURCES["NotifyPolicy"]
    assert notify["Condition"] == "NotifyTopicAllowed" and notify["Type"] == "AWS::IAM::RolePolicy"
    assert {"Fn::Condition": "HasNotifyTopic"} in TEMPLATE["Conditions"]["NotifyTopicAllowed"]["Fn::And"]
    (statement,) = notify["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "sns:Publish"
    arn, parts = statement["Resource"]["Fn::Sub"]
    assert arn == "arn:${AWS::Partition}:sns:${Region}:${Account}:${Name}"
    assert parts["Account"] == {"Fn::If": ["TopicInCentralAccount", {"Ref": "CentralAccountId"},
                                           {"Ref": "AWS::AccountId"}]}


def test_the_template_deploys_production_defaults_that_keep_keys_under_90_days():
    assert TEMPLATE["Parameters"]["RotateAfterDays"]["Default"] == 80
    assert TEMPLATE["Parameters"]["GraceHours"]["Default"] == 24
    assert TEMPLATE["Parameters"]["UserPath"]["Default"] == "/key-rotation/"
    assert RESOURCES["OverdueAlarm"]["Properties"]["MetricName"] == "OverdueKeys"


def test_a_first_deployment_plans_only_until_deployed_again_with_dry_run_false():
    # The stack's daily rule is ENABLED from the start: deployed at 05:55 UTC, it runs at 06:00, before anyone read
    # a plan. So DryRun defaults to "true" and reaches the function as its DRY_RUN.
    assert TEMPLATE["Parameters"]["DryRun"]["Default"] == "true"
    variables = RESOURCES["Function"]["Properties"]["Environment"]["Variables"]
    assert variables["DRY_RUN"] == {"Ref": "DryRun"}


# --- another account's topic or bus: only CentralAccountId's --------------------------------------------------------

def evaluate(value, parameters: dict[str, str], account: str = "111122223333"):
    """The few intrinsic functions the template's conditions and destinations use, evaluated as CloudFormation
    does (Ref, Fn::Sub, Fn::Split, Fn::Select, Fn::Equals, Fn::And, Fn::Or, Fn::Not, Condition, Fn::If, and
    Fn::GetAtt of the resources in ATTRIBUTES)."""
    values = {**parameters, "AWS::AccountId": account, "AWS::Partition": "aws", "AWS::Region": "eu-west-1",
              "AWS::StackName": STACK}
    conditions = TEMPLATE["Conditions"]

    def run(node, names=values):
        if isinstance(node, list):
            return [run(item, names) for item in node]
        if not isinstance(node, dict):
            return node
        if len(node) != 1 or not next(iter(node)).startswith(("Ref", "Fn::", "Condition")):  # a map of values
            return {key: run(item, names) for key, item in node.items()}
        ((name, arg),) = node.items()
        if name == "Ref":
            return names[arg]
        if name in ("Condition", "Fn::Condition"):  # !Condition, as the loader reads it
            return run(conditions[arg], names)
        if name == "Fn::Sub":
            text, extra = (arg, {}) if isinstance(arg, str) else arg
            scope = {**names, **{k: run(v, names) for k, v in extra.items()}}
            return re.sub(r"\$\{([^}]+)\}", lambda m: scope[m.group(1)], text)
        if name == "Fn::Split":
            return run(arg[1], names).split(arg[0])
        if name == "Fn::Select":
            return run(arg[1], names)[int(arg[0])]
        if name == "Fn::Equals":
            return run(arg[0], names) == run(arg[1], names)
        if name == "Fn::And":
            return all(run(a, names) for a in arg)
        if name == "Fn::Or":
            return any(run(a, names) for a in arg)
        if name == "Fn::Not":
            return not run(arg[0], names)
        if name == "Fn::If":
            return run(arg[1] if run(conditions[arg[0]], names) else arg[2], names)
        if name == "Fn::GetAtt":
            return run(ATTRIBUTES[arg], names)
        raise AssertionError(name)

    return run(value)


def granted(resource: str, parameters: dict[str, str]) -> str | None:
    """The resource the template grants, or None when the policy is not created."""
    defaults = {name: str(p.get("Default", "")) for name, p in TEMPLATE["Parameters"].items()}
    parameters = {**defaults, **parameters}
    if not evaluate({"Condition": RESOURCES[resource]["Condition"]}, parameters):
        return None
    (statement,) = RESOURCES[resource]["Properties"]["PolicyDocument"]["Statement"]
    return evaluate(statement["Resource"], parameters)


HERE, CENTRAL, THIRD = "111122223333", "222233334444", "333344445555"
STACK, FUNCTION_ROLE = "iam-key-rotation", "key-rotation-function/iam-key-rotation-FunctionRole-1A2B3C4D5E6F"
# What !GetAtt gives, as template values: the function's bus's name and ARN, and its role's ARN.
ATTRIBUTES = {
    "FunctionBus.Name": RESOURCES["FunctionBus"]["Properties"]["Name"],
    "FunctionBus.Arn": {"Fn::Sub": ["arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/${Bus}",
                                    {"Bus": RESOURCES["FunctionBus"]["Properties"]["Name"]}]},
    "FunctionRole.Arn": {"Fn::Sub": f"arn:${{AWS::Partition}}:iam::${{AWS::AccountId}}:role/{FUNCTION_ROLE}"}}
OWN_BUS = f"arn:aws:events:eu-west-1:{HERE}:event-bus/{STACK}-events"  # the stack's name, FunctionName left empty


def test_publish_and_put_events_reach_this_account_or_central_account_id_only():
    topic = "arn:aws:sns:eu-west-1:{}:key-rotation"
    bus = "arn:aws:events:eu-west-1:{}:event-bus/central"
    for parameter, policy, arn in (("NotifyTopicArn", "NotifyPolicy", topic), ("EventBusName", "EventsPolicy", bus)):
        assert granted(policy, {parameter: arn.format(HERE)}) == arn.format(HERE)
        assert granted(policy, {parameter: arn.format(CENTRAL)}) is None, "another account: no permission"
        assert granted(policy, {parameter: arn.format(THIRD), "CentralAccountId": CENTRAL}) is None
        assert granted(policy, {parameter: ""}) is None
    assert granted("NotifyPolicy", {"NotifyTopicArn": topic.format(CENTRAL), "CentralAccountId": CENTRAL}
                   ) == topic.format(CENTRAL)
    assert granted("EventsPolicy", {"EventBusName": "keys"}) == f"arn:aws:events:eu-west-1:{HERE}:event-bus/keys"
    # The central bus: the function puts on its own bus in this account, and a rule forwards (any region)
    central = {"EventBusName": f"arn:aws:events:us-east-1:{CENTRAL}:event-bus/central",
               "CentralAccountId": CENTRAL}
    assert granted("EventsPolicy", central) == OWN_BUS, "its own bus only: not the default bus, no other"
    variables = RESOURCES["Function"]["Properties"]["Environment"]["Variables"]
    assert variables["CENTRAL_ACCOUNT_ID"] == {"Ref": "CentralAccountId"}



def test_events_for_the_central_bus_are_forwarded_by_a_rule_whose_role_reaches_that_bus_only():
    central = f"arn:aws:events:us-east-1:{CENTRAL}:event-bus/central"
    parameters = {name: str(p.get("Default", "")) for name, p in TEMPLATE["Parameters"].items()}
    both = {**parameters, "EventBusName": central, "CentralAccountId": CENTRAL}
    rule, role = RESOURCES["ForwardEventsRule"], RESOURCES["ForwardEventsRole"]
    assert rule["Condition"] == role["Condition"] == "ForwardToBus"
    here_elsewhere = f"arn:aws:events:us-east-1:{HERE}:event-bus/keys"  # this account's bus, another region
    for given, made in ((both, True), ({**both, "CentralAccountId": ""}, False),
                        ({**both, "EventBusName": here_elsewhere}, True),
                        ({**both, "EventBusName": here_elsewhere.replace("us-east-1", "eu-west-1")}, False),
                        ({**both, "EventBusName": central.replace(CENTRAL, THIRD)}, False),
                        ({**both, "EventBusName": "keys"}, False), ({**both, "EventBusName": ""}, False)):
        assert evaluate({"Condition": "ForwardToBus"}, given) is made, given
    assert granted("EventsPolicy", {**both, "EventBusName": here_elsewhere}) == OWN_BUS
    forward = rule["Properties"]
    assert evaluate(forward["EventBusName"], both) == OWN_BUS.rsplit("/", 1)[1], "the function's own bus"
    assert evaluate(forward["EventPattern"], both) == {"source": ["key-rotation"], "account": [HERE]}
    (target,) = forward["Targets"]
    assert evaluate(target["Arn"], both) == central, "the central bus, in its own region"
    assert target["RoleArn"] == {"Fn::GetAtt": "ForwardEventsRole.Arn"}
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": "FailedEvents.Arn"}}, "undelivered: kept"
    (dead_letters,) = RESOURCES["ForwardFailuresToQueue"]["Properties"]["PolicyDocument"]["Statement"]
    assert dead_letters["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": "ForwardEventsRule.Arn"}}}
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    assert evaluate(trust["Condition"], both) == {"StringEquals": {"aws:SourceAccount": HERE}}
    (policy,) = role["Properties"]["Policies"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == "events:PutEvents" and evaluate(statement["Resource"], both) == central
    variables = RESOURCES["Function"]["Properties"]["Environment"]["Variables"]
    assert evaluate(variables["EVENT_BUS"], both) == OWN_BUS.rsplit("/", 1)[1]
    assert evaluate(variables["EVENT_BUS"], {**both, "EventBusName": "keys"}) == "keys"


# --- only the function speaks on its bus ----------------------------------------------------------------------------
# moto does not evaluate EventBridge resource policies (any principal's PutEvents succeeds there), so these tests
# read the templates' bus policies as the AWS documents they are and evaluate them as AWS does, principal by principal.

ORGANISATION = "o-abcdefghij"


def arn_like(arn: str, pattern: str) -> bool:
    """IAM's ArnLike: each of the six colon-separated parts matched on its own, * and ? as wildcards."""
    parts, wanted = arn.split(":", 5), pattern.split(":", 5)
    return len(parts) == len(wanted) == 6 and all(fnmatchcase(p, w) for p, w in zip(parts, wanted, strict=True))


OPERATORS = {"StringEquals": lambda value, wanted: value == wanted, "ArnLike": arn_like}
NEGATED = {"StringNotEquals": "StringEquals", "ArnNotLike": "ArnLike"}


def holds(operator: str, value: str | None, wanted: str | list[str]) -> bool:
    """One condition on one key, as IAM reads it: true when any wanted value matches. A key the request does not
    carry matches no value, so it fails every positive operator and satisfies every negated one."""
    base = NEGATED.get(operator, operator)
    assert base in OPERATORS, f"an operator this test does not read: {operator}"
    matched = value is not None and any(OPERATORS[base](value, w) for w in ([wanted] if isinstance(wanted, str)
                                                                               else wanted))
    return not matched if operator in NEGATED else matched


def principal(arn: str, organisation: str | None = ORGANISATION) -> dict[str, str]:
    """A request's context as IAM gives it: the principal's ARN (a role's, not its session's, for every session),
    its account and its organisation (absent for an account outside any)."""
    context = {"aws:PrincipalArn": arn, "aws:PrincipalAccount": arn.split(":")[4]}
    return context | ({"aws:PrincipalOrgID": organisation} if organisation else {})


def may_put_events(statements: list[dict], bus_arn: str, context: dict[str, str]) -> bool:
    """Whether a principal may call events:PutEvents on the bus, as AWS decides with the bus's policy: an explicit
    Deny wins; then an Allow of the policy, or, for a principal of the bus's own account, its own IAM policy, taken
    here to allow (the case a Deny is for: an administrator's events:* on every bus)."""
    effects = set()
    for statement in statements:
        assert (statement["Principal"], statement["Action"], statement["Resource"]) == ("*", "events:PutEvents",
                                                                                          bus_arn), statement
        if all(holds(operator, context.get(key), wanted)
               for operator, keys in statement.get("Condition", {}).items() for key, wanted in keys.items()):
            effects.add(statement["Effect"])
    if "Deny" in effects:
        return False
    return "Allow" in effects or context["aws:PrincipalAccount"] == bus_arn.split(":")[4]


def forwarded_parameters(**given: str) -> dict[str, str]:
    """The template's defaults, with the central bus in CentralAccountId's account (another region): forwarded."""
    defaults = {name: str(p.get("Default", "")) for name, p in TEMPLATE["Parameters"].items()}
    return {**defaults, "EventBusName": f"arn:aws:events:us-east-1:{CENTRAL}:event-bus/central",
            "CentralAccountId": CENTRAL, **given}


def test_only_the_function_s_role_may_put_events_on_its_own_bus():
    """The bus the function puts on when its events are forwarded denies events:PutEvents to every principal but
    the function's role, its own account's included. moto does not evaluate EventBridge resource policies, so the
    bus's policy is evaluated here as the AWS document it is."""
    bus = RESOURCES["FunctionBus"]
    assert bus["Condition"] == "ForwardToBus"
    policy = evaluate(bus["Properties"]["Policy"], forwarded_parameters())
    assert policy["Version"] == "2012-10-17"
    statements = policy["Statement"]
    assert may_put_events(statements, OWN_BUS, principal(f"arn:aws:iam::{HERE}:role/{FUNCTION_ROLE}"))
    for other in (f"arn:aws:iam::{HERE}:role/Admin", f"arn:aws:iam::{HERE}:user/alice", f"arn:aws:iam::{HERE}:root",
                  f"arn:aws:iam::{HERE}:role/key-rotation-forwarding/{STACK}-ForwardEventsRole-7G8H9I",
                  f"arn:aws:iam::{HERE}:role/another-stack-FunctionRole-0J1K2L",
                  f"arn:aws:iam::{CENTRAL}:role/{FUNCTION_ROLE}"):
        assert not may_put_events(statements, OWN_BUS, principal(other)), other
    # A Deny, not an Allow for the role: this account's principals need no Allow of the bus, only their IAM policy.
    assert [s["Effect"] for s in statements] == ["Deny"]


def test_the_forwarding_rule_reads_the_function_s_own_bus_not_the_default_bus():
    forwarded = forwarded_parameters()
    own = evaluate({"Fn::GetAtt": "FunctionBus.Name"}, forwarded)
    assert own == f"{STACK}-events" != "default"
    assert evaluate({"Fn::GetAtt": "FunctionBus.Name"}, forwarded_parameters(FunctionName="keys")) == "keys-events"
    assert RESOURCES["ForwardEventsRule"]["Properties"]["EventBusName"] == {"Fn::GetAtt": "FunctionBus.Name"}
    variables = RESOURCES["Function"]["Properties"]["Environment"]["Variables"]
    assert evaluate(variables["EVENT_BUS"], forwarded) == own, "the function puts where the rule reads"
    assert granted("EventsPolicy", forwarded) == OWN_BUS, "and its role may put there, nowhere else"
    output = TEMPLATE["Outputs"]["FunctionBusArn"]  # where this account's consumers now put their rules
    assert (output["Condition"], output["Value"]) == ("ForwardToBus", {"Fn::GetAtt": "FunctionBus.Arn"})


# --- the parameters carry the settings table's bounds and choices ---------------------------------------------------

def test_each_parameter_that_is_a_setting_has_the_tables_bounds_and_choices():
    import lambda_function

    variables = RESOURCES["Function"]["Properties"]["Environment"]["Variables"]
    words = set(lambda_function.TRUE_WORDS + lambda_function.FALSE_WORDS)
    patterns = {"NOTIFY_TOPIC_ARN": (["arn:aws:sns:eu-west-1:111122223333:ops", ""], ["ops", "arn:aws:sns:*"]),
                "EVENT_BUS": (["keys", "arn:aws:events:eu-west-1:111122223333:event-bus/keys", ""],
                              ["arn:aws:sns:eu-west-1:111122223333:t", "a b"]),
                "CENTRAL_ACCOUNT_ID": (["111122223333", ""], ["1111", "11112222333x"]),
                "OWNER_SENDER": (["keys@example.com", "ops+keys@mail.example.co.uk", ""],
                                 ["keys", "a b@example.com", "keys@example"]),
                "METRICS_NAMESPACE": (["IAMKeyRotation", "Keys/Prod"], ["", ":x", "x" * 256]),
                "sec": (["iam-keys/*", "iam-keys/a;iam-keys/b"], ["a,b", ""])}
    checked = set()
    for setting, value in variables.items():
        row = lambda_function.SETTINGS_TABLE[setting]
        if "Fn::If" in value:  # EVENT_BUS: the parameter, or the function's own bus when a rule forwards from it
            longest = {"FunctionName": "f" * 64, "EventBusName": "", "CentralAccountId": ""}
            assert lambda_function.setting({"EVENT_BUS": evaluate(value["Fn::If"][1], longest)}, setting)
            value = value["Fn::If"][2]
        parameter = TEMPLATE["Parameters"][value["Ref"]]
        if row.kind in (int, float):
            assert (parameter["MinValue"], parameter["MaxValue"]) == (row.low, row.high), setting
            assert row.low <= parameter["Default"] <= row.high
        elif row.kind is bool:
            assert set(parameter["AllowedValues"]) <= words and parameter["Default"] in parameter["AllowedValues"]
        elif row.kind == "choice":
            assert tuple(parameter["AllowedValues"]) == row.choices, setting
        else:
            accepted, refused = patterns[setting]
            assert all(re.fullmatch(parameter["AllowedPattern"], v) for v in accepted), setting
            assert not any(re.fullmatch(parameter["AllowedPattern"], v) for v in refused), setting
        checked.add(setting)
    assert checked == set(variables)


def test_each_check_checkov_skips_is_explained_in_one_line():
    skips = re.findall(r"# checkov:skip=([A-Z_0-9]+)(?::(.*))?$", (ROOT / "template.yaml").read_text(), re.M)
    assert skips, "make lint runs checkov on the template"
    assert all(reason and len(reason.split()) >= 5 for _check, reason in skips), skips
    assert "$(CHECKOV) --file template.yaml" in (ROOT / "Makefile").read_text()
    assert re.search(r"^# checkov==\d+\.\d+\.\d+$", (ROOT / "requirements-dev.txt").read_text(), re.M), "pinned"


# --- the alarms, defined once; the dashboard names what the function emits -------------------------------------------

def test_the_template_s_alarms_are_deploy_config_s_alarms_in_the_function_s_namespace():
    from deploy_config import ALARMS

    alarms = {name: r["Properties"] for name, r in RESOURCES.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert set(alarms) == {alarm["Resource"] for alarm in ALARMS}, "every alarm is a row of ALARMS, and each row one"
    topic = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    for alarm in ALARMS:
        expected = {key: value for key, value in alarm.items() if key not in ("Name", "Resource")}
        expected["AlarmDescription"] = {"Fn::Sub": alarm["AlarmDescription"].format(f="${Function}")}
        expected["Namespace"] = alarm["Namespace"] or {"Ref": "MetricsNamespace"}
        expected |= {"Dimensions": [{"Name": "FunctionName", "Value": {"Ref": "Function"}}],
                     "AlarmActions": topic, "OKActions": topic}
        assert alarms[alarm["Resource"]] == expected, alarm["Resource"]
    variables = RESOURCES["Function"]["Properties"]["Environment"]["Variables"]
    assert variables["METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}
    import lambda_function
    assert TEMPLATE["Parameters"]["MetricsNamespace"]["Default"] == \
        lambda_function.SETTINGS_TABLE["METRICS_NAMESPACE"].default


def dashboard_metrics(body: str, names: dict[str, str]) -> list[list]:
    """Each metric row of a dashboard's widgets, its ${...} filled in from names."""
    for name, value in names.items():
        body = body.replace("${" + name + "}", value)
    assert "${" not in body, "every substitution known"
    return [row for widget in json.loads(body)["widgets"] for row in widget["properties"].get("metrics", [])]


def test_every_metric_the_dashboard_shows_is_one_the_function_emits():
    import lambda_function

    dashboard = RESOURCES["Dashboard"]["Properties"]
    rows = dashboard_metrics(dashboard["DashboardBody"]["Fn::Sub"],
                             {"MetricsNamespace": "NS", "Function": "f", "AWS::Region": "eu-west-1"})
    emitted = set(lambda_function.METRICS) | {"EventsFailed"}
    shown = {row[1] for row in rows if row[0] == "NS"}
    assert shown <= emitted, shown - emitted
    assert {"Rotated", "Failed", "OverdueKeys", "ForcedWhileInUse"} <= shown
    assert all(row[0] in ("NS", "AWS/Lambda") and row[2:4] == ["FunctionName", "f"] for row in rows), rows
