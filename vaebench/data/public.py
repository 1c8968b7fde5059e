"""Public data sets by name (data=tcga_pancan, data=tcga_cohort): download once with pooch into the vaebench
cache, then the ordinary Xena preparation and cache.

A file's SHA-256 is checked on every use: the published one where the config gives it (data.sha256), else the
one recorded beside the file on its first download (trust on first use), so a file that changed on the server
or on disk is refused, not silently trained on. pooch downloads into a temporary file and moves it into place
only when it is whole and its hash matches, so a failed or interrupted download leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import logging
import sys
from pathlib import Path
from typing import Optional

import pooch
import requests

from vaebench.atomic import replace_atomically
from vaebench.data.config import PublicDataConfig, XenaDataConfig
from vaebench.errors import UserError

log = logging.getLogger(__name__)

DOWNLOADS = "downloads"  # under the cache root


def local_config(cfg: PublicDataConfig, cache_root: Path) -> XenaDataConfig:
    """cfg as a plain `xena` config whose paths are local files: data.path / data.labels_path when given
    (a copy fetched by hand, checked against data.sha256 / data.labels_sha256 when set), else the downloaded ones."""
    if cfg.path:
        path = cfg.path
        check_local(path, cfg.sha256, "data.path", "data.sha256")
    else:
        path = str(fetch(cfg.url, cfg.sha256, cache_root, "data.path"))
    labels = cfg.labels_path
    if labels is not None:
        check_local(labels, cfg.labels_sha256, "data.labels_path", "data.labels_sha256")
    elif cfg.labels_url:
        labels = str(fetch(cfg.labels_url, cfg.labels_sha256, cache_root, "data.labels_path"))
    plain = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(XenaDataConfig)}
    return XenaDataConfig(**{**plain, "name": "xena", "path": path, "labels_path": labels})


def sha256_of(path: Path) -> str:
    """The file's SHA-256, once per process for a file unchanged since (a sweep worker checks it once)."""
    st = path.stat()
    return _sha256_of(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_local(given: str, sha256: Optional[str], key: str, sha_key: str) -> None:
    """A file given by hand (data.path) checked against the published SHA-256 when the config has one."""
    if sha256 is None:
        return
    path = Path(given).expanduser()
    try:
        actual = sha256_of(path)
    except OSError:  # missing or unreadable: the reader names it (vaebench.data.files.Source.open)
        return
    if actual != sha256:
        raise UserError(f"data file '{given}' ({key}): its SHA-256 is {actual}, not {sha256} ({sha_key}); the file "
                        f"differs from the published one (damaged, cut short, or another version): download it again, "
                        f"or set {sha_key}=null to use it unchecked")


def file_name(url: str) -> str:
    """Cohorts share file names (every one has a HiSeqV2.gz): the URL's hash keeps them apart."""
    return f"{hashlib.sha256(url.encode()).hexdigest()[:10]}-{url.rstrip('/').rsplit('/', 1)[-1]}"


def fetch(url: str, sha256: Optional[str], cache_root: Path, key: str) -> Path:
    """The local copy of url: downloaded on first use, checked against its SHA-256 on every use."""
    pooch.get_logger().setLevel(logging.WARNING)  # its hints name pooch's API, not vaebench's keys
    folder = cache_root / DOWNLOADS
    folder.mkdir(parents=True, exist_ok=True)
    name = file_name(url)
    with open(folder / f".{name}.lock", "a") as lock:  # a sweep's parallel jobs: one downloads, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _fetch(url, sha256, folder, name, key)


def _fetch(url: str, sha256: Optional[str], folder: Path, name: str, key: str) -> Path:
    record = folder / f"{name}.sha256"
    known = sha256 or (record.read_text().strip() if record.is_file() else None)
    copy = folder / name
    if copy.is_file() and known and sha256_of(copy) != known:
        # pooch would download it again over the copy without a word: a copy that changed on disk is named
        # instead, and kept, for the user to look at (a damaged disk, an edit, a partial copy put there by hand).
        raise UserError(f"data: the downloaded copy {copy} of {url} changed on disk (its SHA-256 is "
                        f"{sha256_of(copy)}, not the {'published' if sha256 else 'recorded'} {known}); delete it to "
                        f"download it again, or set {key}=FILE to use a copy of your own")
    if not copy.is_file():
        log.info("downloading %s into %s", url, folder)
    try:
        path = Path(pooch.retrieve(url, known_hash=f"sha256:{known}" if known else None, fname=name, path=folder,
                                   downloader=pooch.HTTPDownloader(progressbar=Progress(url), timeout=60)))
    except (requests.RequestException, OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, ValueError) and "hash" in reason.lower():
            reason = f"its SHA-256 is not {known} (the {'published' if sha256 else 'recorded'} one)"
        kept = "nothing was kept" if not copy.is_file() else f"{copy} is left as it was"
        raise UserError(f"data: cannot fetch {url} ({reason}); {kept}. Download it by hand and set "
                        f"{key}=FILE") from None
    if known is None:
        digest = sha256_of(path)
        replace_atomically(record, lambda tmp: tmp.write_text(digest + "\n"))  # whole or absent
        log.info("%s: SHA-256 %s recorded; later uses are checked against it", url, digest)
    return path


class Progress:
    """The download's progress bar on stderr (pooch drives it like a tqdm bar); silent when stderr is no
    terminal, as in a sweep's workers and in tests."""

    def __init__(self, url: str, stream=sys.stderr):
        self.name, self.stream, self.total, self.done = url.rsplit("/", 1)[-1], stream, 0, 0
        self.shown = stream.isatty()

    def update(self, n: int) -> None:
        self.done += n
        if self.shown:
            share = f" {100 * self.done / self.total:5.1f} %" if self.total else ""
            self.stream.write(f"\rdownloading {self.name}: {self.done / 2**20:8.1f} MiB{share}")
            self.stream.flush()

    def reset(self) -> None:
        self.done = 0

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
