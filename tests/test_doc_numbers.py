"""docs/doc_numbers.py, fast: its marked passages, its parsing, and each passage on a small fake demo.

The full check (the docs against a fresh demo) needs the demo run: `make docs-check`, not `make test`.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys

import pytest

from conftest import REPO
from vaebench.results import Result, write_result

spec = importlib.util.spec_from_file_location("doc_numbers", REPO / "docs" / "doc_numbers.py")
doc_numbers = sys.modules["doc_numbers"] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
spec.loader.exec_module(doc_numbers)


def test_fill_replaces_only_the_marked_bodies_and_keeps_their_layout():
    text = ("Before <!-- numbers: a -->old 1<!-- /numbers --> after.\n"
            "<!-- numbers: b -->\n| old | table |\n<!-- /numbers -->\nrest\n")
    filled = doc_numbers.fill(text, {"a": "new 1", "b": "| new |"})
    assert filled == ("Before <!-- numbers: a -->new 1<!-- /numbers --> after.\n"
                      "<!-- numbers: b -->\n| new |\n<!-- /numbers -->\nrest\n")
    assert doc_numbers.fill(filled, {"a": "new 1", "b": "| new |"}) == filled  # a second run changes nothing
    with pytest.raises(SystemExit, match="marks a passage 'a' that no function writes"):
        doc_numbers.fill(text, {"b": ""}, "x.md")


def test_every_marked_passage_has_a_function_and_every_function_a_place():
    used = [name for doc in doc_numbers.DOCS for name in doc_numbers.names_in((REPO / doc).read_text())]
    assert set(used) == set(doc_numbers.PASSAGES), set(used) ^ set(doc_numbers.PASSAGES)


def fake_demo(root):
    """Three sweeps with known values: SGD worse than Adam, lr 1e-3 better than 1e-2, seeds close together."""
    for sweep, models, seeds in (("paper", ["vae", "iwae"], [0]), ("calibrated", ["vae", "iwae"], [0]),
                                 ("seeds", ["vae"], [0, 1, 2])):
        for model, opt, lr, z, seed in itertools.product(models, ["adam", "sgd"], [1e-3, 1e-2], [10, 50], seeds):
            ratio = (1.0 if sweep == "paper" else 0.5) * (1.2 if opt == "sgd" else 1.0) * (1.3 if lr == 1e-2 else 1.0)
            ratio *= 1 + 0.001 * seed + 0.01 * (z == 50)
            run = root / sweep / f"{model}_{opt}_{lr}_{z}_{seed}"
            run.mkdir(parents=True)
            write_result(run, Result(status="ok", model=model, optimizer=opt, lr=lr, latent_dim=z, seed=seed,
                                     epochs_run=20 if opt == "sgd" else 5, converged=True, val_recon_mse=0.1 * ratio,
                                     recon_vs_mean=ratio, collapsed=sweep == "paper", config_hash=run.name))
    return doc_numbers.load(root)


def test_each_passage_reads_the_demo(tmp_path):
    demo = fake_demo(tmp_path)
    text = {name: write(demo) for name, write in doc_numbers.PASSAGES.items()}
    assert text["demo_learned"].startswith("under the study's objective 16 of 16 runs are `collapsed` (median 1.")
    assert "under the default objective 16 of 16 beat it" in text["demo_learned"]
    # the README's figure is the default objective's (the fake demo's "calibrated" sweep: none collapsed)
    assert text["vae_figure"].startswith("None of the 8 runs is marked collapsed. Adam at lr 1e-3, latent 10 is the "
                                         "best cell (0.500x the mean predictor); SGD is the worst at every learning "
                                         "rate (0.606–0.788)")
    assert "SGD trains longest (mean 20.0 epochs, against 5.0 for Adam)" in text["vae_figure"]
    assert text["seeds_learned"] == "24 of 24 runs beat the mean predictor by 5 % or more, 0 are marked collapsed"
    assert text["seeds_grid"] == "24 runs: 2 optimizers x 2 learning rates x 2 latent sizes x 3 seeds, 24 ok"
    assert text["seeds_best"].splitlines()[2].startswith("| Adam, lr 1e-3, latent 10 | 0.50")
    assert text["anova_shares"].startswith("On the demo (`make demo`, the default objective, recon_vs_mean), partial η² is ")
    assert "for optimizer x lr" in text["anova_shares"]
    assert text["demo_failures"] == "The demo grid has no failures, so none appear above"
    assert text["seeds_robust"].splitlines()[2:] == ["| Adam | 4 | 0 | 0.501 | 2 |", "| SGD | 4 | 0 | 0.601 | 0 |"]
    assert text["seeds_spread"].startswith("seed sd 0.0010 against a configuration sd of 0.171")
    assert "latent_dim 0.010 (10x)" in text["seeds_spread"] and text["seeds_spread"].endswith("takes 1 seed each, with the seed sd measured here")
