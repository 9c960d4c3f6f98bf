"""What your API accepts and returns (week 5, day 2)."""

from pydantic import BaseModel


class UserCreate(BaseModel):
    """What sign-up takes.

    TODO (week 5, day 2):
    - name: 1-100 characters after trimming white space (store the trimmed name);
    - email: a valid address (pydantic's EmailStr), stored lower-cased;
    - unknown fields are a 422 (model_config = ConfigDict(extra="forbid")).
    """

    name: str
    email: str


class User(BaseModel):
    """A user as the API shows it."""

    id: int
    name: str
    email: str


# TODO (week 5, day 2): a UserUpdate for PUT (the whole user) and a UserPatch for
# PATCH (any subset of the fields; null is not allowed).
