#!/usr/bin/env bats
# The command line every program shares: --help and --version, usage errors
# with one line and a hint, DS_LOG=json, --config, --device, checked stdout.

bats_require_minimum_version 1.5.0

PROGRAMS="ds-clean ds-train ds-prune ds-quantize ds-optimize ds-infer ds-bench ds-info"

setup() {
	py=${PYTHON3:-python3}
}

fail() {
	echo "$*" >&2
	return 1
}

has_gpu() {
	command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -L > /dev/null 2>&1
}

@test "--help exits 0 with usage, summary and every shared option" {
	for p in $PROGRAMS; do
		run -0 --separate-stderr "$p" --help
		[[ "${lines[0]}" == "Usage: $p "* ]] || fail "$p: first line: ${lines[0]}"
		[ -n "${lines[1]}" ] || fail "$p: no summary line"
		[ -z "$stderr" ] || fail "$p: help wrote to stderr: $stderr"
		for opt in -h, --help -V, --version -q, --quiet -v, --verbose -o, "--output FILE" \
			   "--device DEVICE" "--threads N" "--seed N" "--format FMT" "--config FILE" \
			   "--log FILE" DS_DEVICE DS_THREADS DS_LOG; do
			[[ "$output" == *"$opt"* ]] || fail "$p --help lacks '$opt'"
		done
	done
}

@test "-h is --help, and --help wins over a bad environment" {
	run -0 ds-train -h
	[[ "${lines[0]}" == "Usage: ds-train "* ]]
	DS_THREADS=abc run -0 ds-train --help
	DS_DEVICE=bogus run -0 ds-info --help
}

@test "--version prints the program, the package and its version" {
	for p in $PROGRAMS; do
		run -0 "$p" --version
		[[ "$output" =~ ^$p\ \(ds\)\ [0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "$p: $output"
	done
	run -0 ds-bench -V
	[[ "$output" == "ds-bench (ds) "* ]]
}

@test "an unknown option is status 2: one error line and a hint" {
	for p in $PROGRAMS; do
		run -2 --separate-stderr "$p" --bogus
		[ "${#stderr_lines[@]}" -eq 2 ] || fail "$p: ${stderr_lines[*]}"
		[ "${stderr_lines[0]}" = "$p: error: unrecognized option '--bogus'" ] || fail "$p: ${stderr_lines[0]}"
		[ "${stderr_lines[1]}" = "Try '$p --help'." ] || fail "$p: ${stderr_lines[1]}"
		[ -z "$output" ] || fail "$p wrote to stdout: $output"
	done
	run -2 --separate-stderr ds-train -Z
	[ "${stderr_lines[0]}" = "ds-train: error: invalid option -- 'Z'" ]
}

@test "a missing option argument and a wrong operand count are status 2" {
	run -2 --separate-stderr ds-train --output
	[ "${stderr_lines[0]}" = "ds-train: error: option '--output' requires an argument" ]
	run -2 --separate-stderr ds-train --quiet=1
	[ "${stderr_lines[0]}" = "ds-train: error: option '--quiet' doesn't allow an argument" ]
	run -2 --separate-stderr ds-info
	[ "${stderr_lines[0]}" = "ds-info: error: missing operand" ]
	run -2 --separate-stderr ds-info a b
	[ "${stderr_lines[0]}" = "ds-info: error: extra operand 'b'" ]
	run -2 --separate-stderr ds-train surplus
	[ "${stderr_lines[0]}" = "ds-train: error: extra operand 'surplus'" ]
}

@test "--device cuda without a GPU is status 1 with a clear message" {
	if has_gpu; then
		skip "this machine has a GPU"
	fi
	for p in ds-train ds-infer; do
		run -1 --separate-stderr "$p" --device cuda
		[ "${#stderr_lines[@]}" -eq 1 ] || fail "$p: ${stderr_lines[*]}"
		[[ "$stderr" == "$p: error: --device cuda: "* ]] || fail "$p: $stderr"
		[[ "$stderr" != *"not built yet"* ]] || fail "$p: the device was not checked first"
	done
	run -1 --separate-stderr ds-info --device cuda:1 whatever.dsm
	[[ "$stderr" == "ds-info: error: --device cuda:1: "* ]]
	DS_DEVICE=cuda run -1 --separate-stderr ds-bench
	[[ "$stderr" == "ds-bench: error: --device cuda: "* ]]
}

@test "--device and DS_DEVICE take auto, cpu, cuda or cuda:N: others are status 2" {
	run -2 --separate-stderr ds-optimize --device bogus
	[ "${stderr_lines[0]}" = "ds-optimize: error: --device: 'bogus' is not auto, cpu, cuda or cuda:N" ]
	run -2 --separate-stderr ds-optimize --device cuda:x
	DS_DEVICE=tpu run -2 --separate-stderr ds-optimize
	[ "${stderr_lines[0]}" = "ds-optimize: error: DS_DEVICE: 'tpu' is not auto, cpu, cuda or cuda:N" ]
	DS_DEVICE=tpu run -0 ds-optimize --device cpu --list-passes
	run -0 ds-optimize --device auto --list-passes
}

@test "--threads takes an integer, from the command line or DS_THREADS" {
	run -2 --separate-stderr ds-optimize --threads abc
	[ "${stderr_lines[0]}" = "ds-optimize: error: --threads: 'abc' is not an integer" ]
	[ "${stderr_lines[1]}" = "Try 'ds-optimize --help'." ]
	DS_THREADS=2x run -2 --separate-stderr ds-optimize
	[ "${stderr_lines[0]}" = "ds-optimize: error: DS_THREADS: '2x' is not an integer" ]
	run -2 ds-optimize --threads=-1
	run -2 ds-optimize --seed 1.5
	run -0 ds-optimize --threads 2 --seed 42 --list-passes
}

@test "--format is checked against the program's list" {
	run -2 --separate-stderr ds-infer --format csv
	[ "${stderr_lines[0]}" = "ds-infer: error: --format: 'csv' is not one of text, md, json" ]
	run -2 --separate-stderr ds-infer --format md
	[[ "${stderr_lines[0]}" != *"--format"* ]]
	run -2 --separate-stderr ds-bench --format=html
	[ "${stderr_lines[0]}" = "ds-bench: error: --format: 'html' is not one of md, text, csv, json, jsonl" ]
}

@test "DS_LOG=json turns the error into one JSON object with a stable code" {
	DS_LOG=json run -2 --separate-stderr ds-train --bogus
	[ "${#stderr_lines[@]}" -eq 1 ]
	echo "$stderr" | "$py" -c '
import json, sys
e = json.loads(sys.stdin.read())
assert e["program"] == "ds-train", e
assert e["level"] == "error", e
assert e["status"] == 2, e
assert e["code"] == "unknown_option", e
assert "--bogus" in e["message"], e'
	DS_LOG=json run -5 --separate-stderr ds-optimize -o "$BATS_TEST_TMPDIR/x.dsm" "$BATS_TEST_TMPDIR/absent.dsm"
	[ "${#stderr_lines[@]}" -eq 1 ]
	echo "$stderr" | "$py" -c '
import json, sys
e = json.loads(sys.stdin.read())
assert e["status"] == 5 and e["code"] == "io_error" and "absent.dsm" in e["message"], e'
}

@test "--config: a JSON object of long options; an unknown key is status 2" {
	cfg=$BATS_TEST_TMPDIR/c.json
	echo '{"threads": 2, "colour": "red"}' > "$cfg"
	run -2 --separate-stderr ds-optimize --config "$cfg"
	[ "${stderr_lines[0]}" = "ds-optimize: error: $cfg: unknown option 'colour'" ]
	echo '{"threads": "many"}' > "$cfg"
	run -2 --separate-stderr ds-optimize --config "$cfg"
	[ "${stderr_lines[0]}" = "ds-optimize: error: $cfg: threads: 'many' is not an integer" ]
	echo '{"threads": ' > "$cfg"
	run -2 --separate-stderr ds-optimize --config "$cfg"
	[[ "${stderr_lines[0]}" == "ds-optimize: error: $cfg: line "* ]]
	run -5 --separate-stderr ds-optimize --config "$BATS_TEST_TMPDIR/absent.json"
	[[ "${stderr_lines[0]}" == "ds-optimize: error: $BATS_TEST_TMPDIR/absent.json: No such file"* ]]
	echo '{"device": "cpu", "threads": 1, "seed": 7}' > "$cfg"
	run -0 ds-optimize --config "$cfg" --list-passes
}

@test "--config sets an option, and the command line wins over it" {
	command -v mkfixture > /dev/null || skip "mkfixture is not built"
	model=$BATS_TEST_TMPDIR/m.dsm
	mkfixture model "$model"
	cfg=$BATS_TEST_TMPDIR/c.json
	echo '{"format": "json"}' > "$cfg"
	ds-info --config "$cfg" "$model" > "$BATS_TEST_TMPDIR/out.json"
	"$py" -c 'import json, sys; json.load(open(sys.argv[1]))' "$BATS_TEST_TMPDIR/out.json"
	run -0 ds-info --config "$cfg" --format csv "$model"
	[[ "$output" != "{"* ]]
}

@test "stdout is checked at exit: a full disk is status 5" {
	run -5 --separate-stderr bash -c 'ds-info --help > /dev/full'
	[ "$stderr" = "ds-info: error: stdout: No space left on device" ]
	run -5 --separate-stderr bash -c 'ds-train --version > /dev/full'
	[ "$stderr" = "ds-train: error: stdout: No space left on device" ]
	DS_LOG=json run -5 --separate-stderr bash -c 'ds-bench --help > /dev/full'
	[[ "$stderr" == *'"code":"disk_full"'* ]]
}

@test "a reader that goes away ends the program quietly" {
	run -0 --separate-stderr bash -c 'ds-info --help | head -c1'
	[ "$output" = "U" ]
	[ -z "$stderr" ]
	# Even when the parent ignores SIGPIPE.
	run --separate-stderr bash -c 'trap "" PIPE; ds-info --help | head -c1'
	[ -z "$stderr" ]
}

@test "-- ends the options and - is an operand" {
	run -2 --separate-stderr ds-info -- --bogus extra
	[ "${stderr_lines[0]}" = "ds-info: error: extra operand 'extra'" ]
	# "-" is the model operand; what is missing then is -o.
	run -2 --separate-stderr ds-optimize -
	[[ "${stderr_lines[0]}" == "ds-optimize: error: say where the model goes: "* ]]
	run -2 --separate-stderr ds-optimize -qv -- -
	[[ "${stderr_lines[0]}" == "ds-optimize: error: say where the model goes: "* ]]
}
