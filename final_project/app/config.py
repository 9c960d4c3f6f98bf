"""Every setting of the final project, read from the environment (and `.env`).

The names are the contract in docs/contract.md; README.md has the table. Each
shared module keeps its own settings class; `services.py` builds them from this
one, so this file is the single place an operator looks.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.auth import hashing_slots
from shared.rate_limit import parse_rate
from shared.redis import parse_redis_url

# Secrets printed in this repository (the week 7-8 lessons' development default, and
# the one this app used to fall back to): anyone can sign tokens with them.
PUBLIC_SECRETS = frozenset(
    {
        "development-only-secret-set-JWT_SECRET-before-deploying",
        "development-only-jwt-secret-do-not-use-in-production",
    }
)
MIN_SECRET_BYTES = 32
LOCAL_HOSTS = ["localhost", "127.0.0.1", "::1"]


class Settings(BaseSettings):
    # hide_input_in_errors: a failed start must not print JWT_SECRET or ADMIN_PASSWORD.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", hide_input_in_errors=True)

    app_env: Literal["development", "production"] = "development"
    jwt_secret: SecretStr | None = None
    access_token_minutes: int = Field(default=15, ge=1, le=24 * 60)
    refresh_token_days: int = Field(default=14, ge=1, le=365)
    session_max_days: int = Field(default=14, ge=1, le=365)

    redis_url: str = "redis://localhost:6379/0"
    redis_prefix: str = "final:"
    cache_ttl_seconds: int = Field(default=60, ge=1)
    rate_limit: str = "60/minute"
    login_rate_limit: str = "5/minute"
    login_account_rate_limit: str = "10/hour"
    signup_rate_limit: str = "5/minute"
    # False: no rate-limit middleware at all (behind a gateway that limits, or to measure it).
    rate_limit_enabled: bool = True

    database_url: str = "sqlite+aiosqlite:///./data/final.db"
    # Where the generated JWT secret lives when JWT_SECRET is unset (outside production).
    data_dir: Path = Path("data")
    db_latency_ms: int = Field(default=100, ge=0)

    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    # /users and /auth take a few short fields: a bigger body is an attack, not a user.
    max_json_body_bytes: int = Field(default=16 * 1024, ge=1)
    cors_origins: Annotated[list[str], NoDecode] = []
    allowed_hosts: Annotated[list[str], NoDecode] = LOCAL_HOSTS

    admin_email: str | None = None
    admin_password: SecretStr | None = None

    log_level: str = "INFO"
    # Prometheus at GET /metrics: off unless switched on; a scraper then sends
    # `Authorization: Bearer <METRICS_TOKEN>`, unless METRICS_PUBLIC lets anyone in
    # (only where the network already keeps the world out).
    metrics_enabled: bool = False
    metrics_token: SecretStr | None = None
    metrics_public: bool = False
    # FastAPI's own OpenTelemetry spans, sent to OTEL_EXPORTER_OTLP_ENDPOINT (OTLP over
    # HTTP); needs the `tracing` extra: pip install -c constraints.txt -e '.[tracing]'.
    tracing_enabled: bool = False

    # Argon2id cost: 64 MiB, 3 passes, one lane (shared/auth/settings.py says why); tests lower it.
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_cost: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=1, ge=1)
    # Hashes at once: the cores less one for the event loop, per worker process.
    max_concurrent_hashes: int = Field(default_factory=hashing_slots, ge=1)
    # Hashes that may wait for a hashing thread; past that, a fast 503.
    max_waiting_hashes: int = Field(default=8, ge=0)

    @field_validator("cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def split_origins(cls, value: object) -> object:
        # CORS_ORIGINS=https://a.example,https://b.example reads naturally in a shell.
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator(
        "rate_limit", "login_rate_limit", "login_account_rate_limit", "signup_rate_limit"
    )
    @classmethod
    def rate_format(cls, value: str) -> str:
        parse_rate(value)  # the limiter's own parser: one notion of a valid rate
        return value

    @field_validator("redis_url")
    @classmethod
    def redis_url_form(cls, value: str) -> str:
        parse_redis_url(value)  # one server, redis+cluster:// or redis+sentinel://
        return value

    @field_validator("jwt_secret")
    @classmethod
    def secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        return value

    @model_validator(mode="after")
    def metrics_need_a_token_or_public(self) -> Settings:
        # Enabled with neither would answer every scrape 401: say so at start-up instead.
        # An empty METRICS_TOKEN= counts as none: no scraper could ever present it.
        token = self.metrics_token.get_secret_value() if self.metrics_token else ""
        if self.metrics_enabled and not token and not self.metrics_public:
            raise ValueError("METRICS_ENABLED needs METRICS_TOKEN, or METRICS_PUBLIC=true")
        return self

    @model_validator(mode="after")
    def production_needs_a_real_secret(self) -> Settings:
        # Raising here stops uvicorn before it serves a single request: a
        # production server signing tokens with a known key is worse than none.
        if self.app_env == "production" and (
            self.jwt_secret is None or self.jwt_secret.get_secret_value() in PUBLIC_SECRETS
        ):
            raise ValueError(
                "APP_ENV=production needs JWT_SECRET: a random value of at least "
                f"{MIN_SECRET_BYTES} bytes, e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(48))'`"
            )
        return self

    @property
    def jwt_secret_file(self) -> Path:
        """Where the secret made for development lives (used only without JWT_SECRET)."""
        return self.data_dir / "jwt_secret"


def check() -> None:
    """`python -m final_project.app.config`: refuse unsafe settings in a line, not a traceback."""
    try:
        Settings()
    except ValidationError as exc:
        sys.exit(f"refusing to start: {settings_problems(exc)}")


def settings_problems(exc: ValidationError) -> str:
    """Every problem of invalid settings on one line, without the values (secrets)."""
    return "; ".join(
        f"{'.'.join(map(str, error['loc'])) or 'settings'}: {error['msg']}"
        for error in exc.errors(include_input=False)
    )


if __name__ == "__main__":
    check()
