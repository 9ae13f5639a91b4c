"""Encryption of secrets at rest (credentials, webhook secrets).

A :class:`Vault` holds one or more Fernet keys, newest first: the first key encrypts, every key
decrypts (:class:`cryptography.fernet.MultiFernet`). ``LEVQOR_SECRET_KEY`` holds the keys,
comma separated; rotating means prepending a new key, running ``Store.vault_keys.rotate`` and
eventually dropping the old key. The store keeps an encrypted canary in its ``meta`` table so
that a host started with the wrong key refuses to start (``Store.vault_keys.check``) instead of
failing later on every credential.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

log = logging.getLogger(__name__)

KEY_FILE_NAME = "secret.key"


class VaultKeyError(Exception):
    """The configured key(s) are malformed or cannot decrypt the stored secrets."""


class Vault:
    """Encrypts JSON-able objects with Fernet. ``keys``: Fernet keys, newest (encrypting) first."""

    def __init__(self, keys: list[str]) -> None:
        cleaned = [k.strip() for k in keys if k and k.strip()]
        if not cleaned:
            raise VaultKeyError("no vault key given")
        fernets = []
        for i, key in enumerate(cleaned):
            try:
                fernets.append(Fernet(key.encode("ascii")))
            except (ValueError, UnicodeEncodeError) as exc:
                raise VaultKeyError(
                    f"vault key #{i + 1} is not a valid Fernet key (32 url-safe base64-encoded bytes)"
                ) from exc
        self._keys = cleaned
        self._fernet = MultiFernet(fernets)

    @staticmethod
    def generate_key() -> str:
        """A new random Fernet key (text)."""
        return Fernet.generate_key().decode("ascii")

    @classmethod
    def from_env_value(cls, value: str) -> Vault:
        """Build from a comma separated key list such as ``LEVQOR_SECRET_KEY``."""
        return cls(value.split(","))

    @classmethod
    def from_config(cls, data_dir: str | os.PathLike[str], env_value: str | None) -> Vault:
        """The vault for a deployment.

        ``env_value`` (``LEVQOR_SECRET_KEY``, comma separated, newest first) wins when set.
        Otherwise the key in ``<data_dir>/secret.key`` is used, generated (mode 0600) on first
        start with a warning, since losing that file means losing every stored credential.
        """
        if env_value and env_value.strip():
            return cls.from_env_value(env_value)
        path = Path(data_dir) / KEY_FILE_NAME
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            key = cls.generate_key()
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process created it first: use theirs
            else:
                with os.fdopen(fd, "w", encoding="ascii") as fh:
                    fh.write(key + "\n")
                log.warning(
                    "LEVQOR_SECRET_KEY is not set: generated a new vault key in %s; "
                    "back it up (stored credentials cannot be decrypted without it) "
                    "or set LEVQOR_SECRET_KEY",
                    path,
                )
        return cls.from_env_value(path.read_text(encoding="ascii"))

    @property
    def keys(self) -> list[str]:
        """The keys, newest first (a copy)."""
        return list(self._keys)

    def encrypt(self, obj: Any) -> str:
        """JSON-encode ``obj`` and encrypt it with the newest key; returns the Fernet token."""
        data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return self._fernet.encrypt(data).decode("ascii")

    def decrypt(self, token: str) -> Any:
        """Decrypt a token made by :meth:`encrypt` with any key; raises :class:`VaultKeyError`."""
        try:
            data = self._fernet.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError, AttributeError) as exc:
            raise VaultKeyError("cannot decrypt: the vault keys do not match this secret") from exc
        return json.loads(data.decode("utf-8"))

    def can_decrypt(self, token: str) -> bool:
        """Whether any of the keys decrypts ``token``."""
        try:
            self.decrypt(token)
        except VaultKeyError:
            return False
        return True

    def __repr__(self) -> str:  # never show the keys
        return f"<Vault keys={len(self._keys)}>"
