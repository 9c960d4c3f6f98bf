"""Settings from environment variables (and an optional `.env` file)."""

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Used when JWT_SECRET is not set, so `make run-week8` works on a laptop with no setup.
# It is public (it is right here), so anyone can sign tokens with it: the app logs a
# warning at start-up while it is in use. A fixed value, not a random one per process,
# because every worker process and every restart must accept the tokens the others signed.
DEVELOPMENT_JWT_SECRET = "development-only-secret-set-JWT_SECRET-before-deploying"  # noqa: S105


class Settings(BaseSettings):
    # hide_input_in_errors: a JWT_SECRET that fails validation is not printed in the error.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", hide_input_in_errors=True)

    # How long every store call waits, standing in for a real database's round trip.
    db_latency_ms: int = Field(default=100, ge=0, le=10_000)

    # Signs the tokens: whoever knows it can sign in as anyone. SecretStr keeps it out of
    # reprs and logs. Make one with `python -c "import secrets; print(secrets.token_hex(32))"`.
    jwt_secret: SecretStr = SecretStr(DEVELOPMENT_JWT_SECRET)
    access_token_minutes: int = Field(default=15, ge=1, le=24 * 60)

    # Argon2's cost per hash: 3 passes over 64 MiB (RFC 9106's second recommended setting,
    # pwdlib's default). Tests lower them to stay fast; in production, raise them if you can.
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_cost: int = Field(default=64 * 1024, ge=32, description="KiB")

    # Redis, for the cache and the rate limits. Every key starts with REDIS_PREFIX, so
    # several apps (or test runs) can share one server without touching each other's keys.
    redis_url: str = "redis://localhost:6379/0"
    redis_prefix: str = "week8:"
    cache_ttl_seconds: int = Field(default=60, ge=1, le=24 * 3600)

    # "<count>/<second|minute|hour>": one budget per client for every route but /health*,
    # the docs and logging in, which has its own, smaller one per client address.
    rate_limit: str = "60/minute"
    login_rate_limit: str = "5/minute"

    @field_validator("jwt_secret")
    @classmethod
    def secret_is_long_enough(cls, secret: SecretStr) -> SecretStr:
        # RFC 7518 wants an HS256 key at least as long as its hash, 32 bytes. Anyone holding
        # one token can guess a short secret offline, at billions of guesses a second.
        if len(secret.get_secret_value().encode()) < 32:
            raise ValueError("JWT_SECRET must be 32 bytes or more")
        return secret
