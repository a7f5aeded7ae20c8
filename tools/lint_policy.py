"""Lint the execution role's policy with parliament (offline); every finding must be explained here.

Usage: python tools/lint_policy.py LambdaExecutionRole.json
"""

from __future__ import annotations

import sys
from pathlib import Path

from parliament import analyze_policy_string

# The README's placeholders, filled with sample values so that the ARNs parse.
PLACEHOLDERS = {
    "ACCOUNT_ID": "123456789012",
    "REGION": "us-east-1",
    "FUNCTION_NAME": "iam-key-rotation",
    "KMS_KEY_ID": "1234abcd-12ab-34cd-56ef-1234567890ab",
}

# Findings we accept, by parliament's issue code, each with the reason. They are
# the function's purpose: making and retiring users' access keys.
EXPLAINED: dict[str, str] = {
    "CREDENTIALS_EXPOSURE": "CreateAccessKey returns a secret key: the function writes it straight into the "
    "secret and never logs or returns it",
    "PERMISSIONS_MANAGEMENT_ACTIONS": "the access key actions are the function's job; they are scoped to IAM users "
    "(narrow with a user path, README 'Security')",
    "PRIVILEGE_ESCALATION": "CreateAccessKey on a user lets the role act as that user: limit it with a user path, "
    "REQUIRE_USER_TAG (on by default) and the statement's aws:ResourceTag/key-rotation-secret condition, which "
    "parliament does not weigh (README 'Security')",
}


def findings(policy_text: str) -> list:
    for placeholder, sample in PLACEHOLDERS.items():
        policy_text = policy_text.replace(placeholder, sample)
    return analyze_policy_string(policy_text, include_community_auditors=True).findings


def main(path: str) -> int:
    found = findings(Path(path).read_text())
    unexplained = [f for f in found if f.issue not in EXPLAINED]
    for finding in found:
        note = EXPLAINED.get(finding.issue, "UNEXPLAINED")
        print(f"{path}: {finding.severity} {finding.issue}: {finding.detail} at {finding.location} -- {note}")
    print(f"{path}: {len(found)} parliament findings, {len(unexplained)} unexplained")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "LambdaExecutionRole.json"))
