"""Shared by the benchmarks: the prepared Shakespeare corpus and the sentence-VAE they train."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

from pipelines.text import TextOptions, prepare_text  # noqa: E402
from pipelines.vocab import Vocab  # noqa: E402

DEFAULT_DATA = ROOT / "benchmarks" / "out" / "shakespeare"
# A moderate sentence VAE (the sizes of seqlvm/configs/sentence-vae.yaml).
MODEL = {"embedding_dim": 128, "hidden_dim": 192, "latent_dim": 16}


def prepare_shakespeare(data_dir: str | Path = DEFAULT_DATA, console=None) -> tuple[Path, Vocab]:
    """Prepare builtin:shakespeare into `data_dir` (a no-op when already prepared). Returns (dir, vocab)."""
    data_dir = Path(data_dir).absolute()
    prepare_text("builtin:shakespeare", data_dir, TextOptions(), console=console)
    return data_dir, Vocab.load(data_dir / "vocab.json")
