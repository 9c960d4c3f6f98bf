"""The answer of every endpoint not written yet. Delete this file when no TODO is left."""

from fastapi import HTTPException, status


def not_yet(day: str) -> HTTPException:
    return HTTPException(status.HTTP_501_NOT_IMPLEMENTED, detail=f"Not implemented yet ({day})")
