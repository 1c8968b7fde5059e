"""GPU checks: run with `make test-cuda` on a machine with CUDA (the target fails where torch has no CUDA);
skipped with a reason elsewhere. The CPU-side checks of the GPU path (slots, fatal errors, labels) are in
test_gpu_path.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY, make_config, run_cli
from vaebench.config import validate
from vaebench.models import build_model
from vaebench.task import run
from vaebench.train import forward_loss

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")]
two_gpus = pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.device_count() < 2, reason="needs 2 GPUs")
ON_GPU = [t for t in TINY if not t.startswith("device=")]  # TINY without its device=cpu
TESTS = str(Path(__file__).resolve().parent)


@pytest.mark.parametrize("model", ["vae", "iwae", "infovae", "logcosh"])
def test_each_model_trains_on_the_gpu(model, tmp_path):
    result = run(make_config(f"model={model}", "device=auto"), tmp_path)
    assert result["status"] == "ok" and result["device"].startswith("cuda")
    assert result["peak_memory_kind"] == "cuda_max_allocated" and result["peak_memory_mb"] > 0
    assert result["device_name"] == torch.cuda.get_device_name(0)
    assert result["cuda_version"] == torch.version.cuda and result["cudnn_version"] == torch.backends.cudnn.version()


def test_same_seed_same_bits_on_the_gpu(tmp_path):
    a = run(make_config("device=cuda", "seed=3"), tmp_path / "a")
    b = run(make_config("device=cuda", "seed=3"), tmp_path / "b")
    assert a["val_recon_mse"] == b["val_recon_mse"] and a["train_loss"] == b["train_loss"]


RUN_ONE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import torch
from conftest import make_config
from vaebench.task import run
result = run(make_config(*sys.argv[3:]), Path(sys.argv[2]))
contexts = [torch._C._cuda_hasPrimaryContext(i) for i in range(torch.cuda.device_count())]
print(json.dumps({"result": result, "contexts": contexts}))
"""


def run_in_process(out: Path, *overrides: str) -> dict:
    """One run in a fresh process: its result, and which GPUs it created a CUDA context on."""
    proc = subprocess.run([sys.executable, "-c", RUN_ONE, TESTS, str(out), *overrides], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_same_seed_same_bits_across_two_processes(tmp_path):
    overrides = ("device=cuda", "seed=7", "model=infovae", "trainer.max_epochs=3")
    a, b = (run_in_process(tmp_path / d, *overrides)["result"] for d in ("a", "b"))
    for key in ("val_recon_mse", "val_loss", "train_loss", "best_val_recon_mse", "epochs_run"):
        assert a[key] == b[key], key
    strip = lambda p: [line.rsplit(",", 1)[0] for line in p.read_text().splitlines()]  # noqa: E731 - not seconds
    header = (tmp_path / "a" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[-1] == "seconds"
    assert strip(tmp_path / "a" / "metrics.csv") == strip(tmp_path / "b" / "metrics.csv")


@two_gpus
def test_cuda_1_leaves_gpu_0_without_a_context(tmp_path):
    got = run_in_process(tmp_path, "device=cuda:1")
    assert got["result"]["status"] == "ok" and got["result"]["device"] == "cuda:1"
    assert got["contexts"][0] is False and got["contexts"][1] is True


def test_cuda_index_past_the_gpus_exits_2(tmp_path):
    proc = run_cli(*ON_GPU, f"device=cuda:{torch.cuda.device_count()}", cwd=tmp_path)
    assert proc.returncode == 2 and "config key 'device'" in proc.stderr and "GPU(s)" in proc.stderr


def test_a_real_oom_is_recorded_and_the_next_job_of_the_process_is_ok(tmp_path):
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(256 * 2**20 / total, 0)  # 256 MB for this process's tensors
    try:
        big = run(make_config("device=cuda:0", "data.n_genes=5000", "model.hidden_dims=[8192,8192]"),
                  tmp_path / "big")  # 5000 x 8192 + 8192 x 8192 weights: 430 MB
        small = run(make_config("device=cuda:0"), tmp_path / "small")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
    assert big["status"] == "oom" and "out of memory" in big["error"] and not big["device_failed"]
    assert small["status"] == "ok"


def test_a_sweep_keeps_one_gpu_per_worker(tmp_path):
    n = torch.cuda.device_count()
    proc = run_cli("-m", *ON_GPU, "device=auto", "seed=0,1,2,3,4,5", "jobs_per_gpu=1", f"hydra.launcher.n_jobs={n}",
                   "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(p.read_text()) for p in (tmp_path / "sweep").rglob("result.json")]
    assert len(results) == 6 and all(r["status"] == "ok" for r in results)
    devices = {r["device"] for r in results}
    assert devices <= {f"cuda:{i}" for i in range(n)} and (n == 1 or len(devices) > 1)
    assert not any(r["gpu_shared"] for r in results)  # one worker per GPU: no neighbour
    assert len(list((tmp_path / "sweep" / ".vaebench-gpu-slots").iterdir())) <= n  # one slot file per GPU


@two_gpus
def test_two_gpus_with_two_workers_use_both(tmp_path):
    proc = run_cli("-m", *ON_GPU, "device=auto", "seed=0,1,2,3", "jobs_per_gpu=1", "hydra.launcher.n_jobs=2",
                   "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    devices = {json.loads(p.read_text())["device"] for p in (tmp_path / "sweep").rglob("result.json")}
    assert devices == {"cuda:0", "cuda:1"}


def test_jobs_sharing_a_gpu_say_so(tmp_path):
    proc = run_cli("-m", *ON_GPU, "device=cuda:0", "seed=0,1,2,3", "jobs_per_gpu=2", "hydra.launcher.n_jobs=2",
                   "trainer.max_epochs=20", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(p.read_text()) for p in (tmp_path / "sweep").rglob("result.json")]
    assert all(r["status"] == "ok" and r["device"] == "cuda:0" for r in results)
    assert any(r["gpu_shared"] for r in results)  # two workers on one GPU at once


def cuda_first_step(model_name: str, compile: bool, amp: bool) -> tuple[dict[str, float], torch.Tensor]:
    cfg = validate(make_config(f"model={model_name}", "device=cuda"))
    torch.manual_seed(0)
    model = build_model(cfg.model, 40, cfg.latent_dim).cuda()
    x = torch.rand(64, 40, generator=torch.Generator().manual_seed(1)).cuda()
    torch.manual_seed(5)
    terms = forward_loss(model, compile, amp)(x, 0.1)
    terms["loss"].backward()
    return {k: v.item() for k, v in terms.items()}, torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("model", ["vae", "iwae", "infovae", "logcosh"])
@pytest.mark.parametrize("compile, amp, terms_rtol, grad_rtol", [(True, False, 1e-4, 1e-4), (False, True, 2e-3, 5e-2),
                                                                  (True, True, 2e-3, 5e-2)])
def test_compile_and_amp_on_cuda_stay_within_the_cpu_tolerances(model, compile, amp, terms_rtol, grad_rtol):
    # CUDA autocast keeps more ops in float32 than CPU autocast; the tolerances measured on CPU must hold here too
    eager_terms, eager_grad = cuda_first_step(model, False, False)
    terms, grad = cuda_first_step(model, compile, amp)
    for k in terms:
        assert terms[k] == pytest.approx(eager_terms[k], rel=terms_rtol, abs=1e-6), k
    assert float((grad - eager_grad).norm() / eager_grad.norm()) < grad_rtol


@pytest.mark.parametrize("model, optimizer", [("vae", "adam"), ("infovae", "sgd"), ("logcosh", "rmsprop")])
def test_cuda_graphs_train_close_to_eager(model, optimizer, tmp_path):
    # trainer.cuda_graphs on a GPU: the whole step replayed as CUDA graphs; the CPU test's tolerances
    common = (f"model={model}", f"optimizer={optimizer}", "device=cuda", "trainer.max_epochs=3",
              "trainer.latent_metrics=false")
    eager = run(make_config(*common), tmp_path / "eager")
    graphs = run(make_config(*common, "trainer.cuda_graphs=true"), tmp_path / "graphs")
    assert graphs["status"] == "ok" and graphs["epochs_run"] == eager["epochs_run"]
    assert graphs["val_recon_mse"] == pytest.approx(eager["val_recon_mse"], rel=1e-3)
    for key in ("val_loss", "train_loss"):
        assert graphs[key] == pytest.approx(eager[key], rel=1e-2), key


def test_infovae_latent_200_batch_1000_fits_in_little_memory(tmp_path):
    # The study lost these runs to out-of-memory on a 4 GB GPU; the MMD is O(batch^2) here.
    result = run(make_config("model=infovae", "latent_dim=200", "trainer.batch_size=1000", "data.n_samples=2200",
                             "data.n_genes=5000", "trainer.max_epochs=1", "device=cuda"), tmp_path)
    assert result["status"] == "ok" and result["peak_memory_mb"] < 1024


def test_peak_memory_is_reset_between_jobs_of_one_process(tmp_path):
    big = run(make_config("model=infovae", "latent_dim=200", "trainer.batch_size=1000", "data.n_samples=2200",
                          "data.n_genes=2000", "device=cuda"), tmp_path / "big")
    small = run(make_config("data.n_samples=2200", "data.n_genes=2000", "trainer.batch_size=64", "device=cuda"),
                tmp_path / "small")
    assert small["peak_memory_mb"] < big["peak_memory_mb"]
