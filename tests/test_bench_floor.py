"""The bench's matmul floor has the shapes of the model it stands for (bench/matmul_floor.py)."""

import sys
from pathlib import Path

import torch

from vaebench.models import build_model
from vaebench.models.iwae import IWAEConfig
from vaebench.models.vae import VAEConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from matmul_floor import Floor  # noqa: E402


def flops(floor: Floor) -> int:
    return sum(a.shape[0] * a.shape[1] * b.shape[1] for a, b in floor.ops)


def test_iwae_floor_decodes_num_samples_rows_per_input_row():
    cpu = torch.device("cpu")
    genes, latent, batch = 40, 4, 8
    vae = Floor(build_model(VAEConfig(hidden_dims=[16]), genes, latent), [batch], [], cpu)
    iwae = Floor(build_model(IWAEConfig(hidden_dims=[16], num_samples=5), genes, latent), [batch], [], cpu)
    decoder_rows = sorted({a.shape[0] for a, _ in iwae.ops})
    assert batch * 5 in decoder_rows
    assert flops(iwae) > 2 * flops(vae)
