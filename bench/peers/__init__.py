"""Apps we measure ours against: a bare FastAPI app, and the same endpoints built
with popular libraries (fastapi-limiter + fastapi-cache2, slowapi), each as small as
the library's own documentation makes it."""
