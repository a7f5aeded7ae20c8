"""AWS as eventually consistent as AWS is: the stand-ins the model and tests/test_lagging_aws.py share.

moto is instantly consistent: a key used a second ago shows as used, a deleted key is gone from every list.
AWS is not. Each stand-in here answers one API as AWS does at the wire, from a view that lags the truth by
as much as AWS documents, while moto keeps the truth for the tests' judgement. The delays, each with its
source:

- ``IAM_LAST_USED_LAG``: GetAccessKeyLastUsed shows a use up to 4 hours late (IAM User Guide, "Refine
  permissions in AWS using last accessed information": "recent activity usually appears within 4 hours").
- ``IAM_LIST_LAG``: ListAccessKeys may miss a key just made, or still list (with its old status) one just
  deleted or changed (IAM User Guide, "Troubleshoot IAM": changes are not always immediately visible; IAM is
  eventually consistent and gives no bound: a minute is taken here, longer than any seen).
- ``CREDENTIAL_REPORT_AGE``: GenerateCredentialReport makes a new report only when the last one is more than
  4 hours old; until then GetCredentialReport answers the old one (IAM's GenerateCredentialReport examples:
  a new report "can be done every four hours. If the last report is still recent the State field reads
  COMPLETE"; AWS Knowledge Center, "config credential report": a report made in the last 4 hours is used).
- ``CLOUDTRAIL_LAG``: LookupEvents shows an event up to 15 minutes after the call (CloudTrail User Guide,
  "Working with CloudTrail event history": events appear within about 15 minutes). ``CloudTrailLookups``
  (conftest) takes it as ``delay``.
- ``STS_NEW_KEY_LAG``: a new access key may be refused by STS for seconds (IAM User Guide, "Manage access
  keys": a new key can take a few seconds to work); ``AwsLikeSts.not_yet`` (conftest) refuses it so.
- A secret's ``LastChangedDate`` ("the last date and time that this secret was modified in any way",
  DescribeSecret) moves when a staging label moves; moto moves it only on a new value or metadata, and by the
  wall clock: ``SecretChangeDates`` moves it on every change, on the account's clock.
- ``SECRETS_LIST_LAG``: ListSecrets may miss a secret made, or still list one deleted, in the last five
  minutes (Secrets Manager API Reference, ListSecrets: "ListSecrets is eventually consistent, however it might
  not reflect changes from the last five minutes. To get the latest information for a specific secret, use
  DescribeSecret"; today worded "All Secrets Manager operations are eventually consistent. ListSecrets might
  not reflect changes from the last five minutes"). ``LaggingSecretLists``, installed by ``install_secret_lists``.

Each class takes ``now``, the account's one clock (the test's, or freezegun's in the model), and is installed
in place of moto's response method (``install``, ``install_secret_lists``), never in place of any code of the
function.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

IAM_LAST_USED_LAG = timedelta(hours=4)
CREDENTIAL_REPORT_AGE = timedelta(hours=4)
IAM_LIST_LAG = timedelta(minutes=1)
CLOUDTRAIL_LAG = timedelta(minutes=15)
STS_NEW_KEY_LAG = timedelta(seconds=10)
SECRETS_LIST_LAG = timedelta(minutes=5)


def naive(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None)  # moto keeps naive UTC


class LaggingLastUsed:
    """IAM's GetAccessKeyLastUsed as AWS answers it: each use of a key shows only once its own delay (0 to
    IAM_LAST_USED_LAG) has passed on ``now``. The truth stays in moto (``seed.set_last_used``), for the tests'
    judgement; the function reads only this view. ``use`` records a use and its delay."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now
        self.uses: dict[str, list[tuple[datetime, datetime, str]]] = {}  # key -> (used, visible from, user)

    def use(self, user: str, key_id: str, when: datetime, delay: timedelta = IAM_LAST_USED_LAG) -> None:
        from seed import set_last_used

        set_last_used(user, key_id, naive(when))
        self.uses.setdefault(key_id, []).append((naive(when), naive(when) + min(delay, IAM_LAST_USED_LAG), user))

    def shown(self, key_id: str) -> datetime | None:
        """The last use IAM shows now: the latest whose delay has passed."""
        now = naive(self.now())
        return max((used for used, visible, _ in self.uses.get(key_id, ()) if visible <= now), default=None)

    def answer(self, response: Any, original: Any) -> Any:
        """In place of moto's IamResponse.get_access_key_last_used."""
        from moto.core.responses import ActionResult

        result = original(response)
        key_id = response._get_param("AccessKeyId")
        if key_id not in self.uses:
            return result
        when = self.shown(key_id)
        shown = ({"LastUsedDate": when, "Region": "us-east-1", "ServiceName": "s3"} if when else
                 {"LastUsedDate": None, "Region": "N/A", "ServiceName": "N/A"})
        return ActionResult({"UserName": self.uses[key_id][0][2], "AccessKeyLastUsed": shown})


class LaggingKeyLists:
    """IAM's ListAccessKeys as AWS answers it: for IAM_LIST_LAG after a change to a user's keys (made by
    anyone: the function, a person, the test) the list is the one from before the change; later changes within
    that time extend it. The changes themselves are applied by moto at once (a new key works once STS takes
    it; a deleted key is gone)."""

    def __init__(self, now: Callable[[], datetime], lag: timedelta = IAM_LIST_LAG) -> None:
        self.now, self.lag = now, lag
        self.before: dict[str, tuple[datetime, list[Any]]] = {}  # user -> (last change, the list before the first)

    def settled(self) -> None:
        """Every change so far is old: IAM's lists show it (an account seeded long before the test's now)."""
        self.before.clear()

    def snapshot(self, backend: Any, user: str) -> list[Any]:
        return [copy.copy(key) for key in backend.list_access_keys(user)]

    def changing(self, response: Any, original: Any) -> Any:
        """In place of moto's create/update/delete: note the list as it was, then let moto apply the change."""
        user = response._get_param("UserName")
        now = naive(self.now())
        if user:
            earlier = self.before.get(user)
            fresh = earlier is None or now >= earlier[0] + self.lag
            self.before[user] = (now, self.snapshot(response.backend, user) if fresh else earlier[1])
        return original(response)

    def answer(self, response: Any, original: Any) -> Any:
        """In place of moto's IamResponse.list_access_keys."""
        from moto.core.responses import ActionResult

        user = response._get_param("UserName")
        earlier = self.before.get(user or "")
        if earlier is None or naive(self.now()) >= earlier[0] + self.lag:
            return original(response)
        return ActionResult({"UserName": user, "AccessKeyMetadata": earlier[1]})


class LaggingSecretLists:
    """Secrets Manager's ListSecrets as AWS answers it: a secret made less than SECRETS_LIST_LAG ago (on ``now``)
    is not listed yet; one deleted (scheduled or at once) less than that ago is still listed as it was before (a
    copy of the secret, kept when it was deleted, gives its entry). moto applies each change at once: DescribeSecret
    and every other call answer from the truth. The list is moto's own (its filters, order and pages), from that
    view."""

    def __init__(self, now: Callable[[], datetime], lag: timedelta = SECRETS_LIST_LAG) -> None:
        self.now, self.lag = now, lag
        self.made: dict[str, datetime] = {}  # ARN -> when it was made
        self.deleted: dict[str, tuple[datetime, Any]] = {}  # ARN -> (when it was deleted, the secret as it was)

    def settled(self) -> None:
        """Every change so far is old: ListSecrets shows it (an account seeded long before the test's now)."""
        self.made.clear()
        self.deleted.clear()

    def creating(self, response: Any, original: Any) -> Any:
        """In place of moto's create_secret: let moto make it, and note when (on ``now``)."""
        answer = original(response)
        self.made[json.loads(answer)["ARN"]] = naive(self.now())
        return answer

    def deleting(self, response: Any, original: Any) -> Any:
        """In place of moto's delete_secret: keep the secret as ListSecrets lists it, then let moto delete it."""
        listed = response.backend.secrets.get(response._get_param("SecretId"))
        kept = copy.deepcopy(listed) if listed is not None and not listed.is_deleted() else None
        answer = original(response)
        if kept is not None:
            self.deleted[kept.arn] = (naive(self.now()), kept)
        return answer

    def new(self, arn: str, now: datetime) -> bool:
        """Made too recently for ListSecrets to list it."""
        return arn in self.made and now < self.made[arn] + self.lag

    def answer(self, response: Any, original: Any) -> Any:
        """In place of moto's SecretsManagerResponse.list_secrets (the same questions and answer, from the view:
        the secrets as they were SECRETS_LIST_LAG ago, for those changed since)."""
        from moto.secretsmanager.models import _matches
        from moto.secretsmanager.responses import _validate_filters

        filters = response._get_param("Filters", if_none=[])
        _validate_filters(filters)
        now, backend = naive(self.now()), response.backend
        kept = {arn: secret for arn, (when, secret) in self.deleted.items() if now < when + self.lag}
        truth, _ = backend.list_secrets(filters=filters, max_results=len(backend.secrets) + 1, next_token=None,
                                        include_planned_deletion=response._get_param("IncludePlannedDeletion",
                                                                                     if_none=False))
        shown = [entry for entry in truth if entry["ARN"] not in kept]
        shown += [secret.to_dict() for secret in kept.values() if _matches(secret, filters)]
        shown = [entry for entry in shown if not self.new(entry["ARN"], now)]
        page, token = backend._get_secret_values_page_and_next_token(
            shown, response._get_int_param("MaxResults"), response._get_param("NextToken"))
        return json.dumps({"SecretList": page, "NextToken": token})


class SecretChangeDates:
    """DescribeSecret's LastChangedDate as AWS keeps it: every change to a secret (a new value, a label moved)
    dates it on ``now``. moto dates only a new value or metadata, by the wall clock, and not a moved label."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now

    def changing(self, response: Any, original: Any) -> Any:
        """In place of moto's put_secret_value and update_secret_version_stage: let moto change it, then date it."""
        answer = original(response)
        secret = response.backend.secrets.get(response._get_param("SecretId"))
        if secret is not None:
            secret.last_changed_date = self.now().timestamp()
        return answer


def new_keys_refused(now: Callable[[], datetime], lag: timedelta = STS_NEW_KEY_LAG) -> Callable[[str], bool]:
    """For ``AwsLikeSts.not_yet``: STS refuses a key IAM made less than ``lag`` ago, as AWS refuses a key that has
    not reached every endpoint yet (read from moto's state: the key's creation date)."""
    from moto.iam.models import iam_backends

    def not_yet(key_id: str) -> bool:
        made = next((k.create_date for backend in iam_backends.values() for user in backend["aws"].users.values()
                     for k in user.access_keys if k.access_key_id == key_id), None)
        return made is not None and naive(now()) - naive(made) < lag

    return not_yet


class AgingCredentialReport:
    """IAM's credential report as AWS serves it: made anew only when the last one is CREDENTIAL_REPORT_AGE old,
    with its GeneratedTime; moto makes it afresh at every read, dated 2015."""

    def __init__(self, now: Callable[[], datetime], age: timedelta = CREDENTIAL_REPORT_AGE) -> None:
        self.now, self.age = now, age
        self.report: tuple[datetime, bytes] | None = None

    def generating(self, response: Any, original: Any) -> Any:
        """In place of moto's generate_credential_report: a new report only when the last is old enough."""
        answer = original(response)
        now = naive(self.now())
        if self.report is None or now - self.report[0] >= self.age:
            self.report = (now, response.backend.get_credential_report())
        return answer

    def answer(self, response: Any, original: Any) -> Any:
        """In place of moto's get_credential_report."""
        from moto.core.responses import ActionResult

        if self.report is None:
            return original(response)
        made, content = self.report
        return ActionResult({"Content": content, "ReportFormat": "text/csv",
                             "GeneratedTime": made.strftime("%Y-%m-%dT%H:%M:%SZ")})


@contextmanager
def answering(responses: type, handlers: dict[str, Callable[[Any, Any], Any]]) -> Iterator[None]:
    """Each of moto's response methods named in ``handlers`` answered by its stand-in, which is given the response
    and moto's own method, for the block's length."""
    originals = {name: getattr(responses, name) for name in handlers}
    for name, handler in handlers.items():
        setattr(responses, name, lambda self, handler=handler, original=originals[name]: handler(self, original))
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(responses, name, method)


def aging_report(report: AgingCredentialReport) -> Any:
    """The credential report's stand-in in place of moto's, for the block's length."""
    from moto.iam.responses import IamResponse

    return answering(IamResponse, {"generate_credential_report": report.generating,
                                   "get_credential_report": report.answer})


def install(last_used: LaggingLastUsed | None = None, lists: LaggingKeyLists | None = None) -> Any:
    """The stand-ins in place of moto's IAM answers, for the block's length."""
    from moto.iam.responses import IamResponse

    handlers: dict[str, Callable[[Any, Any], Any]] = {}
    if last_used is not None:
        handlers["get_access_key_last_used"] = last_used.answer
    if lists is not None:
        handlers["list_access_keys"] = lists.answer
        handlers.update(dict.fromkeys(("create_access_key", "update_access_key", "delete_access_key"),
                                      lists.changing))
    return answering(IamResponse, handlers)


def install_secret_lists(lists: LaggingSecretLists) -> Any:
    """The stand-in in place of moto's Secrets Manager answers (ListSecrets, and the creates and deletes it
    lags behind), for the block's length."""
    from moto.secretsmanager.responses import SecretsManagerResponse

    return answering(SecretsManagerResponse, {"list_secrets": lists.answer, "create_secret": lists.creating,
                                              "delete_secret": lists.deleting})


def install_secret_dates(dates: SecretChangeDates) -> Any:
    """The stand-in dating each change of a secret (SecretChangeDates), for the block's length."""
    from moto.secretsmanager.responses import SecretsManagerResponse

    return answering(SecretsManagerResponse, dict.fromkeys(("put_secret_value", "update_secret_version_stage"),
                                                           dates.changing))
