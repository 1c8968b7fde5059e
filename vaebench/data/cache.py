"""On-disk cache of prepared matrices: `<key>.npy` (float32) + `<key>.json` (names, labels, provenance).

Writers put each file under a unique temporary name and rename it into place, the .json last, so a
reader that finds the .json finds a whole .npy; runs of a sweep that start together may each build the
entry, and the last rename wins with identical content. Readers memory-map the matrix.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from vaebench.data import Dataset

FORMAT = 1  # bump when the cache layout changes


def cache_root(cache_dir: Optional[str]) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("VAEBENCH_CACHE"):
        return Path(os.environ["VAEBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vaebench"


def _replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    }
    _replace_atomically(root / f"{key}.npy", write_matrix)
    _replace_atomically(root / f"{key}.json", lambda tmp: tmp.write_text(json.dumps(meta)))


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
    return Dataset(x=x, sample_ids=meta["sample_ids"], gene_names=meta["gene_names"], labels=meta["labels"],
                   fingerprint=meta["fingerprint"], preprocessing=meta["preprocessing"])


def load_or_build(root: Path, key: str, build: Callable[[], Dataset]) -> Dataset:
    cached = load(root, key)
    if cached is not None:
        return cached
    data = build()
    save(root, key, data)
    return load(root, key) or data
