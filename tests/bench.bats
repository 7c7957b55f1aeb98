#!/usr/bin/env bats
# ds-bench: the record's structure in every format, sweeps, --compare,
# accuracy on labelled data, per-iteration export, and bad input with the
# documented status.  Timings are never compared with absolute values.

bats_require_minimum_version 1.5.0

load helpers

# Short runs: a few milliseconds per configuration.
FAST="--min-time 0 -r 3 --warmup 1 --max-cv 1000"

setup_file() {
	export D=$BATS_FILE_TMPDIR
	command -v ds-bench >/dev/null && command -v ds-train >/dev/null && command -v mkimages >/dev/null || return 0
	mkimages idx "$D/idx" 100 >/dev/null
	ds-clean -q "$D/idx/t-images-idx3-ubyte" -o "$D/d.dst" --report /dev/null
	ds-train -q --data "$D/d.dst" --arch cnn-small --epochs 0 -o "$D/m.dsm"
}

setup() {
	need ds-bench
	need ds-train
	need mkimages
	T=$BATS_TEST_TMPDIR
}

# One frame of N images H x W x C as DTYPE (U8 or F32), labels i % 10.
frame() {
	"$PY" - "$@" <<'PY'
import json, struct, sys
path, n, h, w, c, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
y = struct.pack("<%di" % n, *[i % 10 for i in range(n)])
count = n * h * w * c
x = bytes(i % 251 for i in range(count)) if dtype == "U8" else struct.pack("<%df" % count, *[0.5] * count)
head = {"y": {"dtype": "I32", "shape": [n], "data_offsets": [0, len(y)]},
        "x": {"dtype": dtype, "shape": [n, h, w, c], "data_offsets": [len(y), len(y) + len(x)]},
        "__metadata__": {"ds.format": "frame/1", "ds.labels": json.dumps([str(i) for i in range(10)])}}
text = json.dumps(head).encode()
text += b" " * (-len(text) % 8)
open(path, "wb").write(struct.pack("<Q", len(text)) + text + y + x)
PY
}

@test "a sweep gives one row per configuration with ordered percentiles" {
	run -0 --separate-stderr ds-bench $FAST --format json -b 1,3 --threads 1,2 "$D/m.dsm"
	echo "$output" > "$T/r.json"
	"$PY" - "$T/r.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rows = d["results"]
assert d["configurations"] == 4 and d["failed"] == 0 and d["error_rate"] == 0, d
assert [(r["threads"], r["batch"]) for r in rows] == [(1, 1), (1, 3), (2, 1), (2, 3)], rows
for r in rows:
    assert r["status"] == "ok" and r["error"] is None, r
    assert r["iterations"] >= 3, r
    assert 0 < r["ms_min"] <= r["ms_p50"] <= r["ms_p90"] <= r["ms_p99"] <= r["ms_max"], r
    assert r["ms_min"] <= r["ms_mean"] <= r["ms_max"], r
    assert r["items_per_s"] > 0 and r["items_per_s_sd"] >= 0 and r["cv_pct"] >= 0, r
    assert r["compute_ms"] > 0 and r["input_ms"] >= 0, r
    assert r["h2d_ms"] is None and r["d2h_ms"] is None and r["device_bytes"] is None, r
    assert r["arena_bytes"] > 0 and r["peak_rss_bytes"] > 0 and r["gflop_per_s"] > 0, r
    assert isinstance(r["unstable"], bool), r
m = d["models"][0]
assert m["params"] > 0 and m["flops_per_item"] > 0 and m["classes"] == 10, m
assert m["file_bytes"] > m["weight_bytes"] > 0, m
assert m["input"] == "F32 [-1, 1, 28, 28]", m
assert m["top1"] is None and m["loss"] is None, m
s = d["samples"]
assert len(s) == 4 and all(len(x["ms"]) == r["iterations"] == len(x["compute_ms"]) for x, r in zip(s, rows)), s
PY
}

@test "--repeat and --min-time: both are reached" {
	run -0 ds-bench --min-time 0.05 -r 2 --warmup 0 --max-cv 1000 -b 1 --format json "$D/m.dsm"
	echo "$output" > "$T/r.json"
	"$PY" - "$T/r.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
r, s = d["results"][0], d["samples"][0]
assert r["iterations"] >= 2, r
assert sum(s["ms"]) >= 45, sum(s["ms"])   # 50 ms of timed runs, less loop overhead
PY
}

@test "--data: accuracy and loss over the whole stream, and --compare of a model with itself" {
	run -0 --separate-stderr ds-bench $FAST --format json --data "$D/d.dst" --compare -b 4 \
		--model "$D/m.dsm" "$D/m.dsm"
	echo "$output" > "$T/r.json"
	"$PY" - "$T/r.json" <<'PY'
import json, math, sys
d = json.load(open(sys.argv[1]))
a, b = d["models"]
for m in d["models"]:
    assert m["eval_items"] == 100, m
    assert 0 <= m["top1"] <= m["top5"] <= 1, m
    assert m["loss"] > 0 and math.isfinite(m["loss"]), m
assert (a["top1"], a["top5"], a["loss"]) == (b["top1"], b["top5"], b["loss"])
c = d["comparison"]
assert len(c) == 2, c
assert c[0]["speedup"] == 1 and c[0]["latency_ratio"] == 1 and c[0]["size_ratio"] == 1, c[0]
assert c[1]["speedup"] > 0 and c[1]["size_ratio"] == 1 and c[1]["top1_delta"] == 0 and c[1]["loss_delta"] == 0, c[1]
PY
}

@test "md is the default; text, csv and jsonl render the same tables" {
	run -0 --separate-stderr ds-bench $FAST -b 2 --compare "$D/m.dsm" "$D/m.dsm"
	[[ "$output" == *"## results"* ]]
	[[ "$output" == *"## comparison"* ]]
	[[ "$output" =~ \|\ +speedup\ +\| ]]
	[[ "$output" != *'"ms": ['* ]]
	run -0 --separate-stderr ds-bench $FAST -b 2 --format text "$D/m.dsm"
	[[ "$output" == *"results:"* ]]
	run -0 --separate-stderr ds-bench $FAST -b 2 --format csv "$D/m.dsm"
	echo "$output" > "$T/r.csv"
	"$PY" - "$T/r.csv" <<'PY'
import csv, sys
text = open(sys.argv[1]).read()
block = text.split("# results\n")[1].split("\n\n")[0]
rows = list(csv.DictReader(block.splitlines()))
assert len(rows) == 1 and rows[0]["status"] == "ok" and float(rows[0]["ms_p50"]) > 0, rows
PY
	run -0 --separate-stderr ds-bench $FAST -b 1,2 --format jsonl "$D/m.dsm"
	echo "$output" | "$PY" -c '
import json, sys
lines = [json.loads(l) for l in sys.stdin]
assert "configurations" in lines[0], lines[0]
assert [l["table"] for l in lines[1:]] == ["models", "results", "results"], lines'
}

@test "--export-times writes one row per timed iteration, as CSV or JSON Lines" {
	run -0 --separate-stderr ds-bench $FAST -b 1,2 --format json --export-times "$T/t.jsonl" "$D/m.dsm"
	echo "$output" > "$T/r.json"
	"$PY" - "$T/r.json" "$T/t.jsonl" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rows = [json.loads(l) for l in open(sys.argv[2])]
assert len(rows) == sum(r["iterations"] for r in d["results"]), len(rows)
assert [r["iteration"] for r in rows if r["batch"] == 1] == list(range(1, d["results"][0]["iterations"] + 1))
assert all(r["ms"] >= r["compute_ms"] > 0 for r in rows), rows
PY
	run -0 --separate-stderr ds-bench $FAST -b 1 --export-times "$T/t.csv" "$D/m.dsm"
	[ "$(head -1 "$T/t.csv")" = "model,device,threads,batch,iteration,ms,compute_ms" ]
	[ "$(wc -l < "$T/t.csv")" -ge 4 ]
}

@test "--profile: one row per node of the graph and configuration, shares adding up to the run" {
	run -0 --separate-stderr ds-bench $FAST -b 1,4 --profile --format json "$D/m.dsm"
	echo "$output" > "$T/r.json"
	ds-info --format json "$D/m.dsm" > "$T/info.json"
	"$PY" - "$T/r.json" "$T/info.json" <<'PY'
import json, sys
d, info = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
prof = d["profile"]
ops = {o["op"]: o["nodes"] for o in info["ops"]}
for b in (1, 4):
    rows = [r for r in prof if r["batch"] == b]
    assert len(rows) == info["graph"]["nodes"], (rows, info["graph"])
    assert {op: sum(r["op"] == op for r in rows) for op in ops} == ops, rows
    assert abs(sum(r["pct"] for r in rows) - 100) < 1e-6, rows
    assert all(r["ms"] > 0 for r in rows), rows
    # GFLOP/s times ms is each node's work: together the model's FLOPs
    work = sum(r["gflop_per_s"] * r["ms"] * 1e6 for r in rows if r["gflop_per_s"] is not None)
    assert abs(work - b * info["graph"]["flops_per_item"]) <= 1e-6 * work, (work, b)
PY
	# the timed figures do not include the profiling runs
	run -0 --separate-stderr ds-bench $FAST -b 1 --profile --format csv "$D/m.dsm"
	[[ "$output" == *"node,op,ms,pct,gflop_per_s"* ]]
}

@test "-o writes the report to a file" {
	run -0 ds-bench $FAST -b 1 --format json -o "$T/r.json" "$D/m.dsm"
	[ -z "$output" ]
	json_eval "$T/r.json" 'd["results"][0]["status"]'
	[ "$(json_eval "$T/r.json" 'd["results"][0]["status"]')" = ok ]
}

@test "random token ids stay inside the vocabulary of a text model" {
	printf '%s\n' '{"text": "hello world", "label": "en"}' '{"text": "hallo welt", "label": "de"}' \
		'{"text": "good morning", "label": "en"}' '{"text": "guten morgen", "label": "de"}' > "$T/t.jsonl"
	ds-clean -q "$T/t.jsonl" -o "$T/t.dst" --report /dev/null --tokenizer ngrams --ngram-buckets 4096 --min-chars 1
	ds-train -q --data "$T/t.dst" --arch text-bag --epochs 0 -o "$T/t.dsm"
	run -0 --separate-stderr ds-bench $FAST -b 2 --format json --data "$T/t.dst" "$T/t.dsm"
	echo "$output" > "$T/r.json"
	[ "$(json_eval "$T/r.json" 'd["models"][0]["eval_items"]')" = 4 ]
	run -0 --separate-stderr ds-bench $FAST -b 2 --format json "$T/t.dsm"
	echo "$output" > "$T/r.json"
	[ "$(json_eval "$T/r.json" 'd["results"][0]["status"]')" = ok ]
}

@test "a high coefficient of variation is a warning and a flag" {
	run -0 --separate-stderr ds-bench --min-time 0 -r 5 --warmup 0 --max-cv 0 -b 1 --format json "$D/m.dsm"
	[[ "$stderr" == *"ds-bench: warning: "*"throughput varies by"*"--max-cv 0%"* ]]
	echo "$output" > "$T/r.json"
	[ "$(json_eval "$T/r.json" 'd["results"][0]["unstable"]')" = True ]
}

@test "bad lists and values are usage errors (status 2)" {
	run -2 --separate-stderr ds-bench -b 0 "$D/m.dsm"
	[ "${stderr_lines[0]}" = "ds-bench: error: --batch: '0': values must be 1 to 16777216" ]
	run -2 --separate-stderr ds-bench -b 1,,8 "$D/m.dsm"
	[[ "${stderr_lines[0]}" == "ds-bench: error: --batch: '1,,8' is not a list"* ]]
	run -2 ds-bench -b 8-1 "$D/m.dsm"
	run -2 ds-bench -b 1-8*1 "$D/m.dsm"
	run -2 ds-bench --threads two "$D/m.dsm"
	run -2 ds-bench --warmup 3x "$D/m.dsm"
	run -2 --separate-stderr ds-bench --device cpu,tpu "$D/m.dsm"
	[[ "${stderr_lines[0]}" == "ds-bench: error: --device: 'tpu' is not a device"* ]]
	run -2 --separate-stderr ds-bench
	[ "${stderr_lines[0]}" = "ds-bench: error: no model: give --model FILE or FILE operands" ]
}

@test "ranges sweep as llama-bench writes them" {
	run -0 --separate-stderr ds-bench $FAST -b 1-4*2 --threads 1-2 --format json "$D/m.dsm"
	echo "$output" > "$T/r.json"
	[ "$(json_eval "$T/r.json" '[(r["threads"], r["batch"]) for r in d["results"]]')" = \
		"[(1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (2, 4)]" ]
}

@test "an unreadable or corrupt model: status 5 or 3, naming the file" {
	run -5 --separate-stderr ds-bench $FAST "$T/absent.dsm"
	[[ "$stderr" == "ds-bench: error: $T/absent.dsm: "* ]]
	head -c 1000 "$D/m.dsm" > "$T/cut.dsm"
	run -3 --separate-stderr ds-bench $FAST "$T/cut.dsm"
	[[ "$stderr" == "ds-bench: error: $T/cut.dsm: "* ]]
	frame "$T/f.dst" 2 28 28 1 U8
	run -3 --separate-stderr ds-bench $FAST "$T/f.dst"
	[[ "$stderr" == "ds-bench: error: $T/f.dst: "* ]]
}

@test "data the model's input cannot take is status 3 naming both shapes" {
	frame "$T/rgb.dst" 4 32 32 3 U8
	run -3 --separate-stderr ds-bench $FAST --data "$T/rgb.dst" "$D/m.dsm"
	[[ "$stderr" == *"U8 [-1, 32, 32, 3]"* ]]
	[[ "$stderr" == *"F32 [1, 1, 28, 28]"* ]]
	[ "${#stderr_lines[@]}" -eq 1 ]
}

@test "a data stream of the wrong dtype is status 3" {
	frame "$T/f32.dst" 4 28 28 1 F32
	run -3 --separate-stderr ds-bench $FAST --data "$T/f32.dst" "$D/m.dsm"
	[[ "$stderr" == "ds-bench: error: $T/f32.dst: frame 0: tensor 'x': F32 "* ]]
}

@test "--continue-after-failure records failed configurations as null and ends with status 1" {
	run -1 --separate-stderr ds-bench $FAST -b 2 --format json --continue-after-failure \
		--device cpu,cuda:7 "$D/m.dsm" "$T/absent.dsm"
	echo "$output" > "$T/r.json"
	[[ "${stderr_lines[-1]}" == "ds-bench: error: 3 of 4 configurations failed; the first: "* ]]
	"$PY" - "$T/r.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["configurations"] == 4 and d["failed"] == 3 and d["error_rate"] == 0.75, d
ok, cuda, gone1, gone2 = d["results"]
assert ok["status"] == "ok" and ok["items_per_s"] > 0, ok
assert cuda["device"] == "cuda:7" and cuda["status"] == "failed" and cuda["items_per_s"] is None, cuda
assert "cuda:7" in cuda["error"], cuda
assert gone1["status"] == gone2["status"] == "failed" and "absent.dsm" in gone1["error"], gone1
assert d["models"][1]["status"] == "failed", d["models"]
PY
}

@test "without --continue-after-failure a missing GPU stops the run with status 1" {
	if command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -L > /dev/null 2>&1; then
		skip "this machine has a GPU"
	fi
	run -1 --separate-stderr ds-bench $FAST --device cpu,cuda "$D/m.dsm"
	[[ "$stderr" == "ds-bench: error: --device cuda: "* ]]
	[ -z "$output" ]
	DS_DEVICE=cuda run -1 --separate-stderr ds-bench "$D/m.dsm"
	[[ "$stderr" == "ds-bench: error: --device cuda: "* ]]
}

@test "--threads and --device lists come from DS_THREADS, DS_DEVICE and --config too" {
	DS_THREADS=1,2 run -0 --separate-stderr ds-bench $FAST -b 1 --format json "$D/m.dsm"
	echo "$output" > "$T/r.json"
	[ "$(json_eval "$T/r.json" '[r["threads"] for r in d["results"]]')" = "[1, 2]" ]
	echo '{"threads": "2", "device": "cpu", "batch": "2"}' > "$T/c.json"
	run -0 --separate-stderr ds-bench $FAST --config "$T/c.json" --format json "$D/m.dsm"
	echo "$output" > "$T/r.json"
	[ "$(json_eval "$T/r.json" '[(r["device"], r["threads"], r["batch"]) for r in d["results"]]')" = "[('cpu', 2, 2)]" ]
}
