"""Shared fixtures: moto-backed AWS, an STS that answers as AWS does, an injected clock, state readers.

moto differs from AWS in four ways these fixtures correct for:
- moto's STS accepts any access key, even a deleted or Inactive one, and any
  signature. ``AwsLikeSts`` judges the request the function's own KeyIdentity
  signed, at the wire, as STS does: only an Active key of an existing user whose
  SigV4 signature verifies with that key's real secret authenticates.
- moto has no CloudTrail LookupEvents. ``CloudTrailLookups`` answers it in
  CloudTrail's documented shape (``Events[].CloudTrailEvent`` a JSON string),
  from events the test records, at CloudTrail's rate of 2 calls a second.
- moto's PutEvents takes a request of any size; ``bus`` refuses one over 256 KiB as AWS does.
- moto lets PutSecretValue rewrite an existing version's value; AWS refuses
  (ResourceExistsException). Tests that depend on it say so.
- moto is instantly consistent; AWS is not. tests/lagging_aws.py answers GetAccessKeyLastUsed (fixture
  ``lagging_iam``) and ListAccessKeys (``lagging_lists``) from views as far behind as AWS documents; the
  CloudTrail stand-in shows events ``delay`` late; AwsLikeSts refuses new keys with ``not_yet``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

import faults as fault_kit
import lambda_function
from lagging_aws import LaggingKeyLists, LaggingLastUsed, SecretChangeDates, install, install_secret_dates
from local_aws import LambdaContext, make_moto_move_current_as_aws_does, pointed_at, start_server
from seed import ACCOUNT_ID, iam_secret_keys

__all__ = ["LambdaContext"]  # tests import it from here

os.environ.update(
    AWS_DEFAULT_REGION="us-east-1",
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_PROFILE", None)
make_moto_move_current_as_aws_does()

# Bytecode is kept (__pycache__, which git ignores) even where the shell sets PYTHONDONTWRITEBYTECODE, as container
# images do: the suite starts a few hundred Pythons (make's targets, make local-aws, the demo, the xdist workers),
# and without it each compiles lambda_function.py and tools/*.py again (about 0.15 s a process) and each worker
# rewrites every test module's assertions again. What runs is the same code.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False


def share_botocore_data_loader() -> None:
    """Every boto3 session of the process reads botocore's service models once: the function makes a fresh
    session per execution environment, which the tests start anew for every test (the client cache is cleared
    so that no test's event hooks leak into the next). The models themselves are unchanged."""
    import functools

    import botocore.session

    if not getattr(botocore.session.create_loader, "shared", False):
        shared = functools.lru_cache(maxsize=4)(botocore.session.create_loader)
        shared.shared = True
        botocore.session.create_loader = shared


share_botocore_data_loader()


def share_botocore_event_aliases() -> None:
    """Each client copies its session's event emitter, and each copy worked out again, for every event name it
    emitted, what botocore's renamed events make of it (``EventAliaser._alias_event_name``: a loop over
    EVENT_ALIASES a name). The copies share the answers: the same aliases, the same names. With
    remember_moto_method_names, a fifth less time for the fault matrix."""
    from botocore.hooks import EventAliaser

    copy_aliaser = EventAliaser.__copy__
    if getattr(copy_aliaser, "shared", False):
        return

    def shared_copy(self: EventAliaser) -> EventAliaser:
        copied = copy_aliaser(self)
        if copied._event_aliases == self._event_aliases:
            copied._alias_name_cache = self._alias_name_cache
        return copied

    shared_copy.shared = True
    EventAliaser.__copy__ = shared_copy


def remember_moto_method_names() -> None:
    """moto looks up the method for each request by listing its responder class's functions anew
    (``inspect.getmembers``). The list is kept per class for as long as no class in its MRO gains or loses an
    attribute (a test's stand-in adds lookup_events to CloudTrail's, and takes it away)."""
    import moto.core.responses
    from moto.core.utils import method_names_from_class

    if getattr(moto.core.responses.method_names_from_class, "remembered", False):
        return
    known: dict[tuple, list[str]] = {}

    def remembered(clazz: type) -> list[str]:
        key = (clazz, *(tuple(vars(owner)) for owner in clazz.__mro__))
        if key not in known:
            known[key] = method_names_from_class(clazz)
        return known[key]

    remembered.remembered = True
    moto.core.responses.method_names_from_class = remembered


share_botocore_event_aliases()
remember_moto_method_names()

# TEST_CLOCK_SHIFT_DAYS=N runs the whole suite with every clock of the process, moto's included, N days ahead
# (by hand; the suite's own check is the year-ahead twins, below).
if os.environ.get("TEST_CLOCK_SHIFT_DAYS"):
    import freezegun

    freezegun.freeze_time(datetime.now(UTC) + timedelta(days=float(os.environ["TEST_CLOCK_SHIFT_DAYS"])),
                          tick=True).start()

EVENTS = Path(__file__).parent / "events"  # copies of ../shared/events
SETTINGS_VARIABLES = tuple(lambda_function.SETTINGS_TABLE)


STEPS = tuple(lambda_function.ROTATION_STEPS)  # createSecret, setSecret, testSecret, finishSecret
HOLDING_STAGES = (lambda_function.CURRENT, lambda_function.PREVIOUS, lambda_function.PENDING)  # a secret holds these


def step(secret: str, token: str, name: str, context: Any = None, clock: lambda_function.Clock | None = None) -> dict:
    """Invoke the handler as Secrets Manager does, as the function the secret's rotation names (on ``clock``, as
    lambda_handler runs on the system's, when given: a step that waits then waits on the test's clock)."""
    event = {"Step": name, "SecretId": secret, "ClientRequestToken": token}
    if clock is not None:
        return lambda_function.handle(event, context or LambdaContext(), os.environ, clock)
    return lambda_function.lambda_handler(event, context or LambdaContext())


def load_event(name: str, **changes: Any) -> dict:
    """One of the shared event shapes (tests/events), with fields changed."""
    return {**json.loads((EVENTS / f"{name}.json").read_text()), **changes}


def client_error(code: str, operation: str, message: str = "injected", status: int | None = None) -> ClientError:
    """A ClientError as botocore raises it (with an HTTP status when given)."""
    response: dict = {"Error": {"Code": code, "Message": message}}
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, operation)


class FakeClock(lambda_function.Clock):
    """Time that moves only when slept on (or set): tests never sleep."""

    def __init__(self, start: datetime | None = None) -> None:
        object.__setattr__(self, "state", {"now": start or datetime.now(UTC), "mono": 1000.0, "sleeps": []})
        object.__setattr__(self, "now", lambda: self.state["now"])
        object.__setattr__(self, "monotonic", lambda: self.state["mono"])
        object.__setattr__(self, "sleep", self._sleep)

    def _sleep(self, seconds: float) -> None:
        self.state["sleeps"].append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.state["mono"] += seconds
        self.state["now"] += timedelta(seconds=seconds)

    @property
    def sleeps(self) -> list[float]:
        return self.state["sleeps"]


class AwsLikeSts:
    """STS's GetCallerIdentity judged as AWS judges it, at the wire (moto's STS accepts any key and any
    signature). The request the function's own ``KeyIdentity`` signed reaches moto; this stand-in finds the key
    the Authorization header names in moto's IAM, refuses it unless it exists and is Active, and recomputes
    the SigV4 signature with the SecretAccessKey IAM holds for it: a wrongly signed request is refused too.

    ``refusals`` makes the first calls fail as IAM propagation does; ``answer`` replaces the answer (another
    account, no Arn...); ``on_call`` runs at each call.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.refusals = 0
        self.refusal_code = "InvalidClientTokenId"
        self.answer: dict | None = None
        self.on_call: Any = None
        self.not_yet: Any = None  # key id -> True while IAM has not propagated the key

    def judge(self, response: Any, original: Any) -> Any:
        """The stand-in for moto's TokenResponse.get_caller_identity."""
        from moto.core.responses import ActionResult

        headers = {k.lower(): v for k, v in response.headers.items()}
        body = response.raw_body or response.body or ""
        if not body and headers.get("content-length", "0") != "0":  # moto read the form already: as botocore sent it
            body = "&".join(f"{k}={v[0]}" for k, v in response.querystring.items())
        key_id, verdict = judge_signature(response.method, response.parsed_url.geturl(), headers, body)
        if key_id == os.environ.get("AWS_ACCESS_KEY_ID"):  # the function's own (role) credentials: AWS knows them
            return original(response)
        self.calls.append(key_id)
        if self.on_call:
            self.on_call()
        if len(self.calls) <= self.refusals or (self.not_yet and self.not_yet(key_id)):
            raise sts_error(self.refusal_code, "The security token included in the request is invalid.")
        if verdict:
            raise sts_error(verdict, "The request signature we calculated does not match the signature you "
                                     "provided." if verdict == "SignatureDoesNotMatch" else
                            "The security token included in the request is invalid.")
        if self.answer is not None:
            return ActionResult(self.answer)
        return original(response)


def sts_error(code: str, message: str) -> Exception:
    from moto.sts.exceptions import STSClientError

    return STSClientError(code, message)


def judge_signature(method: str, url: str, headers: dict[str, str], body: Any) -> tuple[str, str | None]:
    """(the key id the request is signed with, why STS refuses it or None), from moto's IAM state."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from moto.iam.models import iam_backends

    authorization = headers.get("authorization", "")
    fields = dict(part.strip().split("=", 1) for part in authorization.partition(" ")[2].split(",") if "=" in part)
    credential = fields.get("Credential", "").split("/")
    key_id = credential[0]
    accounts = [ACCOUNT_ID, *(account for account in list(iam_backends) if account != ACCOUNT_ID)]  # any account's
    key = next((k for account in accounts for user in iam_backends[account]["aws"].users.values()
                for k in user.access_keys if k.access_key_id == key_id), None)
    if key is None or key.status != "Active" or len(credential) != 5:
        return key_id, "InvalidClientTokenId"
    signed = fields.get("SignedHeaders", "").split(";")
    request = AWSRequest(method=method, url=url, data=body,
                         headers={name: headers[name] for name in signed if name in headers and name != "host"})
    request.context["timestamp"] = headers.get("x-amz-date", "")
    auth = SigV4Auth(Credentials(key_id, key.secret_access_key), credential[3], credential[2])  # service, region
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    return key_id, None if expected == fields.get("Signature") else "SignatureDoesNotMatch"


@pytest.fixture
def lagging_iam(aws, clock):
    """IAM's last-used data as far behind as AWS's (``lagging_aws.LaggingLastUsed``), on the test's clock."""
    stand_in = LaggingLastUsed(clock.now)
    with install(last_used=stand_in):
        yield stand_in


@pytest.fixture
def lagging_lists(aws, clock):
    """IAM's ListAccessKeys as far behind as AWS's (``lagging_aws.LaggingKeyLists``), on the test's clock; each
    change of a secret dated as AWS dates it (``SecretChangeDates``)."""
    stand_in = LaggingKeyLists(clock.now)
    with install(lists=stand_in), install_secret_dates(SecretChangeDates(clock.now)):
        yield stand_in


@functools.lru_cache(maxsize=4)
def readers(environment: tuple[str | None, ...]) -> tuple[Any, Any]:
    """The tests' own IAM and Secrets Manager clients, made once per process (a client costs about 15 ms to
    make; no test hooks into these, unlike the function's, which every test makes afresh)."""
    return boto3.client("iam"), boto3.client("secretsmanager")


class Aws:
    """boto3 clients onto moto plus readers of the state the function leaves."""

    def __init__(self, sts: AwsLikeSts) -> None:
        self.iam, self.secrets = readers(tuple(os.environ.get(name) for name in lambda_function.CLIENT_ENVIRONMENT))
        self.sts = sts

    def keys(self, user: str) -> dict[str, str]:
        """Key id -> status."""
        listed = self.iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
        return {k["AccessKeyId"]: k["Status"] for k in listed}

    def value(self, secret: str, stage: str = "AWSCURRENT") -> dict:
        return json.loads(self.secrets.get_secret_value(SecretId=secret, VersionStage=stage)["SecretString"])

    def versions(self, secret: str) -> list[dict]:
        """The secret's versions, without LastAccessedDate: reading a value moves it (moto: to the second, AWS: to
        the day), and what a run leaves behind is judged by what it wrote."""
        return [{k: v for k, v in version.items() if k != "LastAccessedDate"}
                for version in self.secrets.list_secret_version_ids(SecretId=secret)["Versions"]]

    def stages(self, secret: str) -> dict[str, list[str]]:
        return self.secrets.describe_secret(SecretId=secret)["VersionIdsToStages"]

    def holds_working_key(self, secret: str, stage: str = "AWSCURRENT") -> bool:
        """The version's key exists, is Active, and its SecretAccessKey is the real one."""
        value = self.value(secret, stage)
        key_id = value.get("AccessKeyId")
        return (
            self.keys(value["UserName"]).get(key_id) == "Active"
            and iam_secret_keys(value["UserName"]).get(key_id) == value.get("SecretAccessKey")
        )

    def held_keys(self, secret: str) -> dict[str, str]:
        """Key id -> status ("deleted" if IAM has it no more), for every key the secret holds: the keys of its
        AWSCURRENT, AWSPREVIOUS and AWSPENDING versions, as the function counts holders (``Run.holders``)."""
        held = {}
        for version, stages in self.stages(secret).items():
            if not set(stages) & set(HOLDING_STAGES):
                continue
            try:
                value = json.loads(self.secrets.get_secret_value(SecretId=secret, VersionId=version)["SecretString"])
            except ClientError:
                continue
            key_id = value.get("AccessKeyId")
            if key_id:
                held[key_id] = self.keys(value["UserName"]).get(key_id, "deleted")
        return held

    def active_unheld(self, secret: str, user: str) -> set[str]:
        """The user's Active keys the secret does not hold."""
        held = self.held_keys(secret)
        return {k for k, status in self.keys(user).items() if status == "Active" and k not in held}

    def assert_converged(self, secret: str) -> None:
        """Steady state: one Active key, the secret's and working, at most one Inactive."""
        value = self.value(secret)
        keys = self.keys(value["UserName"])
        active = [k for k, s in keys.items() if s == "Active"]
        assert active == [value["AccessKeyId"]], (keys, value["AccessKeyId"])
        assert len(keys) - len(active) <= 1, keys
        assert self.holds_working_key(secret)


@pytest.fixture(autouse=True)
def a_year_ahead(request):
    """For a year-ahead twin (marker ``year_ahead``), every clock of the process runs a year ahead of today."""
    if request.node.get_closest_marker("year_ahead") is None:
        yield
        return
    import freezegun

    # pytest's own timing keeps real time (its --durations figures)
    with freezegun.freeze_time(datetime.now(UTC) + timedelta(days=YEAR_AHEAD_DAYS), tick=True,
                               ignore=["_pytest.timing"]):
        yield


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    """Each test starts with no settings of ours in the environment and no cached clients."""
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    lambda_function.clients_for.cache_clear()
    yield
    lambda_function.clients_for.cache_clear()


@pytest.fixture
def sts():
    """STS as AWS judges it, in place of moto's answer (not of any code of ours). Installed by hand, not by
    monkeypatch, so that a test's monkeypatch.undo() (ending its faults) keeps it."""
    from moto.sts.responses import TokenResponse

    stand_in, original = AwsLikeSts(), TokenResponse.get_caller_identity
    TokenResponse.get_caller_identity = lambda self: stand_in.judge(self, original)
    yield stand_in
    TokenResponse.get_caller_identity = original


class CloudTrailLookups:
    """CloudTrail's LookupEvents as AWS answers it, in moto's place (moto has none): the management events the
    test records, filtered by the AccessKeyId attribute and StartTime/EndTime, newest first, MaxResults (at
    most 50) a page with a NextToken when more remain; each ``Events[]`` entry carries ``CloudTrailEvent``, the
    record as a JSON string. Like CloudTrail, whose event history is per region, a region's endpoint answers
    with that region's events only. Like CloudTrail, a third call within one second on the test's clock is
    refused with ThrottlingException (counted over every region: the stricter). ``refuse`` answers every call
    with that error code instead."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.events: list[dict] = []
        self.calls: list[dict] = []  # each call's request, with "at": the test clock's monotonic time
        self.throttled = 0
        self.refuse: str | None = None
        self.delay = timedelta(0)  # lagging_aws.CLOUDTRAIL_LAG: an event shows this long after the call

    def record(self, key_id: str, when: datetime, source_ip: str = "203.0.113.7",
               user_agent: str = "aws-cli/2.15.0 Python/3.11", event_source: str = "iam.amazonaws.com",
               event_name: str = "ListUsers", user: str = "app", region: str = "us-east-1",
               **fields: Any) -> None:
        """One management event made with ``key_id`` in ``region``; ``fields`` adds CloudTrail record fields
        (vpcEndpointId=...)."""
        self.events.append({"key_id": key_id, "when": when, "region": region, "record": {
            "eventVersion": "1.09", "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "eventSource": event_source,
            "eventName": event_name, "awsRegion": region, "sourceIPAddress": source_ip,
            "userAgent": user_agent, "userIdentity": {"type": "IAMUser", "userName": user, "accessKeyId": key_id},
            "eventID": f"{len(self.events):08d}-0000-0000-0000-000000000000", "readOnly": True, **fields}})

    def answer(self, response: Any) -> str:
        from moto.core.exceptions import JsonRESTError

        request = json.loads(response.body or "{}")
        now = self.clock.monotonic()
        recent = [c for c in self.calls if now - c["at"] < 1.0]
        self.calls.append({**request, "at": now, "region": response.region})
        if len(recent) >= 2:
            self.throttled += 1
            raise JsonRESTError("ThrottlingException", "Rate exceeded")
        if self.refuse:
            raise JsonRESTError(self.refuse, "injected")
        (attribute,) = request.get("LookupAttributes") or [{}]
        start, end = request.get("StartTime"), request.get("EndTime")
        found = [e for e in self.events if e["when"] + self.delay <= self.clock.now() and e["region"] == response.region
                 and attribute.get("AttributeKey") == "AccessKeyId"
                 and e["key_id"] == attribute.get("AttributeValue")
                 and (start is None or e["when"].timestamp() >= start)
                 and (end is None or e["when"].timestamp() <= end)]
        found.sort(key=lambda e: e["when"], reverse=True)
        page = found[:min(request.get("MaxResults", 50), 50)]
        body: dict = {"Events": [{
            "EventId": e["record"]["eventID"], "EventName": e["record"]["eventName"], "ReadOnly": "true",
            "AccessKeyId": e["key_id"], "EventTime": e["when"].timestamp(), "EventSource": e["record"]["eventSource"],
            "Username": e["record"]["userIdentity"]["userName"], "Resources": [],
            "CloudTrailEvent": json.dumps(e["record"])} for e in page]}
        if len(found) > len(page):
            body["NextToken"] = "more"
        return json.dumps(body)


@pytest.fixture
def cloudtrail(clock):
    """CloudTrail's LookupEvents in moto's place (see CloudTrailLookups), on the test's clock."""
    from moto.cloudtrail.responses import CloudTrailResponse

    stand_in = CloudTrailLookups(clock)
    CloudTrailResponse.lookup_events = lambda self: stand_in.answer(self)
    yield stand_in
    del CloudTrailResponse.lookup_events


def put_events_as_aws_does(original):
    """moto accepts a PutEvents request of any size; AWS refuses one whose entries add up to more than 256 KiB
    (14 bytes of time, then the UTF-8 of Source, DetailType, Detail and Resources), whole, with a
    ValidationException. This stand-in refuses as AWS does, then lets moto answer."""

    def put_events(self) -> str:
        from moto.core.exceptions import JsonRESTError

        entries = self._get_param("Entries") or []
        size = sum(14 + sum(len(str(e.get(k, "")).encode()) for k in ("Source", "DetailType", "Detail"))
                   + sum(len(r.encode()) for r in e.get("Resources") or []) for e in entries)
        if size > 256 * 1024:
            raise JsonRESTError("ValidationException", "Total size of the entries in the request is over the limit.")
        return original(self)

    return put_events


@pytest.fixture
def bus(aws, monkeypatch):
    """A bus, a rule matching every key change event, an SQS queue behind it; EVENT_BUS set. PutEvents refuses
    a request over its size limit as AWS does (``put_events_as_aws_does``)."""
    from moto.events.responses import EventsHandler

    monkeypatch.setattr(EventsHandler, "put_events", put_events_as_aws_does(EventsHandler.put_events))
    events, sqs = boto3.client("events"), boto3.client("sqs")
    events.create_event_bus(Name="keys")
    queue = sqs.create_queue(QueueName="consumer")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    # a consumer of key changes: every kind but a whole run's "Access Keys Checked" (test_org_central reads those)
    events.put_rule(Name="all", EventBusName="keys", EventPattern=json.dumps(
        {"source": ["key-rotation"], "detail-type": [{"anything-but": lambda_function.CHECKED}]}))
    events.put_targets(Rule="all", EventBusName="keys", Targets=[{"Id": "q", "Arn": queue_arn}])
    monkeypatch.setenv("EVENT_BUS", "keys")

    return lambda: drain(sqs, queue)


def drain(sqs: Any, queue: str) -> list[dict]:
    """Every event waiting on an SQS queue, read and deleted."""
    got = []
    while messages := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            got.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    return got


@pytest.fixture
def topic(aws, monkeypatch):
    """An SNS topic with an SQS queue subscribed (raw delivery); NOTIFY_TOPIC_ARN set. Returns a reader."""
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    arn = sns.create_topic(Name="key-rotation")["TopicArn"]
    queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    monkeypatch.setenv("NOTIFY_TOPIC_ARN", arn)

    def messages() -> list[str]:
        answer = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
        return [m["Body"] for m in answer.get("Messages", [])]

    return messages


@pytest.fixture(scope="session")
def moto_in_process():
    """One in-process moto per worker, started once: starting it per test cost more than most tests."""
    with mock_aws():
        yield


@pytest.fixture
def aws(sts, moto_in_process):
    """In-process moto, reset to an empty account, and STS answering as AWS does."""
    from moto.moto_api._internal.models import moto_api_backend

    moto_api_backend.reset()
    yield Aws(sts)


def read_exports(lines) -> dict[str, str]:
    """The variables `make local-aws` prints to export, read from its output up to its Ctrl-C line."""
    exports = {}
    for line in lines:
        found = re.match(r"\s+export (\w+)=(.*)", line)
        if found:
            exports[found[1]] = found[2]
        if "Ctrl-C" in line:
            break
    return exports


@pytest.fixture(scope="session")
def moto_server_started():
    """One moto server per worker, started once (tools/local_aws.py's, as make local-aws runs it): a new server
    for each test built moto's Flask app again for each service the test asked (tens of ms a test)."""
    running, endpoint = start_server(0)
    yield endpoint
    running.stop()


@pytest.fixture
def server(moto_server_started):
    """A moto server on 127.0.0.1 over HTTP, emptied (an empty account, as a new server has), with boto3 (and the
    AWS CLI) pointed at it."""
    with pointed_at(moto_server_started) as endpoint:
        yield endpoint


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def invoke(monkeypatch, clock):
    """Run the handler with `sec` set to the given secrets, on the test's clock."""

    def run(*secrets: str, event: dict | None = None, sec: str | None = None, context: Any = None):
        monkeypatch.setenv("sec", sec if sec is not None else ";".join(secrets))
        return lambda_function.handle(event if event is not None else load_event("console-test"), context,
                                      os.environ, clock)

    return run


E2E_FILES = {"test_end_to_end.py", "test_deploy.py", "test_readme.py", "test_lambda_runtime.py", "test_template.py"}


# The tests whose outcome depends on what day it is: redelivery windows, grace periods, the deadline, ages.
TIME_SENSITIVE = {"test_redelivery.py", "test_grace.py", "test_compliance.py", "test_operator_controls.py",
                  "test_entry_points.py", "test_hardened.py", "test_holdouts.py", "test_rollback.py", "test_dry_run.py"}
YEAR_AHEAD_DAYS = 366


def year_ahead_twin(item: pytest.Function) -> pytest.Function:
    """The same test, run with every clock of the process (ours, moto's, botocore's signing) a year ahead."""
    callspec = getattr(item, "callspec", None)
    name = f"{item.originalname}[{callspec.id}-a-year-ahead]" if callspec else f"{item.name}[a-year-ahead]"
    twin = pytest.Function.from_parent(item.parent, name=name, callspec=callspec, callobj=item.obj,
                                       fixtureinfo=item._fixtureinfo, originalname=item.originalname)
    twin.add_marker(pytest.mark.year_ahead)
    return twin


def pytest_collection_modifyitems(items):
    """Markers from what a test uses: `e2e` (a moto server over HTTP, the AWS CLI, the Lambda runtime client),
    `aws` (moto in-process), else `unit` (pure functions): `pytest -m unit` answers in seconds. And the check
    that no test holds a date that will pass: each time-sensitive test runs again a year ahead."""
    items.extend([year_ahead_twin(item) for item in items if item.path.name in TIME_SENSITIVE
                  and isinstance(item, pytest.Function) and not item.get_closest_marker("year_ahead")])
    for item in items:
        if item.get_closest_marker("unit") or item.get_closest_marker("e2e"):
            continue
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & {"server", "region"} or item.path.name in E2E_FILES:
            item.add_marker(pytest.mark.e2e)
        elif fixtures & {"aws", "invoke", "sts"} or item.get_closest_marker("aws"):
            item.add_marker(pytest.mark.aws)
        else:
            item.add_marker(pytest.mark.unit)
    items.sort(key=run_order)


# The tests that run for many seconds each (the README's walks and the demo, the model, make local-aws): run first,
# so that none starts last and leaves the other workers idle. Then e2e, aws, unit: the shortest last.
LONG_FILES = ("test_readme.py", "test_model.py", "test_local_aws.py")


def run_order(item: pytest.Item) -> tuple[int, int]:
    """Where the test goes in the run: a stable sort, so each file's own order is kept."""
    if item.path.name in LONG_FILES:
        return 0, LONG_FILES.index(item.path.name)
    return next(rank for rank, marker in enumerate(("e2e", "aws", "unit"), 1) if item.get_closest_marker(marker)), 0


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under xdist (-n), work stealing unless --dist names a scheduler: a worker that runs out takes half of what
    another still has queued, so the workers finish together (xdist's default hands out fixed chunks, and one
    worker was left running e2e tests alone for the last 15 to 20 s)."""
    given = [*config.invocation_params.args, *os.environ.get("PYTEST_ADDOPTS", "").split()]
    if config.getoption("dist") != "load" or any(arg.startswith(("--dist", "-d")) for arg in given):
        return None
    from xdist.scheduler import WorkStealingScheduling

    return WorkStealingScheduling(config, log)


class WaitOnClock:
    """A token bucket's condition whose wait passes on the test's clock instead of real time."""

    def __init__(self, condition: Any, clock: FakeClock) -> None:
        self.condition, self.clock = condition, clock

    def __enter__(self) -> Any:
        return self.condition.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self.condition.__exit__(*exc)

    def wait(self, timeout: float | None = None) -> bool:
        # Real time always moves on; a float clock near 1000 s does not for a wait of 1e-16 s: at least 1 ms.
        self.clock.sleep(max(timeout or 0, 0.001))
        return True

    def notify_all(self) -> None:
        self.condition.notify_all()

    def notify(self, n: int = 1) -> None:
        self.condition.notify(n)


@pytest.fixture
def botocore_on_clock(monkeypatch, clock):
    """botocore's own waits run on the test's clock, as its retries module takes ``sleep=`` and a clock: the
    retry backoff (time.sleep in botocore.endpoint) and adaptive mode's rate limiter (its token bucket's
    clock and condition). botocore's retry handler itself runs unchanged; a test never really sleeps."""
    import botocore.endpoint
    import botocore.retries.bucket as bucket

    monkeypatch.setattr(botocore.endpoint.time, "sleep", clock.sleep)
    monkeypatch.setattr(bucket.Clock, "sleep", lambda self, seconds: clock.sleep(seconds))
    monkeypatch.setattr(bucket.Clock, "current_time", lambda self: clock.state["mono"])
    original = bucket.TokenBucket.__init__

    def init(self, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._new_fill_rate_condition = WaitOnClock(self._new_fill_rate_condition, clock)

    monkeypatch.setattr(bucket.TokenBucket, "__init__", init)
    return clock


@pytest.fixture
def faults(botocore_on_clock):
    """Faults at the wire on the function's clients (tests/faults.py); botocore's backoff on the test's clock.
    ``faults.clear()`` ends them (the test's other patches stay)."""
    made = fault_kit.Faults()
    yield made
    made.clear()
