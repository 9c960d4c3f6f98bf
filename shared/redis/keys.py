"""Hash tags: what one script or pipeline touches lives in one cluster slot.

Redis Cluster spreads keys over 16,384 slots by a hash of the key, or of the part
between the first `{` and the next `}` when there is one (the hash tag). A Lua
script, an MGET or a MULTI may only touch keys of one slot, so every module of
`shared` names its keys with the tag of what they belong to:

    app:rl:{user:42}:default     one user's rate limits, checked together
    app:cache:{user:42}:v        a cache tag's version, beside the entries it guards

A single server ignores the braces: the same names work there unchanged.
"""

from __future__ import annotations

from redis.crc import key_slot


def hash_tag(name: str) -> str:
    """`{name}`: braces inside `name` are dropped, so they can't cut the tag short."""
    return "{" + name.replace("{", "").replace("}", "") + "}"


def same_slot(keys: list[str]) -> bool:
    """True when every key maps to one cluster slot (a script may then touch them all)."""
    slots = {key_slot(key.encode()) for key in keys}
    return len(slots) <= 1


__all__ = ["hash_tag", "key_slot", "same_slot"]
