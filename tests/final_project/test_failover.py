"""A Sentinel failover under load: two real uvicorn workers, a primary, a replica and a
Sentinel, and the primary killed while requests run.

What a failover may cost (final_project/PERSISTENCE.md has the measured numbers):
while no primary answers, cached reads are BYPASS (the store answers) and rate
limits are counted per process; revocations are answered by the durable store.
None of it may be a 5xx or a request that hangs, and once the Sentinel has
promoted the replica everything goes back to Redis by itself.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.final_project.conftest import APP, ServerApi, final_env
from tests.servers import RedisSentinelGroup, Uvicorn
from tests.waiting import wait_until_sync

pytestmark = pytest.mark.slow

# A request's bound: far above a healthy answer, far below "hangs".
REQUEST_TIMEOUT = 10.0


class Load:
    """Threads that GET one user's profile until stopped, tallying what came back."""

    def __init__(self, base_url: str, path: str, headers: dict[str, str], threads: int) -> None:
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(base_url, path, headers), daemon=True)
            for _ in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT * 2)
        assert not any(t.is_alive() for t in self._threads), "a load thread never returned"

    def count(self) -> int:
        with self._lock:
            return sum(self.outcomes.values())

    def _run(self, base_url: str, path: str, headers: dict[str, str]) -> None:
        with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT) as client:
            while not self._stop.is_set():
                try:
                    r = client.get(path, headers=headers)
                    outcome = f"{r.status_code} {r.headers.get('x-cache', '-')}"
                except httpx.TimeoutException:
                    outcome = "timeout"
                with self._lock:
                    self.outcomes[outcome] += 1


@pytest.fixture
def server(private_redis_sentinel: RedisSentinelGroup, tmp_path: Path) -> Iterator[Uvicorn]:
    env = final_env(
        redis_url=private_redis_sentinel.url,
        redis_prefix=f"test:{uuid.uuid4().hex[:10]}:",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'final.db'}",
    )
    with Uvicorn(APP, env=env, workers=2) as server:
        yield server


def test_a_failover_costs_no_5xx_and_the_api_goes_back_to_redis(
    private_redis_sentinel: RedisSentinelGroup, server: Uvicorn
) -> None:
    api = ServerApi(server.url, timeout=REQUEST_TIMEOUT)
    try:
        me = api.sign_up()
        path = f"/users/{me.id}"

        def cached() -> bool:
            r = api.client.get(path, headers=me.headers)
            assert r.status_code == 200, r.text
            return r.headers["x-cache"] == "HIT"

        wait_until_sync(cached, "the profile is served from the cache before the failover")
        with Load(server.url, path, me.headers, threads=4) as load:
            wait_until_sync(lambda: load.count() >= 20, "requests run before the kill")
            killed_at = time.monotonic()
            old = private_redis_sentinel.kill_primary()
            private_redis_sentinel.wait_for_failover(old)
            promoted_at = time.monotonic()
            before = load.count()
            wait_until_sync(lambda: load.count() >= before + 20, "requests run after the failover")
            # Every worker trusts the new primary again on its own: HITs on both.
            wait_until_sync(
                lambda: all(cached() for _ in range(8)),
                "the cache serves HITs from the promoted replica",
                timeout=30,
            )
            back_at = time.monotonic()
        outcomes = load.outcomes
        # What the failover cost, for PERSISTENCE.md (shown with pytest -s).
        print(
            f"failover: promoted after {promoted_at - killed_at:.1f} s, all HITs after"
            f" {back_at - killed_at:.1f} s; outcomes {dict(outcomes)}"
        )
        assert not [o for o in outcomes if o == "timeout" or o.startswith("5")], outcomes
        assert {o.split()[0] for o in outcomes} == {"200"}, outcomes

        # A logout after the failover holds on every worker (the denylist was refilled).
        r = api.client.post(
            "/auth/logout", headers=me.headers, json={"refresh_token": me.refresh_token}
        )
        assert r.status_code == 204, r.text
        for _ in range(8):
            assert api.client.get("/users/me", headers=me.headers).status_code == 401
    finally:
        api.close()
