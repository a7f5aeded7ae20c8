"""A moto server on 127.0.0.1 standing in for AWS, for the demo, end-to-end tests and benchmarks."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from moto.server import ThreadedMotoServer

from seed import FUNCTION_ARN

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Run a moto server on a free loopback port; point boto3 at it via AWS_ENDPOINT_URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    make_moto_move_current_as_aws_does()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # moto keeps its state per process: start from an empty account.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
    saved = {k: os.environ.get(k) for k in [*FAKE_ENV, "AWS_ENDPOINT_URL", "AWS_PROFILE"]}
    os.environ.update(FAKE_ENV, AWS_ENDPOINT_URL=endpoint)
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class LambdaContext:
    """The parts of Lambda's context object the function uses: its own ARN, name and clock."""

    invoked_function_arn: str = FUNCTION_ARN
    timeout_seconds: float = 900.0
    aws_request_id: str = ""

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.aws_request_id = self.aws_request_id or str(uuid.uuid4())

    @property
    def function_name(self) -> str:
        return self.invoked_function_arn.split(":")[6]

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def make_moto_move_current_as_aws_does() -> None:
    """moto differs from AWS here: UpdateSecretVersionStage moving AWSCURRENT leaves moto's "default
    version" behind, so the next PutSecretValue demotes that stale version and two versions end up
    AWSCURRENT. AWS keeps one AWSCURRENT. This keeps moto's default version on the AWSCURRENT label
    (idempotent; used by the tests, the demo and the benchmark's server)."""
    from moto.secretsmanager.models import SecretsManagerBackend

    original = SecretsManagerBackend.update_secret_version_stage
    if getattr(original, "moves_default_version", False):
        return

    def update_secret_version_stage(self, secret_id, version_stage, remove_from_version_id, move_to_version_id):
        result = original(self, secret_id, version_stage, remove_from_version_id, move_to_version_id)
        if version_stage == "AWSCURRENT" and move_to_version_id:
            self.secrets[secret_id].default_version_id = move_to_version_id
        return result

    update_secret_version_stage.moves_default_version = True
    SecretsManagerBackend.update_secret_version_stage = update_secret_version_stage


def serve_forever(port: int = 5000) -> None:
    """`make local-aws`: a moto server on 127.0.0.1 until Ctrl-C, and the variables that point the AWS CLI, and
    so every deploy step of the README, at it. Nothing leaves this machine."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    make_moto_move_current_as_aws_does()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound = server.get_host_and_port()
    print("A local moto server stands in for AWS. In another shell:")
    for name, value in {**FAKE_ENV, "AWS_ENDPOINT_URL": f"http://{host}:{bound}"}.items():
        print(f"  export {name}={value}")
    print("then follow the README's deploy steps (make policy ACCOUNT_ID=123456789012 ...). Ctrl-C stops it.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    import sys

    serve_forever(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
