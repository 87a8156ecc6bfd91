"""Small file-system helpers shared by the writers that replace files atomically
(the registry, retrain snapshots)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename in `folder` durable. Best effort: some file systems and
    platforms cannot open or sync a folder."""
    try:
        fd = os.open(Path(folder), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
