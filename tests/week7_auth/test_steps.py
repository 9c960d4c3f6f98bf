"""Week 7's steps: a JWT taken apart by hand (day 2), and the simplest logging middleware
(day 5), which loses the log line of a crash that week 7's plain-ASGI one keeps."""

import base64
import json
import logging
import re

import jwt
import pytest

from tests.clients import serve
from tests.servers import run_step
from tests.week7_auth.conftest import fast_settings
from week7_auth.app.main import create_app
from week7_auth.steps import day2_jwt_by_hand as day2
from week7_auth.steps import day5_middleware_http as day5

# Day 2 ---------------------------------------------------------------------------------


def test_day2_a_token_is_three_base64url_parts_anyone_can_read() -> None:
    header, payload, signature = day2.make_token("7").split(".")
    assert json.loads(day2.b64url_decode(header)) == {"alg": "HS256", "typ": "JWT"}
    assert json.loads(day2.b64url_decode(payload))["sub"] == "7"
    assert len(day2.b64url_decode(signature)) == 32  # an HMAC-SHA256


def test_day2_b64url_decode_restores_the_padding_jwts_drop() -> None:
    for length in range(1, 5):
        data = b"x" * length
        encoded = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
        assert day2.b64url_decode(encoded) == data


def test_day2_the_secret_decodes_an_honest_token() -> None:
    claims = jwt.decode(day2.make_token("7"), day2.SECRET, algorithms=day2.ALGORITHMS)
    assert claims["sub"] == "7"


@pytest.mark.parametrize(
    ("forgery", "refusal"),
    [
        ("tampered", jwt.InvalidSignatureError),
        ("expired", jwt.ExpiredSignatureError),
        ("alg none", jwt.InvalidAlgorithmError),
    ],
)
def test_day2_each_forgery_is_refused_for_its_own_reason(
    forgery: str, refusal: type[jwt.InvalidTokenError]
) -> None:
    forged = day2.forgeries()[forgery]
    with pytest.raises(refusal):
        jwt.decode(forged, day2.SECRET, algorithms=day2.ALGORITHMS)


def test_day2_the_tampered_payload_really_names_someone_else() -> None:
    payload = day2.forgeries()["tampered"].split(".")[1]
    assert json.loads(day2.b64url_decode(payload))["sub"] == "1"


def test_day2_the_script_runs_and_shows_the_three_refusals() -> None:
    output = run_step("week7_auth.steps.day2_jwt_by_hand")
    assert "header:    {'alg': 'HS256', 'typ': 'JWT'}" in output
    assert "tampered -> InvalidSignatureError" in output
    assert "expired -> ExpiredSignatureError" in output
    assert "alg none -> InvalidAlgorithmError" in output


# Day 5 ---------------------------------------------------------------------------------

STEP_LOGGER = day5.__name__
WEEK7_LOGGER = "week7_auth.app.middleware"


def lines_of(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == logger]


async def test_day5_logs_method_path_status_and_time(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=STEP_LOGGER)
    async with serve(day5.app) as client:
        r = await client.get("/hello")
    assert r.status_code == 200, r.text
    [line] = lines_of(caplog, STEP_LOGGER)
    assert re.fullmatch(r"GET /hello 200 \d+\.\d{2}ms", line), line


async def test_day5_a_crash_is_a_500_that_the_middleware_never_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=STEP_LOGGER)
    # raise_app_exceptions=False: answer as a server would, instead of raising in the test.
    async with serve(day5.app, raise_app_exceptions=False) as client:
        r = await client.get("/crash")
    assert r.status_code == 500
    assert lines_of(caplog, STEP_LOGGER) == []  # the flaw: the one request worth a look


async def test_week7_logs_a_crash_with_its_500(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(fast_settings())
    app.add_api_route("/crash", day5.crash)
    caplog.set_level(logging.INFO, logger=WEEK7_LOGGER)
    async with serve(app, raise_app_exceptions=False) as client:
        r = await client.get("/crash")
    assert r.status_code == 500
    [line] = lines_of(caplog, WEEK7_LOGGER)
    assert line.startswith("GET /crash 500 "), line
