"""template.yaml: the role's policy is LambdaExecutionRole.json's, and the stack has what the README promises."""

from __future__ import annotations

import json
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
    optional = [s for s in expected if s["Sid"] in ("PublishRotationEvents", "ReadCredentialReport", "LookUpHoldouts")]
    assert statements == [s for s in expected if s not in optional]
    assert RESOURCES["ReportPolicy"]["Condition"] == "WithAccountReport"
    assert RESOURCES["HoldoutsPolicy"]["Condition"] == "WithHoldoutLookup"
    (lookup,) = RESOURCES["HoldoutsPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert lookup == {**next(s for s in expected if s["Sid"] == "LookUpHoldouts")}
    assert RESOURCES["Function"]["Properties"]["Environment"]["Variables"]["LOOKUP_HOLDOUTS"] == {
        "Ref": "LookupHoldouts"}
    assert TEMPLATE["Parameters"]["LookupHoldouts"]["Default"] == "false"
    assert RESOURCES["EventsPolicy"]["Condition"] == "HasEventBus"
    (granted,) = RESOURCES["EventsPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert granted["Action"] == "events:PutEvents" and "event-bus/${EventBusName}" in granted["Resource"]["Fn::Sub"]


def test_stack_runs_daily_one_at_a_time_with_deliberate_retries_and_an_alarm():
    function = RESOURCES["Function"]["Properties"]
    assert function["Runtime"] == "python3.13" and function["Handler"] == "lambda_function.lambda_handler"
    assert function["ReservedConcurrentExecutions"] == 1
    assert function["Code"] == {"S3Bucket": {"Ref": "CodeBucket"}, "S3Key": {"Ref": "CodeKey"}}
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
    assert notify["Condition"] == "HasNotifyTopic" and notify["Type"] == "AWS::IAM::RolePolicy"
    (statement,) = notify["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "sns:Publish" and statement["Resource"] == {"Ref": "NotifyTopicArn"}


def test_the_template_deploys_production_defaults_that_keep_keys_under_90_days():
    assert TEMPLATE["Parameters"]["RotateAfterDays"]["Default"] == 80
    assert TEMPLATE["Parameters"]["GraceHours"]["Default"] == 24
    assert TEMPLATE["Parameters"]["UserPath"]["Default"] == "/key-rotation/"
    assert RESOURCES["OverdueAlarm"]["Properties"]["MetricName"] == "OverdueKeys"
