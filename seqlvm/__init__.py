"""seqlvm: sequential latent-variable models trained with Ray and tracked in MLflow."""
from __future__ import annotations

import importlib.util
from pathlib import Path

__version__ = "0.1.0"


def package_folders(*names: str) -> list[Path]:
    """The folder of each named package, from where Python imported it (or would, without importing it): a
    checkout, an installed wheel, a cluster image, or a Ray job's `py_modules`, where each package has a folder of
    its own, so no package's place can be derived from another's."""
    return [Path(importlib.util.find_spec(name).origin).resolve().parent for name in names]
