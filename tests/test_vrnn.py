"""VRNN and its output distributions: log-probabilities and KL terms against torch.distributions, masking of
padded steps, the importance-weighted bound, sampling shapes. Pure PyTorch, no Ray."""
from __future__ import annotations

import pytest
import torch
from torch import distributions as D

from seqlvm.errors import SeqlvmError
from seqlvm.models.heads import BernoulliHead, GaussianHead, GMMHead
from seqlvm.models.vrnn import VRNN, VRNNConfig
from seqlvm.objectives import gaussian_kl_between

FRAME = 3


def test_kl_between_diagonal_gaussians_matches_torch():
    torch.manual_seed(0)
    mu_q, logvar_q, mu_p, logvar_p = torch.randn(4, 5, 6).unbind(0)
    expected = D.kl_divergence(D.Normal(mu_q, (0.5 * logvar_q).exp()), D.Normal(mu_p, (0.5 * logvar_p).exp()))
    assert torch.allclose(gaussian_kl_between(mu_q, logvar_q, mu_p, logvar_p), expected.sum(-1), atol=1e-5)


def test_heads_match_torch_distributions():
    torch.manual_seed(0)
    features, x = torch.randn(7, 5), torch.randn(7, FRAME)
    gauss = GaussianHead(5, FRAME)
    mean, logvar = gauss.params(features).chunk(2, -1)
    expected = D.Normal(mean, (0.5 * logvar).exp()).log_prob(x).sum(-1)
    assert torch.allclose(gauss.log_prob(features, x), expected, atol=1e-5)

    bits = torch.randint(0, 2, (7, FRAME)).float()
    bern = BernoulliHead(5, FRAME)
    expected = D.Bernoulli(logits=bern.logits(features)).log_prob(bits).sum(-1)
    assert torch.allclose(bern.log_prob(features, bits), expected, atol=1e-5)

    gmm = GMMHead(5, FRAME, components=4)
    log_w, mean, logvar = gmm._split(features)
    mixture = D.MixtureSameFamily(D.Categorical(logits=log_w),
                                  D.Independent(D.Normal(mean, (0.5 * logvar).exp()), 1))
    assert torch.allclose(gmm.log_prob(features, x), mixture.log_prob(x), atol=1e-4)
    assert gmm.sample(features).shape == x.shape


def batch_of(lengths: list[int], pad_to: int) -> dict:
    torch.manual_seed(1)
    frames = torch.zeros(len(lengths), pad_to, FRAME)
    for i, n in enumerate(lengths):
        frames[i, :n] = torch.randn(n, FRAME)
    return {"frames": frames, "lengths": torch.tensor(lengths)}


@pytest.mark.parametrize("output", ["gauss", "gmm", "bernoulli"])
@pytest.mark.parametrize("conditional_prior", [True, False])
def test_padded_steps_change_nothing(output, conditional_prior):
    torch.manual_seed(0)
    model = VRNN(VRNNConfig(hidden_dim=8, latent_dim=2, feature_dim=8, output=output, components=3,
                            conditional_prior=conditional_prior), FRAME)
    short, long = batch_of([4, 6], pad_to=6), batch_of([4, 6], pad_to=10)
    if output == "bernoulli":
        for b in (short, long):
            b["frames"] = (b["frames"] > 0).float()
    torch.manual_seed(5)
    a = model(short)
    torch.manual_seed(5)  # same noise for the real steps; the extra padded steps draw theirs afterwards
    b = model(long)
    for key in ("recon", "kl", "tokens"):
        assert torch.allclose(a.totals[key], b.totals[key], atol=1e-4), key
    assert a.totals["tokens"] == 10
    a.loss.backward()


def test_vrnn_i_has_no_prior_network_in_its_kl():
    torch.manual_seed(0)
    model = VRNN(VRNNConfig(hidden_dim=8, latent_dim=2, feature_dim=8, conditional_prior=False), FRAME)
    out = model(batch_of([5, 5], pad_to=5))
    out.loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.phi_prior.parameters())


def test_importance_weighted_bound_is_tighter_than_the_elbo():
    torch.manual_seed(0)
    model = VRNN(VRNNConfig(hidden_dim=8, latent_dim=2, feature_dim=8), FRAME).eval()
    batch = batch_of([6, 3, 5], pad_to=6)
    with torch.no_grad():
        elbo = -(sum(model(batch).totals[k] for k in ("recon", "kl")) / 3)
        log_w = model.log_importance_weights(batch, 200)
    assert log_w.shape == (200, 3)
    iw = (torch.logsumexp(log_w, 0) - torch.log(torch.tensor(200.0))).mean()
    assert iw >= elbo - 0.05 and log_w.mean(0).mean() == pytest.approx(float(elbo), abs=0.5)


def test_sampling_and_config_errors():
    model = VRNN(VRNNConfig(hidden_dim=8, latent_dim=2, feature_dim=8, output="bernoulli"), FRAME)
    rolls = model.sample_prior(2, steps=7)
    assert rolls.shape == (2, 7, FRAME) and set(rolls.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(SeqlvmError, match="model.output"):
        VRNNConfig(output="laplace").validate()
