"""Helpers for the Makefile's deploy targets; standard library only, so deploying needs no test stack.

    python3 tools/deploy_config.py policy ACCOUNT_ID REGION FUNCTION [PREFIX] [KMS_KEY_ID] > dist/policy.json
    python3 tools/deploy_config.py environment CURRENT_JSON NAME=VALUE ...  > merged.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The function's settings a deployer may set by name (make create/configure VAR=value).
SETTINGS = ("sec", "DRY_RUN", "REQUIRE_USER_TAG", "ROTATE_AFTER_DAYS", "VERIFY_TIMEOUT_SECONDS", "TIME_MARGIN_SECONDS",
            "MAX_WORKERS", "GRACE_HOURS", "MAX_GRACE_HOURS", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "LOG_LEVEL",
            "METRICS_NAMESPACE", "NOTIFY_TOPIC_ARN")


def render_policy(account_id: str, region: str, function: str, prefix: str = "iam-keys/", kms_key_id: str = "") -> dict:
    """LambdaExecutionRole.json with its placeholders filled; without a KMS key id, no KMS statement."""
    if not re.fullmatch(r"\d{12}", account_id):
        raise SystemExit(f"ACCOUNT_ID must be 12 digits, not {account_id!r}")
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region):
        raise SystemExit(f"REGION must look like us-east-1, not {region!r}")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", function):
        raise SystemExit(f"FUNCTION must be a Lambda function name, not {function!r}")
    text = (ROOT / "LambdaExecutionRole.json").read_text()
    for placeholder, value in {"ACCOUNT_ID": account_id, "REGION": region, "FUNCTION_NAME": function,
                               "iam-keys/": prefix}.items():
        text = text.replace(placeholder, value)
    policy = json.loads(text.replace("KMS_KEY_ID", kms_key_id or "KMS_KEY_ID"))
    if not kms_key_id:  # the default aws/secretsmanager key needs no statement
        policy["Statement"] = [s for s in policy["Statement"] if not s["Action"][0].startswith("kms:")]
    return policy


def merge_environment(current: str, assignments: list[str]) -> dict:
    """The function's variables with the given NAME=VALUE set (an empty VALUE removes NAME); others kept."""
    variables = json.loads(current) if current.strip() not in ("", "None", "null") else {}
    for assignment in assignments:
        name, _, value = assignment.partition("=")
        if name not in SETTINGS:
            raise SystemExit(f"{name!r} is not a setting of the function; known: {', '.join(SETTINGS)}")
        if value:
            variables[name] = value
        else:
            variables.pop(name, None)
    return {"Variables": variables}


def main(argv: list[str]) -> int:
    if argv[:1] == ["policy"] and 4 <= len(argv) <= 6:
        print(json.dumps(render_policy(*argv[1:]), indent=2))
        return 0
    if argv[:1] == ["environment"] and len(argv) >= 2:
        print(json.dumps(merge_environment(argv[1], [a for a in argv[2:] if a])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
