"""Quantizing a float ``.tflite`` with ai-edge-quantizer (AEQ): named recipes, recipe files,
per-op recipes, calibration on the user's samples.

``quantize_with_aeq(float_model, recipe, samples)`` repairs the float model where AEQ needs it
(``float_tflite``), calibrates it on ``samples`` when the recipe needs calibration, quantizes
it and checks that LiteRT loads and runs the result on the first sample. A recipe is one of
``RECIPES``' names, AEQ's own recipe function names (``static_wi8_ai8`` ...), a path to a
recipe JSON file, or the recipe itself (a list of AEQ's config entries: ``regex`` (matched with
``re.search`` against an op's scope, its output tensor names each followed by ``;``),
``operation`` (a TFLite op name or ``*``), ``algorithm_key`` and ``op_config``; for an op
matched by several entries the last one wins; an entry for every op, ``regex`` ``.*`` and
``operation`` ``*``, replaces the entries before it). ``op_scope_regex`` gives the regex that
matches exactly one op, for per-op (mixed-precision) recipes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdebug.errors import QdebugError, TfliteModelError
from qdebug.tracer.float_tflite import prepare_float_tflite
from qdebug.tracer.tfenv import without_info_lines

PACKAGE = "ai-edge-quantizer"
INSTALL_HINT = "pip install 'qdebug[trace]' (or pip install ai-edge-quantizer==0.10.0)"

#: qdebug's names of AEQ's recipes → AEQ's recipe function (``ai_edge_quantizer.recipe``).
#: The static ones (``int8``, ``int16``) keep the model's inputs and outputs float, with a
#: QUANTIZE and a DEQUANTIZE at the edges as the TFLite converter does by default, so that the
#: inputs' quantization is an op of its own, measured like any other; AEQ's own names
#: (``static_wi8_ai8``...) give its models as it makes them (integer inputs and outputs).
RECIPES = {
    "int8": "static_wi8_ai8",
    "int16": "static_wi8_ai16",
    "dynamic": "dynamic_wi8_afp32",
    "weight-only": "weight_only_wi8_afp32",
}
DEFAULT_RECIPE = "int8"
_AEQ_NAMES = {*RECIPES.values(), "dynamic_wi4_afp32", "weight_only_wi4_afp32"}
_STATIC = ("int8", "int16")
#: The entries that keep a static recipe's graph inputs and outputs float.
FLOAT_IO: tuple[dict[str, Any], ...] = tuple(
    {"regex": ".*", "operation": edge, "algorithm_key": "no_quantize", "op_config": {}}
    for edge in ("INPUT", "OUTPUT"))
#: Calibration threads (AEQ's default is 16).
_THREADS = 2

RecipeSpec = str | Path | list[dict[str, Any]]


@dataclass(frozen=True)
class AeqResult:
    """A float ``.tflite`` quantized by AEQ."""

    tflite: bytes
    """The quantized model."""
    float_tflite: bytes
    """The float model it was quantized from (repaired where AEQ needs it; computes the same
    as the given one): the float side of the pair."""
    recipe_name: str
    """The recipe as given: a name of ``RECIPES``, an AEQ recipe name, a file's path, or
    ``custom`` for a recipe passed as a list."""
    recipe_json: str
    """The recipe AEQ applied, as JSON (what ``qdebug export`` writes beside the model)."""
    version: str
    """AEQ's version."""
    repairs: tuple[str, ...]
    """What was repaired in the float model, in words."""
    calibrated: int
    """Samples calibrated on (0: the recipe needs no calibration)."""


def aeq_available() -> bool:
    """Whether ai-edge-quantizer is installed (found without importing it)."""
    return importlib.util.find_spec("ai_edge_quantizer") is not None


def require_aeq() -> None:
    """Refuse, in one line saying what to install, when ai-edge-quantizer is missing."""
    if not aeq_available():
        raise QdebugError(f"quantizing a float .tflite needs {PACKAGE}, which is not "
                          "installed", INSTALL_HINT)


def aeq_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return "?"


def op_scope_regex(output_tensor_names: Sequence[str]) -> str:
    """The AEQ ``regex`` that matches exactly the op whose outputs are these tensors."""
    return "^" + "".join(re.escape(n) + ";" for n in output_tensor_names) + "$"


def resolve_recipe(spec: RecipeSpec | None) -> tuple[str, list[dict[str, Any]]]:
    """The recipe's name (as given) and its AEQ config entries."""
    require_aeq()
    from ai_edge_quantizer import recipe as aeq_recipe

    if spec is None:
        spec = DEFAULT_RECIPE
    if isinstance(spec, list):
        return "custom", _checked(spec, "the recipe")
    name = str(spec)
    if name in RECIPES or name in _AEQ_NAMES:
        fn = getattr(aeq_recipe, RECIPES.get(name, name))
        edges = [dict(e) for e in FLOAT_IO] if name in _STATIC else []
        return name, json.loads(json.dumps(fn())) + edges
    path = Path(name)
    if not path.is_file():
        raise QdebugError(
            f"--recipe {name}: neither a recipe name nor a file",
            f"give one of {', '.join(RECIPES)}, or a recipe .json file",
        )
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise QdebugError(f"--recipe {name}: not a JSON file ({exc})",
                          "give a recipe .json as ai-edge-quantizer writes it") from None
    return name, _checked(entries, f"--recipe {name}")


def _checked(entries: Any, what: str) -> list[dict[str, Any]]:
    if (not isinstance(entries, list) or not entries
            or not all(isinstance(e, dict) and "regex" in e and "operation" in e
                       for e in entries)):
        raise QdebugError(
            f"{what} is not an ai-edge-quantizer recipe (a non-empty list of entries with "
            "'regex', 'operation' and 'op_config')",
            "start from one qdebug export wrote, or one of the named recipes",
        )
    return entries


def _calibration(sig: str, names: Sequence[str], samples: Iterable[Sequence[np.ndarray]],
                 limit: int | None) -> list[dict[str, np.ndarray]]:
    out: list[dict[str, np.ndarray]] = []
    for sample in samples:
        if limit is not None and len(out) >= limit:
            break
        out.append({n: np.asarray(x)[None] for n, x in zip(names, sample, strict=True)})
    if not out:
        raise QdebugError("no calibration samples", "give --calib DATA with samples")
    return out


def _aeq_failed(stage: str, exc: BaseException) -> QdebugError:
    text = " ".join(str(exc).split())[:300] or type(exc).__name__
    return TfliteModelError(f"{PACKAGE} {aeq_version()} failed to {stage} the model: {text}",
                            "try another --recipe, or quantize it yourself and give the pair "
                            "with --tflite")


def _check_runs(quantized: bytes, first: dict[str, np.ndarray], inputs: Sequence[str]) -> None:
    """LiteRT must load and run what AEQ wrote (it can write zero points LiteRT refuses)."""
    from qdebug.tracer.litert import LiteModel

    try:
        lite = LiteModel(quantized, preserve=False)
        lite.invoke([first[n][0] for n in inputs])
    except (QdebugError, ValueError, RuntimeError) as exc:
        text = " ".join(str(exc).split())[:300]
        raise TfliteModelError(
            f"the model {PACKAGE} {aeq_version()} wrote does not run on LiteRT: {text}",
            "try another --recipe",
        ) from None


def quantize_with_aeq(
    float_model: bytes | Path,
    recipe: RecipeSpec | None,
    samples: Iterable[Sequence[np.ndarray]],
    *,
    calib_samples: int | None = None,
) -> AeqResult:
    """Quantize a float ``.tflite`` with AEQ.

    Args:
        float_model: the float model's bytes or path.
        recipe: see the module docstring (None: ``int8``, static int8 weights and
            activations).
        samples: calibration samples, each a sequence of arrays in the graph's input order,
            without the batch dimension (as ``qdebug.tracer.data.load_data`` yields them).
        calib_samples: calibrate on at most this many.

    Returns:
        The quantized model, the float model it was made from, and the recipe applied.
    """
    name, entries = resolve_recipe(recipe)
    content = Path(float_model).read_bytes() if isinstance(float_model, Path) else float_model
    prepared = prepare_float_tflite(bytes(content))
    from ai_edge_quantizer import quantizer

    # AEQ's progress bars and reports, LiteRT's warning about preserved tensors and the INFO
    # line of the XNNPACK interpreters it calibrates with are AEQ's business: qdebug shows
    # its own progress.
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), \
            without_info_lines(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            q = quantizer.Quantizer(bytearray(prepared.model))
            q.load_quantization_recipe(entries)
        except (ValueError, KeyError, TypeError) as exc:
            raise QdebugError(f"the recipe {name} is refused by {PACKAGE}: "
                              f"{' '.join(str(exc).split())[:300]}",
                              "fix the recipe's entries") from None
        calib = _calibration(prepared.signature, prepared.inputs, samples, calib_samples)
        try:
            qsvs = (q.calibrate({prepared.signature: calib}, num_threads=_THREADS)
                    if q.need_calibration else None)
        except Exception as exc:  # AEQ raises bare ValueErrors and interpreter errors
            raise _aeq_failed("calibrate", exc) from None
        try:
            result = q.quantize(qsvs, enable_progress_bar=False, enable_progress_report=False)
        except Exception as exc:
            raise _aeq_failed("quantize", exc) from None
    if result.quantized_model is None:
        raise _aeq_failed("quantize", RuntimeError("no model written"))
    quantized = bytes(result.quantized_model)
    _check_runs(quantized, calib[0], prepared.inputs)
    return AeqResult(
        tflite=quantized,
        float_tflite=prepared.model,
        recipe_name=name,
        recipe_json=json.dumps(result.recipe, indent=1),
        version=aeq_version(),
        repairs=prepared.repairs,
        calibrated=len(calib) if qsvs is not None else 0,
    )
