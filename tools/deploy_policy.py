"""make policy: the function's role's policy, LambdaExecutionRole.json filled in as data, never as text.

Each value is checked by its declaration (tools/deploy_values.py); the event bus, the topic and the central account
by the function's own readers (lambda_function's parse_event_bus, is_topic_arn, central_account), and where a topic or
bus may be by its one rule (account_of, region_of, foreign_account). What is written grants named actions only,
and "*" resources only where AWS allows nothing else (least_privilege, a last check whatever the values were).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from deploy_values import ROOT, VALUES, Refused, checked, function_module, shown

# --- the role's policy, built as data ---------------------------------------------------------------------------

PLACEHOLDERS = re.compile(r"ACCOUNT_ID|REGION|FUNCTION_NAME|OWNER_SENDER|iam-keys/")
# The statements whose actions take no resource: AWS allows only "*" there.
STAR_RESOURCE = {"ListAndBatchReadSecrets", "ReadCredentialReport", "LookUpHoldouts"}


def policy_options(got: Mapping[str, str], given: list[tuple[str, str]]) -> dict[str, str]:
    settings = dict(given)
    return {"prefix": got.get("PREFIX", VALUES["PREFIX"].default), "kms_key_id": got.get("KMS_KEY_ID", ""),
            "user_path": got.get("USER_PATH", VALUES["USER_PATH"].default),
            "event_bus": settings.get("EVENT_BUS", ""), "account_report": settings.get("ACCOUNT_REPORT", ""),
            "lookup_holdouts": settings.get("LOOKUP_HOLDOUTS", ""),
            "notify_topic_arn": settings.get("NOTIFY_TOPIC_ARN", ""),
            "central_account_id": settings.get("CENTRAL_ACCOUNT_ID", ""), "owners": got.get("OWNERS", ""),
            "owner_sender": settings.get("OWNER_SENDER", ""), "roles": got.get("ROLES", "")}


def check_policy_values(account_id: str, region: str, function: str, prefix: str = "iam-keys/",
                        kms_key_id: str = "", user_path: str = "/", event_bus: str = "",
                        notify_topic_arn: str = "", central_account_id: str = "", **_flags: str) -> None:
    """Each value against what it names (the account and region only when known: make policy asks STS for them
    after these checks); the bus, topic and central account by the function's own readers. Refused before
    anything is called."""
    for name, value in (("ACCOUNT_ID", account_id), ("REGION", region), ("KMS_KEY_ID", kms_key_id)):
        if value:
            checked(name, value)
    checked("FUNCTION", function)
    checked("PREFIX", prefix)
    checked("USER_PATH", user_path or "/")
    lambda_function = function_module()
    try:
        lambda_function.parse_event_bus(event_bus or None)
        lambda_function.central_account(central_account_id or None)
    except lambda_function.ConfigError as err:
        raise Refused(f"refused, nothing written: {err}") from None
    if not event_bus.isascii():
        raise Refused(f"EVENT_BUS must be an EventBridge bus name or ARN, not {shown(event_bus)}")
    if notify_topic_arn and not lambda_function.is_topic_arn(notify_topic_arn):
        raise Refused(f"NOTIFY_TOPIC_ARN must be {VALUES['TOPIC'].meaning}, not {shown(notify_topic_arn)}")


def check_destination(setting: str, arn: str, account_id: str, central_account_id: str, region: str = "") -> None:
    """A topic or bus ARN must be in this account, or in the one CENTRAL_ACCOUNT_ID names (the function's own
    rule, foreign_account); a bus (``region`` given) in this region, since PutEvents reaches no other
    (template.yaml forwards with ForwardEventsRule)."""
    function = function_module()
    where, account = function.region_of(arn), function.account_of(arn)
    if region and where != region:
        raise Refused(f"{setting} is in region {where}, not {region}: PutEvents reaches only its own region's buses "
                      "(give a bus here and forward with a rule, as template.yaml does); nothing written")
    if not function.foreign_account(account, account_id, central_account_id or None):
        return
    allowed = f"this account ({account_id})" + (f" or CENTRAL_ACCOUNT_ID ({central_account_id})"
                                                if central_account_id else "")
    raise Refused(f"{setting} is in account {account}, not {allowed}: refused, nothing written (give "
                  f"CENTRAL_ACCOUNT_ID={account} if that is your organisation's central account)")


def filled(value: Any, parts: Mapping[str, str]) -> Any:
    """A policy statement with its placeholders filled in each string that holds one (one pass: a filled-in value
    is never read again for placeholders), never in the JSON text."""
    if isinstance(value, str):
        return PLACEHOLDERS.sub(lambda m: parts[m.group()], value)
    if isinstance(value, list):
        return [filled(v, parts) for v in value]
    if isinstance(value, dict):
        return {k: filled(v, parts) for k, v in value.items()}
    return value


def wanted_statements(kms_key_id: str, event_bus: str, account_report: str, lookup_holdouts: str, owners: str,
                      owner_sender: str, roles: str) -> dict[str, bool]:
    """The optional statements, each on or off: without a KMS key id, no KMS statement; without an event bus, no
    events:PutEvents; the credential report's and CloudTrail's reads only when ACCOUNT_REPORT and LOOKUP_HOLDOUTS
    are on; with OWNERS=true, SNS topics of this account, the told mark, and SES from OWNER_SENDER only."""
    truthy = function_module().TRUE_WORDS
    return {"UseSecretsKeyOnlyViaSecretsManager": bool(kms_key_id), "PublishRotationEvents": bool(event_bus),
            "ReadCredentialReport": account_report.strip().lower() in truthy,
            "LookUpHoldouts": lookup_holdouts.strip().lower() in truthy or roles == "true",
            "ListEveryUsersKeys": roles == "true",  # the roles report: keys of users no secret manages too
            "TellOwnersByEmail": owners == "true" and bool(owner_sender), "TellOwnersTopics": owners == "true",
            "MarkToldOwners": owners == "true"}


def kms_resource(kms_key_id: str, account_id: str, region: str, condition: dict) -> dict:
    """The KMS statement's Resource (and Condition) for a key id, a key ARN, an alias or an alias ARN: an alias
    is no resource IAM authorises a key's use by, so the key is named by its alias in a condition."""
    if kms_key_id.startswith("arn:"):
        key_region, key_account, resource = kms_key_id.split(":")[3:6]
    else:
        key_region, key_account, resource = region, account_id, kms_key_id if kms_key_id.startswith("alias/") \
            else f"key/{kms_key_id}"
    if not resource.startswith("alias/"):
        return {"Resource": f"arn:aws:kms:{key_region}:{key_account}:{resource}"}
    return {"Resource": f"arn:aws:kms:{key_region}:{key_account}:key/*",
            "Condition": {**condition, "ForAnyValue:StringEquals": {"kms:ResourceAliases": resource}}}


def least_privilege(policy: dict) -> None:
    """What make policy writes grants named actions only (no wildcard) and "*" resources only where AWS
    allows nothing else: a last check, whatever the values were."""
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for action in actions:
            if not re.fullmatch(r"[a-z0-9-]+:[A-Za-z]+", action, re.ASCII):
                raise Refused(f"refused, nothing written: the policy would allow {shown(action)}")
        if statement["Effect"] != "Allow" or set(statement) - {"Sid", "Effect", "Action", "Resource", "Condition"}:
            raise Refused(f"refused, nothing written: statement {shown(statement['Sid'])} is not as the file has it")
        if "*" == statement["Resource"] and statement["Sid"] not in STAR_RESOURCE:
            raise Refused(f"refused, nothing written: statement {shown(statement['Sid'])} would reach every resource")


def render_policy(account_id: str, region: str, function: str, prefix: str = "iam-keys/", kms_key_id: str = "",
                  user_path: str = "/", event_bus: str = "", account_report: str = "",
                  lookup_holdouts: str = "", notify_topic_arn: str = "", central_account_id: str = "",
                  owners: str = "", owner_sender: str = "", roles: str = "") -> dict:
    """LambdaExecutionRole.json, loaded as JSON, its placeholders filled in the strings that hold them, never in
    the text, with the optional statements wanted_statements keeps; a topic adds sns:Publish on it.
    ``user_path`` narrows the users whose keys the role may manage. A topic or bus in another account is
    refused unless ``central_account_id`` names that account."""
    if not account_id:
        raise Refused("ACCOUNT_ID must be an account id: 12 digits, not ''")
    if not region:
        raise Refused("give REGION=... (or configure the CLI's region)")
    check_policy_values(account_id, region, function, prefix, kms_key_id, user_path, event_bus,
                        notify_topic_arn, central_account_id)
    parts = {"ACCOUNT_ID": account_id, "REGION": region, "FUNCTION_NAME": function, "iam-keys/": prefix,
             "OWNER_SENDER": owner_sender}
    wanted = wanted_statements(kms_key_id, event_bus, account_report, lookup_holdouts, owners, owner_sender, roles)
    template = json.loads((ROOT / "LambdaExecutionRole.json").read_text())
    statements = []
    for statement in [filled(s, parts) for s in template["Statement"] if wanted.get(s["Sid"], True)]:
        if statement["Sid"] == "UseSecretsKeyOnlyViaSecretsManager":
            statement.update(kms_resource(kms_key_id, account_id, region, statement.get("Condition", {})))
        elif statement["Sid"] == "PublishRotationEvents":
            if event_bus.startswith("arn:"):
                check_destination("EVENT_BUS", event_bus, account_id, central_account_id, region)
            statement["Resource"] = event_bus if event_bus.startswith("arn:") else \
                f"arn:aws:events:{region}:{account_id}:event-bus/{event_bus}"
        elif statement["Sid"] == "TellOwnersTopics" and central_account_id:  # as every destination: or the central
            statement["Resource"] = [statement["Resource"], f"arn:aws:sns:{region}:{central_account_id}:*"]
        elif isinstance(statement["Resource"], str) and statement["Resource"].endswith(":user/*"):
            statement["Resource"] = statement["Resource"][:-len("/*")] + (user_path or "/") + "*"
        statements.append(statement)
    if notify_topic_arn:
        check_destination("NOTIFY_TOPIC_ARN", notify_topic_arn, account_id, central_account_id)
        statements.append({"Sid": "PublishRunSummaries", "Effect": "Allow", "Action": ["sns:Publish"],
                           "Resource": notify_topic_arn})
    policy = {**template, "Statement": statements}
    least_privilege(policy)
    return policy


