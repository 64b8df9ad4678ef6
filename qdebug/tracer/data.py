"""Input samples from .npy, .npz, a folder of images, or a Python function; validated lazily."""

from __future__ import annotations

import itertools
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qdebug.errors import DataError
from qdebug.store.filekind import refuse_special

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
#: Samples taken from a data function whose length is unknown (a generator, ``repeat()``)
#: when ``--samples`` does not say: an endless iterable must not make an endless run.
UNSIZED_LIMIT = 10_000
#: What numpy and zipfile raise on a damaged or unusual ``.npy``/``.npz``: object arrays
#: (pickles, refused), bad CRCs, truncated data, impossible shapes.
_NPY_ERRORS = (ValueError, OSError, EOFError, OverflowError, zipfile.BadZipFile, KeyError,
               MemoryError)


@dataclass(frozen=True)
class InputSpec:
    """One model input: name and shape without the batch dimension (None = any size)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    """``float32``, or an integer/bool type for inputs that are ids or masks (passed through
    unscaled)."""

    @property
    def is_float(self) -> bool:
        """Whether the input takes real values (else ids, indices or masks)."""
        return np.dtype(self.dtype).kind == "f"

    def describe(self, batch: bool = True) -> str:
        """The shape as users write it, with a leading ``N`` when ``batch``."""
        dims = ["?" if d is None else str(d) for d in self.shape]
        return (
            "("
            + ", ".join((["N"] if batch else []) + dims)
            + ("," if len(dims) == 1 and not batch else "")
            + ")"
        )


@dataclass
class SampleSource:
    """A re-iterable sequence of validated samples; each sample is one float32 array per input,
    without the batch dimension."""

    description: str
    inputs: list[InputSpec]
    _factory: Callable[[], Iterable[Any]]
    length: int | None = None
    limit: int | None = None
    warnings: list[str] = field(default_factory=list)
    taken: int = 0
    """Samples the last complete iteration gave (what calibration really used)."""
    pair_labels: dict[int, Any] = field(default_factory=dict)
    """The ``y`` of each ``(x, y)`` pair seen, by sample position (``--labels data``)."""
    capped: bool = False
    """``limit`` is ``UNSIZED_LIMIT``, chosen here, not by the user."""

    def __len__(self) -> int:
        n = self.length if self.length is not None else 0
        return min(n, self.limit) if self.limit is not None else n

    @property
    def known_length(self) -> int | None:
        """The number of samples when known before iterating."""
        if self.length is None:
            return self.limit
        return len(self)

    def count_all(self) -> int:
        """Samples here (after the limit). A source of unknown length (a data function) is
        counted by iterating it once without validating."""
        if self.length is not None:
            return len(self)
        n = 0
        for _ in self._factory():
            n += 1
            if self.limit is not None and n >= self.limit:
                break
        return n

    def window(self, start: int, count: int) -> SampleSource:
        """Samples ``start`` … ``start + count − 1`` (a shard's slice); those before are
        skipped unvalidated."""
        factory = self._factory
        return SampleSource(
            self.description,
            self.inputs,
            lambda: itertools.islice(factory(), start, start + count),
            length=count,
            warnings=self.warnings,
        )

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        count = 0
        varied = False  # some float input of some sample holds more than one value
        floats = [k for k, spec in enumerate(self.inputs) if spec.is_float]
        for i, raw in enumerate(self._factory()):
            if self.limit is not None and i >= self.limit:
                if self.capped:
                    self._warn(
                        f"{self.description} gives samples without a known length: traced the "
                        f"first {self.limit} (give --samples N to choose how many)"
                    )
                break
            sample = self._validate(i, raw)
            varied = varied or any(_varies(sample[k]) for k in floats)
            yield sample
            count += 1
        if count == 0:
            raise DataError(f"{self.description} holds no samples", "give at least one sample")
        self.taken = count
        if floats and not varied:
            self._warn(
                f"every sample of {self.description} is constant (all its values equal): no "
                "range can be calibrated from such inputs, and the numbers of this trace say "
                "little about real ones; give real inputs"
            )

    def _warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def _validate(self, i: int, raw: Any) -> list[np.ndarray]:
        parts = self._split(i, raw)
        out = []
        for spec, x in zip(self.inputs, parts, strict=True):
            x = np.asarray(x)
            where = f"sample {i} of {self.description}"
            if len(self.inputs) > 1:
                where += f", input '{spec.name}'"
            if x.dtype.kind == "f" and not x.dtype.isnative:  # big-endian data is still float
                x = x.astype(x.dtype.newbyteorder("="))
            if not spec.is_float:
                out.append(self._integral(where, x, spec))
                continue
            if x.dtype == np.float64:
                self._warn(
                    f"{self.description}: float64 data cast to float32 (TFLite models take "
                    "float32; save float32 to silence this)"
                )
                x = x.astype(np.float32)
            elif x.dtype != np.float32 and x.dtype != np.float16:
                raise DataError(
                    f"{where} has dtype {x.dtype}, the model takes float32",
                    float_cast_hint(x.dtype, x.ndim),
                )
            x = x.astype(np.float32, copy=False)
            _check_shape(where, x, spec)
            if not np.all(np.isfinite(x)):
                bad = "NaN" if np.isnan(x).any() else "Inf"
                raise DataError(f"{where} contains {bad}", "remove or fix that sample")
            out.append(x)
        return out

    def _integral(self, where: str, x: np.ndarray, spec: InputSpec) -> np.ndarray:
        """An id/index/mask input: integral values, cast to the input's type, never scaled."""
        if x.dtype.kind == "f" and not (np.all(np.isfinite(x)) and np.all(x == np.round(x))):
            raise DataError(
                f"{where} holds non-integral values, the model's input '{spec.name}' takes "
                f"{spec.dtype} (token ids, indices or a mask)",
                f"give the ids themselves, e.g. ids.astype('{spec.dtype}')",
            )
        if x.dtype.kind not in "biuf":
            raise DataError(
                f"{where} has dtype {x.dtype}, the model's input '{spec.name}' takes {spec.dtype}",
                f"give an array of {spec.dtype}",
            )
        _check_shape(where, x, spec)
        return x.astype(spec.dtype)

    def _split(self, i: int, raw: Any) -> list[Any]:
        n = len(self.inputs)
        if isinstance(raw, dict):
            missing = [s.name for s in self.inputs if s.name not in raw]
            if missing and not (n == 1 and len(raw) == 1):
                raise DataError(
                    f"sample {i} of {self.description} lacks input(s) {missing}",
                    f"key the samples by the model's input names {[s.name for s in self.inputs]}",
                )
            return [raw[s.name] if s.name in raw else next(iter(raw.values())) for s in self.inputs]
        if isinstance(raw, list | tuple):
            if len(raw) == n:
                return list(raw)
            if n == 1 and len(raw) == 2:  # (x, label) pairs
                self.pair_labels[i] = raw[1]
                return [raw[0]]
            raise DataError(
                f"sample {i} of {self.description} has {len(raw)} arrays, the model has {n} "
                "input(s)",
                f"give one array per input: {[s.name for s in self.inputs]}",
            )
        if n != 1:
            raise DataError(
                f"sample {i} of {self.description} is one array, the model has {n} inputs",
                f"give a dict or tuple with {[s.name for s in self.inputs]}",
            )
        return [raw]


def float_cast_hint(dtype: np.dtype[Any], sample_ndim: int) -> str:
    """What to do with non-float data for a float32 input. Only uint8 data of two or more axes
    per sample (pixels) is told to scale by 1/255; integers such as token ids keep their values
    (scaling them would destroy them)."""
    if dtype == np.uint8 and sample_ndim >= 2:
        return ("apply the model's preprocessing to the pixels, e.g. (x / 255).astype('float32') "
                "for a model that takes 0-1 images")
    if dtype.kind in "biu":
        return ("cast it, keeping the values (token ids, indices, counts): x.astype('float32'), "
                "or the model's own preprocessing")
    return "give float32 numbers, with the model's preprocessing applied"


def _check_shape(where: str, x: np.ndarray, spec: InputSpec) -> None:
    """One sample's shape against the input's (``None`` dimensions take any size)."""
    if len(x.shape) != len(spec.shape) or any(
        d is not None and d != s for d, s in zip(spec.shape, x.shape, strict=False)
    ):
        raise DataError(
            f"{where} has shape {tuple(x.shape)}, the model expects "
            f"{spec.describe(batch=False)} per sample",
            f"give an array of shape {spec.describe()}",
        )


def _varies(x: np.ndarray) -> bool:
    """Whether an array holds more than one value (NaN counts as a value of its own)."""
    flat = np.asarray(x).reshape(-1)
    return bool(flat.size) and not bool(np.all(flat == flat[0]))


def _why(exc: BaseException) -> str:
    # TensorFlow's errors carry the useful text in ``message``; their str() adds a stack.
    message = getattr(exc, "message", None)
    raw = message.strip().split("\n")[0] if isinstance(message, str) and message.strip() else (
        str(exc))
    text = " ".join(raw.split())[:200]
    if "allow_pickle" in text:  # numpy's hint to load it unsafely: never taken here
        return "it holds pickled Python objects, which qdebug never loads: they can run code"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _from_images(folder: Path, inputs: list[InputSpec], image_range: str) -> SampleSource:
    if len(inputs) != 1 or len(inputs[0].shape) != 3:
        raise DataError(
            f"{folder} is a folder of images, but the model does not take one image input",
            "give .npy/.npz data",
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    for p in files:
        refuse_special(p, "image", "keep only image files in the folder", DataError)
    h, w, c = inputs[0].shape
    lo, hi = {"0-1": (0.0, 1.0), "0-255": (0.0, 255.0), "-1-1": (-1.0, 1.0)}[image_range]

    def gen() -> Iterator[np.ndarray]:
        import tensorflow as tf

        for p in files:
            try:
                img = tf.io.decode_image(
                    tf.io.read_file(str(p)), channels=c or 3, expand_animations=False
                )
            except Exception as exc:
                raise DataError(
                    f"{p} is not a readable image ({_why(exc)})",
                    "remove it from the folder, or convert it to PNG or JPEG",
                ) from exc
            img = tf.image.resize(tf.cast(img, tf.float32), (h or img.shape[0], w or img.shape[1]))
            yield (img.numpy() / 255.0 * (hi - lo) + lo).astype(np.float32)

    return SampleSource(str(folder), inputs, gen, len(files))


def _from_callable(spec: str, inputs: list[InputSpec]) -> SampleSource:
    from qdebug.errors import ModelLoadError
    from qdebug.tracer.loading import resolve_callable, user_code

    try:
        fn = resolve_callable(spec, "data")
    except ModelLoadError as exc:  # the same problems, but with the data
        raise DataError(exc.message, exc.hint) from exc

    def gen() -> Iterator[Any]:
        try:
            with user_code(spec, "when called", DataError):
                produced = fn()
        except DataError:
            raise
        except Exception as exc:
            raise DataError(
                f"the data function {spec} raised {type(exc).__name__}: {exc}"
            ) from exc
        if produced is None or not (
            isinstance(produced, Iterable) or hasattr(produced, "as_numpy_iterator")
        ):
            raise DataError(
                f"the data function {spec} returned {type(produced).__name__}, not samples",
                "return an array, a list or generator of samples, or a tf.data.Dataset",
            )
        yield from _user_samples(spec, _unbatch(produced, inputs))

    return SampleSource(spec, inputs, gen)


def _user_samples(spec: str, samples: Iterator[Any]) -> Iterator[Any]:
    """The samples of a data function; its own exceptions, raised while iterating, become
    ``DataError`` naming it (not a converter failure, when calibration pulls the samples)."""
    i = 0
    while True:
        try:
            item = next(samples)
        except StopIteration:
            return
        except DataError:
            raise
        except Exception as exc:
            raise DataError(
                f"the data function {spec} raised {_why(exc)} after {i} sample(s)",
                "fix the data function (run it alone to see the traceback)",
            ) from exc
        yield item
        i += 1


def _unbatch(produced: Any, inputs: list[InputSpec]) -> Iterator[Any]:
    """Iterate samples; a tf.data.Dataset is converted to numpy and a batched one is split."""
    if hasattr(produced, "as_numpy_iterator"):
        produced = produced.as_numpy_iterator()
    rank = len(inputs[0].shape)
    for item in produced:
        first = item
        while isinstance(first, list | tuple):
            first = first[0] if first else None
        if isinstance(first, dict):
            first = first.get(inputs[0].name, next(iter(first.values())))
        if first is not None and np.ndim(first) == rank + 1:
            for j in range(np.shape(first)[0]):
                yield _index(item, j)
        else:
            yield item


def _index(item: Any, j: int) -> Any:
    if isinstance(item, dict):
        return {k: _index(v, j) for k, v in item.items()}
    if isinstance(item, list | tuple):
        return type(item)(_index(v, j) for v in item)
    return np.asarray(item)[j]


def load_data(
    spec: Any,
    inputs: list[InputSpec],
    *,
    limit: int | None = None,
    image_range: str = "0-1",
) -> SampleSource:
    """Samples for a model with ``inputs`` from a path, a ``module:function`` spec, a numpy
    array, or an iterable (Python API)."""
    # they build on this module
    from qdebug.tracer.data_arrays import check_batched, from_npy, from_npz
    if isinstance(spec, np.ndarray):
        arr = spec
        if len(inputs) != 1:
            raise DataError(f"one array given, the model has {len(inputs)} inputs")
        check_batched(Path("array"), "", arr, inputs[0])
        src = SampleSource("the data array", inputs, lambda: iter(arr), len(arr))
    elif not isinstance(spec, str | Path):
        items = spec
        src = SampleSource("the data", inputs, lambda: _unbatch(items, inputs))
    else:
        path = Path(spec)
        text = str(spec)
        refuse_special(path, "data", "give .npy, .npz, an image folder, or module:function",
                       DataError)
        if path.is_dir():
            src = _from_images(path, inputs, image_range)
        elif path.suffix.lower() == ".npy" and path.exists():
            src = from_npy(path, inputs)
        elif path.suffix.lower() == ".npz" and path.exists():
            src = from_npz(path, inputs, limit)
        elif ":" in text and not path.exists():
            src = _from_callable(text, inputs)
        elif not path.exists():
            raise DataError(
                f"{path}: no such file or folder",
                "give .npy, .npz, an image folder, or module:function",
            )
        else:
            raise DataError(
                f"{path}: unknown data type {path.suffix or '(none)'}",
                "give .npy, .npz, a folder of images, or module:function",
            )
    src.limit = limit
    if limit is None and src.length is None:
        src.limit, src.capped = UNSIZED_LIMIT, True
    if src.length == 0:
        raise DataError(f"{src.description} holds no samples", "give at least one sample")
    return src
