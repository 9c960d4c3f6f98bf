"""The security settings: JWT_SECRET is checked, and its development default is announced."""

import logging

import pytest
from pydantic import ValidationError

from tests.week7_auth.conftest import fast_settings
from week7_auth.app.config import DEVELOPMENT_JWT_SECRET, Settings
from week7_auth.app.main import create_app


@pytest.mark.parametrize("secret", ["x" * 31, "é" * 15 + "x", ""])
def test_a_jwt_secret_under_32_bytes_is_refused_without_being_printed(secret: str) -> None:
    with pytest.raises(ValidationError, match="32 bytes or more") as caught:
        fast_settings(jwt_secret=secret)
    if secret:
        assert secret not in str(caught.value)


@pytest.mark.parametrize("secret", ["x" * 32, "é" * 16])  # bytes, not characters, count
def test_a_jwt_secret_of_32_bytes_is_accepted(secret: str) -> None:
    assert fast_settings(jwt_secret=secret).jwt_secret.get_secret_value() == secret


def test_the_secret_and_token_lifetime_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JWT_SECRET", "from-the-environment-0123456789abcdef")
    monkeypatch.setenv("ACCESS_TOKEN_MINUTES", "5")
    settings = Settings(_env_file=None)
    assert settings.jwt_secret.get_secret_value() == "from-the-environment-0123456789abcdef"
    assert settings.access_token_minutes == 5
    assert "from-the-environment" not in repr(settings)


def test_without_jwt_secret_the_development_one_is_used_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("JWT_SECRET", raising=False)
    settings = Settings(_env_file=None, argon2_time_cost=1, argon2_memory_cost=1024)
    assert settings.jwt_secret.get_secret_value() == DEVELOPMENT_JWT_SECRET

    create_app(settings)
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith("JWT_SECRET is not set")


def test_a_real_secret_starts_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    create_app(fast_settings())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
