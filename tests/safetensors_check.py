#!/usr/bin/env python3
"""An independent reader of ds containers, in the standard library only.

    safetensors_check.py [--model] [FILE|-]

Reads a model (.dsm, one safetensors document) or a stream (.dst, documents
one after another) from FILE or stdin, checks everything a safetensors reader
must (header length and JSON, dtypes, shapes, offsets tiling the data, string
metadata) and ds.checksums (CRC-32C per tensor), and prints a JSON summary:

    {"frames": 2, "tensors": [{"frame": 0, "name": "x", "dtype": "U8",
     "shape": [4, 28, 28, 1], "bytes": 3136, "crc": "1a2b3c4d"}, ...],
     "metadata": [{"ds.format": "frame/1", ...}, ...]}

Any problem is one line on stderr and exit status 1.  --model requires
exactly one document.  It shares no code with libds on purpose.
"""
import json
import struct
import sys

HEADER_MAX = 100 << 20
DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1, "I32": 4, "I64": 8}
MAX_DIMS = 8


class Bad(Exception):
    pass


def _crc_table():
    table = []
    for b in range(256):
        c = b
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table.append(c)
    return table


CRC_TABLE = _crc_table()


def crc32c(data):
    c = 0xFFFFFFFF
    table = CRC_TABLE
    for b in data:
        c = (c >> 8) ^ table[(c ^ b) & 0xFF]
    return c ^ 0xFFFFFFFF


def _no_duplicates(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise Bad("duplicate key %r in header" % k)
        obj[k] = v
    return obj


def _no_constants(name):
    raise Bad("header uses %s, which is not JSON" % name)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def read_document(buf, pos):
    """Check the document at buf[pos:]; return (frame summary, next pos)."""
    left = len(buf) - pos
    if left < 8:
        raise Bad("header length runs past end of file (%d of 8 bytes)" % left)
    (n,) = struct.unpack_from("<Q", buf, pos)
    if n < 2:
        raise Bad("header length %d is too small" % n)
    if n > HEADER_MAX:
        raise Bad("header length %d is over the limit" % n)
    if n > left - 8:
        raise Bad("header runs past end of file")
    raw = bytes(buf[pos + 8:pos + 8 + n])
    try:
        text = raw.decode("utf-8")
        header = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as e:
        raise Bad("header is not valid JSON: %s" % e)
    if not isinstance(header, dict):
        raise Bad("header is not a JSON object")

    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict):
        raise Bad("__metadata__ is not an object")
    for k, v in metadata.items():
        if not isinstance(v, str):
            raise Bad("__metadata__: value of %r is not a string" % k)

    tensors = []
    for name, spec in header.items():
        where = "tensor %r" % name
        if not isinstance(spec, dict):
            raise Bad("%s: entry is not an object" % where)
        dtype = spec.get("dtype")
        if dtype not in DTYPE_SIZE:
            raise Bad("%s: unknown dtype %r" % (where, dtype))
        shape = spec.get("shape")
        if not isinstance(shape, list) or len(shape) > MAX_DIMS:
            raise Bad("%s: bad shape %r" % (where, shape))
        numel = 1
        for d in shape:
            if not _is_int(d) or d < 0:
                raise Bad("%s: bad dimension %r" % (where, d))
            numel *= d
        size = numel * DTYPE_SIZE[dtype]
        if size >= 1 << 63:
            raise Bad("%s: shape too large" % where)
        offsets = spec.get("data_offsets")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(_is_int(o) and o >= 0 for o in offsets)):
            raise Bad("%s: bad data_offsets %r" % (where, offsets))
        begin, end = offsets
        if begin > end:
            raise Bad("%s: data_offsets end before they begin" % where)
        if end - begin != size:
            raise Bad("%s: %d data bytes for %d needed" % (where, end - begin, size))
        tensors.append({"name": name, "dtype": dtype, "shape": shape, "begin": begin, "end": end})

    expect = 0
    for t in sorted(tensors, key=lambda t: (t["begin"], t["end"])):
        if t["begin"] != expect:
            raise Bad("tensor %r: %s at byte %d" % (
                t["name"], "gap" if t["begin"] > expect else "overlap", t["begin"]))
        expect = t["end"]
    data_start = pos + 8 + n
    if data_start + expect > len(buf):
        raise Bad("data runs past end of file")

    sums = None
    if "ds.checksums" in metadata:
        try:
            sums = json.loads(metadata["ds.checksums"], object_pairs_hook=_no_duplicates)
        except ValueError as e:
            raise Bad("ds.checksums is not valid JSON: %s" % e)
        if not isinstance(sums, dict):
            raise Bad("ds.checksums is not an object")
        names = {t["name"] for t in tensors}
        for k, v in sums.items():
            if k not in names:
                raise Bad("ds.checksums names tensor %r, which is not in the file" % k)
            if (not isinstance(v, str) or len(v) != 8
                    or any(ch not in "0123456789abcdef" for ch in v)):
                raise Bad("ds.checksums: value for %r is not 8 lowercase hex digits" % k)

    out = []
    for t in tensors:
        data = buf[data_start + t["begin"]:data_start + t["end"]]
        crc = "%08x" % crc32c(data)
        if sums is not None and t["name"] in sums and sums[t["name"]] != crc:
            raise Bad("tensor %r: checksum mismatch (stored %s, computed %s)" % (
                t["name"], sums[t["name"]], crc))
        out.append({"frame": 0, "name": t["name"], "dtype": t["dtype"], "shape": t["shape"],
                    "bytes": t["end"] - t["begin"], "crc": crc})
    return {"tensors": out, "metadata": metadata}, data_start + expect


def main(argv):
    args = argv[1:]
    model = "--model" in args
    args = [a for a in args if a != "--model"]
    if len(args) > 1:
        sys.stderr.write("usage: safetensors_check.py [--model] [FILE|-]\n")
        return 2
    path = args[0] if args else "-"
    try:
        if path == "-":
            buf = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                buf = f.read()
    except OSError as e:
        sys.stderr.write("safetensors_check: error: %s: %s\n" % (path, e.strerror))
        return 1

    frames, tensors, metadata = 0, [], []
    pos = 0
    try:
        if model and not buf:
            raise Bad("empty file")
        while pos < len(buf):
            doc, pos = read_document(buf, pos)
            for t in doc["tensors"]:
                t["frame"] = frames
                tensors.append(t)
            metadata.append(doc["metadata"])
            frames += 1
            if model and pos != len(buf):
                raise Bad("trailing data after the container at byte %d" % pos)
    except Bad as e:
        where = path if model else "%s: frame %d" % (path, frames)
        sys.stderr.write("safetensors_check: error: %s: %s\n" % (where, e))
        return 1
    json.dump({"frames": frames, "tensors": tensors, "metadata": metadata}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
