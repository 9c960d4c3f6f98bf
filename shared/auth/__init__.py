"""Passwords, JWTs, refresh rotation and revocation (week 7: auth basics, JWT, secure API).

What the week-7 app teaches in its simplest form, made production-grade, one
responsibility a module:

- `settings`: `AuthSettings`, the development signing secret;
- `passwords`: `PasswordHasher`, Argon2 off the event loop, bounded;
- `tokens`: `TokenCodec` (encode and verify JWTs), the claims type, `TokenPair`;
- `store`: `TokenStore`, the durable state every revocation is written to first;
- `denylist`: `RedisDenylist`, its Redis mirror, refilled whenever it may be incomplete;
- `verification`: `TokenVerifier`, a request's claims and whether they still work;
- `sessions`: `TokenService`, issuing, refresh rotation with reuse detection, revocation;
- `dependencies`: the FastAPI bearer dependency and `require_role`.
"""

from .denylist import RedisDenylist
from .dependencies import (
    BearerClaims,
    ClaimsDependency,
    TokenServiceGetter,
    app_state_tokens,
    bearer_claims_dependency,
    require_role,
)
from .passwords import HashingBusy, PasswordHasher
from .sessions import RoleLookup, TokenService
from .settings import AuthSettings, hashing_slots, load_or_create_secret
from .store import FAMILY_PREFIX, MemoryTokenStore, TokenStore
from .tokens import (
    ACCESS,
    ALGORITHM,
    REFRESH,
    AccessClaims,
    InvalidToken,
    RefreshClaims,
    TokenClaims,
    TokenCodec,
    TokenPair,
    bearer_token,
)
from .verification import SubjectLookup, TokenVerifier

__all__ = [
    "ACCESS",
    "ALGORITHM",
    "FAMILY_PREFIX",
    "REFRESH",
    "AccessClaims",
    "AuthSettings",
    "BearerClaims",
    "ClaimsDependency",
    "HashingBusy",
    "InvalidToken",
    "MemoryTokenStore",
    "PasswordHasher",
    "RedisDenylist",
    "RefreshClaims",
    "RoleLookup",
    "SubjectLookup",
    "TokenClaims",
    "TokenCodec",
    "TokenPair",
    "TokenService",
    "TokenServiceGetter",
    "TokenStore",
    "TokenVerifier",
    "app_state_tokens",
    "bearer_claims_dependency",
    "bearer_token",
    "hashing_slots",
    "load_or_create_secret",
    "require_role",
]
