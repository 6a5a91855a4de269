"""The privacy key: keyed hashes (HMAC-SHA256) of identifiers that must not be stored in clear.

Erasure tombstones are such hashes: ingest can recognise a forgotten person's identifiers
without keeping them. The key comes from MICROSEG_PRIVACY_KEY; without it, one is generated
on first use into $MICROSEG_HOME/privacy/key (owner-only), which suits a laptop, not a
deployment: there the key belongs in a secret store, apart from the data it protects.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from microseg.config import Settings


def key_file(settings: Settings) -> Path:
    return settings.home / "privacy" / "key"


def privacy_key(settings: Settings) -> bytes:
    """MICROSEG_PRIVACY_KEY, else the generated key file (created on first use)."""
    if settings.privacy_key:
        return settings.privacy_key.encode()
    path = key_file(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def every_key(settings: Settings) -> list[bytes]:
    """The current key, then the rotated-out ones (MICROSEG_PRIVACY_OLD_KEYS)."""
    return [privacy_key(settings), *(k.encode() for k in settings.privacy_old_keys)]


def key_id(key: bytes) -> str:
    """A short public name of the key (rotation: which key made a hash)."""
    return hashlib.sha256(key).hexdigest()[:8]


def keyed_hash(key: bytes, id_type: str, identifier: str) -> str:
    """HMAC-SHA256 of 'type:identifier' (a user id and a device id never collide)."""
    return hmac.new(key, f"{id_type}:{identifier}".encode(), hashlib.sha256).hexdigest()
