"""make demo's closing lines: learned vs collapsed runs of a sweep, from its result files."""

from __future__ import annotations

from vaebench.learned import summary
from vaebench.results import Result, write_result


def test_counts_learned_and_collapsed_runs(tmp_path):
    for i, (ratio, collapsed, units) in enumerate([(0.4, False, 20), (0.99, True, 0), (0.96, False, 5)]):
        run_dir = tmp_path / str(i)
        run_dir.mkdir()
        write_result(run_dir, Result(status="ok", model="vae", optimizer="adam", lr=1e-3, latent_dim=20, seed=i,
                                     loss_mode="elbo", recon_vs_mean=ratio, collapsed=collapsed, active_units=units))
    (tmp_path / "3").mkdir()
    write_result(tmp_path / "3", Result(status="nan", model="vae", optimizer="adam", lr=1e-1, latent_dim=20, seed=0))
    line = summary(tmp_path)
    assert "(elbo): 1 of 3 successful runs beat" in line and "1 collapsed" in line
    assert "best 0.40x" in line and "median active units 5" in line
    assert "no successful run" in summary(tmp_path / "3")
