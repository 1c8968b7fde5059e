"""data=tcga_pancan / data=tcga_cohort: fetched by name from a local HTTP server on 127.0.0.1 serving small files."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import composed
from vaebench.data import load_dataset
from vaebench.data.public import DOWNLOADS
from vaebench.errors import UserError

SAMPLES = [f"TCGA-{i:02d}-0000-01" for i in range(12)]
TYPES = ["BRCA", "LUAD", "KIRC"] * 4


def xena_bytes() -> bytes:
    x = np.random.default_rng(0).uniform(0, 10, size=(30, len(SAMPLES)))  # genes x samples
    lines = ["\t".join(["sample", *SAMPLES])]
    lines += ["\t".join([f"G{g}|{g}", *(f"{v:.6g}" for v in row)]) for g, row in enumerate(x)]
    return gzip.compress(("\n".join(lines) + "\n").encode())


def clinical_bytes() -> bytes:
    rows = ["sampleID\t_primary_disease\tsample_type"] + [f"{s}\t{t}\tPrimary Tumor" for s, t in zip(SAMPLES, TYPES)]
    return gzip.compress(("\n".join(rows) + "\n").encode())


MATRIX, CLINICAL = xena_bytes(), clinical_bytes()


class Files(http.server.BaseHTTPRequestHandler):
    """/HiSeqV2.gz and /clinical.gz whole; /cut/HiSeqV2.gz announces its full length, sends half and hangs up."""

    requests: list[str] = []

    def do_GET(self):
        Files.requests.append(self.path)
        body = {"/HiSeqV2.gz": MATRIX, "/cut/HiSeqV2.gz": MATRIX, "/clinical.gz": CLINICAL}.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.path.startswith("/cut/") else body)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Files.requests = []
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def data_config(*overrides: str):
    return OmegaConf.to_object(composed(*overrides).data)


def pancan(base: str, cache: Path, *more: str):
    return data_config("data=tcga_pancan", f"data.url={base}/HiSeqV2.gz", f"data.labels_url={base}/clinical.gz",
                       f"data.cache_dir={cache}", "data.n_genes=10", *more)


def downloads(cache: Path) -> list[str]:
    folder = cache / DOWNLOADS
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def test_download_then_prepare_then_use_the_copy_offline(server, tmp_path):
    httpd, base = server
    cache = tmp_path / "cache"
    data = load_dataset(pancan(base, cache))
    assert data.x.shape == (12, 10) and data.labels == TYPES and data.sample_ids == sorted(SAMPLES)
    files = downloads(cache)
    assert len(files) == 4  # the two files and their recorded SHA-256
    matrix_file = next(f for f in files if f.endswith("HiSeqV2.gz"))
    assert (cache / DOWNLOADS / matrix_file).read_bytes() == MATRIX
    assert (cache / DOWNLOADS / f"{matrix_file}.sha256").read_text().strip() == hashlib.sha256(MATRIX).hexdigest()

    httpd.shutdown()  # offline: the copies are used, checked against the recorded hashes
    httpd.server_close()
    again = load_dataset(pancan(base, cache, "data.n_genes=5"))  # a new preparation: read from the copy again
    assert again.x.shape == (12, 5) and Files.requests == ["/HiSeqV2.gz", "/clinical.gz"]


def test_a_file_whose_checksum_does_not_match_is_refused_and_not_kept(server, tmp_path):
    _, base = server
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as e:
        load_dataset(pancan(base, cache, "data.sha256=" + "ab" * 32))
    message = str(e.value)
    assert f"{base}/HiSeqV2.gz" in message and "SHA-256" in message and "data.path=FILE" in message
    assert "\n" not in message and downloads(cache) == []


def test_interrupted_download_leaves_nothing(server, tmp_path):
    _, base = server
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as e:
        load_dataset(pancan(base, cache, f"data.url={base}/cut/HiSeqV2.gz"))
    assert f"{base}/cut/HiSeqV2.gz" in str(e.value)
    assert downloads(cache) == [] and not list((cache / DOWNLOADS).glob("tmp*"))
    assert not [p for p in cache.rglob("*") if p.suffix in (".npy", ".json")]  # no prepared matrix either


def test_offline_without_a_copy_names_the_url_and_data_path(tmp_path):
    closed = http.server.HTTPServer(("127.0.0.1", 0), Files)  # a port that nothing listens on once closed
    base = f"http://127.0.0.1:{closed.server_address[1]}"
    closed.server_close()
    with pytest.raises(UserError) as e:
        load_dataset(pancan(base, tmp_path / "cache"))
    assert f"cannot fetch {base}/HiSeqV2.gz" in str(e.value) and "data.path=FILE" in str(e.value)
    assert downloads(tmp_path / "cache") == []


def test_a_copy_fetched_by_hand_needs_no_download(tmp_path):
    matrix, clinical = tmp_path / "HiSeqV2.gz", tmp_path / "clinical.gz"
    matrix.write_bytes(MATRIX)
    clinical.write_bytes(CLINICAL)
    cfg = pancan("http://127.0.0.1:9", tmp_path / "cache", f"data.path={matrix}", f"data.labels_path={clinical}")
    data = load_dataset(cfg)
    assert data.x.shape == (12, 10) and data.labels == TYPES and downloads(tmp_path / "cache") == []


def test_a_cohort_by_name_builds_its_urls():
    cfg = data_config("data=tcga_cohort", "data.cohort=LUAD")
    assert cfg.url.endswith("/TCGA.LUAD.sampleMap/HiSeqV2.gz")
    assert cfg.labels_url.endswith("/TCGA.LUAD.sampleMap/LUAD_clinicalMatrix.gz") and cfg.label_column == "sample_type"
