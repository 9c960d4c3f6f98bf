"""The apps the contract suite runs over: one line each.

Every week keeps the contract of the week before it, so the same tests run over
all five apps. Only what differs is said here: how to build the app with test
settings, whether sign-up takes a password and routes need a token (week 7 on),
and whether it needs Redis (week 8 on).

`--workspace my/week5 --app week5` grades a learner's own app with week 5's tests
instead (`make grade-week5`). Their app gets the same settings, through environment
variables, so it needs no `create_app(settings)` of the reference's exact shape.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
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

    def environment(self, backing: Backing) -> Mapping[str, str]:
        """The same settings as environment variables, as a learner's app reads them."""
        return {name.upper(): str(value) for name, value in self.settings(backing).items()}


@dataclass(frozen=True)
class Workspace(AppUnderTest):
    """A learner's own app in a folder of theirs, graded as the reference week it copies."""

    folder: Path = Path()

    def exists(self) -> bool:
        return (self.folder / "app" / "main.py").exists()

    def build(self, backing: Backing) -> FastAPI:
        # The caller has put the settings in the environment: see `environment`.
        main = importlib.import_module(f"{self.package}.app.main")
        return main.create_app()  # type: ignore[no-any-return]


def workspace(folder: Path, graded_as: AppUnderTest) -> Workspace:
    """Make the app in `folder` importable under the folder's own name, and describe it."""
    folder = folder.resolve()
    if str(folder.parent) not in sys.path:
        sys.path.insert(0, str(folder.parent))
    fields = {**vars(graded_as), "name": "yours", "package": folder.name}
    return Workspace(**fields, folder=folder)


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
            # The final project's abuse budgets and Host check, opened for the suite.
            "signup_rate_limit": GENEROUS,
            "login_account_rate_limit": GENEROUS,
            "max_waiting_hashes": 100,
            "allowed_hosts": "test",  # a string: it also goes into the environment
        },
    ),
]
