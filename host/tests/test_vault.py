"""The Vault, and the canary check and key rotation the Store does with it."""

from __future__ import annotations

import logging
import os
import stat

import pytest
from levqor_host.security import Vault, VaultKeyError
from levqor_host.store import Store
from levqor_host.store import tables as t
from sqlalchemy import select

DOC = {
    "levqor": 1,
    "trigger": {"type": "manual"},
    "steps": [{"id": "a", "connector": "core", "action": "echo", "payload": {}}],
}


def test_encrypt_decrypt_roundtrip():
    v = Vault([Vault.generate_key()])
    obj = {"token": "s3cr3t", "n": 1, "nested": {"list": [1, "two", None]}, "uni": "é✓"}
    token = v.encrypt(obj)
    assert isinstance(token, str)
    assert "s3cr3t" not in token
    assert v.decrypt(token) == obj
    assert v.encrypt(obj) != token  # fresh IV every time
    assert v.decrypt(v.encrypt("plain string")) == "plain string"


def test_first_key_encrypts_all_keys_decrypt():
    old, new = Vault.generate_key(), Vault.generate_key()
    token_old = Vault([old]).encrypt({"a": 1})
    both = Vault([new, old])
    assert both.decrypt(token_old) == {"a": 1}
    token_new = both.encrypt({"b": 2})
    assert Vault([new]).decrypt(token_new) == {"b": 2}
    with pytest.raises(VaultKeyError):
        Vault([old]).decrypt(token_new)
    assert both.keys == [new, old]


def test_wrong_key_and_garbage_raise_vault_key_error():
    token = Vault([Vault.generate_key()]).encrypt({"a": 1})
    other = Vault([Vault.generate_key()])
    with pytest.raises(VaultKeyError):
        other.decrypt(token)
    with pytest.raises(VaultKeyError):
        other.decrypt("not-a-token")
    assert other.can_decrypt(token) is False
    assert other.can_decrypt(other.encrypt(1)) is True


def test_invalid_keys_rejected():
    with pytest.raises(VaultKeyError):
        Vault([])
    with pytest.raises(VaultKeyError):
        Vault(["too-short"])
    with pytest.raises(VaultKeyError):
        Vault.from_env_value(f"{Vault.generate_key()},nope")


def test_from_config_env_value_comma_separated(tmp_path):
    k1, k2 = Vault.generate_key(), Vault.generate_key()
    v = Vault.from_config(tmp_path, f" {k1} , {k2} ")
    assert v.keys == [k1, k2]
    assert not (tmp_path / "secret.key").exists()  # no key file when the env sets one


def test_from_config_generates_key_file(tmp_path, caplog):
    data = tmp_path / "data"
    with caplog.at_level(logging.WARNING):
        v1 = Vault.from_config(data, None)
    key_file = data / "secret.key"
    assert key_file.exists()
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert "LEVQOR_SECRET_KEY" in caplog.text
    caplog.clear()
    v2 = Vault.from_config(data, "")  # reuses the file, no new warning
    assert v2.keys == v1.keys
    assert caplog.text == ""
    assert v2.decrypt(v1.encrypt({"x": 1})) == {"x": 1}
    assert "<Vault keys=1>" == repr(v1) and v1.keys[0] not in repr(v1)


def test_check_vault_canary(store: Store, make_store):
    assert store.meta.get("vault_canary") is None
    store.vault_keys.check()  # writes the canary
    canary = store.meta.get("vault_canary")
    assert canary
    store.vault_keys.check()  # and accepts it
    assert store.meta.get("vault_canary") == canary

    same = make_store(store.url, Vault(store.vault.keys))
    same.vault_keys.check()
    wrong = make_store(store.url, Vault([Vault.generate_key()]))
    with pytest.raises(VaultKeyError, match="LEVQOR_SECRET_KEY"):
        wrong.vault_keys.check()
    # the new key listed first, the old one after it, is accepted
    both = make_store(store.url, Vault([Vault.generate_key(), *store.vault.keys]))
    both.vault_keys.check()


def test_rotate_vault(store: Store, make_store):
    old_vault = store.vault
    user = store.users.create("rot@example.com")
    store.vault_keys.check()
    creds = {f"c{i}": {"token": f"tok-{i}"} for i in range(3)}
    for name, values in creds.items():
        store.credentials.create(user["id"], name, "slack", values)
    p1 = store.pipelines.create(user["id"], "p1", DOC)
    p2 = store.pipelines.create(user["id"], "p2", DOC)
    store.pipelines.create(user["id"], "p3 (no secret)", DOC)
    store.pipelines.set_webhook_secret(user["id"], p1["id"], "whsec-1")
    store.pipelines.set_webhook_secret(user["id"], p2["id"], "whsec-2")

    new_key = Vault.generate_key()
    count = store.vault_keys.rotate(Vault([new_key]))
    assert count == 3 + 2 + 1  # credentials, webhook secrets, canary
    assert store.vault.keys == [new_key]

    # only the new key decrypts now, and everything still reads back
    new_only = Vault([new_key])
    with store.engine.connect() as conn:
        enc_values = conn.execute(select(t.credentials.c.value_enc)).scalars().all()
        enc_secrets = (
            conn.execute(
                select(t.pipelines.c.webhook_secret_enc).where(
                    t.pipelines.c.webhook_secret_enc.is_not(None)
                )
            )
            .scalars()
            .all()
        )
    tokens = [*enc_values, *enc_secrets, store.meta.get("vault_canary")]
    assert len(tokens) == count
    for token in tokens:
        assert new_only.can_decrypt(token)
        assert not old_vault.can_decrypt(token)
    for name, values in creds.items():
        assert store.credentials.values(user["id"], name) == ("slack", values)
    assert store.pipelines.get_webhook_secret(p1["id"]) == "whsec-1"
    assert store.pipelines.get_webhook_secret(p2["id"]) == "whsec-2"
    store.vault_keys.check()

    with pytest.raises(VaultKeyError):
        make_store(store.url, old_vault).vault_keys.check()
    make_store(store.url, new_only).vault_keys.check()


def test_rotate_vault_with_undecryptable_secret_changes_nothing(store: Store):
    user = store.users.create("r2@example.com")
    store.credentials.create(user["id"], "good", "slack", {"token": "g"})
    foreign = Vault([Vault.generate_key()]).encrypt({"token": "foreign"})
    store.credentials.create(user["id"], "bad", "slack", {"token": "b"})
    with store.write() as conn:
        conn.execute(
            t.credentials.update().where(t.credentials.c.name == "bad").values(value_enc=foreign)
        )
    before = store.vault
    with pytest.raises(VaultKeyError):
        store.vault_keys.rotate(Vault([Vault.generate_key()]))
    assert store.vault is before
    assert store.credentials.values(user["id"], "good") == ("slack", {"token": "g"})
