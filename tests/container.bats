#!/usr/bin/env bats
# The reader trusts nothing: each malformed file from gen_malformed.py is exit
# status 3 with one error line naming the file, and the frame and tensor
# where there is one; from a file, from stdin redirected, and from a pipe.

load helpers

setup_file() {
	export MAL=$BATS_FILE_TMPDIR/mal
	"${PYTHON3:-python3}" "${DS_SRCDIR:-$BATS_TEST_DIRNAME/..}/tests/gen_malformed.py" "$MAL"
}

# bad FILE [FRAGMENT]: ds-info refuses FILE as it should.
bad() {
	need ds-info
	run ds-info --verify "$MAL/$1"
	echo "status $status: $output"
	[ "$status" -eq 3 ]
	[ "${#lines[@]}" -eq 1 ]
	[[ "${lines[0]}" == "ds-info: error: $MAL/$1: "* ]]
	[[ "${lines[0]}" == *"$2"* ]]
	# The file is named once, not once per layer that passed the error up.
	[[ "${lines[0]#"ds-info: error: $MAL/$1: "}" != *"$MAL/$1"* ]]
}

@test "the generator's valid files are accepted" {
	need ds-info
	run ds-info --verify "$MAL/good.dsm"
	[ "$status" -eq 0 ]
	run ds-info --verify "$MAL/good.dst"
	[ "$status" -eq 0 ]
}

@test "truncated in the header length" { bad trunc_length.dsm "end of file"; }
@test "truncated in the header" { bad trunc_header.dsm "end of file"; }
@test "truncated in the last tensor's data" { bad trunc_data.dsm "tensor 'fc.bias': data runs past end of file"; }
@test "truncated in the first tensor's data" { bad trunc_data_first.dsm "tensor 'fc.weight': data runs past end of file"; }
@test "header length 2^64-1" { bad header_len_max.dsm "header length"; }
@test "header length 2^63" { bad header_len_2_63.dsm "header length"; }
@test "header length 1" { bad header_len_1.dsm "header length"; }
@test "offsets past 64 bits" { bad offsets_overflow.dsm; }
@test "offsets near 2^63" { bad offsets_huge.dsm "tensor 'fc.bias'"; }
@test "offsets that end before they begin" { bad offsets_reversed.dsm "tensor 'fc.bias'"; }
@test "overlapping tensors" { bad overlap.dsm "tensor 'fc.bias'"; }
@test "a gap between tensors" { bad gap.dsm "tensor 'fc.bias'"; }
@test "offsets that disagree with dtype and shape" { bad end_mismatch.dsm "tensor 'fc.bias'"; }
@test "an unknown dtype" { bad unknown_dtype.dsm "tensor 'fc.bias'"; }
@test "a negative dimension" { bad negative_dim.dsm "tensor 'fc.bias'"; }
@test "nine dimensions" { bad nine_dims.dsm "tensor 'fc.bias'"; }
@test "a shape whose product overflows" { bad shape_overflow.dsm "tensor 'fc.bias'"; }
@test "a header that is not JSON" { bad bad_json.dsm "JSON"; }
@test "a header that is not an object" { bad not_object.dsm "object"; }
@test "duplicate keys in the header" { bad duplicate_keys.dsm "duplicate"; }
@test "metadata that is not a string" { bad meta_nonstring.dsm "ds.epochs"; }
@test "a malformed ds.checksums" { bad bad_checksums.dsm "ds.checksums"; }
@test "a ds.checksums that is not JSON" { bad checksums_not_json.dsm "ds.checksums"; }
@test "a checksum mismatch" { bad checksum_mismatch.dsm "tensor 'fc.bias'"; }
@test "trailing garbage after a model" { bad trailing.dsm; }
@test "a stream whose frame 2 is truncated" { bad stream_trunc.dst "frame 2: tensor 'x'"; }
@test "a stream whose frame 1 has an unknown dtype" { bad stream_bad_frame1.dst "frame 1: tensor 'y'"; }

@test "every malformed file through stdin, redirected and piped" {
	need ds-info
	while IFS=$'\t' read -r file fragment code; do
		[ "$file" = graph_nope.dsm ] && continue
		run ds-info --verify - < "$MAL/$file"
		echo "$file < : $status: $output"
		[ "$status" -eq 3 ] && [ "${#lines[@]}" -eq 1 ] && [[ "${lines[0]}" == "ds-info: error: "* ]]
		case $file in trailing.dsm) ;; *) [[ "${lines[0]}" == *"$fragment"* ]] ;; esac
		run sh -c 'cat "$1" | ds-info --verify -' sh "$MAL/$file"
		echo "$file | : $status: $output"
		[ "$status" -eq 3 ] && [ "${#lines[@]}" -eq 1 ] && [[ "${lines[0]}" == "ds-info: error: "* ]]
		case $file in trailing.dsm) ;; *) [[ "${lines[0]}" == *"$fragment"* ]] ;; esac
	done < "$MAL/cases.tsv"
}

@test "an empty file is not a model" {
	need ds-info
	: > "$BATS_TEST_TMPDIR/empty.dsm"
	run ds-info "$BATS_TEST_TMPDIR/empty.dsm"
	[ "$status" -eq 3 ]
	[[ "$output" == *"empty"* ]]
}

@test "a file that cannot be read is exit 5 naming it" {
	need ds-info
	run ds-info "$BATS_TEST_TMPDIR/missing.dsm"
	[ "$status" -eq 5 ]
	[ "$output" = "ds-info: error: $BATS_TEST_TMPDIR/missing.dsm: No such file or directory" ]
}

@test "a graph naming a tensor that does not exist" { bad graph_nope.dsm "nope"; }
