"""Temporary files for atomic writes (write beside, then rename over the target)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable


def temp_beside(path: Path) -> tuple[int, Path]:
    """A new, open file next to `path` (same file system, so a rename is atomic), hidden and unique.

    Created with mode 0666 less the umask, as open() makes any other output: tempfile.mkstemp's 0600 would
    leave result.json unreadable to the other users of a shared sweep directory.
    """
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) a file beside path, then rename it over path: readers see the old file or the whole new one."""
    fd, tmp = temp_beside(path)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except OSError as e:  # a full disk, a read-only directory: named by the file the user asked for
        Path(tmp).unlink(missing_ok=True)
        if e.errno is not None and e.filename in (None, str(tmp), tmp):
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
