"""A model input as text, for the detail screen's worst samples: small images drawn in shades,
anything else as a value histogram."""

from __future__ import annotations

import numpy as np
from rich.text import Text

from qdebug.tui.layer_rows import shown

_SHADES = " ░▒▓█"
#: Largest image side drawn pixel by pixel (two characters per pixel).
MAX_SIDE = 48


def _image(x: np.ndarray) -> np.ndarray | None:
    """``x`` as a 2-D grey image when it looks like one (H×W, H×W×C with C ≤ 4), else None."""
    a = np.squeeze(np.asarray(x, dtype=np.float64))
    if a.ndim == 3 and a.shape[-1] <= 4:
        a = a.mean(axis=-1)
    if a.ndim != 2 or max(a.shape) > MAX_SIDE or min(a.shape) < 2:
        return None
    return a


def input_text(sample: int, inputs: dict[str, np.ndarray]) -> Text:
    """Each input of one sample: name, shape, range, and the image or a histogram."""
    text = Text()
    text.append(f"sample {sample}: its input", style="bold")
    text.append(" (activations not stored; qdebug export --inputs writes it)\n\n", style="dim")
    for name, x in inputs.items():
        a = np.asarray(x, dtype=np.float64)
        finite = a[np.isfinite(a)]
        lo = float(finite.min()) if finite.size else float("nan")
        hi = float(finite.max()) if finite.size else float("nan")
        text.append(f"{shown(name)} ", style="bold")
        text.append(f"shape {tuple(a.shape)}  min {lo:.4g}  max {hi:.4g}  "
                    f"mean {float(finite.mean()) if finite.size else float('nan'):.4g}\n",
                    style="dim")
        img = _image(a)
        if img is not None:
            span = hi - lo if hi > lo else 1.0
            levels = np.clip(((img - lo) / span * (len(_SHADES) - 1)).round(), 0,
                             len(_SHADES) - 1).astype(int)
            for row in levels:
                text.append("".join(_SHADES[v] * 2 for v in row) + "\n")
        elif finite.size:
            counts, edges = np.histogram(finite, bins=10)
            top = max(int(counts.max()), 1)
            for c, e in zip(counts, edges[:-1], strict=True):
                text.append(f"{e:>10.3g} ", style="dim")
                text.append("█" * int(30 * c / top) + f" {int(c)}\n")
        text.append("\n")
    return text
