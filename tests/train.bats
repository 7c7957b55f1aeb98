#!/usr/bin/env bats
# ds-train: models it writes are complete, training learns, bad data and bad
# runs stop with the documented status, checkpoints resume bit for bit.

bats_require_minimum_version 1.5.0

load helpers

setup() {
	T=$BATS_TEST_TMPDIR
	need ds-train
	need ds-clean
	need mkimages
}

# 200 distinct 28x28 images, 10 classes (labels i % 10).
data() {
	[ -f "$T/d.dst" ] && return 0
	mkimages idx "$T/idx" "${1:-200}"
	ds-clean -q "$T/idx/t-images-idx3-ubyte" -o "$T/d.dst" --report /dev/null
}

info() {
	ds-info --format json "$1" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$2"
}

# The name, dtype, shape and CRC of every tensor, one per line.
tensors() {
	"$PY" "$DS_SRCDIR/tests/safetensors_check.py" --model "$1" |
		"$PY" -c 'import json,sys; [print(t["name"], t["dtype"], t["shape"], t["crc"]) for t in sorted(json.load(sys.stdin)["tensors"], key=lambda t: t["name"])]'
}

# A stream of one frame of 28x28 images with ds.labels of 10 classes:
# `frame FILE LABELS` with LABELS as 1,2,12 (pixels pseudo-random), or
# `frame FILE learnable N` (N images whose bright band of rows gives the class).
frame() {
	"$PY" - "$@" <<'PY'
import json, random, struct, sys
rng = random.Random(1)
if sys.argv[2] == "learnable":
    y = [i % 10 for i in range(int(sys.argv[3]))]
    x = bytes(220 if p // 28 in (2 * k + 4, 2 * k + 5) else rng.randrange(60) for k in y for p in range(784))
else:
    y = [int(v) for v in sys.argv[2].split(",")]
    x = bytes(rng.randrange(256) for _ in range(len(y) * 784))
n = len(y)
yb = struct.pack("<%di" % n, *y)
head = {"y": {"dtype": "I32", "shape": [n], "data_offsets": [0, len(yb)]},
        "x": {"dtype": "U8", "shape": [n, 28, 28, 1], "data_offsets": [len(yb), len(yb) + len(x)]},
        "__metadata__": {"ds.format": "frame/1", "ds.labels": json.dumps([str(i) for i in range(10)]),
                         "ds.preprocess": json.dumps({"kind": "image", "width": 28, "height": 28,
                                                      "channels": 1, "scale": 1 / 255})}}
h = json.dumps(head).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + yb + x)
PY
}

@test "a short run writes a model that ds-info describes, with its history" {
	data
	run ds-train --data "$T/d.dst" --arch mlp --epochs 1 -o "$T/m.dsm" --log "$T/log.jsonl"
	[ "$status" -eq 0 ] || { echo "$output"; false; }
	[ "$(info "$T/m.dsm" "d['graph']['nodes']")" -gt 0 ]
	[ "$(info "$T/m.dsm" "d['history'][-1]['tool']")" = ds-train ]
	[ "$(info "$T/m.dsm" "d['history'][-1]['figures']['steps']")" = 4 ]
	[ "$(info "$T/m.dsm" "d['preprocess']['kind']")" = image ]
	[ "$(info "$T/m.dsm" "len(d['labels'])")" = 10 ]
	"$PY" "$DS_SRCDIR/tests/safetensors_check.py" --model "$T/m.dsm" >/dev/null
	[ "$(grep -c '"event":"step"' "$T/log.jsonl")" = 4 ]
	[ "$(grep -c '"event":"epoch"' "$T/log.jsonl")" = 1 ]
}

@test "--epochs 0 writes the initial model, the same for the same seed" {
	data
	ds-train -q --data "$T/d.dst" --arch cnn-small --epochs 0 --seed 5 -o "$T/a.dsm"
	ds-train -q --data "$T/d.dst" --arch cnn-small --epochs 0 --seed 5 -o "$T/b.dsm"
	ds-train -q --data "$T/d.dst" --arch cnn-small --epochs 0 --seed 6 -o "$T/c.dsm"
	[ "$(tensors "$T/a.dsm")" = "$(tensors "$T/b.dsm")" ]
	[ "$(tensors "$T/a.dsm")" != "$(tensors "$T/c.dsm")" ]
}

@test "the loss decreases on a learnable set" {
	frame "$T/toy.dst" learnable 320
	ds-train -q --data "$T/toy.dst" --arch mlp --epochs 4 --batch 32 -o "$T/m.dsm" --log "$T/log.jsonl"
	"$PY" - "$T/log.jsonl" <<'PY'
import json, sys
e = [json.loads(l) for l in open(sys.argv[1]) if '"event":"epoch"' in l]
assert e[-1]["loss"] < 0.5 * e[0]["loss"], (e[0]["loss"], e[-1]["loss"])
assert e[-1]["accuracy"] > 0.5, e[-1]["accuracy"]
PY
}

@test "every built-in small architecture trains a step" {
	data
	for a in mlp cnn-small cnn-bn resnet-s mobilenet-s; do
		run ds-train -q --data "$T/d.dst" --arch "$a" --epochs 1 --max-steps 1 -o "$T/$a.dsm"
		[ "$status" -eq 0 ] || { echo "$a: $output"; false; }
	done
	ds-train --list-archs | grep -q '^resnet50 '
}

@test "validation keeps the best model and reports accuracy" {
	data
	ds-train -q --data "$T/d.dst" --val-split 0.2 --arch mlp --epochs 3 -o "$T/m.dsm" --log "$T/log.jsonl"
	[ "$(grep -c '"val_accuracy"' "$T/log.jsonl")" = 3 ]
	[ "$(info "$T/m.dsm" "'best_val_accuracy' in d['history'][-1]['figures']")" = True ]
}

@test "data that do not fit the model: status 3 naming the file, frame and tensor" {
	data
	ds-train -q --data "$T/d.dst" --arch mlp --epochs 0 -o "$T/m.dsm"
	ds-clean -q "$T/idx/t-images-idx3-ubyte" --size 16x16 -o "$T/small.dst" --report /dev/null
	run ds-train -q --finetune "$T/m.dsm" --data "$T/small.dst" --epochs 1 -o "$T/f.dsm"
	[ "$status" -eq 3 ]
	[[ "$output" == *"small.dst: frame 0: tensor 'x'"* ]]
	[ ! -e "$T/f.dsm" ]
}

@test "labels outside the class count: status 3" {
	frame "$T/bad.dst" 1,2,12,3
	run ds-train -q --data "$T/bad.dst" --arch mlp --epochs 1 -o "$T/m.dsm"
	[ "$status" -eq 3 ]
	[[ "$output" == *"bad.dst: frame 0: tensor 'y': label 12 of row 2"* ]]
	frame "$T/neg.dst" 1,-1,0,0
	run ds-train -q --data "$T/neg.dst" --arch mlp --epochs 1 -o "$T/m.dsm"
	[ "$status" -eq 3 ]
}

@test "an empty dataset: status 3" {
	: > "$T/empty.dst"
	run ds-train -q --data "$T/empty.dst" --arch mlp -o "$T/m.dsm"
	[ "$status" -eq 3 ]
	[[ "$output" == *"no items"* ]]
}

@test "resume is bit-identical to an uninterrupted run" {
	data
	args=(--data "$T/d.dst" --val-split 0.2 --arch cnn-bn --epochs 2 --batch 16 --threads 1
	      --augment crop,flip --schedule cosine --warmup 3 --seed 3 -q)
	ds-train "${args[@]}" -o "$T/full.dsm"
	# stop in the middle of the first epoch, then continue
	ds-train "${args[@]}" --max-steps 7 --checkpoint "$T/ck.dsm" --checkpoint-every 7 -o "$T/part.dsm"
	[ "$(info "$T/ck.dsm" "'ds.train' in str(d)")" = True ] || true
	ds-train "${args[@]}" --resume "$T/ck.dsm" -o "$T/resumed.dsm"
	[ "$(tensors "$T/full.dsm")" = "$(tensors "$T/resumed.dsm")" ]
	[ "$(tensors "$T/full.dsm")" != "$(tensors "$T/part.dsm")" ]
}

@test "SIGINT finishes the step, saves a checkpoint and exits 130" {
	data
	set -m
	ds-train -q --data "$T/d.dst" --arch cnn-small --epochs 1000 --batch 8 --threads 1 \
		--checkpoint "$T/ck.dsm" -o "$T/m.dsm" --log "$T/log.jsonl" 2>"$T/err" &
	pid=$!
	for _ in $(seq 100); do
		grep -q '"event":"step"' "$T/log.jsonl" 2>/dev/null && break
		sleep 0.1
	done
	kill -INT "$pid"
	status=0
	wait "$pid" || status=$?
	set +m
	[ "$status" -eq 130 ] || { cat "$T/err"; false; }
	grep -q 'checkpoint saved' "$T/err"
	[ ! -e "$T/m.dsm" ]
	ds-train -q --data "$T/d.dst" --resume "$T/ck.dsm" --epochs 1000 --batch 8 --max-steps 30 -o "$T/m.dsm"
	[ -s "$T/m.dsm" ]
}

@test "a checkpoint that cannot be written: status 5, the previous one survives" {
	data
	ds-train -q --data "$T/d.dst" --arch mlp --epochs 2 --max-steps 2 --checkpoint "$T/ck.dsm" \
		--checkpoint-every 2 -o "$T/m.dsm"
	cp "$T/ck.dsm" "$T/ck.copy"
	run ds-train -q --data "$T/d.dst" --epochs 2 --resume "$T/ck.dsm" --checkpoint /dev/full \
		--checkpoint-every 1 -o "$T/m2.dsm"
	[ "$status" -eq 5 ]
	cmp "$T/ck.dsm" "$T/ck.copy"
	run ds-train -q --data "$T/d.dst" --arch mlp --epochs 1 -o /dev/full
	[ "$status" -eq 5 ]
}

@test "a NaN loss stops with status 1 naming the step" {
	data
	run ds-train -q --data "$T/d.dst" --arch mlp --optimizer sgd --lr 1e30 --epochs 5 -o "$T/m.dsm"
	[ "$status" -eq 1 ]
	[[ "$output" == *"step "*"the loss is"* ]]
	[ ! -e "$T/m.dsm" ]
}

@test "bad options: status 2; cuda and distillation: status 1" {
	data
	run ds-train --data "$T/d.dst" --optimizer adam -o "$T/m.dsm"
	[ "$status" -eq 2 ]
	run ds-train --data "$T/d.dst" --augment rotate -o "$T/m.dsm"
	[ "$status" -eq 2 ]
	run ds-train --data "$T/d.dst" --arch nope -o "$T/m.dsm"
	[ "$status" -eq 2 ]
	run ds-train --data "$T/d.dst" -o "$T/m.dsm" --device cuda
	[ "$status" -eq 1 ]
	run ds-train --data "$T/d.dst" -o "$T/m.dsm" --teacher "$T/m.dsm" --distill-weight 2
	[ "$status" -eq 2 ]
}

@test "distillation: a student learns from a teacher, which must fit the data" {
	frame "$T/toy.dst" learnable 320
	ds-train -q --data "$T/toy.dst" --arch mlp --epochs 4 --batch 32 --seed 1 -o "$T/teacher.dsm"
	ds-train -q --data "$T/toy.dst" --arch cnn-small --epochs 3 --batch 32 --seed 2 \
		--teacher "$T/teacher.dsm" --temperature 2 --distill-weight 0.7 \
		-o "$T/student.dsm" --log "$T/log.jsonl"
	"$PY" - "$T/log.jsonl" <<'PY'
import json, sys
losses = [e["loss"] for e in map(json.loads, open(sys.argv[1])) if e["event"] == "step"]
assert losses[-1] < 0.5 * losses[0], losses
PY
	[ "$(info "$T/student.dsm" "d['graph']['parameters']")" -gt 100000 ]
	# A teacher that takes other inputs is bad data.
	data
	mkdir -p "$T/small"
	ds-clean -q "$T/idx/t-images-idx3-ubyte" --size 14x14 -o "$T/small/d.dst" --report /dev/null
	ds-train -q --data "$T/small/d.dst" --arch mlp --epochs 1 -o "$T/small.dsm"
	run ds-train -q --data "$T/d.dst" --arch mlp --epochs 1 --teacher "$T/small.dsm" -o "$T/x.dsm"
	[ "$status" -eq 3 ]
	[[ "$output" == *"does not take the student's items"* ]]
	[ ! -e "$T/x.dsm" ]
}

@test "an architecture file trains" {
	data
	cat > "$T/a.json" <<'EOF'
{"graph": {"inputs": [{"name": "x", "dtype": "F32", "shape": [-1, 1, 28, 28]}],
           "nodes": [{"op": "flatten", "name": "flat", "inputs": ["x"], "outputs": ["h"]},
                     {"op": "linear", "name": "fc", "inputs": ["h", "fc.weight", "fc.bias"], "outputs": ["logits"]}],
           "outputs": ["logits"]},
 "params": {"fc.weight": {"shape": [10, 784], "init": "kaiming_uniform"},
            "fc.bias": {"shape": [10], "init": "kaiming_uniform", "fan_in": 784}}}
EOF
	ds-train -q --data "$T/d.dst" --arch "$T/a.json" --epochs 1 -o "$T/m.dsm"
	[ "$(info "$T/m.dsm" "d['graph']['parameters']")" = 7850 ]
}

@test "text-bag trains on a text stream" {
	mkdir -p "$T/txt/en" "$T/txt/de"
	for i in $(seq 30); do
		echo "the cat sat on the mat number $i and purred" > "$T/txt/en/$i.txt"
		echo "der Hund lief schnell nach Hause nummer $i heute" > "$T/txt/de/$i.txt"
	done
	ds-clean -q "$T/txt" --near-jaccard 0 -o "$T/t.dst" --report /dev/null
	ds-train -q --data "$T/t.dst" --arch text-bag --epochs 6 --lr 0.01 -o "$T/t.dsm" --log "$T/log.jsonl"
	[ "$(info "$T/t.dsm" "d['preprocess']['kind']")" = text ]
	[ "$(grep '"event":"epoch"' "$T/log.jsonl" | tail -1 | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["accuracy"])')" = 1.0 ]
}

@test "text-bag resumes bit for bit: sparse table, accumulation, clipping, two threads" {
	mkdir -p "$T/txt/en" "$T/txt/de"
	for i in $(seq 40); do
		echo "the cat sat on the mat number $i and purred" > "$T/txt/en/$i.txt"
		echo "der Hund lief schnell nach Hause nummer $i heute" > "$T/txt/de/$i.txt"
	done
	ds-clean -q "$T/txt" --tokenizer ngrams --ngram-buckets 4096 --max-tokens 96 --near-jaccard 0 \
		-o "$T/t.dst" --report /dev/null
	for opt in "adamw" "sgd --momentum 0.9 --nesterov"; do
		# shellcheck disable=SC2206
		args=(--data "$T/t.dst" --arch text-bag --epochs 3 --batch 8 --accum 2 --clip 0.5 --threads 2
		      --seed 5 --lr 0.05 --optimizer $opt -q)
		ds-train "${args[@]}" -o "$T/full.dsm"
		ds-train "${args[@]}" --max-steps 6 --checkpoint "$T/ck.dsm" --checkpoint-every 6 -o "$T/part.dsm"
		ds-train "${args[@]}" --resume "$T/ck.dsm" -o "$T/resumed.dsm"
		[ "$(tensors "$T/full.dsm")" = "$(tensors "$T/resumed.dsm")" ]
		[ "$(tensors "$T/full.dsm")" != "$(tensors "$T/part.dsm")" ]
	done
}

@test "agreement with PyTorch: 20 SGD steps, losses within 1e-4" {
	# Debian's python3-torch lives under /usr/bin/python3, which need not
	# be the python3 first on PATH.
	py=$PY
	"$py" -c 'import torch' 2>/dev/null || { [ -x /usr/bin/python3 ] && py=/usr/bin/python3; }
	run "$py" "$DS_SRCDIR/tests/torch_agreement.py"
	[ "$status" -eq 77 ] && skip "$output"
	[ "$status" -eq 0 ] || { echo "$output"; false; }
}

@test "--sparsity drives the batch-norm scales down (network slimming)" {
	data
	ds-train -q --data "$T/d.dst" --arch cnn-bn --epochs 2 --lr 0.01 -o "$T/plain.dsm"
	ds-train -q --data "$T/d.dst" --arch cnn-bn --epochs 2 --lr 0.01 --sparsity 0.1 -o "$T/slim.dsm"
	# The L1 norm of every batch norm's gamma, read from the safetensors.
	l1() {
		"$PY" - "$1" <<'PY'
import array, json, struct, sys
f = open(sys.argv[1], 'rb')
n = struct.unpack('<Q', f.read(8))[0]
h = json.loads(f.read(n))
g = json.loads(h['__metadata__']['ds.graph'])
gammas = [node['inputs'][1] for node in g['nodes'] if node['op'] == 'batchnorm']
total = 0.0
for name in gammas:
    a, b = h[name]['data_offsets']
    f.seek(8 + n + a)
    v = array.array('f')
    v.frombytes(f.read(b - a))
    total += sum(abs(x) for x in v)
print(total)
PY
	}
	plain=$(l1 "$T/plain.dsm")
	slim=$(l1 "$T/slim.dsm")
	echo "plain $plain slim $slim"
	"$PY" -c "import sys; sys.exit(0 if $slim < $plain - 1 else 1)"
	run ds-train -q --data "$T/d.dst" --sparsity -1 -o "$T/bad.dsm"
	[ "$status" -eq 2 ]
}

@test "--profile: a row per node with forward and backward times, then the optimizer; the percentages add up" {
	data
	run --separate-stderr ds-train --data "$T/d.dst" --arch cnn-small --epochs 1 --profile --format json -o "$T/m.dsm"
	[ "$status" -eq 0 ] || { echo "$stderr"; false; }
	echo "$stderr" | sed -n '/^{/,$p' > "$T/s.json"
	"$PY" - "$T/s.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["profile"]
names = [r["node"] for r in rows]
assert names[-2:] == ["(optimizer)", "(rest of the step)"], names
assert {"conv1", "conv2", "fc1", "fc2"} <= set(names), names
conv2 = [r for r in rows if r["node"] == "conv2"][0]
assert conv2["op"] == "conv2d" and conv2["forward_ms"] > 0 and conv2["backward_ms"] > 0, conv2
assert abs(sum(r["pct"] for r in rows) - 100) < 1e-6, rows
PY
	# Without the flag there is no table.
	run --separate-stderr ds-train --data "$T/d.dst" --arch mlp --epochs 1 --format json -o "$T/m2.dsm"
	[[ "$stderr" != *'"profile"'* ]]
}
