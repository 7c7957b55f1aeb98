"""A ds model (.dsm) as a PyTorch module: the graph in ds.graph run node by
node with torch.nn.functional, on the model's own weights.  The benchmark
peers start from it, so that ds and each peer run the same network with the
same parameters (and ONNX exports of it carry them too)."""
import json

import numpy as np
import torch
import torch.nn.functional as F

import dst


def load(path):
    """The tensors and metadata of a single-container file."""
    for tensors, meta in dst.frames(path):
        return tensors, meta
    raise ValueError(f"{path}: empty file")


def _pair(v):
    return tuple(v) if isinstance(v, list) else (v, v)


def _conv2d(x, w, b, a):
    return F.conv2d(x, w, b, _pair(a.get("stride", 1)), _pair(a.get("padding", 0)),
                    _pair(a.get("dilation", 1)), a.get("groups", 1))


def _pool_args(a):
    k = _pair(a.get("kernel", 2))
    return {"kernel_size": k, "stride": _pair(a.get("stride", k)), "padding": _pair(a.get("padding", 0)),
            "ceil_mode": bool(a.get("ceil_mode", 0))}


OPS = {
    "conv2d": lambda x, w, b=None, a={}: _conv2d(x, w, b, a),
    "linear": lambda x, w, b=None, a={}: F.linear(x, w, b),
    "batchnorm": lambda x, w, b, m, v, a={}: F.batch_norm(x, m, v, w, b, False, 0.0, a.get("eps", 1e-5)),
    "relu": lambda x, a={}: F.relu(x),
    "relu6": lambda x, a={}: F.relu6(x),
    "leaky_relu": lambda x, a={}: F.leaky_relu(x, a.get("alpha", 0.01)),
    "gelu": lambda x, a={}: F.gelu(x, approximate=a.get("approximate", "none")),
    "sigmoid": lambda x, a={}: torch.sigmoid(x),
    "tanh": lambda x, a={}: torch.tanh(x),
    "silu": lambda x, a={}: F.silu(x),
    "hardswish": lambda x, a={}: F.hardswish(x),
    "max_pool": lambda x, a={}: F.max_pool2d(x, **_pool_args(a)),
    "avg_pool": lambda x, a={}: F.avg_pool2d(x, **_pool_args(a), count_include_pad=bool(a.get("count_include_pad", 1))),
    "global_avg_pool": lambda x, a={}: x.mean((2, 3), keepdim=True),
    "add": lambda x, y, a={}: x + y,
    "mul": lambda x, y, a={}: x * y,
    "concat": lambda *xs, a={}: torch.cat(xs, a.get("axis", 1)),
    "flatten": lambda x, a={}: torch.flatten(x, a.get("axis", 1)),
    "reshape": lambda x, a={}: x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(a["shape"])]),
    "dropout": lambda x, a={}: x,
    "softmax": lambda x, a={}: F.softmax(x, a.get("axis", -1)),
}


class DsModel(torch.nn.Module):
    """Runs the graph; parameters are buffers (inference only)."""

    def __init__(self, path):
        super().__init__()
        tensors, meta = load(path)
        self.graph = json.loads(meta["ds.graph"])
        self.params = {}
        for i, (name, t) in enumerate(tensors.items()):
            if name.startswith("opt."):
                continue
            buf = torch.from_numpy(np.array(t, dtype=np.float32 if t.dtype == np.float32 else t.dtype))
            self.register_buffer(f"p{i}", buf)
            self.params[name] = f"p{i}"
        for node in self.graph["nodes"]:
            if node["op"] not in OPS:
                raise ValueError(f"{path}: op {node['op']} has no PyTorch form here")
        self.input = self.graph["inputs"][0]["name"]
        self.input_shape = self.graph["inputs"][0]["shape"]
        self.output = self.graph["outputs"][0]

    def forward(self, x):
        values = {self.input: x}
        for node in self.graph["nodes"]:
            args = [values[n] if n in values else getattr(self, self.params[n]) for n in node["inputs"]]
            values[node["outputs"][0]] = OPS[node["op"]](*args, a=node.get("attrs") or {})
        return values[self.output]
