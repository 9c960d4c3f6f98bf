"""The production-style final project: an async CRUD API wired from `shared/`."""
