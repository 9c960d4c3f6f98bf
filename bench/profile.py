"""`python -m bench.profile`: where one endpoint of the app spends its time.

Runs the app under pyinstrument (a sampling profiler) with the same settings as
the benchmark, loads one endpoint with wrk, then writes bench/out/profile.html
(open it in a browser) and prints the call tree.

    python -m bench.profile                      # the cached GET /users/{id}
    python -m bench.profile --path /hello?name=x --seconds 10

The profile shows wall-clock time of the event loop's thread: time spent waiting
for Redis appears under the event loop (`Runner.run`), not under the caller.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .__main__ import REDIS_HINT, raise_open_file_limit, sign_up
from .processes import ROOT, UVICORN_FLAGS, RedisServer, UvicornApp, free_port, make_workdir
from .suite import FINAL_APP, final_env
from .wrk import INSTALL_HINT, Load, run_wrk, wrk_binary

OUT = Path(__file__).resolve().parent / "out"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--app", default=FINAL_APP)
    parser.add_argument("--path", default="/users/<user_id>", help="<user_id> is filled in")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    redis_binary = shutil.which("redis-server")
    if wrk_binary() is None or redis_binary is None:
        print(INSTALL_HINT if wrk_binary() is None else REDIS_HINT, file=sys.stderr)
        return 2
    raise_open_file_limit()
    OUT.mkdir(exist_ok=True)
    workdir = make_workdir()
    session_file = workdir / "profile.pyisession"
    redis = RedisServer(redis_binary, workdir)
    redis.start()
    port = free_port()
    command = [
        sys.executable, "-m", "pyinstrument", "-r", "pyisession", "-o", str(session_file),
        "-m", "uvicorn", args.app, "--host", "127.0.0.1", "--port", str(port), *UVICORN_FLAGS,
    ]  # fmt: skip
    env = {**os.environ, **final_env(redis.url, secrets.token_urlsafe(48), "profile")}
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        UvicornApp("profile", args.app, port=port, process=server).wait_until_ready()
        session = sign_up(url)
        load = Load(
            args.path.replace("<user_id>", str(session.user_id)),
            connections=args.connections,
            seconds=args.seconds,
            headers={"Authorization": f"Bearer {session.token}"},
        )
        result = run_wrk(url, load, secrets={session.token: "$TOKEN"})
        print(f"{result.rps:,.0f} rps, p50 {result.p50_ms:.2f} ms (slower than unprofiled)")
    finally:
        # SIGINT lets uvicorn shut down, and pyinstrument writes its session on exit.
        server.send_signal(signal.SIGINT)
        server.wait(60)
        redis.stop()
    html = OUT / "profile.html"
    for renderer, extra in (("html", ["-o", str(html)]), ("text", [])):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pyinstrument",
                "--load",
                str(session_file),
                "-r",
                renderer,
                *extra,
            ],
            check=True,
        )
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nwrote {html.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
