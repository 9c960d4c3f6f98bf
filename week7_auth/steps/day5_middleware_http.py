"""Day 5: the simplest logging middleware, @app.middleware("http"): method, path, status, time.

    python -m week7_auth.steps.day5_middleware_http
    # then open http://127.0.0.1:8007/hello, and http://127.0.0.1:8007/crash

Code before `call_next` runs on the way in, code after it on the way out. Try /crash:
the client gets a 500, yet this middleware logs no line for it: `call_next` raised.

Week 7's app/middleware.py is plain ASGI: this form costs 30-60 % throughput, never logs crashes.
"""

import logging
import time
from collections.abc import Awaitable, Callable

import uvicorn
from fastapi import Request, Response
from fastapi_offline import FastAPIOffline

logger = logging.getLogger(__name__)
app = FastAPIOffline(title="Day 5: a logging middleware")


@app.middleware("http")
async def log_requests(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    response = await call_next(request)  # the route runs here; if it raises, so does this
    elapsed_ms = (time.perf_counter() - started) * 1000
    logger.info(
        "%s %s %d %.2fms", request.method, request.url.path, response.status_code, elapsed_ms
    )
    return response


@app.get("/hello")
def hello() -> dict[str, str]:
    return {"message": "Hello, World!"}


@app.get("/crash")
def crash() -> None:
    raise RuntimeError("a bug: the client gets a 500 that the middleware never logs")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    uvicorn.run(app, host="127.0.0.1", port=8007)
