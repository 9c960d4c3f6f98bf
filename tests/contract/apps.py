"""The apps the contract suite runs over: one line each.

Every week keeps the contract of the week before it, so the same tests run over
all five apps. Only what differs is said here: how to build the app with test
settings, whether sign-up takes a password and routes need a token (week 7 on),
and whether it needs Redis (week 8 on).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

SECRET = "contract-tests-secret-0123456789abcdef"  # 38 bytes, as a real secret must be
GENEROUS = "100000/minute"  # the contract is not about rate limits; week 8's own tests are


@dataclass(frozen=True)
class Backing:
    """What the test session provides to an app: Redis, when the app needs it."""

    redis_url: str | None = None
    redis_prefix: str | None = None


@dataclass(frozen=True)
class AppUnderTest:
    name: str
    package: str
    # The roadmap week whose contract it keeps; the final project is "week 9".
    week: int
    settings: Callable[[Backing], dict[str, Any]]

    @property
    def auth(self) -> bool:
        return self.week >= 7

    @property
    def redis(self) -> bool:
        return self.week >= 8

    def exists(self) -> bool:
        try:
            return importlib.util.find_spec(f"{self.package}.app.main") is not None
        except ModuleNotFoundError:
            return False

    def build(self, backing: Backing) -> FastAPI:
        main = importlib.import_module(f"{self.package}.app.main")
        if not self.settings(backing):
            return main.create_app()  # type: ignore[no-any-return]
        config = importlib.import_module(f"{self.package}.app.config")
        return main.create_app(config.Settings(**self.settings(backing)))  # type: ignore[no-any-return]


def _auth() -> dict[str, Any]:
    # Argon2 at its real cost (64 MiB, ~0.2 s) would spend minutes hashing the contract's
    # test accounts; the weeks' own tests check the real parameters.
    return {"jwt_secret": SECRET, "argon2_time_cost": 1, "argon2_memory_cost": 1024}


def _redis(backing: Backing) -> dict[str, Any]:
    return {
        "redis_url": backing.redis_url,
        "redis_prefix": backing.redis_prefix,
        "rate_limit": GENEROUS,
        "login_rate_limit": GENEROUS,
    }


ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin password for the contract tests"

APPS = [
    AppUnderTest("week5", "week5_crud", 5, lambda b: {}),
    AppUnderTest("week6", "week6_async", 6, lambda b: {"db_latency_ms": 0}),
    AppUnderTest("week7", "week7_auth", 7, lambda b: {**_auth(), "db_latency_ms": 0}),
    AppUnderTest("week8", "week8_redis", 8, lambda b: {**_auth(), "db_latency_ms": 0, **_redis(b)}),
    AppUnderTest(
        "final",
        "final_project",
        9,
        lambda b: {
            **_auth(),
            "argon2_parallelism": 1,
            "database_url": "memory://",
            "db_latency_ms": 0,
            "admin_email": ADMIN_EMAIL,
            "admin_password": ADMIN_PASSWORD,
            **_redis(b),
        },
    ),
]
