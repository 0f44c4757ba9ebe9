"""NVDM (Miao et al. 2016): the bag of words, the bound's terms, importance weights and prior "documents"."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from pipelines.errors import SeqlvmError
from pipelines.stream import collate
from pipelines.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from seqlvm.evaluation import importance_weighted_nll
from seqlvm.models import build_model
from seqlvm.models.nvdm import NVDMConfig

VOCAB = 24
SMALL = {"hidden_dim": 16, "latent_dim": 4}
DOCUMENTS = [[5, 6, 5, 7, UNK_ID, 9], [10, 11, 10, 10], [4, UNK_ID, 23, 22, 21, 20, 5, 4, 4], [8]]


def make_model(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model = build_model("nvdm", {**SMALL, **overrides}, VOCAB)
    return model.eval()


def batch_of(documents) -> dict[str, torch.Tensor]:
    return collate(np.array(d, dtype=np.int64) for d in documents)


def with_extra_padding(batch: dict[str, torch.Tensor], columns: int) -> dict[str, torch.Tensor]:
    pad = torch.full((batch["targets"].size(0), columns), PAD_ID, dtype=torch.long)
    return {"inputs": torch.cat([batch["inputs"], pad], 1), "targets": torch.cat([batch["targets"], pad], 1),
            "lengths": batch["lengths"]}


def test_config_rejects_an_unknown_activation():
    with pytest.raises(SeqlvmError, match="activation"):
        NVDMConfig(activation="gelu").validate()


@pytest.mark.parametrize("include_unknown", [False, True])
def test_bag_of_words_counts_the_documents_words(include_unknown):
    model = make_model(include_unknown=include_unknown)
    counts = model.word_counts(batch_of(DOCUMENTS))
    for row, document in enumerate(DOCUMENTS):
        expected = Counter(w for w in document if include_unknown or w != UNK_ID)
        got = {int(model.word_ids[j]): int(n) for j, n in enumerate(counts[row]) if n > 0}
        assert got == dict(expected)


def test_special_tokens_are_not_words():
    ids = set(make_model().word_ids.tolist())
    assert not ids & {PAD_ID, BOS_ID, EOS_ID, UNK_ID}
    assert len(ids) == VOCAB - 4
    assert UNK_ID in set(make_model(include_unknown=True).word_ids.tolist())


def test_kl_matches_torch_distributions():
    model, batch = make_model(), batch_of(DOCUMENTS)
    mu, logvar = model.encode(batch)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(model.document_terms(batch)["kl"], expected)


def test_recon_is_minus_sum_of_word_log_probs_computed_by_hand():
    model, batch = make_model(), batch_of(DOCUMENTS)
    h = torch.randn(len(DOCUMENTS), SMALL["latent_dim"])
    # The decoder's softmax spread over the vocabulary's ids, restricted to the modelled words.
    logits = torch.full((len(DOCUMENTS), VOCAB), -math.inf)
    logits[:, model.word_ids] = h @ model.decoder.weight.T + model.decoder.bias
    log_p = torch.log_softmax(logits, -1)
    by_hand = torch.stack([-sum(log_p[row, w] for w in document if w != UNK_ID)
                           for row, document in enumerate(DOCUMENTS)])
    torch.testing.assert_close(model.reconstruction_nll(h, model.word_counts(batch)), by_hand)
    torch.testing.assert_close(model.word_log_probs(h).exp().sum(-1), torch.ones(len(DOCUMENTS)))


def test_totals_count_documents_and_modelled_words():
    totals = make_model()(batch_of(DOCUMENTS)).totals
    assert float(totals["sequences"]) == len(DOCUMENTS)
    assert float(totals["steps"]) == sum(w != UNK_ID for d in DOCUMENTS for w in d)
    with_unknown = make_model(include_unknown=True)(batch_of(DOCUMENTS)).totals
    assert float(with_unknown["steps"]) == sum(len(d) for d in DOCUMENTS)


def test_loss_is_the_mean_bound_with_the_kl_weight():
    model, batch = make_model(), batch_of(DOCUMENTS)
    torch.manual_seed(3)
    out = model(batch, kl_weight=0.25)
    torch.manual_seed(3)
    terms = model.document_terms(batch)
    torch.testing.assert_close(out.loss, (terms["recon"] + 0.25 * terms["kl"]).mean())
    torch.testing.assert_close(out.totals["recon"], terms["recon"].sum())


def test_word_order_does_not_change_the_loss():
    model = make_model()
    shuffled = [list(reversed(d[1:])) + d[:1] for d in DOCUMENTS]
    losses = []
    for documents in (DOCUMENTS, shuffled):
        torch.manual_seed(7)
        losses.append(model(batch_of(documents)).loss)
    assert shuffled != DOCUMENTS
    torch.testing.assert_close(losses[0], losses[1])


def test_padding_does_not_change_any_document_number():
    model, batch = make_model(), batch_of(DOCUMENTS)
    results = []
    for padded in (batch, with_extra_padding(batch, 5)):
        torch.manual_seed(11)
        results.append((model.document_terms(padded), model.log_importance_weights(padded, 3)))
    for key in ("recon", "kl", "words"):
        torch.testing.assert_close(results[0][0][key], results[1][0][key])
    torch.testing.assert_close(results[0][1], results[1][1])
    # Batched with longer documents or alone, a document's posterior is the same.
    alone = model.encode(batch_of(DOCUMENTS[-1:]))
    together = model.encode(batch)
    torch.testing.assert_close(alone[0], together[0][-1:])
    torch.testing.assert_close(alone[1], together[1][-1:])


def test_importance_weights_average_to_the_elbo_and_tighten_it():
    model, batch = make_model(), batch_of(DOCUMENTS)
    torch.manual_seed(0)
    log_w = model.log_importance_weights(batch, 20000)
    assert log_w.shape == (20000, len(DOCUMENTS))
    mu, logvar = model.encode(batch)
    h = mu + (0.5 * logvar).exp() * torch.randn(20000, *mu.shape)
    elbo = -model.reconstruction_nll(h, model.word_counts(batch)).mean(0) - model.document_terms(batch)["kl"]
    # E_q[log p(x, h) - log q(h)] is the ELBO: the Monte Carlo KL agrees with the analytic one.
    torch.testing.assert_close(log_w.mean(0), elbo, atol=0.1, rtol=0.01)
    iw_nll = importance_weighted_nll(model, batch, 200)
    assert (iw_nll < -elbo).all()


def test_prior_samples_are_valid_word_ids_ending_in_eos():
    model = make_model()
    words = set(model.word_ids.tolist())
    for greedy in (True, False):
        ids = model.sample_prior(5, greedy=greedy, max_len=8, temperature=0.7)
        assert ids.shape == (5, 8) and ids.dtype == torch.long
        assert (ids[:, -1] == EOS_ID).all()
        assert set(ids[:, :-1].flatten().tolist()) <= words
    # More words than the vocabulary holds: greedy lists each word once.
    ids = model.sample_prior(2, greedy=True, max_len=100)
    assert ids.shape == (2, len(words) + 1)
    assert all(len(set(row[:-1].tolist())) == len(words) for row in ids)


def test_greedy_decode_lists_the_most_likely_words_first():
    model = make_model()
    h = torch.randn(3, SMALL["latent_dim"])
    ids = model.decode(h, greedy=True, max_len=6)
    log_p = model.word_log_probs(h)
    full = torch.full((3, VOCAB), -math.inf)
    full[:, model.word_ids] = log_p
    picked = full.gather(1, ids[:, :-1])
    assert (picked[:, :-1] >= picked[:, 1:]).all()
    assert (picked[:, -1] >= log_p.sort(-1, descending=True).values[:, 5]).all()


def test_training_learns_topics_the_unigram_model_cannot_see():
    """Two disjoint topics, each document from one: knowing h halves the words a document can use, so the
    bound per word must fall well below the unigram entropy log(10)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    documents = [rng.choice(np.arange(4, 9) + 5 * (i % 2), size=12) for i in range(64)]
    model = build_model("nvdm", {"hidden_dim": 32, "latent_dim": 2}, 14)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    batch = collate(documents)
    for _ in range(80):
        optimizer.zero_grad()
        model(batch).loss.backward()
        optimizer.step()
    model.eval()
    totals = model(batch).totals
    per_word = float(totals["recon"] + totals["kl"]) / float(totals["steps"])
    assert per_word < math.log(10) - 0.4
