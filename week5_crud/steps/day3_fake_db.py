"""Day 3: users CRUD on `fake_db = []`, a plain list, and the two ways it goes wrong.

    python -m week5_crud.steps.day3_fake_db        # then http://127.0.0.1:8005/docs

Try it: create two users, delete user 1, then create a third. It gets id 2, the
second user's id: `len(fake_db) + 1` counts the users left, not the ids handed
out, and GET /users/2 now finds only the older of the two.

The other flaw needs bad luck: plain `def` routes run in a pool of threads, so two
sign-ups with one email can both pass the "is it free?" check before either is
appended, and both get a 201.

week5_crud/app/db.py is the fixed form: ids from `itertools.count` (never reused)
and a lock that makes check-then-insert a single step.
"""

import uvicorn
from fastapi import HTTPException
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel


class UserIn(BaseModel):
    name: str
    email: str


class User(UserIn):
    id: int


app = FastAPIOffline(title="Day 3: a fake database")
fake_db: list[User] = []


def find(user_id: int) -> User:
    for user in fake_db:
        if user.id == user_id:
            return user
    raise HTTPException(status_code=404, detail="User not found")


@app.post("/users", status_code=201)
def create_user(body: UserIn) -> User:
    if any(user.email == body.email for user in fake_db):
        raise HTTPException(status_code=409, detail="Email already registered")
    # Flaw 2: another thread may append this email between the check above and the line below.
    user = User(id=len(fake_db) + 1, **body.model_dump())  # flaw 1: reused after a delete
    fake_db.append(user)
    return user


@app.get("/users")
def read_users() -> list[User]:
    return fake_db


@app.get("/users/{user_id}")
def read_user(user_id: int) -> User:
    return find(user_id)


@app.put("/users/{user_id}")
def replace_user(user_id: int, body: UserIn) -> User:
    user = find(user_id)
    user.name, user.email = body.name, body.email
    return user


@app.delete("/users/{user_id}", status_code=204)
def delete_user(user_id: int) -> None:
    fake_db.remove(find(user_id))


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=8005)
