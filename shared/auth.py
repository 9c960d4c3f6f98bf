"""Passwords, JWTs, refresh rotation and revocation (week 7: auth basics, JWT, secure API).

What the week-7 app teaches in its simplest form, made production-grade:

- Argon2 hashing off the event loop, at most `max_concurrent_hashes` at a time
  (each hash takes `argon2_memory_cost` KiB: 64 MiB by default), a dummy hash for
  unknown users so they take as long as known ones, and a rehash when the
  parameters change.
- Access and refresh tokens that can't be mistaken for each other (`typ` claim,
  checked both ways), HS256 only, required claims, a secret of 32 bytes or more.
- Refresh rotation with reuse detection: presenting a spent refresh token revokes
  its whole family (session), access tokens included.
- Revocation (logout, reuse) is written to the durable `TokenStore` first; Redis
  holds a denylist as the fast path. A Redis that lost its data, restarted from an
  old snapshot, or that this process couldn't write to is refilled from the store
  before it is trusted again; while Redis is unusable the store answers.
- Sessions end when the account changes (`end_sessions`): a per-user "valid from"
  mark, durable in the store and mirrored in Redis like the denylist, refuses every
  token of a session that began before it. A session also has an absolute lifetime
  (`session_max_days`) that refresh rotation never extends.
"""

import asyncio
import contextlib
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, TypeVar

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import Redis
from starlette.types import Scope

from .redis import (
    PEEK_STATE,
    REDIS_ERRORS,
    Batcher,
    OneAtATime,
    RedisCircuit,
    redis_watch,
    server_run_id,
)

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

ALGORITHM = "HS256"
ACCESS = "access"
REFRESH = "refresh"
# Family revocations go through `TokenStore.revoke_access` under this prefix too, so a
# refill from `revoked_access()` restores them (jtis are uuid hex and never collide).
FAMILY_PREFIX = "family:"


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


# Passwords -------------------------------------------------------------------


class HashingBusy(Exception):
    """Every hashing thread is busy and the waiting line is full: try again shortly."""


def _lower_thread_priority(nice: int) -> None:
    # Linux: niceness is per thread and inherited by the threads Argon2 starts for
    # its lanes, so hashing yields the CPU to the event loop instead of sharing it.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


class PasswordHasher:
    """Argon2 via pwdlib, in worker threads of its own, `max_concurrent` at a time.

    The threads run at a lower priority (`nice`): a burst of logins on a small
    machine then slows other logins, not every other request of the process.
    """

    def __init__(
        self,
        settings: AuthSettings | None = None,
        *,
        time_cost: int | None = None,
        memory_cost: int | None = None,
        parallelism: int | None = None,
        max_concurrent: int | None = None,
        max_waiting: int | None = None,
        nice: int | None = None,
    ) -> None:
        def pick(explicit: int | None, name: str, default: int) -> int:
            if explicit is not None:
                return explicit
            return int(getattr(settings, name)) if settings is not None else default

        self._hash = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=pick(time_cost, "argon2_time_cost", 3),
                    memory_cost=pick(memory_cost, "argon2_memory_cost", 65536),
                    parallelism=pick(parallelism, "argon2_parallelism", 1),
                ),
            )
        )
        # Each hash holds memory_cost KiB for its duration: the semaphore bounds memory
        # (and the pool's size holds it even for a hash whose caller went away).
        slots = pick(max_concurrent, "max_concurrent_hashes", hashing_slots())
        self._slots = asyncio.Semaphore(slots)
        # Running plus waiting: beyond this a hash is refused rather than queued.
        self._capacity = slots + pick(max_waiting, "max_waiting_hashes", 8)
        self._pending = 0
        self._threads = ThreadPoolExecutor(
            max_workers=slots,
            thread_name_prefix="argon2",
            initializer=_lower_thread_priority,
            initargs=(pick(nice, "argon2_nice", 10),),
        )
        self._dummy: str | None = None

    def close(self) -> None:
        """Let the hashing threads go (they also go when the hasher is garbage-collected)."""
        self._threads.shutdown(wait=False)

    async def _in_thread(self, function: Callable[..., _T], *args: str) -> _T:
        if self._pending >= self._capacity:
            raise HashingBusy
        self._pending += 1
        try:
            async with self._slots:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._threads, function, *args)
        finally:
            self._pending -= 1

    async def hash(self, password: str) -> str:
        """Hash a password in a worker thread; raises `HashingBusy` when the line is full."""
        return await self._in_thread(self._hash.hash, password)

    async def verify(self, password: str, hashed: str | None) -> tuple[bool, str | None]:
        """Check a password; `hashed` None (unknown user) checks a dummy hash of equal cost.

        Returns (valid, new_hash): new_hash is set when the stored hash used other
        parameters than the current ones, so the caller can store it.
        """
        if hashed is None:
            await self._verify_dummy(password)
            return False, None
        try:
            return await self._in_thread(self._hash.verify_and_update, password, hashed)
        except UnknownHashError:
            pass
        await self._verify_dummy(password)
        return False, None

    async def _verify_dummy(self, password: str) -> None:
        # Verify a dummy hash so unknown emails take as long as wrong passwords.
        if self._dummy is None:
            self._dummy = await self.hash(uuid.uuid4().hex)
        await self._in_thread(self._hash.verify, password, self._dummy)


# Tokens ----------------------------------------------------------------------


class InvalidToken(Exception):
    """A token that is malformed, expired, of the wrong type, revoked or reused."""


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified claims of an access token."""

    sub: str
    role: str
    jti: str
    sid: str
    exp: int
    iat: int
    # When the login that began this session read the credentials (epoch seconds, a float).
    auth_time: float


@dataclass(frozen=True, slots=True)
class RefreshClaims:
    """The verified claims of a refresh token."""

    sub: str
    role: str
    jti: str
    sid: str
    exp: int
    iat: int
    # When the login that began this session read the credentials (epoch seconds, a float).
    auth_time: float


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What a login or a refresh hands out."""

    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret


class TokenStore(Protocol):
    """Durable token state: it survives Redis restarts, and Redis is refilled from it."""

    async def add_refresh(
        self, jti: str, family: str, user_id: str, expires_at: datetime
    ) -> None: ...

    async def use_refresh(self, jti: str) -> Literal["ok", "reused", "unknown"]:
        """Mark a refresh token spent; of concurrent calls with one jti exactly one is "ok"."""
        ...

    async def revoke_family(self, family: str) -> None: ...

    async def family_revoked(self, family: str) -> bool: ...

    async def revoke_access(self, jti: str, expires_at: datetime) -> None: ...

    async def revoked_access(self, now: datetime) -> list[tuple[str, datetime]]:
        """Every revoked access jti that has not expired yet."""
        ...

    async def access_revoked(self, jti: str) -> bool: ...

    async def end_sessions(self, user_id: str, at: datetime) -> None:
        """Sessions of `user_id` that began before `at` are over (the latest mark wins)."""
        ...

    async def sessions_valid_from(self, user_id: str) -> datetime | None: ...

    async def session_marks(self, since: datetime) -> list[tuple[str, datetime]]:
        """Every mark set after `since` (older ones outlived every session they ended)."""
        ...


class MemoryTokenStore:
    """A `TokenStore` in this process's memory: for `memory://` and tests.

    Every method runs without an await between its read and its write, which is
    what makes `use_refresh` atomic under asyncio.
    """

    def __init__(self) -> None:
        self._refresh: dict[str, tuple[str, str, datetime, bool]] = {}
        self._revoked_families: set[str] = set()
        self._revoked_access: dict[str, datetime] = {}
        self._valid_from: dict[str, datetime] = {}

    async def add_refresh(self, jti: str, family: str, user_id: str, expires_at: datetime) -> None:
        self._refresh[jti] = (family, user_id, expires_at, False)

    async def use_refresh(self, jti: str) -> Literal["ok", "reused", "unknown"]:
        entry = self._refresh.get(jti)
        if entry is None:
            return "unknown"
        family, user_id, expires_at, used = entry
        if used:
            return "reused"
        self._refresh[jti] = (family, user_id, expires_at, True)
        return "ok"

    async def revoke_family(self, family: str) -> None:
        self._revoked_families.add(family)

    async def family_revoked(self, family: str) -> bool:
        return family in self._revoked_families

    async def revoke_access(self, jti: str, expires_at: datetime) -> None:
        self._revoked_access[jti] = expires_at

    async def revoked_access(self, now: datetime) -> list[tuple[str, datetime]]:
        for jti in [j for j, at in self._revoked_access.items() if at <= now]:
            del self._revoked_access[jti]
        return list(self._revoked_access.items())

    async def access_revoked(self, jti: str) -> bool:
        return jti in self._revoked_access

    async def end_sessions(self, user_id: str, at: datetime) -> None:
        current = self._valid_from.get(user_id)
        self._valid_from[user_id] = at if current is None else max(current, at)

    async def sessions_valid_from(self, user_id: str) -> datetime | None:
        return self._valid_from.get(user_id)

    async def session_marks(self, since: datetime) -> list[tuple[str, datetime]]:
        return [(user, at) for user, at in self._valid_from.items() if at > since]


RoleLookup = Callable[[str], Awaitable[str | None]]
SubjectLookup = Callable[[str], Awaitable[bool]]


class TokenService:
    """Issues, decodes, rotates and revokes tokens.

    `redis` may be None (no fast path: the store answers every revocation check).
    Keys: `{prefix}auth:ready`, `{prefix}auth:deny:{jti}`, `{prefix}auth:family:{sid}`,
    `{prefix}auth:user:{sub}` (sessions valid from); never a raw token, each with a TTL.

    `subject_exists(sub)`, when given, is asked once per user and process whether a
    token's `sub` still names someone; after that, deletion is the session mark's job.
    """

    def __init__(
        self,
        settings: AuthSettings,
        store: TokenStore,
        redis: Redis | None,
        prefix: str,
        *,
        circuit_cooldown: float = 1.0,
        marker_seconds: int = 3600,
        repair_interval: float = 0.2,
        verified_tokens: int = 4096,
        subject_exists: SubjectLookup | None = None,
        on_circuit_change: Callable[[bool], None] | None = None,
        on_reuse: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.redis = redis
        self.prefix = prefix
        self.access_seconds = settings.access_token_minutes * 60
        self.refresh_seconds = settings.refresh_token_days * 86400
        self.session_seconds = settings.session_max_days * 86400
        self._secret = settings.jwt_secret.get_secret_value()
        self._issuer = settings.issuer
        self._jwt = jwt.PyJWT()
        self._verified: dict[str, AccessClaims] = {}
        self._verified_max = verified_tokens
        self._subject_exists = subject_exists
        # Users this process has seen exist, and tokens it has found revoked: both
        # bounded like `_verified`, and both only ever trusted in the safe direction.
        self._known_subjects: dict[str, None] = {}
        self._refused: dict[str, None] = {}
        self._required = ["exp", "iat", "sub", "jti", "typ", "iss", "sid", "role", "auth_time"]
        self._ready_key = f"{prefix}auth:ready"
        self._deny_prefix = f"{prefix}auth:deny:"
        self._family_prefix = f"{prefix}auth:family:"
        self._user_prefix = f"{prefix}auth:user:"
        self._marker_seconds = marker_seconds
        self._repair_interval = repair_interval
        self._circuit = RedisCircuit(circuit_cooldown, on_change=on_circuit_change)
        # Told each time a spent refresh token comes back (metrics, alerts).
        self._on_reuse = on_reuse
        self._watch = redis_watch(redis)
        self._generation = self._watch.generation if self._watch is not None else 0
        # The marker value this process last verified or wrote; None = verify first.
        self._marker: bytes | None = None
        # Set when a revocation could not reach Redis: refill before trusting it.
        self._refill_needed = False
        # Counts those revocations, so a refill that began before one of them (and
        # may have read the store too early) does not mark Redis complete.
        self._missed_revocations = 0
        self._sync = OneAtATime(self._synchronise)
        self._repair: asyncio.Task[None] | None = None
        self._reads: Batcher[tuple[str, str, str], tuple[bytes | None, ...]] = Batcher(
            self._read_batch
        )

    async def aclose(self) -> None:
        """Stop the background repair task, if one is running."""
        if self._repair is not None:
            self._repair.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._repair
            self._repair = None

    # issuing and decoding ----------------------------------------------------

    async def issue(self, user_id: str, role: str, *, auth_time: float | None = None) -> TokenPair:
        """Start a new session (refresh family) and hand out its first pair.

        `auth_time`: when the login read the credentials it checked (`time.time()`
        before the store lookup), default now. A password change that lands while a
        login with the old one is still hashing then ends that session too.
        """
        started = time.time() if auth_time is None else auth_time
        return await self._issue_pair(user_id, role, uuid.uuid4().hex, started)

    async def _issue_pair(
        self, user_id: str, role: str, family: str, auth_time: float
    ) -> TokenPair:
        now = int(time.time())
        # Neither token outlives the session: rotation never pushes its end further.
        session_end = int(auth_time) + self.session_seconds
        if session_end <= now:
            raise InvalidToken("session expired: log in again")
        access_exp = min(now + self.access_seconds, session_end)
        access = self._encode(ACCESS, user_id, role, family, now, access_exp, auth_time)
        refresh_jti = uuid.uuid4().hex
        refresh_exp = min(now + self.refresh_seconds, session_end)
        refresh = self._encode(
            REFRESH, user_id, role, family, now, refresh_exp, auth_time, refresh_jti
        )
        await self.store.add_refresh(refresh_jti, family, user_id, _utc(refresh_exp))
        return TokenPair(access, refresh, access_exp - now)

    def _encode(
        self,
        typ: str,
        sub: str,
        role: str,
        sid: str,
        iat: int,
        exp: int,
        auth_time: float,
        jti: str | None = None,
    ) -> str:
        payload = {
            "iss": self._issuer,
            "sub": sub,
            "role": role,
            "sid": sid,
            "jti": jti or uuid.uuid4().hex,
            "typ": typ,
            "iat": iat,
            "exp": exp,
            "auth_time": auth_time,
        }
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM)

    def _decode(self, token: str, typ: str) -> dict[str, Any]:
        try:
            payload: dict[str, Any] = self._jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                options={"require": self._required},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc
        if payload.get("typ") != typ:
            raise InvalidToken(f"not an {typ} token" if typ == ACCESS else f"not a {typ} token")
        for name in ("sub", "role", "jti", "sid"):
            if not isinstance(payload.get(name), str):
                raise InvalidToken(f"claim {name} must be a string")
        for name in ("exp", "iat"):
            if not isinstance(payload.get(name), int):
                raise InvalidToken(f"claim {name} must be an integer")
        auth_time = payload["auth_time"]
        if isinstance(auth_time, bool) or not isinstance(auth_time, int | float):
            raise InvalidToken("claim auth_time must be a number")
        # A correctly signed token that promises more than this server hands out (a
        # leaked secret's forgery, or a config since made stricter) is refused.
        lifetime = self.access_seconds if typ == ACCESS else self.refresh_seconds
        if payload["exp"] - payload["iat"] > lifetime:
            raise InvalidToken("token lifetime longer than allowed")
        if not auth_time <= payload["iat"] + 1 or payload["exp"] > auth_time + self.session_seconds:
            raise InvalidToken("token outlives its session")
        return payload

    def decode_access(self, token: str) -> AccessClaims:
        """Verify an access token (signature, HS256, expiry, claims, typ); raises InvalidToken.

        A client sends the same token with every request: its verified claims are
        remembered (keyed by the exact token string, at most `verified_tokens`), so
        the signature is checked once per token and process; expiry every time.
        """
        claims = self._verified.get(token)
        if claims is not None:
            if time.time() < claims.exp:
                return claims
            self._verified.pop(token, None)
            raise InvalidToken("Signature has expired")
        p = self._decode(token, ACCESS)
        claims = AccessClaims(
            p["sub"], p["role"], p["jti"], p["sid"], p["exp"], p["iat"], float(p["auth_time"])
        )
        if len(self._verified) >= self._verified_max:
            self._verified.pop(next(iter(self._verified)))  # the oldest
        self._verified[token] = claims
        return claims

    def decode_refresh(self, token: str) -> RefreshClaims:
        """Verify a refresh token; raises InvalidToken (an access token is refused)."""
        p = self._decode(token, REFRESH)
        return RefreshClaims(
            p["sub"], p["role"], p["jti"], p["sid"], p["exp"], p["iat"], float(p["auth_time"])
        )

    def claims_from_scope(self, scope: Scope) -> AccessClaims | None:
        """The verified (not revocation-checked) claims of the request's bearer token.

        Decoded once per request and kept in `scope["state"]`, so a rate limiter
        that keys on the user and the auth dependency share one decode.
        """
        state = scope.setdefault("state", {})
        if "access_claims" in state:
            cached: AccessClaims | None = state["access_claims"]
            return cached
        claims: AccessClaims | None = None
        token = bearer_token(scope)
        if token is not None:
            with contextlib.suppress(InvalidToken):
                claims = self.decode_access(token)
        state["access_claims"] = claims
        return claims

    def subject_of(self, scope: Scope) -> str | None:
        """The `sub` of the request's valid token, unless this process found it revoked.

        What a rate limiter keys on: a replayed logged-out token then spends its
        sender's address budget, not the budget of the user it names.
        """
        claims = self.claims_from_scope(scope)
        if claims is None or claims.jti in self._refused:
            return None
        return claims.sub

    # rotation ----------------------------------------------------------------

    async def refresh(self, refresh_token: str, *, role_of: RoleLookup | None = None) -> TokenPair:
        """Rotate a refresh token: a new pair in the same family; raises InvalidToken.

        A spent token presented again revokes the whole family (its access tokens
        too): of two parties holding one refresh token, one is a thief. `role_of`
        (user id -> current role, None when the user is gone) keeps roles fresh.
        """
        claims = self.decode_refresh(refresh_token)
        if await self.store.family_revoked(claims.sid):
            raise InvalidToken("session revoked")
        valid_from = await self.store.sessions_valid_from(claims.sub)
        if valid_from is not None and claims.auth_time < valid_from.timestamp():
            await self.revoke_family(claims.sid)
            raise InvalidToken("session ended by an account change")
        outcome = await self.store.use_refresh(claims.jti)
        if outcome == "reused":
            if self._on_reuse is not None:
                self._on_reuse()
            await self.revoke_family(claims.sid)
            raise InvalidToken("refresh token reused: session revoked")
        if outcome != "ok":
            raise InvalidToken("unknown refresh token")
        role = claims.role
        if role_of is not None:
            current = await role_of(claims.sub)
            if current is None:
                await self.revoke_family(claims.sid)
                raise InvalidToken("user no longer exists")
            role = current
        return await self._issue_pair(claims.sub, role, claims.sid, claims.auth_time)

    # revocation --------------------------------------------------------------

    async def logout(self, claims: AccessClaims, refresh_token: str | None) -> None:
        """End the session: the access token, its family and the refresh token stop working."""
        _remember(self._refused, claims.jti, self._verified_max)
        await self.store.revoke_access(claims.jti, _utc(claims.exp))
        await self._deny_in_redis(self._deny_prefix + claims.jti, claims.exp - int(time.time()))
        await self.revoke_family(claims.sid)
        if refresh_token:
            try:
                other = self.decode_refresh(refresh_token)
            except InvalidToken:
                return  # nothing to revoke: it does not work anyway
            if other.sub == claims.sub and other.sid != claims.sid:
                await self.revoke_family(other.sid)

    async def revoke_family(self, family: str) -> None:
        """Revoke a session: its refresh tokens and every access token issued in it."""
        await self.store.revoke_family(family)
        # Access tokens of the family live at most access_seconds from now.
        until = int(time.time()) + self.access_seconds
        await self.store.revoke_access(FAMILY_PREFIX + family, _utc(until))
        await self._deny_in_redis(self._family_prefix + family, self.access_seconds)

    async def end_sessions(self, user_id: str) -> None:
        """End every session of `user_id` that began before now (password, role, deletion).

        Call it after the change is stored. Durable first, then mirrored in Redis, where
        every worker's next request reads it in the round trip it already makes.
        """
        at = datetime.now(UTC)
        await self.store.end_sessions(user_id, at)
        # After session_seconds every session the mark could end is over anyway.
        await self._deny_in_redis(
            self._user_prefix + user_id, self.session_seconds, repr(at.timestamp()).encode()
        )

    async def _deny_in_redis(self, key: str, seconds: int, value: bytes = b"1") -> None:
        if self.redis is None or seconds <= 0:
            return
        if self._circuit.allows():
            try:
                await self.redis.set(key, value, ex=seconds)
                return
            except REDIS_ERRORS:
                self._lost_redis()
        # The store has it; Redis must be refilled before anyone trusts it again.
        self._marker = None
        self._refill_needed = True
        self._missed_revocations += 1
        self._schedule_repair()

    def peek_keys(self, scope: Scope) -> list[str]:
        """The keys `is_revoked` reads for this request's token, for another module's round trip.

        Empty until this process has verified the denylist, or without a valid token.
        """
        claims = self.claims_from_scope(scope)
        if claims is None or self._marker is None or self.redis is None:
            return []
        return [
            self._ready_key,
            self._deny_prefix + claims.jti,
            self._family_prefix + claims.sid,
            self._user_prefix + claims.sub,
        ]

    async def is_revoked(self, claims: AccessClaims, *, scope: Scope | None = None) -> bool:
        """True when the token no longer works: revoked, its session ended, or its user gone.

        One MGET on Redis, else the durable store. With `scope`, values already read
        for this request (`peek_keys`, carried by the rate limiter's round trip) are
        used instead of a round trip of its own.
        """
        revoked = await self._revoked(claims, scope)
        if not revoked and claims.sub not in self._known_subjects:
            if self._subject_exists is not None and not await self._subject_exists(claims.sub):
                revoked = True
            else:
                _remember(self._known_subjects, claims.sub, self._verified_max)
        if revoked:
            _remember(self._refused, claims.jti, self._verified_max)
        return revoked

    async def _revoked(self, claims: AccessClaims, scope: Scope | None) -> bool:
        redis = self.redis
        if redis is None or not self._circuit.allows():
            return await self._revoked_in_store(claims)
        watch = self._watch
        if (
            self._marker is None or (watch is not None and watch.generation != self._generation)
        ) and not await self._ensure_synced():
            return await self._revoked_in_store(claims)
        deny_key = self._deny_prefix + claims.jti
        family_key = self._family_prefix + claims.sid
        user_key = self._user_prefix + claims.sub
        peeked = scope.get("state", {}).get(PEEK_STATE) if scope is not None else None
        if peeked is not None and user_key in peeked and deny_key in peeked:
            ready, denied, family, valid_from = (
                peeked.get(self._ready_key),
                peeked[deny_key],
                peeked.get(family_key),
                peeked[user_key],
            )
        else:
            try:
                ready, denied, family, valid_from = await self._reads.submit(
                    (deny_key, family_key, user_key)
                )
            except REDIS_ERRORS:
                self._lost_redis()
                return await self._revoked_in_store(claims)
        if self._circuit.down:
            self._circuit.succeeded()
        if ready != self._marker or (watch is not None and watch.generation != self._generation):
            # Redis lost its data or is another server now: the store decides until refilled.
            self._marker = None
            return await self._revoked_in_store(claims)
        return (
            denied is not None
            or family is not None
            or (valid_from is not None and claims.auth_time < float(valid_from))
        )

    async def _read_batch(
        self, items: list[tuple[str, str, str]]
    ) -> list[tuple[bytes | None, ...]]:
        """One MGET for every revocation check of this loop iteration (the marker once)."""
        redis = self.redis
        assert redis is not None
        keys = [self._ready_key]
        for item in items:
            keys += item
        values: list[Any] = await redis.mget(keys)
        ready = values[0]
        return [(ready, *values[i : i + 3]) for i in range(1, len(values), 3)]

    async def _revoked_in_store(self, claims: AccessClaims) -> bool:
        if await self.store.access_revoked(claims.jti) or await self.store.family_revoked(
            claims.sid
        ):
            return True
        valid_from = await self.store.sessions_valid_from(claims.sub)
        return valid_from is not None and claims.auth_time < valid_from.timestamp()

    def _lost_redis(self) -> None:
        self._marker = None
        if self._circuit.failed():
            logger.warning("Redis unusable: token revocation answered by the durable store")

    async def _ensure_synced(self) -> bool:
        """Verify (and when needed refill) the Redis denylist; once per process at a time."""
        return await self._sync()

    async def _synchronise(self) -> bool:
        redis = self.redis
        if redis is None:
            return False
        generation = self._watch.generation if self._watch is not None else 0
        refill_needed = self._refill_needed
        missed = self._missed_revocations
        try:
            run_id = await server_run_id(redis)
            if refill_needed or await redis.get(self._ready_key) != run_id:
                await self._refill(redis, run_id)
        except REDIS_ERRORS:
            self._lost_redis()
            return False
        if self._missed_revocations != missed:
            return False  # a revocation missed Redis meanwhile: refill again first
        if refill_needed:
            self._refill_needed = False
        self._marker = run_id
        self._generation = generation
        if self._circuit.succeeded():
            logger.info("Redis is back: token denylist verified")
        return True

    async def _refill(self, redis: Redis, run_id: bytes) -> None:
        now = datetime.now(UTC)
        revoked = await self.store.revoked_access(now)
        marks = await self.store.session_marks(_utc(int(now.timestamp()) - self.session_seconds))
        async with redis.pipeline(transaction=False) as pipe:
            for user_id, at in marks:
                if at.tzinfo is None:
                    at = at.replace(tzinfo=UTC)
                seconds = int(at.timestamp() + self.session_seconds - now.timestamp()) + 1
                pipe.set(self._user_prefix + user_id, repr(at.timestamp()).encode(), ex=seconds)
            for jti, expires_at in revoked:
                if expires_at.tzinfo is None:  # SQLite hands back naive UTC datetimes
                    expires_at = expires_at.replace(tzinfo=UTC)
                seconds = int((expires_at - now).total_seconds()) + 1
                if seconds <= 0:
                    continue
                if jti.startswith(FAMILY_PREFIX):
                    key = self._family_prefix + jti.removeprefix(FAMILY_PREFIX)
                else:
                    key = self._deny_prefix + jti
                pipe.set(key, b"1", ex=seconds)
            # The marker goes last: a reader that sees it sees the whole denylist.
            pipe.set(self._ready_key, run_id, ex=self._marker_seconds)
            await pipe.execute()
        logger.info(
            "token denylist refilled from the store (%d entries, %d session marks)",
            len(revoked),
            len(marks),
        )

    def _schedule_repair(self) -> None:
        # Other processes may trust Redis as soon as it answers: refill it as soon
        # as possible, not only at this process's next request.
        if self._repair is None or self._repair.done():
            self._repair = asyncio.get_running_loop().create_task(self._repair_loop())

    async def _repair_loop(self) -> None:
        while self._refill_needed:
            await asyncio.sleep(self._repair_interval)
            try:
                await self._ensure_synced()
            except Exception:
                logger.exception("refilling the token denylist failed; retrying")


def _utc(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _remember(seen: dict[str, None], key: str, limit: int) -> None:
    if len(seen) >= limit:
        seen.pop(next(iter(seen)))  # the oldest
    seen[key] = None


def bearer_token(scope: Scope) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    raw: bytes
    for name, raw in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = raw.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


# FastAPI glue ------------------------------------------------------------------

TokenServiceGetter = Callable[[Request], TokenService]
ClaimsDependency = Callable[..., Awaitable[AccessClaims]]


def app_state_tokens(request: Request) -> TokenService:
    """The `TokenService` at `app.state.tokens` (or in the lifespan state as `tokens`)."""
    tokens = getattr(request.app.state, "tokens", None)
    if tokens is None:
        tokens = request.scope.get("state", {}).get("tokens")
    if not isinstance(tokens, TokenService):
        raise RuntimeError("no TokenService at app.state.tokens")
    return tokens


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


class BearerClaims(OAuth2PasswordBearer):
    """The caller's `AccessClaims` as a dependency, else 401 + WWW-Authenticate: Bearer.

    An `OAuth2PasswordBearer` (so /docs shows the password flow and its Authorize
    button) that decodes and revocation-checks the token itself: FastAPI solves one
    dependency level instead of two, which is a measurable share of a cached read.
    Also puts the user id in `scope["state"]["user_id"]` for the access log.
    """

    def __init__(
        self, tokens: TokenServiceGetter, *, token_url: str, check_revoked: bool = True
    ) -> None:
        # scheme_name keeps the name /openapi.json has always used for this scheme.
        super().__init__(tokenUrl=token_url, scheme_name="OAuth2PasswordBearer", auto_error=False)
        self.tokens = tokens
        self.check_revoked = check_revoked

    # Returns the claims, not the raw token string the parent class returns.
    async def __call__(self, request: Request) -> AccessClaims:  # type: ignore[override]
        service = self.tokens(request)
        claims = service.claims_from_scope(request.scope)
        if claims is None:
            # Only on failure: the parent class tells "no bearer token" from "a bad one".
            if await super().__call__(request) is None:
                raise _unauthorized("Not authenticated")
            raise _unauthorized("Could not validate credentials")
        if self.check_revoked and await service.is_revoked(claims, scope=request.scope):
            raise _unauthorized("Token has been revoked")
        request.scope["state"]["user_id"] = claims.sub
        return claims


def bearer_claims_dependency(
    tokens: TokenServiceGetter = app_state_tokens,
    *,
    token_url: str = "/auth/token",  # noqa: S107 - a path, not a password
    check_revoked: bool = True,
) -> ClaimsDependency:
    """A dependency returning the caller's `AccessClaims`, else 401 + WWW-Authenticate: Bearer."""
    return BearerClaims(tokens, token_url=token_url, check_revoked=check_revoked)


def require_role(*roles: str, claims: ClaimsDependency | None = None) -> ClaimsDependency:
    """A dependency that lets only the given roles through (403 otherwise)."""
    base = claims or bearer_claims_dependency()
    allowed = frozenset(roles)

    async def role_checked(current: Annotated[AccessClaims, Depends(base)]) -> AccessClaims:
        if current.role not in allowed:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Not enough permissions")
        return current

    return role_checked


__all__ = [
    "AccessClaims",
    "AuthSettings",
    "BearerClaims",
    "HashingBusy",
    "InvalidToken",
    "MemoryTokenStore",
    "PasswordHasher",
    "RefreshClaims",
    "TokenPair",
    "TokenService",
    "TokenStore",
    "app_state_tokens",
    "bearer_claims_dependency",
    "bearer_token",
    "load_or_create_secret",
    "require_role",
]
