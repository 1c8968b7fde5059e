"""A seeded TCGA-like expression matrix, so vaebench runs anywhere with no download.

Each sample belongs to one of `n_types` "cancer types". A type fixes the centre of a low-rank latent
programme (`rank` dimensions); samples scatter around it. Genes read that programme through random
loadings and a saturating non-linearity on top of a gene-specific baseline, like log2(count + 1)
values: a few genes near zero, most between 2 and 12, with gene-specific noise. Each gene is then
min-max scaled to [0, 1] as tybalt scaled TCGA. The result has what the study's data has: strong
low-rank structure, type clusters, bounded heterogeneous marginals.
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np

from vaebench.data import Dataset, cache

log = logging.getLogger(__name__)
GENERATOR_VERSION = 1  # bump when generate() changes its output


def generate(n_samples: int, n_genes: int, n_types: int, rank: int, noise: float, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    f32 = np.float32
    type_share = rng.dirichlet(np.full(n_types, 3.0))
    types = rng.choice(n_types, size=n_samples, p=type_share)
    centres = rng.normal(0.0, 1.5, size=(n_types, rank)).astype(f32)
    programme = centres[types] + 0.6 * rng.standard_normal((n_samples, rank), dtype=f32)

    loadings = rng.standard_normal((rank, n_genes), dtype=f32) / np.sqrt(rank, dtype=f32)
    baseline = rng.normal(6.0, 2.5, size=n_genes).astype(f32)  # mean log2 expression per gene
    amplitude = rng.gamma(2.0, 1.0, size=n_genes).astype(f32)  # how strongly a gene follows the programme
    gene_noise = (noise * rng.gamma(4.0, 0.25, size=n_genes)).astype(f32)

    x = programme @ loadings  # [n_samples, n_genes]
    np.tanh(x, out=x)
    x *= amplitude
    x += baseline
    x += gene_noise * rng.standard_normal((n_samples, n_genes), dtype=f32)
    np.maximum(x, 0.0, out=x)  # log2(count + 1) is never negative

    low, high = x.min(axis=0), x.max(axis=0)
    span = np.where(high > low, high - low, 1.0).astype(f32)
    x -= low
    x /= span
    return Dataset(
        x=x,
        sample_ids=[f"SYN-{i:05d}" for i in range(n_samples)],
        gene_names=[f"G{j:05d}" for j in range(n_genes)],
        labels=[f"type_{t:02d}" for t in types],
        fingerprint="",
        preprocessing={"scaling": "zeroone", "scaler_fit": "all"},
    )


def load(cfg) -> Dataset:
    params = {"n_samples": cfg.n_samples, "n_genes": cfg.n_genes, "n_types": cfg.n_types, "rank": cfg.rank,
              "noise": cfg.noise, "seed": cfg.seed}
    ident = json.dumps({"generator": GENERATOR_VERSION, **params}, sort_keys=True)
    key = "synthetic-" + hashlib.sha256(ident.encode()).hexdigest()[:16]

    def build() -> Dataset:
        log.info("generating synthetic data %s (cached as %s)", params, key)
        data = generate(**params)
        data.fingerprint = key
        data.preprocessing = {"source": "synthetic", **params, **data.preprocessing}
        return data

    return cache.load_or_build(cache.cache_root(cfg.cache_dir), key, build)
