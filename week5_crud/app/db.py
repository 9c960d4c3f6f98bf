"""The in-memory database (day 3): a dict of users, owned by the app.

No real database yet, so the CRUD logic is all there is to read. The store is an
object the app creates and holds (`app.state.store`), not a module-level dict:
each app, and each test, gets its own, and nothing leaks between them.
"""

import itertools
import threading

from .schemas import User, UserCreate, UserPatch, UserUpdate


class EmailTaken(Exception):
    """Another user already has this email."""


class UserStore:
    def __init__(self) -> None:
        self._users: dict[int, User] = {}
        # Ids only go up, so a deleted user's id is never handed to someone else.
        self._ids = itertools.count(1)
        # Plain `def` endpoints run in a threadpool, so two requests can be in here
        # at once. The lock makes "is the email free? then insert" one step: without
        # it, two sign-ups with one email could both see it free.
        self._lock = threading.Lock()

    def list(self, offset: int, limit: int) -> list[User]:
        # Ids grow and dicts keep insertion order, so this is ordered by id.
        return list(itertools.islice(self._users.values(), offset, offset + limit))

    def get(self, user_id: int) -> User | None:
        return self._users.get(user_id)

    def create(self, data: UserCreate) -> User:
        with self._lock:
            self._check_email_free(data.email)
            user = User(id=next(self._ids), **data.model_dump())
            self._users[user.id] = user
            return user

    def replace(self, user_id: int, data: UserUpdate) -> User | None:
        return self._change(user_id, data.model_dump())

    def update(self, user_id: int, data: UserPatch) -> User | None:
        # exclude_unset: only the fields the client sent, so the rest stay as they are.
        return self._change(user_id, data.model_dump(exclude_unset=True))

    def delete(self, user_id: int) -> bool:
        with self._lock:
            return self._users.pop(user_id, None) is not None

    def _change(self, user_id: int, changes: dict[str, str]) -> User | None:
        with self._lock:
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
