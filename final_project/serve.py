"""`python -m final_project.serve`: uvicorn with `WORKERS` processes, the image's command.

An exec-form `CMD` can't expand `$WORKERS` without a shell, so this reads it. It
checks the settings first, in this process: with several workers, uvicorn stops
on refused settings but exits 0, which an orchestrator takes for a clean stop.

`HOST` (default all interfaces: in a container the published port is the
boundary), `PORT` (8000) and `WORKERS` (1) come from the environment; so does
`FORWARDED_ALLOW_IPS`, which uvicorn reads itself.

With METRICS_ENABLED, it gives the workers one empty PROMETHEUS_MULTIPROC_DIR
(unless one is set), so that /metrics sums every worker whichever one answers.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import uvicorn

from .app.config import Settings, check

APP = "final_project.app.main:app"
# Read by prometheus-client when it is first imported, so named here rather than
# imported from shared.metrics: with one worker, uvicorn imports the app in this process.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def main() -> None:
    check()
    workers = int(os.environ.get("WORKERS", "1"))
    if workers < 1:
        raise SystemExit(f"WORKERS must be 1 or more, got {workers}")
    metrics_dir = None
    if Settings().metrics_enabled and not os.environ.get(MULTIPROCESS_DIR):
        # Before any worker starts (they inherit it), and empty: values left by an
        # earlier run would be summed in.
        metrics_dir = tempfile.mkdtemp(prefix="final-metrics-")
        os.environ[MULTIPROCESS_DIR] = metrics_dir
    try:
        uvicorn.run(
            APP,
            host=os.environ.get("HOST", "0.0.0.0"),  # noqa: S104 - see the docstring
            port=int(os.environ.get("PORT", "8000")),
            workers=workers,
            proxy_headers=True,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
