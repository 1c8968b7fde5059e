"""Model construction and forward passes: shapes, layer layout, input checks, build_model from configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from vaebench.errors import UserError
from vaebench.models import IWAEConfig, InfoVAEConfig, Kernel, LogCoshConfig, LossMode, VAEConfig
from vaebench.models import IWAE, MODELS, VAE, BaseVAE, ForwardOutput, InfoVAE, LogCoshVAE, build_model

B, F, D = 6, 12, 3
ALL = [VAE, IWAE, InfoVAE, LogCoshVAE]
FLAT = [VAE, InfoVAE, LogCoshVAE]  # one latent sample per row
CONF_MODEL = Path(__file__).resolve().parents[1] / "conf" / "model"


def data(b=B, f=F, seed=0):
    return torch.rand(b, f, generator=torch.Generator().manual_seed(seed))


def linear_sizes(seq: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in seq.modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("cls", FLAT)
def test_forward_shapes(cls):
    torch.manual_seed(0)
    out = cls(F, D, hidden_dims=[8])(data())
    assert isinstance(out, ForwardOutput)
    assert out.recon.shape == (B, F)
    assert out.mu.shape == out.log_var.shape == out.z.shape == (B, D)
    assert ((out.recon > 0) & (out.recon < 1)).all()  # sigmoid output


@pytest.mark.parametrize("s", [1, 3, 5])
def test_iwae_forward_shapes_and_independent_draws(s):
    torch.manual_seed(0)
    m = IWAE(F, D, hidden_dims=[8], num_samples=s)
    out = m(data())
    assert out.recon.shape == (B, s, F)
    assert out.z.shape == (B, s, D)
    assert out.mu.shape == out.log_var.shape == (B, D)  # one posterior per row
    assert ((out.recon > 0) & (out.recon < 1)).all()
    if s > 1:  # S independent draws per row, not one draw repeated
        assert not torch.allclose(out.z[:, 0], out.z[:, 1])
        assert not torch.allclose(out.recon[:, 0], out.recon[:, 1])


def test_iwae_decoder_sees_all_rows_as_one_batch():
    # The decoder (with its BatchNorm) runs on the B*S rows at once: redoing that by hand matches.
    torch.manual_seed(0)
    m = IWAE(F, D, hidden_dims=[8], num_samples=4).eval()
    out = m(data())
    assert torch.allclose(m.decode(out.z.reshape(-1, D)).view(B, 4, F), out.recon)
    m.train()
    torch.manual_seed(1)
    out = m(data())
    assert torch.allclose(m.decode(out.z.reshape(-1, D)).view(B, 4, F), out.recon, atol=1e-6)
    per_sample = torch.stack([m.decode(out.z[:, j]) for j in range(4)], 1)  # BatchNorm over B rows only
    assert not torch.allclose(per_sample, out.recon, atol=1e-6)


@pytest.mark.parametrize("cls", ALL)
def test_sampling_stays_on_in_eval_mode(cls):
    # The study's code samples z in validation too, so its validation loss is stochastic.
    m = cls(F, D, hidden_dims=[8]).eval()
    x = data()
    with torch.no_grad():
        torch.manual_seed(0)
        first = m(x)
        torch.manual_seed(1)
        second = m(x)
    assert torch.equal(first.mu, second.mu)
    assert not torch.allclose(first.z, second.z)


@pytest.mark.parametrize("cls", ALL)
def test_deeper_hidden_layers_build_mirror_and_train(cls):
    torch.manual_seed(0)
    m = cls(F, D, hidden_dims=[64, 32])
    assert linear_sizes(m.encoder) == [(F, 64), (64, 32)]
    assert (m.fc_mu.in_features, m.fc_mu.out_features) == (32, D)
    assert (m.fc_log_var.in_features, m.fc_log_var.out_features) == (32, D)
    assert linear_sizes(m.decoder) == [(D, 32), (32, 64), (64, F)]
    assert [bn.num_features for bn in m.encoder.modules() if isinstance(bn, nn.BatchNorm1d)] == [64, 32]
    assert [bn.num_features for bn in m.decoder.modules() if isinstance(bn, nn.BatchNorm1d)] == [32, 64]
    assert isinstance(list(m.decoder.modules())[-1], nn.Sigmoid)
    x = data()
    terms = m.loss(m(x), x, 0.1)
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    first = m.encoder[0][0].weight.grad
    assert first is not None and torch.isfinite(first).all() and first.abs().sum() > 0


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("bad", [(B, F + 1), (B, F - 1), (F,), (2, B, F)])
def test_wrong_input_shape_is_a_value_error_naming_the_sizes(cls, bad):
    m = cls(F, D, hidden_dims=[8])
    with pytest.raises(ValueError) as err:
        m(torch.rand(*bad))
    msg = str(err.value)
    assert str(F) in msg and str(list(bad)) in msg


@pytest.mark.parametrize("mode", ["paper", "corrected"])
@pytest.mark.parametrize("cls", ALL)
def test_loss_terms_from_a_forward_pass(cls, mode):
    torch.manual_seed(0)
    m = cls(F, D, hidden_dims=[8], loss_mode=mode)
    x = data()
    out = m(x)
    terms = m.loss(out, x, 0.2)
    assert {"loss", "recon", "recon_mse", "kld"} <= set(terms)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in terms.values())
    target = x.unsqueeze(1).expand_as(out.recon) if cls is IWAE else x
    assert torch.allclose(terms["recon_mse"], (out.recon - target).pow(2).mean())
    assert terms["kld"] > 0  # +KL (#68)
    terms["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_constructor_checks_run_once_in_the_config():
    """The range checks live in each model's config; a model built from settings runs them too."""
    with pytest.raises(UserError, match="loss_mode"):
        VAE(F, D, hidden_dims=[8], loss_mode="faithful")
    with pytest.raises(UserError, match="alpha"):
        InfoVAE(F, D, hidden_dims=[8], alpha=0.5)
    with pytest.raises(UserError, match="kernel"):
        InfoVAE(F, D, hidden_dims=[8], kernel="gaussian")
    with pytest.raises(UserError, match="num_samples"):
        IWAE(F, D, hidden_dims=[8], num_samples=0)
    InfoVAE(F, D, hidden_dims=[8], alpha=0.0)  # alpha <= 0 is allowed
    with pytest.raises(UserError, match="likelihood"):  # only the ELBO has a likelihood to choose
        VAE(F, D, likelihood="bernoulli")
    with pytest.raises(UserError, match="likelihood"):
        LogCoshVAE(F, D, loss_mode="elbo", likelihood="bernoulli")


# --------------------------------------------------------------------------------------------------
# build_model from the typed configs.

def test_models_match_the_config_groups():
    assert set(MODELS) == {p.stem for p in CONF_MODEL.glob("*.yaml")}
    for name, schema in {"vae": VAEConfig, "iwae": IWAEConfig, "infovae": InfoVAEConfig,
                         "logcosh": LogCoshConfig}.items():
        assert schema().name == name


@pytest.mark.parametrize(("cfg", "cls"), [(VAEConfig(), VAE), (IWAEConfig(), IWAE), (InfoVAEConfig(), InfoVAE),
                                          (LogCoshConfig(), LogCoshVAE)])
def test_build_model_from_default_configs(cfg, cls):
    m = build_model(cfg, F, D)
    assert type(m) is cls and isinstance(m, BaseVAE)
    assert (m.n_features, m.latent_dim, m.loss_mode) == (F, D, LossMode.paper)
    assert linear_sizes(m.encoder) == [(F, 256)]
    x = data()
    torch.manual_seed(0)
    assert torch.isfinite(m.loss(m(x), x, 0.1)["loss"])


def test_build_model_passes_the_study_hyperparameters():
    iwae = build_model(IWAEConfig(), F, D)
    assert iwae.config.num_samples == 5
    info = build_model(InfoVAEConfig(), F, D)
    assert (info.config.alpha, info.config.beta, info.config.reg_weight, info.config.kernel.value, info.config.latent_var) == (
        -9.0, 10.5, 110.0, "imq", 2.0)
    lc = build_model(LogCoshConfig(), F, D)
    assert (lc.config.alpha, lc.config.beta) == (10.0, 1.0)


def test_build_model_passes_custom_values():
    iwae = build_model(IWAEConfig(num_samples=3, loss_mode=LossMode.corrected, hidden_dims=[64, 32]), F, D)
    assert iwae.config.num_samples == 3 and iwae.corrected
    assert linear_sizes(iwae.encoder) == [(F, 64), (64, 32)]
    torch.manual_seed(0)
    assert iwae(data()).recon.shape == (B, 3, F)

    info = build_model(InfoVAEConfig(kernel=Kernel.rbf, alpha=-2.0, beta=3.0, reg_weight=50.0, latent_var=1.5,
                                     loss_mode=LossMode.corrected), F, D)
    assert (info.config.kernel.value, info.config.alpha, info.config.beta, info.config.reg_weight,
            info.config.latent_var) == ("rbf", -2.0, 3.0, 50.0, 1.5)
    assert info.loss_mode is LossMode.corrected
    z, prior = torch.randn(B, D), torch.randn(B, D)
    imq = InfoVAE(F, D, hidden_dims=[8], loss_mode="corrected", kernel="imq", latent_var=1.5)
    assert not torch.allclose(info.mmd(prior, z), imq.mmd(prior, z))  # the kernel choice reached the model

    lc = build_model(LogCoshConfig(alpha=3.0, beta=2.0), F, D)
    assert (lc.config.alpha, lc.config.beta) == (3.0, 2.0)
