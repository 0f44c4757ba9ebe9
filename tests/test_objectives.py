import math

import pytest
import torch

from seqlvm.objectives import gaussian_kl, kl_weight, log_normal, word_dropout


def test_gaussian_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(7), torch.ones(7))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(gaussian_kl(mu, logvar), expected, atol=1e-5)


def test_log_normal_matches_torch_distributions():
    x, mu, logvar = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    expected = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(x).sum(-1)
    assert torch.allclose(log_normal(x, mu, logvar), expected, atol=1e-5)
    assert torch.allclose(log_normal(x), torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1), atol=1e-5)


# Bowman et al. (2016), Figure 2: the KL weight of their sigmoid schedule, every 100 steps (the table printed beside
# the figure, ../shared/papers/001_7f681c4ae4df70dc.txt).
FIGURE_2 = [(1, 0.000435), (101, 0.000555), (201, 0.000708), (301, 0.000903), (401, 0.001152), (501, 0.001469),
            (601, 0.001874), (701, 0.002389), (801, 0.003047), (901, 0.003884), (1001, 0.004951), (1101, 0.006309),
            (1201, 0.008036), (1301, 0.010231), (1401, 0.013018), (1501, 0.016551), (1601, 0.021022),
            (1701, 0.026669), (1801, 0.03378), (1901, 0.042705), (2001, 0.053856), (2101, 0.067712),
            (2201, 0.084814), (2301, 0.105745), (2401, 0.131103)]


def test_sigmoid_schedule_reproduces_bowman_figure_2():
    """The paper gives no rate or midpoint, only the curve. A logistic's log-odds are linear in the step, so two of
    the figure's points fix both; the schedule with them must then give the other 23 points."""
    (s0, w0), (s1, w1) = FIGURE_2[0], FIGURE_2[-1]
    rate = (math.log(w1 / (1 - w1)) - math.log(w0 / (1 - w0))) / (s1 - s0)
    midpoint = s0 - math.log(w0 / (1 - w0)) / rate
    assert 0.002 < rate < 0.003 and 3000 < midpoint < 3400
    for step, expected in FIGURE_2[1:-1]:
        got = kl_weight(step, "sigmoid", rate=rate, midpoint=midpoint)
        assert got == pytest.approx(expected, rel=0.01), step


def test_sigmoid_schedule_is_monotone_and_bounded():
    values = [kl_weight(s, "sigmoid", rate=0.01, midpoint=500, ceiling=0.8) for s in range(0, 3000, 50)]
    assert all(a < b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(0.8, abs=1e-3) and values[0] < 0.01


def test_steep_sigmoid_far_from_its_midpoint_does_not_overflow():
    # A sweep can draw a steep rate with the default midpoint: exp(0.78 * 2500) overflows a double.
    assert kl_weight(1, "sigmoid", rate=0.78, midpoint=2500) == pytest.approx(0.0, abs=1e-300)
    assert kl_weight(10_000, "sigmoid", rate=0.78, midpoint=2500) == 1.0


def test_linear_and_constant_schedules():
    assert kl_weight(0, "linear", warmup_steps=100) == 0.0
    assert kl_weight(50, "linear", warmup_steps=100) == pytest.approx(0.5)
    assert kl_weight(1000, "linear", warmup_steps=100) == 1.0
    assert kl_weight(1, "constant", ceiling=0.3) == 0.3
    with pytest.raises(ValueError):
        kl_weight(1, "cosine")


def test_cyclical_schedule_rises_holds_and_restarts():
    weights = [kl_weight(step, "cyclical", cycle_steps=10, cycle_rise=0.5, ceiling=0.8) for step in range(1, 31)]
    assert weights[0] == pytest.approx(0.16) and weights[4] == pytest.approx(0.8)  # rises over 5 steps
    assert weights[4:10] == [pytest.approx(0.8)] * 6  # holds the ceiling for the rest of the cycle
    assert weights[10] == pytest.approx(0.16) and weights[:10] == weights[10:20] == weights[20:]  # restarts
    assert kl_weight(7, "cyclical", cycle_steps=10, cycle_rise=1.0) == pytest.approx(0.7)


def test_word_dropout_rate_and_protected_positions():
    torch.manual_seed(0)
    tokens = torch.randint(4, 1000, (200, 50))
    protected = torch.zeros_like(tokens, dtype=torch.bool)
    protected[:, 0] = True
    dropped = word_dropout(tokens, keep_rate=0.62, unk_id=1, protected=protected)
    replaced = (dropped[:, 1:] == 1).float().mean().item()
    assert replaced == pytest.approx(0.38, abs=0.02)
    assert torch.equal(dropped[:, 0], tokens[:, 0])
    kept = dropped != 1
    assert torch.equal(dropped[kept], tokens[kept])


def test_word_dropout_extremes():
    tokens = torch.randint(4, 100, (10, 8))
    protected = torch.zeros_like(tokens, dtype=torch.bool)
    protected[:, 0] = True
    assert torch.equal(word_dropout(tokens, 1.0, 1, protected), tokens)
    inputless = word_dropout(tokens, 0.0, 1, protected)
    assert (inputless[:, 1:] == 1).all() and torch.equal(inputless[:, 0], tokens[:, 0])
