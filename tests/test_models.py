import ast
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.stream import collate
from pipelines.description import DataDescription
from pipelines.vocab import SPECIALS
from seqlvm.checkpoint import load_model, save_checkpoint
from seqlvm.evaluation import active_units, evaluate, importance_weighted_nll, samples_per_chunk
from seqlvm.models import FRAME_MODALITIES, MODELS, FrameModel, TextModel, build_model, build_model_from_args

VOCAB = 50


def batch_of(sequences):
    return collate(np.asarray(s) for s in sequences)


def random_batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return batch_of([rng.integers(4, VOCAB, size=rng.integers(2, 9)) for _ in range(n)])


def small_vae(**overrides):
    config = dict(embedding_dim=16, hidden_dim=24, latent_dim=4, word_keep_rate=1.0)
    config.update(overrides)
    return build_model("sentence-vae", config, VOCAB)


def test_registry_lists_both_models():
    assert {"sentence-vae", "rnnlm"} <= set(MODELS)


def test_forward_returns_loss_and_summed_totals():
    model = small_vae()
    batch = random_batch()
    out = model(batch, kl_weight=0.5)
    assert out.loss.ndim == 0 and out.loss.requires_grad
    assert out.totals["sequences"] == 6
    assert out.totals["steps"] == int(batch["lengths"].sum())
    expected = (out.totals["recon"] + 0.5 * out.totals["kl"]) / 6
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def plain_and_averaged_recon(latent_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction terms of a plain multi-sample VAE and its hidden-averaging twin: same weights, same noise."""
    plain = small_vae(latent_samples=latent_samples, average_hidden=False)
    averaged = small_vae(latent_samples=latent_samples, average_hidden=True)
    averaged.load_state_dict(plain.state_dict())
    batch = random_batch()
    results = []
    for model in (plain, averaged):
        torch.manual_seed(1)
        results.append(model(batch).totals["recon"])
    return results[0], results[1]


def test_hidden_state_averaging_equals_plain_vae_with_one_sample():
    plain, averaged = plain_and_averaged_recon(1)
    assert torch.allclose(plain, averaged)


def test_hidden_state_averaging_differs_from_sample_averaging_with_several_samples():
    plain, averaged = plain_and_averaged_recon(3)
    assert not torch.allclose(plain, averaged)


def test_padding_does_not_change_per_sentence_likelihood():
    model = small_vae().eval()
    short, long = np.array([5, 6, 7]), np.array([8, 9, 10, 11, 12, 13, 14])
    z = torch.randn(1, 1, 4)
    alone = batch_of([short])
    padded = batch_of([short, long])
    nll_alone = model.reconstruction_nll(z, alone["inputs"], alone["targets"])
    nll_padded = model.reconstruction_nll(z.expand(1, 2, 4), padded["inputs"], padded["targets"])
    assert nll_padded[0, 0].item() == pytest.approx(nll_alone[0, 0].item(), rel=1e-5)
    mu_alone, _ = model.encode(alone)
    mu_padded, _ = model.encode(padded)
    assert torch.allclose(mu_alone[0], mu_padded[0], atol=1e-5)


def test_importance_weights_average_to_the_elbo_and_their_bound_is_tighter():
    """log w = log p(x, z) - log q(z | x) with z ~ q: its mean over samples is the ELBO that the forward pass computes
    with its analytic KL (checked against the forward pass's own samples, to Monte Carlo precision), and log mean w,
    the importance-weighted bound, is tighter than that ELBO."""
    torch.manual_seed(0)
    model = small_vae().eval()
    batch = random_batch(n=8)
    with torch.no_grad():
        log_w = model.log_importance_weights(batch, 2000)
        passes = [model(batch).totals for _ in range(400)]
        elbo_nll = sum((p["recon"] + p["kl"]).item() for p in passes) / len(passes)
        iw = importance_weighted_nll(model, batch, num_samples=500, chunk=64).sum().item()
    assert -log_w.mean(0).sum().item() == pytest.approx(elbo_nll, rel=5e-4)
    assert iw < elbo_nll - 0.1


def test_importance_sample_chunks_respect_the_logits_budget():
    model, batch = small_vae(), random_batch()
    per_sample = batch["targets"].numel() * VOCAB * 4
    assert samples_per_chunk(model, batch, budget_bytes=per_sample * 3 + 1) == 3
    assert samples_per_chunk(model, batch, budget_bytes=1) == 1
    filter_model = build_model("dssm", {"state_dim": 4, "importance_samples": 3}, VOCAB)
    assert samples_per_chunk(filter_model, batch, budget_bytes=per_sample * 3 + 1) == 1  # 3 particles a sample


def test_importance_weights_with_hidden_averaging_group_latents():
    model = small_vae(latent_samples=2, average_hidden=True).eval()
    assert model.log_importance_weights(random_batch(n=5), 7).shape == (7, 5)


def test_rnnlm_exact_likelihood_equals_its_loss():
    model = build_model("rnnlm", dict(embedding_dim=8, hidden_dim=8, word_keep_rate=1.0), VOCAB).eval()
    batch = random_batch()
    with torch.no_grad():
        out = model(batch)
        nll = importance_weighted_nll(model, batch, num_samples=10)
    assert nll.sum().item() == pytest.approx(out.totals["recon"].item(), rel=1e-5)
    assert out.totals["kl"] == 0


def test_evaluate_reports_bounds_and_active_units():
    torch.manual_seed(0)
    model = small_vae()
    metrics = evaluate(model, [random_batch(seed=s) for s in range(3)], iw_samples=20, chunk=8)
    assert metrics["sentences"] == 18
    assert metrics["iw_nll"] <= metrics["nll_bound"] + 1e-3
    assert metrics["ppl_bound"] == pytest.approx(math.exp(metrics["nll_bound"] * 18 / metrics["tokens"]), rel=1e-6)
    assert 0 <= metrics["active_units"] <= 4


def test_active_units_counts_dimensions_that_vary():
    means = torch.zeros(100, 3)
    means[:, 1] = torch.linspace(-1, 1, 100)
    assert active_units(means) == 1


def test_generation_returns_vocabulary_ids_and_stops():
    torch.manual_seed(0)
    model = small_vae().eval()
    ids = model.sample_prior(4, greedy=False, max_len=12)
    assert ids.shape[0] == 4 and ids.shape[1] <= 12
    assert int(ids.min()) >= 0 and int(ids.max()) < VOCAB


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = small_vae(latent_samples=2)
    vocab = list(SPECIALS) + [f"w{i}" for i in range(VOCAB - 4)]
    data = DataDescription("text", fingerprint="f", words=tuple(vocab),
                           tokenisation={"lowercase": False, "tokenizer": "whitespace", "unit": "word"})
    save_checkpoint(tmp_path, model, data=data.to_dict(), step=3, config={"model_name": "sentence-vae"})
    loaded = load_model(str(tmp_path))
    assert loaded.payload["step"] == 3 and loaded.data == data and loaded.data.vocab.words == vocab
    assert loaded.model.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key])


def test_a_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    from pipelines.errors import SeqlvmError

    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SeqlvmError, match="not a loadable seqlvm checkpoint"):
        load_model(str(tmp_path))


MODEL_CODE = sorted(Path(__file__).parents[1].joinpath("seqlvm", "models").glob("*.py")) + [
    Path(__file__).parents[1] / "seqlvm" / "objectives.py"]
ALLOWED_IMPORTS = ("__future__", "dataclasses", "math", "re", "typing", "collections", "torch", "pipelines.errors",
                   "pipelines.modalities", "pipelines.vocab", "seqlvm.models", "seqlvm.objectives")


def allowed(module: str) -> bool:
    """A listed module or one of its submodules: `torch.nn` is allowed, `torchvision` is not."""
    return any(module == name or module.startswith(f"{name}.") for name in ALLOWED_IMPORTS)


def test_allowed_imports_match_whole_module_names():
    assert allowed("torch") and allowed("torch.nn.functional") and allowed("seqlvm.models.base")
    assert not allowed("torchvision") and not allowed("seqlvm.models_extra") and not allowed("mathx")


def imports_of(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of each import statement in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module, [alias.name for alias in node.names]))
    return found


@pytest.mark.parametrize("path", MODEL_CODE, ids=lambda p: p.name)
def test_models_import_only_maths_and_shared_model_modules(path):
    model_modules = {cls.__module__ for cls in MODELS.values()}
    for module, names in imports_of(path):
        assert allowed(module), f"{path.name} imports {module}"
        if path.name != "__init__.py":  # the registry imports every model
            assert module not in model_modules, f"{path.name} imports the model module {module}"
        assert not [n for n in names if n.startswith("_")], f"{path.name} imports a private name of {module}"


def test_models_pull_in_no_training_ray_mlflow_or_file_io():
    code = "import sys, seqlvm.models, seqlvm.objectives; print(' '.join(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert not {m for m in loaded if m.split(".")[0] in ("ray", "mlflow", "pyarrow", "fsspec")
                or m.startswith(("seqlvm.training", "seqlvm.tracking", "seqlvm.cluster", "seqlvm.checkpoint",
                                 "pipelines.shards"))}


GLOBAL_LATENT = {"sentence-vae": True, "hybrid-vae": True, "nvdm": True, "rnnlm": False, "dssm": False}


@pytest.mark.parametrize("name", GLOBAL_LATENT)
def test_text_models_store_their_vocab_size_and_declare_their_capabilities(name):
    model = build_model(name, {}, VOCAB)
    args = model.constructor_args()
    assert isinstance(model, TextModel) and args["vocab_size"] == VOCAB and "frame_dim" not in args
    assert build_model_from_args(args).config == model.config
    assert model.has_global_latent == GLOBAL_LATENT[name] and model.has_mutual_information == (name == "dssm")
    batch = random_batch()
    if model.has_global_latent:
        assert model.encode(batch)[0].shape[0] == 6
    else:
        with pytest.raises(NotImplementedError):
            model.encode(batch)


def test_every_registered_model_is_a_text_or_a_frame_model():
    for cls in MODELS.values():
        assert issubclass(cls, TextModel) != issubclass(cls, FrameModel), cls.name
        assert cls.modalities == (("text",) if issubclass(cls, TextModel) else FRAME_MODALITIES)


class TestSentenceVAEAgainstCollapse:
    """Free bits and the bag-of-words loss change what the optimiser sees, never the reported ELBO."""

    def outputs(self, **objective):
        plain, changed = small_vae(), small_vae(**objective)
        changed.load_state_dict(plain.state_dict(), strict=False)
        batch, results = random_batch(), []
        for model in (plain, changed):
            torch.manual_seed(4)
            results.append(model(batch, kl_weight=1.0))
        return results

    def test_free_bits_raise_the_loss_of_small_kls_but_report_the_true_kl(self):
        plain, floored = self.outputs(free_bits=5.0)  # 5 nats a dimension: far above an untrained model's KL
        assert floored.totals["kl"] == plain.totals["kl"] and floored.totals["recon"] == plain.totals["recon"]
        mean_recon = plain.totals["recon"] / plain.totals["sequences"]
        assert floored.loss.item() == pytest.approx(mean_recon.item() + 4 * 5.0, rel=1e-5)
        assert floored.loss > plain.loss

    def test_the_bag_of_words_loss_is_added_to_the_loss_only(self):
        plain, bow = self.outputs(bow_weight=0.5)
        assert bow.totals["kl"] == plain.totals["kl"] and bow.totals["recon"] == plain.totals["recon"]
        assert bow.loss > plain.loss
        model = small_vae(bow_weight=0.5)
        model(random_batch(), kl_weight=1.0).loss.backward()  # and it trains the bag-of-words layer
        assert model.bag_of_words.weight.grad.abs().sum() > 0

    def test_the_encoder_over_padding_equals_the_packed_encoder(self):
        model = small_vae()
        batch = random_batch()
        packed = torch.nn.utils.rnn.pack_padded_sequence(model.embedding(batch["targets"]), batch["lengths"],
                                                         batch_first=True, enforce_sorted=False)
        _, (h_last, _) = model.encoder(packed)
        mu, logvar = model.to_posterior(h_last[-1]).chunk(2, dim=-1)
        got_mu, got_logvar = model.encode(batch)
        assert torch.allclose(got_mu, mu, atol=1e-6) and torch.allclose(got_logvar, logvar, atol=1e-6)
