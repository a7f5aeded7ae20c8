"""The README's deploy commands, run as written (bash, the real AWS CLI) against a moto server.

Only the names change nothing: the steps are taken from the README itself, so a step that stops working
fails here. Step 3 (invoke, logs) needs Lambda to run code, which moto does only with Docker: not run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import boto3

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def shell_block(heading: str, nth: int = 0) -> str:
    """The nth (first) ```sh block after the heading."""
    section = README[README.index(heading):]
    return re.findall(r"```sh\n(.*?)```", section, re.S)[nth]


def run(script: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # the dev CLI as `aws`
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_readme_step_1_makes_the_secret_and_the_users_tag_naming_it(server):
    boto3.client("iam").create_user(UserName="ci-deployer")  # the README's user exists already
    run(shell_block("### 1. A secret per user"))
    arn = boto3.client("secretsmanager").describe_secret(SecretId="iam-keys/ci-deployer")["ARN"]
    user = boto3.client("iam").get_user(UserName="ci-deployer")["User"]
    assert user["Path"] == "/key-rotation/"
    (tag,) = boto3.client("iam").list_user_tags(UserName="ci-deployer")["Tags"]
    assert tag == {"Key": "key-rotation-secret", "Value": arn}


def test_readme_step_2a_makes_the_role_with_the_functions_policy(server):
    run(shell_block("### 2a. With the AWS CLI"))
    rendered = (ROOT / "dist" / "policy.json").read_text()
    assert "ACCOUNT_ID" not in rendered and "eu-west-1" in rendered
    policy = boto3.client("iam").get_role_policy(RoleName="iam-key-rotation", PolicyName="key-rotation")
    assert policy["PolicyDocument"] == json.loads(rendered)


def test_readme_step_2a_then_makes_the_function(server):
    # The role of the block before, made here with boto3 (that block has its own test).
    from test_deploy import role_arn

    role = role_arn("iam-key-rotation")
    run(shell_block("### 2a. With the AWS CLI", 1))
    lam = boto3.client("lambda", region_name="eu-west-1")
    config = lam.get_function_configuration(FunctionName="iam-key-rotation")
    assert config["Environment"]["Variables"] == {"sec": "iam-keys/*", "ROTATE_AFTER_DAYS": "80", "GRACE_HOURS": "24"}
    assert config["Runtime"] == "python3.13" and config["Role"] == role


def test_readme_step_4_schedules_the_function(server):
    # The function of step 2a, made here with boto3 (step 2a has its own test).
    from test_deploy import seed_function

    seed_function("iam-key-rotation", region="eu-west-1")
    run(shell_block("### 4. Schedule it"))
    rules = boto3.client("events", region_name="eu-west-1").list_rules(NamePrefix="iam-key-rotation")["Rules"]
    assert [r["Name"] for r in rules] == ["iam-key-rotation-schedule"]


def test_the_readme_tells_how_to_look_pause_undo_and_remove():
    for what in ("make logs", "disable-rule", '{"rollback": [', "make destroy", "delete-stack", "key-rotation:mode"):
        assert what in README, what


def test_the_readme_template_commands_work_as_written(server):
    # moto's CloudFormation skips the alarms and the invoke config it does not model; the rest is created.
    run(shell_block("### 2b. Or with CloudFormation"))
    assert [f["FunctionName"] for f in boto3.client("lambda").list_functions()["Functions"]] == ["iam-key-rotation"]


def test_the_readme_alarm_command_works_as_written(server):
    run(shell_block("### Metrics, alarms, notifications"))
    (alarm,) = boto3.client("cloudwatch").describe_alarms()["MetricAlarms"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("IAMKeyRotation", "ForcedWhileInUse")
