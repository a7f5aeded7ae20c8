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
- ``CLOUDTRAIL_LAG``: LookupEvents shows an event up to 15 minutes after the call (CloudTrail User Guide,
  "Working with CloudTrail event history": events appear within about 15 minutes). ``CloudTrailLookups``
  (conftest) takes it as ``delay``.
- ``STS_NEW_KEY_LAG``: a new access key may be refused by STS for seconds (IAM User Guide, "Manage access
  keys": a new key can take a few seconds to work); ``AwsLikeSts.not_yet`` (conftest) refuses it so.

Each class takes ``now``, the account's one clock (the test's, or freezegun's in the model), and is installed
in place of moto's response method (``install``), never in place of any code of the function.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

IAM_LAST_USED_LAG = timedelta(hours=4)
IAM_LIST_LAG = timedelta(minutes=1)
CLOUDTRAIL_LAG = timedelta(minutes=15)
STS_NEW_KEY_LAG = timedelta(seconds=10)


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


def new_keys_refused(now: Callable[[], datetime], lag: timedelta = STS_NEW_KEY_LAG) -> Callable[[str], bool]:
    """For ``AwsLikeSts.not_yet``: STS refuses a key IAM made less than ``lag`` ago, as AWS refuses a key that has
    not reached every endpoint yet (read from moto's state: the key's creation date)."""
    from moto.iam.models import iam_backends

    def not_yet(key_id: str) -> bool:
        made = next((k.create_date for backend in iam_backends.values() for user in backend["aws"].users.values()
                     for k in user.access_keys if k.access_key_id == key_id), None)
        return made is not None and naive(now()) - naive(made) < lag

    return not_yet


@contextmanager
def install(last_used: LaggingLastUsed | None = None, lists: LaggingKeyLists | None = None) -> Iterator[None]:
    """The stand-ins in place of moto's IAM answers, for the block's length."""
    from moto.iam.responses import IamResponse

    originals = {name: getattr(IamResponse, name) for name in (
        "get_access_key_last_used", "list_access_keys", "create_access_key", "update_access_key",
        "delete_access_key")}

    def put(name: str, handler: Callable[[Any, Any], Any]) -> None:
        setattr(IamResponse, name, lambda self: handler(self, originals[name]))

    if last_used is not None:
        put("get_access_key_last_used", last_used.answer)
    if lists is not None:
        put("list_access_keys", lists.answer)
        for name in ("create_access_key", "update_access_key", "delete_access_key"):
            put(name, lists.changing)
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(IamResponse, name, method)
