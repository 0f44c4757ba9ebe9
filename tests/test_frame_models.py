"""The frame models (VRNN, SRNN) and their output distributions: log-probabilities and KL terms against
torch.distributions, masking of padded steps, the importance-weighted bound, sampling, and what each model's
variants change (VRNN-I's prior, SRNN's smoothing). Pure PyTorch, no Ray."""
from __future__ import annotations

import pytest
import torch
from torch import distributions as D

from pipelines.description import DataDescription
from pipelines.errors import SeqlvmError
from seqlvm.checkpoint import load_model, save_checkpoint
from seqlvm.models import FrameModel, build_model, build_model_from_args
from seqlvm.models.heads import BernoulliHead, GaussianHead, GMMHead, StrokeHead, build_head
from seqlvm.models.rnn import FrameRNN, FrameRNNConfig
from seqlvm.models.srnn import SRNN, SRNNConfig, reverse_padded
from seqlvm.models.vrnn import VRNN, VRNNConfig
from seqlvm.objectives import gaussian_kl_between

FRAME = 3
SIZES = {"hidden_dim": 8, "latent_dim": 2, "feature_dim": 8, "components": 3}
MODELS = {"vrnn": (VRNN, VRNNConfig), "srnn": (SRNN, SRNNConfig), "rnn": (FrameRNN, FrameRNNConfig)}
VARIANTS = [("rnn", {}), ("vrnn", {"conditional_prior": True}), ("vrnn", {"conditional_prior": False})] + [
    ("srnn", {"smoothing": smoothing, "resq": resq}) for smoothing in (True, False) for resq in (True, False)]


def tiny(name: str, **options):
    torch.manual_seed(0)
    cls, config = MODELS[name]
    sizes = {k: v for k, v in SIZES.items() if k != "latent_dim" or name != "rnn"}
    return cls(config(**sizes, **options), FRAME)


def batch_of(lengths: list[int], pad_to: int, binary: bool = False) -> dict:
    torch.manual_seed(1)
    frames = torch.zeros(len(lengths), pad_to, FRAME)
    for i, n in enumerate(lengths):
        frames[i, :n] = torch.randn(n, FRAME)
    if binary:
        frames = (frames > 0).float()
    return {"frames": frames, "lengths": torch.tensor(lengths)}


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


def test_stroke_head_is_a_bivariate_mixture_and_a_pen_bernoulli():
    torch.manual_seed(0)
    features = torch.randn(7, 5)
    x = torch.cat([torch.randn(7, 2), torch.randint(0, 2, (7, 1)).float()], -1)
    head = StrokeHead(5, components=4)
    log_w, mean_x, mean_y, log_sx, log_sy, rho, pen_logit = head._split(features)
    sx, sy = log_sx.exp(), log_sy.exp()
    covariance = torch.stack([torch.stack([sx * sx, rho * sx * sy], -1),
                              torch.stack([rho * sx * sy, sy * sy], -1)], -2)
    offsets = D.MixtureSameFamily(D.Categorical(logits=log_w),
                                  D.MultivariateNormal(torch.stack([mean_x, mean_y], -1), covariance))
    expected = offsets.log_prob(x[:, :2]) + D.Bernoulli(logits=pen_logit).log_prob(x[:, 2])
    assert torch.allclose(head.log_prob(features, x), expected, atol=1e-4)
    sample = head.sample(features)
    assert sample.shape == (7, 3) and set(sample[:, 2].tolist()) <= {0.0, 1.0}
    with pytest.raises(SeqlvmError, match="strokes needs"):
        build_head("strokes", 5, frame_dim=4)


def test_stroke_head_samples_have_the_mixture_correlation():
    head = StrokeHead(2, components=1)
    with torch.no_grad():  # one component, fixed parameters: sd 2 and 0.5, correlation 0.8
        head.params.weight.zero_()
        head.params.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 0.6931, -0.6931, 1.0986, -2.0]))
    torch.manual_seed(0)
    with torch.no_grad():
        samples = head.sample(torch.zeros(20000, 2))
    dx, dy = samples[:, 0], samples[:, 1]
    assert dx.mean() == pytest.approx(1.0, abs=0.05) and dy.mean() == pytest.approx(-1.0, abs=0.02)
    assert dx.std() == pytest.approx(2.0, abs=0.05) and dy.std() == pytest.approx(0.5, abs=0.02)
    assert torch.corrcoef(torch.stack([dx, dy]))[0, 1] == pytest.approx(0.8, abs=0.02)
    assert samples[:, 2].mean() == pytest.approx(float(torch.sigmoid(torch.tensor(-2.0))), abs=0.01)


@pytest.mark.parametrize("output", ["gauss", "gmm", "bernoulli", "strokes"])
@pytest.mark.parametrize("name, options", VARIANTS)
def test_padded_steps_change_nothing(name, options, output):
    model = tiny(name, output=output, **options)
    short = batch_of([4, 6], pad_to=6, binary=output == "bernoulli")
    long = batch_of([4, 6], pad_to=10, binary=output == "bernoulli")
    torch.manual_seed(5)
    a = model(short)
    torch.manual_seed(5)  # same noise for the real steps; the extra padded steps draw theirs afterwards
    b = model(long)
    for key in ("recon", "kl", "steps"):
        assert torch.allclose(a.totals[key], b.totals[key], atol=1e-4), key
    assert a.totals["steps"] == 10
    a.loss.backward()


@pytest.mark.parametrize("name", ["vrnn", "srnn"])
def test_importance_weighted_bound_is_tighter_than_the_elbo(name):
    model = tiny(name).eval()
    batch = batch_of([6, 3, 5], pad_to=6)
    with torch.no_grad():
        elbo = -(sum(model(batch).totals[k] for k in ("recon", "kl")) / 3)
        log_w = model.log_importance_weights(batch, 200)
    assert log_w.shape == (200, 3)
    iw = (torch.logsumexp(log_w, 0) - torch.log(torch.tensor(200.0))).mean()
    assert iw >= elbo - 0.05 and log_w.mean(0).mean() == pytest.approx(float(elbo), abs=0.5)


@pytest.mark.parametrize("name", MODELS)
def test_sampling_from_the_prior(name):
    rolls = tiny(name, output="bernoulli").sample_prior(2, steps=7)
    assert rolls.shape == (2, 7, FRAME) and set(rolls.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(SeqlvmError, match="model.output"):
        MODELS[name][1](output="laplace").validate()


def test_vrnn_i_has_no_prior_network_in_its_kl():
    model = tiny("vrnn", conditional_prior=False)
    model(batch_of([5, 5], pad_to=5)).loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.phi_prior.parameters())


def test_reverse_within_lengths():
    x = torch.arange(8.0).view(2, 4, 1)
    assert reverse_padded(x, torch.tensor([3, 4]))[:, :, 0].tolist() == [[2, 1, 0, 3], [7, 6, 5, 4]]


def test_srnn_smoothing_posterior_sees_the_future_and_filtering_does_not():
    batch = batch_of([6], pad_to=6)
    changed = batch["frames"].clone()
    changed[0, 5] += 3.0  # only the last frame differs
    for smoothing in (True, False):
        model = tiny("srnn", smoothing=smoothing)
        first, second = (model.inference_states(model.deterministic_states(f), f, batch["lengths"])[0, 0]
                         for f in (batch["frames"], changed))
        assert (not torch.allclose(first, second)) == smoothing


def test_rnn_baseline_likelihood_is_exact_and_matches_its_loss():
    model = tiny("rnn", output="bernoulli").eval()
    batch = batch_of([6, 3], pad_to=6, binary=True)
    with torch.no_grad():
        out = model(batch)
        exact = model.log_importance_weights(batch, 40)
    assert exact.shape == (1, 2) and float(out.totals["kl"]) == 0.0
    assert torch.allclose(-exact.sum(), out.totals["recon"], atol=1e-4)


@pytest.mark.parametrize("name", ["vrnn", "srnn"])
def test_extreme_latent_log_variances_keep_the_loss_finite(name):
    """Early in training, with the KL weight near zero, nothing holds the posterior variance: an unbounded
    log-variance overflowed SRNN's KL to NaN on JSB at step 15. The latent Gaussians' log-variances are clamped."""
    model = tiny(name)
    posterior = model.phi_enc[-1] if name == "vrnn" else model.posterior[-1]
    with torch.no_grad():
        posterior.bias[SIZES["latent_dim"]:] = 500.0  # log-variance half of (mean, log-variance)
    out = model(batch_of([6, 4], pad_to=6))
    assert torch.isfinite(out.loss) and torch.isfinite(out.totals["kl"])


@pytest.mark.parametrize("name", [*MODELS, "nasmc"])
def test_frame_models_store_their_frame_dim_and_rebuild_from_it(name, tmp_path):
    model = build_model(name, {"hidden_dim": 8, "feature_dim": 8}, FRAME)
    args = model.constructor_args()
    assert isinstance(model, FrameModel) and model.frame_dim == FRAME and not model.has_global_latent
    assert args["frame_dim"] == FRAME and "vocab_size" not in args
    before = {**{k: v for k, v in args.items() if k != "frame_dim"}, "vocab_size": FRAME}  # as written until now
    for rebuilt in (build_model_from_args(args), build_model_from_args(before)):
        assert type(rebuilt) is type(model) and rebuilt.frame_dim == FRAME and rebuilt.config == model.config
    save_checkpoint(tmp_path, model, data=DataDescription("midi", frame_dim=FRAME).to_dict())
    loaded = load_model(str(tmp_path))
    assert not loaded.is_text and loaded.data.frame_dim == FRAME and loaded.model.frame_dim == FRAME
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key])
