"""Read a ds tensor stream (.dst) into numpy arrays, frame by frame: a
safetensors reader in a few lines, for the benchmark peers."""
import json
import struct

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "I8": np.int8, "U8": np.uint8,
          "I32": np.int32, "I64": np.int64}


def frames(path):
    with open(path, "rb") as f:
        data = f.read()
    off = 0
    while off < len(data):
        (n,) = struct.unpack("<Q", data[off:off + 8])
        header = json.loads(data[off + 8:off + 8 + n])
        start = off + 8 + n
        meta = header.pop("__metadata__", {})
        tensors, end = {}, 0
        for name, t in header.items():
            b, e = t["data_offsets"]
            tensors[name] = np.frombuffer(data[start + b:start + e], DTYPES[t["dtype"]]).reshape(t["shape"])
            end = max(end, e)
        yield tensors, meta
        off = start + end


def load(path):
    """All frames of a stream: (x, y, labels)."""
    xs, ys, labels = [], [], None
    for t, meta in frames(path):
        xs.append(t["x"])
        ys.append(t["y"])
        labels = labels or json.loads(meta.get("ds.labels", "null"))
    return np.concatenate(xs), np.concatenate(ys), labels
