"""Atomic persistence for state that must survive a restart: write a temp file, fsync, rename, fsync dir."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write `data` so that a crash leaves the old file or the new one, never half of either.

    Args:
        mode: permission bits of the new file (default: the temp file's 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable; not every filesystem lets a directory be opened
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError as exc:
        log.debug("directory fsync of %s failed: %s", path.parent, exc)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it is missing; a corrupt file is moved aside and logged."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        aside = path.with_suffix(path.suffix + ".corrupt")
        log.error("state file %s unreadable (%s); moved to %s and starting fresh", path, exc, aside)
        os.replace(path, aside)
        return None


def move_aside(path: Path, what: str, reason: str, starting: str = "fresh") -> None:
    """Rename an unusable state file to `<name>.bad-<ms>` (kept for a post-mortem) and log why; never raises."""
    aside = path.with_name(f"{path.name}.bad-{int(time.time() * 1000)}")
    try:
        os.replace(path, aside)
        log.warning("%s %s unusable (%s); moved to %s, starting %s", what, path, reason, aside, starting)
    except OSError as e:
        log.warning("%s %s unusable (%s) and could not be moved (%s); starting %s", what, path, reason, e, starting)
