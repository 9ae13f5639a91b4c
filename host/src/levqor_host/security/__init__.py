"""Security that holds no web framework: the secrets vault, passwords, API key scopes, JWT
verification and the security settings. Sign-in and limits at the edge are in levqor_host.web
(access, protection)."""

from __future__ import annotations

from levqor_host.security.vault import Vault, VaultKeyError

__all__ = ["Vault", "VaultKeyError"]
