"""make create/deploy/schedule ... (tools/deploy_config.py, boto3's clients) against a moto server on 127.0.0.1."""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import deploy_config
import pytest
from aws_wire import Wire

import lambda_function

ROOT = Path(__file__).parent.parent


AWS_CLI = str(Path(sys.executable).parent / "aws")  # make's AWS as a user gives it (its options name the profile)


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


def test_create_makes_the_function_one_at_a_time_with_production_defaults(server):
    role = role_arn()
    make("create", "FUNCTION=rotate-keys", f"ROLE={role}", "SEC=iam-keys/a;iam-keys/b")
    lam = boto3.client("lambda")
    config = lam.get_function(FunctionName="rotate-keys")["Configuration"]
    assert config["Runtime"] == "python3.13"
    assert config["Handler"] == "lambda_function.lambda_handler"
    assert config["Role"] == role and config["Timeout"] == 900
    # Production defaults: rotate at 80 days, keep the old key 24 hours: every key stays under 90 days.
    assert config["Environment"]["Variables"] == {"sec": "iam-keys/a;iam-keys/b", "ROTATE_AFTER_DAYS": "80",
                                                  "GRACE_HOURS": "24"}
    assert lam.get_function_concurrency(FunctionName="rotate-keys")["ReservedConcurrentExecutions"] == 1
    assert lam.get_function_event_invoke_config(FunctionName="rotate-keys")["MaximumRetryAttempts"] == 2


def test_deploy_uploads_the_new_code(server):
    seed_function("rotate-keys", code=b"# an older version\n")
    deployed = make("deploy", "FUNCTION=rotate-keys")
    config = boto3.client("lambda").get_function(FunctionName="rotate-keys")["Configuration"]
    assert config["CodeSha256"] in deployed.stdout
    assert config["CodeSha256"] == base64.b64encode(hashlib.sha256((ROOT / "dist" / "lambda.zip").read_bytes())
                                                    .digest()).decode()


def assert_scheduled(function_arn: str) -> None:
    """One daily rule, targeting the function, and one grant for EventBridge on that rule only."""
    lam, events = boto3.client("lambda"), boto3.client("events")
    (rule,) = events.list_rules(NamePrefix="rotate-keys")["Rules"]
    assert rule["ScheduleExpression"] == "cron(0 6 * * ? *)" and rule["State"] == "ENABLED"
    (target,) = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert target["Arn"] == function_arn
    (grant,) = json.loads(lam.get_policy(FunctionName="rotate-keys")["Policy"])["Statement"]
    assert grant["Principal"] == {"Service": "events.amazonaws.com"}
    assert grant["Condition"]["ArnLike"]["AWS:SourceArn"] == rule["Arn"]


def test_schedule_adds_the_daily_rule_and_its_grant(server):
    function_arn = seed_function("rotate-keys")
    make("schedule", "FUNCTION=rotate-keys")
    assert_scheduled(function_arn)


def test_schedule_again_changes_nothing(server):
    function_arn = seed_function("rotate-keys")
    seed_schedule("rotate-keys")  # as a first make schedule left it
    make("schedule", "FUNCTION=rotate-keys")
    assert_scheduled(function_arn)


def test_exposed_rule_runs_the_function_on_aws_health_s_exposed_key_events(server):
    # moto delivers no Health events: the rule's pattern is checked against the shared event shape instead.
    function_arn = seed_function("rotate-keys")
    make("exposed-rule", "FUNCTION=rotate-keys")
    events = boto3.client("events")
    (rule,) = events.list_rules(NamePrefix="rotate-keys-exposed")["Rules"]
    (target,) = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert target["Arn"] == function_arn
    health = json.loads((ROOT / "tests" / "events" / "aws-health-risk-credentials-exposed.json").read_text())
    pattern = json.loads(rule["EventPattern"])
    assert [health["source"]] == pattern["source"] and [health["detail-type"]] == pattern["detail-type"]
    assert health["detail"]["eventTypeCode"] in pattern["detail"]["eventTypeCode"]
    assert pattern["detail"]["eventTypeCode"] == list(lambda_function.EXPOSURE_CODES)


def test_create_refuses_without_role_or_secrets(server):
    done = make("create", "FUNCTION=x", "SEC=a", ok=False)
    assert done.returncode != 0 and "needs ROLE=" in done.stderr


@pytest.mark.parametrize("target", ["create", "configure", "deploy", "schedule", "invoke", "logs", "destroy",
                                    "policy"])
def test_deploy_targets_never_guess_the_function_name(target):
    done = make(target, ok=False)
    assert done.returncode != 0 and "give FUNCTION=" in done.stderr


def role_arn(name: str = "key-rotation") -> str:
    """A role Lambda may assume (made once)."""
    iam = boto3.client("iam")
    try:
        return iam.get_role(RoleName=name)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                         "Principal": {"Service": "lambda.amazonaws.com"}}]}
        return iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]


def function_zip(code: bytes | None = None) -> bytes:
    """A zip as make package builds it: lambda_function.py alone (or the given code in its place)."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as made:
        made.writestr("lambda_function.py", code if code is not None else (ROOT / "lambda_function.py").read_bytes())
    return archive.getvalue()


def seed_function(name: str, variables: dict | None = None, code: bytes | None = None, region: str | None = None,
                  role: str | None = None) -> str:
    """A function as `make create` leaves it, made with boto3 (the AWS CLI costs about a second a call), for the
    tests whose subject is another target. Returns its ARN."""
    lam = boto3.client("lambda", region_name=region)
    arn = lam.create_function(FunctionName=name, Runtime="python3.13", Role=role or role_arn(),
                              Handler="lambda_function.lambda_handler", Code={"ZipFile": function_zip(code)},
                              Timeout=900, MemorySize=256,
                              Environment={"Variables": variables if variables is not None else
                                           {"sec": "iam-keys/*", "ROTATE_AFTER_DAYS": "80", "GRACE_HOURS": "24"}})
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    return arn["FunctionArn"]


def seed_schedule(name: str, region: str | None = None) -> str:
    """The rule, target and grant `make schedule` makes, with boto3. Returns the rule's ARN."""
    lam, events = boto3.client("lambda", region_name=region), boto3.client("events", region_name=region)
    function_arn = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    rule_arn = events.put_rule(Name=f"{name}-schedule", ScheduleExpression="cron(0 6 * * ? *)")["RuleArn"]
    lam.add_permission(FunctionName=name, StatementId="events-schedule", Action="lambda:InvokeFunction",
                       Principal="events.amazonaws.com", SourceArn=rule_arn)
    events.put_targets(Rule=f"{name}-schedule", Targets=[{"Id": "rotate", "Arn": function_arn}])
    return rule_arn


def variables_of(name: str) -> dict:
    return boto3.client("lambda").get_function_configuration(FunctionName=name)["Environment"]["Variables"]


def test_create_takes_settings_by_name(server):
    make("create", "FUNCTION=rotate-keys", f"ROLE={role_arn()}", "SEC=iam-keys/*", "GRACE_HOURS=48",
         "LOOKUP_HOLDOUTS=true")
    assert variables_of("rotate-keys") == {"sec": "iam-keys/*", "GRACE_HOURS": "48", "ROTATE_AFTER_DAYS": "80",
                                           "LOOKUP_HOLDOUTS": "true"}


def test_configure_adds_a_setting_keeping_the_others_and_name_equals_nothing_removes_it(server):
    seed_function("rotate-keys")
    make("configure", "FUNCTION=rotate-keys", "DRY_RUN=true")
    assert variables_of("rotate-keys") == {"sec": "iam-keys/*", "GRACE_HOURS": "24", "ROTATE_AFTER_DAYS": "80",
                                           "DRY_RUN": "true"}, "the others are kept"
    make("configure", "FUNCTION=rotate-keys", "DRY_RUN=")  # NAME= removes it
    assert "DRY_RUN" not in variables_of("rotate-keys")


def test_configure_sec_replaces_the_secrets(server):
    seed_function("rotate-keys")
    make("configure", "FUNCTION=rotate-keys", "SEC=iam-keys/a;iam-keys/b")
    assert variables_of("rotate-keys")["sec"] == "iam-keys/a;iam-keys/b"
    assert variables_of("rotate-keys")["GRACE_HOURS"] == "24"


@pytest.mark.parametrize("given, says", [
    ("GRACE_HOURS=abc", "GRACE_HOURS='abc' is not understood"),
    ("SEC=a,b", "separate the secrets with ';'"),
    ("DRYRUN=true", "did you mean DRY_RUN?"),
    ("MAX_GRACE_HOURS=2400", "reaches MAX_KEY_AGE_DAYS"),
])
def test_configure_and_create_refuse_what_the_function_would_refuse_and_write_nothing(server, given, says):
    seed_function("rotate-keys")
    lam = boto3.client("lambda")
    before = lam.get_function_configuration(FunctionName="rotate-keys")["Environment"]["Variables"]
    done = make("configure", "FUNCTION=rotate-keys", given, ok=False)
    assert done.returncode != 0 and says in done.stderr and "nothing written" in done.stderr
    assert lam.get_function_configuration(FunctionName="rotate-keys")["Environment"]["Variables"] == before
    role = lam.get_function(FunctionName="rotate-keys")["Configuration"]["Role"]
    done = make("create", "FUNCTION=other", f"ROLE={role}", "SEC=iam-keys/*", given, ok=False)
    assert done.returncode != 0 and says in done.stderr
    assert [f["FunctionName"] for f in lam.list_functions()["Functions"]] == ["rotate-keys"]


def test_deploy_config_needs_only_what_make_cli_installs():
    # A deploy machine has what make installs: .venv-cli holds the AWS CLI (which brings botocore and PyYAML) and
    # boto3, at requirements-dev.txt's pins. The tool imports nothing else (the standard library aside), and make
    # help lists its targets with no import of boto3 at all.
    tools = ("deploy_config", "deploy_values", "deploy_policy", "deploy_org")
    trees = [ast.parse((ROOT / "tools" / f"{tool}.py").read_text()) for tool in tools]
    imported = {alias.name.split(".")[0] for tree in trees for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names} | {node.module.split(".")[0] for tree in trees for node in ast.walk(tree)
                                            if isinstance(node, ast.ImportFrom) and node.module}
    assert imported - sys.stdlib_module_names - set(tools) == {"boto3", "botocore", "yaml"}
    code = "import sys; sys.modules['boto3'] = sys.modules['yaml'] = None; sys.argv[1:] = ['--targets']; " \
           "sys.path.insert(0, 'tools'); import deploy_config; deploy_config.main(['--targets'])"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "  org-report\t" in done.stdout, done.stderr


def test_invoke_says_a_function_error_in_one_line_without_its_stack_trace(tmp_path, monkeypatch, capsys):
    # Lambda answers a function error at the wire: FunctionError, and the error's JSON (its stackTrace included).
    failed = {"errorMessage": "1 of 1 secrets failed: boom", "errorType": "RotationFailed",
              "stackTrace": ["  File \"/var/task/lambda_function.py\", line 1, in handler\n"]}
    wire = Wire({"lambda Invoke": lambda params: {"FunctionError": "Unhandled",
                                                  "Payload": io.BytesIO(json.dumps(failed).encode())}})
    monkeypatch.chdir(tmp_path)
    code = deploy_config.main(["invoke"], {"FUNCTION": "f", "EVENT": str(ROOT / "events" / "dry-run.json")}, wire)
    out, err = capsys.readouterr()
    assert code != 0 and err.splitlines() == ["the function failed (RotationFailed): 1 of 1 secrets failed: boom "
                                              "(its log lines: make logs FUNCTION=f; its answer: dist/invoke-f.json)"]
    assert "lambda_function.py" not in out + err, "no stack trace"


def seed_alarms(function: str) -> None:
    """The four alarms `make alarms` makes, by name (boto3: the CLI costs about a second a call)."""
    cloudwatch = boto3.client("cloudwatch")
    for name in ("errors", "no-success", "still-in-use", "overdue"):
        cloudwatch.put_metric_alarm(AlarmName=f"{function}-{name}", Namespace="IAMKeyRotation", MetricName="Failed",
                                    Statistic="Sum", Period=86400, EvaluationPeriods=1, Threshold=0,
                                    ComparisonOperator="GreaterThanThreshold")


def test_destroy_removes_the_function_and_its_schedule_leaving_nothing_in_the_way(server):
    seed_function("rotate-keys")
    seed_schedule("rotate-keys")
    seed_alarms("rotate-keys")
    seed_alarms("rotate-keys-other")  # another function's alarms share the prefix: kept
    boto3.client("logs").create_log_group(logGroupName="/aws/lambda/rotate-keys")
    done = make("destroy", "FUNCTION=rotate-keys")
    assert boto3.client("lambda").list_functions()["Functions"] == []
    assert boto3.client("events").list_rules(NamePrefix="rotate-keys")["Rules"] == []
    alarms = [a["AlarmName"] for a in boto3.client("cloudwatch").describe_alarms()["MetricAlarms"]]
    assert sorted(alarms) == sorted(f"rotate-keys-other-{n}" for n in ("errors", "no-success", "still-in-use",
                                                                       "overdue")), "its four alarms went"
    # What stays is listed, each with the command that removes it: the role and the log group.
    assert f"the role {role_arn()}" in done.stdout and "aws iam delete-role --role-name key-rotation" in done.stdout
    assert "aws logs delete-log-group --log-group-name /aws/lambda/rotate-keys" in done.stdout
    seed_function("rotate-keys")  # the names are free again: a re-deploy after removal works
    seed_schedule("rotate-keys")


def test_pause_without_stack_for_a_function_with_no_rule_says_to_give_stack(server):
    seed_function("keys-prod")  # a stack's function: its rule has a generated name
    done = make("pause", "FUNCTION=keys-prod", ok=False)
    assert done.returncode != 0, done.stderr
    assert "no rule keys-prod-schedule" in done.stderr and "give STACK=<the stack's name>" in done.stderr


def test_rollback_skip_unskip_and_status_by_name(server):
    # The function runs in the local AWS's own process (tools/local_aws.py): a rotation, then the day-two targets.
    from seed import seed_user

    iam, secrets, lam = boto3.client("iam"), boto3.client("secretsmanager"), boto3.client("lambda")
    alice = seed_user(iam, secrets, "alice", ("Active",), 0)
    (old,) = alice.key_ids
    seed_function("undone-keys", {"sec": alice.secret})

    def held() -> str:
        return json.loads(secrets.get_secret_value(SecretId=alice.secret)["SecretString"])["AccessKeyId"]

    def run() -> dict:
        answer = lam.invoke(FunctionName="undone-keys", Payload=b"{}")
        return json.loads(answer["Payload"].read())

    assert run()["rotated"] == 1 and held() != old  # (make status before any alarm: the README's walk-through)

    rolled = make("rollback", "FUNCTION=undone-keys", f"SECRET={alice.secret}")
    assert re.search(rf"^{alice.secret}\s+rolled_back\s", rolled.stdout, re.M) and held() == old, rolled.stdout

    make("skip", f"SECRET={alice.secret}")
    assert {"Key": "key-rotation:mode", "Value": "skip"} in secrets.describe_secret(SecretId=alice.secret)["Tags"]
    assert run()["skipped"] == 1 and held() == old, "a skip-tagged secret is left alone"
    make("unskip", f"SECRET={alice.secret}")
    assert "key-rotation:mode" not in {t["Key"] for t in secrets.describe_secret(SecretId=alice.secret)["Tags"]}
    secrets.tag_resource(SecretId=alice.secret, Tags=[{"Key": "key-rotation:mode", "Value": "dry-run"}])
    refused = make("unskip", f"SECRET={alice.secret}", ok=False)
    assert refused.returncode != 0 and "key-rotation:mode=dry-run, not skip: left as it is" in refused.stderr

    seed_alarms("undone-keys")
    status = make("status", "FUNCTION=undone-keys").stdout
    assert status.count("alarm undone-keys-") == 4 and "alarm undone-keys-overdue: " in status
    assert re.search(r"last run \d{4}-\d\d-\d\dT[\d:]+Z: 1 skipped", status), status


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
    key = "1234abcd-12ab-34cd-56ef-1234567890ab"
    make("policy", "FUNCTION=rotate-keys", "REGION=eu-west-1", "ACCOUNT_ID=111122223333", f"KMS_KEY_ID={key}")
    assert f"arn:aws:kms:eu-west-1:111122223333:key/{key}" in (ROOT / "dist" / "policy.json").read_text()
    optional = {"PublishRotationEvents", "ReadCredentialReport", "LookUpHoldouts"}
    assert not optional & {s["Sid"] for s in json.loads((ROOT / "dist" / "policy.json").read_text())["Statement"]}
    make("policy", "FUNCTION=rotate-keys", "REGION=eu-west-1", "ACCOUNT_ID=111122223333", "EVENT_BUS=keys",
         "ACCOUNT_REPORT=true", "LOOKUP_HOLDOUTS=true")
    assert optional <= {s["Sid"] for s in json.loads((ROOT / "dist" / "policy.json").read_text())["Statement"]}


def test_without_a_development_venv_the_targets_use_a_cli_venv_of_their_own():
    outer = ("AWS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")  # what an outer make (make test) exports
    env = {k: v for k, v in os.environ.items() if k not in outer}
    done = subprocess.run(["make", "-s", "-n", "-p", "deploy", "FUNCTION=f", "VENV=no-such-venv"], cwd=ROOT,
                          capture_output=True, text=True, env={**env, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "\nTOOL_PYTHON := .venv-cli/bin/python\n" in done.stdout, "the tool runs with .venv-cli's python"
    assert ".venv-cli/bin/pip install" in done.stdout and ".venv-cli/bin/python tools/deploy_config.py deploy" in \
        done.stdout
    commands = done.stdout.split("# Make data base")[0]
    assert "grep '^awscli==' requirements-dev.txt" in commands and "grep '^boto3==' requirements-dev.txt" in commands
    assert "-r requirements-dev.txt" not in commands, "the CLI and boto3 alone, not the test stack"


def test_the_makefile_s_lists_are_the_names_the_tool_declares():
    # One declaration each, in the tool; the Makefile names them once (its one pattern rule, .PHONY, the values
    # it keeps from the function's settings), as the tool says them.
    database = make("-p", "-n", "help").stdout
    for name, declared in (("DEPLOY_TARGETS", deploy_config.TARGETS), ("DEPLOY_VALUES", deploy_config.VALUES)):
        (listed,) = re.findall(rf"^{name} := (.*)$", database, re.M)
        assert sorted(listed.split()) == sorted(declared), name
    named = subprocess.run([sys.executable, "tools/deploy_config.py", "--names", "targets"], cwd=ROOT, text=True,
                           capture_output=True, check=True).stdout
    assert named.split() == list(deploy_config.TARGETS)


def test_make_help_lists_every_target():
    out = make("help").stdout
    for target in ("demo", "test", "bench", "lint", "package", "policy", "create", "configure", "deploy", "schedule",
                   "invoke", "logs", "destroy", "rollback", "skip", "unskip", "status", "pause", "resume", "fuzz",
                   "local-aws", "alarms", "report", "release", "org-package", "org-deploy", "org-update", "org-status",
                   "org-remove", "org-report"):
        assert f"  {target} " in out, target


def aws_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["aws", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def deploy_stack(stack: str, *overrides: str) -> None:
    """`aws cloudformation deploy` of the template, its code uploaded (moto's CloudFormation skips
    AWS::CloudWatch::Alarm and AWS::Lambda::EventInvokeConfig, and warns; the rest is created: function, role,
    rule, permission, queue, log group)."""
    s3 = boto3.client("s3")
    if "artifacts" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket="artifacts")
        s3.put_object(Bucket="artifacts", Key="lambda.zip", Body=function_zip())
    aws_cli("cloudformation", "deploy", "--template-file", "template.yaml", "--stack-name", stack,
            "--capabilities", "CAPABILITY_IAM", "--parameter-overrides", "CodeBucket=artifacts",
            "CodeKey=lambda.zip", "SecretNames=iam-keys/*", *overrides)


def test_the_template_deploys_two_stacks_side_by_side(server):
    deploy_stack("keys-prod")
    deploy_stack("keys-test", "NotifyTopicArn=arn:aws:sns:us-east-1:123456789012:rotation")
    lam = boto3.client("lambda")
    assert sorted(f["FunctionName"] for f in lam.list_functions()["Functions"]) == ["keys-prod", "keys-test"]
    config = lam.get_function_configuration(FunctionName="keys-prod")
    assert config["Runtime"] == "python3.13" and config["Environment"]["Variables"]["REQUIRE_USER_TAG"] == "true"
    variables = lam.get_function_configuration(FunctionName="keys-test")["Environment"]["Variables"]
    assert variables["NOTIFY_TOPIC_ARN"] == "arn:aws:sns:us-east-1:123456789012:rotation"


def test_a_stack_deployed_without_dry_run_plans_only_and_dry_run_false_makes_it_rotate(server):
    deploy_stack("keys-prod")
    assert variables_of("keys-prod")["DRY_RUN"] == "true", "a first deployment plans only"
    deploy_stack("keys-prod", "DryRun=false")
    assert variables_of("keys-prod")["DRY_RUN"] == "false"


def test_a_stack_deploys_again_after_its_removal(server):
    deploy_stack("keys-prod")
    boto3.client("cloudformation").delete_stack(StackName="keys-prod")
    lam = boto3.client("lambda")
    assert lam.list_functions()["Functions"] == []
    deploy_stack("keys-prod")  # the log group went with the stack: nothing blocks the re-deploy
    assert [f["FunctionName"] for f in lam.list_functions()["Functions"]] == ["keys-prod"]


def test_pause_and_resume_work_for_a_stack(server):
    # The stack knows its (generated) rule.
    deploy_stack("keys-prod")
    make("pause", "FUNCTION=keys-prod", "STACK=keys-prod")
    events = boto3.client("events")
    (rule,) = [r for r in events.list_rules()["Rules"] if "keys-prod" in r["Name"] and r.get("ScheduleExpression")]
    assert rule["State"] == "DISABLED"
    make("resume", "FUNCTION=keys-prod", "STACK=keys-prod")
    assert events.describe_rule(Name=rule["Name"])["State"] == "ENABLED"


def test_every_list_of_settings_is_the_function_s_table():
    # One table (lambda_function.SETTINGS_TABLE): load_settings reads every row and nothing else; deploy_config
    # takes its names from it; the Makefile keeps no list of its own; the template and the README name only
    # settings of the table, and the settings table of docs/reference.md (the README links to it) names every one.
    import dataclasses
    import inspect
    import re

    from deploy_config import SETTINGS

    import lambda_function

    table = set(lambda_function.SETTINGS_TABLE)
    source = inspect.getsource(lambda_function.load_settings) + inspect.getsource(lambda_function.environment_settings)
    assert "for row in SETTINGS_TABLE.values()" in source  # every row, each as its row says (and into Settings)
    assert {f.name for f in dataclasses.fields(lambda_function.Settings)} >= {r.field for r in
                                                                              lambda_function.SETTINGS_TABLE.values()}
    assert "os.environ" not in source and 'environ.get("' not in source
    assert set(SETTINGS) == table
    makefile = (ROOT / "Makefile").read_text()
    assert not [name for name in table if f"{name}=$(" in makefile], "the Makefile keeps no list of settings"
    template = (ROOT / "template.yaml").read_text()
    variables = template.split("Variables:", 1)[1].split("\n\n", 1)[0].split("      Tags:")[0]
    assert set(re.findall(r"^\s+([A-Za-z_]+): ", variables, re.M)) <= table
    readme = (ROOT / "docs" / "reference.md").read_text()
    readme = readme[readme.index("## Settings"):readme.index("## Secret tags")]
    retries = readme.split("| `AWS_RETRY_MODE`")[1][:40]
    assert {name for name in table if f"| `{name}`" in readme or f"`{name}`" in retries} == table


def test_pause_and_resume_the_schedule_of_route_2a(server):
    seed_function("rotate-keys")
    seed_schedule("rotate-keys")
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
    summary["secrets"].append({**summary["secrets"][0], "secret": "iam-keys/b", "user": "b", "owner": "b@example.com"})
    rows = {line.split()[0]: line for line in render_report(summary).splitlines()}
    assert rows["a"].rstrip().endswith("MISSING") and rows["b"].rstrip().endswith("b@example.com")


def test_alarms_for_route_2a_are_the_templates_four_in_the_function_s_namespace(server):
    # The function's METRICS_NAMESPACE, read from its configuration, is where the custom metrics' alarms look.
    seed_function("rotate-keys", {"sec": "iam-keys/*", "METRICS_NAMESPACE": "Keys/Prod"})
    make("alarms", "FUNCTION=rotate-keys", "TOPIC=arn:aws:sns:us-east-1:123456789012:ops")
    alarms = {a["AlarmName"]: a for a in boto3.client("cloudwatch").describe_alarms()["MetricAlarms"]}
    assert set(alarms) == {f"rotate-keys-{n}" for n in ("errors", "no-success", "still-in-use", "overdue")}
    assert {a["MetricName"] for a in alarms.values()} == {"Errors", "Succeeded", "ForcedWhileInUse", "OverdueKeys"}
    assert {a["MetricName"]: a["Namespace"] for a in alarms.values()} == {
        "Errors": "AWS/Lambda", "Succeeded": "Keys/Prod", "ForcedWhileInUse": "Keys/Prod", "OverdueKeys": "Keys/Prod"}
    assert all(a["AlarmActions"] == ["arn:aws:sns:us-east-1:123456789012:ops"] for a in alarms.values())


def test_local_aws_prints_the_variables_to_export():
    server = subprocess.Popen([sys.executable, "tools/local_aws.py", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        printed = ""
        for line in server.stdout:
            printed += line
            if "Ctrl-C" in line:
                break
    finally:
        server.terminate()  # as Ctrl-C
        server.wait(timeout=30)
    assert "export AWS_ENDPOINT_URL=http://127.0.0.1:" in printed and "export AWS_REGION=us-east-1" in printed
    config = re.search(r"export AWS_CONFIG_FILE=(\S+)", printed)
    assert config and re.search(r"export OU=ou-\S+", printed), "its organisation, and a profile for each account"
    assert not Path(config[1]).exists(), "stopped, it leaves no profiles behind"


# --- issue 40: one line for every expected refusal, a stack's function left to its stack, the version -------------

# make's own "make: *** [...] Error N" line ("make[1]: ***" under an outer make, as in make test)
MAKE_ERROR = re.compile(r"make(\[\d+\])?: \*\*\* ")


def said(done: subprocess.CompletedProcess) -> list[str]:
    """What the tool said on stderr: make's own error line left out."""
    return [line for line in done.stderr.splitlines() if not MAKE_ERROR.match(line)]


FUNCTION_TARGETS = [("configure", "GRACE_HOURS=48"), ("deploy",), ("schedule",), ("exposed-rule",), ("invoke",),
                    ("report",), ("alarms",), ("pause",), ("resume",), ("logs",), ("destroy",), ("status",),
                    ("rollback", "SECRET=iam-keys/a")]


@pytest.mark.parametrize("target", FUNCTION_TARGETS, ids=lambda target: target[0])
def test_each_target_naming_a_function_that_does_not_exist_says_so_in_one_line_and_fails(server, target):
    done = make(target[0], "FUNCTION=typo", *target[1:], ok=False)
    assert done.returncode != 0
    assert said(done) == ["no function typo in us-east-1: make create FUNCTION=typo makes one (is FUNCTION=, "
                          "REGION= or the profile right?)"], done.stderr
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize("target, values, says", [
    ("skip", ["SECRET=iam-keys/typo"], "no secret iam-keys/typo in us-east-1"),
    ("unskip", ["SECRET=iam-keys/typo"], "no secret iam-keys/typo in us-east-1"),
    ("status", ["FUNCTION=f", "AWS=aws --profile typo"], "no AWS CLI profile 'typo'"),
    ("org-status", ["STACK_SET=typo"], "no stack set typo in us-east-1 (CALL_AS=SELF): make org-deploy creates it"),
    ("org-report", [], "no log group /aws/events/key-rotation in us-east-1: it is in the central account"),
])
def test_a_secret_profile_stack_set_or_log_group_that_does_not_exist_is_said_in_one_line(server, target, values,
                                                                                           says):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    given = [v for v in values if not v.startswith("AWS=")]
    aws = next((v for v in values if v.startswith("AWS=")), f"AWS={AWS_CLI}")
    done = subprocess.run(["make", "-s", target, *given, aws], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    (line,) = said(done)
    assert done.returncode != 0 and line.startswith(says), done.stderr


def test_make_invoke_sends_the_event_once_even_when_aws_answers_with_a_retryable_error(tmp_path):
    # A retried Invoke would run the event again (a force, a rollback, a leak): the tool sends it once, and waits
    # for the whole run rather than botocore's 60 s. AWS here answers every request 500, which botocore retries.
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    requests: list[str] = []

    class Failing(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            requests.append(self.path)
            self.send_response(500)
            self.end_headers()

        do_GET = do_POST

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    try:
        done = subprocess.run(["make", "-s", "invoke", "FUNCTION=f", "REGION=us-east-1"], cwd=ROOT,
                              env={**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_port}",
                                   "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                                   "AWS_MAX_ATTEMPTS": "5", "AWS_RETRY_MODE": "standard"},
                              capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert [r for r in requests if r.endswith("/invocations")] == ["/2015-03-31/functions/f/invocations"]


@pytest.mark.parametrize("aws", ["aws-vault exec prod -- aws", "aws --no-verify-ssl",
                                 "aws --profile dev --ca-bundle x"])
def test_an_aws_variable_with_more_than_where_the_calls_go_is_refused_not_dropped(aws):
    # The tool calls AWS itself and reads --profile, --region and --endpoint-url from AWS; anything else dropped
    # would send the calls as whoever the environment is (a wrapper's account never asked), so it is refused.
    done = subprocess.run(["make", "-s", "status", "FUNCTION=f", f"AWS={aws}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert said(done)[0].startswith(f"AWS='{aws}': the deploy targets call AWS themselves"), done.stderr


def test_pause_naming_a_stack_that_does_not_exist_says_so(server):
    seed_function("rotate-keys")
    done = make("pause", "FUNCTION=rotate-keys", "STACK=typo", ok=False)
    assert done.returncode != 0 and said(done) == [
        "no stack typo in us-east-1 (aws cloudformation list-stacks lists them; is STACK= or REGION= right?)"]


def test_create_on_an_existing_function_points_to_configure_and_deploy(server):
    seed_function("rotate-keys")
    done = make("create", "FUNCTION=rotate-keys", f"ROLE={role_arn()}", "SEC=iam-keys/*", ok=False)
    assert done.returncode != 0 and said(done) == [
        "function rotate-keys exists already in us-east-1: make configure FUNCTION=rotate-keys NAME=value changes "
        "its settings, make deploy FUNCTION=rotate-keys its code"]


def test_create_and_deploy_tag_the_function_with_its_release_and_status_shows_it(server):
    version = (ROOT / "VERSION").read_text().strip()
    make("create", "FUNCTION=rotate-keys", f"ROLE={role_arn()}", "SEC=iam-keys/*")
    lam = boto3.client("lambda")
    arn = lam.get_function(FunctionName="rotate-keys")["Configuration"]["FunctionArn"]
    assert lam.list_tags(Resource=arn)["Tags"] == {"key-rotation-version": version}
    lam.untag_resource(Resource=arn, TagKeys=["key-rotation-version"])
    deployed = make("deploy", "FUNCTION=rotate-keys")
    assert lam.list_tags(Resource=arn)["Tags"] == {"key-rotation-version": version}
    assert deployed.stdout.rstrip().endswith(f"version {version}")
    status = make("status", "FUNCTION=rotate-keys").stdout
    assert status.startswith(f"function rotate-keys: version {version}, last changed "), status


def test_destroy_refuses_a_stack_s_function_naming_the_stack_and_the_command_that_removes_it(server):
    deploy_stack("keys-prod")
    done = make("destroy", "FUNCTION=keys-prod", ok=False)
    assert done.returncode == 2 and said(done) == [
        "keys-prod was made by the CloudFormation stack keys-prod: remove the stack, and with it the function, its "
        "role, rules, alarms and log group: make destroy FUNCTION=keys-prod STACK=keys-prod, or aws cloudformation "
        "delete-stack --stack-name keys-prod"]
    assert [f["FunctionName"] for f in boto3.client("lambda").list_functions()["Functions"]] == ["keys-prod"]
    assert len(boto3.client("events").list_rules(NamePrefix="keys-prod")["Rules"]) == 2, "the stack's rules stay"
    wrong = make("destroy", "FUNCTION=keys-prod", "STACK=other", ok=False)
    assert wrong.returncode == 2 and "(not STACK=other)" in said(wrong)[0]


def test_destroy_with_the_stack_s_name_deletes_the_stack(server):
    deploy_stack("keys-prod")
    done = make("destroy", "FUNCTION=keys-prod", "STACK=keys-prod")
    assert "removed the stack keys-prod" in done.stdout
    assert boto3.client("lambda").list_functions()["Functions"] == []
    assert boto3.client("events").list_rules(NamePrefix="keys-prod")["Rules"] == []


def test_destroy_names_every_policy_of_route_2a_s_role(server):
    iam = boto3.client("iam")
    role = role_arn("rotation-role")
    for name in ("key-rotation", "extra"):
        iam.put_role_policy(RoleName="rotation-role", PolicyName=name, PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}]}))
    seed_function("rotate-keys", role=role)
    out = make("destroy", "FUNCTION=rotate-keys").stdout
    assert ("aws iam delete-role-policy --role-name rotation-role --policy-name key-rotation; aws iam "
            "delete-role-policy --role-name rotation-role --policy-name extra; aws iam delete-role --role-name "
            "rotation-role") in out, out


def test_schedule_on_a_stack_s_function_names_the_stack_s_rule_and_adds_none(server):
    deploy_stack("keys-prod")
    events = boto3.client("events")
    before = events.list_rules(NamePrefix="keys-prod")["Rules"]
    for target in ("schedule", "exposed-rule"):
        out = make(target, "FUNCTION=keys-prod").stdout
        assert out.startswith("keys-prod was made by the CloudFormation stack keys-prod: its rule keys-prod-"), out
        assert "so no second rule is added" in out
    assert events.list_rules(NamePrefix="keys-prod")["Rules"] == before


def test_pause_and_resume_find_a_stack_s_rule_from_the_function_s_tag(server):
    deploy_stack("keys-prod")
    events = boto3.client("events")
    (rule,) = [r for r in events.list_rules(NamePrefix="keys-prod")["Rules"] if r.get("ScheduleExpression")]
    out = make("pause", "FUNCTION=keys-prod").stdout
    assert out == f"paused {rule['Name']} (the stack keys-prod's ScheduleRule)\n"
    assert events.describe_rule(Name=rule["Name"])["State"] == "DISABLED"
    make("resume", "FUNCTION=keys-prod")
    assert events.describe_rule(Name=rule["Name"])["State"] == "ENABLED"
    wrong = make("pause", "FUNCTION=keys-prod", "STACK=other", ok=False)
    assert wrong.returncode == 2 and said(wrong) == ["keys-prod was made by the stack keys-prod, not STACK=other"]


def test_a_second_rule_make_schedule_added_beside_a_stack_s_is_paused_with_it_and_named(server):
    deploy_stack("keys-prod")
    seed_schedule("keys-prod")  # what make schedule did before it read the stack's tag
    events = boto3.client("events")
    out = make("pause", "FUNCTION=keys-prod").stdout
    assert "paused keys-prod-schedule (a second rule beside the stack's" in out and "delete-rule" in out
    assert {r["State"] for r in events.list_rules(NamePrefix="keys-prod")["Rules"] if r.get("ScheduleExpression")} \
        == {"DISABLED"}


def rotated_function(function: str):
    """A user and its secret (seed), and the function deployed for it, in the local AWS. Each test names its own
    function: its answer file, dist/invoke-FUNCTION.json, is shared by the tests that run at once."""
    from seed import seed_user

    user = seed_user(boto3.client("iam"), boto3.client("secretsmanager"), "alice", ("Active",), 0)
    seed_function(function, {"sec": user.secret, "GRACE_HOURS": "24"})
    return user


def test_invoke_prints_a_row_a_secret_and_keeps_the_whole_answer_in_the_file_it_names(server):
    user = rotated_function("plan-keys")
    done = make("invoke", "FUNCTION=plan-keys")
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["secret", "status", "keys", "next", "rotation", "reason", "(or", "steps)"]
    assert re.fullmatch(rf"{user.secret}\s+planned\s+{user.key_ids[0]}\s+\d{{4}}-\d\d-\d\d\s+\S.*", lines[1]), lines
    assert lines[2].startswith("dry run, nothing changed: 1 planned")
    assert lines[3] == "the whole answer: dist/invoke-plan-keys.json (OUTPUT=json prints it)"
    answer = json.loads((ROOT / "dist" / "invoke-plan-keys.json").read_text())
    assert answer["planned"] == 1 and answer["secrets"][0]["secret"] == user.secret
    printed = make("invoke", "FUNCTION=plan-keys", "OUTPUT=json").stdout
    assert json.loads(printed)["secrets"][0]["status"] == "planned"


def test_a_dry_run_in_which_a_secret_is_refused_exits_non_zero(server):
    user = rotated_function("refused-keys")
    boto3.client("iam").untag_user(UserName="alice", TagKeys=["key-rotation-secret"])  # the user no longer names it
    done = make("invoke", "FUNCTION=refused-keys", ok=False)
    assert done.returncode != 0, done.stdout + done.stderr
    assert re.search(rf"^{user.secret}\s+failed\s+\S+\s+-\s+refused: IAM user 'alice' has no tag", done.stdout, re.M)
    assert said(done) == ["1 secrets failed of the plan (a dry run): each one's reason is in its row, whole in "
                          "dist/invoke-refused-keys.json"]


def test_rollback_with_no_previous_key_says_nothing_to_roll_back_and_exits_2(server):
    # The first rotation made the user's first key: AWSPREVIOUS holds no key. Planned first, so no invocation
    # fails (the Errors alarm stays quiet) and nothing changes.
    from seed import seed_user

    iam, secrets, lam = boto3.client("iam"), boto3.client("secretsmanager"), boto3.client("lambda")
    user = seed_user(iam, secrets, "bob", (), None)
    seed_function("undo-keys", {"sec": user.secret})
    assert json.loads(lam.invoke(FunctionName="undo-keys", Payload=b"{}")["Payload"].read())["rotated"] == 1
    keys = iam.list_access_keys(UserName="bob")["AccessKeyMetadata"]
    done = make("rollback", "FUNCTION=undo-keys", f"SECRET={user.secret}", ok=False)
    assert done.returncode == 2 and said(done) == [
        "nothing to roll back: the secret has no previous key (a rollback undoes a rotation that replaced a key); "
        "nothing changed"], done.stderr
    assert "Traceback" not in done.stdout + done.stderr and done.stdout == ""
    assert iam.list_access_keys(UserName="bob")["AccessKeyMetadata"] == keys


def test_logs_prints_one_log_line_per_line(server):
    rotated_function("logged-keys")
    make("invoke", "FUNCTION=logged-keys")
    out = make("logs", "FUNCTION=logged-keys").stdout.splitlines()
    assert out[0].startswith("START RequestId: ") and out[-1].startswith("REPORT RequestId: ")
    assert sum(line.startswith("START RequestId") for line in out) == 1
    assert any(line.startswith("[INFO]\t") and line.endswith("}") for line in out)


def test_logs_of_a_function_that_never_ran_says_so(server):
    seed_function("rotate-keys")
    out = make("logs", "FUNCTION=rotate-keys").stdout
    assert out.startswith("no log lines yet: Lambda makes /aws/lambda/rotate-keys at the function's first run")
