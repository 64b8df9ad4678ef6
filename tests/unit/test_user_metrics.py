"""Loading user metrics: entry points of group qdebug.metrics, Python objects, refusals; a metric
failing on real statistics is stored as NaN with its error instead of losing the trace."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from qdebug import metrics, user_metrics
from qdebug.errors import QdebugError


def test_an_installed_entry_point_is_loaded_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ep_metrics_mod.py").write_text(
        "def noise_db(stats, scale):\n    '''10·log10(Σe²/n)'''\n"
        "    import numpy as np\n    return 10 * np.log10(stats['sum_e2'] / stats['count'])\n"
        "noise_db.unit = 'dB'\n"
    )
    dist = tmp_path / "ep_metrics-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-metrics\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[qdebug.metrics]\nnoise = ep_metrics_mod:noise_db\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    u = user_metrics.load_metric("noise")
    assert u.source == "entry point noise" and u.metric.name == "noise_db"
    assert u.metric.unit == "dB" and u.metric.description == "10·log10(Σe²/n)"
    with pytest.raises(QdebugError, match="no installed metric"):
        user_metrics.load_metric("not_installed_anywhere")
    sys.modules.pop("ep_metrics_mod", None)


def test_a_metric_object_and_duplicates() -> None:
    m = metrics.Metric("twice_mse", "", "2·Σe²/n", lambda s, _: 2 * s["sum_e2"] / s["count"])
    assert user_metrics.load_metric(m).metric is m
    with pytest.raises(QdebugError, match="two metrics named"):
        user_metrics.load_metrics([m, m])


def test_a_metric_failing_on_the_real_statistics_is_stored_as_nan_with_its_error(
    tmp_path: Path,
) -> None:
    def picky(stats, scale):  # type: ignore[no-untyped-def]
        """fails on more than three tensors"""
        if len(scale) > 3:
            raise ValueError("too many")
        return stats["sum_e2"]

    u = user_metrics.load_metric(picky)  # passes the 3-tensor trial
    sums = {s: np.ones(5) for s in metrics.STATS}
    with h5py.File(tmp_path / "t.h5", "w") as f:
        user_metrics.write(f.create_group("layers"), [u], sums, np.ones(5))
        ds = f["layers/custom/picky"]
        assert np.isnan(ds[()]).all() and "ValueError: too many" in ds.attrs["error"]
        assert ds.attrs["definition"] == "fails on more than three tensors"
