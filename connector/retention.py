"""Retention: what `watch` removes once it is older than `retention.days`.

Archived and failed files and their reports go (`remove_old`); the ledger drops the bodies of
work acknowledged long ago (`Ledger.compact`), since the catalogue keeps the last item of
every variant. Nothing waiting or unsent is ever touched.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def remove_old(folder: Path, before: float) -> int:
    """Remove the files under `folder` last modified before `before` (epoch seconds), then the
    folders left empty; returns how many files went. A folder that is not there is nothing to do."""
    removed = 0
    if not folder.is_dir():
        return 0
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            path = Path(root) / name
            with contextlib.suppress(FileNotFoundError):
                if path.is_symlink() or path.stat().st_mtime >= before:
                    continue
                path.unlink()
                removed += 1
        for name in dirs:
            with contextlib.suppress(OSError):  # not empty, or gone: left as it is
                (Path(root) / name).rmdir()
    return removed
