"""Security: the secrets vault (and, in the host, API key authentication)."""

from __future__ import annotations

from levqor_host.security.vault import Vault, VaultKeyError

__all__ = ["Vault", "VaultKeyError"]
