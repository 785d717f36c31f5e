"""The entity hashing key: configured, or generated once per farmwatch home; never in the code.

In: :class:`jobs.core.sections.PublishSettings` (``entity_hash_key`` and ``target``) and the
farmwatch home. Out: an :class:`EntityHashKey`, the secret the graph stage hashes entity values
with (:mod:`jobs.graph.entities`; published reasons and binding entities quote those hashes),
and its key id, a one-way digest that manifests and the config fingerprint record so that lists
hashed with different keys are never taken for comparable. Called by
:class:`jobs.core.config.Settings` (``entity_hash_key()`` and ``fingerprint()``).

Which key: a configured one (``FARMWATCH_PUBLISH__ENTITY_HASH_KEY``, at least
:data:`MIN_KEY_CHARS` characters) wins. Without one, a run that publishes to object storage
(``s3://``) is refused: whoever reads that bucket needs the key to match hashes to raw data,
and a key that lives only on one machine's disk is lost with it. Otherwise the key is
``<home>/entity-hash-key``, 32 random bytes (hex) created on first use with mode 0600 and
atomically (a process racing to create it reads the winner's key), announced once in the log.
Hashes of IPs and emails under a key anyone can read can be reversed by trying every IPv4
address or a dictionary of emails, so no usable key is written anywhere in the code.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from jobs.core.sections import PublishSettings

KEY_FILE_NAME = "entity-hash-key"
MIN_KEY_CHARS = 32
KEY_SETTING = "publish.entity_hash_key (FARMWATCH_PUBLISH__ENTITY_HASH_KEY)"
_GENERATE_HINT = "python -c 'import secrets; print(secrets.token_hex(32))'"

log = logging.getLogger("farmwatch.hash_key")


class EntityHashKeyError(ValueError):
    """No usable entity hashing key: refused target, unsafe key file, or a key too short."""


def key_id(secret: str) -> str:
    """A public name for a key: 16 hex of ``sha256("farmwatch-key-id:" + key)``, not the key."""
    return hashlib.sha256(f"farmwatch-key-id:{secret}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EntityHashKey:
    """The key entity values are hashed with, and where it came from."""

    secret: str = field(repr=False)
    source: str
    """``configured`` or the path of the home's key file."""

    @property
    def key_id(self) -> str:
        """What manifests and fingerprints record instead of the key."""
        return key_id(self.secret)


def key_file(home: Path) -> Path:
    """Where a farmwatch home keeps its generated key."""
    return home / KEY_FILE_NAME


def is_object_store(target: str) -> bool:
    """True for a publishing target that is a URL (``s3://``...) rather than a folder."""
    return "://" in target


def resolve_entity_hash_key(publish: PublishSettings, home: Path) -> EntityHashKey:
    """The key to hash entities with (see the module docstring for the rules).

    Raises:
        EntityHashKeyError: a configured key shorter than :data:`MIN_KEY_CHARS`, an object-store
            target without a configured key, or a key file others can read or that is damaged.
    """
    if publish.entity_hash_key is not None:
        secret = publish.entity_hash_key.get_secret_value()
        if len(secret.strip()) < MIN_KEY_CHARS:
            raise EntityHashKeyError(
                f"{KEY_SETTING} is shorter than {MIN_KEY_CHARS} characters; a short key can be "
                f"guessed from the published hashes. Use a random one: {_GENERATE_HINT}"
            )
        return EntityHashKey(secret, "configured")
    target = publish.target_for(home)
    if is_object_store(target):
        raise EntityHashKeyError(
            f"publishing to {target} needs an explicitly configured entity hash key: set "
            f"{KEY_SETTING} to a random secret of at least {MIN_KEY_CHARS} characters kept in "
            f"your secret store ({_GENERATE_HINT}). farmwatch generates a key only for a local "
            "folder target: a key on one machine's disk cannot be shared with the readers of a "
            "bucket and is lost with the machine."
        )
    path = key_file(home)
    if not path.exists() and _create(path):
        log.warning(
            "generated a new entity hash key at %s (mode 0600); keep it with the lists "
            "published from this home: their hashes can only be matched with it",
            path,
        )
    return EntityHashKey(_read(path), str(path))


def _create(path: Path) -> bool:
    """Write a new random key at ``path`` unless one appears first; True if this call made it.

    The key is written and synced to a private temporary file, then hard-linked into place:
    the link fails if another process created the file meanwhile, and a reader never sees a
    partly written key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _read(path: Path) -> str:
    """The key in a home's key file, refused if others can read it or it is damaged."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise EntityHashKeyError(
            f"the entity hash key file {path} can be read by other users (mode {mode:04o}); "
            f"restrict it with `chmod 600 {path}`"
        )
    secret = path.read_text().strip()
    if len(secret) < MIN_KEY_CHARS:
        raise EntityHashKeyError(
            f"the entity hash key file {path} holds no usable key (fewer than {MIN_KEY_CHARS} "
            "characters); restore it from a backup, or delete it to generate a new one (lists "
            "published before can then no longer be matched with new ones)"
        )
    return secret
