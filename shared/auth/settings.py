"""Auth settings and the signing secret (week 7: JWT, secure API)."""

import contextlib
import os
import secrets
import uuid
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def hashing_slots() -> int:
    """Cores this process may run on, less one for the event loop, and at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) - 1)


class AuthSettings(BaseSettings):
    """Token and password settings (env: JWT_SECRET, ACCESS_TOKEN_MINUTES, ...)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    jwt_secret: SecretStr
    access_token_minutes: int = 15
    refresh_token_days: int = 14
    # The absolute lifetime of a session, counted from the login that began it.
    session_max_days: int = 14
    issuer: str = "fastapi-course"
    # One core is left to the event loop: hashes running on every core made /health's
    # p99 2.2× its idle value while logins ran (bench R7). Per process: with several
    # workers on one machine, divide the cores between them.
    max_concurrent_hashes: int = Field(default_factory=hashing_slots, ge=1)
    # Hashes allowed to wait for a thread; past that a caller gets `HashingBusy` at
    # once, so a burst of sign-ups can't make a login wait for seconds.
    max_waiting_hashes: int = 8
    # Argon2id at RFC 9106's second recommended cost (64 MiB, 3 passes), in one lane:
    # above OWASP's floor (19 MiB, t=2, p=1). Lanes only spread one hash over more of
    # the defender's cores; an attacker's cost per guess is the same, so p=1 keeps a
    # login to one core, and `max_concurrent_hashes` says how many cores hashing gets.
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65536  # KiB
    argon2_parallelism: int = 1
    # Niceness of the hashing threads (Linux): 0 shares the CPU equally with the event loop.
    argon2_nice: int = 10

    @field_validator("jwt_secret")
    @classmethod
    def secret_is_long_enough(cls, value: SecretStr) -> SecretStr:
        # HS256 is only as strong as its key: RFC 7518 asks for 256 bits.
        if len(value.get_secret_value().encode()) < 32:
            raise ValueError("jwt_secret must be at least 32 bytes")
        return value


def load_or_create_secret(path: Path) -> SecretStr:
    """The signing secret kept in `path`, created (random, 48 bytes) when it is missing.

    For development without JWT_SECRET: a secret nobody else knows, that every
    worker and every restart shares. Created atomically (written aside, then
    hard-linked into place), so of workers starting together one creates it and
    the others read that one; readable by its owner only.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        draft = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(secrets.token_urlsafe(48) + "\n")
            with contextlib.suppress(FileExistsError):
                os.link(draft, path)  # fails if another process got there first
        finally:
            draft.unlink()
    secret = path.read_text().strip()
    if len(secret.encode()) < 32:
        raise ValueError(f"{path} holds no usable secret (under 32 bytes): delete it")
    return SecretStr(secret)
