"""`make demo`: the function on a local moto server standing in for AWS, in five labelled parts.

1. a dry run: what it would do to a user in each row of the decision table, changing nothing;
2. the rotation itself, with a before/after table of each user's keys;
3. what the Lambda console shows for that run (the summary it returns);
4. a secret it refuses: one pointed at a user that does not name it back;
5. day to day: a grace period over simulated days (rotated, waiting, retired), a rollback, a skip tag.
6. the owner hears first: the e-mail a person gets when a key of theirs in use is adopted (SES, as moto keeps it).

Quiet by default; VERBOSE=1 also shows the function's JSON log lines.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3  # noqa: E402

from local_aws import LambdaContext, moto_server  # noqa: E402
from seed import ROWS, seed_row  # noqa: E402


def describe_keys(iam, user: str, held: str | None) -> str:
    """'…1234 Active*' for each key, oldest first; * marks the key the secret holds."""
    keys = sorted(iam.list_access_keys(UserName=user)["AccessKeyMetadata"], key=lambda k: k["CreateDate"])
    if not keys:
        return "-"
    return ", ".join(f"…{k['AccessKeyId'][-4:]} {k['Status']}{'*' if k['AccessKeyId'] == held else ''}"
                     for k in keys)


def held_key(secrets, secret: str) -> str | None:
    return json.loads(secrets.get_secret_value(SecretId=secret)["SecretString"]).get("AccessKeyId")


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            print("  " + "-+-".join("-" * w for w in widths))


def heading(text: str) -> None:
    print(f"\n== {text}")


def main() -> int:
    verbose = os.environ.get("VERBOSE", "") not in ("", "0")
    logging.basicConfig(level=logging.INFO, format="  log %(message)s")
    os.environ["LOG_LEVEL"] = "INFO" if verbose else "CRITICAL"
    with moto_server() as endpoint:
        import lambda_function

        def invoke(event: dict) -> dict:
            """The handler as Lambda runs it; quiet, its metrics line (EMF, on stdout) too, unless VERBOSE=1."""
            with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO()):
                return lambda_function.lambda_handler(event, LambdaContext())

        print(f"A moto server at {endpoint} stands in for AWS. One IAM user per row of the decision table,")
        print("each with a secret iam-keys/<user> whose user is tagged to name it back (key-rotation-secret).")
        iam, secrets = boto3.client("iam"), boto3.client("secretsmanager")
        seeded = [(row, seed_row(iam, secrets, row)) for row in ROWS]
        before = {s.user: describe_keys(iam, s.user, held_key(secrets, s.secret)) for _, s in seeded}
        os.environ["sec"] = "iam-keys/demo-*"

        heading('1. Dry run: {"dry_run": true} plans, and changes nothing')
        planned = invoke({"dry_run": True})
        short = lambda text: re.sub(r"AKIA[A-Z0-9]{12}([A-Z0-9]{4})", r"…\1", text)  # noqa: E731
        print_table([("secret", "plan (key ids shortened)")]
                    + [(s["secret"], short(", ".join(s["steps"]))) for s in planned["secrets"]])

        heading("2. Rotation: sec='iam-keys/demo-*' (a prefix), as the daily schedule runs it")
        result = invoke(json.loads((Path(__file__).parent.parent / "tests/events/console-test.json").read_text()))
        rows = [("user (keys found)", "before (oldest first; * = in the secret)", "after")]
        for row, s in seeded:
            after = describe_keys(iam, s.user, held_key(secrets, s.secret))
            rows.append((f"{s.user.removeprefix('demo-')} ({row.found.split(' (')[0]})", before[s.user], after))
        print_table(rows)
        print(f"  rotated {result['rotated']}, skipped {result['skipped']}, failed {result['failed']}: "
              "one Active key each, the secret's; the old one Inactive, kept as a fallback")

        heading("3. What the Lambda console shows for that run (the counts, then one entry a secret)")
        print("  " + json.dumps({k: v for k, v in result.items() if k != "secrets"}))
        print("  " + json.dumps(result["secrets"][1]) + f"  (+{len(result['secrets']) - 1} more)")

        heading("4. Refused: a secret pointed at a user that does not name it back (an admin, say)")
        iam.create_user(UserName="admin")
        iam.create_access_key(UserName="admin")
        secrets.create_secret(Name="iam-keys/pointed-at-admin", SecretString=json.dumps({"UserName": "admin"}))
        os.environ["sec"] = "iam-keys/pointed-at-admin"
        try:
            invoke({})
            print("  NOT refused: this is a bug")
            return 1
        except lambda_function.RotationFailed as err:
            print(f"  RotationFailed: {err}")
        print(f"  admin's keys: {describe_keys(iam, 'admin', None)} (untouched)")
        return 0 if day_to_day(lambda_function, iam, secrets, verbose) and result["rotated"] == len(ROWS) \
            and planned["planned"] == len(ROWS) and owner_hears_first(lambda_function, iam, secrets, verbose) else 1


def day_to_day(lambda_function, iam, secrets, verbose: bool) -> bool:
    """5. What an operator uses day to day: a grace period over simulated days, a rollback, a skip tag."""
    from datetime import UTC, datetime, timedelta

    heading("5. Day to day: GRACE_HOURS=24 over simulated days, a rollback, a skip tag")
    seeded = seed_row(iam, secrets, ROWS[1], user="demo-grace")
    start, env = datetime.now(UTC), {**os.environ, "sec": seeded.secret, "GRACE_HOURS": "24"}
    seen = []
    for label, hours, event in (("day 0", 0, {}), ("hour 1", 1, {}), ("day 1", 25, {}),
                                ("rollback", 26, {"rollback": [seeded.secret]}), ("skip-tagged", 27, {})):
        if label == "skip-tagged":
            secrets.tag_resource(SecretId=seeded.secret, Tags=[{"Key": "key-rotation:mode", "Value": "skip"}])
        clock = lambda_function.Clock(now=lambda hours=hours: start + timedelta(hours=hours))
        with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO()):
            (entry,) = lambda_function.handle(event, LambdaContext(), env, clock)["secrets"]
        seen.append(entry["status"])
        print(f"  {label:<11} {entry['status']:<11} keys: "
              f"{describe_keys(iam, seeded.user, held_key(secrets, seeded.secret))}")
    return seen == ["rotated", "waiting", "retired", "rolled_back", "skipped"]


def owner_hears_first(lambda_function, iam, secrets, verbose: bool) -> bool:
    """6. The mail a person gets for an adopted key: their key in use, held by no secret, kept until T."""
    from moto.ses.models import ses_backends

    from seed import ACCOUNT_ID, seed_user

    heading("6. The owner hears first: the e-mail for a key in use that no secret held (tag key-rotation-owner)")
    region = boto3.session.Session().region_name
    boto3.client("ses").verify_email_identity(EmailAddress="key-rotation@example.com")
    seeded = seed_user(iam, secrets, "demo-owner", ("Active",), None, stale=False)
    iam.tag_user(UserName="demo-owner", Tags=[{"Key": "key-rotation-owner", "Value": "dana@example.com"}])
    env = {**os.environ, "sec": seeded.secret, "OWNER_SENDER": "key-rotation@example.com"}
    with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO()):
        result = lambda_function.handle({}, LambdaContext(), env, lambda_function.SYSTEM_CLOCK)
    sent = ses_backends[ACCOUNT_ID][region].sent_messages
    if not sent:
        print(f"  no e-mail sent: {result.get('owners_told')}")
        return False
    mail = sent[-1]
    print(f"  From: {mail.source}\n  To: {', '.join(mail.destinations['ToAddresses'])}\n  Subject: {mail.subject}\n")
    for paragraph in mail.body.split("\n\n"):
        print("  " + paragraph)
    return [e["status"] for e in result["owners_told"]] == ["told"]


if __name__ == "__main__":
    sys.exit(main())
