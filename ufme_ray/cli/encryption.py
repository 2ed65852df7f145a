"""`ufme-ray encryption status`: how the gallery's template objects are stored (per key id, and
the plaintext ones), the check of a migration to encryption and of a key rotation.

Encrypting a gallery written without encryption (see `ufme_ray.gallery.encryption`):
  1. set encryption.key_id / encryption.keys and encryption.accept_plaintext: true, redeploy;
  2. `ufme-ray compact --now --wait`: the new snapshot is encrypted; the superseded plaintext epoch
     and log segments go with the first compaction after compaction.retention_s;
  3. `ufme-ray encryption status` until it exits 0, then remove accept_plaintext and redeploy.
"""

from __future__ import annotations

import argparse
import sys

from ufme_ray.cli.common import EXIT_FAILED, EXIT_OK, UsageError, load_settings

EPILOG = (
    f"exit codes: {EXIT_OK} every template object is encrypted under a configured key (or encryption is off); "
    f"{EXIT_FAILED} plaintext objects are left, some use a key id that is not configured, or the store "
    "could not be read; 2 wrong arguments or settings"
)
ENV_ACCEPT = "UFME_ENCRYPTION__ACCEPT_PLAINTEXT"


def cmd_status(args: argparse.Namespace) -> int:
    from ufme_ray.gallery.encryption import EncryptedObjectStore, encryption_census, open_configured_storage
    from ufme_ray.gallery.manifest import CorruptSnapshotError
    from ufme_ray.gallery.storage import StorageError

    settings = load_settings(args)
    encryption = settings.encryption
    try:
        store = open_configured_storage(settings)
        census = encryption_census(store)
    except ValueError as exc:  # a malformed storage URI
        raise UsageError(str(exc)) from None
    except (StorageError, CorruptSnapshotError) as exc:
        print(f"ufme-ray: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"storage {store.uri}: current epoch {census.current_epoch}, {census.objects} template objects")
    for key_id, count in census.by_key_id.items():
        role = "current key" if key_id == encryption.key_id else (
            "older key" if key_id in encryption.keys else "NOT CONFIGURED: unreadable"
        )
        print(f"  encrypted with {key_id}: {count} ({role})")
    print(f"  plaintext: {len(census.plaintext)} ({len(census.plaintext_current)} read by a restore)")
    if args.list:
        for key in census.plaintext:
            print(f"    {key}{'  (read by a restore)' if key in census.plaintext_current else ''}")
    if not isinstance(store, EncryptedObjectStore):
        print("encryption is off (encryption.key_id is not set)")
        return EXIT_OK
    unknown = [key_id for key_id in census.by_key_id if key_id not in encryption.keys]
    if unknown:
        print(f"objects use key ids that are not configured ({', '.join(unknown)}): add them to encryption.keys")
    if census.plaintext and encryption.accept_plaintext:
        print(
            "migration in progress: run a compaction (`ufme-ray compact --now --wait`); the superseded plaintext "
            f"epoch and log segments go with the first compaction after compaction.retention_s "
            f"({settings.compaction.retention_s:g} s). Keep encryption.accept_plaintext until none are left."
        )
    elif census.plaintext:
        print(
            "plaintext objects while encryption.accept_plaintext is off: shards refuse them. If they were written "
            f"before encryption was turned on, migrate (set {ENV_ACCEPT}=true, compact, check again); "
            "otherwise they were planted by someone who can write the store."
        )
    elif encryption.accept_plaintext:
        print(
            f"no plaintext objects left: the migration is complete; remove encryption.accept_plaintext ({ENV_ACCEPT})"
        )
    else:
        print("every template object is encrypted")
    return EXIT_FAILED if census.plaintext or unknown else EXIT_OK


def add_parsers(commands: argparse._SubParsersAction) -> None:
    encryption = commands.add_parser("encryption", help="templates encrypted at rest: check the stored objects")
    sub = encryption.add_subparsers(dest="encryption_command", required=True)
    status = sub.add_parser(
        "status", help="count template objects per key id and the plaintext ones (exit 1 while any are left)",
        epilog=EPILOG,
    )
    status.add_argument("--list", action="store_true", help="name every plaintext object")
    status.set_defaults(handler=cmd_status)
