#!/usr/bin/env bats
# The fuzz targets' entry points, replayed without libFuzzer over the seed
# corpus (valid files and every malformed case) and over every input that
# once crashed.  Under the sanitizer build this is a crash and leak check.

setup() {
	corpus=$BATS_TEST_TMPDIR/corpus
	mkdir -p "$corpus"
}

replay_dir() {
	# replay_dir TARGET DIR...: feed every file in the folders to the target.
	target=$1
	shift
	files=$(find "$@" -type f ! -name README 2>/dev/null | sort)
	[ -n "$files" ] || return 0
	# shellcheck disable=SC2086
	"replay_$target" $files
}

@test "the container target survives valid and malformed files" {
	mkfixture model "$corpus/model.dsm"
	mkfixture stream "$corpus/stream.dst" 3
	"${PYTHON3:-python3}" "$DS_SRCDIR/tests/gen_malformed.py" "$corpus" >/dev/null
	[ "$(ls "$corpus" | wc -l)" -gt 10 ]
	replay_dir container "$corpus" "$DS_SRCDIR/tests/fuzz/regressions/container"
}

@test "the graph target survives the seed graphs" {
	replay_dir graph "$DS_SRCDIR/tests/fuzz/graphs" "$DS_SRCDIR/tests/fuzz/regressions/graph"
}

@test "the config target survives the seed configs and broken JSON" {
	printf '{"threads":' > "$corpus/cut.json"
	printf '[1,2]' > "$corpus/array.json"
	printf '\xff\xfe' > "$corpus/binary.json"
	replay_dir config "$corpus" "$DS_SRCDIR/tests/fuzz/configs" "$DS_SRCDIR/tests/fuzz/regressions/config"
}

@test "the image target survives every kind of image and broken ones" {
	mkdir -p "$corpus/image"
	for kind in png jpeg progressive cmyk png16 palette gray exif6 graya truncated corrupt tiny wide blank; do
		mkimages one "$kind" "$corpus/image/$kind"
	done
	head -c 100 "$corpus/image/png" > "$corpus/image/png-cut"
	head -c 300 "$corpus/image/jpeg" > "$corpus/image/jpeg-cut"
	replay_dir image "$corpus/image" "$DS_SRCDIR/tests/fuzz/regressions/image"
}

@test "the preprocess target survives the seed specs and broken ones" {
	printf '{"kind":"image","width":1e30}' > "$corpus/huge.json"
	printf '{"kind":"text","max_tokens":-1,"tokenizer":{"kind":"bytes"}}' > "$corpus/neg.json"
	printf '{"kind":"image","mean":[1,2,3,4,5,6],"std":[1e-40]}' > "$corpus/odd.json"
	printf '[]' > "$corpus/array.json"
	replay_dir preprocess "$corpus" "$DS_SRCDIR/tests/fuzz/preprocess" "$DS_SRCDIR/tests/fuzz/regressions/preprocess"
}
