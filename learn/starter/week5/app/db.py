"""Your in-memory database (week 5, day 3)."""

from .schemas import User, UserCreate


class UserStore:
    """TODO (week 5, day 3): keep users in a dict, keyed by id.

    - ids start at 1 and are never reused after a delete (itertools.count);
    - an email belongs to one user only, whatever its case;
    - plain `def` endpoints run in a threadpool, so make "is the email free?
      then insert" one step (threading.Lock).
    """

    def __init__(self) -> None:
        self._users: dict[int, User] = {}

    def create(self, data: UserCreate) -> User:
        raise NotImplementedError("week 5, day 3")
