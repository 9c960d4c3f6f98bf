"""The in-memory database, made async (day 4): every call waits like a real database would.

The `await asyncio.sleep(...)` is where a real driver would wait for the network.
While one request waits there, the event loop serves the others.
"""

import asyncio
import itertools

from pydantic import BaseModel, Field

from .schemas import UserCreate, UserPatch, UserPublic, UserUpdate


class EmailTaken(Exception):
    """Another user already has this email."""


class UserRecord(BaseModel):
    """A user as stored: with the password's hash, so handlers answer with `.public()`."""

    id: int
    name: str
    email: str
    # repr=False: a record that ends up in a log line or a traceback doesn't show the hash.
    password_hash: str = Field(repr=False)

    def public(self) -> UserPublic:
        """What the API may show: everything but the hash, field by field."""
        return UserPublic(id=self.id, name=self.name, email=self.email)


class UserStore:
    def __init__(self, latency_ms: int = 0) -> None:
        self._latency = latency_ms / 1000
        self._users: dict[int, UserRecord] = {}
        # Ids only go up, so a deleted user's id is never handed to someone else.
        self._ids = itertools.count(1)
        # One thread runs all of this, yet "is the email free? then insert" can still
        # interleave: each `await` lets another request run in between. The lock
        # makes the check and the insert one step again.
        self._lock = asyncio.Lock()

    async def _round_trip(self) -> None:
        if self._latency:
            await asyncio.sleep(self._latency)

    async def list(self, offset: int, limit: int) -> list[UserRecord]:
        await self._round_trip()
        # Ids grow and dicts keep insertion order, so this is ordered by id.
        return list(itertools.islice(self._users.values(), offset, offset + limit))

    async def get(self, user_id: int) -> UserRecord | None:
        await self._round_trip()
        return self._users.get(user_id)

    async def get_by_email(self, email: str) -> UserRecord | None:
        await self._round_trip()
        return next((user for user in self._users.values() if user.email == email), None)

    async def create(self, data: UserCreate, password_hash: str) -> UserRecord:
        async with self._lock:
            await self._round_trip()
            self._check_email_free(data.email)
            user = UserRecord(
                id=next(self._ids),
                **data.model_dump(exclude={"password"}),
                password_hash=password_hash,
            )
            self._users[user.id] = user
            return user

    async def replace(self, user_id: int, data: UserUpdate) -> UserRecord | None:
        return await self._change(user_id, data.model_dump())

    async def update(
        self, user_id: int, data: UserPatch, password_hash: str | None = None
    ) -> UserRecord | None:
        # exclude_unset: only the fields the client sent, so the rest stay as they are.
        # The password itself is never stored: the caller hashed it into `password_hash`.
        changes = data.model_dump(exclude_unset=True, exclude={"password"})
        if password_hash is not None:
            changes["password_hash"] = password_hash
        return await self._change(user_id, changes)

    async def delete(self, user_id: int) -> bool:
        async with self._lock:
            await self._round_trip()
            return self._users.pop(user_id, None) is not None

    async def _change(self, user_id: int, changes: dict[str, str]) -> UserRecord | None:
        async with self._lock:
            await self._round_trip()
            user = self._users.get(user_id)
            if user is None:
                return None
            if "email" in changes:
                self._check_email_free(changes["email"], allowed_owner=user_id)
            updated = user.model_copy(update=changes)
            self._users[user_id] = updated
            return updated

    def _check_email_free(self, email: str, allowed_owner: int | None = None) -> None:
        # Emails are stored lower-cased (see schemas.Email), so equality is case-insensitive.
        for user in self._users.values():
            if user.email == email and user.id != allowed_owner:
                raise EmailTaken(email)
