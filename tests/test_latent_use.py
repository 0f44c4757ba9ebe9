"""The measures of latent use (mutual information, active units, posterior decodes) and the collapse guard."""
import math
from collections import Counter

import numpy as np
import pytest
import torch

from pipelines.stream import collate
from pipelines.vocab import BOS_ID, EOS_ID, PAD_ID
from seqlvm.evaluation import COLLAPSE_PENALTY, CollapseGuard, evaluate
from seqlvm.latent_use import (DecodeSample, PosteriorDecodes, active_units, corpus_bleu, mutual_information,
                               unigram_f1, words_of)
from seqlvm.models import build_model


class TestMutualInformation:
    def test_posteriors_that_are_all_alike_carry_no_information(self):
        torch.manual_seed(0)
        mu, logvar = torch.zeros(500, 8), torch.zeros(500, 8)
        assert abs(mutual_information(mu, logvar)) < 0.1

    def test_posteriors_far_apart_carry_log_n_nats(self):
        torch.manual_seed(0)
        n = 300
        mu = torch.randn(n, 4) * 100.0
        logvar = torch.full((n, 4), -4.0)
        assert mutual_information(mu, logvar) == pytest.approx(math.log(n), abs=0.01)

    def test_it_grows_with_how_far_apart_the_posteriors_are(self):
        torch.manual_seed(0)
        spread = torch.randn(400, 4)
        values = [mutual_information(spread * scale, torch.full((400, 4), -1.0)) for scale in (0.1, 1.0, 3.0)]
        assert values[0] < values[1] < values[2] <= math.log(400)

    def test_the_chunked_sum_matches_one_chunk(self):
        mu, logvar = torch.randn(100, 3), torch.randn(100, 3) * 0.1
        torch.manual_seed(3)
        whole = mutual_information(mu, logvar, chunk=1000)
        torch.manual_seed(3)
        assert mutual_information(mu, logvar, chunk=7) == pytest.approx(whole, abs=1e-9)


def test_active_units_counts_dimensions_that_vary():
    means = torch.zeros(100, 3)
    means[:, 1] = torch.linspace(-1, 1, 100)
    assert active_units(means) == 1
    assert active_units(means[:1]) == 0


class TestOverlap:
    def test_words_of_stops_at_the_end_of_sentence_and_drops_specials(self):
        assert words_of([BOS_ID, 7, 8, EOS_ID, 9, PAD_ID]) == [7, 8]
        assert words_of([7, PAD_ID, 8]) == [7, 8]

    def test_unigram_f1(self):
        assert unigram_f1([1, 2, 3], [3, 2, 1]) == 1.0
        assert unigram_f1([1, 2], [3, 4]) == 0.0
        assert unigram_f1([], [3, 4]) == 0.0
        # overlap 2 of 3 decoded words and of 4 input words: P 2/3, R 1/2
        assert unigram_f1([1, 2, 3], [1, 2, 4, 5]) == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
        assert unigram_f1([1, 1, 1], [1, 2, 3]) == pytest.approx(1 / 3)  # a repeated word counts once per match

    def test_corpus_bleu(self):
        sentences = [[1, 2, 3, 4, 5], [6, 7, 8, 9]]
        assert corpus_bleu(sentences, sentences) == pytest.approx(100.0)
        assert corpus_bleu([[1, 2, 3, 9, 5]], [[1, 2, 3, 4, 5]]) == 0.0  # no 4-gram in common
        # a decode that is the input's first 5 of 6 words: every n-gram matches, the brevity penalty applies
        reference = [1, 2, 3, 4, 5, 6]
        assert corpus_bleu([reference[:5]], [reference]) == pytest.approx(100.0 * math.exp(1 - 6 / 5))


class TestPosteriorDecodes:
    def test_perfect_reconstructions(self):
        refs = [[1, 2, 3], [4, 5, 6, 7], [1, 2, 3], [8, 9, 10, 11, 12]]
        metrics = PosteriorDecodes([list(r) for r in refs], refs).metrics(seed=1)
        assert metrics["decode_f1"] == 1.0 and metrics["decode_bleu"] == pytest.approx(100.0)
        assert metrics["decode_distinct"] == 0.75 and metrics["decoded_sentences"] == 4
        assert metrics["decode_f1_shuffled"] < metrics["decode_f1"]

    def test_a_decoder_that_ignores_z(self):
        refs = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 5, 9]]
        metrics = PosteriorDecodes([[1, 5, 9]] * 4, refs).metrics()
        assert metrics["decode_distinct"] == 0.25
        assert metrics["decode_f1"] == pytest.approx(metrics["decode_f1_shuffled"])

    def test_decodes_come_from_batches_all_along_the_split(self):
        rng = np.random.default_rng(0)
        model = build_model("sentence-vae", dict(embedding_dim=8, hidden_dim=8, latent_dim=2), 30)
        batches = [collate([rng.integers(4, 30, size=n) for _ in range(4)]) for n in range(2, 12)]
        sample = DecodeSample(limit=12, seed=0)
        for batch in batches:
            sample.offer(model.encode(batch)[0], batch["targets"])
        decodes = sample.decode(model)
        assert len(decodes.decodes) == len(decodes.references) == 12 and sample.seen == 40
        lengths = {len(r) for r in decodes.references}
        assert lengths != {2, 3, 4}, "the first batches (the shortest sentences) only"

    def test_the_sample_is_uniform_over_the_split(self):
        """Each of 40 sentences, offered in 10 batches, lands in a sample of 12 with probability 12/40."""
        targets = torch.arange(4, 44).view(10, 4, 1)  # sentence i is the one-word sentence [4 + i]
        counts = Counter()
        for seed in range(400):
            sample = DecodeSample(limit=12, seed=seed)
            for batch in targets:
                sample.offer(torch.zeros(4, 2), batch)
            counts.update(word for (word,) in sample.references)
        shares = np.array([counts[4 + i] for i in range(40)]) / 400
        assert len(counts) == 40 and abs(shares.mean() - 0.3) < 1e-9
        first, last = shares[:12].mean(), shares[-12:].mean()  # the first batches fill it, the last replace
        assert first == pytest.approx(0.3, abs=0.04) and last == pytest.approx(0.3, abs=0.04)


def test_evaluate_reports_latent_use_of_a_sentence_latent_only():
    rng = np.random.default_rng(0)
    batches = [collate([rng.integers(4, 30, size=rng.integers(2, 9)) for _ in range(8)]) for _ in range(3)]
    vae = build_model("sentence-vae", dict(embedding_dim=8, hidden_dim=8, latent_dim=3), 30)
    metrics = evaluate(vae, batches, decode_limit=10)
    assert {"mutual_info", "active_units", "decode_f1", "decode_f1_shuffled", "decode_bleu",
            "decode_distinct"} <= set(metrics)
    assert metrics["decoded_sentences"] == 10 and 0 <= metrics["mutual_info"] <= math.log(24)
    assert "decode_f1" not in evaluate(vae, batches)  # decodes only when asked for
    lm = build_model("rnnlm", dict(embedding_dim=8, hidden_dim=8), 30)
    assert not {"mutual_info", "active_units", "decode_f1"} & set(evaluate(lm, batches, decode_limit=10))


class TestCollapseGuard:
    guard = CollapseGuard(min_kl=0.1, min_mutual_info=0.5, min_active_units=1)

    def test_a_model_using_its_latent_passes(self):
        assert self.guard.collapse({"kl": 5.0, "mutual_info": 2.0, "active_units": 12}) is None
        assert self.guard.objective(90.0, {"kl": 5.0, "mutual_info": 2.0, "active_units": 12}) == 90.0

    @pytest.mark.parametrize("metrics, named", [
        ({"kl": 0.01, "mutual_info": 2.0, "active_units": 3}, "KL 0.01 nats < 0.1"),
        ({"kl": 28.0, "mutual_info": 0.16, "active_units": 0}, "mutual information 0.16 nats < 0.5"),
        ({"kl": 2.0, "mutual_info": 0.9, "active_units": 0}, "0 active units < 1"),
    ])
    def test_each_minimum_rejects(self, metrics, named):
        reason = self.guard.collapse(metrics)
        assert reason == named
        assert self.guard.objective(70.0, metrics) == 70.0 + COLLAPSE_PENALTY

    def test_figures_a_model_does_not_report_are_not_checked(self):
        assert self.guard.collapse({"kl": 40.0}) is None  # a per-step latent has no mutual information
        assert CollapseGuard().collapse({"kl": 0.0, "mutual_info": 0.0, "active_units": 0}) is None
        assert CollapseGuard().describe() == "off"
        assert self.guard.describe() == "kl >= 0.1, mutual info >= 0.5, active units >= 1"
