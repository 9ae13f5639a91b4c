"""Password hashing with scrypt (``hashlib.scrypt``, memory-hard).

Why scrypt and not argon2-cffi: scrypt is memory-hard too (the property that makes GPU/ASIC
guessing expensive), it ships with Python's standard library through OpenSSL, so the host gains
no compiled dependency, and its parameters are stored in each hash so they can be raised later
without invalidating old hashes. The defaults (N=2**15, r=8, p=1: 32 MiB and ~50-100 ms per
hash) follow the OWASP password storage cheat sheet's scrypt minimum.

Format: ``scrypt$<N>$<r>$<p>$<salt b64>$<hash b64>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

N, R, P = 2**15, 8, 1
DKLEN = 32
MIN_LENGTH = 10
MAX_LENGTH = 1024
_MAXMEM = 128 * 1024 * 1024


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def check_policy(password: str) -> None:
    """Raise ValueError when the password is too short or too long."""
    if len(password) < MIN_LENGTH:
        raise ValueError(f"the password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise ValueError(f"the password must have at most {MAX_LENGTH} characters")


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P) -> str:
    salt = secrets.token_bytes(16)
    dk = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=DKLEN, maxmem=_MAXMEM
    )
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(dk)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Constant-time check. With ``stored`` None a dummy hash is computed anyway, so an unknown
    email costs the same time as a wrong password (no user enumeration by timing)."""
    if len(password) > MAX_LENGTH:
        return False
    if stored is None:
        hash_password(password)
        return False
    try:
        scheme, n, r, p, salt, dk = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(dk)
        got = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=_MAXMEM,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)
