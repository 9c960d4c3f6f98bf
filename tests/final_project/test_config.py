"""Settings: production refuses a weak JWT secret at start-up; development has a fixed default."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from pydantic import ValidationError

from final_project.app.config import DEVELOPMENT_JWT_SECRET, Settings
from final_project.app.main import create_app, settings_from_environment
from tests.final_project.conftest import APP, Api, serve_in_process, settings_for_tests
from tests.servers import ROOT, Uvicorn, free_port

STRONG = "a-production-secret-that-is-long-enough-0123456789"


@pytest.mark.parametrize(
    "secret", [None, "too-short-secret", DEVELOPMENT_JWT_SECRET], ids=["unset", "short", "default"]
)
def test_production_settings_refuse_a_weak_secret(secret: str | None) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, app_env="production", jwt_secret=secret)
    assert "JWT_SECRET" in str(caught.value)
    if secret:
        assert secret not in str(caught.value)  # a failed start never prints the secret


def test_production_settings_accept_a_long_random_secret() -> None:
    settings = Settings(_env_file=None, app_env="production", jwt_secret=STRONG)
    assert settings.signing_secret().get_secret_value() == STRONG


def test_a_short_secret_is_refused_in_development_too() -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, jwt_secret="short")


@pytest.mark.parametrize(
    ("name", "value"),
    [("rate_limit", "60"), ("rate_limit", "0/minute"), ("login_rate_limit", "5/fortnight")],
)
def test_a_malformed_rate_is_refused(name: str, value: str) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate({name: value})


def test_cors_origins_read_as_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    assert Settings(_env_file=None).cors_origins == ["https://a.example", "https://b.example"]
    monkeypatch.setenv("CORS_ORIGINS", "")
    assert Settings(_env_file=None).cors_origins == []


async def test_development_without_a_secret_signs_with_the_documented_default(
    redis_url: str, redis_prefix: str
) -> None:
    settings = settings_for_tests(redis_url, redis_prefix, jwt_secret=None)
    assert settings.uses_development_secret
    # Two apps (two workers, or before and after a restart) accept each other's tokens.
    async with serve_in_process(create_app(settings)) as first:
        me = await Api(first).sign_up(email="dev@example.com")
    async with serve_in_process(create_app(settings)) as second:
        r = await second.get("/users", headers=me.headers)  # claims only, no user lookup
    assert r.status_code == 200, r.text


def _start_production(secret: str | None, workers: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in {"JWT_SECRET"}}
    env.update(APP_ENV="production", DATABASE_URL="memory://", LOG_LEVEL="WARNING")
    if secret is not None:
        env["JWT_SECRET"] = secret
    args = [sys.executable, "-m", "uvicorn", "final_project.app.main:app"]
    args += ["--port", str(free_port()), "--workers", str(workers)]
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


@pytest.mark.parametrize(
    "secret", [None, "too-short-secret", DEVELOPMENT_JWT_SECRET], ids=["unset", "short", "default"]
)
def test_the_app_module_exits_with_status_3_in_production_with_a_weak_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], secret: str | None
) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.delenv("JWT_SECRET", raising=False)
    if secret is not None:
        monkeypatch.setenv("JWT_SECRET", secret)
    with pytest.raises(SystemExit) as caught:
        settings_from_environment()
    assert caught.value.code == 3
    message = capsys.readouterr().err
    assert "final_project refuses to start" in message
    assert "JWT_SECRET" in message
    assert secret is None or secret not in message


def test_uvicorn_refuses_to_start_in_production_with_a_weak_secret() -> None:
    # Started together: each spends most of its time importing.
    single = _start_production("too-short-secret", workers=1)
    several = _start_production(None, workers=2)

    text = _finish(single)
    assert single.returncode == 3, text  # uvicorn's "failed before serving"
    assert "final_project refuses to start" in text, text
    assert "too-short-secret" not in text

    # With --workers, uvicorn's supervisor stops on a worker's status 3 instead of
    # restarting it forever, but exits 0 itself.
    text = _finish(several)
    assert "final_project refuses to start" in text, text
    assert "Stopping parent process" in text, text


def _finish(process: subprocess.Popen[bytes]) -> str:
    try:
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return output.decode(errors="replace")


def test_uvicorn_serves_in_production_with_a_strong_secret(redis_url: str) -> None:
    # The control for the test above: only the secret differs.
    env = {"APP_ENV": "production", "JWT_SECRET": STRONG, "DATABASE_URL": "memory://"}
    env |= {"REDIS_URL": redis_url, "LOG_LEVEL": "WARNING"}
    with Uvicorn(APP, env=env) as server:
        assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
