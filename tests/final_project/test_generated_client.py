"""A client nobody here wrote can use the API: openapi-python-client generates one from
the live /openapi.json, and the test signs up, logs in, reads, revalidates, refreshes and
logs out through it alone.

What the generated code needs from the document is what any client generator needs:
short, unique operation ids (they become module names), the If-None-Match header
declared on cached reads (it becomes a keyword argument), and every status a route
can answer (each gets parsed, problem+json errors included).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from final_project.app.main import create_app
from tests.clients import running
from tests.final_project.conftest import PASSWORD, settings_for_tests

PACKAGE = "users_api_client"
BASE_URL = "http://test"  # a host the test settings allow
# Write the package only: no pyproject.toml of its own, and no post-hooks (they run ruff
# with settings of their own on the generated code).
CONFIG = f"package_name_override: {PACKAGE}\npost_hooks: []\n"


def generate_client(document: dict[str, Any], folder: Path) -> None:
    (folder / "openapi.json").write_text(json.dumps(document))
    (folder / "config.yaml").write_text(CONFIG)
    generator = Path(sys.executable).with_name("openapi-python-client")
    run = subprocess.run(
        [
            *(str(generator), "generate", "--path", "openapi.json", "--config", "config.yaml"),
            *("--meta", "none", "--output-path", PACKAGE),
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Warning" not in run.stdout + run.stderr, run.stdout + run.stderr


@pytest.fixture
def generated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder to generate the client into, importable for this test only."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [name for name in sys.modules if name.partition(".")[0] == PACKAGE]:
        del sys.modules[name]


def module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


async def test_a_generated_client_goes_from_sign_up_to_log_out(
    generated: Path, redis_url: str, redis_prefix: str
) -> None:
    app = create_app(settings_for_tests(redis_url, redis_prefix))
    async with running(app) as started:
        # One transport for both: ours, and the generated client's.
        transport = httpx.ASGITransport(app=started)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            document = (await http.get("/openapi.json")).json()
        generate_client(document, generated)

        client, models = module("client"), module("models")
        create_user, read_user = module("api.users.create_user"), module("api.users.read_user")
        read_me = module("api.users.read_me")
        log_in, refresh = module("api.auth.log_in"), module("api.auth.refresh")
        log_out = module("api.auth.log_out")
        reach_the_app = {"transport": transport}

        async with client.Client(base_url=BASE_URL, httpx_args=reach_the_app) as anonymous:
            signed_up = await create_user.asyncio_detailed(
                client=anonymous,
                body=models.UserCreate(
                    name="Maroof", email="maroof@example.com", password=PASSWORD
                ),
            )
            assert signed_up.status_code == 201, signed_up.content
            user = signed_up.parsed
            assert isinstance(user, models.UserPublic), signed_up.content
            assert signed_up.headers["location"] == f"/users/{user.id}"

            tokens = await log_in.asyncio(
                client=anonymous,
                body=models.BodyLogIn(username="maroof@example.com", password=PASSWORD),
            )
            assert isinstance(tokens, models.TokenResponse), tokens

            async with client.AuthenticatedClient(
                base_url=BASE_URL, token=tokens.access_token, httpx_args=reach_the_app
            ) as me:
                myself = await read_me.asyncio(client=me)
                assert isinstance(myself, models.UserPublic), myself
                assert (myself.id, myself.email) == (user.id, "maroof@example.com")

                first = await read_user.asyncio_detailed(client=me, user_id=user.id)
                assert first.status_code == 200, first.content
                assert first.parsed.name == "Maroof"
                again = await read_user.asyncio_detailed(
                    client=me, user_id=user.id, if_none_match=first.headers["etag"]
                )
                assert again.status_code == 304, again.content
                assert again.content == b""

            renewed = await refresh.asyncio(
                client=anonymous, body=models.RefreshRequest(refresh_token=tokens.refresh_token)
            )
            assert isinstance(renewed, models.TokenResponse), renewed

        async with client.AuthenticatedClient(
            base_url=BASE_URL, token=renewed.access_token, httpx_args=reach_the_app
        ) as me:
            logged_out = await log_out.asyncio_detailed(
                client=me, body=models.LogoutRequest(refresh_token=renewed.refresh_token)
            )
            assert logged_out.status_code == 204, logged_out.content
            after = await read_me.asyncio_detailed(client=me)
            assert after.status_code == 401, after.content
            assert isinstance(after.parsed, models.Problem), after.content
            assert after.parsed.status == 401


async def test_cached_reads_document_their_etag_and_take_if_none_match(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/users", "/users/{user_id}"):
        read = paths[path]["get"]
        assert "ETag" in read["responses"]["200"]["headers"], path
        assert "ETag" in read["responses"]["304"]["headers"], path
        headers = [p["name"] for p in read["parameters"] if p["in"] == "header"]
        assert headers == ["If-None-Match"], (path, read["parameters"])
