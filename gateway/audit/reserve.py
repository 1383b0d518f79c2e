"""A few MiB of disk held back beside the audit log, so that pruning works on a full disk.

On a full disk SQLite cannot even delete: removing records writes their pages to the WAL, and
folding the WAL back into the database needs room too. The gateway therefore keeps a file of
``audit.reserve_mb`` allocated next to the log (``<database>.reserve``); ``gateway audit prune``
removes it first, prunes in the room it leaves, folds the WAL back, and allocates it again when
the disk has room for it and some more.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MIB = 1024 * 1024
RESERVE_HEADROOM = MIB
"""Free space left after taking the reserve again, so that the log can still be written to."""


class DiskReserve:
    def __init__(self, database: Path, size_mb: int) -> None:
        self.path = database.with_name(database.name + ".reserve")
        self.size = size_mb * MIB

    @classmethod
    def found(cls, database: Path, size_mb: int) -> DiskReserve:
        """The reserve as the gateway made it, if there is one (a command run with ``--db``
        does not know the gateway's ``audit.reserve_mb``); else one of ``size_mb``."""
        reserve = cls(database, size_mb)
        try:
            reserve.size = reserve.path.stat().st_size or reserve.size
        except OSError:
            pass
        return reserve

    def ensure(self, *, headroom: int = 0) -> str | None:
        """Allocate the reserve if it is missing (and ``headroom`` bytes would still be free
        after it); the reason when it cannot be, None when it is in place."""
        if not self.size:
            return None
        try:
            if self.path.is_file() and self.path.stat().st_size >= self.size:
                return None
            free = shutil.disk_usage(self.path.parent).free
            if free < self.size + headroom:
                return f"only {free // MIB} MiB free on the disk of {self.path}, too little to hold back {self.size // MIB} MiB"
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                # Blocks really allocated (not a sparse file), so the room is ours.
                os.posix_fallocate(descriptor, 0, self.size)
            finally:
                os.close(descriptor)
        except OSError as exc:
            self.release()
            return f"cannot allocate {self.path}: {exc.strerror or exc}"
        return None

    def release(self) -> bool:
        """Give the room back to the disk; True if there was a reserve."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
