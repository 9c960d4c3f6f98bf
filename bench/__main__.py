"""`python -m bench`: start Redis and the apps, run every measurement in interleaved
rounds with wrk, and write bench/results.md and bench/results.png.

    python -m bench                 # the full suite (what `make bench` runs)
    python -m bench --quick         # one short round of everything, about a minute
    python -m bench --only R1,P2    # some ratios only

A full run writes bench/results.md; `--quick` and `--only` write to bench/out/
(git-ignored), so a smoke run never overwrites the published results.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import resource
import secrets
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import httpx

from . import environment, report
from .processes import RedisClusterServer, RedisServer, UvicornApp, cpu_seconds, make_workdir
from .stats import RatioResult, Series, evaluate
from .suite import FINAL_APP, WEEK6_APP, Measurement, Plan, Ratio, Session, build_plan
from .wrk import INSTALL_HINT, Load, WrkError, WrkResult, run_wrk, wrk_binary

HERE = Path(__file__).resolve().parent

REDIS_HINT = """\
redis-server is not installed. Install it, then run `make bench` again:
  Debian/Ubuntu:  sudo apt-get install -y redis-server
  macOS:          brew install redis"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Load-test the apps with wrk."
    )
    parser.add_argument("--quick", action="store_true", help="one 2-second round: a smoke run")
    parser.add_argument("--only", default="", help="comma-separated ratio ids, e.g. R1,P2")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--seconds", type=int, help="seconds per wrk run (default 5, quick 2)")
    parser.add_argument("--app", default=FINAL_APP, help=f"the app under test ({FINAL_APP})")
    parser.add_argument("--week6-app", default=WEEK6_APP, help=f"the app for R4 ({WEEK6_APP})")
    parser.add_argument("--out", type=Path, help="where results.md and results.png go")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every instance of the app under test (repeatable), "
        "e.g. --env ARGON2_PARALLELISM=1",
    )
    return parser.parse_args(argv)


def raise_open_file_limit() -> None:
    # 1000 connections need more descriptors than a default soft limit of 1024
    # leaves; the apps, Redis and wrk inherit this limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def module_exists(target: str) -> bool:
    try:
        return importlib.util.find_spec(target.split(":", 1)[0]) is not None
    except ImportError:
        return False


def rate_limit_switch(target: str) -> str | None:
    """The environment setting that turns the app's rate limiting off, if it has one."""
    package = target.split(":", 1)[0].rsplit(".", 1)[0]
    try:
        config = importlib.import_module(f"{package}.config")
    except ImportError:
        return None
    fields = getattr(getattr(config, "Settings", None), "model_fields", {})
    return "RATE_LIMIT_ENABLED=false" if "rate_limit_enabled" in fields else None


def sign_up(base_url: str) -> Session:
    """Create a user and log in, as a client does before its first authenticated GET."""
    email = f"bench-{secrets.token_hex(4)}@example.com"
    password = secrets.token_urlsafe(16)
    with httpx.Client(base_url=base_url, timeout=30) as client:
        created = client.post(
            "/users", json={"name": "Bench", "email": email, "password": password}
        )
        if created.status_code != 201:
            raise RuntimeError(f"sign-up failed: {created.status_code} {created.text}")
        token = client.post("/auth/token", data={"username": email, "password": password})
        if token.status_code != 200:
            raise RuntimeError(f"login failed: {token.status_code} {token.text}")
    return Session(
        user_id=int(created.json()["id"]),
        email=email,
        password=password,
        token=str(token.json()["access_token"]),
    )


def fill(text: str, session: Session | None) -> str:
    if session is None:
        return text
    return (
        text.replace("<token>", session.token)
        .replace("<user_id>", str(session.user_id))
        .replace("<email>", quote(session.email, safe=""))
        .replace("<password>", quote(session.password, safe=""))
    )


def resolve(load: Load, session: Session | None, seconds: int) -> Load:
    return Load(
        path=fill(load.path, session),
        connections=load.connections,
        threads=min(load.threads, load.connections),
        seconds=seconds,
        method=load.method,
        headers={name: fill(value, session) for name, value in load.headers.items()},
        body=fill(load.body, session) if load.body is not None else None,
        count_header=load.count_header,
        timeout_seconds=load.timeout_seconds,
    )


@dataclass(frozen=True)
class Run:
    result: WrkResult
    background: WrkResult | None
    cpu_us: float | None  # server CPU per request
    redis_cpu_us: float | None = None  # Redis CPU per request, every node together


class Runner:
    """Runs measurements against the started apps."""

    def __init__(
        self,
        apps: dict[str, UvicornApp],
        sessions: dict[str, Session],
        *,
        quick: bool = False,
        redis_pids: dict[str, list[int]] | None = None,
    ) -> None:
        self.apps = apps
        # Per app, the Redis processes it talks to (one server, or every cluster node).
        self.redis_pids = redis_pids or {}
        self.sessions = sessions
        self.quick = quick
        self.secrets = {s.token: "$TOKEN" for s in sessions.values()} | {
            quote(s.password, safe=""): "$PASSWORD" for s in sessions.values()
        }
        self.sequence = 0

    def prime(self, measurement: Measurement) -> None:
        """Fill the cache a HIT measurement reads, so its first requests are HITs too."""
        app = self.apps[measurement.app]
        load = resolve(measurement.load, self.sessions.get(measurement.app), 1)
        for _ in range(2):
            httpx.get(app.url + load.path, headers=dict(load.headers), timeout=10)

    def run(self, measurement: Measurement, seconds: int, *, warm_up: bool = False) -> Run:
        app = self.apps[measurement.app]
        pid = app.process.pid if app.process is not None else None
        cpu_before = cpu_seconds(pid) if pid is not None else None
        redis_before = self._redis_cpu(measurement.app)
        session = self.sessions.get(measurement.app)
        if measurement.seconds is not None and not (self.quick or warm_up):
            seconds = measurement.seconds
        load = resolve(measurement.load, session, seconds)
        # Cold-key loads ("{n}" in the path) never reuse a number, not even across rounds.
        self.sequence += 1
        seq = self.sequence * 10**9
        background = None
        if measurement.background is None:
            result = run_wrk(app.url, load, seq_start=seq, secrets=self.secrets)
        else:
            extra = resolve(measurement.background, session, seconds + 2)
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending = pool.submit(run_wrk, app.url, extra, secrets=self.secrets)
                time.sleep(1.0)  # the background load is at full speed before we measure
                result = run_wrk(app.url, load, seq_start=seq, secrets=self.secrets)
                background = pending.result()
        cpu_after = cpu_seconds(pid) if pid is not None else None
        redis_after = self._redis_cpu(measurement.app)
        cpu_us = redis_us = None
        # With a background load the CPU is shared by two kinds of request: not comparable.
        comparable = background is None and result.requests > 0
        if cpu_before is not None and cpu_after is not None and comparable:
            cpu_us = (cpu_after - cpu_before) / result.requests * 1e6
        if redis_before is not None and redis_after is not None and comparable:
            redis_us = (redis_after - redis_before) / result.requests * 1e6
        if measurement.restart_after:
            app.restart()
        return Run(result, background, cpu_us, redis_us)

    def _redis_cpu(self, app: str) -> float | None:
        """CPU seconds the app's Redis processes have used so far (None: unknown)."""
        seconds = [cpu_seconds(pid) for pid in self.redis_pids.get(app, [])]
        if not seconds or any(s is None for s in seconds):
            return None
        return sum(s for s in seconds if s is not None)


def select_ratios(plan: Plan, only: str) -> list[Ratio]:
    if not only:
        return plan.ratios
    wanted = {part.strip().upper() for part in only.split(",") if part.strip()}
    unknown = wanted - {ratio.id.upper() for ratio in plan.ratios}
    if unknown:
        raise SystemExit(f"unknown ratio ids: {', '.join(sorted(unknown))}")
    return [ratio for ratio in plan.ratios if ratio.id.upper() in wanted]


def measurement_order(ratios: list[Ratio]) -> list[str]:
    """Each ratio's two sides next to each other, every measurement once."""
    order: list[str] = []
    for ratio in ratios:
        for key in (ratio.numerator, ratio.denominator):
            if key not in order:
                order.append(key)
    return order


def log(message: str) -> None:
    print(message, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if wrk_binary() is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    redis_binary = shutil.which("redis-server")
    if redis_binary is None:
        print(REDIS_HINT, file=sys.stderr)
        return 2
    if any("=" not in item for item in args.env):
        raise SystemExit("--env takes NAME=VALUE")
    full = not args.quick and not args.only and not args.env
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.seconds or (2 if args.quick else 5)
    out_dir: Path = args.out or (HERE if full else HERE / "out")
    raise_open_file_limit()

    started_at = datetime.now(UTC)
    load_before = environment.load_average()
    series: dict[str, Series] = {}
    server_commands: list[str] = []

    with contextlib.ExitStack() as stack:
        workdir = make_workdir()
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        redis = RedisServer(redis_binary, workdir)
        redis.start()
        stack.callback(redis.stop)
        server_commands.append(redis.command)
        # Started below only when a measurement needs it (C1, C2).
        cluster = RedisClusterServer(redis_binary, workdir)

        plan = build_plan(
            final_target=args.app,
            week6_target=args.week6_app,
            redis_url=redis.url,
            secret=secrets.token_urlsafe(48),
            workdir=workdir,
            rate_limit_switch=rate_limit_switch(args.app),
            extra_env=dict(item.split("=", 1) for item in args.env),
            cluster_url=cluster.url,
        )
        ratios = select_ratios(plan, args.only)

        # Which apps can run at all: the module exists, and the app it borrows a token from.
        unavailable: dict[str, str] = {}
        for spec in plan.apps.values():
            if not module_exists(spec.target):
                unavailable[spec.name] = f"{spec.target} does not exist yet"
        failed_measurements: dict[str, str] = {}

        def blocked(ratio: Ratio) -> str | None:
            for key in (ratio.numerator, ratio.denominator):
                if key not in series and key in failed_measurements:
                    return failed_measurements[key]
                spec = plan.apps[plan.measurements[key].app]
                for name in (spec.name, spec.credentials_from):
                    if name is not None and name in unavailable:
                        return f"{name}: {unavailable[name]}"
            return None

        runnable = [ratio for ratio in ratios if blocked(ratio) is None]
        needed_apps: list[str] = []
        for key in measurement_order(runnable):
            spec = plan.apps[plan.measurements[key].app]
            for name in (spec.credentials_from, spec.name):
                if name is not None and name not in needed_apps:
                    needed_apps.append(name)

        if "final-cluster" in needed_apps:
            cluster.start()
            stack.callback(cluster.stop)
            server_commands.append(cluster.command)

        # Start every needed app at once (they import in parallel), then wait for each.
        apps: dict[str, UvicornApp] = {}
        for name in needed_apps:
            spec = plan.apps[name]
            app = UvicornApp(
                name, spec.target, env=spec.env, workers=spec.workers, server=spec.server
            )
            app.start(workdir)
            stack.callback(app.stop)
            apps[name] = app
            server_commands.append(report.server_command(app, secrets_of=("JWT_SECRET",)))
        sessions: dict[str, Session] = {}
        for name, app in apps.items():
            spec = plan.apps[name]
            try:
                app.wait_until_ready()
                if spec.signs_up:
                    sessions[name] = sign_up(app.url)
                elif spec.credentials_from is not None:
                    sessions[name] = sessions[spec.credentials_from]
            except (RuntimeError, TimeoutError, KeyError, httpx.HTTPError) as exc:
                unavailable[name] = f"did not start: {str(exc).strip()[-600:]}"
                log(f"! {name}: {unavailable[name]}")
        runnable = [ratio for ratio in runnable if blocked(ratio) is None]
        order = measurement_order(runnable)
        # Measurements run one at a time, so a Redis's CPU during a run is that app's.
        single = [redis.process.pid] if redis.process is not None else []
        redis_pids = {
            name: [p.pid for p in cluster.processes] if name == "final-cluster" else single
            for name in apps
        }
        runner = Runner(apps, sessions, quick=args.quick, redis_pids=redis_pids)

        for key in order:
            if plan.measurements[key].expect_cache == "HIT":
                runner.prime(plan.measurements[key])
        warmups = [] if args.quick else order
        log(f"warming up {len(warmups)} measurements ({args.app})")
        for key in warmups:
            if plan.measurements[key].restart_after:
                continue  # nothing to warm, and a restart costs more than it gives
            try:
                runner.run(plan.measurements[key], 1, warm_up=True)
            except WrkError as exc:
                failed_measurements[key] = f"wrk failed: {exc}"
        for round_index in range(rounds):
            keys = order if round_index % 2 == 0 else order[::-1]
            for key in keys:
                if key in failed_measurements:
                    continue
                measurement = plan.measurements[key]
                entry = series.setdefault(key, Series(measurement))
                entry.load_averages.append(environment.load_average()[0])
                try:
                    run = runner.run(measurement, seconds)
                except WrkError as exc:
                    failed_measurements[key] = f"wrk failed: {exc}"
                    series.pop(key, None)
                    continue
                result = run.result
                entry.runs.append(result)
                entry.cpu_us.append(run.cpu_us)
                entry.redis_cpu_us.append(run.redis_cpu_us)
                if run.background is not None:
                    entry.background_runs.append(run.background)
                log(
                    f"round {round_index + 1}/{rounds}  {measurement.label:<55} "
                    f"{result.rps:9.1f} rps  p50 {result.p50_ms:8.2f} ms  "
                    f"p99 {result.p99_ms:8.2f} ms"
                    + (f"  errors {result.error_count}" if result.error_count else "")
                )

    results: list[RatioResult] = []
    for ratio in ratios:
        reason = blocked(ratio)
        if reason is None and all(k in series for k in (ratio.numerator, ratio.denominator)):
            results.append(evaluate(ratio, series))
        else:
            results.append(RatioResult(ratio=ratio, skipped=reason or "not measured"))

    info = report.RunInfo(
        started_at=started_at,
        finished_at=datetime.now(UTC),
        rounds=rounds,
        seconds=seconds,
        quick=args.quick,
        app=args.app,
        machine=environment.machine(),
        versions=environment.versions(),
        load_before=load_before,
        load_after=environment.load_average(),
        server_commands=server_commands,
    )
    md_path, png_path = report.write(results, series, info, out_dir)
    print()
    print(report.table(results))
    print(f"\nwrote {md_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
