"""Day 1: the smallest FastAPI app, GET /health and GET /hello?name=Maroof.

    make step STEP=week5/day1        # or: python -m week5_crud.steps.day1_hello

then open http://127.0.0.1:8005/docs and try both routes from the browser.

client → endpoint → function → response: FastAPI calls the function whose path
and method match the request, and sends back what it returns, as JSON.
"""

import uvicorn
from fastapi_offline import FastAPIOffline

# FastAPI itself, with /docs served from an installed package: it works offline.
app = FastAPIOffline(title="Day 1: hello")


@app.get("/health")
def health() -> dict[str, str]:
    """Say the app is up."""
    return {"status": "ok"}


@app.get("/hello")
def hello(name: str = "World") -> dict[str, str]:
    """Greet someone: `name` is not in the path, so FastAPI reads it from `?name=...`."""
    return {"message": f"Hello, {name}!"}


if __name__ == "__main__":
    print("Open http://127.0.0.1:8005/docs to try it (Ctrl+C stops it)")
    uvicorn.run(app, host="127.0.0.1", port=8005)
