from __future__ import annotations

import hashlib
import logging
import secrets
import stat
import threading

import pytest

from jobs.core.config import PublishSettings, load_settings
from jobs.core.hash_key import (
    KEY_FILE_NAME,
    EntityHashKeyError,
    key_id,
    resolve_entity_hash_key,
)


def test_no_key_is_written_in_the_code():
    assert PublishSettings().entity_hash_key is None


def test_default_settings_generate_a_private_key_once_per_home(farmwatch_home, caplog):
    with caplog.at_level(logging.WARNING, logger="farmwatch.hash_key"):
        key = load_settings().entity_hash_key()
    path = farmwatch_home / KEY_FILE_NAME
    assert key.source == str(path)
    assert key.secret == path.read_text().strip()
    assert len(key.secret) == 64 and int(key.secret, 16) >= 0  # 32 random bytes, hex
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [r.getMessage() for r in caplog.records] == [
        f"generated a new entity hash key at {path} (mode 0600); keep it with the lists "
        "published from this home: their hashes can only be matched with it"
    ]
    assert key.secret not in repr(key)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="farmwatch.hash_key"):
        again = load_settings().entity_hash_key()
    assert again.secret == key.secret and not caplog.records  # said once, kept


def test_two_homes_get_different_keys(tmp_path):
    first = resolve_entity_hash_key(PublishSettings(), tmp_path / "one")
    second = resolve_entity_hash_key(PublishSettings(), tmp_path / "two")
    assert first.secret != second.secret and first.key_id != second.key_id


def test_racing_processes_share_the_first_key(tmp_path):
    home, start, keys = tmp_path / "home", threading.Barrier(8), []

    def resolve() -> None:
        start.wait()
        keys.append(resolve_entity_hash_key(PublishSettings(), home).secret)

    threads = [threading.Thread(target=resolve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 and len(set(keys)) == 1
    assert [p.name for p in home.iterdir()] == [KEY_FILE_NAME]  # no temporary file left


def test_a_configured_key_wins_and_no_file_is_written(farmwatch_home, monkeypatch):
    secret = secrets.token_hex(32)
    monkeypatch.setenv("FARMWATCH_PUBLISH__ENTITY_HASH_KEY", secret)
    key = load_settings().entity_hash_key()
    assert (key.secret, key.source) == (secret, "configured")
    assert not (farmwatch_home / KEY_FILE_NAME).exists()


def test_a_short_configured_key_is_refused_without_showing_it(farmwatch_home, monkeypatch):
    monkeypatch.setenv("FARMWATCH_PUBLISH__ENTITY_HASH_KEY", "hunter2-password")
    with pytest.raises(EntityHashKeyError, match="shorter than 32 characters") as refused:
        load_settings().entity_hash_key()
    assert "hunter2" not in str(refused.value)


def test_publishing_to_object_storage_without_a_configured_key_is_refused(
    farmwatch_home, monkeypatch
):
    monkeypatch.setenv("FARMWATCH_PUBLISH__TARGET", "s3://trust-banlists/prod")
    settings = load_settings()
    with pytest.raises(
        EntityHashKeyError,
        match=r"publishing to s3://trust-banlists/prod needs an explicitly configured entity "
        r"hash key: set publish.entity_hash_key \(FARMWATCH_PUBLISH__ENTITY_HASH_KEY\)",
    ):
        settings.entity_hash_key()
    with pytest.raises(EntityHashKeyError, match="FARMWATCH_PUBLISH__ENTITY_HASH_KEY"):
        settings.fingerprint()  # so a run stops before its first stage
    assert not (farmwatch_home / KEY_FILE_NAME).exists()
    secret = secrets.token_hex(32)
    monkeypatch.setenv("FARMWATCH_PUBLISH__ENTITY_HASH_KEY", secret)
    assert load_settings().entity_hash_key().secret == secret


def test_a_key_file_others_can_read_or_a_damaged_one_is_refused(tmp_path):
    home = tmp_path / "home"
    path = home / KEY_FILE_NAME
    resolve_entity_hash_key(PublishSettings(), home)
    path.chmod(0o644)
    with pytest.raises(EntityHashKeyError, match="mode 0644.*chmod 600"):
        resolve_entity_hash_key(PublishSettings(), home)
    path.chmod(0o600)
    path.write_text("short\n")
    with pytest.raises(EntityHashKeyError, match="holds no usable key"):
        resolve_entity_hash_key(PublishSettings(), home)


def test_key_id_names_a_key_without_revealing_it():
    secret = secrets.token_hex(32)
    expected = hashlib.sha256(f"farmwatch-key-id:{secret}".encode()).hexdigest()[:16]
    assert key_id(secret) == expected
    assert secret not in key_id(secret) and key_id(secret) != secret[:16]
    assert key_id(secrets.token_hex(32)) != expected
