"""Helpers for the Makefile's deploy targets; standard library only, so deploying needs no test stack.

    python3 tools/deploy_config.py policy ACCOUNT_ID REGION FUNCTION [PREFIX] [KMS_KEY_ID] [USER_PATH] \
        [EVENT_BUS] [ACCOUNT_REPORT] [LOOKUP_HOLDOUTS]                      > policy.json
    python3 tools/deploy_config.py create NAME=VALUE ...                    > environment.json
    python3 tools/deploy_config.py environment CURRENT_JSON NAME=VALUE ...  > merged.json

Settings are checked with the function's own table and parser (``lambda_function.SETTINGS_TABLE`` and
``load_settings``) before anything is written: an unknown name is refused with the nearest known one, a
bad value with the function's own message, and ``NAME=`` removes the setting. The function is loaded with
stand-ins for the few boto3 and botocore names it imports (its settings parser uses none of them), so a
deploy machine needs only the AWS CLI.
"""

from __future__ import annotations

import difflib
import importlib
import json
import re
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def function_module() -> types.ModuleType:
    """lambda_function, loaded without boto3: only its settings parser is used here, which needs none of the
    few botocore names the function imports. So a deploy machine needs no boto3, and each make target spends
    no time importing it (where the function is loaded already, as in the tests, it is used as it is)."""
    sys.path.insert(0, str(ROOT))

    class Stand(Exception):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args)

    stand_ins = {"boto3": {"session": None}, "botocore": {}, "botocore.config": {"Config": Stand},
                 "botocore.credentials": {"Credentials": Stand},
                 "botocore.exceptions": {"BotoCoreError": Stand, "ClientError": Stand}}
    if "lambda_function" not in sys.modules:
        for name, names in stand_ins.items():
            if sys.modules.get(name) is None:
                module = types.ModuleType(name)
                module.__dict__.update(names)
                sys.modules[name] = module
    return importlib.import_module("lambda_function")


FUNCTION = function_module()
SETTINGS = tuple(FUNCTION.SETTINGS_TABLE)  # the function's settings a deployer may set by name
ALIASES = {"SEC": "sec"}  # make's variable for `sec`


def render_policy(account_id: str, region: str, function: str, prefix: str = "iam-keys/", kms_key_id: str = "",
                  user_path: str = "/", event_bus: str = "", account_report: str = "",
                  lookup_holdouts: str = "") -> dict:
    """LambdaExecutionRole.json with its placeholders filled; without a KMS key id, no KMS statement; without
    an event bus, no events:PutEvents; the credential report's and CloudTrail's reads only when ACCOUNT_REPORT
    and LOOKUP_HOLDOUTS are on. ``user_path`` narrows the users whose keys the role may manage."""
    if not re.fullmatch(r"/([!-~]+/)*", user_path or "/"):
        raise SystemExit(f"USER_PATH must look like /key-rotation/, not {user_path!r}")
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
    bus_name = event_bus.rsplit("/", 1)[-1] if event_bus else ""
    policy["Statement"] = [s for s in policy["Statement"] if bus_name or s["Action"] != ["events:PutEvents"]]
    for sid, wanted in (("ReadCredentialReport", account_report), ("LookUpHoldouts", lookup_holdouts)):
        if wanted.strip().lower() not in FUNCTION.TRUE_WORDS:  # an optional read only when its setting is on
            policy["Statement"] = [s for s in policy["Statement"] if s["Sid"] != sid]
    for statement in policy["Statement"]:
        if isinstance(statement["Resource"], str):
            statement["Resource"] = statement["Resource"].replace("EVENT_BUS", bus_name)
            if statement["Resource"].endswith(":user/*"):
                statement["Resource"] = statement["Resource"][:-len("/*")] + (user_path or "/") + "*"
    return policy


def production_defaults() -> dict[str, str]:
    """What make create (and the template) deploy when not told: a grace period and a rotation age that keep
    every key under MAX_KEY_AGE_DAYS with the default MAX_GRACE_HOURS (80 + 7 + 2 <= 90)."""
    return {s.name: s.deployed for s in FUNCTION.SETTINGS_TABLE.values() if s.deployed is not None}


def merge_environment(current: str, assignments: list[str], defaults: dict[str, str] | None = None) -> dict:
    """The function's variables with the given NAME=VALUE set (an empty VALUE removes NAME); others kept.
    Checked whole with the function's own parser: nothing is written that the function would refuse."""
    variables = json.loads(current) if current.strip() not in ("", "None", "null") else {}
    variables = {**(defaults or {}), **variables}
    for assignment in assignments:
        name, _, value = assignment.partition("=")
        name = ALIASES.get(name, name)
        if name not in SETTINGS:
            near = difflib.get_close_matches(name.upper(), [s.upper() for s in SETTINGS], n=1, cutoff=0.6)
            hint = f"; did you mean {next(s for s in SETTINGS if s.upper() == near[0])}?" if near else ""
            raise SystemExit(f"{name!r} is not a setting of the function{hint} (nothing written; known: "
                             f"{', '.join(SETTINGS)})")
        if value:
            variables[name] = value
        else:
            variables.pop(name, None)
    try:
        FUNCTION.load_settings(variables, {})
    except FUNCTION.ConfigError as err:
        raise SystemExit(f"refused, nothing written: {err}") from None
    return {"Variables": variables}


def render_report(summary: dict) -> str:
    """make report: a table a person reads at a glance (user, key age, managed or not, next rotation)."""
    rows = [("user", "key age (days)", "managed", "next rotation", "overdue")]
    for entry in summary.get("secrets", []):
        rows.append((str(entry.get("user")), str(entry.get("key_age_days")), f"yes ({entry['secret']})",
                     str(entry.get("next_rotation")), "OVERDUE" if entry.get("overdue") else ""))
    account = summary.get("report") or {}
    for entry in account.get("overdue_unmanaged", []):
        rows.append((entry["user"], str(entry["age_days"]), "no", "never (no secret)", "OVERDUE"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if account.get("root_key_active"):
        lines.append("the root user has an Active access key: CIS asks that it have none")
    if account.get("failed"):
        lines.append(account["failed"])
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["policy"] and 4 <= len(argv) <= 10:
        print(json.dumps(render_policy(*argv[1:]), indent=2))
        return 0
    if argv[:1] == ["environment"] and len(argv) >= 2:
        print(json.dumps(merge_environment(argv[1], [a for a in argv[2:] if a])))
        return 0
    if argv[:1] == ["report"] and len(argv) == 2:
        print(render_report(json.loads(Path(argv[1]).read_text())))
        return 0
    if argv[:1] == ["create"]:
        print(json.dumps(merge_environment("{}", [a for a in argv[1:] if a], production_defaults())))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
