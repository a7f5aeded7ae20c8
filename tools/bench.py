"""`make bench`: rotate N steady-state secrets, selected by one prefix entry of `sec`, against moto
behind a simulated network latency.

Prints, for each N, the wall time of one handler run next to the sequential
floor (N x calls per rotation x latency), the handler's CPU time per rotation
(moto runs in its own process, so this is the function's own CPU: on Lambda a
256 MB function gets a fraction of a vCPU, so CPU decides real run time), the
process's peak memory, and the calls per rotation by operation, counted at the
server. Every secret is checked afterwards. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import boto3  # noqa: E402

import lambda_function  # noqa: E402
from fake_region import control  # noqa: E402
from local_aws import FAKE_ENV, LambdaContext  # noqa: E402
from seed import seed_user  # noqa: E402


def start_region() -> tuple[subprocess.Popen, str]:
    """Serve moto in its own process, so its CPU does not share the handler's GIL."""
    server = subprocess.Popen([sys.executable, str(HERE / "fake_region.py")], stdout=subprocess.PIPE, text=True)
    return server, server.stdout.readline().strip()


def seed(n: int, run: int) -> list:
    """N users in the steady state: previous key Inactive, held key Active."""
    iam, secrets = boto3.client("iam"), boto3.client("secretsmanager")
    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda i: seed_user(iam, secrets, f"bench{run}-{i:04d}", ("Inactive", "Active"), 1),
                             range(n)))


def check(seeded: list) -> int:
    """Count secrets left exactly right: old inactive gone, old active Inactive, new key Active and held."""
    iam, secrets = boto3.client("iam"), boto3.client("secretsmanager")

    def ok(s) -> bool:
        value = json.loads(secrets.get_secret_value(SecretId=s.secret)["SecretString"])
        keys = {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName=s.user)["AccessKeyMetadata"]}
        return keys == {s.key_ids[1]: "Inactive", value["AccessKeyId"]: "Active"} and value[
            "AccessKeyId"] not in s.key_ids

    with ThreadPoolExecutor(16) as pool:
        return sum(pool.map(ok, seeded))


def bench(url: str, n: int, latency_ms: float, run: int, propagation_s: float = 0.0) -> dict:
    seeded = seed(n, run)
    os.environ["sec"] = f"iam-keys/bench{run}-*"  # one prefix entry selects all N
    control(url, "reset")
    control(url, "config", {"latency_ms": latency_ms, "propagation_s": propagation_s})
    with contextlib.redirect_stdout(io.StringIO()):  # the run's metrics line
        started, cpu_started = time.perf_counter(), time.process_time()
        result = lambda_function.lambda_handler({"bench": run}, LambdaContext())
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    calls = control(url, "stats")["calls"]
    control(url, "config", {"latency_ms": 0})
    correct = check(seeded)
    per_rotation = sum(calls.values()) / n
    floor = n * per_rotation * latency_ms / 1000
    return {"n": n, "wall": wall, "floor": floor, "calls": calls, "per_rotation": per_rotation,
            "rotated": result["rotated"], "correct": correct, "cpu_ms": 1000 * cpu / n, "peak_mb": peak_mb}


def bench_exposed(url: str, latency_ms: float, run: int) -> dict:
    """A leaked key: from the event ({"exposed": [...]}, as an AWS Health event becomes) to the key Inactive."""
    (seeded,) = [seed_user(boto3.client("iam"), boto3.client("secretsmanager"), f"leak{run}", ("Active",), 0)]
    os.environ["sec"] = seeded.secret
    control(url, "reset")
    control(url, "config", {"latency_ms": latency_ms})
    clients = lambda_function.aws_clients(lambda_function.load_settings(os.environ, {}))
    revoked_at: list[float] = []
    clients.iam.meta.events.register("after-call.iam.UpdateAccessKey",
                                     lambda **_: revoked_at.append(time.perf_counter()))
    with contextlib.redirect_stdout(io.StringIO()):
        started = time.perf_counter()
        lambda_function.lambda_handler({"exposed": [seeded.key_ids[0]]}, LambdaContext())
        wall = (revoked_at[0] if revoked_at else time.perf_counter()) - started
    calls = control(url, "stats")["calls"]
    control(url, "config", {"latency_ms": 0})
    keys = boto3.client("iam").list_access_keys(UserName=seeded.user)["AccessKeyMetadata"]
    revoked = {k["AccessKeyId"]: k["Status"] for k in keys}.get(seeded.key_ids[0]) == "Inactive"
    after = sum(calls.get(op, 0) for op in ("ListAttachedUserPolicies", "LookupEvents"))  # the report, after
    return {"wall": wall, "calls": sum(calls.values()) - after, "by_op": calls, "revoked": revoked}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[50, 200, 1000])
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--propagation-s", type=float, default=0.0,
                        help="STS refuses a new key this long after it was made, as IAM's propagation does")
    args = parser.parse_args()
    os.environ.update(FAKE_ENV)
    server, url = start_region()
    os.environ["AWS_ENDPOINT_URL"] = url
    logging.getLogger("key_rotation").disabled = True  # one line per action x N is not a benchmark figure
    try:
        workers = os.environ.get("MAX_WORKERS", "8")
        print(f"moto on {url} (own process), latency {args.latency_ms:g} ms per call, "
              f"key propagation {args.propagation_s:g} s, MAX_WORKERS={workers}, "
              f"VERIFY_TIMEOUT_SECONDS={os.environ.get('VERIFY_TIMEOUT_SECONDS', '30')}, {os.cpu_count()} cores")
        print(f"{'N':>5} {'wall s':>8} {'floor s':>8} {'floor/wall':>10} {'ms/secret':>9} {'calls/rot':>9} "
              f"{'CPU ms/rot':>10} {'peak MB':>8} {'correct':>9}")
        rows = []
        for run, n in enumerate(args.sizes):
            row = bench(url, n, args.latency_ms, run, args.propagation_s)
            rows.append(row)
            print(f"{n:>5} {row['wall']:>8.2f} {row['floor']:>8.1f} {row['floor'] / row['wall']:>10.1f} "
                  f"{1000 * row['wall'] / n:>9.1f} {row['per_rotation']:>9.2f} {row['cpu_ms']:>10.1f} "
                  f"{row['peak_mb']:>8.0f} {row['correct']:>5}/{n}", flush=True)
        print("\ncalls per rotation by operation:")
        ops = sorted({op for row in rows for op in row["calls"]})
        print("  " + " ".join(f"{'N=' + str(r['n']):>8}" for r in rows) + "  operation")
        for op in ops:
            print("  " + " ".join(f"{r['calls'].get(op, 0) / r['n']:>8.2f}" for r in rows) + f"  {op}")
        leak = bench_exposed(url, args.latency_ms, len(rows))
        steady = rows[0]["per_rotation"] if rows else 0
        print(f"\na leaked key, from the event to the key Inactive: {leak['wall']:.2f} s, {leak['calls']} calls at "
              f"{args.latency_ms:g} ms a call (a steady-state rotation: {steady:.2f}; the quarantine check and "
              f"CloudTrail's lookup follow), {'revoked' if leak['revoked'] else 'NOT revoked'}")
        print("  " + ", ".join(f"{op} {n}" for op, n in sorted(leak["by_op"].items())))
        return 0 if all(r["correct"] == r["n"] == r["rotated"] for r in rows) and leak["revoked"] else 1
    finally:
        server.terminate()


if __name__ == "__main__":
    sys.exit(main())
