"""Does qdebug's fast conversion give the model a user deploys?

qdebug hands the converter a Keras model's inference function as a frozen graph
(``qdebug.tracer.convert._frozen_converter``) instead of ``TFLiteConverter.from_keras_model``,
which first writes the model out as a SavedModel. For every Keras model of the corpus
(bench/corpus.py, built there first) this converts both ways with the same settings and the same
32 calibration samples (calibrate-only, then ``mlir_quantize`` as qdebug does) and compares:

- the INT8 model: op types in order, each op output's shape, dtype, scales and zero points, and
  the bytes of every constant tensor (weights, biases);
- the float twin (the calibrated float model): the same;
- tensor names (reported, not required: graph inputs and outputs are named differently).

Verdicts: ``identical``; ``same computation`` (the same ops, quantization and constants, with
independent branches scheduled in another order or a dynamic tensor's static shape recorded
differently: every op computes the same values); ``different``.

    python bench/converter_paths.py                 # every built Keras model of the corpus
    python bench/converter_paths.py --only mobilenetv2,unet

Each model runs in its own subprocess. Results land in ``bench/out/converter_paths.json``; exit
status 1 when an INT8 model differs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CORPUS = BENCH / "out" / "corpus"
OUT = BENCH / "out" / "converter_paths.json"
TAG = "PATHS_RESULT "


def _load(path: Path) -> Any:
    if path.suffix == ".h5":
        import tf_keras

        return tf_keras.models.load_model(path)
    import keras

    return keras.models.load_model(path)


def _describe(content: bytes) -> tuple[list[Any], list[bytes], list[str]]:
    """Per op: type and outputs' (shape, dtype, scales, zero points); constants; names."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Builtin kernels only: XNNPACK would fold ops into DELEGATE nodes that depend on op order.
    it = Interpreter(model_content=content,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    td = {d["index"]: d for d in it.get_tensor_details()}
    details = it._get_ops_details()
    produced = {t for op in details for t in op["outputs"]}
    graph_in = {d["index"] for d in it.get_input_details()}
    ops, consts = [], []
    for op in details:
        outs = []
        for t in op["outputs"]:
            qp = td[t]["quantization_parameters"]
            outs.append((tuple(int(s) for s in td[t]["shape"]), str(td[t]["dtype"]),
                         np.asarray(qp["scales"]).tolist(), np.asarray(qp["zero_points"]).tolist()))
        ops.append((op["op_name"], outs))
        for t in op["inputs"]:
            if t >= 0 and t not in produced and t not in graph_in:
                consts.append(np.asarray(it.get_tensor(t)).tobytes())
    names = [td[t]["name"] for op in details for t in op["outputs"]]
    names += [f"input {d['name']}" for d in it.get_input_details()]
    return ops, consts, names


def compare_one(folder: Path) -> dict[str, Any]:
    """Convert the model in ``folder`` both ways and compare (runs in a worker process)."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    from qdebug.tracer.convert import _frozen_converter
    from qdebug.tracer.tfenv import captured_output

    path = next((folder / n for n in ("model.keras", "model.h5") if (folder / n).exists()), None)
    out: dict[str, Any] = {"model": folder.name}
    if path is None:
        return {**out, "skipped": "not a Keras model file"}
    model = _load(path)
    data = np.load(folder / "data.npy", allow_pickle=False)[:32]

    def representative() -> Any:
        for x in data:
            yield [x[None]]

    def configure(conv: Any) -> Any:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv._experimental_calibrate_only = True
        return conv

    got: dict[str, tuple[bytes, bytes]] = {}
    for route in ("saved model", "frozen graph"):
        start = time.perf_counter()
        try:
            with captured_output():
                conv = (tf.lite.TFLiteConverter.from_keras_model(model) if route == "saved model"
                        else _frozen_converter(model))
                if conv is None:
                    raise ValueError("qdebug does not take the frozen route for this model")
                calibrated = bytes(configure(conv).convert())
                int8 = bytes(mlir_quantize(calibrated, disable_per_channel=False,
                                           input_data_type=tf.float32,
                                           output_data_type=tf.float32))
            got[route] = (calibrated, int8)
        except Exception as exc:  # recorded: the tracer falls back to the saved-model route
            out[f"{route} error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        out[f"{route} s"] = round(time.perf_counter() - start, 2)
    if len(got) == 2:
        for part, k in (("twin", 0), ("int8", 1)):
            a_ops, a_consts, a_names = _describe(got["saved model"][k])
            b_ops, b_consts, b_names = _describe(got["frozen graph"][k])
            out[f"{part} ops"] = len(a_ops)
            out[f"{part} ops equal"] = a_ops == b_ops
            out[f"{part} constants equal"] = a_consts == b_consts
            out[f"{part} verdict"] = _verdict(a_ops, b_ops, a_consts, b_consts)
            out[f"{part} names differing"] = sum(x != y for x, y in zip(a_names, b_names,
                                                                      strict=False))
    return out


def _verdict(a_ops: list[Any], b_ops: list[Any], a_consts: list[bytes],
             b_consts: list[bytes]) -> str:
    """``identical`` (ops in the same order, constants byte for byte); ``same computation``
    (the same ops with the same quantization and the same constants, but independent
    branches scheduled in another order or a dynamic tensor's static shape recorded
    differently); else ``different``."""
    if a_ops == b_ops and a_consts == b_consts:
        return "identical"

    def unshaped(ops: list[Any]) -> list[str]:
        return sorted(repr((op, [(d, s, z) for _, d, s, z in outs])) for op, outs in ops)

    if unshaped(a_ops) == unshaped(b_ops) and sorted(a_consts) == sorted(b_consts):
        return "same computation"
    return "different"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated corpus model names")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(TAG + json.dumps(compare_one(Path(args.worker))), flush=True)
        return
    only = {n for n in args.only.split(",") if n}
    folders = sorted(d for d in CORPUS.iterdir() if d.is_dir() and (not only or d.name in only))
    if not folders:
        sys.exit(f"no corpus models under {CORPUS}: build them with bench/corpus.py first")
    rows = []
    for folder in folders:
        proc = subprocess.run([sys.executable, __file__, "--worker", str(folder)],
                              capture_output=True, text=True, timeout=1800)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(TAG)), None)
        row = json.loads(line[len(TAG):]) if line else {
            "model": folder.name, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    OUT.write_text(json.dumps(rows, indent=1))
    compared = [r for r in rows if "int8 verdict" in r]
    for verdict in ("identical", "same computation", "different"):
        names = [r["model"] for r in compared if r["int8 verdict"] == verdict]
        print(f"INT8 {verdict}: {len(names)}/{len(compared)} {', '.join(names)}")
    print(f"{len(rows) - len(compared)} not compared (see their rows). Wrote {OUT}")
    sys.exit(0 if all(r["int8 verdict"] != "different" for r in compared) else 1)


if __name__ == "__main__":
    main()
