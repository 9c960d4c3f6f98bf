"""What the API accepts and returns, kept apart from what the store keeps.

`UserPublic` is the only shape a user leaves the server in: no password, no hash.
Every input model is closed (`extra="forbid"`), so a client can never set `id`
or `role` by adding a field the server did not expect.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    field_validator,
)

Role = Literal["user", "admin"]

# C0 and C1 control characters (and DEL): invisible in a UI, able to forge log
# lines or terminal escapes, and never part of a real name.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _printable(value: object) -> object:
    # Checked before trimming, so "\tMaroof" is refused rather than quietly cleaned.
    if isinstance(value, str) and _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


# Trimmed before the length check: "   " is blank, " Maroof " is stored as "Maroof".
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    BeforeValidator(_printable),
]
# Stored lower-cased, so A@Example.com and a@example.com are one account.
Email = Annotated[EmailStr, AfterValidator(str.lower)]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]


class ClosedModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserUpdate(ClosedModel):
    """The whole user-editable representation: what PUT replaces."""

    name: Name = Field(examples=["Maroof"])
    email: Email = Field(examples=["maroof@example.com"])


class UserCreate(UserUpdate):
    """Sign-up. The server chooses the id and the role."""

    password: Password = Field(examples=["correct horse battery"])


class UserPatch(ClosedModel):
    """Any subset of the editable fields; `role` only for admins."""

    name: Name | None = None
    email: Email | None = None
    password: Password | None = None
    role: Role | None = None

    @field_validator("name", "email", "password", "role", mode="before")
    @classmethod
    def not_null(cls, value: object) -> object:
        # Leaving a field out means "keep it"; null would mean "erase it", which a user can't.
        if value is None:
            raise ValueError("may be left out, but not null")
        return value


class UserPublic(BaseModel):
    """A user as the API shows it."""

    id: int = Field(examples=[1])
    name: str = Field(examples=["Maroof"])
    email: str = Field(examples=["maroof@example.com"])
    role: Role = Field(examples=["user"])


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - a scheme name, not a secret
    expires_in: int = Field(examples=[900], description="seconds until the access token expires")


class RefreshRequest(ClosedModel):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class LogoutRequest(ClosedModel):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None


class AuditEvent(BaseModel):
    action: Literal["user.created", "user.updated", "user.deleted"] = Field(
        examples=["user.created"]
    )
    user_id: int = Field(examples=[1])
    at: datetime


class Status(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, Literal["ok", "unavailable"]] = Field(
        examples=[{"redis": "ok", "database": "ok"}]
    )


class Greeting(BaseModel):
    message: str = Field(examples=["Hello, Maroof!"])


class Slept(BaseModel):
    slept: float = Field(examples=[1.0])
