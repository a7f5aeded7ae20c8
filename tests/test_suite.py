"""The suite itself: no test holds a date that will pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import TIME_SENSITIVE, YEAR_AHEAD_DAYS

ROOT = Path(__file__).parent.parent


def test_every_time_sensitive_test_also_runs_a_year_ahead(request):
    # conftest makes a twin of each test in the time-sensitive files, run with every clock a year ahead: a
    # test holding a date that will pass fails its twin today, not on the day the date passes.
    items = request.session.items
    sensitive = [i for i in items if i.path.name in TIME_SENSITIVE and not i.get_closest_marker("year_ahead")]
    twins = {(i.path.name, i.originalname, getattr(getattr(i, "callspec", None), "id", None))
             for i in items if i.get_closest_marker("year_ahead") and i.path.name in TIME_SENSITIVE}
    if not sensitive:
        pytest.skip("the time-sensitive files are not part of this run")
    assert {(i.path.name, i.originalname, getattr(getattr(i, "callspec", None), "id", None))
            for i in sensitive} == twins


@pytest.mark.year_ahead
def test_a_twin_runs_on_every_clock_a_year_ahead(aws, clock):
    from freezegun.api import real_datetime

    ahead = datetime.now(UTC) - real_datetime.now(UTC)
    assert timedelta(days=YEAR_AHEAD_DAYS - 1) < ahead < timedelta(days=YEAR_AHEAD_DAYS + 1)
    assert clock.now() - real_datetime.now(UTC) > timedelta(days=YEAR_AHEAD_DAYS - 1), "the test's clock too"
    aws.iam.create_user(UserName="someone")  # moto's clock too
    created = aws.iam.get_user(UserName="someone")["User"]["CreateDate"]
    assert created - real_datetime.now(UTC) > timedelta(days=YEAR_AHEAD_DAYS - 1)


def test_the_sts_stand_in_refuses_a_deleted_an_inactive_and_a_wrongly_signed_key(aws):
    # Through the function's own KeyIdentity (per-request signing), against the stand-in that judges SigV4.
    import lambda_function
    from seed import iam_secret_keys

    aws.iam.create_user(UserName="alice")
    made = [aws.iam.create_access_key(UserName="alice")["AccessKey"] for _ in range(2)]
    identity = lambda_function.aws_clients(lambda_function.Settings()).identity

    def verdict(key_id: str, secret: str) -> str:
        try:
            return identity.caller_identity(lambda_function.AccessKey(key_id, secret))["Arn"]
        except Exception as err:  # noqa: BLE001
            return lambda_function.error_code(err) or type(err).__name__

    good, other = made[0]["AccessKeyId"], made[1]["AccessKeyId"]
    assert verdict(good, iam_secret_keys("alice")[good]).endswith(":user/alice")
    assert verdict(good, iam_secret_keys("alice")[other]) == "SignatureDoesNotMatch"
    aws.iam.update_access_key(UserName="alice", AccessKeyId=good, Status="Inactive")
    assert verdict(good, iam_secret_keys("alice")[good]) == "InvalidClientTokenId"
    aws.iam.delete_access_key(UserName="alice", AccessKeyId=other)
    assert verdict(other, made[1]["SecretAccessKey"]) == "InvalidClientTokenId"


@pytest.mark.unit
def test_the_readme_gives_the_measured_time_and_ci_runs_the_same_command():
    # The figure is measured by hand (make test, warm virtualenv) and written down; no test times itself.
    import re

    readme = (ROOT / "docs" / "design.md").read_text()  # "How the tests prove them"; the README links to it
    measured = re.search(r"Measured\s+here \(2 cores, warm virtualenv\):\s+(\d[\d,]*)\s+tests in (\d+) s wall", readme)
    assert measured, "docs/design.md states the measured figure"
    assert "make test" in (ROOT / "README.md").read_text() and "docs/design.md" in (ROOT / "README.md").read_text()
    # the target is 150 s on the 2-core machine; a figure over it is written down as it is, with why (never a
    # figure made to fit): the document must then say it is over
    assert int(measured.group(2)) <= 150 or "over the 150 s it should take" in readme, \
        "make test runs in at most 150 s on the 2-core machine, or design.md says it does not, and why"
    assert "$(BIN)/python -m pytest -n auto" in (ROOT / "Makefile").read_text(), "one xdist worker per core"
    assert "make test" in (ROOT / ".ci" / "run").read_text()
