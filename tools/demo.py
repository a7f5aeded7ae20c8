"""`make demo`: rotate keys for demo users in every row of the decision table,
on a moto server on 127.0.0.1, invoking the handler as Lambda would."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3  # noqa: E402

from local_aws import LambdaContext, moto_server  # noqa: E402
from seed import ROWS, seed_row  # noqa: E402


def describe_keys(iam, user: str, held: str | None) -> str:
    """'AKIA…1234 Active (held)' for each key, oldest first."""
    keys = sorted(iam.list_access_keys(UserName=user)["AccessKeyMetadata"], key=lambda k: k["CreateDate"])
    if not keys:
        return "-"
    return ", ".join(
        f"…{k['AccessKeyId'][-4:]} {k['Status']}{' (held)' if k['AccessKeyId'] == held else ''}" for k in keys
    )


def held_key(secrets, secret: str) -> str | None:
    return json.loads(secrets.get_secret_value(SecretId=secret)["SecretString"]).get("AccessKeyId")


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"\n{title}")
    for i, row in enumerate(rows):
        print("  " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            print("  " + "-+-".join("-" * w for w in widths))


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="  log %(message)s")
    with moto_server() as endpoint:
        print(f"moto server standing in for AWS at {endpoint}")
        iam, secrets = boto3.client("iam"), boto3.client("secretsmanager")
        seeded = [(row, seed_row(iam, secrets, row)) for row in ROWS]
        before = {s.user: describe_keys(iam, s.user, held_key(secrets, s.secret)) for _, s in seeded}

        os.environ["sec"] = ";".join(s.secret for _, s in seeded)
        event = {"version": "0", "source": "aws.events", "detail-type": "Scheduled Event",
                 "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "detail": {}}
        import lambda_function

        print(f"\ninvoking lambda_function.lambda_handler with sec={os.environ['sec']!r}")
        result = lambda_function.lambda_handler(event, LambdaContext())

        rows = [("user (keys found)", "before (oldest first)", "after")]
        for row, s in seeded:
            after = describe_keys(iam, s.user, held_key(secrets, s.secret))
            rows.append((f"{s.user} ({row.found.split(' (')[0]})", before[s.user], after))
        print_table("Keys before and after; (held) marks the key the secret holds:", rows)
        print(f"\nrotated {result['rotated']}, skipped {result['skipped']}, failed {result['failed']}")
        return 0 if result["rotated"] == len(ROWS) else 1


if __name__ == "__main__":
    sys.exit(main())
