"""A moto server on 127.0.0.1 standing in for AWS, for the demo, end-to-end tests and benchmarks.

moto runs a Lambda function's code only in Docker. Here a Python function's invocations run in this
process instead (``make_moto_run_lambda_in_process``): the deployed zip's handler module, loaded afresh for
each invocation, against this same server, with the function's configured environment and its role's
credentials (so it acts in its own account); what it logs goes to the CloudWatch Logs group
/aws/lambda/FUNCTION, as Lambda's does.

`make local-aws` (``serve_forever``) also holds an organisation (``make_organisation``), with the stand-ins that
make moto's EventBridge, StackSets and change sets behave as AWS's across accounts and regions
(``organisation_stand_ins``; tests/test_org_central.py sets the same ones).

It answers only requests that name it, 127.0.0.1:PORT or localhost:PORT (``LoopbackHostOnly``): a web page that
rebinds its own DNS name to 127.0.0.1 gets a 403, not a Lambda function run in this process.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import linecache
import logging
import os
import re
import shlex
import signal
import sys
import threading
import time
import traceback
import types
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moto.server import ThreadedMotoServer

from seed import FUNCTION_ARN

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


LOOPBACK_NAMES = ("127.0.0.1", "localhost")  # what the server listens on (IPv4 only), and the name for it


def served_hosts(port: int) -> frozenset[str]:
    """The Host headers a client of this server sends: botocore, the AWS CLI and urllib give the port unless it
    is HTTP's default (80)."""
    hosts = {f"{name}:{port}" for name in LOOPBACK_NAMES}
    return frozenset((hosts | set(LOOPBACK_NAMES)) if port == 80 else hosts)


class LoopbackHostOnly:
    """A guard against DNS rebinding: a browser sends a page's requests to 127.0.0.1 once the page's own name
    resolves there, but with that name in Host. So any request whose Host is not this server's own (another name,
    another port, none) gets a 403 and never reaches moto: from a web page, a CreateFunction here would run its
    code in this process. The server's own clients (an invocation's, `make local-aws`'s) name it as it printed.
    A request that carries an Origin header comes from a web page (boto3 and the AWS CLI never send one): a page
    on any origin may send simple requests to 127.0.0.1 itself, so those are refused too."""

    REFUSED = b"Forbidden: this server answers only requests for its own loopback host and port.\n"

    def __init__(self, app: Any) -> None:
        self.app = app
        self.hosts: frozenset[str] = frozenset()  # none until the port is bound: refuse all

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_HOST", "").lower() in self.hosts and "HTTP_ORIGIN" not in environ:
            return self.app(environ, start_response)
        start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8"),
                                         ("Content-Length", str(len(self.REFUSED)))])
        return [self.REFUSED]


class MotoServer(ThreadedMotoServer):
    """moto's threaded server, answering only requests for its own host and port (LoopbackHostOnly), and stopped
    within 50 ms (werkzeug looks for a stop every half second by default, half a second each test that starts a
    server waits for nothing)."""

    STOP_POLL_SECONDS = 0.05

    def _server_entry(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        guard = LoopbackHostOnly(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, guard, True, request_handler=MotoRequestHandler)
        guard.hosts = served_hosts(self._server.port)  # the bound port: port 0 picks one
        self._server_ready_event.set()
        self._server.serve_forever(poll_interval=self.STOP_POLL_SECONDS)


def start_server(port: int) -> tuple[MotoServer, str]:
    """A moto server on 127.0.0.1:port (0: a free one) that runs a function's invocations in this process, and
    its endpoint (this process's served_endpoint)."""
    global served_endpoint
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    make_moto_move_current_as_aws_does()
    make_moto_update_stacks_as_aws_does()
    make_moto_run_lambda_in_process()
    server = MotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound = server.get_host_and_port()
    served_endpoint = f"http://{host}:{bound}"
    return server, served_endpoint


@contextlib.contextmanager
def pointed_at(endpoint: str) -> Iterator[str]:
    """boto3 (and the AWS CLI) pointed at a moto server of this process via AWS_ENDPOINT_URL, its state emptied
    first (moto keeps its state per process: an empty account); the environment restored after."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
    saved = {k: os.environ.get(k) for k in [*FAKE_ENV, "AWS_ENDPOINT_URL", "AWS_PROFILE"]}
    os.environ.update(FAKE_ENV, AWS_ENDPOINT_URL=endpoint)
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Run a moto server on a free loopback port; point boto3 at it via AWS_ENDPOINT_URL (``pointed_at``)."""
    global served_endpoint
    before = served_endpoint  # another server of this process (the tests' shared one) serves on after this one
    server, endpoint = start_server(0)
    try:
        with pointed_at(endpoint):
            yield endpoint
    finally:
        server.stop()
        served_endpoint = before


@dataclass
class LambdaContext:
    """The parts of Lambda's context object the function uses: its own ARN, name and clock (and, when
    given, its memory size and log stream, as Lambda's runtime gives them)."""

    invoked_function_arn: str = FUNCTION_ARN
    timeout_seconds: float = 900.0
    aws_request_id: str = ""
    memory_limit_in_mb: str | None = None  # a string, as Lambda's runtime gives it; None: unknown
    function_version: str = "$LATEST"
    log_stream_name: str = ""

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.aws_request_id = self.aws_request_id or str(uuid.uuid4())

    @property
    def function_name(self) -> str:
        return self.invoked_function_arn.split(":")[6]

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def make_moto_move_current_as_aws_does() -> None:
    """moto differs from AWS here. moto 5.2.5's UpdateSecretVersionStage moves the AWSCURRENT label but leaves
    its "default version" (the one GetSecretValue answers without a stage, and PutSecretValue demotes) on the
    version the label left: GetSecretValue then answers the old version, and the next PutSecretValue demotes that
    stale version, so two versions end up AWSCURRENT. On AWS a staging label is on one version at a time, and a
    request without a stage reads AWSCURRENT's
    (https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_UpdateSecretVersionStage.html,
    https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html). This keeps moto's
    default version on the AWSCURRENT label (idempotent; used by the tests, the demo and the benchmark's server;
    moto's own method kept as ``original``: tests/test_local_aws.py checks moto still needs it)."""
    from moto.secretsmanager.models import SecretsManagerBackend

    original = SecretsManagerBackend.update_secret_version_stage
    if getattr(original, "moves_default_version", False):
        return

    def update_secret_version_stage(self, secret_id, version_stage, remove_from_version_id, move_to_version_id):
        result = original(self, secret_id, version_stage, remove_from_version_id, move_to_version_id)
        if version_stage == "AWSCURRENT" and move_to_version_id:
            self.secrets[secret_id].default_version_id = move_to_version_id
        return result

    update_secret_version_stage.moves_default_version = True
    update_secret_version_stage.original = original
    SecretsManagerBackend.update_secret_version_stage = update_secret_version_stage


def make_moto_update_stacks_as_aws_does() -> None:
    """moto differs from AWS in two ways with stacks, each made as AWS's here (the second, in
    make_moto_tag_stack_functions_as_aws_does). moto 5.2.5's stack update (ResourceMap.build_resource_diff;
    `aws cloudformation deploy` again, DryRun=false) compares the parameters sent with those given when the stack
    was made, not with the values the stack resolved: a parameter the CLI sends as UsePreviousValue whose value
    was the template's default counts as changed, so each resource that refers to one is updated, those whose
    Condition is false too, which fails ("Fn::GetAtt references undefined resource"). AWS updates only the
    resources a changed value reaches
    (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/using-cfn-updating-stacks-update-behaviors.html):
    a parameter is changed here only when its value differs from the one the stack resolved. Idempotent; moto's
    own method kept as ``original`` (tests/test_local_aws.py checks moto still needs it)."""
    from moto.cloudformation.parsing import ResourceMap

    original = ResourceMap.build_resource_diff
    if getattr(original, "as_aws", False):
        return

    def build_resource_diff(self, other_template, parameters=None):
        if parameters:
            parameters = {name: value for name, value in parameters.items()
                          if str(self.resolved_parameters.get(name)) != str(value)}
        return original(self, other_template, parameters)

    build_resource_diff.as_aws = True
    build_resource_diff.original = original
    ResourceMap.build_resource_diff = build_resource_diff
    make_moto_tag_stack_functions_as_aws_does()


def make_moto_tag_stack_functions_as_aws_does() -> None:
    """moto differs from AWS here: CloudFormation tags each function a stack makes or updates with the template's
    Tags and with the stack's name, id and the function's logical id (aws:cloudformation:stack-name ...,
    https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-properties-resource-tags.html);
    moto 5.2.5's ResourceMap.create and update tag only EC2's resources, so a stack's function has no tag at all.
    make destroy, schedule, pause and status read them. Idempotent; moto's own methods kept as ``original``
    (tests/test_local_aws.py checks moto still needs it)."""
    from moto.cloudformation.parsing import ResourceMap

    if getattr(ResourceMap.create, "as_aws", False):
        return

    def tagging(original: Any) -> Any:
        def made(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            tag_stack_functions(self)
            return result

        made.as_aws = True
        made.original = original
        return made

    ResourceMap.create = tagging(ResourceMap.create)
    ResourceMap.update = tagging(ResourceMap.update)


def tag_stack_functions(resources: Any) -> None:
    """Each function of the stack (moto's ResourceMap) tagged as CloudFormation tags it."""
    from moto.awslambda.models import LambdaFunction

    for logical_id, resource in list(resources._parsed_resources.items()):
        if isinstance(resource, LambdaFunction):
            declared = resources._resource_json_map.get(logical_id, {}).get("Properties", {}).get("Tags") or []
            resource.tags = {**(resource.tags or {}), **{tag["Key"]: str(tag["Value"]) for tag in declared},
                             "aws:cloudformation:stack-name": resources["AWS::StackName"],
                             "aws:cloudformation:stack-id": resources["AWS::StackId"],
                             "aws:cloudformation:logical-id": logical_id}


# ---------------------------------------------------------------------------
# Lambda invocations, in this process
# ---------------------------------------------------------------------------

served_endpoint: str | None = None  # this process's server, for invocations that come without a Host header
INVOCATIONS = threading.Lock()  # one at a time: each sets os.environ, sys.stdout and the root logger's handler
_compiled: dict[tuple[str, str], types.CodeType] = {}  # (code sha, file in the zip) -> its code
_sources: dict[tuple[str, str], bytes] = {}  # (code sha, file in the zip) -> its bytes


@dataclass(frozen=True)
class TaskFile:
    """The module's loader, as far as a module reads its own source (``__loader__.get_data(__file__)``)."""

    source: bytes

    def get_data(self, path: str) -> bytes:
        return self.source
_serial = iter(range(1, 1 << 62))
# What an invocation keeps of this process's environment: where programs and certificates are, the locale,
# proxies, moto's own settings. The rest (a stray `sec` or AWS_PROFILE in the shell) a Lambda never sees.
KEPT_ENVIRONMENT = ("PATH", "HOME", "LANG", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
                    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


class InvocationError(Exception):
    """The runtime's own failure (no such module, no such handler): Lambda's errorType says which."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def make_moto_run_lambda_in_process() -> None:
    """moto runs a function's code only in Docker ("error running docker" without it). This runs a
    Python function's zip in this process instead, as Lambda would run it: the handler's module from
    the zip, loaded afresh for each invocation (a new deployment takes effect at once, and no cache of
    one invocation outlives it), against the server the request came to, with the function's
    configured environment and a Lambda-like context; the answer is Lambda's (the handler's result as
    JSON, or on an exception X-Amz-Function-Error: Unhandled and {"errorMessage", "errorType",
    "requestId", "stackTrace"}); its log lines go to /aws/lambda/FUNCTION. Invocations run one at a
    time, asynchronous ones included (the caller waits), and nothing stops one at the timeout: the
    function sees its deadline in the context. Idempotent; moto's own method kept as ``original``
    (tests/test_local_aws.py checks moto 5.2.5 still asks Docker, so the patch is still needed; AWS runs a zip
    function in its managed runtime, https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html, and
    moto's documentation says its Lambda runs the code in a Docker container,
    https://docs.getmoto.org/en/latest/docs/services/lambda.html)."""
    from moto.awslambda.models import LambdaFunction

    original = LambdaFunction.invoke
    if getattr(original, "in_process", False):
        return

    def invoke(self, body, request_headers, response_headers):
        if not str(self.run_time or "").startswith("python") or not getattr(self, "code_bytes", b""):
            return original(self, body, request_headers, response_headers)  # an image or another language
        return invoke_in_process(self, body, request_headers, response_headers)

    invoke.in_process = True
    invoke.original = original
    LambdaFunction.invoke = invoke


def header(headers: Any, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name.lower():
            return value
    return None


def invoke_in_process(function: Any, body: Any, request_headers: Any, response_headers: dict) -> bytes:
    """Run one invocation of ``function`` (moto's LambdaFunction) here; answer as Lambda's Invoke does."""
    from moto.awslambda.exceptions import LambdaClientError

    if header(request_headers, "X-Amz-Invocation-Type") == "DryRun":
        return b""  # Lambda checks the request and runs nothing
    try:
        event = json.loads(body) if body else {}
    except ValueError as err:
        raise LambdaClientError("InvalidRequestContentException",
                                f"Could not parse request body into json: {err}") from None
    host = header(request_headers, "Host")
    endpoint = f"http://{host}" if host else served_endpoint
    request_id = str(uuid.uuid4())
    stream = f"{datetime.now(UTC):%Y/%m/%d}/[{function.version}]{uuid.uuid4().hex}"
    context = LambdaContext(function.function_arn, float(function.timeout or 3), request_id,
                            str(function.memory_size), str(function.version), stream)
    sink = LogSink()
    with INVOCATIONS:
        sink.add(f"START RequestId: {request_id} Version: {function.version}")
        started = time.monotonic()
        with invocation_environment(function, endpoint, stream), captured(sink, request_id):
            module_name = None
            try:
                handler, module_name = load_handler(function)
                payload = marshalled(handler(event, context))
            except Exception as err:
                payload = function_error(err, request_id, sink, response_headers)
            finally:
                if module_name:
                    sys.modules.pop(module_name, None)
        took = (time.monotonic() - started) * 1000
        sink.add(f"END RequestId: {request_id}")
        sink.add(f"REPORT RequestId: {request_id}\tDuration: {took:.2f} ms\tBilled Duration: {int(took) + 1} ms\t"
                 f"Memory Size: {function.memory_size} MB")
    logs = function.logs_backend
    logs.ensure_log_group(function.logs_group_name)
    logs.create_log_stream(function.logs_group_name, stream)
    logs.put_log_events(function.logs_group_name, stream, sink.events)
    tail = "\n".join(e["message"] for e in sink.events).encode()[-4096:]
    response_headers["x-amz-log-result"] = base64.b64encode(tail).decode()  # moto drops it unless Tail
    response_headers["x-amz-executed-version"] = str(function.version)
    return payload


def marshalled(result: Any) -> bytes:
    try:
        return json.dumps(result).encode()
    except (TypeError, ValueError) as err:
        raise InvocationError("Runtime.MarshalError", f"Unable to marshal response: {err}") from None


def function_error(err: Exception, request_id: str, sink: LogSink, response_headers: dict) -> bytes:
    """Lambda's answer to a handler that raised (or a module that would not load), and its [ERROR] log line."""
    frames = traceback.extract_tb(err.__traceback__)
    frames = [f for f in frames if f.filename != __file__]  # the function's frames, not this runner's
    error_type = err.error_type if isinstance(err, InvocationError) else type(err).__name__
    error = {"errorMessage": str(err), "errorType": error_type, "requestId": request_id,
             "stackTrace": traceback.format_list(frames)}
    sink.add("\n".join([f"[ERROR] {error_type}: {err}", "Traceback (most recent call last):",
                        *(line.rstrip("\n") for line in error["stackTrace"])]))
    response_headers["x-amz-function-error"] = "Unhandled"
    return json.dumps(error).encode()


def load_handler(function: Any) -> tuple[Any, str]:
    """The handler from a fresh copy of the zip's module (its name distinct per invocation); the
    module is in sys.modules while it runs (dataclasses look themselves up there)."""
    module_path, _, attribute = str(function.handler).rpartition(".")
    path = module_path.replace(".", "/") + ".py"
    key = (function.code_sha_256, path)
    if key not in _compiled:
        with zipfile.ZipFile(io.BytesIO(function.code_bytes)) as archive:
            try:
                source = archive.read(path)
            except KeyError:
                raise InvocationError("Runtime.ImportModuleError", f"Unable to import module '{module_path}': "
                                                                   f"No module named '{module_path}'") from None
        _sources[key] = source
        try:
            _compiled[key] = compile(source, f"/var/task/{path}", "exec")
        except SyntaxError as err:
            raise InvocationError("Runtime.UserCodeSyntaxError",
                                  f"Syntax error in module '{module_path}': {err}") from None
        text = source.decode("utf-8", "replace")
        linecache.cache[f"/var/task/{path}"] = (len(text), None, text.splitlines(True), f"/var/task/{path}")
    name = f"{module_path.replace('.', '_')}__{function.code_sha_256[:12]}_{next(_serial)}"
    module = types.ModuleType(name)
    module.__file__ = f"/var/task/{path}"
    module.__loader__ = TaskFile(_sources[key])  # the module reads its own source as from /var/task
    sys.modules[name] = module
    try:
        exec(_compiled[key], module.__dict__)
    except Exception as err:
        sys.modules.pop(name, None)
        raise InvocationError("Runtime.ImportModuleError", f"Unable to import module '{module_path}': {err}") from err
    handler = getattr(module, attribute, None)
    if not callable(handler):
        sys.modules.pop(name, None)
        raise InvocationError("Runtime.HandlerNotFound", f"Handler '{attribute}' missing on module '{module_path}'")
    return handler, name


@contextlib.contextmanager
def invocation_environment(function: Any, endpoint: str | None, stream: str) -> Iterator[None]:
    """os.environ as Lambda sets it for the function (this server's endpoint, the function's region and
    configured variables; credentials moto accepts), restored after."""
    saved = dict(os.environ)
    kept = {k: v for k, v in saved.items() if k in KEPT_ENVIRONMENT or k.startswith(("LC_", "MOTO_"))}
    runtime = {
        "AWS_LAMBDA_FUNCTION_NAME": function.function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
        "AWS_LAMBDA_FUNCTION_VERSION": str(function.version),
        "AWS_LAMBDA_LOG_GROUP_NAME": function.logs_group_name,
        "AWS_LAMBDA_LOG_STREAM_NAME": stream,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{function.run_time}",
        "_HANDLER": str(function.handler),
        "LAMBDA_TASK_ROOT": "/var/task",
        "AWS_REGION": function.region,
        "AWS_DEFAULT_REGION": function.region,
        **execution_credentials(function),
        "AWS_CONFIG_FILE": os.devnull,  # no profile of this machine's
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        **({"AWS_ENDPOINT_URL": endpoint} if endpoint else {}),
    }
    configured = {str(k): str(v) for k, v in (function.environment_vars or {}).items()}
    os.environ.clear()
    os.environ.update({**kept, **configured, **runtime})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def execution_credentials(function: Any) -> dict[str, str]:
    """The execution role's credentials, as Lambda gives them: its role assumed (moto's STS, in this process), so
    every call the function makes is in the function's own account (a stack set's member account included). moto
    accepts any signature: the new key's check proves nothing locally."""
    from moto.sts.models import sts_backends

    assumed = sts_backends[function.account_id]["aws"].assume_role(
        region_name=function.region, role_session_name=function.function_name[:64], role_arn=function.role,
        policy="", duration=900, external_id="")
    return {"AWS_ACCESS_KEY_ID": assumed.access_key_id, "AWS_SECRET_ACCESS_KEY": assumed.secret_access_key,
            "AWS_SESSION_TOKEN": assumed.session_token}


class LogSink(io.TextIOBase):
    """An invocation's log events: each logging record one event, each line printed one event."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []
        self._partial = ""
        self._lock = threading.RLock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
            for line in lines:
                self.add(line)
        return len(text)

    def add(self, message: str) -> None:
        if message.strip():
            with self._lock:
                self.events.append({"timestamp": int(time.time() * 1000), "message": message})

    def close_partial(self) -> None:
        with self._lock:
            self.add(self._partial)
            self._partial = ""


class LambdaLogHandler(logging.Handler):
    """Lambda's Python log line: [LEVEL]<tab>time<tab>request id<tab>message. Not the server's own loggers."""

    def __init__(self, sink: LogSink, request_id: str) -> None:
        super().__init__()
        self.sink = sink
        formatter = logging.Formatter(f"[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t{request_id}\t%(message)s",
                                      "%Y-%m-%dT%H:%M:%S")
        formatter.converter = time.gmtime
        self.setFormatter(formatter)
        self.addFilter(lambda record: not record.name.startswith(("moto", "werkzeug")))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.add(self.format(record))
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def captured(sink: LogSink, request_id: str) -> Iterator[None]:
    """What the function logs and prints, into ``sink``."""
    handler = LambdaLogHandler(sink, request_id)
    logging.root.addHandler(handler)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        logging.root.removeHandler(handler)
        sink.close_partial()


# ---------------------------------------------------------------------------
# An organisation: EventBridge and StackSets across accounts and regions, as AWS has them
# ---------------------------------------------------------------------------

ORGANISATION = {"workloads": ("dev", "prod"), "": ("security",)}  # make local-aws's OUs (root: "") and accounts
ACCOUNT_ROLE = "OrganizationAccountAccessRole"  # the role Organizations makes in each account it creates
STACK_SET_FILTERS = ("INTERSECTION", "DIFFERENCE", "UNION")


def delivered_as_aws_does(original: Any) -> Any:
    """moto's Rule.send_to_targets, but a schedule rule matches no event, and an event forwarded to another bus
    (another account's, another region's) arrives as itself (AWS keeps its account, region and time), matched
    against that bus's rules; every other target as moto sends it. moto 5.2.5 sends every event put on a bus to
    the targets of the bus's schedule rules too (a rule without an event pattern matches all), and forwards an
    event to another bus as a new PutEvents there (source, detail-type and detail only: the event then has the
    receiving bus's account and region, and a new time). On AWS a rule has an event pattern or a schedule, and a
    schedule rule runs only on its schedule
    (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rules.html); an event sent to a
    bus of another account or region keeps its account, region and time
    (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-cross-account.html,
    https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-cross-region.html). moto's method kept as
    ``original`` (tests/test_local_aws.py checks moto still needs this)."""

    def send_to_targets(self, event, transform_input=True):
        from moto.events.models import events_backends

        if self.scheduled_expression:
            return
        buses = [t for t in self.targets if re.fullmatch(r"arn:aws:events:[^:]+:\d{12}:event-bus/.+", t["Arn"])]
        if buses and self.event_pattern.matches_event(event):
            for target in buses:
                _arn, _aws, _events, region, account, resource = target["Arn"].split(":", 5)
                bus = events_backends[account][region].event_buses.get(resource.split("/", 1)[1])
                for rule in list(bus.rules.values()) if bus else []:
                    rule.send_to_targets(dict(event))
        kept, self.targets = self.targets, [t for t in self.targets if t not in buses]
        try:
            original(self, event, transform_input)
        finally:
            self.targets = kept

    send_to_targets.as_aws = True
    send_to_targets.original = original
    return send_to_targets


def targeted_as_aws_does(original: Any) -> Any:
    """moto's StackInstances.create_instances, but DeploymentTargets' Accounts and AccountFilterType count as they
    do on AWS (https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_DeploymentTargets.html:
    INTERSECTION deploys only to the listed accounts of the OUs, DIFFERENCE to the others, UNION to both). moto
    5.2.5 ignores both: an INTERSECTION of one account deploys every account of the OUs. moto's method kept as
    ``original`` (tests/test_local_aws.py checks moto still needs this)."""

    def create_instances(self, accounts, regions, parameters, deployment_targets, permission_model):
        chosen, kind = deployment_targets.get("Accounts") or [], deployment_targets.get("AccountFilterType")
        if not chosen or kind not in STACK_SET_FILTERS:
            return original(self, accounts, regions, parameters, deployment_targets, permission_model)
        ous = set(deployment_targets.get("OrganizationalUnitIds") or [])
        ous |= {ou.id for ou in self.org_backend.ou if ou.parent_id in ous}
        in_ous = [account.id for account in self.org_backend.accounts if account.parent_id in ous]
        picked = {"INTERSECTION": [a for a in in_ous if a in chosen],
                  "DIFFERENCE": [a for a in in_ous if a not in chosen], "UNION": [*in_ous, *chosen]}[kind]
        return original(self, [*accounts, *picked], regions, parameters, {}, permission_model)

    create_instances.as_aws = True
    create_instances.original = original
    return create_instances


def updated_as_aws_does(original: Any) -> Any:
    """moto's StackSet.update, but each instance's stack is updated too (its overrides kept), as AWS's operation
    does (https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_UpdateStackSet.html: "Updates the
    stack set and associated stack instances"; without Accounts and Regions, every instance). moto 5.2.5 changes
    only the stack set's record: a new template or parameter never reaches an account. moto's method kept as
    ``original`` (tests/test_local_aws.py checks moto still needs this)."""

    def update(self, *args, **kwargs):
        operation = original(self, *args, **kwargs)
        for instance in self.instances.stack_instances:
            given = instance.parameters  # a list: its overrides; a mapping: the stack set's, when it was made
            overrides = {p["ParameterKey"]: p["ParameterValue"] for p in given} if isinstance(given, list) else {}
            instance.stack.update(self.template, parameters={**self.parameters, **overrides})
        return operation

    update.as_aws = True
    update.original = original
    return update


def outputs_as_aws_does(original: Any) -> Any:
    """moto's ChangeSet.apply, but the stack then has the change set's template's outputs, as on AWS: executing a
    change set updates the stack to its template, Outputs included
    (https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_ExecuteChangeSet.html). moto 5.2.5
    updates the stack's resources only and keeps the outputs of the template the stack had before: `aws
    cloudformation deploy` leaves a new stack without outputs. moto's method kept as ``original``
    (tests/test_local_aws.py checks moto still needs this)."""

    def apply(self):
        from moto.cloudformation.parsing import OutputMap

        original(self)
        self.stack.output_map = OutputMap(self.stack.resource_map, self.template_dict, self.stack.stack_id)

    apply.as_aws = True
    apply.original = original
    return apply


def organisation_stand_ins() -> list[tuple[Any, str, Any]]:
    """(owner, attribute, value): what makes moto's EventBridge and StackSets behave as AWS's do across accounts
    and regions (a stack set's update reaching its instances), and its change sets leave a stack's outputs, for
    a test to set with monkeypatch, or make local-aws for good."""
    from moto.cloudformation.models import ChangeSet, StackInstances, StackSet
    from moto.events.models import Rule
    from moto.events.utils import EventTemplateParser

    # AWS gives a target the event's account too, as every event has one
    # (https://docs.aws.amazon.com/eventbridge/latest/ref/overiew-event-structure.html); moto 5.2.5's default input
    # template leaves it out (tests/test_local_aws.py checks it still does)
    template = EventTemplateParser.DEFAULT_EVENT_INPUT_TEMPLATE
    if '"account"' not in template:
        template = template.replace('"region"', '"account": "<account>", "region"')
    patches = [(EventTemplateParser, "DEFAULT_EVENT_INPUT_TEMPLATE", template)]
    for owner, name, make in ((Rule, "send_to_targets", delivered_as_aws_does),
                              (StackInstances, "create_instances", targeted_as_aws_does),
                              (StackSet, "update", updated_as_aws_does),
                              (ChangeSet, "apply", outputs_as_aws_does)):
        current = getattr(owner, name)
        patches.append((owner, name, current if getattr(current, "as_aws", False) else make(current)))
    return patches


def make_organisation(endpoint: str, config: Path) -> dict[str, str]:
    """An organisation in this server, its management account the default one: ORGANISATION's OUs and accounts,
    and ``config``, an AWS CLI config file with a profile for each account (its ACCOUNT_ROLE assumed from the
    management account's credentials, as an administrator reaches a member account). Its variables to export."""
    import boto3

    organizations = boto3.client("organizations", endpoint_url=endpoint, region_name=FAKE_ENV["AWS_REGION"],
                                 aws_access_key_id="testing", aws_secret_access_key="testing")
    organizations.create_organization(FeatureSet="ALL")
    root = organizations.list_roots()["Roots"][0]["Id"]
    exports, profiles = {}, []
    for ou_name, accounts in ORGANISATION.items():
        parent = root
        if ou_name:
            parent = organizations.create_organizational_unit(ParentId=root, Name=ou_name)["OrganizationalUnit"]["Id"]
            exports["OU"] = parent
        for name in accounts:
            made = organizations.create_account(AccountName=name, Email=f"{name}@example.com")["CreateAccountStatus"]
            if parent != root:
                organizations.move_account(AccountId=made["AccountId"], SourceParentId=root, DestinationParentId=parent)
            profiles.append(f"[profile {name}]\nrole_arn = arn:aws:iam::{made['AccountId']}:role/{ACCOUNT_ROLE}\n"
                            f"credential_source = Environment\n")
            exports[f"{name.upper()}_ACCOUNT"] = made["AccountId"]
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("# make local-aws's organisation: each account's profile\n" + "\n".join(profiles))
    return {"AWS_CONFIG_FILE": str(config.resolve()), "OU": exports["OU"],
            "SECURITY_ACCOUNT": exports["SECURITY_ACCOUNT"]}


def serve_forever(port: int = 5000) -> None:
    """`make local-aws`: a moto server on 127.0.0.1 until Ctrl-C (or SIGTERM), holding an organisation
    (make_organisation), and the variables that point the AWS CLI, and so every deploy step of the README, at it.
    Nothing leaves this machine."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stopped as by Ctrl-C: its profiles go with it
    for owner, name, value in organisation_stand_ins():
        setattr(owner, name, value)
    server, served = start_server(port)
    config = Path("dist") / f"local-aws-{server.get_host_and_port()[1]}.config"  # one a server: two side by side
    try:
        organisation = make_organisation(served, config)
        print("A local moto server stands in for AWS. In another shell:")
        for name, value in {**FAKE_ENV, "AWS_ENDPOINT_URL": served, **organisation}.items():
            print(f"  export {name}={shlex.quote(value)}")
        print("then follow the README's deploy steps (this account is 123456789012). Its organisation: "
              f"this account manages it, OU {organisation['OU']} holds accounts dev and prod, account security "
              f"({organisation['SECURITY_ACCOUNT']}) is outside it; AWS_CONFIG_FILE has a profile for each. A "
              "function's invocations run its zip's code in this process, in its own account; its logs go to "
              "/aws/lambda/FUNCTION. Ctrl-C stops it.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        config.unlink(missing_ok=True)


if __name__ == "__main__":
    serve_forever(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
