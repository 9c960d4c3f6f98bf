"""What the API accepts and returns (day 2), kept apart from how users are stored.

Pydantic validates every body before our code runs, so a handler only ever
sees clean data, and a bad request gets a 422 that says which field is wrong.
"""

import unicodedata
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    field_validator,
)


def printable(name: str) -> str:
    # A control character (a newline, a NUL) can forge a log line or break another system,
    # and a lone surrogate can't even be encoded as UTF-8: neither belongs in a name.
    if any(unicodedata.category(char) in {"Cc", "Cs"} for char in name):
        raise ValueError("must not contain control characters")
    return name


# Trimmed before the length check: "   " is blank and rejected, " Maroof " is stored as "Maroof".
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(printable),
]

# Stored lower-cased, so A@Example.com and a@example.com are one account.
Email = Annotated[EmailStr, AfterValidator(str.lower)]

# Only ever hashed, never stored or shown (see security.py). No other rules: a long
# passphrase beats a short password with a digit and a symbol in it.
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]


class ClosedModel(BaseModel):
    # A typo such as "emial", or a field the server owns such as "id", is a 422,
    # not silently dropped: the client learns at once that it was ignored.
    model_config = ConfigDict(extra="forbid")


class UserUpdate(ClosedModel):
    """The whole user-editable representation: what PUT replaces."""

    name: Name = Field(examples=["Maroof"])
    email: Email = Field(examples=["maroof@example.com"])


class UserCreate(UserUpdate):
    """What sign-up takes. The server chooses the id."""

    password: Password = Field(examples=["correct horse battery staple"])


class UserPatch(ClosedModel):
    """Any subset of the editable fields: what PATCH changes."""

    name: Name | None = None
    email: Email | None = None
    password: Password | None = None

    @field_validator("name", "email", "password", mode="before")
    @classmethod
    def not_null(cls, value: object) -> object:
        # Leaving a field out means "keep it"; null would mean "erase it", which a user can't.
        if value is None:
            raise ValueError("may be left out, but not null")
        return value


class UserPublic(BaseModel):
    """A user as the API shows it: never the password, nor its hash (see db.UserRecord)."""

    id: int = Field(examples=[1])
    name: str = Field(examples=["Maroof"])
    email: str = Field(examples=["maroof@example.com"])


class Token(BaseModel):
    """What logging in returns: the OAuth2 token response that Swagger UI understands."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - a kind of token, not a password
    expires_in: int = Field(description="Seconds until the token expires", examples=[900])


class Message(BaseModel):
    """The body of every error; `HTTPException(status, detail)` produces it."""

    detail: str
