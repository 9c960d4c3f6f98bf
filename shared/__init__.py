"""Reusable building blocks for the final project: auth, cache, rate limits,
observability, the Redis client, security headers and email normalisation.

Each module is configured through arguments and its own settings class and keeps
no module-level state, so two apps (or two tests) in one process never share
anything by accident.
"""
