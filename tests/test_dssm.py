"""The deep state-space model (seqlvm.models.dssm) and its flows: the maths of Schmidt & Hofmann (2018)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal

from pipelines.errors import SeqlvmError
from pipelines.stream import collate
from pipelines.vocab import EOS_ID, PAD_ID
from seqlvm.evaluation import importance_weighted_nll
from seqlvm.models import MODELS
from seqlvm.models.fields import validate_config
from seqlvm.models.dssm import DSSM, DSSMConfig, two_flow_transition
from seqlvm.models.flows import build_flow, parse_flow
from seqlvm.objectives import log_normal

VOCAB = 9
DIM = 4
FLOWS = ["tril", "diag", "id", "nvp2", "realnvp", "2xtril", "tril,diag,nvp1"]
WORDS = [np.array([4, 5, 6]), np.array([7, 8, 4, 5, 6, 7]), np.array([5])]


def small_model(**overrides) -> DSSM:
    config = DSSMConfig(**{"state_dim": DIM, "embedding_dim": 5, "inference_dim": 6, "flow_hidden": 7, **overrides})
    validate_config(config, "model")
    return DSSM(config, VOCAB)


def randomize(module: torch.nn.Module, std: float = 0.5, seed: int = 0) -> None:
    """Random weights everywhere: the flows start as the identity, which would make every test trivial."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(std=std)


def random_flow(spec: str):
    flow = build_flow(spec, DIM, hidden=7, delta=0.1)
    randomize(flow)
    return flow


@pytest.mark.parametrize("spec", FLOWS)
def test_flow_log_determinants_match_autograd_jacobians(spec):
    flow = random_flow(spec)
    x, condition = torch.randn(5, DIM), torch.randn(5, DIM)
    y, log_det = flow(x, condition)
    _, log_det_inverse = flow.inverse(y, condition)
    for i in range(5):
        forward_jacobian = torch.autograd.functional.jacobian(lambda v: flow(v, condition[i])[0], x[i])
        inverse_jacobian = torch.autograd.functional.jacobian(lambda v: flow.inverse(v, condition[i])[0], y[i])
        assert log_det[i].item() == pytest.approx(torch.linalg.slogdet(forward_jacobian)[1].item(), abs=1e-4)
        assert log_det_inverse[i].item() == pytest.approx(torch.linalg.slogdet(inverse_jacobian)[1].item(), abs=1e-4)


@pytest.mark.parametrize("spec", FLOWS)
def test_flows_are_invertible_for_every_condition(spec):
    flow = random_flow(spec)
    x, condition = torch.randn(3, 7, DIM), torch.randn(3, 7, DIM)
    y, _ = flow(x, condition)
    assert torch.allclose(flow.inverse(y, condition)[0], x, atol=1e-4)
    assert torch.allclose(flow(flow.inverse(x, condition)[0], condition)[0], x, atol=1e-4)


def test_tril_is_lower_triangular_with_its_diagonal_kept_away_from_zero():
    flow = random_flow("tril")
    condition = torch.randn(DIM)
    jacobian = torch.autograd.functional.jacobian(lambda v: flow(v, condition)[0], torch.randn(DIM))
    assert torch.count_nonzero(torch.triu(jacobian, diagonal=1)) == 0
    assert (jacobian.diagonal().abs() >= 0.1 - 1e-7).all()
    assert torch.count_nonzero(torch.tril(jacobian, diagonal=-1)) > 0


def test_flow_specs_stack_layers():
    assert parse_flow("2xTRIL", 8) == ["tril", "tril"]
    assert parse_flow("tril, diag", 8) == ["tril", "diag"]
    assert parse_flow("realnvp", 8) == [f"nvp{k}" for k in range(2, 8)]  # REAL-NVP-[2,3,4,5,6,7]
    assert len(build_flow("3xdiag", 8, 8, 0.1).layers) == 3
    for bad in ("trill", "nvp8", "0xtril", ""):
        with pytest.raises(SeqlvmError):
            parse_flow(bad, 8)


@pytest.mark.parametrize("overrides", [{"importance_samples": 0}, {"diagonal_clip": 0.5},
                                       {"generative_flow": "lstm"}, {"shared_flow": True, "inference_flow": "diag"}])
def test_config_errors_are_one_line(overrides):
    with pytest.raises(SeqlvmError, match=f"model.{next(iter(overrides))}") as error:
        validate_config(DSSMConfig(**overrides), "model")
    assert "\n" not in str(error.value)


def test_registered_as_a_text_model():
    assert MODELS["dssm"] is DSSM and DSSM.modalities == ("text",) and DSSM.has_latent
    assert not DSSM.has_global_latent and DSSM.has_mutual_information
    with pytest.raises(NotImplementedError):  # no global latent to encode into
        small_model().encode(collate(WORDS))


def affine_map(flow, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(offset, matrix) of a flow that is affine in its input: F(h, x) = offset + matrix @ x."""
    offset = flow(torch.zeros(DIM), condition)[0]
    columns = [flow(unit, condition)[0] - offset for unit in torch.eye(DIM)]
    return offset, torch.stack(columns, -1)


def test_two_flow_weight_is_the_density_ratio_of_the_transitions():
    """Eq. 8-9: log r(zeta) + log|det J_{F_q}(xi)| - log|det J_{F_g}(zeta)| - log q(xi) equals
    log p(h_t | h_{t-1}) - log q(h_t | h_{t-1}, w); for affine flows both are Gaussians in closed form."""
    generative, inference = random_flow("2xtril"), random_flow("diag")
    previous, mu, logvar = torch.randn(DIM), 0.3 * torch.randn(DIM), 0.3 * torch.randn(DIM)
    noise = mu + (0.5 * logvar).exp() * torch.randn(DIM)
    state, log_prior = two_flow_transition(generative, inference, previous, noise)
    weight = log_prior - log_normal(noise, mu, logvar)
    offset_g, matrix_g = affine_map(generative, previous)
    offset_q, matrix_q = affine_map(inference, previous)
    prior = MultivariateNormal(offset_g, scale_tril=torch.linalg.cholesky(matrix_g @ matrix_g.T))
    posterior_scale = matrix_q @ torch.diag((0.5 * logvar).exp())
    posterior = MultivariateNormal(offset_q + matrix_q @ mu, posterior_scale @ posterior_scale.T)
    assert weight.item() == pytest.approx((prior.log_prob(state) - posterior.log_prob(state)).item(), abs=1e-3)


def test_two_flow_elbo_with_one_shared_flow_is_the_single_flow_elbo():
    two = small_model(importance_samples=3)
    two.inference_flow = two.generative_flow  # the two-flow objective, with F_q = F_g
    randomize(two)
    shared = small_model(importance_samples=3, shared_flow=True)
    shared.load_state_dict(two.state_dict())
    batch = collate(WORDS)
    torch.manual_seed(1)
    two_terms = two.sequence_terms(batch)
    torch.manual_seed(1)
    shared_terms = shared.sequence_terms(batch)
    assert torch.allclose(two_terms.log_marginal, shared_terms.log_marginal, atol=1e-4)
    assert torch.allclose(two_terms.objective, shared_terms.objective, atol=1e-4)
    separate = small_model(importance_samples=3)
    randomize(separate)
    torch.manual_seed(1)
    assert not torch.allclose(separate.sequence_terms(batch).log_marginal, shared_terms.log_marginal, atol=1e-2)


def test_one_importance_sample_is_the_plain_sequential_elbo():
    """K = 1: the resampling filter's bound is sum_t of the Eq. 9 integrand at xi_t ~ q (one standard-normal
    draw per step, the same noise here)."""
    model = small_model(importance_samples=1, generative_flow="tril", inference_flow="2xdiag")
    randomize(model)
    batch = collate(WORDS)
    targets, lengths = batch["targets"], batch["lengths"]
    torch.manual_seed(2)
    terms = model.sequence_terms(batch, kl_weight=0.3)
    torch.manual_seed(2)
    contexts = model.backward_contexts(targets, lengths)
    state = model.initial_state.expand(len(WORDS), -1)
    recon, kl = torch.zeros(len(WORDS)), torch.zeros(len(WORDS))
    for t in range(targets.size(1)):
        mu, logvar = model.posterior_parameters(contexts[:, t], state, None)
        noise = mu + (0.5 * logvar).exp() * torch.randn(1, *mu.shape)[0]
        next_state, log_det_q = model.inference_flow(noise, state)
        zeta, log_det_g_inverse = model.generative_flow.inverse(next_state, state)
        log_likelihood = torch.log_softmax(model.emission(next_state), -1)[torch.arange(len(WORDS)), targets[:, t]]
        real = (t < lengths).float()
        recon -= log_likelihood * real
        kl -= (log_normal(zeta) + log_det_q + log_det_g_inverse - log_normal(noise, mu, logvar)) * real
        state = next_state
    assert torch.allclose(terms.log_marginal, -(recon + kl), atol=1e-4)
    assert torch.allclose(terms.recon, recon, atol=1e-4)
    assert torch.allclose(terms.objective, -(recon + 0.3 * kl), atol=1e-4)


def test_forward_totals_and_loss_follow_the_contract():
    model = small_model(importance_samples=2)
    randomize(model)
    batch = collate(WORDS)
    torch.manual_seed(3)
    out = model(batch, kl_weight=1.0)
    torch.manual_seed(3)
    terms = model.sequence_terms(batch)
    assert out.totals["recon"] + out.totals["kl"] == pytest.approx(-terms.log_marginal.sum().item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(-terms.log_marginal.mean().item(), rel=1e-5)
    assert out.totals["steps"].item() == sum(len(w) + 1 for w in WORDS)
    assert out.totals["sequences"].item() == len(WORDS)


@pytest.mark.parametrize("particles", [1, 3])
def test_padding_does_not_change_any_word_terms(particles):
    model = small_model(importance_samples=particles)
    randomize(model)
    batch = collate(WORDS)
    padded = {key: value.clone() for key, value in batch.items()}
    for key in ("inputs", "targets"):
        padded[key] = torch.cat([batch[key], torch.full((len(WORDS), 4), PAD_ID)], 1)
    torch.manual_seed(4)
    plain = model.sequence_terms(batch)
    torch.manual_seed(4)
    extra = model.sequence_terms(padded)
    for a, b in zip(plain, extra):
        assert torch.allclose(a, b, atol=1e-5)
    alone = collate(WORDS[:1])
    contexts_alone = model.backward_contexts(alone["targets"], alone["lengths"])
    contexts_batch = model.backward_contexts(batch["targets"], batch["lengths"])
    assert torch.allclose(contexts_alone[0], contexts_batch[0, :len(WORDS[0]) + 1], atol=1e-5)


def test_importance_weighted_bound_is_tighter_than_the_elbo_on_average():
    model = small_model()
    randomize(model, std=0.3)
    batch = collate(WORDS)
    torch.manual_seed(5)
    with torch.no_grad():
        elbo_nll = -model.sequence_terms(batch, runs=200).log_marginal.view(200, -1).mean(0)
        iw_nll = importance_weighted_nll(model, batch, num_samples=200)
    assert (iw_nll < elbo_nll).all()


def test_filter_estimates_are_unbiased_for_the_marginal_likelihood():
    """The product over steps of (1/K) sum_k omega_k, one particle carried on, estimates P(w) without bias.
    With q = r and one shared flow the weights are P(w_t | h_t): a bootstrap filter, checked against the
    prior-sampling estimate of Eq. 12. Carrying a uniformly chosen particle instead is off by 0.2-0.5 nats."""
    model = DSSM(DSSMConfig(state_dim=3, embedding_dim=4, inference_dim=5, flow_hidden=6, importance_samples=4,
                            shared_flow=True), 6)
    randomize(model)
    with torch.no_grad():
        model.posterior[-1].weight.zero_()
        model.posterior[-1].bias.zero_()
        model.emission.weight.mul_(1.5)
    batch = collate([np.array([4, 5, 4]), np.array([5, 5]), np.array([4])])
    torch.manual_seed(6)
    by_prior = model.log_marginal(batch, 60000, proposal="prior")
    by_filter = model.log_marginal(batch, 2000)
    assert torch.allclose(by_filter, by_prior, atol=0.08)


def test_samples_are_character_ids_ending_in_eos():
    model = small_model(generative_flow="2xtril")
    randomize(model)
    with torch.no_grad():
        model.emission.bias[EOS_ID] = 1.0
    for greedy in (False, True):
        words = model.sample_prior(50, greedy=greedy, max_len=60)
        assert words.dtype == torch.long and words.size(1) <= 60
        for row in words.tolist():
            end = row.index(EOS_ID)
            assert all(4 <= c < VOCAB or c == 1 for c in row[:end])  # characters (or <unk>), no <s>/<pad>
            assert all(c == PAD_ID for c in row[end + 1:])
    assert len({tuple(w) for w in model.sample_prior(50, greedy=True, max_len=60).tolist()}) > 1  # noise varies it


def test_mutual_information_is_zero_when_characters_ignore_the_noise():
    model = small_model()
    randomize(model)
    information = model.mutual_information(num_prefixes=30, num_noise=20, max_len=5)
    assert information.shape == (5,) and (information > 0.01).all()
    with torch.no_grad():
        model.emission.weight.zero_()  # P(w_t | h_t) no longer depends on h_t, hence not on xi_t
    assert torch.allclose(model.mutual_information(30, 20, 5), torch.zeros(5), atol=1e-5)


def test_every_parameter_gets_a_gradient():
    model = small_model(importance_samples=3, posterior_sees_state=True, generative_flow="tril,nvp2")
    randomize(model, std=0.3)
    model(collate(WORDS)).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_unknown_prior_estimator_is_refused():
    with pytest.raises(ValueError):
        small_model().log_marginal(collate(WORDS), 2, proposal="uniform")
