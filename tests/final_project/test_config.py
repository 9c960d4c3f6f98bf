"""Settings: production refuses a weak JWT secret at start-up; development makes its own."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest
from pydantic import ValidationError

from final_project.app.config import PUBLIC_SECRETS, Settings
from final_project.app.main import create_app, settings_from_environment
from tests.clients import serve
from tests.final_project.conftest import APP, Api, settings_for_tests
from tests.servers import ROOT, Uvicorn, free_port

STRONG = "a-production-secret-that-is-long-enough-0123456789"
# The week 7-8 lessons' development default: printed in this repository.
PUBLIC = "development-only-secret-set-JWT_SECRET-before-deploying"


@pytest.mark.parametrize(
    "secret", [None, "too-short-secret", PUBLIC], ids=["unset", "short", "default"]
)
def test_production_settings_refuse_a_weak_secret(secret: str | None) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, app_env="production", jwt_secret=secret)
    assert "JWT_SECRET" in str(caught.value)
    if secret:
        assert secret not in str(caught.value)  # a failed start never prints the secret


def test_production_settings_accept_a_long_random_secret() -> None:
    settings = Settings(_env_file=None, app_env="production", jwt_secret=STRONG)
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == STRONG
    assert PUBLIC in PUBLIC_SECRETS


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


def forged_admin_token(secret: str) -> str:
    now = int(time.time())
    claims: dict[str, str | int] = {"iss": "fastapi-course", "sub": "1", "role": "admin"}
    claims |= {"sid": "s", "jti": "j"}
    claims |= {"typ": "access", "iat": now, "exp": now + 60, "auth_time": now}
    return jwt.encode(claims, secret, algorithm="HS256")


async def test_development_without_a_secret_makes_a_private_one_that_restarts_share(
    redis_url: str, redis_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for_tests(redis_url, redis_prefix, jwt_secret=None, data_dir=tmp_path)
    # Two apps (two workers, or before and after a restart) accept each other's tokens.
    async with serve(create_app(settings)) as first:
        admin = await Api(first).admin()
        for public in PUBLIC_SECRETS:  # the attack: sign an admin with a secret anyone can read
            r = await first.get(
                "/audit", headers={"Authorization": f"Bearer {forged_admin_token(public)}"}
            )
            assert r.status_code == 401, r.text
    async with serve(create_app(settings)) as second:
        r = await second.get("/audit", headers=admin.headers)
    assert r.status_code == 200, r.text
    secret_file = tmp_path / "jwt_secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert len(secret_file.read_text().strip()) >= 32
    assert str(secret_file) in caplog.text  # says where it is


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
    "secret", [None, "too-short-secret", PUBLIC], ids=["unset", "short", "default"]
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
