"""The one ranking of layers by a metric: the worst layers of the summary, the reports and the
viewer. Only layers whose numbers may be trusted are ranked (``LayerRecord.ranked``: matched
and verified, or an input), and a layer without the value (NaN) never is. Culprits are not a
ranking by one metric: they are ``qdebug.analysis.culprits``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qdebug.store.schema import LayerRecord


def lowest(
    layers: Sequence[LayerRecord], values: np.ndarray, n: int | None = None
) -> list[int]:
    """Indices of the ranked layers that have a value, lowest value first (ties in layer
    order; +∞ last); at most ``n``."""
    v = np.asarray(values, dtype=float)
    order = [int(i) for i in np.argsort(np.where(np.isnan(v), np.inf, v), kind="stable")
             if layers[int(i)].ranked and not np.isnan(v[int(i)])]
    return order if n is None else order[:n]
