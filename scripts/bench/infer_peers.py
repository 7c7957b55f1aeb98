"""The inference peers of scripts/bench/infer on one ds model: PyTorch eager,
and the model exported to ONNX and run by ONNX Runtime and by OpenVINO, each
with the same thread count, on random inputs of the model's shape.  Prints
one JSON object per peer and batch size: items/s and latency percentiles of
one batch, measured as ds-bench measures (warm-up, then at least
--min-time seconds and 20 runs)."""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsm_torch  # noqa: E402


def measure(run, batch, min_time, warmup=1.0):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < warmup:
        run()
    times = []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < min_time or len(times) < 20:
        s = time.perf_counter()
        run()
        times.append((time.perf_counter() - s) * 1e3)
    ms = np.array(times)
    return {"items_per_s": batch * len(ms) / (ms.sum() / 1e3),
            "ms_p50": float(np.percentile(ms, 50, method="inverted_cdf")),
            "ms_p90": float(np.percentile(ms, 90, method="inverted_cdf")),
            "ms_p99": float(np.percentile(ms, 99, method="inverted_cdf")),
            "ms_min": float(ms.min()), "runs": len(ms)}


def export_onnx(model, path):
    """The model as ONNX with a dynamic batch: input "x", output "logits"."""
    shape = [1] + model.input_shape[1:]
    with torch.inference_mode():
        torch.onnx.export(model, torch.rand(shape), path, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, opset_version=17, dynamo=False)
    return path


def ort_session(path, threads):
    """An ONNX Runtime CPU session on THREADS intra-op threads, sequential."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ov_compile(core, ov_model, shape, threads):
    """OV_MODEL reshaped to the static input SHAPE and compiled for the CPU on THREADS threads."""
    ov_model.reshape({ov_model.input(0).get_any_name(): list(shape)})
    return core.compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                "PERFORMANCE_HINT": "LATENCY",
                                                "INFERENCE_PRECISION_HINT": "f32"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", default="1,64")
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--work", default=".")
    ap.add_argument("--peers", default="onnxruntime,openvino,torch")
    o = ap.parse_args()
    torch.set_num_threads(o.threads)
    model = dsm_torch.DsModel(o.model).eval()
    shape = [1] + model.input_shape[1:]
    onnx_path = export_onnx(model, os.path.join(o.work, os.path.basename(o.model).rsplit(".", 1)[0] + ".onnx"))
    peers = o.peers.split(",")
    versions = {"torch": torch.__version__}
    sessions = {}
    if "onnxruntime" in peers:
        import onnxruntime as ort
        sessions["onnxruntime"] = ort_session(onnx_path, o.threads)
        versions["onnxruntime"] = ort.__version__
    if "openvino" in peers:
        import openvino as ov
        core = ov.Core()
        ov_model = core.read_model(onnx_path)
        versions["openvino"] = ov.__version__
    rng = np.random.default_rng(1)
    for batch in map(int, o.batch.split(",")):
        x = rng.random([batch] + shape[1:], dtype=np.float32)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).numpy()
        runs = {}
        if "torch" in peers:
            xt = torch.from_numpy(x)

            def run_torch():
                with torch.inference_mode():
                    model(xt)
            runs["torch"] = (run_torch, ref)
        if "onnxruntime" in peers:
            sess = sessions["onnxruntime"]
            runs["onnxruntime"] = (lambda: sess.run(None, {"x": x}), sess.run(None, {"x": x})[0])
        if "openvino" in peers:
            compiled = ov_compile(core, ov_model, [batch] + shape[1:], o.threads)
            req = compiled.create_infer_request()
            out = req.infer({0: x})[compiled.output(0)]
            runs["openvino"] = (lambda: req.infer({0: x}), out)
        for name, (run, out) in runs.items():
            rec = {"peer": name, "version": versions[name], "batch": batch, "threads": o.threads,
                   "max_abs_diff_vs_torch": float(np.abs(np.asarray(out) - ref).max())}
            rec.update(measure(run, batch, o.min_time))
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
