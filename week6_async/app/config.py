"""Settings from environment variables (and an optional `.env` file)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # How long every store call waits, standing in for a real database's round trip.
    db_latency_ms: int = Field(default=100, ge=0, le=10_000)
