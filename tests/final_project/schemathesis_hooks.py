"""Schemathesis hooks for the OpenAPI run in test_openapi_fuzzing.py (loaded through
SCHEMATHESIS_HOOKS): every token belongs to a throw-away user of its own.

A fixed token would stop working the moment the fuzzer deletes its user or logs it
out, which the stateful phase does on purpose; on a 401 Schemathesis fetches a new
one from here.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import httpx
import schemathesis

BASE_URL = os.environ.get("FINAL_PROJECT_URL", "http://127.0.0.1:8000")
PASSWORD = "fuzzing password"


@schemathesis.auth(refresh_interval=60)
class ThrowAwayUser:
    def get(self, case: Any, context: Any) -> str:
        email = f"fuzz-{uuid.uuid4().hex[:12]}@example.com"
        with httpx.Client(base_url=BASE_URL, timeout=10) as client:
            r = client.post("/users", json={"name": "Fuzz", "email": email, "password": PASSWORD})
            r.raise_for_status()
            r = client.post("/auth/token", data={"username": email, "password": PASSWORD})
            r.raise_for_status()
            token: str = r.json()["access_token"]
            return token

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
