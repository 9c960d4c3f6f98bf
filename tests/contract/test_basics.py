"""docs/contract.md, "Every week": /health, /hello and the documentation pages."""

import re

import httpx
import pytest
from openapi_spec_validator import validate


@pytest.mark.day("week5/day1")
async def test_health_says_ok(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok"}


@pytest.mark.day("week5/day1")
async def test_hello_greets_by_name(client: httpx.AsyncClient) -> None:
    r = await client.get("/hello", params={"name": "Maroof"})
    assert r.status_code == 200, r.text
    assert r.json() == {"message": "Hello, Maroof!"}


@pytest.mark.day("week5/day1")
async def test_hello_without_a_name_greets_the_world(client: httpx.AsyncClient) -> None:
    r = await client.get("/hello")
    assert r.status_code == 200, r.text
    assert r.json() == {"message": "Hello, World!"}


@pytest.mark.day("week5/day1")
async def test_hello_accepts_a_name_of_100_characters(client: httpx.AsyncClient) -> None:
    r = await client.get("/hello", params={"name": "a" * 100})
    assert r.status_code == 200, r.text


@pytest.mark.day("week5/day1")
@pytest.mark.parametrize("name", ["", "a" * 101])
async def test_hello_rejects_a_name_outside_1_to_100_characters(
    client: httpx.AsyncClient, name: str
) -> None:
    r = await client.get("/hello", params={"name": name})
    assert r.status_code == 422, r.text
    assert "detail" in r.json()


# Where a page names another URL: an attribute (src, href, ReDoc's spec-url), or Swagger
# UI's inline set-up (`url: '/openapi.json'`, `oauth2RedirectUrl: ... + '/docs/oauth2-redirect'`).
URL_ATTRIBUTE = re.compile(r"""\b(?:src|href|spec-url)\s*=\s*["']([^"']*)["']""")
URL_IN_SCRIPT = re.compile(r"""\b(?:url|oauth2RedirectUrl)\s*:[^'",\n]*['"]([^'"]*)['"]""")
ABSOLUTE_URL = re.compile(r"(?:\b[a-z][a-z0-9+.-]*:)?//[^\s'\"<>]+", re.IGNORECASE)


def urls_named_by(page: str) -> set[str]:
    return set(URL_ATTRIBUTE.findall(page)) | set(URL_IN_SCRIPT.findall(page))


@pytest.mark.day("week5/day1")
@pytest.mark.parametrize(
    ("page", "must_load"),
    [
        ("/docs", {".js", ".css", "/openapi.json"}),
        ("/redoc", {".js", "/openapi.json"}),
        ("/docs/oauth2-redirect", set()),  # where Authorize's browser flows come back to
    ],
)
async def test_documentation_pages_load_everything_from_the_app_itself(
    client: httpx.AsyncClient, page: str, must_load: set[str]
) -> None:
    r = await client.get(page)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html"), r.headers
    # No CDN, no web font, no favicon from another host: the pages work offline.
    assert not ABSOLUTE_URL.findall(r.text), r.text
    if must_load:  # and the browser is told to load nothing from anywhere else
        assert "default-src 'self'" in r.headers.get("content-security-policy", ""), r.headers
    urls = urls_named_by(r.text)
    assert all(any(url.endswith(end) for url in urls) for end in must_load), urls
    for url in urls:
        assert url.startswith("/"), url  # a path on this app, not another host
        asset = await client.get(url)
        assert asset.status_code == 200, (url, asset.text[:200])
        assert asset.content, url


@pytest.mark.day("week5/day1")
async def test_openapi_json_is_a_valid_openapi_document(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200, r.text
    validate(r.json())  # raises, naming the first thing wrong


@pytest.mark.day("week5/day4")
async def test_operation_ids_are_the_handlers_names_and_unique(client: httpx.AsyncClient) -> None:
    # A client generator makes a method of each: `read_user`, not `read_user_users__user_id__get`.
    paths = (await client.get("/openapi.json")).json()["paths"]
    ids = [operation["operationId"] for ops in paths.values() for operation in ops.values()]
    assert len(ids) == len(set(ids)), ids
    assert paths["/users"]["post"]["operationId"] == "create_user"
    assert paths["/users/{user_id}"]["get"]["operationId"] == "read_user"
    assert all(re.fullmatch(r"[a-z]+(?:_[a-z]+)*", id_) for id_ in ids), ids


@pytest.mark.day("week5/day4")
async def test_openapi_describes_every_tag_and_names_a_contact_and_a_license(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    operations = [op for ops in schema["paths"].values() for op in ops.values()]
    used = {tag for operation in operations for tag in operation.get("tags", [])}
    described = {tag["name"] for tag in schema.get("tags", []) if tag.get("description")}
    assert used <= described, (used, schema.get("tags"))
    assert schema["info"]["contact"]["name"], schema["info"]
    assert schema["info"]["license"] == {"name": "MIT", "identifier": "MIT"}, schema["info"]


@pytest.mark.day("week5/day5")
async def test_openapi_documents_the_location_of_a_new_user(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    created = paths["/users"]["post"]["responses"]["201"]
    assert "Location" in created.get("headers", {}), created


@pytest.mark.day("week5/day5")
async def test_openapi_documents_every_error_status_of_the_user_routes(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    expected = {
        ("/users", "post"): {"201", "409", "422"},
        ("/users", "get"): {"200", "422"},
        ("/users/{user_id}", "get"): {"200", "404", "422"},
        ("/users/{user_id}", "put"): {"200", "404", "409", "422"},
        ("/users/{user_id}", "patch"): {"200", "404", "409", "422"},
        ("/users/{user_id}", "delete"): {"204", "404", "422"},
    }
    for (path, method), statuses in expected.items():
        documented = set(paths[path][method]["responses"])
        assert statuses <= documented, (path, method, documented)


@pytest.mark.day("week5/day4")
async def test_every_user_route_lives_in_one_users_router(client: httpx.AsyncClient) -> None:
    # APIRouter(prefix="/users", tags=["users"]) shows in the schema as one shared tag.
    paths = (await client.get("/openapi.json")).json()["paths"]
    user_operations = [
        operation
        for path, operations in paths.items()
        if path == "/users" or path.startswith("/users/")
        for operation in operations.values()
    ]
    assert len(user_operations) >= 6
    assert all(operation.get("tags") == ["users"] for operation in user_operations), paths
