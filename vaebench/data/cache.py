"""On-disk cache of prepared matrices: `<key>.npy` (float32) + `<key>.json` (names, labels, provenance).

Writers put each file under a unique temporary name and rename it into place, the .json last, so a
reader that finds the .json finds a whole .npy; runs of a sweep that start together may each build the
entry, and the last rename wins with identical content. Readers memory-map the matrix.

The .json holds a CRC-32 of the matrix: a .npy overwritten or damaged since (same shape, other values)
would otherwise train under the clean fingerprint. A process checks each file once (a quarter of a
second for 11,000 x 5,000) and rebuilds an entry that fails. A cache directory that cannot be written
is no error: the matrix built in memory is used, with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from vaebench.atomic import replace_atomically
from vaebench.data import Dataset

log = logging.getLogger(__name__)

FORMAT = 3  # bump when the cache layout changes (2: the matrix's CRC-32; 3: the scaler, for saved models)
_verified: set[tuple] = set()  # (path, inode, size, mtime) of .npy files this process has checked


def checksum(x: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(x)).cast("B"))


def cache_root(cache_dir: Optional[str]) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("VAEBENCH_CACHE"):
        return Path(os.environ["VAEBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vaebench"


def save(root: Path, key: str, data: Dataset) -> None:
    root.mkdir(parents=True, exist_ok=True)

    def write_matrix(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(data.x, dtype=np.float32))

    meta = {
        "format": FORMAT,
        "fingerprint": data.fingerprint,
        "shape": list(data.x.shape),
        "sample_ids": data.sample_ids,
        "gene_names": data.gene_names,
        "labels": data.labels,
        "preprocessing": data.preprocessing,
        "crc32": checksum(np.asarray(data.x, dtype=np.float32)),
        "scaler": None if data.scaler is None else {"dtype": str(data.scaler["low"].dtype),
                                                    **{k: v.tolist() for k, v in data.scaler.items()}},
    }
    replace_atomically(root / f"{key}.npy", write_matrix)
    replace_atomically(root / f"{key}.json", lambda tmp: tmp.write_text(json.dumps(meta)))


def load(root: Path, key: str) -> Optional[Dataset]:
    """The cached entry, memory-mapped; None when absent or unreadable (then it is rebuilt)."""
    meta_path, matrix_path = root / f"{key}.json", root / f"{key}.npy"
    try:
        meta = json.loads(meta_path.read_text())
        x = np.load(matrix_path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if meta.get("format") != FORMAT or list(x.shape) != meta["shape"] or x.dtype != np.float32:
        return None
    st = os.stat(matrix_path)
    identity = (str(matrix_path), st.st_ino, st.st_size, st.st_mtime_ns)
    if identity not in _verified:
        if checksum(x) != meta.get("crc32"):
            log.warning("the cached matrix %s does not match its checksum (changed or damaged since it was "
                        "written): rebuilding it", matrix_path)
            return None
        _verified.add(identity)
    scaler = meta.get("scaler")
    if scaler is not None:  # JSON keeps float64 and float32 numbers exactly; the dtype says which they were
        scaler = {k: np.asarray(scaler[k], dtype=scaler["dtype"]) for k in ("low", "high")}
    return Dataset(x=x, sample_ids=meta["sample_ids"], gene_names=meta["gene_names"], labels=meta["labels"],
                   fingerprint=meta["fingerprint"], preprocessing=meta["preprocessing"], scaler=scaler)


def load_or_build(root: Path, key: str, build: Callable[[], Dataset]) -> Dataset:
    cached = load(root, key)
    if cached is not None:
        return cached
    data = build()
    try:
        save(root, key, data)
    except OSError as e:
        log.warning("cannot write the data cache in %s (%s): using the matrix without caching it; set "
                    "data.cache_dir or $VAEBENCH_CACHE to a writable directory", root, e.strerror or e)
        return data
    log.info("the prepared matrix is cached as %s", root / f"{key}.npy")
    return load(root, key) or data
