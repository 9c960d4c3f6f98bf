"""Day 2: a JWT by hand with PyJWT: sign one, take it apart, and see three forgeries refused.

    python -m week7_auth.steps.day2_jwt_by_hand

A JWT is `Header.Payload.Signature`, each part base64url-encoded. Header and
payload are JSON that anyone can read; the signature is an HMAC of the first two
parts, which only the holder of the secret can compute. Change one byte of the
payload and the signature no longer matches.
"""

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt

SECRET = "day2-only-a-real-secret-comes-from-the-environment"  # noqa: S105
# What we accept, whatever a token's header claims: never let the token choose.
ALGORITHMS = ["HS256"]


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))  # JWTs drop the padding


def make_token(user_id: str, expires_in: timedelta = timedelta(minutes=15)) -> str:
    claims = {"sub": user_id, "exp": datetime.now(UTC) + expires_in}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def tamper(token: str, user_id: str) -> str:
    """The same header and signature around a payload that names someone else."""
    header, payload, signature = token.split(".")
    claims = {**json.loads(b64url_decode(payload)), "sub": user_id}
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def forgeries() -> dict[str, str]:
    return {
        "tampered": tamper(make_token("7"), user_id="1"),
        "expired": make_token("7", expires_in=timedelta(minutes=-1)),
        "alg none": jwt.encode({"sub": "1"}, key=None, algorithm="none"),  # no signature at all
    }


def main() -> None:
    token = make_token("7")
    header, payload, signature = token.split(".")
    print(f"token:     {token}\nheader:    {json.loads(b64url_decode(header))}")
    print(f"payload:   {json.loads(b64url_decode(payload))}")
    print(f"signature: {b64url_decode(signature).hex()}")
    print(f"decoded:   {jwt.decode(token, SECRET, algorithms=ALGORITHMS)}")
    for name, forged in forgeries().items():
        try:
            jwt.decode(forged, SECRET, algorithms=ALGORITHMS)
        except jwt.InvalidTokenError as error:
            print(f"{name} -> {type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
