"""The words task: data preparation from the real wordfreq list (filters, splits, rows), its metrics, and the GRU
language-model baseline."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from pipelines.dataset import PreparedDataset
from pipelines.errors import SeqlvmError
from pipelines.stream import collate
from pipelines.vocab import BOS_ID, EOS_ID, PAD_ID, Vocab
from pipelines.words import SOURCE, WordOptions, prepare_words, read_frequencies, read_words, wordlist_path
from seqlvm.models.rnnlm import RNNLM, RNNLMConfig
from seqlvm.word_metrics import cross_entropy, in_vocabulary, oracle_train_metrics, word_log_probs, word_task_metrics

SMALL = dict(vocab_size=500, corpus_tokens=5000)


@pytest.fixture(scope="module")
def word_split(tmp_path_factory):
    out = tmp_path_factory.mktemp("words") / "word"
    return out, prepare_words(SOURCE, out, WordOptions(**SMALL, split="word"))


@pytest.fixture(scope="module")
def vocab_split(tmp_path_factory):
    out = tmp_path_factory.mktemp("words") / "vocab"
    return out, prepare_words(SOURCE, out, WordOptions(**SMALL, split="vocab"))


def distributions(out):
    table = read_words(out)
    return table.column("word").to_pylist(), table.column("p_train").to_numpy(), table.column("p_test").to_numpy()


def split_words(out, split):
    vocab = Vocab.of_dataset(out)
    return ["".join(vocab.decode(row)) for row in PreparedDataset.open(out).read(split)]


def tiny_gru_lm(vocab_size=30, seed=0):
    torch.manual_seed(seed)
    return RNNLM(RNNLMConfig(embedding_dim=8, hidden_dim=8, word_keep_rate=1.0, cell="gru"), vocab_size).eval()


# --- preparation ---

def test_keeps_the_most_frequent_letter_only_words_of_allowed_lengths(tmp_path):
    options = WordOptions(vocab_size=300, min_length=3, max_length=5, corpus_tokens=1000)
    prepare_words(SOURCE, tmp_path / "d", options)
    words, _, _ = distributions(tmp_path / "d")
    assert len(words) == len(set(words)) == 300
    assert all(re.fullmatch(r"[a-z]{3,5}", w) for w in words)
    frequencies = read_frequencies(wordlist_path())
    rarest_kept = min(frequencies[w] for w in words)
    allowed = {w for w in frequencies if re.fullmatch(r"[a-z]{3,5}", w)}
    assert {w for w in allowed if frequencies[w] > rarest_kept} <= set(words)
    # The raw list's frequent words with apostrophes, digits or accents are filtered out.
    assert {"don't", "can't", "000", "café"} <= set(frequencies)


def test_distributions_sum_to_one(word_split, vocab_split):
    for out, _ in (word_split, vocab_split):
        _, p_train, p_test = distributions(out)
        assert p_train.sum() == pytest.approx(1.0) and p_test.sum() == pytest.approx(1.0)
        assert (p_train >= 0).all() and (p_test >= 0).all()


def test_word_split_has_one_distribution_for_all_splits(word_split):
    out, manifest = word_split
    _, p_train, p_test = distributions(out)
    assert (p_train > 0).all() and np.allclose(p_train, p_test)
    assert manifest["test_only_types"] == 0
    test_share = manifest["splits"]["test"]["sequences"] / 5000
    assert 0.07 < test_share < 0.13


def test_vocab_split_holds_out_a_tenth_of_the_types_from_train(vocab_split):
    out, manifest = vocab_split
    words, p_train, p_test = distributions(out)
    test_only = {w for w, p in zip(words, p_train) if p == 0}
    assert 0.05 < len(test_only) / len(words) < 0.15 and manifest["test_only_types"] == len(test_only)
    assert (p_test > 0).all()
    assert not test_only & set(split_words(out, "train")) and not test_only & set(split_words(out, "valid"))
    assert test_only & set(split_words(out, "test"))
    # Shared types are split at the token level: test keeps the same relative frequencies among them.
    shared = p_train > 0
    ratio = p_test[shared] / p_train[shared]
    assert np.allclose(ratio, ratio[0])


def test_rows_are_vocabulary_words_drawn_by_frequency(word_split):
    out, manifest = word_split
    words, p_train, _ = distributions(out)
    rows = {s: split_words(out, s) for s in ("train", "valid", "test")}
    assert sum(len(r) for r in rows.values()) == 5000
    assert all(set(r) <= set(words) for r in rows.values())
    assert manifest["splits"]["train"]["steps"] == sum(len(w) for w in rows["train"])
    counts = {w: 0 for w in words}
    for w in rows["train"]:
        counts[w] += 1
    most_frequent = words[int(np.argmax(p_train))]
    expected = p_train.max() * len(rows["train"])
    assert abs(counts[most_frequent] - expected) < 4 * math.sqrt(expected)
    assert "".join(Vocab.of_dataset(out).words[4:]) == "abcdefghijklmnopqrstuvwxyz"


def test_rerun_with_same_options_is_a_no_op(word_split):
    out, manifest = word_split
    before = (out / "manifest.json").stat().st_mtime_ns
    assert prepare_words(SOURCE, out, WordOptions(**SMALL, split="word")) == manifest
    assert (out / "manifest.json").stat().st_mtime_ns == before
    with pytest.raises(SeqlvmError, match="holds a dataset prepared from other input or options"):
        prepare_words(SOURCE, out, WordOptions(**SMALL, split="word", seed=1))


@pytest.mark.parametrize("bad", [dict(split="types"), dict(test_fraction=0.0), dict(test_fraction=1.0),
                                 dict(valid_fraction=-0.1), dict(min_length=5, max_length=4), dict(vocab_size=1),
                                 dict(corpus_tokens=0), dict(shard_size=0)])
def test_bad_options_are_one_line_errors(tmp_path, bad):
    with pytest.raises(SeqlvmError) as error:
        prepare_words(SOURCE, tmp_path / "d", WordOptions(**bad))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "d").exists()


# --- metrics ---

def test_cross_entropy_of_a_uniform_model_is_log_of_the_number_of_words():
    probs = np.random.default_rng(0).dirichlet(np.ones(50))
    assert cross_entropy(torch.full((50,), -math.log(50)), probs) == pytest.approx(math.log(50))


def test_cross_entropy_is_at_least_the_entropy_and_ignores_zero_probability_words():
    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.ones(20)), rng.dirichlet(np.ones(20))
    entropy = -(p * np.log(p)).sum()
    assert cross_entropy(torch.from_numpy(np.log(p)), p) == pytest.approx(entropy)
    assert cross_entropy(torch.from_numpy(np.log(q)), p) > entropy
    log_q = torch.from_numpy(np.log(q))
    log_q[0] = -math.inf
    p[0] = 0.0
    assert math.isfinite(cross_entropy(log_q, p))


def test_in_vocabulary_fractions_of_hand_made_samples():
    samples = ["the", "the", "cat", "xqz", "the", "dog", "zzz", "cat"]
    fractions = in_vocabulary(samples, ["the", "cat", "dog", "sat"])
    assert fractions == {"in_vocab": 6 / 8, "in_vocab_unique": 3 / 8}


def test_gru_lm_exact_word_likelihood_equals_its_loss(word_split):
    out, _ = word_split
    words, _, _ = distributions(out)
    vocab, model = Vocab.of_dataset(out), tiny_gru_lm()
    batch = collate(np.asarray(vocab.encode(list(w))) for w in words)
    with torch.no_grad():
        loss = model(batch).loss
    log_probs = word_log_probs(model, vocab, words, batch_size=64)
    assert -log_probs.mean().item() == pytest.approx(loss.item(), rel=1e-5)
    one_by_one = word_log_probs(model, vocab, words[:20], batch_size=1)
    assert torch.allclose(log_probs[:20], one_by_one, atol=1e-5)


def test_gru_teacher_forcing_matches_stepping_its_state():
    model = tiny_gru_lm(vocab_size=12, seed=3)
    tokens = torch.tensor([[BOS_ID, 5, 9, 4, 7]])
    decoder = model.decoder
    state, stepped = None, []
    for t in range(tokens.size(1)):
        hidden, state = decoder.rnn(decoder.embedding(tokens[:, t:t + 1]), state)
        stepped.append(hidden[:, -1])
    assert torch.allclose(decoder.hidden_states(tokens)[0], torch.stack(stepped, 1)[0], atol=1e-6)


def test_gru_lm_samples_end_in_eos_then_padding():
    rows = tiny_gru_lm().sample_prior(16, greedy=False, max_len=100).tolist()
    for row in rows:
        assert BOS_ID not in row
        if EOS_ID in row:
            assert all(i == PAD_ID for i in row[row.index(EOS_ID) + 1:])
        else:  # cut off at max_len
            assert PAD_ID not in row and len(row) == 100
    assert sum(EOS_ID in row for row in rows) >= 12


def test_rnnlm_cell_is_validated():
    RNNLMConfig(cell="gru").validate()
    with pytest.raises(SeqlvmError, match="model.cell"):
        RNNLMConfig(cell="rnn").validate()


def test_word_task_metrics_of_a_gru_lm(vocab_split):
    out, manifest = vocab_split
    metrics = word_task_metrics(tiny_gru_lm(), PreparedDataset.open(out), num_generated=300)
    # P-hat spreads mass over all strings, so its cross-entropy is at least the entropy (Gibbs).
    assert metrics["xent_train"] >= manifest["entropy_nats"]["train"]
    assert metrics["xent_test"] >= manifest["entropy_nats"]["test"]
    assert metrics["xent_train_bits"] == pytest.approx(metrics["xent_train"] / math.log(2))
    assert 0 < metrics["mass_on_words"] < 1
    assert 0 <= metrics["in_vocab_unique"] <= metrics["in_vocab"] <= 1
    assert "mutual_information" not in metrics


def test_oracle_scores_the_training_entropy(word_split, vocab_split):
    out, manifest = word_split
    oracle = oracle_train_metrics(out, num_generated=2000)
    assert oracle["xent_train"] == pytest.approx(manifest["entropy_nats"]["train"])
    assert oracle["in_vocab"] == 1.0 and 0 < oracle["in_vocab_unique"] < 1
    assert math.isinf(oracle_train_metrics(vocab_split[0], num_generated=100)["xent_test"])
