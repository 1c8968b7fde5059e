"""Issue 15: the GPU path, checked on CPU with a faked device count and injected failures (the tests that need
a real GPU are in test_cuda.py). Item numbers are the issue's."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from conftest import TINY, UNSCORED, make_config, run_cli
from vaebench import claim, device, machine
from vaebench.config import schema_defaults, validate
from vaebench.errors import UserError
from vaebench.results import F, Result, config_hash, device_identity, finished_result, read_result, write_result
from vaebench.task import run


@pytest.fixture
def fake_gpus(monkeypatch):
    """torch sees `n` GPUs (no CUDA call is made: set_device is a no-op), and the driver's device node is there (the
    torch-free checks, vaebench.machine, then leave the device to torch); the slot this process holds is reset."""
    def fake(n: int) -> None:
        monkeypatch.setattr(machine, "GPU_NODES", (__file__,))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    claim.release_gpu_slot()
    yield fake
    claim.release_gpu_slot()


@pytest.fixture
def fresh_device():
    """The fatal-error state is per process: each test starts, and leaves, with a working device."""
    device._broken = None
    yield
    device._broken = None


# ---- 1: one GPU slot per worker, for its life ------------------------------------------------------------

def _job(args):
    """One job in a pool worker: the device the worker trains on, and when the job ran."""
    slot_dir, per_gpu, seconds = args
    dev = device.pick_device("auto", Path(slot_dir), per_gpu)
    started = time.monotonic()
    time.sleep(seconds)  # unequal lengths, as NaN runs, IWAE and resumed jobs have
    return os.getpid(), dev.index, claim._held_slot.slot, started, time.monotonic()


@pytest.mark.parametrize("gpus, per_gpu, workers", [(3, 1, 3), (2, 2, 4)])
def test_workers_keep_one_slot_and_overlapping_jobs_never_share_one(gpus, per_gpu, workers, fake_gpus, tmp_path):
    fake_gpus(gpus)
    lengths = [0.3, 0.02, 0.02, 0.2, 0.01, 0.15, 0.01, 0.05, 0.25, 0.01, 0.02, 0.1]
    with multiprocessing.get_context("fork").Pool(workers) as pool:  # like joblib: a free worker takes the next job
        done = pool.map(_job, [(str(tmp_path), per_gpu, s) for s in lengths], chunksize=1)
    slots = {}
    for pid, gpu, slot, _, _ in done:
        assert slots.setdefault(pid, (gpu, slot)) == (gpu, slot)  # a worker never changes GPU
    assert len(set(slots.values())) == len(slots)  # no two workers on one slot
    per_gpu_seen = {g: sum(1 for gpu, _ in slots.values() if gpu == g) for g in range(gpus)}
    assert max(per_gpu_seen.values()) <= per_gpu
    for a in done:
        for b in done:
            if a[0] != b[0] and a[3] < b[4] and b[3] < a[4]:  # two workers' jobs overlapping in time
                assert (a[1], a[2]) != (b[1], b[2])


def test_slots_fill_each_gpu_once_before_doubling_up_and_see_their_neighbours(fake_gpus, tmp_path):
    fake_gpus(2)
    names = device.gpu_names()
    with open(tmp_path / claim._slot_file(names[0], 0), "a") as other:  # another worker holds GPU 0's first slot
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert device.pick_device("auto", tmp_path, 2) == torch.device("cuda", 1)
        assert claim._held_slot.slot == 0 and not claim.gpu_slot_shared()  # GPU 1 is its alone
        claim.release_gpu_slot()
        assert device.pick_device("cuda:0", tmp_path, 2) == torch.device("cuda", 0)  # pinned: GPU 0's 2nd slot
        assert claim._held_slot.slot == 1 and claim.gpu_slot_shared()
    assert not claim.gpu_slot_shared()  # the neighbour has gone
    with open(tmp_path / claim._slot_file(names[0], None), "a") as other:  # a worker beyond the slots
        fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)
        assert claim.gpu_slot_shared()
    claim.release_gpu_slot()
    with open(tmp_path / claim._slot_file(names[0], 0), "a") as other:  # every slot taken: share, and say so
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert device.pick_device("cuda:0", tmp_path, 1) == torch.device("cuda", 0)
        assert claim._held_slot.overflow and claim.gpu_slot_shared()


def test_cuda_index_past_the_device_count_is_a_config_error(fake_gpus):
    fake_gpus(2)
    with pytest.raises(UserError, match="config key 'device': cuda:2 asked for, but this machine has 2 GPU"):
        device.pick_device("cuda:2")
    assert device.pick_device("cuda:1") == torch.device("cuda", 1)  # a single run: no slot, the GPU asked for


def test_the_cpu_is_certain_without_torch_only_where_no_gpu_driver_node_exists(monkeypatch, tmp_path):
    monkeypatch.setattr(machine, "GPU_NODES", (str(tmp_path / "nvidiactl"),))
    assert machine.device_type_without_torch("auto") == machine.device_type_without_torch("cpu") == "cpu"
    (tmp_path / "dxg").touch()  # WSL2's GPU bridge: torch may see CUDA there without NVIDIA's control device
    monkeypatch.setattr(machine, "GPU_NODES", (str(tmp_path / "nvidiactl"), str(tmp_path / "dxg")))
    assert machine.device_type_without_torch("auto") is None and machine.device_type_without_torch("cuda:0") is None
    assert machine.device_type_without_torch("cpu") == "cpu"


def test_parallel_jobs_and_jobs_per_gpu(fake_gpus, monkeypatch):
    from vaebench.cli import parallel_jobs

    fake_gpus(2)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: SimpleNamespace(total_memory=(80 if i else 141) * 2**30))
    assert device.jobs_per_gpu(None) == 4  # the smallest GPU fits 10 jobs of 8 GB: capped at 4
    assert parallel_jobs("auto", None) == 8 and parallel_jobs("auto", 3) == 6 and parallel_jobs("cuda:1", 3) == 3
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=6 * 2**30))
    assert device.jobs_per_gpu(None) == 1  # a small GPU: one job each
    monkeypatch.setattr(machine, "available_cpus", lambda: 5)
    assert parallel_jobs("cpu", None) == 5
    with pytest.raises(UserError, match="jobs_per_gpu"):
        validate(make_config("jobs_per_gpu=0"))


# ---- 2: a fatal device error ends the worker cleanly ----------------------------------------------------

def test_fatal_error_writes_the_failing_result_then_the_worker_runs_nothing(tmp_path, fresh_device):
    failed = run(make_config("trainer.fault=fatal"), tmp_path / "a")
    assert failed["status"] == "error" and failed["device_failed"] is True
    assert read_result(tmp_path / "a")[F.device_failed] is True
    assert "illegal memory access" in device.broken() and str(failed["device"]) in device.broken()
    with pytest.raises(device.DeviceFailed, match="illegal memory access"):
        run(make_config(), tmp_path / "b")
    assert not (tmp_path / "b" / "result.json").exists() and not (tmp_path / "b" / "metrics.csv").exists()
    device._broken = None  # a new worker (a rerun) runs it
    assert run(make_config(), tmp_path / "b")["status"] == "ok"


def test_memory_release_never_raises(monkeypatch, fresh_device):
    calls = []

    def broken_cache():
        calls.append(1)
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch.cuda, "empty_cache", broken_cache)
    device.release_memory(torch.device("cuda", 0))  # empty_cache raising: a warning, not an exception
    assert calls == [1]
    device._broken = "cuda:0 failed"
    device.release_memory(torch.device("cuda", 0))  # a broken device is not asked at all
    assert calls == [1]


@pytest.mark.long(9)
def test_sweep_with_a_fatal_error_exits_1_naming_the_device_and_resumes(tmp_path):
    # One worker (joblib n_jobs=1 runs the jobs in the main process, in order): the first job breaks the device.
    grid = ["-m", *UNSCORED, "hydra.launcher.n_jobs=1", "hydra.sweep.dir=sweep"]
    proc = run_cli(*grid, "trainer.fault=fatal,null", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("vaebench: error: cpu (") and "illegal memory access" in last and "1 not run" in last
    assert "Traceback" not in proc.stderr
    (fatal,), (left,) = ([p for p in (tmp_path / "sweep").iterdir() if f"trainer.fault={f}" in p.name]
                         for f in ("fatal", "null"))
    assert read_result(fatal)[F.device_failed] is True and not (left / "result.json").exists()
    again = run_cli(*grid, "trainer.fault=null", cwd=tmp_path)  # the job left behind runs on a rerun
    assert again.returncode == 0 and read_result(left)[F.status] == "ok"


# ---- 3: failures that escaped or were mislabelled -------------------------------------------------------

def test_library_allocation_failures_are_oom_and_sticky_errors_fatal():
    cpu = torch.device("cpu")
    for text in ("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
                 "cuDNN error: CUDNN_STATUS_ALLOC_FAILED", "CUDA out of memory. Tried to allocate 2.00 GiB"):
        assert device.is_out_of_memory(RuntimeError(text)) and not device.is_fatal(RuntimeError(text), cpu)
    for text in ("CUDA error: an illegal memory access was encountered",
                 "CUDA error: device-side assert triggered", "CUDA error: unspecified launch failure"):
        assert device.is_fatal(RuntimeError(text), cpu) and not device.is_out_of_memory(RuntimeError(text))
    assert not device.is_fatal(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), cpu)


def test_an_oom_in_the_upload_is_the_runs_result(monkeypatch, tmp_path):
    import vaebench.task as task

    def upload(data, dev):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 210.00 MiB")

    monkeypatch.setattr(task, "resident_tensor", upload)
    result = run(make_config(), tmp_path)
    assert result["status"] == "oom" and result["epochs_run"] == 0 and read_result(tmp_path)[F.status] == "oom"


def test_an_oom_while_sharing_a_gpu_is_retried_on_resume(tmp_path):
    for shared, kept in ((True, False), (False, True), (None, True)):
        write_result(tmp_path, Result(status="oom", model="vae", optimizer="adam", lr=1e-3, latent_dim=2, seed=0,
                                      config_hash="h", gpu_shared=shared))
        assert (finished_result(tmp_path, "h") is not None) == kept


# ---- 4: threads from the CPUs the process may use; the local Submitit preset passes GPUs through ---------

def test_threads_come_from_the_process_affinity_under_every_launcher(monkeypatch):
    from hydra.types import RunMode

    import vaebench.cli as cli

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})  # of the node's many
    assert machine.available_cpus() == 6

    def launcher(**keys):
        monkeypatch.setattr(cli.HydraConfig, "get", staticmethod(
            lambda: SimpleNamespace(mode=RunMode.MULTIRUN, launcher=OmegaConf.create(keys))))
        return cli.threads_per_job()

    assert launcher(n_jobs=3) == 2  # joblib: the process's CPUs shared among the workers
    assert launcher() == 6  # SLURM without cpus_per_task: the job's CPUs (its affinity), not os.cpu_count()
    assert launcher(cpus_per_task=4) == 4 and launcher(cpus_per_task=16) == 6  # Submitit's CPUs per job


def test_local_submitit_preset_passes_the_gpus(monkeypatch):
    from hydra import compose, initialize_config_dir

    import vaebench.cli  # noqa: F401 - registers the resolvers
    from vaebench.cli import conf_dir
    from vaebench.config import register_configs

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="install vaebench[cluster]")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=local"], return_hydra_config=True)
    assert OmegaConf.select(cfg, "hydra.launcher.gpus_per_node") == 3


# ---- 5: records, and the hash of the device type --------------------------------------------------------

def test_hash_sees_the_device_type_and_no_cpu_hash_changed():
    def hashes(device_setting, kind):  # objective=paper: the default before the calibrated objective
        cfg = make_config("objective=paper", f"device={device_setting}")
        resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        defaults = schema_defaults(validate(cfg))
        return config_hash(device_identity(resolved, kind), defaults), config_hash(resolved, defaults)

    # On CPU the hash is the one before this rule: these are the hashes commit bec218f gave the same configs.
    assert hashes("auto", "cpu")[0] == "8e9cd1c8cfeb3355" and hashes("cpu", "cpu")[0] == "76999f7f442a2699"
    on_gpu = {hashes(s, "cuda")[0] for s in ("auto", "cuda", "cuda:0", "cuda:1")}
    assert len(on_gpu) == 1 and on_gpu.isdisjoint({hashes("auto", "cpu")[0], hashes("cpu", "cpu")[0]})
    assert hashes("auto", "cpu")[0] == config_hash(  # jobs_per_gpu is how, not what: not in the identity
        device_identity(OmegaConf.to_container(make_config("objective=paper", "device=auto", "jobs_per_gpu=3"),
                                               resolve=True, enum_to_str=True), "cpu"),
        schema_defaults(validate(make_config("objective=paper", "device=auto"))))


def test_result_records_the_device_and_cuda_settings_are_ready_before_cuda(tmp_path):
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # set when vaebench.device was imported
    try:  # what a GPU job sets first (runs on CPU too: a typo here would fail the first GPU run)
        device.deterministic_cuda()
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    finally:
        torch.use_deterministic_algorithms(False)
        torch.utils.deterministic.fill_uninitialized_memory = True
        torch.backends.cudnn.deterministic = False
    result = run(make_config(), tmp_path)
    assert result["device"] == "cpu" and result["device_name"]
    assert result["cuda_version"] is None and result["gpu_shared"] is None and result["device_failed"] is None
    assert json.loads((tmp_path / "result.json").read_text())["device_name"] == result["device_name"]


# ---- 6: the whole step compiled (trainer.cuda_graphs; CUDA graphs on a GPU, compiled without them on CPU) ---

@pytest.mark.slow  # compiling the whole step takes tens of seconds per model on CPU
@pytest.mark.parametrize("model, optimizer", [("vae", "adam"), ("infovae", "sgd"), ("logcosh", "rmsprop")])
def test_whole_compiled_step_trains_close_to_eager(model, optimizer, tmp_path):
    common = (f"model={model}", f"optimizer={optimizer}", "trainer.max_epochs=3", "trainer.latent_metrics=false")
    eager = run(make_config(*common), tmp_path / "eager")
    whole = run(make_config(*common, "trainer.cuda_graphs=true"), tmp_path / "whole")
    assert whole["status"] == "ok" and whole["epochs_run"] == eager["epochs_run"]
    # Float tolerance, not bits: inductor's fused kernels, and Adam with a float32 tensor learning rate. Adam's
    # first steps are about lr x sign(gradient), so a last-bit change of a near-zero gradient moves a weight by
    # 2 lr: measured 1e-3 to 2e-3 on the VAE's validation loss (its KL), 5e-6 on the reconstruction.
    assert whole["val_recon_mse"] == pytest.approx(eager["val_recon_mse"], rel=1e-3)
    for key in ("val_loss", "train_loss"):  # infovae: gradient clipping inside the step
        assert whole[key] == pytest.approx(eager[key], rel=1e-2), key


def test_cuda_is_checked_before_a_sweep_only_where_its_jobs_run():
    """A SLURM sweep is submitted from a machine (a login node) that need not see the nodes' GPUs."""
    from hydra import compose, initialize_config_dir

    from vaebench.cli import conf_dir
    from vaebench.config import register_configs
    from vaebench.sweep import devices_seen_here

    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        launchers = {name: compose(config_name="config", overrides=[f"hydra/launcher={name}"],
                                   return_hydra_config=True).hydra.launcher
                     for name in ("parallel", "local", "slurm", "slurm_cpu")}
    assert {name: devices_seen_here(cfg) for name, cfg in launchers.items()} == {
        "parallel": True, "local": True, "slurm": False, "slurm_cpu": False}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_sweep_asking_for_cuda_without_it_stops_before_any_job(tmp_path):
    proc = run_cli("-m", *TINY, "device=cuda", "seed=0,1", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert proc.returncode == 2 and "config key 'device': cuda asked for, but CUDA is not available" in proc.stderr
    assert not list(tmp_path.rglob("result.json"))
