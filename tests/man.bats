#!/usr/bin/env bats
# Every man page is lint-clean, and every option a program's --help shows is
# documented in its page.

programs="ds-clean ds-train ds-prune ds-quantize ds-optimize ds-infer ds-bench ds-info"

setup() {
	man_dir=$DS_SRCDIR/man
	[ -n "${MANDOC:-}" ] || MANDOC=$(command -v mandoc || true)
}

render() {
	# Plain text of a page, with overstrike (bold, underline) removed.
	"$MANDOC" -Tascii "$1" | sed 's/.\x08//g'
}

@test "every man page passes mandoc -Tlint without warnings" {
	[ -n "$MANDOC" ] || skip "mandoc is not installed"
	for page in "$man_dir"/*.[157]; do
		run "$MANDOC" -Tlint -Wwarning "$page"
		[ "$status" -eq 0 ] || { echo "$page: $output"; false; }
	done
}

@test "every program has a man page" {
	for p in $programs; do
		[ -f "$man_dir/$p.1" ] || { echo "missing man/$p.1"; false; }
	done
	[ -f "$man_dir/ds.7" ]
	[ -f "$man_dir/ds-formats.5" ]
}

@test "every option in --help appears in the program's man page" {
	[ -n "$MANDOC" ] || skip "mandoc is not installed"
	for p in $programs; do
		text=$(render "$man_dir/$p.1")
		opts=$("$p" --help | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u)
		[ -n "$opts" ] || { echo "$p --help lists no options"; false; }
		for o in $opts; do
			grep -qF -- "$o" <<<"$text" || { echo "$p: $o is in --help but not in man/$p.1"; false; }
		done
	done
}

@test "every short option in --help appears in the program's man page" {
	[ -n "$MANDOC" ] || skip "mandoc is not installed"
	for p in $programs; do
		text=$(render "$man_dir/$p.1")
		opts=$("$p" --help | grep -oE -- '(^|[ ,])-[A-Za-z]\b' | tr -d ' ,' | sort -u)
		for o in $opts; do
			grep -qE -- "(^|[ ,])$o([ ,]|$)" <<<"$text" || { echo "$p: $o is in --help but not in man/$p.1"; false; }
		done
	done
}

@test "ds.7 documents every exit status and environment variable" {
	[ -n "$MANDOC" ] || skip "mandoc is not installed"
	text=$(render "$man_dir/ds.7")
	for s in 0 1 2 3 4 5 130; do
		grep -qE "^ +$s +[a-z]" <<<"$text" || { echo "exit status $s missing"; false; }
	done
	for v in DS_DEVICE DS_THREADS DS_LOG; do
		grep -qF "$v" <<<"$text" || { echo "$v missing"; false; }
	done
}
