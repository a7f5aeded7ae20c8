"""Every command block (```sh) of README.md and docs/*.md, run as written (bash, the real AWS CLI) against a local AWS.

The blocks are taken from the documents themselves, so a step that stops working fails here, and a block no test
runs fails `test_every_command_block_is_run_by_a_test`. The README's deploy steps are walked in order, as a newcomer
takes them, against `make local-aws` (the README's own "Try it" block), which runs the function's invocations
in-process: the dry run, the first rotation, the report and day two included; so are the Organisations blocks, against
the organisation `make local-aws` holds. The other blocks run against the moto server fixture `server`
(tools/local_aws.py, the same in-process runner)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from conftest import read_exports
from seed import ROWS

ROOT = Path(__file__).parent.parent
DOCUMENTS = ("README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")))
FENCE = re.compile(r"^```(\S*)\s*$")
RUNNERS = (Path(__file__), Path(__file__).with_name("test_docs.py"))  # the files whose sh(...) calls count


def command_blocks(document: str) -> dict[str, list[str]]:
    """Each heading of the document (the line, as written) and the ```sh blocks of its section, in order."""
    blocks: dict[str, list[str]] = {}
    heading, language, lines = "", None, []
    for line in (ROOT / document).read_text().splitlines():
        fence = FENCE.match(line)
        if language is None and fence:
            language, lines = fence.group(1), []
        elif language is not None and line.strip() == "```":
            if language == "sh":
                blocks.setdefault(heading, []).append("\n".join(lines) + "\n")
            language = None
        elif language is not None:
            lines.append(line)
        elif line.startswith("#"):
            heading = line
    return blocks


def sh(document: str, heading: str, nth: int = 0) -> str:
    """The nth ```sh block of the section under this heading (the heading line as written)."""
    return command_blocks(document)[heading][nth]


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a user's shell has: the dev CLI as `aws`, no pytest or xdist variables, and none of an outer
    make's (under `make test X=...`, its MAKEFLAGS would hand X=... to every make the blocks run, PYTEST_ADDOPTS
    included: the opening block's make test would then run this test again, and so on)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTEST_") and k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(extra or {})
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return env


def run(script: str, env: dict[str, str] | None = None, timeout: int = 300) -> str:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_every_command_block_is_run_by_a_test():
    # Each block is found by (document, heading, n); each must be named by a sh(...) call in a test file.
    called = set()
    for runner in RUNNERS:
        if runner.exists():
            for document, heading, nth in re.findall(r'\bsh\(\s*"([^"]+)",\s*"([^"]+)"(?:,\s*(\d+))?\)',
                                                     runner.read_text()):
                called.add((document, heading, int(nth or 0)))
    found = {(document, heading, n) for document in DOCUMENTS
             for heading, blocks in command_blocks(document).items() for n in range(len(blocks))}
    assert found, "the documents hold command blocks"
    assert found - called == set(), "blocks no test runs"
    assert called - found == set(), "tests naming blocks that are not there"


def test_the_opening_commands_work_on_this_clone_and_the_demo_rotates_every_row():
    # `make demo` as written, in a shell with no AWS configuration at all (the demo brings its own local AWS);
    # `make test` as written, told (PYTEST_ADDOPTS) to run one test, not the whole suite it is part of, on one
    # worker (PYTEST_XDIST_AUTO_NUM_WORKERS: what -n auto means).
    one_test = "-p no:cacheprovider tests/test_plan.py::test_readme_table_matches_code_table"
    env = {k: v for k, v in cli_env({"PYTEST_ADDOPTS": one_test, "PYTEST_XDIST_AUTO_NUM_WORKERS": "1"}).items()
           if not k.startswith("AWS_") and k != "sec"}
    out = run(sh("README.md", "# IAM access key rotation"), env)
    assert "rolled_back" in out and "skip-tagged" in out, out  # the demo's last part
    assert re.search(r"\b1 passed\b", out), out

    # What the demo printed (up to make test's pytest), make's own lines (its recipes, a sub-make's directory) left
    # out.
    printed = re.split(r"^=+ test session starts =+$", out, maxsplit=1, flags=re.M)[0]
    demo = "".join(line for line in printed.splitlines(keepends=True)
                   if not re.match(r"\.venv/bin/python |make(\[\d+\])?: ", line))
    assert f"rotated {len(ROWS)}, skipped 0, failed 0" in demo
    assert "two-active (2 active)" in demo
    for label in ("1. Dry run", "2. Rotation", "3. What the Lambda console shows", "4. Refused", "5. Day to day"):
        assert label in demo
    for status in ("rotated", "waiting", "retired", "rolled_back", "skipped"):
        assert f" {status} " in demo.split("5. Day to day")[1], status
    assert "refused: IAM user 'admin' has no tag 'key-rotation-secret'" in demo
    assert '"_aws"' not in demo and '"action"' not in demo, "quiet: no metrics or log lines"
    assert len(demo.splitlines()) < 60, "a first-time user reads it without scrolling"


@pytest.fixture
def local_aws():
    """The README's "Try it" block: `make local-aws` in one shell; returns the variables it prints to export."""
    server = subprocess.Popen(["bash", "-c", sh("README.md", "## Try it")], cwd=ROOT, env=cli_env({"PORT": "0"}),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        exports = read_exports(server.stdout)
        assert "AWS_ENDPOINT_URL" in exports, "make local-aws prints the variables to export"
        yield exports
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


class LocalAccount:
    """make local-aws's own account (the credentials it exports), and ci-deployer's keys and secret there."""

    def __init__(self, exports: dict[str, str]) -> None:
        self.exports = exports
        self.iam, self.secrets = self.client("iam"), self.client("secretsmanager")

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.exports["AWS_ENDPOINT_URL"],
                            region_name=self.exports["AWS_REGION"], aws_access_key_id="testing",
                            aws_secret_access_key="testing")

    def keys(self) -> dict[str, str]:
        listed = self.iam.list_access_keys(UserName="ci-deployer")["AccessKeyMetadata"]
        return {k["AccessKeyId"]: k["Status"] for k in listed}

    def held(self) -> str | None:
        value = self.secrets.get_secret_value(SecretId="iam-keys/ci-deployer")["SecretString"]
        return json.loads(value).get("AccessKeyId")


def walk_steps_1_and_2a(env: dict[str, str], account: LocalAccount, lam) -> None:
    """The README's steps 1 (run twice, as a re-run would) and 2a, as written, and what each leaves behind."""
    iam, secrets = account.iam, account.secrets
    # 1. On a fresh account the user does not exist: the block makes it (at /, as IAM does by default), moves it
    # under /key-rotation/ as it would an existing user, and tags it naming the secret.
    step_1 = sh("README.md", "### 1. A secret per user, and the user's tag naming it back")
    run(step_1, env)
    arn = secrets.describe_secret(SecretId="iam-keys/ci-deployer")["ARN"]
    assert iam.get_user(UserName="ci-deployer")["User"]["Path"] == "/key-rotation/"
    assert iam.list_user_tags(UserName="ci-deployer")["Tags"] == [{"Key": "key-rotation-secret", "Value": arn}]
    # Step 1 run twice (the tag broken since): it reads the existing secret and tags the user with its ARN again.
    iam.tag_user(UserName="ci-deployer", Tags=[{"Key": "key-rotation-secret", "Value": ""}])
    run(step_1, env)
    (secret,) = secrets.list_secrets()["SecretList"]
    assert iam.list_user_tags(UserName="ci-deployer")["Tags"] == [
        {"Key": "key-rotation-secret", "Value": secret["ARN"]}], "the existing secret's ARN, read back"

    # 2a. The role with the function's policy (for this account and region), then the function.
    run(sh("README.md", "### 2a. With the AWS CLI"), env)
    policy = iam.get_role_policy(RoleName="iam-key-rotation", PolicyName="key-rotation")["PolicyDocument"]
    text = json.dumps(policy)
    assert "ACCOUNT_ID" not in text and ":us-east-1:123456789012:" in text and "MarkRotatedUsers" in text
    run(sh("README.md", "### 2a. With the AWS CLI", 1), env)
    config = lam.get_function_configuration(FunctionName="iam-key-rotation")
    assert config["Environment"]["Variables"] == {"sec": "iam-keys/*", "ROTATE_AFTER_DAYS": "80", "GRACE_HOURS": "24"}
    assert config["Runtime"] == "python3.13"
    assert config["Role"] == iam.get_role(RoleName="iam-key-rotation")["Role"]["Arn"]


def walk_day_two(env: dict[str, str], account: LocalAccount, lam, first: str) -> None:
    """Day two, in the README's order, after step 4: the rollback (refused, then after a rotation that replaced the
    key, done), then status, skip and pause."""
    keys, held, events = account.keys, account.held, account.client("events")

    # The rollback, taken in README order: the first rotation made the user's first key, so there is
    # nothing to roll back: one line, exit 2, nothing changed.
    refused = subprocess.run(["bash", "-c", sh("README.md", "## Day two")], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    said = [line for line in refused.stderr.splitlines()  # make's own error line ("make[1]:" under make test)
            if not re.match(r"make(\[\d+\])?: \*\*\* ", line)]
    assert said == ["nothing to roll back: the secret has no previous key (a rollback undoes a rotation that "
                    "replaced a key); nothing changed"], refused.stderr
    assert held() == first and keys() == {first: "Active"}

    # A later run rotates (force: the key is young); the old key stays Active through the grace period. Now the
    # rollback applies.
    answer = json.loads(lam.invoke(FunctionName="iam-key-rotation",
                                   Payload=(ROOT / "events" / "force.json").read_bytes())["Payload"].read())
    assert answer["rotated"] == 1, answer
    second = held()
    assert keys() == {first: "Active", second: "Active"}
    out = run(sh("README.md", "## Day two"), env)
    assert re.search(rf"^iam-keys/ci-deployer\s+rolled_back\s+{second} -> {first}\s", out, re.M), out
    assert held() == first and keys() == {first: "Active", second: "Inactive"}

    # Day two: status, skip, pause.
    out = run(sh("README.md", "## Day two", 1), env)
    assert "function iam-key-rotation: version 1.0.0, last changed " in out, out
    assert re.search(r"last run \S+: 1 rolled_back\b", out), out
    assert "alarms: none named iam-key-rotation-" in out, out
    tags = account.secrets.describe_secret(SecretId="iam-keys/ci-deployer")["Tags"]
    assert {"Key": "key-rotation:mode", "Value": "skip"} in tags
    assert events.describe_rule(Name="iam-key-rotation-schedule")["State"] == "DISABLED"


def test_a_newcomer_walks_the_readme_against_make_local_aws_running_step_1_twice(local_aws):
    # Steps 1 (twice), 2a, 3 and 4, then day two, in the README's order, in a second shell holding the exports.
    env = cli_env({**local_aws, "AWS_PROFILE": ""})
    env.pop("AWS_PROFILE")
    account = LocalAccount(local_aws)
    lam, events = account.client("lambda"), account.client("events")
    keys, held = account.keys, account.held

    walk_steps_1_and_2a(env, account, lam)

    # 3. The dry run changes nothing: a row a secret, and its log lines one a line. Then the first rotation, and
    # the report.
    out = run(sh("README.md", "### 3. A dry run first"), env)
    assert re.search(r"^iam-keys/ci-deployer\s+planned\s+-\s+\S+\s+create new; store new$", out, re.M), out
    assert "dry run, nothing changed: 1 planned" in out and "dist/invoke-iam-key-rotation.json" in out, out
    logged = [line for line in out.splitlines() if "\t" in line or line.startswith(("START", "END", "REPORT"))]
    assert any(line.endswith('"action": "run_complete", "dry_run": true, "rotated": 0, "retired": 0, '
                             '"waiting": 0, "rolled_back": 0, "skipped": 0, "planned": 1, "failed": 0, '
                             '"forced_in_use": 0, "overdue_keys": 0, "stopped_early": 0, '
                             '"unmanaged_overdue_keys": 0, "oldest_key_age_days": 0}') for line in logged), out
    assert sum(line.startswith("START RequestId") for line in logged) == 1, "one log line a line, never joined"
    assert keys() == {} and held() is None
    out = run(sh("README.md", "### 3. A dry run first", 1), env)
    (first,) = keys()
    assert held() == first and keys() == {first: "Active"}
    assert re.search(r"^ci-deployer\s+0\.0\s+yes \(iam-keys/ci-deployer\)", out, re.M), out

    # 4. The daily rule.
    run(sh("README.md", "### 4. Schedule it"), env)
    (rule,) = events.list_rules(NamePrefix="iam-key-rotation")["Rules"]
    assert (rule["Name"], rule["ScheduleExpression"]) == ("iam-key-rotation-schedule", "cron(0 6 * * ? *)")

    walk_day_two(env, account, lam, first)


def test_step_1_never_tags_a_user_with_an_empty_or_malformed_arn(tmp_path):
    # A CLI that cannot describe the secret and answers its creation with no ARN (a refused call, a typo'd
    # region): the block fails, saying why, and never calls tag-user.
    calls = tmp_path / "calls"
    for answer in ("", "None", "arn:aws:secretsmanager:us-east-1:123456789012:secret:iam-keys/other-AbCdEf"):
        fake = tmp_path / "aws"
        fake.write_text(f"""#!/bin/sh
echo "$*" >> {calls}
case "$1 $2" in
  "secretsmanager describe-secret") exit 254;;
  "secretsmanager create-secret") echo '{answer}';;
esac
""")
        fake.chmod(0o755)
        env = cli_env({"PATH": f"{tmp_path}:{os.environ['PATH']}"})
        env["PATH"] = f"{tmp_path}:{env['PATH']}"
        done = subprocess.run(["bash", "-euo", "pipefail", "-c",
                               sh("README.md", "### 1. A secret per user, and the user's tag naming it back")],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and f"not tagged: '{answer}' is not the secret's ARN" in done.stderr, done.stderr
        assert "tag-user" not in calls.read_text()


class LocalOrganisation:
    """make local-aws's organisation, seen as its management account, and each account through the role
    Organizations makes in it (as its CLI profiles reach them)."""

    def __init__(self, exports: dict[str, str]) -> None:
        self.endpoint, self.region = exports["AWS_ENDPOINT_URL"], exports["AWS_REGION"]
        self.management = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                        region_name=self.region)
        listed = self.management.client("organizations", endpoint_url=self.endpoint).list_accounts()["Accounts"]
        self.accounts = {a["Name"]: a["Id"] for a in listed}
        assert self.accounts["security"] == exports["SECURITY_ACCOUNT"]

    def client(self, name: str, service: str, region: str | None = None):
        credentials = self.management.client("sts", endpoint_url=self.endpoint).assume_role(
            RoleArn=f"arn:aws:iam::{self.accounts[name]}:role/OrganizationAccountAccessRole",
            RoleSessionName="test")["Credentials"]
        return boto3.client(service, endpoint_url=self.endpoint, region_name=region or self.region,
                            aws_access_key_id=credentials["AccessKeyId"],
                            aws_secret_access_key=credentials["SecretAccessKey"],
                            aws_session_token=credentials["SessionToken"])

    def dry_run(self, name: str, region: str) -> str:
        """The function's DRY_RUN in that account and region."""
        function = self.client(name, "lambda", region).get_function_configuration(FunctionName="iam-key-rotation")
        variables = function["Environment"]["Variables"]
        # the function's own bus, which only its role may put on (the rule forwards from there to the central bus)
        assert variables["EVENT_BUS"] == "iam-key-rotation-events"
        assert variables["CENTRAL_ACCOUNT_ID"] == self.accounts["security"]
        return str(variables["DRY_RUN"])


def test_a_newcomer_deploys_to_every_account_of_an_organisation_against_make_local_aws(local_aws):
    # make local-aws's organisation: this (management) account, OU workloads of dev and prod, security outside it;
    # moto's EventBridge, StackSets and change sets behave as AWS's there (local_aws.organisation_stand_ins). No
    # schedule fires: the README's own "now" block is the only run. dev has a user and its secret (step 1, there).
    env = cli_env(local_aws)
    env.pop("AWS_PROFILE", None)
    org = LocalOrganisation(local_aws)
    iam, secrets = org.client("dev", "iam"), org.client("dev", "secretsmanager")
    iam.create_user(UserName="ci-deployer", Path="/key-rotation/")
    arn = secrets.create_secret(Name="iam-keys/ci-deployer", SecretString='{"UserName": "ci-deployer"}')["ARN"]
    iam.tag_user(UserName="ci-deployer", Tags=[{"Key": "key-rotation-secret", "Value": arn}])

    # The section's blocks in order, in one shell: the central stack, the code and the stack set (dry runs), a run
    # now and the table, then the update that makes every function rotate for real.
    blocks = [sh("README.md", "## Organisations"), sh("README.md", "## Organisations", 1),
              sh("README.md", "## Organisations", 2), sh("README.md", "## Organisations", 3)]
    out = run("".join(blocks), env)
    (central,) = org.client("security", "cloudformation").describe_stacks(StackName="key-rotation-central")["Stacks"]
    assert {o["OutputKey"]: o["OutputValue"] for o in central["Outputs"]}["BusArn"].startswith(
        f"arn:aws:events:{org.region}:{org.accounts['security']}:event-bus/")
    assert org.client("security", "cloudwatch").get_dashboard(DashboardName="key-rotation-organisation")
    assert re.search(rf"^stage 1, account {org.accounts['dev']}: SUCCEEDED$", out, re.M), out
    for member in ("dev", "prod"):
        assert len(re.findall(rf"^{org.accounts[member]}\s+\S+\s+CURRENT\s", out, re.M)) == 2, out  # org-status
        assert [org.dry_run(member, where) for where in ("eu-west-1", "us-east-1")] == ["false", "false"]
    assert org.client("security", "lambda").list_functions()["Functions"] == [], "outside the OU"
    assert iam.list_access_keys(UserName="ci-deployer")["AccessKeyMetadata"] == [], "the run was a dry run"
    table = [line.split() for line in out.splitlines()]
    row = [org.accounts["dev"], org.region, "iam-keys/ci-deployer", "ci-deployer", "-"]
    assert [*row, "planned", "(dry", "run)"] in [r[:5] + r[6:9] for r in table], out  # no key yet: no age
    missing = sorted(r[:2] for r in table if r[6:7] == ["MISSING"])
    assert missing == sorted([[org.accounts["dev"], "eu-west-1"], [org.accounts["prod"], "eu-west-1"],
                              [org.accounts["prod"], org.region]]), out
    assert "4 accounts and regions, 1 secrets, 0 overdue, 0 stale, 3 missing" in out, out
    assert "DryRun=true" in blocks[1] and "DryRun=false" in blocks[3], "deployed dry, then made to rotate"


def test_route_2b_after_route_2a_removes_what_2a_left_then_deploys_the_stack_dry_first(server):
    # What route 2a leaves (made with boto3: the 2a blocks have their own test): function, rule, log group.
    from test_deploy import seed_function, seed_schedule

    seed_function("iam-key-rotation")
    seed_schedule("iam-key-rotation")
    logs, lam = boto3.client("logs"), boto3.client("lambda")
    logs.create_log_group(logGroupName="/aws/lambda/iam-key-rotation")  # the function's first run makes it
    out = run(sh("README.md", "### 2b. Or with CloudFormation"))
    assert "left in place:" in out and "the role" in out
    assert logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/iam-key-rotation")["logGroups"] == []
    assert lam.list_functions()["Functions"] == []
    # A user to plan for, as step 1 leaves it (made with boto3: the step 1 block has its own tests).
    iam = boto3.client("iam")
    iam.create_user(UserName="ci-deployer", Path="/key-rotation/")
    arn = boto3.client("secretsmanager").create_secret(Name="iam-keys/ci-deployer",
                                                       SecretString='{"UserName": "ci-deployer"}')["ARN"]
    iam.tag_user(UserName="ci-deployer", Tags=[{"Key": "key-rotation-secret", "Value": arn}])
    # moto's CloudFormation skips the alarms and the invoke config it does not model; the rest is created.
    run(sh("README.md", "### 2b. Or with CloudFormation", 1))
    (function,) = lam.list_functions()["Functions"]
    assert function["FunctionName"] == "iam-key-rotation"
    assert function["Environment"]["Variables"]["DRY_RUN"] == "true", "a first deployment plans only"
    # The plan, read; nothing changes. Then the stack again, DryRun=false, every other parameter kept.
    out = run(sh("README.md", "### 2b. Or with CloudFormation", 2))
    assert re.search(r"^iam-keys/ci-deployer\s+planned\b", out, re.M), out
    assert iam.list_access_keys(UserName="ci-deployer")["AccessKeyMetadata"] == []
    run(sh("README.md", "### 2b. Or with CloudFormation", 3))
    variables = lam.get_function_configuration(FunctionName="iam-key-rotation")["Environment"]["Variables"]
    assert variables["DRY_RUN"] == "false" and variables["sec"] == "iam-keys/*"

    # A version, upgraded to (or rolled back to) as docs/operate.md says: its zip under its own key, its template.
    version = (ROOT / "VERSION").read_text().strip()
    run(sh("docs/operate.md", "## Upgrade or roll back a version"))
    (stack,) = boto3.client("cloudformation").describe_stacks(StackName="iam-key-rotation")["Stacks"]
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert parameters["CodeKey"] == f"iam-key-rotation-{version}.zip" and parameters["DryRun"] == "false"
    tags = lam.get_function(FunctionName="iam-key-rotation")["Tags"]
    assert tags["key-rotation-version"] == version and tags["aws:cloudformation:stack-name"] == "iam-key-rotation"


def test_the_releases_block_builds_the_release_and_checks_it_as_a_download_is_checked():
    version = (ROOT / "VERSION").read_text().strip()
    out = run(sh("README.md", "## Releases"))
    assert f"iam-key-rotation-{version}.zip: OK\ntemplate-{version}.yaml: OK" in out, out


def test_the_alarms_block_makes_the_four_alarms(server):
    from test_deploy import seed_function

    seed_function("iam-key-rotation")
    run(sh("docs/operate.md", "## Alarms"))
    alarms = {a["AlarmName"]: a for a in boto3.client("cloudwatch").describe_alarms()["MetricAlarms"]}
    assert set(alarms) == {f"iam-key-rotation-{n}" for n in ("errors", "no-success", "still-in-use", "overdue")}
    still = alarms["iam-key-rotation-still-in-use"]
    assert (still["Namespace"], still["MetricName"]) == ("IAMKeyRotation", "ForcedWhileInUse")
    assert all(a["AlarmActions"] == ["arn:aws:sns:us-east-1:123456789012:ops"] for a in alarms.values())


def test_the_rotation_mode_block_runs_secrets_managers_four_steps_through_the_function(server):
    from test_deploy import seed_function

    from seed import seed_user

    iam, secrets = boto3.client("iam"), boto3.client("secretsmanager")
    user = seed_user(iam, secrets, "ci-deployer", ("Active",), 0, secret="iam-keys/ci-deployer")
    seed_function("iam-key-rotation")
    run(sh("docs/operate.md", "## Secrets Manager rotation mode"))
    described = secrets.describe_secret(SecretId="iam-keys/ci-deployer")
    assert described["RotationEnabled"] and described["RotationLambdaARN"].endswith(":function:iam-key-rotation")
    new = json.loads(secrets.get_secret_value(SecretId="iam-keys/ci-deployer")["SecretString"])["AccessKeyId"]
    listed = iam.list_access_keys(UserName="ci-deployer")["AccessKeyMetadata"]
    statuses = {k["AccessKeyId"]: k["Status"] for k in listed}
    assert statuses == {user.key_ids[0]: "Inactive", new: "Active"}
    (grant,) = json.loads(boto3.client("lambda").get_policy(FunctionName="iam-key-rotation")["Policy"])["Statement"]
    assert grant["Principal"] == {"Service": "secretsmanager.amazonaws.com"}


def test_the_owner_block_tags_the_user_with_an_address_and_a_topic_the_function_reads(server):
    import lambda_function
    from seed import seed_user

    iam = boto3.client("iam")
    seed_user(iam, boto3.client("secretsmanager"), "ci-deployer", ("Active",), 0, secret="iam-keys/ci-deployer")
    run(sh("docs/reference.md", "## Key owners: the key-rotation-owner tag"))
    tags = {t["Key"]: t["Value"] for t in iam.list_user_tags(UserName="ci-deployer")["Tags"]}
    owners, malformed = lambda_function.parse_owners(tags[lambda_function.OWNER_TAG])
    assert [o.address for o in owners] == ["team-ci@example.com", "arn:aws:sns:eu-west-1:111122223333:team-ci"]
    assert malformed == ()
