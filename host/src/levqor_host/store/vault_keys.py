"""The vault's keys against the database: the canary that proves them, and key rotation."""

from __future__ import annotations

from sqlalchemy import bindparam, select, update

from levqor_host.security.vault import Vault, VaultKeyError
from levqor_host.store.db import Database, utcnow
from levqor_host.store.locks import Meta
from levqor_host.store.tables import credentials, meta, pipelines

__all__ = ["VAULT_CANARY_KEY", "VAULT_CANARY_VALUE", "VaultKeys"]

VAULT_CANARY_KEY = "vault_canary"
VAULT_CANARY_VALUE = {"levqor": "vault-canary"}


class VaultKeys:
    """Checks and rotates the keys every encrypted value of the database (credentials, webhook
    secrets) was written with."""

    def __init__(self, db: Database, meta: Meta) -> None:
        self.db = db
        self.meta = meta

    def check(self) -> None:
        """Verify the vault keys against the canary in ``meta`` (written on first use).

        Raises :class:`VaultKeyError` when the current keys cannot decrypt it, i.e. the host was
        started with a different ``LEVQOR_SECRET_KEY`` than the one the data was encrypted with.
        """
        token = self.meta.get(VAULT_CANARY_KEY)
        if token is None:
            token = self.meta.setdefault(
                VAULT_CANARY_KEY, self.db.vault.encrypt(VAULT_CANARY_VALUE)
            )
        try:
            value = self.db.vault.decrypt(token)
        except VaultKeyError as exc:
            raise VaultKeyError(
                "LEVQOR_SECRET_KEY cannot decrypt this database's secrets: it was encrypted "
                "with another key (list the old key after the new one, comma separated)"
            ) from exc
        if value != VAULT_CANARY_VALUE:
            raise VaultKeyError("the vault canary in this database is corrupt")

    def rotate(self, new_vault: Vault) -> int:
        """Re-encrypt every secret (credentials, webhook secrets, the canary) with ``new_vault``'s
        newest key in one transaction, then use ``new_vault``. Returns how many were re-encrypted.
        Values are decrypted with the current vault (or ``new_vault`` if it holds the old keys);
        raises :class:`VaultKeyError`, changing nothing, when one cannot be decrypted."""

        def reencrypt(token: str) -> str:
            try:
                obj = self.db.vault.decrypt(token)
            except VaultKeyError:
                obj = new_vault.decrypt(token)
            return new_vault.encrypt(obj)

        count = 0
        with self.db.write() as conn:
            for table, column in (
                (credentials, credentials.c.value_enc),
                (pipelines, pipelines.c.webhook_secret_enc),
            ):
                rows = conn.execute(select(table.c.id, column).where(column.is_not(None))).all()
                if rows:
                    conn.execute(
                        update(table)
                        .where(table.c.id == bindparam("_id"))
                        .values({column.name: bindparam("_v")}),
                        [{"_id": r.id, "_v": reencrypt(r[1])} for r in rows],
                    )
                count += len(rows)
            canary = conn.execute(
                select(meta.c.value).where(meta.c.key == VAULT_CANARY_KEY)
            ).scalar_one_or_none()
            if canary is not None:
                conn.execute(
                    update(meta)
                    .where(meta.c.key == VAULT_CANARY_KEY)
                    .values(value=reencrypt(canary), updated_at=utcnow())
                )
                count += 1
        self.db.vault = new_vault
        return count
