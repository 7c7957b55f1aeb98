#!/usr/bin/env bats
# What libds writes is plain safetensors: an independent reader in Python's
# standard library (tests/safetensors_check.py) accepts models and streams,
# written to files and through pipes, and sees the tensors ds-info sees.

load helpers

setup() {
	check="$PY $DS_SRCDIR/tests/safetensors_check.py"
	cd "$BATS_TEST_TMPDIR"
}

@test "mkfixture's model is one valid safetensors document" {
	mkfixture model m.dsm
	$check --model m.dsm > m.json
	[ "$(json_eval m.json 'd["frames"]')" = 1 ]
	[ "$(json_eval m.json 'd["metadata"][0]["ds.format"]')" = model/1 ]
	[ "$(json_eval m.json 'sorted(t["dtype"] for t in d["tensors"])')" = "['F32', 'F32', 'I32', 'I8', 'U8']" ]
	[ "$(json_eval m.json '[t["shape"] for t in d["tensors"] if t["name"] == "extra.step"]')" = "[[]]" ]
	[ "$(json_eval m.json 'len(json.loads(d["metadata"][0]["ds.history"]))')" = 1 ]
}

@test "the data of a model starts 64-byte aligned" {
	mkfixture model m.dsm
	n=$("$PY" -c 'import struct,sys; print(struct.unpack("<Q", open(sys.argv[1], "rb").read(8))[0])' m.dsm)
	[ $(( (n + 8) % 64 )) -eq 0 ]
}

@test "a stream to a file and through a pipe: same bytes, valid frames" {
	mkfixture stream s.dst 3
	mkfixture stream - 3 | cat > p.dst
	cmp s.dst p.dst
	$check s.dst > s.json
	$check < p.dst > p.json
	[ "$(json_eval s.json 'd["frames"]')" = 3 ]
	[ "$(json_eval s.json '[t["name"] for t in d["tensors"]]')" = "['x', 'y', 'x', 'y', 'x', 'y']" ]
	[ "$(json_eval s.json 'd["tensors"][0]["shape"]')" = "[4, 28, 28, 1]" ]
	[ "$(json_eval s.json 'all(m["ds.format"] == "frame/1" and len(json.loads(m["ds.items"])) == 4 for m in d["metadata"])')" = True ]
	[ "$(json_eval s.json 'd["tensors"]')" = "$(json_eval p.json 'd["tensors"]')" ]
}

@test "a stream of no frames is empty, and not a model" {
	mkfixture stream s.dst 0
	[ ! -s s.dst ]
	$check s.dst > s.json
	[ "$(json_eval s.json 'd["frames"]')" = 0 ]
	run $check --model s.dst
	[ "$status" -ne 0 ]
}

@test "the Python reader and ds-info --format json list the same model tensors" {
	need ds-info
	mkfixture model m.dsm
	$check --model m.dsm > py.json
	ds-info --format json m.dsm > ds.json
	want=$(json_eval py.json '[(t["name"], t["dtype"], t["shape"], t["bytes"]) for t in d["tensors"]]')
	got=$(json_eval ds.json '[(t["name"], t["dtype"], t["shape"], t["bytes"]) for t in d["tensors"]]')
	[ "$want" = "$got" ]
}

@test "the Python reader and ds-info --format json agree on a piped stream" {
	need ds-info
	mkfixture stream - 3 | cat > s.dst
	$check s.dst > py.json
	mkfixture stream - 3 | ds-info --format json - > ds.json
	[ "$(json_eval py.json 'd["frames"]')" = "$(json_eval ds.json 'd["frames"]')" ]
	want=$(json_eval py.json 'sorted({(t["name"], t["dtype"], str(t["shape"])) for t in d["tensors"]})')
	got=$(json_eval ds.json 'sorted({(t["name"], t["dtype"], str(t["shape"])) for t in d["tensors"]})')
	[ "$want" = "$got" ]
}

@test "the Python reader refuses every malformed file" {
	"$PY" "$DS_SRCDIR/tests/gen_malformed.py" mal
	$check --model mal/good.dsm > /dev/null
	$check mal/good.dst > /dev/null
	while IFS=$'\t' read -r file fragment code; do
		[ "$file" = graph_nope.dsm ] && continue   # a valid container; the graph is wrong
		opt=; case $file in *.dsm) opt=--model ;; esac
		run $check $opt "mal/$file"
		echo "$file: $status $output"
		[ "$status" -eq 1 ]
	done < mal/cases.tsv
}

@test "a failed write is exit 5 and leaves nothing behind" {
	run mkfixture stream /dev/full 2
	[ "$status" -eq 5 ]
	[[ "$output" == *"No space left on device"* ]]
	mkdir out
	mkfixture model out/m.dsm
	cp out/m.dsm before.dsm
	run mkfixture stream out/no/such/dir.dst 1
	[ "$status" -eq 5 ]
	[ "$(ls -A out)" = m.dsm ]
	cmp out/m.dsm before.dsm
}

@test "the safetensors package loads a model, where installed" {
	"$PY" -c 'import safetensors.numpy' 2>/dev/null || skip "python3 safetensors not installed"
	mkfixture model m.dsm
	"$PY" -c '
import sys, safetensors.numpy as st
t = st.load(open(sys.argv[1], "rb").read())
assert t["fc.weight"].shape == (3, 4), t["fc.weight"].shape
assert t["extra.step"].shape == ()
' m.dsm
}
