"""What the API accepts and returns, kept apart from what the store keeps.

A user leaves the server in one of two shapes, neither with a password or hash:
`UserPublic` (id, name, email, role) for the user themself and for admins, and
`UserSummary` (id, name) for everyone else. Every input model is closed
(`extra="forbid"`), so a client can never set `id` or `role` by adding a field
the server did not expect.
"""

from __future__ import annotations

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

from shared.identity import hidden_characters, normalize_email

Role = Literal["user", "admin"]


def _visible(value: object) -> object:
    # Checked before trimming, so "\tMaroof" is refused rather than quietly cleaned.
    # Control, format (U+202E, U+200B, ...) and surrogate characters: invisible in a
    # UI, able to reverse the text around them or forge log lines, never in a name.
    if isinstance(value, str) and (hidden := hidden_characters(value)):
        raise ValueError(f"must not contain invisible or control characters ({hidden[0]})")
    return value


# Trimmed before the length check: "   " is blank, " Maroof " is stored as "Maroof".
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    BeforeValidator(_visible),
]
# One account key for every spelling: case, Unicode NFC and IDNA (login does the same).
Email = Annotated[EmailStr, AfterValidator(normalize_email)]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]
# Only compared with the stored hash, never stored: any length a password can have.
CurrentPassword = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class ClosedModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserFields(ClosedModel):
    """The whole user-editable representation."""

    name: Name = Field(examples=["Maroof"])
    email: Email = Field(examples=["maroof@example.com"])


class UserCreate(UserFields):
    """Sign-up. The server chooses the id and the role."""

    password: Password = Field(examples=["correct horse battery"])


class UserUpdate(UserFields):
    """What PUT replaces; changing your own email takes `current_password`."""

    current_password: CurrentPassword | None = None


class UserPatch(ClosedModel):
    """Any subset of the editable fields; `role` only for admins. Changing your own
    `password` or `email` takes `current_password`."""

    name: Name | None = None
    email: Email | None = None
    password: Password | None = None
    role: Role | None = None
    current_password: CurrentPassword | None = None

    @field_validator("name", "email", "password", "role", "current_password", mode="before")
    @classmethod
    def not_null(cls, value: object) -> object:
        # Leaving a field out means "keep it"; null would mean "erase it", which a user can't.
        if value is None:
            raise ValueError("may be left out, but not null")
        return value


class UserSummary(BaseModel):
    """Another user, as a non-admin sees them."""

    id: int = Field(examples=[1])
    name: str = Field(examples=["Maroof"])


class UserPublic(BaseModel):
    """A user as they themself and admins see them."""

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
    actor_id: int | None = Field(
        examples=[1], description="who made the change; null for events older than this field"
    )
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
