"""The manifest of a prepared dataset, written in one place: what every dataset records (format, modality, source,
fingerprint, options, per-split counts and shards) and what its modality adds."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, is_dataclass
from pipelines.shards import MANIFEST, SPLITS, Folder, SplitSummary, check_shards_present


def merged_splits(per_item: list[dict[str, SplitSummary]]) -> dict[str, SplitSummary]:
    """The splits of a dataset from each item's, in item order (so shards are listed the same way however the
    items ran)."""
    splits = {s: SplitSummary() for s in SPLITS}
    for summaries in per_item:
        for name, summary in summaries.items():
            splits[name].add(summary)
    return splits


def write_manifest(folder: Folder, *, format: str, modality: str, source: str, fingerprint: str, options,
                   splits: dict[str, SplitSummary], started: float, **details) -> dict:
    """Write `manifest.json` into `folder` (last: its presence marks a complete dataset), once every shard it lists
    is there, and return it."""
    check_shards_present(folder, splits)
    manifest = {
        "format": format, "modality": modality, "source": source, "fingerprint": fingerprint,
        "options": asdict(options) if is_dataclass(options) else dict(options),
        "splits": {name: asdict(summary) for name, summary in splits.items()},
        "seconds": round(time.time() - started, 1), **details,
    }
    folder.write_bytes(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return manifest
