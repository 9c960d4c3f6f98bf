"""Week 5's own lessons: the store belongs to the app (no global state), and is thread-safe."""

import threading

from tests.clients import serve
from week5_crud.app.db import EmailTaken, UserStore
from week5_crud.app.main import create_app
from week5_crud.app.schemas import UserCreate


async def test_each_app_has_its_own_users() -> None:
    async with serve(create_app()) as one, serve(create_app()) as two:
        r = await one.post("/users", json={"name": "Only Here", "email": "a@example.com"})
        assert r.status_code == 201, r.text
        assert (await two.get("/users")).json() == []
        r = await two.post("/users", json={"name": "Also Here", "email": "a@example.com"})
        assert r.status_code == 201, r.text


def test_store_lets_one_of_many_threads_take_an_email() -> None:
    store = UserStore()
    barrier = threading.Barrier(20, timeout=10)
    outcomes: list[str] = []

    def sign_up(n: int) -> None:
        barrier.wait()
        try:
            store.create(UserCreate(name=f"Racer {n}", email="race@example.com"))
            outcomes.append("created")
        except EmailTaken:
            outcomes.append("taken")

    # Daemon threads, joined with a timeout: a sign-up stuck on the store's lock fails
    # the test instead of hanging it, and cannot keep pytest from exiting either.
    threads = [threading.Thread(target=sign_up, args=(n,), daemon=True) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive(), "a sign-up did not return within 10 s"
    assert sorted(outcomes) == ["created"] + ["taken"] * 19
    assert len(store.list(0, 100)) == 1


def test_ids_keep_growing_after_deletes() -> None:
    store = UserStore()
    ids = []
    for n in range(3):
        user = store.create(UserCreate(name="U", email=f"u{n}@example.com"))
        ids.append(user.id)
        store.delete(user.id)
    assert ids == [1, 2, 3]
