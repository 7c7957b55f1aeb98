#!/usr/bin/env python3
"""Write malformed containers for the reader's tests.

    gen_malformed.py OUTDIR

Each file breaks one rule of the format (ds-formats.5).  OUTDIR/cases.tsv
lists them: file name, the text the error line must contain, and the
stable code libds reports.  Standard library only; the valid documents it
starts from are built here too, independently of libds.
"""
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_check import crc32c  # noqa: E402

SIZE = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1, "I32": 4, "I64": 8}
GRAPH = {
    "inputs": [{"name": "x", "dtype": "F32", "shape": [-1, 4]}],
    "nodes": [{"op": "linear", "name": "fc", "inputs": ["x", "fc.weight", "fc.bias"],
               "outputs": ["y"]}],
    "outputs": ["y"],
}


def header_bytes(header, pad=True):
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((-(8 + len(text))) % 64)
    return struct.pack("<Q", len(text)) + text


def document(tensors, metadata=None, checksums=True, edit=None, pad=True):
    """tensors: [(name, dtype, shape, bytes)].  edit(header) may break the
    header after offsets and checksums are filled in."""
    header, data, meta = {}, b"", dict(metadata or {})
    if checksums:
        meta["ds.checksums"] = json.dumps({n: "%08x" % crc32c(b) for n, _, _, b in tensors})
    if meta:
        header["__metadata__"] = meta
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if edit:
        edit(header)
    return header_bytes(header, pad) + data


def model(edit=None, metadata=None, checksums=True, graph=GRAPH):
    meta = {"ds.format": "model/1", "ds.labels": json.dumps(["a", "b", "c"])}
    if graph is not None:
        meta["ds.graph"] = json.dumps(graph)
    meta.update(metadata or {})
    tensors = [
        ("fc.weight", "F32", [3, 4], struct.pack("<12f", *[i / 10 for i in range(12)])),
        ("fc.bias", "F32", [3], struct.pack("<3f", 0.5, -0.5, 0.25)),
    ]
    return document(tensors, meta, checksums, edit)


def frame(k, edit=None):
    x = bytes((k * 7 + i) % 256 for i in range(2 * 28 * 28))
    y = struct.pack("<2i", k % 10, (k + 1) % 10)
    meta = {"ds.format": "frame/1", "ds.items": json.dumps(["a%d" % k, "b%d" % k])}
    return document([("x", "U8", [2, 28, 28, 1], x), ("y", "I32", [2], y)], meta, True, edit)


def set_in(name, key, value):
    def edit(h):
        h[name][key] = value
    return edit


def raw_header(text, data=b""):
    return struct.pack("<Q", len(text)) + text + data


def main(out):
    os.makedirs(out, exist_ok=True)
    good = model()
    n = struct.unpack_from("<Q", good)[0]
    cases = []

    def case(name, content, fragment, code):
        with open(os.path.join(out, name), "wb") as f:
            f.write(content)
        cases.append((name, fragment, code))

    # Valid references, so a test can check the generator itself.
    with open(os.path.join(out, "good.dsm"), "wb") as f:
        f.write(good)
    with open(os.path.join(out, "good.dst"), "wb") as f:
        f.write(b"".join(frame(k) for k in range(3)))

    case("trunc_length.dsm", good[:5], "end of file", "truncated")
    case("trunc_header.dsm", good[:8 + n // 2], "end of file", "truncated")
    case("trunc_data.dsm", good[:-5], "tensor 'fc.bias'", "truncated")
    case("trunc_data_first.dsm", good[:8 + n + 10], "tensor 'fc.weight'", "truncated")
    case("header_len_max.dsm", struct.pack("<Q", 2**64 - 1) + good[8:], "header length", "header_too_large")
    case("header_len_2_63.dsm", struct.pack("<Q", 2**63) + good[8:], "header length", "header_too_large")
    case("header_len_1.dsm", struct.pack("<Q", 1) + good[8:], "header length", "bad_header")
    case("offsets_overflow.dsm", model(set_in("fc.bias", "data_offsets", [2**64 - 1, 2**64 + 11])),
         "JSON", "bad_json")
    case("offsets_huge.dsm", model(set_in("fc.bias", "data_offsets", [2**63 - 13, 2**63 - 1])),
         "tensor 'fc.bias'", "gap")
    case("offsets_reversed.dsm", model(set_in("fc.bias", "data_offsets", [60, 48])),
         "tensor 'fc.bias'", "bad_offsets")
    case("overlap.dsm", model(set_in("fc.bias", "data_offsets", [40, 52])), "tensor 'fc.bias'", "overlap")
    case("gap.dsm", model(set_in("fc.bias", "data_offsets", [52, 64])), "tensor 'fc.bias'", "gap")
    case("end_mismatch.dsm", model(set_in("fc.bias", "data_offsets", [48, 56])),
         "tensor 'fc.bias'", "size_mismatch")
    case("unknown_dtype.dsm", model(set_in("fc.bias", "dtype", "F64")), "tensor 'fc.bias'", "bad_dtype")
    case("negative_dim.dsm", model(set_in("fc.bias", "shape", [-3])), "tensor 'fc.bias'", "bad_shape")
    case("nine_dims.dsm", model(set_in("fc.bias", "shape", [3, 1, 1, 1, 1, 1, 1, 1, 1])),
         "tensor 'fc.bias'", "bad_shape")
    case("shape_overflow.dsm", model(set_in("fc.bias", "shape", [2**32, 2**32, 3])),
         "tensor 'fc.bias'", "shape_overflow")
    case("bad_json.dsm", raw_header(b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]', b"x"),
         "JSON", "bad_json")
    case("not_object.dsm", raw_header(b"[1, 2, 3]"), "object", "bad_header")
    case("duplicate_keys.dsm",
         raw_header(b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                    b'"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"x"),
         "duplicate", "duplicate_key")
    case("meta_nonstring.dsm", model(lambda h: h["__metadata__"].update({"ds.epochs": 3})),
         "ds.epochs", "bad_metadata")
    case("bad_checksums.dsm", model(lambda h: h["__metadata__"].update({"ds.checksums": "{\"fc.bias\": 12}"})),
         "ds.checksums", "bad_checksums")
    case("checksums_not_json.dsm", model(lambda h: h["__metadata__"].update({"ds.checksums": "{"})),
         "ds.checksums", "bad_checksums")
    flipped = bytearray(good)
    flipped[-1] ^= 0x01
    case("checksum_mismatch.dsm", bytes(flipped), "tensor 'fc.bias'", "checksum_mismatch")
    case("trailing.dsm", good + b"garbage", "trailing", "trailing_data")
    stream = b"".join(frame(k) for k in range(3))
    case("stream_trunc.dst", stream[:-100], "frame 2: tensor 'x'", "truncated")
    case("stream_bad_frame1.dst", frame(0) + frame(1, set_in("y", "dtype", "Q8")) + frame(2),
         "frame 1: tensor 'y'", "bad_dtype")
    nope = json.loads(json.dumps(GRAPH))
    nope["nodes"][0]["inputs"][1] = "nope"
    case("graph_nope.dsm", model(graph=nope), "nope", "")

    with open(os.path.join(out, "cases.tsv"), "w") as f:
        for name, fragment, code in cases:
            f.write("%s\t%s\t%s\n" % (name, fragment, code))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: gen_malformed.py OUTDIR\n")
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
