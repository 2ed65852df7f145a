"""Templates encrypted at rest: AES-256-GCM envelopes around the objects that hold vectors.

`EncryptedObjectStore` wraps an ObjectStore: objects under the protected prefixes (event log
segments, snapshot parts and rerank stores) are encrypted on write and decrypted on read; the
rest (CURRENT, writer markers, the audit trail) pass through. Each object names the key id it was
written with, so old objects stay readable while the configured current key writes new ones —
a compaction rewrites the gallery under the current key, which is how keys rotate.

Envelope: MAGIC | u16 key-id length | key id | chunks of (u32 plaintext length | 12-byte nonce |
ciphertext+tag). Each chunk's associated data binds the object key, the chunk index and a
final-chunk flag, so chunks cannot be swapped between objects, reordered or cut off.

Turning encryption on for a gallery written without it (migration). A plaintext object is told
apart by its first bytes: no plaintext object starts with MAGIC (segments start `UFMESEG1`, index
parts with a FAISS fourcc, rows with `ARROW1`, metadata with `{`). By default a protected object
that is not an envelope is refused (`EncryptionError` naming the migration), so a gallery
written before encryption does not start. With `encryption.accept_plaintext` it is read as it
is, while every object written is encrypted; a compaction rewrites the snapshot encrypted, and
its retention deletes the superseded plaintext epoch and the log segments it covers.
`encryption_census` (`ufme-ray encryption status`, and the compaction summary while migrating)
says how many plaintext objects are left; once none are, the operator removes the setting.

Why a setting and not a marker in the store: a plaintext object carries no authentication, so
accepting one trusts whoever wrote it. An attacker who can write the store could plant a
plaintext log segment (the next seq needs only a PUT) and enrol a face of their choice; a
"gallery fully encrypted" marker kept in that same store could be deleted by the same attacker,
turning acceptance back on. The configuration is outside the attacker's reach, so it alone
decides, and acceptance is off by default: it is a migration window the operator opens and
closes explicitly, with the census telling when closing it is safe.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import os
import struct
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ufme_ray.config import EncryptionSettings
from ufme_ray.gallery.epochs import read_current, read_manifest
from ufme_ray.gallery.log_segments import list_log, log_prefix
from ufme_ray.gallery.manifest import epoch_prefix
from ufme_ray.gallery.storage import ObjectStore, StorageError

logger = logging.getLogger(__name__)

MAGIC = b"UFMEENC1"
CHUNK_BYTES = 16 * 1024 * 1024
PROTECTED_PREFIXES = ("events/", "snapshots/")


class EncryptionError(StorageError):
    """An object cannot be decrypted: unknown key id, wrong key, tampered/truncated data, or not
    encrypted at all while plaintext is not accepted."""


MIGRATION_HINT = (
    "To encrypt a gallery written without encryption, set encryption.accept_plaintext: true "
    "(UFME_ENCRYPTION__ACCEPT_PLAINTEXT=true) for the migration, run a compaction, and remove the setting once "
    "`ufme-ray encryption status` reports no plaintext objects left"
)


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
    if cipher is None:
        return store
    return EncryptedObjectStore(store, cipher, accept_plaintext=settings.encryption.accept_plaintext)


def _protected(key: str) -> bool:
    return key.startswith(PROTECTED_PREFIXES)


class EncryptedObjectStore(ObjectStore):
    """An ObjectStore whose protected objects are encrypted at rest (same interface, same guarantees).

    `accept_plaintext` (migration only, see the module doc): protected objects that are not
    envelopes are returned as stored instead of refused; `plaintext_reads` counts them.
    """

    def __init__(self, inner: ObjectStore, cipher: TemplateCipher, *, accept_plaintext: bool = False):
        self._inner = inner
        self._cipher = cipher
        self.accept_plaintext = accept_plaintext
        self.plaintext_reads = 0
        self._count_lock = threading.Lock()

    @property
    def inner(self) -> ObjectStore:
        """The store underneath, which holds the envelopes as they are."""
        return self._inner

    def _plaintext(self, key: str) -> None:
        """A protected object is not an envelope: refuse it, or (migrating) count it."""
        if not self.accept_plaintext:
            raise EncryptionError(
                f"object {key!r} in {self._inner.uri} is not encrypted: it was written before encryption was "
                f"turned on, or planted by someone who can write the store, so it is refused. {MIGRATION_HINT}"
            )
        with self._count_lock:
            self.plaintext_reads += 1
            first = self.plaintext_reads == 1
        log = logger.warning if first else logger.debug
        log("reading the plaintext object %s (encryption.accept_plaintext is on: migrating)", key)

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
        if not _protected(key):
            return data
        if not data.startswith(MAGIC):
            self._plaintext(key)
            return data
        return self._cipher.decrypt(key, data)

    def read_head(self, key: str, size: int) -> bytes:
        if not _protected(key):
            return self._inner.read_head(key, size)
        return self.read(key)[:size]

    def read_to_file(self, key: str, target: str | Path) -> str:
        if not _protected(key):
            return self._inner.read_to_file(key, target)
        target = Path(target)
        sealed = target.with_name(f".{target.name}.sealed")
        try:
            self._inner.read_to_file(key, sealed)
            with open(sealed, "rb") as head:
                encrypted = head.read(len(MAGIC)) == MAGIC
            if encrypted:
                self._cipher.decrypt_file(key, sealed, target)
            else:
                self._plaintext(key)
                os.replace(sealed, target)
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


_KEY_ID_HEAD = len(MAGIC) + 2 + 256


@dataclasses.dataclass(frozen=True)
class EncryptionCensus:
    """How the objects that hold templates (log segments, snapshot objects) are stored.

    Writer markers under `events/` are left out: they hold no template and their content is never
    trusted (a writer reads back only the claim it has just written).
    """

    current_epoch: int | None
    by_key_id: dict[str, int]  # encrypted objects per key id
    plaintext: list[str]  # objects that are not encrypted
    plaintext_current: list[str]  # of those, the ones a restore reads: current epoch, log after its watermark

    @property
    def objects(self) -> int:
        return len(self.plaintext) + sum(self.by_key_id.values())


def _template_objects(store: ObjectStore) -> list[str]:
    return store.list("snapshots") + [key for key in store.list("events") if key.endswith(".seg")]


def _key_id_of(head: bytes) -> str | None:
    """The key id an envelope names, or None for a plaintext object."""
    if not head.startswith(MAGIC):
        return None
    (length,) = struct.unpack(">H", head[len(MAGIC) : len(MAGIC) + 2])
    return head[len(MAGIC) + 2 : len(MAGIC) + 2 + length].decode(errors="replace")


def encryption_census(store: ObjectStore) -> EncryptionCensus:
    """Which template objects are plaintext and which key ids encrypt the others.

    Reads only each object's first bytes, plus CURRENT and its manifest (for the watermarks that
    say which plaintext log segments a restore still reads). `store` is the configured store
    (an `EncryptedObjectStore` when encryption is on). Raises StorageError if the store fails,
    CorruptSnapshotError or EncryptionError if the current manifest is unreadable.
    """
    raw = store.inner if isinstance(store, EncryptedObjectStore) else store
    lenient = EncryptedObjectStore(raw, store._cipher, accept_plaintext=True) if raw is not store else raw
    current = read_current(raw)
    watermarks: dict[int, int] = {}
    if current is not None:
        watermarks = {shard: info.watermark for shard, info in read_manifest(lenient, current).shards.items()}
    by_key_id: dict[str, int] = {}
    plaintext: list[str] = []
    for key in _template_objects(raw):
        key_id = _key_id_of(raw.read_head(key, _KEY_ID_HEAD))
        if key_id is None:
            plaintext.append(key)
        else:
            by_key_id[key_id] = by_key_id.get(key_id, 0) + 1
    needed: set[str] = set()
    if current is not None:
        needed |= {key for key in plaintext if key.startswith(f"{epoch_prefix(current)}/")}
    shards = {int(key.split("/")[1].removeprefix("shard-")) for key in plaintext if key.startswith("events/shard-")}
    for shard in shards:
        after = watermarks.get(shard, 0)
        needed |= {s.key for s in list_log(raw, log_prefix(shard)).segments if s.last_seq > after}
    return EncryptionCensus(
        current_epoch=current,
        by_key_id=dict(sorted(by_key_id.items())),
        plaintext=plaintext,
        plaintext_current=[key for key in plaintext if key in needed],
    )
