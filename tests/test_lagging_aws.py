"""On an AWS that is eventually consistent, as AWS is: a destructive step acts only on evidence that cannot lag.

IAM's last-used data shows a use hours after it (``LaggingLastUsed``, conftest: each use visible only after
its own delay, up to IAM_LAST_USED_LAG, as AWS documents). "IAM shows it never used" is no proof for a key
younger than that: such a key is never deleted as the function's own lost key, and a rotation that needs its
place waits until IAM's data can say.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from test_faults import crashed_after_create

from faults import CRASH, TIMEOUT, Crash
from lagging_aws import (
    CLOUDTRAIL_LAG,
    IAM_LAST_USED_LAG,
    IAM_LIST_LAG,
    SECRETS_LIST_LAG,
    LaggingSecretLists,
    install_secret_lists,
)
from lambda_function import ADOPTED_TAG, LAST_USED_LAG, LIST_LAG, LOST_KEY_WAIT, MADE_TAG, RotationFailed
from seed import ROWS, backdate_key, iam_key_states, seed_row, seed_user, set_last_used

A_MINUTE = 60


def test_the_function_waits_as_long_as_aws_documents_iam_s_lag():
    assert LAST_USED_LAG >= IAM_LAST_USED_LAG and LIST_LAG >= IAM_LIST_LAG


def crashed_after_the_mark(aws, invoke, faults):
    """alice's rotation marks the user (key-rotation-made) and dies before CreateAccessKey: no key made."""
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    faults.inject("tag_user", CRASH)
    with pytest.raises(Crash):
        invoke(seeded.secret)
    faults.clear()
    assert set(aws.keys("alice")) == set(seeded.key_ids), "the crash came before any key was made"
    tags = {t["Key"] for t in aws.iam.list_user_tags(UserName="alice")["Tags"]}
    assert MADE_TAG in tags
    return seeded


def test_a_person_s_key_made_and_used_just_after_a_crash_is_not_deleted_while_iam_cannot_show_its_use(
        aws, invoke, faults, clock, lagging_iam):
    # A person makes a key two minutes after the crash (inside the mark's window, held by no secret) and uses
    # it at once; IAM shows the use an hour later. Lambda's retry a minute after that must not take the key for
    # the function's own lost one: IAM's "never used" covers none of its life yet.
    seeded = crashed_after_the_mark(aws, invoke, faults)
    clock.advance(2 * A_MINUTE)
    person = aws.iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]
    lagging_iam.use("alice", person, clock.now(), delay=timedelta(hours=1))
    clock.advance(A_MINUTE)

    (entry,) = invoke(seeded.secret)["secrets"]

    assert aws.keys("alice") == {seeded.key_ids[0]: "Active", person: "Active"}
    assert entry["status"] == "waiting"
    assert f"{person} may be this function's own unstored key" in entry["reason"]
    assert aws.holds_working_key(seeded.secret)

    # Once IAM's data covers the key's life it shows the use: the key is someone's, adopted, never deleted.
    clock.advance(LAST_USED_LAG.total_seconds() + A_MINUTE)
    (entry,) = invoke(seeded.secret)["secrets"]
    assert aws.keys("alice")[person] == "Active"
    assert entry["adopted"] == person
    assert aws.holds_working_key(seeded.secret)


def test_the_function_s_own_lost_key_is_left_active_and_said_until_iam_can_prove_it_unused(
        aws, invoke, faults, clock, lagging_iam, monkeypatch):
    # The crash left the function's own key (its secret only ever in the lost answer). Until IAM's data covers
    # the key's life it is reported and left alone (nobody has its secret); then it is deleted.
    seeded, orphan = crashed_after_create(aws, invoke, faults)
    monkeypatch.setenv("ROTATE_AFTER_DAYS", "30")

    (entry,) = invoke(seeded.secret)["secrets"]
    assert aws.keys("alice")[orphan] == "Active" and entry["status"] == "skipped"
    assert f"{orphan} may be this function's own unstored key" in entry["reason"]

    clock.advance(LOST_KEY_WAIT.total_seconds() + A_MINUTE)
    (entry,) = invoke(seeded.secret)["secrets"]
    assert orphan not in aws.keys("alice")
    assert f"deleted {orphan}: made by this function, never stored" in entry["reason"]
    assert aws.holds_working_key(seeded.secret)


def test_a_refused_rerun_keeps_the_mark_of_a_lost_key_iam_does_not_list_yet_and_the_key_is_deleted_as_ours(
        aws, invoke, faults, clock, lagging_lists, monkeypatch):
    # Found by make fuzz: CreateAccessKey's answer was lost (the key made); a rerun a moment later did not see
    # the key in IAM's lagging list, was refused (two keys) and wrote its "made nothing" mark over the old one:
    # from then on the lost key passed for a person's, adopted, never deleted. A refused create keeps the mark
    # of an earlier create less than LIST_LAG old (``outstanding``).
    monkeypatch.setenv("MAX_FAILURES", "0")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    lagging_lists.settled()
    faults.inject("create_access_key", TIMEOUT)
    with pytest.raises(RotationFailed):
        invoke(seeded.secret)
    faults.clear()
    (lost,) = set(truth("alice")) - set(seeded.key_ids)
    mark = {t["Key"]: t["Value"] for t in aws.iam.list_user_tags(UserName="alice")["Tags"]}[MADE_TAG]
    clock.advance(10)
    with pytest.raises(RotationFailed, match="LimitExceeded"):
        invoke(seeded.secret)
    assert {t["Key"]: t["Value"] for t in aws.iam.list_user_tags(UserName="alice")["Tags"]}[MADE_TAG] == mark

    clock.advance(LOST_KEY_WAIT.total_seconds() + A_MINUTE)
    (entry,) = invoke(seeded.secret)["secrets"]
    assert lost not in truth("alice"), entry
    assert f"deleted {lost}: made by this function, never stored" in entry["reason"]


# --- evidence that describes the present: an adoption ends with its key -------------------------------------------


def adopted_tag(aws) -> str:
    return {t["Key"]: t["Value"] for t in aws.iam.list_user_tags(UserName="alice")["Tags"]}.get(ADOPTED_TAG, "")


def test_a_retired_adopted_key_re_activated_a_month_later_is_a_new_adoption_not_switched_off_at_once(
        aws, invoke, clock, lagging_iam):
    # A person's key in use that no secret holds is adopted, then deactivated through the usage gate. A month
    # later a person turns it on again and uses it: the old adoption ran out long ago, but it described a key
    # that was retired. It is a new adoption, kept Active MAX_GRACE_HOURS like any key in use, even before
    # IAM shows the new use (the tag remembers the key's adoption was over: KEY@off).
    seeded = seed_user(aws.iam, aws.secrets, "alice", ("Active",), held=None, stale=False)
    (in_use,) = seeded.key_ids
    invoke(seeded.secret)
    assert in_use in adopted_tag(aws)
    clock.advance(8 * 24 * 3600)
    (entry,) = invoke(seeded.secret)["secrets"]
    assert entry["status"] == "retired" and aws.keys("alice")[in_use] == "Inactive"
    assert adopted_tag(aws) == f"{in_use}@off", "the adoption ends with the key's retirement"

    clock.advance(30 * 24 * 3600)
    aws.iam.update_access_key(UserName="alice", AccessKeyId=in_use, Status="Active")
    lagging_iam.use("alice", in_use, clock.now(), delay=timedelta(hours=2))  # a use IAM shows two hours later
    clock.advance(A_MINUTE)
    (entry,) = invoke(seeded.secret)["secrets"]
    assert aws.keys("alice")[in_use] == "Active", entry
    assert entry["adopted"] == in_use and entry["status"] == "waiting"
    for _ in range(6):  # every day of MAX_GRACE_HOURS (7 days) it stays on
        clock.advance(24 * 3600)
        lagging_iam.use("alice", in_use, clock.now(), delay=timedelta(hours=2))
        (entry,) = invoke(seeded.secret)["secrets"]
        assert aws.keys("alice")[in_use] == "Active", entry


def test_an_adoption_entry_whose_key_is_gone_is_pruned_by_the_next_run(aws, invoke, clock):
    seeded = seed_user(aws.iam, aws.secrets, "alice", ("Active",), held=None, stale=False)
    (in_use,) = seeded.key_ids
    invoke(seeded.secret)
    assert in_use in adopted_tag(aws)
    aws.iam.delete_access_key(UserName="alice", AccessKeyId=in_use)  # a person deletes it by hand
    invoke(seeded.secret)
    assert adopted_tag(aws) == ""


# --- IAM's lists lag a change: a key not listed yet is not gone ------------------------------------------------


def truth(user: str) -> dict[str, str]:
    """The user's keys as they are (moto's own state), not as IAM's lagging list shows them."""
    return iam_key_states()[user]


def test_a_run_right_after_a_rotation_whose_list_lags_undoes_nothing(aws, invoke, clock, lagging_lists,
                                                                      monkeypatch):
    # Seconds after a rotation (a console run, a second schedule) IAM may still list the keys as they were: the
    # new key missing, the old one as it was. The key the secret holds is not gone: nothing is restored, made
    # or retired on that list; the run says why and the next one judges.
    monkeypatch.setenv("GRACE_HOURS", "24")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    lagging_lists.settled()
    (old,) = seeded.key_ids
    invoke(seeded.secret)
    new = aws.value(seeded.secret)["AccessKeyId"]
    clock.advance(10)

    (entry,) = invoke(seeded.secret)["secrets"]

    assert entry["status"] == "skipped" and f"IAM does not list the key the secret holds, {new}, yet" in entry["reason"]
    assert aws.value(seeded.secret)["AccessKeyId"] == new and truth("alice") == {old: "Active", new: "Active"}
    clock.advance(LIST_LAG.total_seconds())
    (entry,) = invoke(seeded.secret)["secrets"]
    assert entry["status"] == "waiting" and aws.value(seeded.secret)["AccessKeyId"] == new


def test_a_leak_of_a_key_iam_does_not_list_yet_is_said_not_replaced_then_answered(aws, invoke, clock, lagging_lists):
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    lagging_lists.settled()
    invoke(seeded.secret)
    new = aws.value(seeded.secret)["AccessKeyId"]  # leaked at once (pasted in a public repository)
    clock.advance(10)
    with pytest.raises(RotationFailed, match=f"exposed key {new} NOT replaced: .*IAM does not list key {new}"):
        invoke(seeded.secret, event={"exposed": [new]})
    assert truth("alice")[new] == "Active" and aws.value(seeded.secret)["AccessKeyId"] == new

    clock.advance(LIST_LAG.total_seconds())  # the operator sends the event again
    (entry,) = invoke(seeded.secret, event={"exposed": [new]})["secrets"]
    assert entry["status"] == "rotated" and truth("alice")[new] == "Inactive"
    assert truth("alice")[aws.value(seeded.secret)["AccessKeyId"]] == "Active"


# --- CloudTrail shows an event minutes late: what it does not show yet is said, never taken for "no one" --------


def test_a_use_cloudtrail_does_not_show_yet_is_said_to_be_maybe_missing(aws, invoke, clock, cloudtrail,
                                                                        monkeypatch):
    # The old key was used five minutes ago: IAM's last-used data shows it (kept Active), CloudTrail's event
    # history not yet. The report says the events may not have appeared; nothing is decided on CloudTrail.
    monkeypatch.setenv("GRACE_HOURS", "24")
    monkeypatch.setenv("LOOKUP_HOLDOUTS", "true")
    cloudtrail.delay = CLOUDTRAIL_LAG
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    invoke(seeded.secret)
    (old,) = seeded.key_ids
    clock.advance(30 * 3600)
    used = clock.now() - timedelta(minutes=5)
    set_last_used("alice", old, used)
    cloudtrail.record(old, used, source_ip="198.51.100.23")
    (entry,) = invoke(seeded.secret)["secrets"]
    assert entry["status"] == "waiting" and aws.keys("alice")[old] == "Active"
    assert entry["holdouts"] == [] and "events take up to 15 minutes to appear" in entry["holdouts_note"]


# --- ListSecrets lags by up to five minutes: a secret a prefix finds is read with DescribeSecret, which does not ----


@pytest.fixture
def lagging_secret_lists(aws, clock):
    """Secrets Manager's ListSecrets as far behind as AWS's (``lagging_aws.LaggingSecretLists``), on the test's
    clock."""
    stand_in = LaggingSecretLists(clock.now)
    with install_secret_lists(stand_in):
        yield stand_in


PREFIX = "iam-keys/*"
LISTED_BUT_DELETED = "deleted since ListSecrets listed it (its list lags up to five minutes); nothing to do"


def listed_names(aws) -> set[str]:
    """The names ListSecrets shows now (through the stand-in), as the function's prefix finds them."""
    answer = aws.secrets.list_secrets(Filters=[{"Key": "name", "Values": ["iam-keys/"]}])
    return {secret["Name"] for secret in answer["SecretList"]}


def test_a_secret_made_a_minute_ago_is_found_by_its_prefix_only_once_listsecrets_lists_it(
        aws, invoke, clock, lagging_secret_lists):
    old = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    lagging_secret_lists.settled()
    new = seed_row(aws.iam, aws.secrets, ROWS[1], user="bob")
    clock.advance(A_MINUTE)
    assert listed_names(aws) == {old.secret}, "the test world lags as AWS does"

    result = invoke(sec=PREFIX)  # nothing fails

    assert [(o["secret"], o["status"]) for o in result["secrets"]] == [(old.secret, "rotated")]
    assert result["failed"] == 0 and truth("bob") == {new.key_ids[0]: "Active"}
    assert aws.value(new.secret)["AccessKeyId"] == new.key_ids[0], "nothing was said or done of bob's secret"

    clock.advance(SECRETS_LIST_LAG.total_seconds())
    outcomes = {o["secret"]: o for o in invoke(sec=PREFIX)["secrets"]}
    assert outcomes[new.secret]["status"] == "rotated" and outcomes[new.secret]["old_key_id"] == new.key_ids[0]
    assert aws.value(new.secret)["AccessKeyId"] != new.key_ids[0] and aws.holds_working_key(new.secret)


@pytest.mark.parametrize("deletion, found", [({"ForceDeleteWithoutRecovery": True}, "not found"),
                                             ({"RecoveryWindowInDays": 7}, "scheduled for deletion")],
                         ids=["at-once", "scheduled"])
def test_a_secret_deleted_a_minute_ago_that_listsecrets_still_lists_is_skipped_and_fails_no_run(
        aws, invoke, clock, lagging_secret_lists, deletion, found):
    kept = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    gone = seed_row(aws.iam, aws.secrets, ROWS[1], user="bob")
    lagging_secret_lists.settled()
    aws.secrets.delete_secret(SecretId=gone.secret, **deletion)
    clock.advance(A_MINUTE)
    assert gone.secret in listed_names(aws), "the test world lags as AWS does"

    result = invoke(sec=PREFIX)  # no RotationFailed

    outcomes = {o["secret"]: o for o in result["secrets"]}
    assert outcomes[gone.secret]["status"] == "skipped" and result["failed"] == 0
    assert outcomes[gone.secret]["reason"] == f"{found}: {LISTED_BUT_DELETED}"
    assert outcomes[kept.secret]["status"] == "rotated" and aws.holds_working_key(kept.secret)
    assert truth("bob") == {gone.key_ids[0]: "Active"}, "nothing done to the deleted secret's user"

    clock.advance(SECRETS_LIST_LAG.total_seconds())
    assert [o["secret"] for o in invoke(sec=PREFIX)["secrets"]] == [kept.secret]


@pytest.mark.parametrize("sec, event", [("iam-keys/ghost;" + PREFIX, None), ("iam-keys/bob;" + PREFIX, None),
                                        (PREFIX, {"secrets": ["iam-keys/bob"]})],
                         ids=["named-never-made", "named-and-deleted", "targeted-and-deleted"])
def test_a_secret_named_explicitly_that_is_not_found_still_fails(aws, invoke, clock, lagging_secret_lists,
                                                                  sec, event):
    # Only a secret ListSecrets alone found is forgiven for being gone: one sec or the event names is wanted.
    kept = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    gone = seed_row(aws.iam, aws.secrets, ROWS[1], user="bob")
    lagging_secret_lists.settled()
    aws.secrets.delete_secret(SecretId=gone.secret, ForceDeleteWithoutRecovery=True)
    clock.advance(A_MINUTE)
    named = sec.split(";")[0] if event is None else gone.secret

    with pytest.raises(RotationFailed, match=f"secret '{named}': not found"):
        invoke(sec=sec, event=event)
    if event is None:
        assert aws.holds_working_key(kept.secret) and aws.value(kept.secret)["AccessKeyId"] != kept.key_ids[0]


# --- the function's marks while IAM's data lags: a person's new key, a leak, a forged or future-dated mark ------


def test_a_person_s_key_first_used_half_an_hour_after_it_was_made_is_not_taken_for_the_function_s_lost_key(
        aws, invoke, faults, clock, lagging_iam):
    # Made two minutes after an interrupted rotation's mark, first used 30 minutes later; IAM shows that use four
    # hours after it. A run just past four hours after the key was made sees no use yet: IAM's data covers none
    # of the key's life then, so the key is not deleted (it would be, with a proof window of LAST_USED_LAG alone).
    seeded = crashed_after_the_mark(aws, invoke, faults)
    clock.advance(2 * A_MINUTE)
    person = aws.iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]
    lagging_iam.use("alice", person, clock.now() + timedelta(minutes=30), delay=IAM_LAST_USED_LAG)
    clock.advance(LAST_USED_LAG.total_seconds() + A_MINUTE)
    (entry,) = invoke(seeded.secret)["secrets"]
    assert aws.keys("alice")[person] == "Active", entry
    clock.advance(A_MINUTE * 30)  # now IAM shows the use: someone's key in use, adopted
    (entry,) = invoke(seeded.secret)["secrets"]
    assert aws.keys("alice")[person] == "Active" and entry["adopted"] == person


def test_a_leak_of_the_held_key_just_after_a_crashed_create_is_answered_at_once(aws, invoke, faults, clock):
    # The crash left the function's own key, not yet proven so (IAM lags): a leak cannot wait a day for the proof.
    # The key made just after the mark that IAM shows never used is taken for the function's own, and freed.
    seeded, orphan = crashed_after_create(aws, invoke, faults)
    (leaked,) = seeded.key_ids
    clock.advance(10 * A_MINUTE)
    (entry,) = invoke(seeded.secret, event={"exposed": [leaked]})["secrets"]
    assert entry["status"] == "rotated" and aws.keys("alice")[leaked] == "Inactive"
    assert orphan not in aws.keys("alice") and aws.holds_working_key(seeded.secret)


def test_a_forged_mark_naming_a_person_s_key_in_use_as_the_last_create_s_old_key_frees_nothing(aws, invoke, clock):
    # Someone with iam:TagUser writes key-rotation-made with current=K, K a person's key in use (adopted). A leak
    # of the held key must not take K for the function's own old key and delete it: the mark's create stored no
    # version of this secret. The held key is NOT replaced and says why; K stays Active.
    seeded = seed_user(aws.iam, aws.secrets, "alice", ("Active", "Active"), held=0, stale=False)
    held, person = seeded.key_ids
    set_last_used("alice", person, clock.now())
    invoke(seeded.secret, event={"dry_run": True})
    yesterday = (clock.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    aws.iam.tag_user(UserName="alice", Tags=[{"Key": MADE_TAG, "Value": f"{yesterday} current={person}"}])
    with pytest.raises(RotationFailed, match=f"exposed key {held} NOT replaced"):
        invoke(seeded.secret, event={"exposed": [held]})
    assert aws.keys("alice") == {held: "Active", person: "Active"}


def test_a_mark_dated_in_the_future_does_not_hold_a_repair_back(aws, invoke, clock, monkeypatch):
    # The key the secret holds was deleted by hand long after the function's last create; a mark dated in the
    # future (clock skew, or a forged tag) must not make every run wait for IAM's list.
    monkeypatch.setenv("GRACE_HOURS", "1")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    invoke(seeded.secret)
    current = aws.value(seeded.secret)["AccessKeyId"]
    clock.advance(LIST_LAG.total_seconds())
    aws.iam.delete_access_key(UserName="alice", AccessKeyId=current)
    tomorrow = (clock.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    aws.iam.tag_user(UserName="alice", Tags=[{"Key": MADE_TAG, "Value": f"{tomorrow} {current}"}])
    (entry,) = invoke(seeded.secret)["secrets"]
    assert entry["status"] == "rolled_back" and aws.holds_working_key(seeded.secret)


# --- IAM's credential report is up to four hours old: the report says when it was made ------------------------


def test_the_account_report_is_as_old_as_iam_s_credential_report_and_says_when_it_was_made(aws, invoke, clock,
                                                                                             monkeypatch):
    # The report is IAM's, made anew at most every four hours: a key rotated an hour after it still shows there
    # as overdue. The function changes nothing on it (it only reports) and says when IAM made it.
    from lagging_aws import AgingCredentialReport, aging_report

    monkeypatch.setenv("ACCOUNT_REPORT", "true")
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    backdate_key("alice", seeded.key_ids[0], 100)
    report = AgingCredentialReport(clock.now)
    with aging_report(report):
        made = invoke(seeded.secret, event={"report": True})["report"]
        assert [r["user"] for r in made["overdue_managed"]] == ["alice"]
        invoke(seeded.secret)  # rotated: alice's overdue key is now Inactive
        clock.advance(3600)
        later = invoke(seeded.secret, event={"report": True})["report"]
    assert later["generated"] == made["generated"] == report.report[0].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [r["user"] for r in later["overdue_managed"]] == ["alice"], "as of the report IAM made an hour ago"
    assert aws.holds_working_key(seeded.secret)


def test_a_leak_of_a_person_s_key_made_a_moment_ago_and_not_listed_yet_is_said_not_replaced(
        aws, invoke, clock, lagging_lists):
    # Found by the model: a person makes a key and it leaks at once; IAM's list does not show it yet. The run
    # must not call it "already Inactive or gone" while it is Active.
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    lagging_lists.settled()
    person = aws.iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]
    with pytest.raises(RotationFailed, match=f"exposed key {person} NOT replaced: .*IAM does not list key {person}"):
        invoke(seeded.secret, event={"exposed": [person]})
    assert truth("alice")[person] == "Active"


def rotated_then_rolled_back(aws, invoke, clock, lagging_lists):
    """alice's key rotated, then (the list settled) rolled back: her old key Active and current again, the new
    one Inactive; IAM's list still shows the state before the rollback. (The secret, its old and its new key.)"""
    seeded = seed_row(aws.iam, aws.secrets, ROWS[1], user="alice")
    lagging_lists.settled()
    (old,) = seeded.key_ids
    invoke(seeded.secret)  # rotated: old Inactive
    new = aws.value(seeded.secret)["AccessKeyId"]
    clock.advance(LIST_LAG.total_seconds())
    invoke(seeded.secret, event={"rollback": [seeded.secret]})  # old Active and current again, new Inactive
    assert truth("alice") == {old: "Active", new: "Inactive"}
    return seeded, old, new


def test_a_leak_of_a_key_a_rollback_just_turned_on_is_answered_whatever_the_list_says(aws, invoke, clock,
                                                                                      lagging_lists):
    # Found by the model: a rollback turns the previous key on again and makes it current; IAM's list still
    # shows it Inactive when a leak of it arrives. The run must not call it "already Inactive": it says NOT
    # replaced (a leaked key the list shows Inactive that the secret does not hold is deactivated again: a no-op).
    seeded, old, new = rotated_then_rolled_back(aws, invoke, clock, lagging_lists)
    with pytest.raises(RotationFailed, match=f"exposed key {old} NOT replaced: .*IAM lists key {old}, the one the "
                                             "secret holds, as Inactive"):
        invoke(seeded.secret, event={"exposed": [old]})
    assert truth("alice")[old] == "Active"


def test_a_run_a_minute_after_a_rollback_waits_for_iam_s_list_and_deletes_nothing(aws, invoke, clock, lagging_lists):
    # IAM's list may show the key a rollback just turned on as Inactive for a minute; the run must not take the
    # secret's key for a dead one (replace it and delete it after the store). The secret's LastChangedDate,
    # Secrets Manager's own and read consistently, says it changed a moment ago: the run waits.
    seeded, old, new = rotated_then_rolled_back(aws, invoke, clock, lagging_lists)
    clock.advance(20)

    (entry,) = invoke(seeded.secret)["secrets"]

    assert entry["status"] == "skipped" and f"lists the key the secret holds, {old}, Inactive" in entry["reason"]
    assert truth("alice") == {old: "Active", new: "Inactive"}, "nothing deleted, nothing made"
    assert aws.value(seeded.secret)["AccessKeyId"] == old
    clock.advance(LIST_LAG.total_seconds())
    (entry,) = invoke(seeded.secret)["secrets"]  # the list has caught up: an ordinary run (these tests rotate each)
    assert entry["status"] == "rotated" and entry["old_key_id"] == old
    assert truth("alice")[aws.value(seeded.secret)["AccessKeyId"]] == "Active"
