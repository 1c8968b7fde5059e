"""The result contract between a run and everything that reads it (resume, sweep, aggregate).

`Result` below is the one definition of what a run records: every field once, with its type, whether it
may be null (Optional) and, for metrics, which direction is better. task.py fills one; everything else
reads result.json through `read_result` and names fields through `F` (F.val_recon_mse == "val_recon_mse"),
so a misspelt field is an AttributeError, not a silently empty column.

One `result.json` per run in the run's output dir, written atomically (temp file + rename), so a run
killed at any moment leaves either no result or a whole one. Strict JSON: non-finite numbers become null.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

from vaebench.atomic import temp_beside

SCHEMA = 3  # 2: baselines, collapse diagnostics, latent-score baselines, stopping details (issue 11);
# 3: held-out likelihoods, the learned decoder variance, kl_units_90, the batch size used (issue 20)
RESULT_FILE = "result.json"
METRICS_FILE = "metrics.csv"
DIVERGED = "diverged"  # NaN/Inf in the loss or the weights; a word pandas, R and spreadsheets read as text
STATUSES = ("ok", DIVERGED, "oom", "error")
FAILED = (DIVERGED, "oom", "error")
FINISHED = ("ok", DIVERGED, "oom")  # a rerun would end the same way; `error` runs are retried on resume
# Results written before issue 16 called a diverged run "nan", which pandas and R read as a missing value.
# Every reader maps the old word, so old sweeps still resume and aggregate.
OLD_STATUSES = {"nan": DIVERGED}


def current_status(status: Any) -> Any:
    """A status as this version names it: an old result's "nan" is "diverged"."""
    return OLD_STATUSES.get(status, status) if isinstance(status, str) else status


def _metric(better: str, doc: str, default: Any = None) -> Any:
    return field(default=default, metadata={"better": better, "doc": doc})


def _info(doc: str, default: Any = None) -> Any:
    return field(default=default, metadata={"doc": doc})


LATENT_SCORES = ("latent_ari", "latent_nmi", "latent_silhouette", "latent_probe_balanced_accuracy",
                 "latent_probe_min_recall")
LATENT_REFERENCES = ("untrained", "pca")  # the same scores for an untrained network and for PCA, same k


@dataclass
class Result:
    # What the run was (the grid's axes) and how it ended.
    status: Optional[str] = _info("ok | diverged (NaN/Inf; 'nan' before issue 16) | oom | error")
    model: Optional[str] = _info("vae | iwae | infovae | logcosh")
    optimizer: Optional[str] = _info("adam | sgd | rmsprop")
    lr: Optional[float] = _info("learning rate")
    latent_dim: Optional[int] = _info("latent size")
    seed: Optional[int] = _info("seeds weights, batches and sampling (and the split unless data.split_seed)")
    loss_mode: Optional[str] = _info("the objective: paper | corrected | elbo")
    epochs_run: int = _info("epochs completed", 0)
    converged: bool = _info("the study's rule (or patience) stopped the run before max_epochs", False)
    stop_reason: Optional[str] = _info("converged | patience | max_epochs | diverged | oom | error")
    still_improving: Optional[bool] = _info("the last epoch set a new best validation loss (more epochs may help)")
    best_epoch: Optional[int] = _info("epoch of the lowest validation loss; its numbers are reported "
                                      "under trainer.stopping=patience, the last epoch's otherwise")
    batch_size: Optional[int] = _info("rows per optimizer step (trainer.batch_size; auto resolved for this split)")
    # Reconstruction, validation rows.
    val_recon_mse: Optional[float] = _metric("lower", "mean squared error per gene and sample")
    val_recon: Optional[float] = _metric("lower", "the model's own reconstruction term")
    val_loss: Optional[float] = _metric("lower", "the objective")
    train_loss: Optional[float] = _metric("lower", "the objective, training rows (epoch mean)")
    best_val_recon_mse: Optional[float] = _metric("lower", "lowest val_recon_mse of any epoch")
    # Trivial baselines on the run's own split: did the model learn anything?
    baseline_mean_mse: Optional[float] = _metric("lower", "MSE of predicting each gene's training mean")
    baseline_pca_mse: Optional[float] = _metric("lower", "MSE of PCA with k = latent_dim fitted on the training "
                                                         "rows; null when k >= min(n_train, genes)")
    recon_vs_mean: Optional[float] = _metric("lower", "val_recon_mse / baseline_mean_mse: < 1 learned, ~1 collapsed")
    recon_vs_pca: Optional[float] = _metric("lower", "val_recon_mse / baseline_pca_mse")
    # Held-out likelihood (docs/losses.md 10): comparable across likelihoods and noise levels, unlike the MSE.
    val_nll_is: Optional[float] = _metric("lower", "-log p(x) per gene in nats on the validation rows, importance-"
                                                   "sampled with nll_is_samples draws from the encoder (the IWAE bound "
                                                   "at K); null without a likelihood (nll_note says why)")
    baseline_ppca_nll: Optional[float] = _metric("lower", "-log p(x) per gene of probabilistic PCA with k = latent_dim "
                                                          "fitted on the training rows (exact), validation rows")
    nll_vs_ppca: Optional[float] = _metric("lower", "val_nll_is - baseline_ppca_nll in nats per gene: < 0, the VAE "
                                                    "is the better density than the linear model")
    nll_is_samples: Optional[int] = _info("K, the encoder draws per row behind val_nll_is (trainer.nll_samples)")
    nll_note: Optional[str] = _info("why val_nll_is is null (an objective without a likelihood, or K = 0)")
    decoder_variance: Optional[float] = _info("the learned decoder variance (LogCosh: its squared scale), mean over "
                                              "genes; null when fixed (model.decoder_variance)")
    nll_seconds: Optional[float] = _metric("lower", "seconds the held-out likelihoods took")
    # Test rows (data.test_fraction > 0): held out from training, stopping and selection; null without them.
    test_recon_mse: Optional[float] = _metric("lower", "mean squared error per gene and sample on the test rows")
    test_baseline_mean_mse: Optional[float] = _metric("lower", "MSE on the test rows of predicting each gene's "
                                                               "training mean")
    test_recon_vs_mean: Optional[float] = _metric("lower", "test_recon_mse / test_baseline_mean_mse")
    test_nll_is: Optional[float] = _metric("lower", "val_nll_is on the test rows")
    test_baseline_ppca_nll: Optional[float] = _metric("lower", "baseline_ppca_nll on the test rows")
    # Posterior collapse diagnostics (validation rows).
    active_units: Optional[int] = _metric("higher", "latent dims whose posterior mean varies across validation "
                                                    "rows with variance > 0.01 (Burda et al. 2016)")
    kl_units_90: Optional[int] = _metric("higher", "the fewest latent dims that carry 90 % of the KL: the dims "
                                                   "that hold information, where active_units also counts dims that "
                                                   "only wiggle; 0 when the whole KL is below 1 nat per sample")
    val_kl: Optional[float] = _metric("higher", "KL(q(z|x) || p(z)) per sample in nats, summed over latent dims")
    kl_per_dim: Optional[list] = _info("KL per latent dim in nats, mean over validation rows")
    collapsed: Optional[bool] = _info("recon_vs_mean >= 0.98 or no active unit: the model did not learn")
    collapse_reason: Optional[str] = _info("why `collapsed` is true, in words")
    # Latent space against the data's labels; each with the same score for the references.
    latent_ari: Optional[float] = _metric("higher", "k-means on latent means vs labels: adjusted Rand index")
    latent_nmi: Optional[float] = _metric("higher", "k-means on latent means vs labels: normalised mutual info")
    latent_silhouette: Optional[float] = _metric("higher", "silhouette of the labels in the latent means")
    latent_probe_balanced_accuracy: Optional[float] = _metric("higher", "linear probe, balanced accuracy (the mean "
                                                                        "of the labels' recalls)")
    latent_probe_min_recall: Optional[float] = _metric("higher", "linear probe, the recall of the label it finds "
                                                                 "worst: on imbalanced labels (tumour / normal) the "
                                                                 "small label's")
    latent_probe_recall: Optional[dict] = _info("linear probe, the recall of each label (validation rows)")
    latent_ari_untrained: Optional[float] = _metric("higher", "latent_ari of the untrained network (same seed)")
    latent_nmi_untrained: Optional[float] = _metric("higher", "latent_nmi of the untrained network")
    latent_silhouette_untrained: Optional[float] = _metric("higher", "latent_silhouette of the untrained network")
    latent_probe_balanced_accuracy_untrained: Optional[float] = _metric("higher", "probe of the untrained network")
    latent_probe_min_recall_untrained: Optional[float] = _metric("higher", "probe of the untrained network")
    latent_ari_pca: Optional[float] = _metric("higher", "latent_ari of PCA with k = latent_dim")
    latent_nmi_pca: Optional[float] = _metric("higher", "latent_nmi of PCA with k = latent_dim")
    latent_silhouette_pca: Optional[float] = _metric("higher", "latent_silhouette of PCA with k = latent_dim")
    latent_probe_balanced_accuracy_pca: Optional[float] = _metric("higher", "probe of PCA with k = latent_dim")
    latent_probe_min_recall_pca: Optional[float] = _metric("higher", "probe of PCA with k = latent_dim")
    latent_seconds: Optional[float] = _metric("lower", "seconds the latent scores took")
    baseline_seconds: Optional[float] = _metric("lower", "seconds the baselines and collapse diagnostics took "
                                                         "(near 0 when cached)")
    artifact_error: Optional[str] = _info("an exception while saving model.pt / latent.csv: the result is kept, "
                                          "the files are not (a resume trains the run again for them)")
    scoring_error: Optional[str] = _info("an exception in the scoring after training (baselines, latent scores): "
                                         "the trained result is kept, the scores stay null")
    latent_note: Optional[str] = _info("why the latent scores are null although the data has labels "
                                       "(too few validation rows, a label with fewer than 2, or one label only)")
    pca_note: Optional[str] = _info("why the PCA baseline (baseline_pca_mse, recon_vs_pca, latent_*_pca) is "
                                    "null: latent_dim is not below the genes or the training rows")
    # Failures.
    failed_epoch: Optional[int] = _info("the epoch in which a failed run failed")
    error: Optional[str] = _info("the exception, for diverged / oom / error")
    # Where and how.
    device: Optional[str] = _info("cpu, cuda:0, ...")
    device_name: Optional[str] = _info("the GPU's model (torch.cuda.get_device_name), or the CPU's")
    cuda_version: Optional[str] = _info("the CUDA version torch was built with (GPU runs)")
    cudnn_version: Optional[int] = _info("the cuDNN version torch uses (GPU runs)")
    gpu_shared: Optional[bool] = _info("another job held the same GPU during the run (GPU runs): an oom then may be "
                                       "a neighbour's, so resume retries it")
    device_failed: Optional[bool] = _info("the error broke the device (a fatal CUDA error such as an illegal memory "
                                          "access): its worker ran no further job, the sweep exits 1")
    n_train: Optional[int] = _info("training rows")
    n_val: Optional[int] = _info("validation rows")
    n_test: Optional[int] = _info("test rows (data.test_fraction; 0 = none)")
    n_features: Optional[int] = _info("genes")
    config_hash: Optional[str] = _info("identity of the configuration: resume keeps a finished run with the same")
    data_fingerprint: Optional[str] = _info("identity of the prepared matrix")
    data: Optional[dict] = _info("how the matrix was prepared")
    started_at: Optional[str] = _info("UTC, ISO 8601")
    finished_at: Optional[str] = _info("UTC, ISO 8601")
    host: Optional[str] = _info("machine name")
    versions: Optional[dict] = _info("package versions")
    wall_time_s: Optional[float] = _metric("lower", "seconds of training and scoring")
    timing: Optional[dict] = _info("seconds each part of the job took: imports (a process's first job only), setup, "
                                   "data, upload, epochs, training_other, baselines, nll, latent, scoring_other, "
                                   "test, other, artifacts (run.log's last line adds the result's write)")
    peak_memory_mb: Optional[float] = _metric("lower", "peak memory of the run")
    peak_memory_kind: Optional[str] = _info("peak_rss (CPU) or cuda_max_allocated")
    config: Optional[dict] = _info("the resolved configuration")

    def update(self, **values: Any) -> None:
        for name, value in values.items():
            if name not in FIELDS:
                raise AttributeError(f"not a result field: {name}")
            setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = tuple(f.name for f in dataclasses.fields(Result))
F = SimpleNamespace(**{name: name for name in FIELDS})  # F.status == "status": field names without literals
IDENTITY = ("model", "optimizer", "lr", "latent_dim", "seed")  # a run's place in a grid
REQUIRED = ("status", *IDENTITY)  # a result without these cannot be placed in a table
HIGHER_IS_BETTER = tuple(f.name for f in dataclasses.fields(Result) if f.metadata.get("better") == "higher")
# Numbers that may be null (non-finite, a failed run, no labels): a column of only nulls has no type of its
# own, so readers convert these explicitly.
NULLABLE_NUMBERS = tuple(f.name for f in dataclasses.fields(Result)
                         if "better" in f.metadata and f.name not in ("wall_time_s", "peak_memory_mb")
                         ) + ("failed_epoch", "best_epoch", "batch_size", "nll_is_samples", "decoder_variance")
BOUNDED_SCORES = tuple(n for n in HIGHER_IS_BETTER if n.startswith("latent_"))  # never on a log scale


def latent_field(score: str, reference: Optional[str] = None) -> str:
    """The result field of a latent score, for the trained model (reference None) or a reference."""
    name = score if reference is None else f"{score}_{reference}"
    assert name in FIELDS, name
    return name


# Keys that do not change what a run computes, left out of its identity.
NOT_IDENTITY = ("resume", "trainer.threads", "logger", "jobs_per_gpu", "trainer.save_model", "trainer.save_latent")


def device_identity(config: dict[str, Any], device_type: str) -> dict[str, Any]:
    """The config as its hash sees the device: a run on a GPU is `cuda` whatever was asked (auto, cuda, cuda:1,
    so a sweep resumed on a GPU machine does not keep its CPU results, and the GPU a worker got does not matter).
    A run on CPU keeps the value as written (auto or cpu), so no CPU run's hash changed with this rule."""
    return {**config, "device": "cuda"} if device_type == "cuda" else config


def config_hash(config: dict[str, Any], defaults: Optional[dict[str, Any]] = None) -> str:
    """Identity of a run's configuration (resolved, as plain containers).

    Keys whose value equals `defaults` (the schema's defaults, same nesting) are left out, so a key added
    to the schema later, with a default that keeps the old behaviour, does not change the hash of runs
    that never set it: a resumed sweep still finds them finished.
    """
    ident = json.loads(json.dumps(config, default=str))
    for dotted in NOT_IDENTITY:
        *parents, leaf = dotted.split(".")
        node = ident
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    if defaults is not None:
        ident = _without_defaults(ident, json.loads(json.dumps(defaults, default=str)))
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _without_defaults(values: Any, defaults: Any) -> Any:
    if not isinstance(values, dict) or not isinstance(defaults, dict):
        return values
    out = {}
    for key, value in values.items():
        if key in defaults and not isinstance(value, dict) and value == defaults[key]:
            continue
        out[key] = _without_defaults(value, defaults.get(key, {})) if isinstance(value, dict) else value
    return out


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_result(run_dir: Path, result: Result) -> Path:
    path = Path(run_dir) / RESULT_FILE
    body = _finite({"schema": SCHEMA, **result.to_dict()})
    write_atomic(path, json.dumps(body, indent=2, allow_nan=False) + "\n")
    return path


def read_result(run_dir: Path) -> Optional[dict[str, Any]]:
    """The run's result as a dict (older schemas lack newer fields), or None when it is missing, partial
    or not ours."""
    try:
        result = json.loads((Path(run_dir) / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict):
        return None
    result[F.status] = current_status(result.get(F.status))
    result[F.stop_reason] = current_status(result.get(F.stop_reason))
    if result[F.status] not in STATUSES:
        return None
    return result


def finished_result(run_dir: Path, cfg_hash: str) -> Optional[dict[str, Any]]:
    """The result a resumed sweep may keep: same configuration, and an ending a rerun would repeat (not an
    oom on a GPU another job was using: that one may have been the neighbour's)."""
    result = read_result(run_dir)
    if result and result.get(F.config_hash) == cfg_hash and result[F.status] in FINISHED:
        if not (result[F.status] == "oom" and result.get(F.gpu_shared)):
            return result
    return None


def describe(result: dict[str, Any], status: Optional[str] = None) -> str:
    """One line for a finished run: what it was, how it ended, what it cost, and whether it learned."""
    r = SimpleNamespace(**{name: result.get(name) for name in FIELDS})
    mse = "" if r.val_recon_mse is None else f" val_mse={r.val_recon_mse:.4g}"
    vs_mean = "" if r.recon_vs_mean is None else f" ({r.recon_vs_mean:.2f}x mean predictor)"
    collapsed = f" COLLAPSED: {r.collapse_reason}" if r.collapsed else ""
    # A failed run names the epoch it failed in (its failed_epoch), not the epochs it completed: "oom epochs=0"
    # read as a contradiction of the result's failed_epoch 1.
    epochs = f" in epoch {r.failed_epoch}" if r.failed_epoch else f" epochs={r.epochs_run}"
    return (f"{r.model} {r.optimizer} lr={r.lr:g} latent={r.latent_dim} seed={r.seed} -> {status or r.status}"
            f"{mse}{vs_mean}{epochs} ({r.wall_time_s or 0:.1f} s){collapsed}")
