"""The image and the compose stack, proven without a container runtime: hadolint on
the Dockerfile, compose.yaml against the compose specification's schema, and the
exact command lines of the image and of the compose services run against a real
Redis and PostgreSQL until `/health/ready` answers 200.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import empty_postgres_database
from tests.deploy.conftest import (
    PATH,
    VENV_BIN,
    compose,
    dockerfile_instructions,
    exec_form,
    running,
)
from tests.servers import ROOT, free_port

SECRET = "container-tests-secret-0123456789abcdef-0123"
# ${NAME:-default} and ${NAME:?message}, compose's interpolation.
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*)|:\?[^}]*)?\}")


def with_defaults(value: object) -> str:
    """A compose value with every `${NAME:-default}` replaced by its default."""
    return VARIABLE.sub(lambda match: match["default"] or "", str(value))


def lint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "hadolint"), str(dockerfile)], capture_output=True, text=True
    )


def validate_compose(path: Path) -> subprocess.CompletedProcess[str]:
    # vendor.compose-spec is bundled with check-jsonschema: no download, works offline.
    command = [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec"]
    return subprocess.run([*command, str(path)], capture_output=True, text=True)


def test_hadolint_passes_on_the_dockerfile(tmp_path: Path) -> None:
    result = lint(ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
    # ... and it is a real lint: an unpinned base image fails it.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nCMD python app.py\n")
    assert lint(bad).returncode != 0


def test_the_image_is_multi_stage_unprivileged_and_holds_no_secret() -> None:
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    arguments = " ".join(args for _, args in instructions)

    assert keywords.count("FROM") >= 2
    assert "-c constraints.txt" in arguments
    user = [args for keyword, args in instructions if keyword == "USER"][-1]
    assert user.split(":")[0] not in {"0", "root"}
    env = " ".join(args for keyword, args in instructions if keyword in {"ENV", "ARG"})
    assert "SECRET" not in env
    assert "PASSWORD" not in env
    healthcheck = [args for keyword, args in instructions if keyword == "HEALTHCHECK"]
    assert len(healthcheck) == 1
    assert "/health" in healthcheck[0]


def test_compose_yaml_validates_against_the_compose_specification(tmp_path: Path) -> None:
    result = validate_compose(ROOT / "compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    # ... and the schema does check: an unknown depends_on condition fails it.
    bad = tmp_path / "compose.yaml"
    bad.write_text(
        "services:\n  app:\n    image: x\n    depends_on:\n      db:\n        condition: up\n"
    )
    assert validate_compose(bad).returncode != 0


def test_the_stack_waits_for_healthy_dependencies_and_the_migration() -> None:
    services = compose()["services"]
    app = services["app"]

    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for dependency in ("redis", "postgres"):
        assert app["depends_on"][dependency]["condition"] == "service_healthy"
        assert "test" in services[dependency]["healthcheck"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert app["environment"]["APP_ENV"] == "production"
    assert app["environment"]["JWT_SECRET"].startswith("${JWT_SECRET:?")
    volumes = compose()["volumes"]
    for service in ("redis", "postgres"):
        named = services[service]["volumes"][0].split(":")[0]
        assert named in volumes


def test_only_nginx_is_published_and_the_app_trusts_forwarded_headers_from_it_alone() -> None:
    services = compose()["services"]
    nginx = services["nginx"]

    assert [name for name, service in services.items() if "ports" in service] == ["nginx"]
    assert "./deploy/nginx/final.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    address = nginx["networks"]["default"]["ipv4_address"]
    assert services["app"]["environment"]["FORWARDED_ALLOW_IPS"] == address
    assert nginx["depends_on"]["app"]["condition"] == "service_healthy"


@pytest.fixture
def database_url() -> Iterator[str]:
    """A whole PostgreSQL database: the app keeps its tables in the default schema."""
    with empty_postgres_database() as url:
        yield url


def test_the_commands_of_the_image_and_the_stack_serve_a_ready_app(
    database_url: str, redis_url: str, redis_prefix: str
) -> None:
    services = compose()["services"]
    port = free_port()
    env = {
        **os.environ,
        "PATH": PATH,
        # compose.yaml's environment as compose would resolve it with only the
        # required variables set, then their values for this machine.
        **{name: with_defaults(value) for name, value in services["app"]["environment"].items()},
        "JWT_SECRET": SECRET,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": redis_prefix,
        "WORKERS": "2",
        # In the image it binds all interfaces on 8000; here a free port on loopback.
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    assert env["APP_ENV"] == "production"
    base = f"http://127.0.0.1:{port}"

    # The migrate service first, as compose runs it, then the image's CMD (the app
    # service has no command of its own).
    migrate = subprocess.run(
        services["migrate"]["command"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert migrate.returncode == 0, migrate.stderr
    assert "command" not in services["app"]
    cmd = exec_form(next(args for keyword, args in dockerfile_instructions() if keyword == "CMD"))

    with running(cmd, env=env, ready_url=f"{base}/health/ready") as app:
        signed_up = httpx.post(
            f"{base}/users",
            json={"name": "Ada", "email": "ada@example.com", "password": "correct horse battery"},
        )
        assert signed_up.status_code == 201, signed_up.text
        healthcheck = next(
            args for keyword, args in dockerfile_instructions() if keyword == "HEALTHCHECK"
        )
        probe = exec_form(healthcheck.split(" CMD ", 1)[1])
        assert subprocess.run(probe, cwd=ROOT, env=env, check=False).returncode == 0, str(app)

    # The probe fails once nothing answers: a HEALTHCHECK that always passes is no check.
    assert subprocess.run(probe, cwd=ROOT, env=env, capture_output=True).returncode != 0
