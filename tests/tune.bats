#!/usr/bin/env bats
# ds-optimize --tune: kernel records measured on this machine.  What wins is
# a matter of timing, so the tests check the records' form and that every
# record computes what the default kernels compute, never which one won.

bats_require_minimum_version 1.5.0

load helpers

setup() {
	T=$BATS_TEST_TMPDIR
	need ds-optimize
	need ds-train
	need ds-clean
	need mkimages
	mkimages idx "$T/idx" 64
	ds-clean -q "$T/idx/t-images-idx3-ubyte" -o "$T/d.dst" --report /dev/null
}

# The model's graph with attrs set on every conv2d node (JSON object text).
with_attrs() {
	"$PY" - "$1" "$2" "$3" <<'PY'
import json, struct, sys
src, dst, attrs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
g = json.loads(head["__metadata__"]["ds.graph"])
for node in g["nodes"]:
    if node["op"] == "conv2d":
        node.setdefault("attrs", {}).update(attrs)
head["__metadata__"]["ds.graph"] = json.dumps(g)
text = json.dumps(head).encode()
text += b" " * (-len(text) % 8)
open(dst, "wb").write(struct.pack("<Q", len(text)) + text + raw[8 + n:])
PY
}

@test "--tune reports every convolution with a choice and verifies" {
	ds-train -q --data "$T/d.dst" --arch resnet-s --epochs 0 --max-steps 2 -o "$T/m.dsm"
	# Without the layout pass, whose blocked convolutions have one kernel.
	run --separate-stderr ds-optimize --tune --disable-pass layout --batch 8 --verify 16 --format json \
		-o "$T/t.dsm" "$T/m.dsm"
	[ "$status" -eq 0 ] || { echo "$stderr"; false; }
	echo "$stderr" > "$T/r.json"
	"$PY" - "$T/r.json" "$T/t.dsm" <<'PY'
import json, struct, sys
# a loaded machine may make the whole-model check warn before the report
text = open(sys.argv[1]).read()
d = json.loads(text[text.index("{\n"):])
f, rows = d["figures"], d["tune"]
# resnet-s: 3x3 convolutions and strided 1x1 shortcuts have a choice
assert f["tune_nodes"] == len(rows) >= 10, (f, rows)
assert f["tune_batch"] == 8 and f["tune_threads"] >= 1
assert all(r["default_ms"] > 0 and r["ms"] > 0 for r in rows), rows
assert all(r["ms"] <= r["default_ms"] for r in rows), rows
assert d["verify"]["max_rel_diff"] < 1e-5, d["verify"]
raw = open(sys.argv[2], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
g = json.loads(json.loads(raw[8:8 + n])["__metadata__"]["ds.graph"])
recorded = [n for n in g["nodes"] if "kernel" in n.get("attrs", {})]
# records only where the report says a kernel other than the default won,
# and only when the whole model got faster
assert len(recorded) == f["tune_records"], (recorded, f)
assert f["tune_records"] == 0 or f["tune_kept"] is True
for node in recorded:
    assert node["attrs"]["kernel"] in ("direct", "gemm", "lanes"), node
PY
}

@test "every kernel record computes what the default kernels compute" {
	ds-train -q --data "$T/d.dst" --arch cnn-small --epochs 0 --max-steps 2 -o "$T/m.dsm"
	for attrs in '{"kernel": "gemm"}' '{"kernel": "gemm", "chunk": 1}' '{"kernel": "gemm", "chunk": 3}' \
		'{"kernel": "direct"}' '{"kernel": "lanes"}' '{"kernel": "auto", "chunk": 16}'; do
		with_attrs "$T/m.dsm" "$T/r.dsm" "$attrs"
		run --separate-stderr ds-optimize -O0 --verify 64 --format json -o "$T/o.dsm" "$T/r.dsm"
		[ "$status" -eq 0 ] || { echo "$attrs: $stderr"; false; }
		# -O0 copies: the comparison is the record against the default
		ds-infer -q --model "$T/r.dsm" --topk 1 "$T/d.dst" > "$T/r.jsonl"
		ds-infer -q --model "$T/m.dsm" --topk 1 "$T/d.dst" > "$T/m.jsonl"
		"$PY" - "$T/r.jsonl" "$T/m.jsonl" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) == 64
for x, y in zip(a, b):
    assert x["top"][0]["label"] == y["top"][0]["label"], (x, y)
    assert abs(x["probability"] - y["probability"]) <= 2e-6, (x, y)
PY
	done
}

@test "a bad record is status 3 naming the node and the attribute" {
	ds-train -q --data "$T/d.dst" --arch cnn-small --epochs 0 --max-steps 2 -o "$T/m.dsm"
	with_attrs "$T/m.dsm" "$T/r.dsm" '{"kernel": "fastest"}'
	run --separate-stderr ds-infer -q --model "$T/r.dsm" "$T/d.dst"
	[ "$status" -eq 3 ]
	[[ "$stderr" == *kernel* ]]
	with_attrs "$T/m.dsm" "$T/r.dsm" '{"chunk": -2}'
	run --separate-stderr ds-infer -q --model "$T/r.dsm" "$T/d.dst"
	[ "$status" -eq 3 ]
	[[ "$stderr" == *chunk* ]]
}

@test "--tune on a model without convolutions records nothing" {
	ds-train -q --data "$T/d.dst" --arch mlp --epochs 0 --max-steps 2 -o "$T/m.dsm"
	run --separate-stderr ds-optimize --tune --format json -o "$T/t.dsm" "$T/m.dsm"
	[ "$status" -eq 0 ]
	echo "$stderr" > "$T/r.json"
	[ "$(json_eval "$T/r.json" "d['figures']['tune_nodes']")" = 0 ]
	[ "$(json_eval "$T/r.json" "d['figures']['tune_records']")" = 0 ]
}
