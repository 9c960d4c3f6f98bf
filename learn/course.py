"""The weeks a learner builds, where each one starts from, and the roadmap's day titles."""

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKSPACES = ROOT / "my"
STARTER = Path(__file__).resolve().parent / "starter"


@dataclass(frozen=True)
class Setting:
    """A setting the grader passes to your app through the environment."""

    name: str
    annotation: str
    default: str
    why: str


@dataclass(frozen=True)
class Week:
    name: str  # "week5" ... "week8", "final": the make targets and the folder under my/
    reference: str  # the package of the reference app
    previous: str | None  # the week whose workspace this one starts from
    settings: tuple[Setting, ...] = ()  # what this week adds to app/config.py


WEEKS = {
    week.name: week
    for week in [
        Week("week5", "week5_crud", None),
        Week(
            "week6",
            "week6_async",
            "week5",
            (Setting("db_latency_ms", "int", "100", "day 4: each store call awaits this long"),),
        ),
        Week(
            "week7",
            "week7_auth",
            "week6",
            (
                Setting(
                    "jwt_secret",
                    "str",
                    '"development-only-secret-set-JWT_SECRET-before-deploying"',
                    "day 3: signs the tokens (32 bytes or more)",
                ),
                Setting("access_token_minutes", "int", "15", "day 3: a token's lifetime"),
                Setting("argon2_time_cost", "int", "3", "day 1: Argon2 passes per hash"),
                Setting("argon2_memory_cost", "int", "65536", "day 1: Argon2 memory per hash, KiB"),
            ),
        ),
        Week(
            "week8",
            "week8_redis",
            "week7",
            (
                Setting("redis_url", "str", '"redis://localhost:6379/0"', "day 2: where Redis is"),
                Setting("redis_prefix", "str", '"week8:"', "day 2: every key starts with it"),
                Setting("cache_ttl_seconds", "int", "60", "day 3: how long a cached read lives"),
                Setting("rate_limit", "str", '"60/minute"', "day 4: each client's budget"),
                Setting("login_rate_limit", "str", '"5/minute"', "day 4: logins per address"),
            ),
        ),
        Week(
            "final",
            "final_project",
            "week8",
            (
                Setting("admin_email", "str | None", "None", "the first admin, made at start-up"),
                Setting("admin_password", "str | None", "None", "the first admin's password"),
            ),
        ),
    ]
}

# The roadmap's days, as the grader names them.
DAYS = {
    "week5/day1": "FastAPI basics: /health, /hello",
    "week5/day2": "CRUD and validation",
    "week5/day3": "the in-memory store's rules",
    "week5/day4": "routers and structure",
    "week5/day5": "errors: 404, 409",
    "week6/day3": "async endpoints",
    "week6/day4": "an async store",
    "week6/day5": "background tasks",
    "week7/day1": "accounts with passwords",
    "week7/day2": "JWT",
    "week7/day3": "login and protected routes",
    "week7/day4": "Depends(get_current_user)",
    "week7/day6": "the logging middleware",
    "week7/day7": "a secure API",
    "week8/day1": "why cache",
    "week8/day2": "Redis basics",
    "week8/day3": "caching GET responses",
    "week8/day4": "rate limiting",
}


def workspace(week: str, workspaces: Path = WORKSPACES) -> Path:
    return workspaces / week
