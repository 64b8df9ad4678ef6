"""Comparing a merged trace with the trace of one whole run, dataset by dataset."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

#: Datasets that must be equal bit for bit (same batches, same computations).
EXACT = ("metrics/layers/per_sample", "metrics/outputs/per_sample", "metrics/outputs/top1_match",
         "samples/index", "samples/inputs", "activations", "samples/worst",
         "samples/layer_worst", "analysis/ranges",
         "analysis/segment_check", "analysis/weights", "model", "layers", "outputs", "ops")
#: Datasets equal to float rounding (sums added in another order).
CLOSE = ("metrics/layers/pooled", "metrics/outputs/pooled", "metrics/ops/pooled",
         "analysis/channels", "analysis/culprits/score")


def _datasets(f: h5py.File, prefix: str) -> dict[str, np.ndarray]:
    obj = f[prefix]
    if isinstance(obj, h5py.Dataset):
        return {prefix: obj[()]}
    out: dict[str, np.ndarray] = {}
    obj.visititems(lambda name, o: out.__setitem__(f"{prefix}/{name}", o[()])
                   if isinstance(o, h5py.Dataset) else None)
    return out


def differences(whole: Path, merged: Path, rtol: float = 1e-9) -> list[str]:
    """What differs between the two traces (empty: the merge is the whole run)."""
    bad: list[str] = []
    with h5py.File(whole) as a, h5py.File(merged) as b:
        for key in ("n_samples", "n_stored", "segments", "schema_version", "model_sha256"):
            if a.attrs.get(key) != b.attrs.get(key):
                bad.append(f"attribute {key}: {a.attrs.get(key)} vs {b.attrs.get(key)}")
        for group, exact in [(g, True) for g in EXACT] + [(g, False) for g in CLOSE]:
            if (group in a) != (group in b):
                bad.append(f"{group} in one trace only")
                continue
            if group not in a:
                continue
            da, db = _datasets(a, group), _datasets(b, group)
            if sorted(da) != sorted(db):
                bad.append(f"{group}: datasets {sorted(set(da) ^ set(db))} in one trace only")
                continue
            for key, x in da.items():
                y = db[key]
                if x.shape != y.shape:
                    bad.append(f"{key}: shape {x.shape} vs {y.shape}")
                elif x.dtype.kind in "fiub" and not exact:
                    if not np.allclose(x, y, rtol=rtol, atol=0, equal_nan=True):
                        bad.append(f"{key}: not equal to float rounding")
                elif x.dtype.kind == "f":
                    if not np.array_equal(x, y, equal_nan=True):
                        bad.append(f"{key}: not bit for bit equal")
                elif not np.array_equal(x, y):
                    bad.append(f"{key}: not equal")
        for key in ("layer", "kind"):
            x = a["analysis/culprits"][key][()]
            y = b["analysis/culprits"][key][()]
            if not np.array_equal(x, y):
                bad.append(f"culprits/{key}: {x} vs {y}")
    return bad
