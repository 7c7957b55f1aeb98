"""The INT8 peers of scripts/bench/int8 on one float ds model, and the
measurement of ds and the peers in one run.  The model is exported to ONNX
(through dsm_torch.py), then quantized by each peer's own tool from PyPI on
the same calibration images ds-quantize used:
onnxruntime.quantization.quantize_static (QDQ, per-channel S8 weights, U8
activations, MinMax) run by ONNX Runtime, and nncf.quantize (its defaults)
run by OpenVINO; each peer's float run of the same ONNX model comes too, for
reference.  The ds models named by --ds are measured by ds-bench in the same
rounds.

For each engine: top-1 on the labelled test stream and, for an INT8 engine,
its agreement with the float run of the same engine (the share of test
images whose top-1 class is the float model's: how faithful the
quantization is, where top-1 alone moves both ways by chance), then
items/s and the
median latency of one batch per batch size, on the same thread count,
measured as infer_peers.py and ds-bench measure (1 s of warm-up, then at
least --min-time seconds and 20 runs), --rounds times with the engines in
turn; the best round counts.  The peers run on the first images of the test
stream, ds-bench on random inputs of the same shape.  Prints one JSON object
per engine and batch size."""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsm_torch  # noqa: E402
import dst  # noqa: E402
from infer_peers import export_onnx, measure, ort_session, ov_compile  # noqa: E402


def images(path, preprocess, limit=None):
    """A stream's inputs as the model takes them, and its labels: the
    pixels scaled as ds.preprocess says, NHWC turned NCHW."""
    x, y, _ = dst.load(path)
    if limit:
        x, y = x[:limit], y[:limit]
    x = x.astype(np.float32) * np.float32(preprocess.get("scale", 1.0))
    if preprocess.get("layout", "NHWC") == "NHWC" and x.ndim == 4:
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), y.astype(np.int64)


def predictions(run, x, batch=500):
    return np.concatenate([np.asarray(run(x[i:i + batch])).argmax(1) for i in range(0, len(x), batch)])


def ds_predictions(o, model, labels):
    """ds-infer's top-1 class of every item of the test stream."""
    cmd = [os.path.join(os.path.dirname(o.ds_bench), "ds-infer"), "-q", "--model", model, "-k", "1", "--threads",
           str(o.threads), o.test]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return np.array([labels.index(json.loads(line)["prediction"]) for line in out.splitlines()])


def quantize_ort(onnx_path, out_path, calib):
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": calib[i:i + 100]} for i in range(0, len(calib), 100)])

        def get_next(self):
            return next(self.batches, None)

    # The pre-processing step ONNX Runtime's quantization guide asks for:
    # shape inference and graph optimisation before the QDQ pairs go in.
    pre_path = out_path.replace(".onnx", ".pre.onnx")
    quant_pre_process(onnx_path, pre_path)
    quantize_static(pre_path, out_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return out_path


def quantize_ov(core, onnx_path, out_path, calib):
    import nncf
    import openvino as ov
    model = core.read_model(onnx_path)
    # One image per item, as NNCF's statistics expect; all of them.
    data = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))])
    q = nncf.quantize(model, data, subset_size=len(calib))
    ov.save_model(q, out_path)
    return core.read_model(out_path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", help="the float ds model (.dsm)")
    ap.add_argument("--calib", required=True, help="the calibration stream ds-quantize used")
    ap.add_argument("--calib-count", type=int, default=1000)
    ap.add_argument("--test", required=True, help="labelled test stream")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", default="1,64")
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--work", default=".")
    ap.add_argument("--peers", default="onnxruntime,openvino")
    ap.add_argument("--no-float", action="store_true", help="skip the peers' float runs")
    ap.add_argument("--rounds", type=int, default=3, help="measure every engine this many times, in turn")
    ap.add_argument("--ds-bench", default="ds-bench")
    ap.add_argument("--ds", action="append", default=[], metavar="NAME=MODEL",
                    help="a ds model to measure with ds-bench in the same rounds (repeatable)")
    o = ap.parse_args()
    # The records alone on stdout: the tools' progress bars go to stderr.
    out, sys.stdout = sys.stdout, sys.stderr
    torch.set_num_threads(o.threads)
    model = dsm_torch.DsModel(o.model).eval()
    _, meta = dsm_torch.load(o.model)
    preprocess = json.loads(meta.get("ds.preprocess", "{}"))
    calib, _ = images(o.calib, preprocess, o.calib_count)
    tx, ty = images(o.test, preprocess)
    stem = os.path.join(o.work, os.path.basename(o.model).rsplit(".", 1)[0])
    onnx_path = export_onnx(model, stem + ".onnx")
    peers = o.peers.split(",")
    precisions = ["INT8"] + ([] if o.no_float else ["float"])
    # Each engine: its name, version, model file, run(x) -> logits and
    # make(x) -> a function that runs one batch x.
    engines = []

    if "onnxruntime" in peers:
        import onnxruntime as ort
        t0 = time.perf_counter()
        q_path = quantize_ort(onnx_path, stem + ".ort-int8.onnx", calib)
        print(f"onnxruntime: quantize_static {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for prec, path in (("INT8", q_path), ("float", onnx_path)):
            if prec not in precisions:
                continue
            sess = ort_session(path, o.threads)

            def run(x, sess=sess):
                return sess.run(None, {"x": x})[0]

            def make(x, sess=sess):
                return lambda: sess.run(None, {"x": x})
            engines.append({"engine": f"ONNX Runtime {prec}", "version": ort.__version__, "file": path,
                            "run": run, "make": make})

    if "openvino" in peers:
        import nncf
        import openvino as ov
        core = ov.Core()
        t0 = time.perf_counter()
        q_model = quantize_ov(core, onnx_path, stem + ".ov-int8.xml", calib)
        print(f"openvino: nncf.quantize {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        version = ov.__version__.split("-")[0] + ", nncf " + nncf.__version__
        for prec, ov_model, path in (("INT8", q_model, stem + ".ov-int8.bin"),
                                     ("float", core.read_model(onnx_path), onnx_path)):
            if prec not in precisions:
                continue

            def run(x, ov_model=ov_model, cache={}):
                key = (id(ov_model), x.shape)
                if key not in cache:
                    compiled = ov_compile(core, ov_model, x.shape, o.threads)
                    cache[key] = (compiled, compiled.create_infer_request())
                compiled, req = cache[key]
                return req.infer({0: x})[compiled.output(0)]

            def make(x, ov_model=ov_model):
                compiled = ov_compile(core, ov_model, x.shape, o.threads)
                req = compiled.create_infer_request()
                return lambda: req.infer({0: x})
            engines.append({"engine": f"OpenVINO {prec}", "version": version, "file": path,
                            "run": run, "make": make})

    # Accuracy first: the whole test stream, in batches of 500.
    for e in engines:
        e["pred"] = predictions(e.pop("run"), tx)
    if o.ds:
        labels = json.loads(meta["ds.labels"])
        version = subprocess.run([o.ds_bench, "--version"], capture_output=True, text=True).stdout.split()[-1]
        engines[:0] = [{"engine": name, "version": version, "file": path, "ds": True,
                        "pred": ds_predictions(o, path, labels)} for name, path in (m.split("=", 1) for m in o.ds)]
    preds = {e["engine"]: e["pred"] for e in engines}
    for e in engines:
        e["top1"] = float((e["pred"] == ty).mean())
        # The float run of "X INT8" is "X float", or "ds float -O2" for ds.
        ref = next((p for name, p in preds.items() if "INT8" in e["engine"] and
                    name.startswith(e["engine"].replace("INT8", "float"))), None)
        e["agree_float"] = float((e["pred"] == ref).mean()) if ref is not None else None
    # Then speed, engine after engine, in rounds: on a shared machine the
    # load drifts over a run, and the best of each engine's rounds is the
    # figure least disturbed by the other programs.
    batches = list(map(int, o.batch.split(",")))
    best = {}

    def keep(e, batch, rec):
        r = best.setdefault((e["engine"], batch), {
            "engine": e["engine"], "version": e["version"], "batch": batch, "threads": o.threads, "top1": e["top1"],
            "agree_float": e["agree_float"],
            "eval_items": len(tx), "file_bytes": os.path.getsize(e["file"]), "rounds": []})
        r["rounds"].append({k: rec[k] for k in ("items_per_s", "ms_p50", "ms_p99")})
        r["items_per_s"] = max(x["items_per_s"] for x in r["rounds"])
        r["ms_p50"] = min(x["ms_p50"] for x in r["rounds"])

    for _ in range(o.rounds):
        ds_engines = [e for e in engines if e.get("ds")]
        if ds_engines:
            d = ds_bench(o, ["--batch", o.batch, "--warmup", "1s", "--min-time", str(o.min_time)],
                         [e["file"] for e in ds_engines])
            for e in ds_engines:
                for r in d["results"]:
                    if r["model"] == e["file"]:
                        keep(e, r["batch"], r)
        for e in engines:
            if e.get("ds"):
                continue
            for batch in batches:
                keep(e, batch, measure(e["make"](np.ascontiguousarray(tx[:batch])), batch, o.min_time))
    for rec in best.values():
        print(json.dumps(rec), file=out, flush=True)


def ds_bench(o, args, models):
    """ds-bench's JSON report on MODELS, on the same thread count."""
    cmd = [o.ds_bench, "--threads", str(o.threads), "--format", "json"] + args + models
    return json.loads(subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout)

if __name__ == "__main__":
    main()
