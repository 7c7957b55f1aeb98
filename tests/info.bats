#!/usr/bin/env bats
# ds-info describes what libds writes: models, streams, files and pipes.

bats_require_minimum_version 1.5.0

setup() {
	py=${PYTHON3:-python3}
	model=$BATS_TEST_TMPDIR/m.dsm
	stream=$BATS_TEST_TMPDIR/s.dst
	mkfixture model "$model"
	mkfixture stream "$stream" 3
}

json_get() {
	# json_get FILE EXPR: evaluate a Python expression over the parsed JSON `d`.
	"$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# Flip the last byte of a file: it lies in the last tensor's data.
corrupt_last_byte() {
	"$py" -c 'import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[-1] ^= 0xff; open(p, "wb").write(b)' "$1"
}

@test "a model is described in text: format, tensors, graph, labels, history" {
	run ds-info "$model"
	[ "$status" -eq 0 ]
	[[ "$output" == *"model/1"* ]]
	[[ "$output" == *"fc.weight"* ]]
	[[ "$output" == *"linear"* ]]
	[[ "$output" == *"mkfixture"* ]]
	[[ "$output" == *"checksums"*"ok"* ]]
}

@test "json output has the graph summary with parameters and FLOPs per item" {
	ds-info --format json "$model" > "$BATS_TEST_TMPDIR/m.json"
	[ "$(json_get "$BATS_TEST_TMPDIR/m.json" 'd["kind"]')" = model ]
	[ "$(json_get "$BATS_TEST_TMPDIR/m.json" 'd["graph"]["nodes"]')" = 1 ]
	# linear 4 -> 3 with bias: 12 + 3 parameters, 2*12 (+3 for the bias) FLOPs
	[ "$(json_get "$BATS_TEST_TMPDIR/m.json" 'd["graph"]["parameters"]')" = 15 ]
	flops=$(json_get "$BATS_TEST_TMPDIR/m.json" 'd["graph"]["flops_per_item"]')
	[ "$flops" -ge 24 ] && [ "$flops" -le 27 ]
	[ "$(json_get "$BATS_TEST_TMPDIR/m.json" 'all(t["checksum"] == "ok" for t in d["tensors"])')" = True ]
	[ "$(json_get "$BATS_TEST_TMPDIR/m.json" 'd["bytes"]')" = "$(stat -c %s "$model")" ]
}

@test "a stream from a file and from a pipe gives the same description" {
	ds-info --format json "$stream" > "$BATS_TEST_TMPDIR/a.json"
	cat "$stream" | ds-info --format json - > "$BATS_TEST_TMPDIR/b.json"
	[ "$(json_get "$BATS_TEST_TMPDIR/a.json" 'd["frames"]')" = 3 ]
	[ "$(json_get "$BATS_TEST_TMPDIR/a.json" 'd["kind"]')" = stream ]
	[ "$(json_get "$BATS_TEST_TMPDIR/a.json" '{k: v for k, v in d.items() if k != "file"}')" = \
	  "$(json_get "$BATS_TEST_TMPDIR/b.json" '{k: v for k, v in d.items() if k != "file"}')" ]
	[ "$(json_get "$BATS_TEST_TMPDIR/a.json" 'd["bytes"]')" = "$(stat -c %s "$stream")" ]
}

@test "--frames lists every frame with offsets that add up" {
	ds-info --frames --format json "$stream" > "$BATS_TEST_TMPDIR/f.json"
	[ "$(json_get "$BATS_TEST_TMPDIR/f.json" 'len(d["frame_list"])')" = 3 ]
	[ "$(json_get "$BATS_TEST_TMPDIR/f.json" 'sum(f["bytes"] for f in d["frame_list"]) == d["bytes"]')" = True ]
	[ "$(json_get "$BATS_TEST_TMPDIR/f.json" 'd["frame_list"][1]["offset"] == d["frame_list"][0]["bytes"]')" = True ]
}

@test "every output format renders" {
	for f in text md csv json jsonl; do
		run ds-info --format "$f" "$model"
		[ "$status" -eq 0 ] || { echo "$f: $output"; false; }
		[ -n "$output" ]
	done
	ds-info --format jsonl "$model" | "$py" -c 'import json,sys; [json.loads(l) for l in sys.stdin]'
}

@test "a checksum mismatch is shown, and is exit 3 with --verify" {
	corrupt_last_byte "$model"
	run ds-info "$model"
	[ "$status" -eq 0 ]
	[[ "$output" == *mismatch* ]]
	run ds-info --verify "$model"
	[ "$status" -eq 3 ]
	[[ "$output" == "ds-info: error: $model: tensor '"*"checksum"* ]]
	[ "${#lines[@]}" -eq 1 ]
}

@test "--verify finds a mismatch in a later frame of a stream" {
	corrupt_last_byte "$stream"
	run ds-info --verify "$stream"
	[ "$status" -eq 3 ]
	[[ "$output" == *"frame 2"* ]]
	run ds-info --no-verify "$stream"
	[ "$status" -eq 0 ]
	[[ "$output" == *unchecked* ]]
}

@test "a missing file is exit 5 naming it" {
	run ds-info "$BATS_TEST_TMPDIR/nope.dsm"
	[ "$status" -eq 5 ]
	[[ "$output" == "ds-info: error: $BATS_TEST_TMPDIR/nope.dsm"*"No such file"* ]]
}

@test "an empty file is exit 3" {
	: > "$BATS_TEST_TMPDIR/empty.dsm"
	run ds-info "$BATS_TEST_TMPDIR/empty.dsm"
	[ "$status" -eq 3 ]
	run ds-info - < /dev/null
	[ "$status" -eq 3 ]
}

@test "a full disk on stdout is exit 5" {
	run sh -c 'ds-info "$1" > /dev/full' sh "$model"
	[ "$status" -eq 5 ]
	[[ "$output" == *"No space left on device"* ]]
}

@test "a reader that closes the pipe ends ds-info quietly" {
	run sh -c 'ds-info --format jsonl "$1" 2>"$2" | head -c 1 >/dev/null; cat "$2"' sh "$stream" "$BATS_TEST_TMPDIR/err"
	[ "$status" -eq 0 ]
	[ -z "$output" ]
}

@test "two models concatenated are not a model" {
	cat "$model" "$model" > "$BATS_TEST_TMPDIR/two.dsm"
	run ds-info "$BATS_TEST_TMPDIR/two.dsm"
	[ "$status" -eq 3 ]
	[[ "$output" == *"after the end of the model"* ]]
}

@test "ds-info never writes to its input" {
	before=$(sha256sum "$model" "$stream")
	ds-info "$model" >/dev/null
	ds-info --verify "$stream" >/dev/null
	[ "$(sha256sum "$model" "$stream")" = "$before" ]
}

@test "-o writes the description to a file, atomically" {
	ds-info --format json -o "$BATS_TEST_TMPDIR/d.json" "$model"
	[ "$(json_get "$BATS_TEST_TMPDIR/d.json" 'd["format"]')" = model/1 ]
	run ds-info -o "$BATS_TEST_TMPDIR/no/such/dir/d.txt" "$model"
	[ "$status" -eq 5 ]
	# A failure leaves the old output as it was and no temporary file behind.
	echo old > "$BATS_TEST_TMPDIR/keep.txt"
	run ds-info -o "$BATS_TEST_TMPDIR/keep.txt" "$BATS_TEST_TMPDIR/nope.dsm"
	[ "$status" -eq 5 ]
	[ "$(cat "$BATS_TEST_TMPDIR/keep.txt")" = old ]
	[ -z "$(find "$BATS_TEST_TMPDIR" -name '.*.??????')" ]
}

@test "OpenBLAS runs its AVX-512 kernels on a CPU that has them" {
	grep -qw avx512f /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo || skip "no AVX-512 here"
	run --separate-stderr env OPENBLAS_CORETYPE=Haswell ds-info -v "$model"
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"OpenBLAS kernels SkylakeX"* ]]
	run --separate-stderr env OPENBLAS_CORETYPE=Haswell DS_BLAS_KEEP=1 ds-info -v "$model"
	[[ "$stderr" == *"OpenBLAS kernels Haswell"* ]]
}
