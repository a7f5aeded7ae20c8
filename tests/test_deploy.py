"""make create/deploy/schedule with the real AWS CLI against a moto server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest

ROOT = Path(__file__).parent.parent


AWS_CLI = str(Path(sys.executable).parent / "aws")  # the dev environment's CLI (the targets' own is .venv-cli)


def make(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["make", "-s", *args, f"AWS={AWS_CLI}"], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=300)
    if ok:
        assert done.returncode == 0, done.stderr
    return done



def test_package_holds_only_the_function():
    make("package")
    with zipfile.ZipFile(ROOT / "dist" / "lambda.zip") as archive:
        assert archive.namelist() == ["lambda_function.py"]
        assert archive.read("lambda_function.py") == (ROOT / "lambda_function.py").read_bytes()


def test_create_schedule_and_deploy_with_the_aws_cli(server):
    role = role_arn()
    make("create", "FUNCTION=rotate-keys", f"ROLE={role}", "SEC=iam-keys/a;iam-keys/b")
    make("schedule", "FUNCTION=rotate-keys")
    make("schedule", "FUNCTION=rotate-keys")  # again: idempotent
    deployed = make("deploy", "FUNCTION=rotate-keys")

    lam, events = boto3.client("lambda"), boto3.client("events")
    config = lam.get_function(FunctionName="rotate-keys")["Configuration"]
    assert config["Runtime"] == "python3.13"
    assert config["Handler"] == "lambda_function.lambda_handler"
    assert config["Role"] == role and config["Timeout"] == 900
    # Production defaults: rotate at 80 days, keep the old key 24 hours: every key stays under 90 days.
    assert config["Environment"]["Variables"] == {"sec": "iam-keys/a;iam-keys/b", "ROTATE_AFTER_DAYS": "80",
                                                  "GRACE_HOURS": "24"}
    assert config["CodeSha256"] in deployed.stdout
    assert lam.get_function_concurrency(FunctionName="rotate-keys")["ReservedConcurrentExecutions"] == 1
    assert lam.get_function_event_invoke_config(FunctionName="rotate-keys")["MaximumRetryAttempts"] == 2

    (rule,) = events.list_rules(NamePrefix="rotate-keys")["Rules"]
    assert rule["ScheduleExpression"] == "cron(0 6 * * ? *)" and rule["State"] == "ENABLED"
    (target,) = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert target["Arn"] == config["FunctionArn"]
    (grant,) = json.loads(lam.get_policy(FunctionName="rotate-keys")["Policy"])["Statement"]
    assert grant["Principal"] == {"Service": "events.amazonaws.com"}
    assert grant["Condition"]["ArnLike"]["AWS:SourceArn"] == rule["Arn"]


def test_create_refuses_without_role_or_secrets(server):
    done = make("create", "FUNCTION=x", "SEC=a", ok=False)
    assert done.returncode != 0 and "needs ROLE=" in done.stderr


@pytest.mark.parametrize("target", ["create", "configure", "deploy", "schedule", "invoke", "logs", "destroy",
                                    "policy"])
def test_deploy_targets_never_guess_the_function_name(target):
    done = make(target, ok=False)
    assert done.returncode != 0 and "give FUNCTION=" in done.stderr


def role_arn() -> str:
    return boto3.client("iam").create_role(RoleName="key-rotation", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                 "Principal": {"Service": "lambda.amazonaws.com"}}]}))["Role"]["Arn"]


def test_settings_are_passed_by_name_and_configure_merges_them(server):
    make("create", "FUNCTION=rotate-keys", f"ROLE={role_arn()}", "SEC=iam-keys/*", "GRACE_HOURS=24")
    lam = boto3.client("lambda")

    def variables() -> dict:
        return lam.get_function_configuration(FunctionName="rotate-keys")["Environment"]["Variables"]

    assert variables() == {"sec": "iam-keys/*", "GRACE_HOURS": "24", "ROTATE_AFTER_DAYS": "80"}
    make("configure", "FUNCTION=rotate-keys", "DRY_RUN=true")
    assert variables() == {"sec": "iam-keys/*", "GRACE_HOURS": "24", "ROTATE_AFTER_DAYS": "80", "DRY_RUN": "true"}, \
        "the others are kept"
    make("configure", "FUNCTION=rotate-keys", "SEC=iam-keys/a;iam-keys/b")
    assert variables()["sec"] == "iam-keys/a;iam-keys/b" and variables()["GRACE_HOURS"] == "24"
    make("configure", "FUNCTION=rotate-keys", "DRY_RUN=")  # NAME= removes it
    assert "DRY_RUN" not in variables()


@pytest.mark.parametrize("given, says", [
    ("GRACE_HOURS=abc", "GRACE_HOURS='abc' is not understood"),
    ("SEC=a,b", "separate the secrets with ';'"),
    ("DRYRUN=true", "did you mean DRY_RUN?"),
    ("MAX_GRACE_HOURS=2400", "reaches MAX_KEY_AGE_DAYS"),
])
def test_configure_and_create_refuse_what_the_function_would_refuse_and_write_nothing(server, given, says):
    make("create", "FUNCTION=rotate-keys", f"ROLE={role_arn()}", "SEC=iam-keys/*")
    lam = boto3.client("lambda")
    before = lam.get_function_configuration(FunctionName="rotate-keys")["Environment"]["Variables"]
    done = make("configure", "FUNCTION=rotate-keys", given, ok=False)
    assert done.returncode != 0 and says in done.stderr and "nothing written" in done.stderr
    assert lam.get_function_configuration(FunctionName="rotate-keys")["Environment"]["Variables"] == before
    role = lam.get_function(FunctionName="rotate-keys")["Configuration"]["Role"]
    done = make("create", "FUNCTION=other", f"ROLE={role}", "SEC=iam-keys/*", given, ok=False)
    assert done.returncode != 0 and says in done.stderr
    assert [f["FunctionName"] for f in lam.list_functions()["Functions"]] == ["rotate-keys"]


def test_deploy_config_checks_settings_without_boto3():
    # A deploy machine has the AWS CLI, not necessarily boto3: the function's parser is loaded with stand-ins.
    code = ("import sys; sys.modules['boto3'] = None; sys.path.insert(0, 'tools'); import deploy_config; "
            "print(deploy_config.merge_environment('{}', ['GRACE_HOURS=24', 'SEC=x']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "'GRACE_HOURS': '24'" in done.stdout and "'sec': 'x'" in done.stdout


def test_invoke_exits_non_zero_when_the_function_fails(tmp_path):
    # moto cannot run the function: a stand-in `aws` answers as the CLI does for a function error.
    fake = tmp_path / "aws"
    answer = """echo '{"errorMessage": "1 of 1 secrets failed"}' > $a"""
    fake.write_text(f"#!/bin/sh\nfor a; do case $a in dist/*) {answer};; esac; done\necho Unhandled\n")
    fake.chmod(0o755)
    done = subprocess.run(["make", "-s", "invoke", "FUNCTION=f", f"AWS={fake}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "the function failed (Unhandled)" in done.stderr
    assert "1 of 1 secrets failed" in done.stdout


def test_destroy_removes_the_function_and_its_schedule(server):
    make("create", "FUNCTION=rotate-keys", f"ROLE={role_arn()}", "SEC=iam-keys/a")
    make("schedule", "FUNCTION=rotate-keys")
    make("destroy", "FUNCTION=rotate-keys")
    assert boto3.client("lambda").list_functions()["Functions"] == []
    assert boto3.client("events").list_rules(NamePrefix="rotate-keys")["Rules"] == []
    role = boto3.client("iam").get_role(RoleName="key-rotation")["Role"]["Arn"]
    make("create", "FUNCTION=rotate-keys", f"ROLE={role}", "SEC=iam-keys/a")  # a re-deploy after removal works


def test_policy_is_rendered_for_the_account_leaving_the_tracked_template_alone(server):
    tracked = (ROOT / "LambdaExecutionRole.json").read_text()
    make("policy", "FUNCTION=rotate-keys", "REGION=eu-west-1")  # the account from sts get-caller-identity
    rendered = (ROOT / "dist" / "policy.json").read_text()
    assert (ROOT / "LambdaExecutionRole.json").read_text() == tracked
    for placeholder in ("ACCOUNT_ID", "REGION", "FUNCTION_NAME", "KMS_KEY_ID"):
        assert placeholder not in rendered
    policy = json.loads(rendered)
    assert "arn:aws:secretsmanager:eu-west-1:123456789012:secret:iam-keys/*" in rendered
    assert not [s for s in policy["Statement"] if s["Action"][0].startswith("kms:")], "default key: no KMS statement"
    make("policy", "FUNCTION=rotate-keys", "REGION=eu-west-1", "ACCOUNT_ID=111122223333", "KMS_KEY_ID=abc")
    assert "arn:aws:kms:eu-west-1:111122223333:key/abc" in (ROOT / "dist" / "policy.json").read_text()


def test_without_an_aws_on_the_path_the_targets_use_a_cli_of_their_own():
    done = subprocess.run(["make", "-s", "-n", "deploy", "FUNCTION=f"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert ".venv-cli/bin/aws lambda update-function-code" in done.stdout
    assert "requirements-dev.txt" not in done.stdout.replace("grep '^awscli==' requirements-dev.txt", ""), \
        "the CLI alone, not the test stack"


def test_make_help_lists_every_target():
    out = make("help").stdout
    for target in ("demo", "test", "bench", "lint", "package", "policy", "create", "configure", "deploy", "schedule",
                   "invoke", "logs", "destroy"):
        assert f"  {target} " in out, target


def aws_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["aws", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def test_the_template_deploys_two_stacks_side_by_side_and_again_after_removal(server):
    # moto's CloudFormation skips AWS::CloudWatch::Alarm and AWS::Lambda::EventInvokeConfig (it warns); the
    # rest is created: function, role, rule, permission, queue, log group.
    make("package")
    boto3.client("s3").create_bucket(Bucket="artifacts")
    boto3.client("s3").upload_file(str(ROOT / "dist" / "lambda.zip"), "artifacts", "lambda.zip")

    def deploy(stack: str, *overrides: str) -> None:
        aws_cli("cloudformation", "deploy", "--template-file", "template.yaml", "--stack-name", stack,
                "--capabilities", "CAPABILITY_IAM", "--parameter-overrides", "CodeBucket=artifacts",
                "CodeKey=lambda.zip", "SecretNames=iam-keys/*", *overrides)

    deploy("keys-prod")
    # Pause and resume work for a stack too: the stack knows its (generated) rule.
    make("pause", "FUNCTION=keys-prod", "STACK=keys-prod", f"AWS={Path(sys.executable).parent / 'aws'}")
    events = boto3.client("events")
    (rule,) = [r for r in events.list_rules()["Rules"] if "keys-prod" in r["Name"]]
    assert rule["State"] == "DISABLED"
    make("resume", "FUNCTION=keys-prod", "STACK=keys-prod")
    assert events.describe_rule(Name=rule["Name"])["State"] == "ENABLED"
    deploy("keys-test", "NotifyTopicArn=arn:aws:sns:us-east-1:123456789012:rotation")
    lam = boto3.client("lambda")
    assert sorted(f["FunctionName"] for f in lam.list_functions()["Functions"]) == ["keys-prod", "keys-test"]
    config = lam.get_function_configuration(FunctionName="keys-prod")
    assert config["Runtime"] == "python3.13" and config["Environment"]["Variables"]["REQUIRE_USER_TAG"] == "true"
    variables = lam.get_function_configuration(FunctionName="keys-test")["Environment"]["Variables"]
    assert variables["NOTIFY_TOPIC_ARN"] == "arn:aws:sns:us-east-1:123456789012:rotation"

    aws_cli("cloudformation", "delete-stack", "--stack-name", "keys-prod")
    assert [f["FunctionName"] for f in lam.list_functions()["Functions"]] == ["keys-test"]
    deploy("keys-prod")  # the log group went with the stack: nothing blocks the re-deploy
    assert sorted(f["FunctionName"] for f in lam.list_functions()["Functions"]) == ["keys-prod", "keys-test"]


def test_every_list_of_settings_is_the_function_s_table():
    # One table (lambda_function.SETTINGS_TABLE): load_settings reads every row and nothing else; deploy_config
    # takes its names from it; the Makefile keeps no list of its own; the template and the README name only
    # settings of the table, and the README's table names every one.
    import inspect
    import re

    from deploy_config import SETTINGS

    import lambda_function

    table = set(lambda_function.SETTINGS_TABLE)
    source = inspect.getsource(lambda_function.load_settings)
    assert set(re.findall(r'setting\(environ, "([A-Za-z_]+)"', source)) == table - {"sec"}
    assert "os.environ" not in source and 'environ.get("' not in source.replace('environ.get("sec")', "")
    assert set(SETTINGS) == table
    makefile = (ROOT / "Makefile").read_text()
    assert not [name for name in table if f"{name}=$(" in makefile], "the Makefile keeps no list of settings"
    template = (ROOT / "template.yaml").read_text()
    variables = template.split("Variables:", 1)[1].split("\n\n", 1)[0]
    assert set(re.findall(r"^\s+([A-Za-z_]+): ", variables, re.M)) <= table
    readme = (ROOT / "README.md").read_text()
    retries = readme.split("| `AWS_RETRY_MODE`")[1][:40]
    assert {name for name in table if f"| `{name}`" in readme or f"`{name}`" in retries} == table


def test_pause_and_resume_the_schedule_of_route_2a(server):
    make("create", "FUNCTION=rotate-keys", f"ROLE={role_arn()}", "SEC=iam-keys/*")
    make("schedule", "FUNCTION=rotate-keys")
    events = boto3.client("events")
    make("pause", "FUNCTION=rotate-keys")
    assert events.describe_rule(Name="rotate-keys-schedule")["State"] == "DISABLED"
    make("resume", "FUNCTION=rotate-keys")
    assert events.describe_rule(Name="rotate-keys-schedule")["State"] == "ENABLED"


def test_the_report_table_reads_at_a_glance(tmp_path):
    from deploy_config import render_report

    summary = {"secrets": [{"secret": "iam-keys/a", "user": "a", "key_age_days": 3.0, "next_rotation": "2027-02-01",
                            "overdue": False}],
               "report": {"overdue_unmanaged": [{"user": "stray", "key_slot": 1, "age_days": 200.0}],
                          "root_key_active": True}}
    table = render_report(summary)
    assert "a" in table and "yes (iam-keys/a)" in table and "stray" in table and "OVERDUE" in table
    assert "root user has an Active access key" in table


def test_alarms_for_route_2a_are_the_templates_four(server):
    make("create", "FUNCTION=rotate-keys", f"ROLE={role_arn()}", "SEC=iam-keys/*")
    make("alarms", "FUNCTION=rotate-keys", "TOPIC=arn:aws:sns:us-east-1:123456789012:ops")
    alarms = {a["AlarmName"]: a for a in boto3.client("cloudwatch").describe_alarms()["MetricAlarms"]}
    assert set(alarms) == {f"rotate-keys-{n}" for n in ("errors", "no-success", "still-in-use", "overdue")}
    assert {a["MetricName"] for a in alarms.values()} == {"Errors", "Succeeded", "ForcedWhileInUse", "OverdueKeys"}
    assert all(a["AlarmActions"] == ["arn:aws:sns:us-east-1:123456789012:ops"] for a in alarms.values())


def test_local_aws_prints_the_variables_to_export():
    done = subprocess.run([sys.executable, "-c", "import sys; sys.path[:0] = ['tools']; import local_aws, threading; "
                           "threading.Timer(2, lambda: __import__('os')._exit(0)).start(); local_aws.serve_forever(0)"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "export AWS_ENDPOINT_URL=http://127.0.0.1:" in done.stdout and "export AWS_REGION=us-east-1" in done.stdout
