"""Loading a Keras model of either flavour from a file, a folder, or a Python factory."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import io
import json
import re
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdebug.errors import ModelLoadError, QdebugError
from qdebug.store.filekind import refuse_special

KERAS3 = "keras3"
TF_KERAS = "tf_keras"
#: Models without a Keras layer graph: traced in the op view.
SAVED_MODEL = "saved_model"
TFLITE = "tflite"


@dataclass
class LoadedModel:
    """A model and where it came from."""

    model: Any
    """The Keras model, a SavedModel folder's path, or a float ``.tflite``'s bytes."""
    flavour: str
    """``keras3`` or ``tf_keras``; ``saved_model`` or ``tflite`` for a model without Keras
    layers."""
    name: str
    source: str
    sha256: str

    @property
    def is_keras(self) -> bool:
        """Whether the model is a Keras object (it may still lack a layer graph)."""
        return self.flavour in (KERAS3, TF_KERAS)


def flavour_of(model: Any) -> str:
    """Which Keras a live model object belongs to."""
    import keras

    if isinstance(model, keras.Model):
        return KERAS3
    import tf_keras

    if isinstance(model, tf_keras.Model):
        return TF_KERAS
    raise ModelLoadError(
        f"expected a Keras model, got {type(model).__module__}.{type(model).__name__}",
        "pass a keras.Model or tf_keras.Model",
    )


def _sha256_path(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def sha256_of_weights(model: Any) -> str:
    """A digest of a live model's weights (for models not loaded from a file)."""
    h = hashlib.sha256()
    for w in model.weights:
        h.update(w.name.encode())
        h.update(memoryview(w.numpy()).tobytes())
    return h.hexdigest()


def _first_line(text: str, limit: int = 200) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")[:limit]


@contextlib.contextmanager
def user_code(
    where: str, what: str, error: type[QdebugError] = ModelLoadError
) -> Iterator[None]:
    """Run the user's module or factory as if it were the program: ``sys.argv`` holds only its
    name (an ``argparse`` at import must not see qdebug's options), what it prints to stderr is
    kept out of qdebug's own output, and ``sys.exit`` becomes one line naming the file."""
    argv = sys.argv
    sys.argv = [where]
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    except SystemExit as exc:
        said = _first_line(captured.getvalue())
        raise error(
            f"{where} called sys.exit({exc.code!r}) {what}"
            + (f" after printing {said!r}" if said else ""),
            "put the script part of the file under `if __name__ == \"__main__\":`",
        ) from exc
    finally:
        sys.argv = argv
    sys.stderr.write(captured.getvalue())


def _call_user(fn: Callable[[], Any], where: str, what: str) -> Any:
    with user_code(where, what):
        return fn()


def resolve_callable(spec: str, what: str) -> Any:
    """Import ``path/to/file.py:function`` or ``package.module:function``."""
    target, _, func = spec.rpartition(":")
    if not target or not func.isidentifier():
        raise ModelLoadError(f"{spec!r} is not of the form file.py:function or module:function")
    if target.endswith(".py"):
        path = Path(target)
        refuse_special(path, "Python", f"give the {what} factory's .py file", ModelLoadError)
        if path.is_dir():
            raise ModelLoadError(f"{path} is a folder", f"give the {what} factory's .py file")
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such file", f"check the path of the {what} factory")
        name = f"qdebug_user_{path.stem}_{abs(hash(path.resolve()))}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise ModelLoadError(f"{path}: cannot be imported as Python")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent.resolve()))
        try:
            with user_code(str(path), "while being imported"):
                module_spec.loader.exec_module(module)
        except Exception as exc:
            raise ModelLoadError(
                f"{path}: importing it failed: {type(exc).__name__}: {exc}",
                "run the file with python to see the error",
            ) from exc
        finally:
            sys.path.remove(str(path.parent.resolve()))
    else:
        try:
            with user_code(target, "while being imported"):
                module = importlib.import_module(target)
        except ModelLoadError:
            raise
        except ImportError as exc:
            raise ModelLoadError(
                f"cannot import module {target!r} ({exc})",
                "give file.py:function, or make the module importable (PYTHONPATH)",
            ) from exc
        except Exception as exc:
            raise ModelLoadError(
                f"importing the module {target!r} failed: {type(exc).__name__}: "
                f"{_first_line(str(exc))}",
                f"run python -c 'import {target}' to see the error",
            ) from exc
    fn = getattr(module, func, None)
    if not callable(fn):
        raise ModelLoadError(f"{target} has no function {func!r}")
    return fn


#: Names TensorFlow accepts for ops and scopes; the converter exports each Keras layer under
#: its name, and fails on any other with "'NoneType' object is not callable".
_TF_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*")


def _all_layers(model: Any) -> list[Any]:
    flatten = getattr(model, "_flatten_layers", None)
    if callable(flatten):
        return list(flatten(include_self=False, recursive=True))
    return list(getattr(model, "layers", []))


def require_convertible(loaded: LoadedModel) -> None:
    """Refuse, before converting, what the converter or LiteRT would fail on with a message
    that blames something else: inputs with unknown sizes besides the batch (LiteRT refuses
    the converted model, speaking of a .tflite file the user never gave) and layer names
    TensorFlow cannot export."""
    for layer in _all_layers(loaded.model):
        name = str(getattr(layer, "name", ""))
        if not _TF_NAME.fullmatch(name):
            raise ModelLoadError(
                f"{loaded.source}: layer {name!r} has a name TensorFlow's converter cannot "
                "export (it takes letters, digits and . _ - / only, starting with a letter "
                "or digit)",
                "rename the layer (name=...) where the model is built",
            )
    for t in getattr(loaded.model, "inputs", None) or []:
        shape = t.shape.as_list() if hasattr(t.shape, "as_list") else list(t.shape)
        if any(d is None for d in shape[1:]):
            name = getattr(t, "name", "?")
            dims = ", ".join("None" if d is None else str(d) for d in shape[1:])
            raise ModelLoadError(
                f"{loaded.source}: input {name!r} has shape ({dims}) with sizes unknown until "
                "run time; an INT8 model needs them fixed",
                "build the model with a fixed input shape, e.g. keras.Input((224, 224, 3)), in "
                "a factory file.py:function",
            )


def _is_factory(spec: str) -> bool:
    target, sep, func = spec.rpartition(":")
    return bool(sep) and bool(target) and func.isidentifier() and not Path(spec).exists()


def _h5_keras_version(path: Path) -> str:
    """The Keras version that saved an ``.h5`` model; refuses a file of weights only."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            v = f.attrs.get("keras_version", "")
            version = v.decode() if isinstance(v, bytes) else str(v)
            # tf_keras's save_weights: its version and layer names, no model_config; Keras 3's
            # (.weights.h5): groups 'layers' and 'vars', no attributes at all.
            weights_only = "model_config" not in f.attrs and (
                "layer_names" in f.attrs
                or (not version and isinstance(f.get("layers"), h5py.Group)
                    and isinstance(f.get("vars"), h5py.Group))
            )
    except OSError as exc:
        raise ModelLoadError(
            f"{path} is not a readable HDF5 model file ({exc})", "give a Keras .h5 or .keras file"
        ) from exc
    if weights_only:
        raise ModelLoadError(
            f"{path} holds weights only (save_weights wrote no model config to rebuild the "
            "model from)",
            "build the model in a factory that loads them — def build(): model = make_model(); "
            f"model.load_weights({str(path)!r}); return model — and give it as MODEL: "
            "qdebug trace my_model.py:build",
        )
    return version


def _translate_load_error(path: Path, exc: Exception) -> ModelLoadError:
    text = str(exc)
    if "Lambda" in text and ("safe_mode" in text or "unsafe" in text.lower()):
        return ModelLoadError(
            f"{path} contains a Lambda layer, whose Python code Keras will not load from a file",
            "load it through a factory (qdebug trace my_model.py:build ...) or pass "
            "--trust-model-code if you trust the file",
        )
    if "Unknown layer" in text or "Could not locate class" in text or "custom_objects" in text:
        first = text.strip().splitlines()[0][:200]
        return ModelLoadError(
            f"{path} uses a custom layer Keras does not know ({first})",
            "load it through a factory file.py:function that imports or registers the layer",
        )
    first = text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
    return ModelLoadError(f"{path} could not be loaded as a Keras model: {first}")


def load_model(spec: str, *, trust_code: bool = False) -> LoadedModel:
    """Load a model from a path or factory spec (see ``qdebug trace --help``)."""
    if _is_factory(spec):
        fn = resolve_callable(spec, "model")
        try:
            model = _call_user(fn, spec, "when called")
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"the model factory {spec} raised {type(exc).__name__}: {exc}"
            ) from exc
        flavour = flavour_of(model)
        return LoadedModel(model, flavour, model.name, spec, sha256_of_weights(model))
    path = Path(spec)
    if not path.exists():
        raise ModelLoadError(
            f"{path}: no such file or folder",
            "give a .keras, .h5, SavedModel folder, or file.py:function",
        )
    refuse_special(path, "model", "give a .keras, .h5, SavedModel folder, or file.py:function",
                   ModelLoadError)
    suffix = path.suffix.lower()
    try:
        if path.is_dir():
            if not (path / "saved_model.pb").exists():
                raise ModelLoadError(
                    f"{path} is a folder without saved_model.pb",
                    "give a SavedModel folder (tf_keras, tf.saved_model.save or "
                    "model.export())",
                )
            return _load_saved_model(path)
        elif suffix == ".tflite":
            content = path.read_bytes()
            if content[4:8] != b"TFL3":
                raise ModelLoadError(
                    f"{path} is not a .tflite model (no TFL3 identifier)",
                    "give the float .tflite model",
                )
            return LoadedModel(content, TFLITE, path.stem, str(path), _sha256_path(path))
        elif suffix == ".keras":
            if not zipfile.is_zipfile(path):
                raise ModelLoadError(
                    f"{path} is not a .keras archive (not a zip file)", "save it with model.save()"
                )
            with zipfile.ZipFile(path) as z:
                if "metadata.json" in z.namelist():
                    json.loads(z.read("metadata.json"))
            import keras

            model = keras.saving.load_model(path, compile=False, safe_mode=not trust_code)
            flavour = KERAS3
        elif suffix in (".h5", ".hdf5"):
            version = _h5_keras_version(path)
            if not version:
                raise ModelLoadError(
                    f"{path} is an HDF5 file without keras_version: not a Keras model",
                    "give a model saved with model.save('model.h5')",
                )
            if version.startswith("2."):
                model, flavour = _load_tf_keras_h5(path), TF_KERAS
            else:
                import keras

                model = keras.saving.load_model(path, compile=False, safe_mode=not trust_code)
                flavour = KERAS3
        else:
            raise ModelLoadError(
                f"{path}: unknown model file type {suffix or '(none)'}",
                "give a .keras, .h5, SavedModel folder, or file.py:function",
            )
    except ModelLoadError:
        raise
    except Exception as exc:
        raise _translate_load_error(path, exc) from exc
    return LoadedModel(model, flavour, model.name, str(path), _sha256_path(path))


def _load_tf_keras_h5(path: Path) -> Any:
    """A tf_keras ``.h5``; one saved after quantization-aware training is opened inside tfmot's
    ``quantize_scope`` (its layers are known classes, not code from the file)."""
    import h5py
    import tf_keras

    with h5py.File(path, "r") as f:
        config = f.attrs.get("model_config", "")
    text = config.decode() if isinstance(config, bytes) else str(config)
    if '"QuantizeLayer"' not in text and '"QuantizeWrapper' not in text:
        return tf_keras.models.load_model(path, compile=False)
    from qdebug.tracer.tfenv import import_tfmot

    with import_tfmot().quantization.keras.quantize_scope():
        return tf_keras.models.load_model(path, compile=False)


def _load_saved_model(path: Path) -> LoadedModel:
    """A tf_keras SavedModel as Keras layers; any other SavedModel (``tf.Module``, Keras 3
    ``model.export()``) as an op graph converted from the folder itself."""
    import tf_keras

    try:
        model = tf_keras.models.load_model(path, compile=False)
    except Exception:
        model = None
    if model is not None and getattr(model, "layers", None) and getattr(model, "inputs", None):
        return LoadedModel(model, TF_KERAS, model.name, str(path), _sha256_path(path))
    return LoadedModel(path, SAVED_MODEL, path.name, str(path), _sha256_path(path))


def load_or_wrap(model: Any, trust_code: bool = False) -> LoadedModel:
    """A model given as a path or factory spec is loaded; a live Keras object is wrapped."""
    if isinstance(model, str | Path):
        return load_model(str(model), trust_code=trust_code)
    return wrap_live_model(model)


def wrap_live_model(model: Any) -> LoadedModel:
    """Describe a model object passed to the Python API."""
    flavour = flavour_of(model)
    return LoadedModel(model, flavour, model.name, "python object", sha256_of_weights(model))
