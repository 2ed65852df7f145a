"""Templates encrypted at rest: AES-256-GCM envelopes around the objects that hold vectors.

`EncryptedObjectStore` wraps an ObjectStore: objects under the protected prefixes (event log
segments, snapshot parts and rerank stores) are encrypted on write and decrypted on read; the
rest (CURRENT, writer markers, the audit trail) pass through. Each object names the key id it was
written with, so old objects stay readable while the configured current key writes new ones —
a compaction rewrites the gallery under the current key, which is how keys rotate.

Envelope: MAGIC | u16 key-id length | key id | chunks of (u32 plaintext length | 12-byte nonce |
ciphertext+tag). Each chunk's associated data binds the object key, the chunk index and a
final-chunk flag, so chunks cannot be swapped between objects, reordered or cut off.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ufme_ray.config import EncryptionSettings
from ufme_ray.gallery.storage import ObjectStore, StorageError

MAGIC = b"UFMEENC1"
CHUNK_BYTES = 16 * 1024 * 1024
PROTECTED_PREFIXES = ("events/", "snapshots/")


class EncryptionError(StorageError):
    """An object cannot be decrypted: unknown key id, wrong key, or tampered/truncated data."""


class TemplateCipher:
    def __init__(self, keys: dict[str, bytes], current_key_id: str, *, chunk_bytes: int = CHUNK_BYTES):
        self.chunk_bytes = chunk_bytes
        if current_key_id not in keys:
            raise ValueError(f"the current encryption key {current_key_id!r} is not among the keys")
        for key_id, key in keys.items():
            if len(key) != 32:
                raise ValueError(f"encryption key {key_id!r} must be 32 bytes (AES-256), not {len(key)}")
        self._keys = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current_key_id = current_key_id

    @classmethod
    def from_settings(cls, settings: EncryptionSettings) -> "TemplateCipher | None":
        if settings.key_id is None:
            return None
        keys = {key_id: base64.b64decode(secret.get_secret_value()) for key_id, secret in settings.keys.items()}
        return cls(keys, settings.key_id)

    @staticmethod
    def _aad(object_key: str, index: int, final: bool) -> bytes:
        return object_key.encode() + struct.pack(">QB", index, final)

    def _header(self) -> bytes:
        key_id = self.current_key_id.encode()
        return MAGIC + struct.pack(">H", len(key_id)) + key_id

    def _chunk(self, object_key: str, index: int, plain: bytes, final: bool) -> bytes:
        nonce = os.urandom(12)
        sealed = self._keys[self.current_key_id].encrypt(nonce, plain, self._aad(object_key, index, final))
        return struct.pack(">I", len(plain)) + nonce + sealed

    def encrypt(self, object_key: str, data: bytes) -> bytes:
        size = self.chunk_bytes
        chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        return self._header() + b"".join(
            self._chunk(object_key, i, chunk, i == len(chunks) - 1) for i, chunk in enumerate(chunks)
        )

    def encrypt_file(self, object_key: str, source: Path, target: Path) -> None:
        size = source.stat().st_size
        count = max(1, -(-size // self.chunk_bytes))
        with open(source, "rb") as src, open(target, "wb") as out:
            out.write(self._header())
            for index in range(count):
                out.write(self._chunk(object_key, index, src.read(self.chunk_bytes), index == count - 1))

    def _open(self, object_key: str, read) -> tuple[AESGCM, str]:
        if read(len(MAGIC)) != MAGIC:
            raise EncryptionError(f"object {object_key!r} is not an encrypted envelope")
        (length,) = struct.unpack(">H", read(2))
        key_id = read(length).decode()
        cipher = self._keys.get(key_id)
        if cipher is None:
            raise EncryptionError(f"object {object_key!r} was written with key {key_id!r}, which is not configured")
        return cipher, key_id

    def _chunks(self, object_key: str, read):
        cipher, _ = self._open(object_key, read)
        index, final = 0, False
        while not final:
            header = read(4)
            if len(header) < 4:
                raise EncryptionError(f"object {object_key!r} is truncated (no final chunk)")
            (length,) = struct.unpack(">I", header)
            nonce, sealed = read(12), read(length + 16)
            if len(sealed) < length + 16:
                raise EncryptionError(f"object {object_key!r} is truncated in chunk {index}")
            final = read.at_end()
            try:
                yield cipher.decrypt(nonce, sealed, self._aad(object_key, index, final))
            except InvalidTag:
                raise EncryptionError(f"object {object_key!r} chunk {index} fails authentication") from None
            index += 1

    def decrypt(self, object_key: str, data: bytes) -> bytes:
        reader = _Reader(data)
        return b"".join(self._chunks(object_key, reader))

    def decrypt_file(self, object_key: str, source: Path, target: Path) -> None:
        with open(source, "rb") as src, open(target, "wb") as out:
            reader = _FileReader(src)
            for plain in self._chunks(object_key, reader):
                out.write(plain)


class _Reader:
    """Sequential reads over bytes; `at_end` tells whether anything is left."""

    def __init__(self, data: bytes):
        self._data, self._pos = data, 0

    def __call__(self, n: int) -> bytes:
        piece = self._data[self._pos : self._pos + n]
        self._pos += len(piece)
        return piece

    def at_end(self) -> bool:
        return self._pos >= len(self._data)


class _FileReader(_Reader):
    def __init__(self, handle):
        self._handle = handle
        self._size = os.fstat(handle.fileno()).st_size

    def __call__(self, n: int) -> bytes:
        return self._handle.read(n)

    def at_end(self) -> bool:
        return self._handle.tell() >= self._size


def open_configured_storage(settings) -> ObjectStore:
    """The store of `settings.resolved_storage_uri`, encrypting templates when a key is configured."""
    from ufme_ray.gallery.storage import open_storage

    store = open_storage(settings.resolved_storage_uri)
    cipher = TemplateCipher.from_settings(settings.encryption)
    return store if cipher is None else EncryptedObjectStore(store, cipher)


def _protected(key: str) -> bool:
    return key.startswith(PROTECTED_PREFIXES)


class EncryptedObjectStore(ObjectStore):
    """An ObjectStore whose protected objects are encrypted at rest (same interface, same guarantees)."""

    def __init__(self, inner: ObjectStore, cipher: TemplateCipher):
        self._inner = inner
        self._cipher = cipher

    @property
    def uri(self) -> str:
        return self._inner.uri

    @property
    def is_local(self) -> bool:
        return self._inner.is_local

    def exists(self, key: str) -> bool:
        return self._inner.exists(key)

    def write(self, key: str, data: bytes) -> None:
        self._inner.write(key, self._cipher.encrypt(key, data) if _protected(key) else data)

    def write_file(self, key: str, source: str | Path) -> str:
        if not _protected(key):
            return self._inner.write_file(key, source)
        digest = hashlib.sha256()
        with open(source, "rb") as src:
            while chunk := src.read(CHUNK_BYTES):
                digest.update(chunk)
        with tempfile.TemporaryDirectory(prefix="ufme-enc-") as folder:
            sealed = Path(folder) / "sealed"
            self._cipher.encrypt_file(key, Path(source), sealed)
            self._inner.write_file(key, sealed)
        return digest.hexdigest()

    def replace(self, key: str, data: bytes) -> None:
        self._inner.replace(key, self._cipher.encrypt(key, data) if _protected(key) else data)

    def read(self, key: str) -> bytes:
        data = self._inner.read(key)
        return self._cipher.decrypt(key, data) if _protected(key) else data

    def read_to_file(self, key: str, target: str | Path) -> str:
        if not _protected(key):
            return self._inner.read_to_file(key, target)
        target = Path(target)
        sealed = target.with_name(f".{target.name}.sealed")
        try:
            self._inner.read_to_file(key, sealed)
            self._cipher.decrypt_file(key, sealed, target)
        finally:
            sealed.unlink(missing_ok=True)
        digest = hashlib.sha256()
        with open(target, "rb") as plain:
            while chunk := plain.read(CHUNK_BYTES):
                digest.update(chunk)
        return digest.hexdigest()

    def list(self, prefix: str) -> list[str]:
        return self._inner.list(prefix)

    def delete(self, keys: Iterable[str]) -> None:
        self._inner.delete(keys)
