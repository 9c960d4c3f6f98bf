# The final project's image. Build it from the repository root, where pyproject.toml,
# constraints.txt and shared/ are:
#   docker build -t final-project .
#   docker compose up            (compose.yaml: the app, nginx, Redis, PostgreSQL)
# It sets no secret: JWT_SECRET and DATABASE_URL come from the environment at run time.

# Build stage: the pinned dependencies in a virtual environment, copied whole below.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml constraints.txt ./
# The runtime dependencies and the tracing extra (TRACING_ENABLED), not the dev or
# bench ones, at the versions constraints.txt pins. A code change leaves this layer cached.
RUN python -m venv /venv \
    && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(*p['dependencies'], *p['optional-dependencies']['tracing'], sep='\n')" > requirements.txt \
    && /venv/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints.txt -r requirements.txt

# Runtime stage: no pip cache, no build files, a user without privileges.
FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --user-group --no-create-home app
COPY --from=build /venv /venv
WORKDIR /app
COPY shared/ shared/
COPY final_project/ final_project/
# ./data: the SQLite database and development secret when DATABASE_URL is not set.
RUN mkdir data && chown app:app data
ENV PATH=/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WORKERS=1 \
    PORT=8000
USER 10001:10001
EXPOSE 8000
# Liveness only: /health/ready answers 503 while Redis is away, yet the app serves.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['PORT']}/health\", timeout=2)"]
CMD ["python", "-m", "final_project.serve"]
