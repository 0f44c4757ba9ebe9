"""The hybrid convolutional VAE (Semeniuta et al. 2017): shapes, the deconvolution's lengths, a causal language
model on top, the auxiliary cost kept out of the bound, padding invariance, importance weights, samples."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipelines.errors import SeqlvmError
from pipelines.stream import collate
from pipelines.vocab import BOS_ID, EOS_ID, PAD_ID
from seqlvm.evaluation import importance_weighted_nll
from seqlvm.models import build_model
from seqlvm.models.fields import validate_config
from seqlvm.models.hybrid_vae import HybridVAEConfig, sequence_nll

VOCAB = 12
TINY = dict(max_length=20, latent_dim=4, conv_channels=8, max_conv_channels=16, feature_dim=8, lm_hidden=16,
            bytenet_layers=3)


def tiny(**overrides):
    torch.manual_seed(0)
    return build_model("hybrid-vae", {**TINY, **overrides}, VOCAB)


def batch_of(sequences) -> dict[str, torch.Tensor]:
    return collate(np.asarray(s) for s in sequences)


def random_batch(n: int = 4, length: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return batch_of(rng.integers(4, VOCAB, size=length) for _ in range(n))


def test_forward_returns_a_loss_and_summed_totals():
    model, batch = tiny(), random_batch(n=5)
    out = model(batch)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert out.totals["sequences"] == 5 and out.totals["steps"] == 5 * 13
    assert out.totals["recon"] > 0 and out.totals["kl"] > 0
    mu, logvar = model.encode(batch)
    assert mu.shape == logvar.shape == (5, 4)
    assert model.log_importance_weights(batch, 3).shape == (3, 5)


@pytest.mark.parametrize("layers,max_length", [(1, 20), (2, 20), (3, 20), (3, 24), (2, 5)])
def test_the_deconvolution_covers_every_position_of_any_length_up_to_the_maximum(layers, max_length):
    model = tiny(conv_layers=layers, max_length=max_length).eval()
    z = torch.randn(3, 4)
    for steps in sorted({1, 2, max_length // 2, max_length + 1}):
        features = model.features(z, steps)
        assert features.shape == (3, steps, 8)
        history = torch.full((3, steps), 5, dtype=torch.long)
        assert model.token_logits(features, history).shape == (3, steps, VOCAB)


def test_texts_longer_than_the_model_are_a_one_line_error():
    with pytest.raises(SeqlvmError, match="at most 20 tokens"):
        tiny().encode(random_batch(length=21))


def changed_positions(model, position: int) -> torch.Tensor:
    """Positions whose next-token logits change when the history token at `position` changes (z fixed)."""
    model.eval()
    features = model.features(torch.randn(2, 4), 16)
    history = torch.randint(4, VOCAB, (2, 16))
    history[:, 0] = BOS_ID
    edited = history.clone()
    edited[:, position] = 4 + (history[:, position] - 3) % (VOCAB - 4)  # another character
    with torch.no_grad():
        before, after = model.token_logits(features, history), model.token_logits(features, edited)
    return (before - after).abs().amax(dim=(0, 2)) > 1e-6


@pytest.mark.parametrize("lm,dilated", [("lstm", False), ("bytenet", False), ("bytenet", True)])
def test_the_language_model_is_causal(lm, dilated):
    # History position k holds x_k, which the prediction at position k - 1 is the target of: no prediction at
    # positions < k may depend on it, the one at k must.
    changed = changed_positions(tiny(lm=lm, bytenet_dilated=dilated), position=6)
    assert not changed[:6].any()
    assert changed[6]


def test_the_masked_convolutions_see_layers_plus_one_characters():
    # §4.2: N undilated kernel-2 layers give a receptive field of N + 1 characters (here N = 3).
    changed = changed_positions(tiny(lm="bytenet", bytenet_layers=3), position=6)
    assert changed[6:10].all() and not changed[10:].any()


def test_the_lstm_remembers_the_whole_history():
    changed = changed_positions(tiny(lm="lstm"), position=2)
    assert changed[2:].all()


def same_weights_pair(**overrides):
    a, b = tiny(**overrides), tiny(**overrides)
    b.load_state_dict(a.state_dict())
    return a, b


def test_the_auxiliary_cost_changes_the_loss_but_not_the_bound():
    plain, hybrid = tiny(aux_weight=0.0), tiny(aux_weight=0.5)
    hybrid.load_state_dict(plain.state_dict())
    batch = random_batch(n=6)
    torch.manual_seed(1)
    out_plain = plain(batch, kl_weight=0.3)
    torch.manual_seed(1)
    out_hybrid = hybrid(batch, kl_weight=0.3)
    for key in ("recon", "kl", "sequences", "steps"):
        assert out_hybrid.totals[key].item() == pytest.approx(out_plain.totals[key].item(), rel=1e-6)
    expected = out_plain.loss + 0.5 * out_hybrid.totals["aux"] / 6
    assert out_hybrid.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out_hybrid.loss > out_plain.loss


@pytest.mark.parametrize("lm", ["lstm", "bytenet", "none"])
def test_without_the_auxiliary_cost_the_loss_is_the_weighted_elbo(lm):
    # alpha = 0 for the hybrids; with no language model alpha is never applied (J_aux would repeat the recon).
    model, batch = tiny(lm=lm, aux_weight=0.0 if lm != "none" else 0.7), random_batch(n=6)
    out = model(batch, kl_weight=0.25)
    expected = (out.totals["recon"] + 0.25 * out.totals["kl"]) / 6
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_without_a_language_model_the_reconstruction_is_historyless():
    out = tiny(lm="none")(random_batch())
    assert out.totals["recon"].item() == pytest.approx(out.totals["aux"].item(), rel=1e-6)


@pytest.mark.parametrize("lm", ["lstm", "bytenet"])
def test_padding_does_not_change_a_texts_posterior_or_likelihood(lm):
    model = tiny(lm=lm).eval()
    short, long = np.array([5, 6, 7, 8]), np.array([9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11])
    alone, padded = batch_of([short]), batch_of([short, long])
    with torch.no_grad():
        mu_alone, logvar_alone = model.encode(alone)
        mu_padded, logvar_padded = model.encode(padded)
        z = torch.randn(1, 4)

        def nlls(batch, z):
            features = model.features(z, batch["targets"].size(1))
            return (sequence_nll(model.token_logits(features, batch["inputs"]), batch["targets"]),
                    sequence_nll(model.aux_logits(features), batch["targets"]))

        alone_nlls, padded_nlls = nlls(alone, z), nlls(padded, z.expand(2, 4))
    assert torch.allclose(mu_alone[0], mu_padded[0], atol=1e-5)
    assert torch.allclose(logvar_alone[0], logvar_padded[0], atol=1e-5)
    for one, two in zip(alone_nlls, padded_nlls):
        assert two[0].item() == pytest.approx(one[0].item(), rel=1e-5)


def test_importance_weights_average_to_the_elbo_and_their_bound_is_tighter():
    model, batch = tiny().eval(), random_batch(n=4)
    torch.manual_seed(0)
    with torch.no_grad():
        log_w = model.log_importance_weights(batch, 1000)
        passes = [model(batch).totals for _ in range(20)]
        elbo_nll = sum(float(t["recon"] + t["kl"]) for t in passes) / len(passes)
        iw_nll = importance_weighted_nll(model, batch, num_samples=500, chunk=100).sum().item()
    # E_q[log p(x, z) - log q(z|x)] is the ELBO that forward() estimates with the analytic KL.
    assert -log_w.mean(0).sum().item() == pytest.approx(elbo_nll, rel=0.01)
    assert (torch.logsumexp(log_w, 0) - math.log(1000) >= log_w.mean(0)).all()
    assert iw_nll < elbo_nll


@pytest.mark.parametrize("lm", ["lstm", "bytenet", "none"])
def test_samples_are_texts_that_end_in_eos_then_padding(lm):
    model = tiny(lm=lm).eval()
    torch.manual_seed(0)
    ids = model.sample_prior(6, greedy=False, max_len=100)
    assert ids.shape[0] == 6 and ids.shape[1] <= 21  # at most max_length + 1 tokens
    assert int(ids.min()) >= 0 and int(ids.max()) < VOCAB and not (ids == BOS_ID).any()
    for row in ids.tolist():
        end = row.index(EOS_ID) if EOS_ID in row else len(row)
        assert PAD_ID not in row[:end] and set(row[end + 1:]) <= {PAD_ID}
    assert model.sample_prior(3, max_len=7).shape[1] <= 7


def test_greedy_decoding_is_a_function_of_z():
    model = tiny().eval()
    z = torch.randn(3, 4)
    assert torch.equal(model.decode(z, greedy=True, max_len=15), model.decode(z, greedy=True, max_len=15))


def test_greedy_decoding_follows_the_teacher_forced_argmax():
    # Generation and the training-time likelihood must agree: feeding back the decoded tokens reproduces them.
    for lm in ("lstm", "bytenet"):
        model = tiny(lm=lm).eval()
        z = torch.randn(2, 4)
        ids = model.decode(z, greedy=True, max_len=8)
        history = torch.cat([torch.full((2, 1), BOS_ID), ids[:, :-1]], dim=1)
        logits = model.token_logits(model.features(z, ids.size(1)), history)
        logits[..., PAD_ID] = logits[..., BOS_ID] = -float("inf")
        first_end = [row.index(EOS_ID) + 1 if EOS_ID in row else len(row) for row in ids.tolist()]
        for row, end in enumerate(first_end):
            assert torch.equal(logits[row, :end].argmax(-1), ids[row, :end])


@pytest.mark.parametrize("bad", [dict(lm="gru"), dict(aux_weight=-0.1), dict(history_keep_rate=1.5),
                                 dict(conv_layers=0)])
def test_bad_configs_are_one_line_errors(bad):
    with pytest.raises(SeqlvmError, match=f"model.{next(iter(bad))}"):
        validate_config(HybridVAEConfig(**bad), "model")


def test_history_dropout_only_in_training():
    model, batch = tiny(history_keep_rate=0.0, aux_weight=0.0), random_batch()
    model.eval()
    torch.manual_seed(3)
    evaluated = model(batch).totals["recon"]
    model.train()
    for module in model.modules():  # batch norm must not change between the two passes
        if isinstance(module, torch.nn.BatchNorm1d):
            module.eval()
    torch.manual_seed(3)
    assert model(batch).totals["recon"] != evaluated
