# helpers.bash - setup shared by the Bats suites (load helpers).
#
# make check puts the programs and tests/tools on PATH and exports
# DS_SRCDIR and PYTHON3; running a suite by hand from the source tree works
# too when the programs are on PATH.

DS_SRCDIR=${DS_SRCDIR:-$(cd "$BATS_TEST_DIRNAME/.." && pwd)}
PY=${PYTHON3:-python3}

# Skip a test that needs a program not built yet.
need() {
	command -v "$1" >/dev/null 2>&1 || skip "$1 is not built"
}

# Evaluate a Python expression over the JSON in FILE, bound to d.
json_eval() {
	"$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}
