"""The packaged zip, unzipped into an empty folder, run by awslambdaric as Lambda runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest
from runtime_api import RuntimeApi

from local_aws import moto_server
from seed import ROWS, seed_row

ROOT = Path(__file__).parent.parent
SCHEDULED = json.loads((Path(__file__).parent / "events" / "eventbridge-scheduled.json").read_text())


@pytest.fixture
def task_root(tmp_path):
    subprocess.run(["make", "-s", "package"], cwd=ROOT, check=True, capture_output=True)
    task = tmp_path / "task"
    task.mkdir()
    with zipfile.ZipFile(ROOT / "dist" / "lambda.zip") as archive:
        archive.extractall(task)
    assert sorted(p.name for p in task.iterdir()) == ["lambda_function.py"]
    return task


def test_zip_runs_under_the_lambda_runtime_client(task_root, tmp_path):
    with moto_server() as endpoint:
        iam, secrets = boto3.client("iam"), boto3.client("secretsmanager")
        good = seed_row(iam, secrets, ROWS[1], user="alice")
        secrets.create_secret(Name="broken", SecretString="not json")
        api = RuntimeApi("arn:aws:lambda:us-east-1:123456789012:function:iam-key-rotation")
        env = {
            "PATH": os.environ["PATH"],
            "AWS_LAMBDA_RUNTIME_API": api.address,
            "LAMBDA_TASK_ROOT": str(task_root),
            "PYTHONPATH": str(task_root),  # the zip's copy, not the repo's
            "_HANDLER": "lambda_function.lambda_handler",
            "AWS_LAMBDA_FUNCTION_NAME": "iam-key-rotation",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
            "AWS_ENDPOINT_URL": endpoint,
            "sec": f"{good.secret};broken",
        }
        log = (tmp_path / "runtime.log").open("w")
        runtime = subprocess.Popen([sys.executable, "-m", "awslambdaric", "lambda_function.lambda_handler"],
                                   cwd=task_root, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            rotated = api.invoke({**SCHEDULED, "secrets": [good.secret]})
            failed = api.invoke({"secrets": ["broken"]})
        finally:
            runtime.kill()
            runtime.wait()
            api.close()
        output = (tmp_path / "runtime.log").read_text()

        assert rotated["kind"] == "response", output
        assert rotated["body"]["rotated"] == 1
        new_key = json.loads(secrets.get_secret_value(SecretId=good.secret)["SecretString"])["AccessKeyId"]
        assert rotated["body"]["secrets"][0]["new_key_id"] == new_key
        keys = {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName="alice")["AccessKeyMetadata"]}
        assert keys == {good.key_ids[0]: "Inactive", new_key: "Active"}

        assert failed["kind"] == "error", output  # Lambda's error response: the Errors metric counts it
        assert failed["body"]["errorType"] == "RotationFailed"
        assert "secret 'broken': value is not valid JSON" in failed["body"]["errorMessage"]
        assert '"action": "rotated"' in output and '"_aws"' in output
