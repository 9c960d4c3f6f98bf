"""Settings every peer app reads, under the same environment names as ours."""

from pydantic import SecretStr
from pydantic_settings import BaseSettings


class PeerSettings(BaseSettings):
    redis_url: str = "redis://localhost:6379/0"
    redis_prefix: str = "peer:"
    jwt_secret: SecretStr = SecretStr("")
    rate_limit: str = "60/minute"
    cache_ttl_seconds: int = 60


SECONDS = {"second": 1, "minute": 60, "hour": 3600}


def parse_rate(text: str) -> tuple[int, int]:
    """Parse "100/minute" into (100, 60): a count and a period in seconds."""
    count, _, unit = text.partition("/")
    return int(count), SECONDS[unit.strip().lower()]
