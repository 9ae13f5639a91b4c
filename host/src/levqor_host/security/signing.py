"""Signed one-time links (an approval's approve and reject URLs), keyed by the host's secret.

The key is derived from the vault's keys (``LEVQOR_SECRET_KEY`` or ``<data>/secret.key``), so
every host of a deployment signs alike and a rotated secret keeps old links valid while its
old key is still listed. A link is an HMAC-SHA256 over its fields; what makes it one-time is a
field that changes once the link is used (a waiting run's nonce).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

__all__ = ["LinkSigner"]

_CONTEXT = b"levqor signed link v1"


class LinkSigner:
    """Signs and checks the fields of a link (texts joined by a NUL, which ids never hold)."""

    def __init__(self, secrets: Sequence[str | bytes]) -> None:
        if not secrets:
            raise ValueError("a LinkSigner needs at least one secret")
        self._keys = [
            hmac.new(s.encode() if isinstance(s, str) else s, _CONTEXT, hashlib.sha256).digest()
            for s in secrets
        ]

    @staticmethod
    def _message(fields: Sequence[str]) -> bytes:
        return b"\0".join(f.encode("utf-8", "surrogatepass") for f in fields)

    def sign(self, *fields: str) -> str:
        """The signature of ``fields`` (URL-safe base64, no padding), with the newest key."""
        mac = hmac.new(self._keys[0], self._message(fields), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")

    def verify(self, signature: str, *fields: str) -> bool:
        """Whether ``signature`` signs ``fields`` with any of the keys (constant time)."""
        given = signature.encode("ascii", "replace")
        msg = self._message(fields)
        ok = False
        for key in self._keys:
            mac = hmac.new(key, msg, hashlib.sha256).digest()
            want = base64.urlsafe_b64encode(mac).rstrip(b"=")
            ok |= hmac.compare_digest(want, given)
        return ok
