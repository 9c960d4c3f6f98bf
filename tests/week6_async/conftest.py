from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.clients import serve
from week6_async.app.config import Settings
from week6_async.app.main import create_app


@pytest.fixture
def app() -> FastAPI:
    return create_app(Settings(db_latency_ms=0))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(app) as client:
        yield client
