"""Run every contract test once per app in `apps.APPS` (or those named with --app)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import clients
from tests.clients import serve
from tests.contract.apps import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    APPS,
    AppUnderTest,
    Backing,
    workspace,
)

PASSWORD = "correct horse battery staple"


def selected_apps(config: pytest.Config) -> list[AppUnderTest]:
    """The apps named with --app (all of them by default), or the learner's --workspace."""
    chosen = config.getoption("--app")
    unknown = set(chosen) - {app.name for app in APPS}
    if unknown:
        raise pytest.UsageError(f"--app: no such app {sorted(unknown)}")
    folder = config.getoption("--workspace")
    if folder:
        if len(chosen) != 1:
            raise pytest.UsageError("--workspace needs one --app: the week it is graded as")
        [graded_as] = [app for app in APPS if app.name == chosen[0]]
        return [workspace(Path(folder), graded_as)]
    return [app for app in APPS if app.exists() and (not chosen or app.name in chosen)]


def since_week(module: Path) -> int:
    """A module about what week N added is named test_weekN_adds.py and runs from week N on."""
    match = re.fullmatch(r"test_week(\d+)_adds\.py", module.name)
    return int(match.group(1)) if match else 5


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # `make test-week5` reports week 5's tests, not later weeks' modules parametrized over nothing.
    since = since_week(collection_path)
    if all(app.week < since for app in selected_apps(config)):
        return True
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "app_under_test" in metafunc.fixturenames:
        since = since_week(metafunc.definition.path)
        apps = [app for app in selected_apps(metafunc.config) if app.week >= since]
        metafunc.parametrize("app_under_test", apps, ids=[app.name for app in apps])


@pytest.fixture
async def client(
    app_under_test: AppUnderTest, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    backing = Backing()
    if app_under_test.redis:
        backing = Backing(
            redis_url=request.getfixturevalue("redis_url"),
            redis_prefix=request.getfixturevalue("redis_prefix"),
        )
    for name, value in app_under_test.environment(backing).items():
        monkeypatch.setenv(name, value)
    async with serve(app_under_test.build(backing)) as client:
        yield client


class Api(clients.Api):
    """Signs users up the way each week expects: with a password and a token from week 7."""

    def __init__(self, client: httpx.AsyncClient, app: AppUnderTest) -> None:
        super().__init__(client, password=PASSWORD, auth=app.auth)
        self.app = app

    def changing_credentials(self, body: dict[str, Any]) -> dict[str, Any]:
        """A body that changes one's own email or password: the final project wants the
        current password with it."""
        return {**body, "current_password": PASSWORD} if self.app.week >= 9 else body

    async def audit_reader(self) -> dict[str, str]:
        """Who may read /audit: anyone (week 6), anyone signed in (7-8), an admin (final)."""
        if self.app.week >= 9:
            return (await self.log_in(ADMIN_EMAIL, ADMIN_PASSWORD)).headers
        if self.auth:
            return (await self.sign_up("Auditor")).headers
        return {}


@pytest.fixture
def api(client: httpx.AsyncClient, app_under_test: AppUnderTest) -> Api:
    return Api(client, app_under_test)
