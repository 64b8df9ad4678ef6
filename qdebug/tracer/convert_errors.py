"""Converter failures in the user's terms: the Keras layer an MLIR location names, the
converter's own reason without its locations, and the fix (``translate``)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from qdebug.errors import ConversionError

#: Fixes for ops the TFLite builtins lack, by TensorFlow op name.
_OP_FIXES: dict[str, str] = {
    "Erf": "use keras.activations.gelu / Activation('gelu') (a builtin int8 GELU) or a tanh "
    "approximation instead of tf.math.erf",
}


def layer_names_in(text: str, layer_names: Iterable[str]) -> list[str]:
    """Keras layer names that occur as scope components (``name`` or ``name_N``) in ``text``."""
    found = []
    for name in layer_names:
        short = name.rpartition("/")[2]
        if re.search(rf"(?:^|[/\"(@;]){re.escape(short)}(?:_\d+)?/", text):
            found.append(name)
    return found


def translate(exc: Exception, layer_names: list[str], log: str = "") -> ConversionError:
    """A converter exception as a one-line error naming the op, the layer and the fix."""
    text = f"{exc}\n{log}"
    ops = re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text)
    if not ops:
        ops = re.findall(r"tf\.(\w+)\b[^\n]*(?:not supported|unsupported|is not supported)", text)
    layers = layer_names_in(text, layer_names)
    if ops:
        op = ops[0]
        where = f"layer '{layers[-1]}'" if layers else "a layer"
        fix = _OP_FIXES.get(op, f"replace {op} with ops that have TFLite builtin kernels")
        return ConversionError(
            f"conversion to INT8 failed: {where} uses TensorFlow op {op}, which has no TFLite "
            f"builtin kernel (it would need Select TF ops, which the LiteRT interpreter cannot "
            f"run)",
            f"{fix}, or keep the layer out of the model",
        )
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    reason = converter_reason(text) or first
    reason = re.sub(r"(?<=\S)(Node number \d+)", r" \1", reason)  # LiteRT glues them together
    if re.search(r"gather index out of bounds", reason, re.IGNORECASE):
        return ConversionError(
            "calibration failed: a sample holds an index outside its table (GATHER index out "
            f"of bounds{', layer ' + repr(layers[-1]) if layers else ''}): a token id at or "
            "above an Embedding's input_dim, or a negative one",
            "give ids in 0 … input_dim − 1 (the vocabulary the model was built with) in --data "
            "and --calib",
        )
    where = f" near layer '{layers[-1]}'" if layers else ""
    fix = next(
        (fix for pattern, fix in _REASON_FIXES if re.search(pattern, reason)),
        "run with --debug for the full log",
    )
    return ConversionError(f"conversion to INT8 failed{where}: {reason[:300]}", fix)


#: Fixes for converter failures, by a pattern of the reason.
_REASON_FIXES: tuple[tuple[str, str], ...] = (
    (
        r"TensorList\w*'? op requires element_shape to be static",
        "a recurrent layer (LSTM, GRU, RNN) loops over time with a dynamic shape, which TFLite "
        "builtins cannot run: build it with unroll=True, so that each time step becomes ops of "
        "its own",
    ),
)


def _strip_loc(message: str) -> str:
    """An MLIR diagnostic without its ``loc(...)`` prefix (the location is the layer path)."""
    if not message.startswith("loc("):
        return message
    depth = 0
    for i, ch in enumerate(message):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return message[i + 1 :].lstrip(": ").strip()
    return message


def converter_reason(text: str) -> str | None:
    """The first ``error:`` diagnostic in a converter log, without its MLIR location."""
    for line in text.splitlines():
        if "error:" in line:
            msg = _strip_loc(line.split("error:", 1)[1].strip())
            if msg:
                return msg
    return None
