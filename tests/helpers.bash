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

# Rewrite a model's header with Python: $2 is code run with h (the header)
# and g (its graph) bound; checksums of changed tensors are dropped.
edit_model() {
	"$PY" - "$1" "$2" "$3" <<'PY'
import json, struct, sys
src, code, dst = sys.argv[1:4]
raw = open(src, 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
h = json.loads(raw[8:8 + n])
data = bytearray(raw[8 + n:])
meta = h['__metadata__']
g = json.loads(meta['ds.graph'])
sums = json.loads(meta.get('ds.checksums', '{}'))
def set_float(name, i, value):
    a, b = h[name]['data_offsets']
    struct.pack_into('<f', data, a + 4 * i, value)
    sums.pop(name, None)
exec(code)
meta['ds.graph'] = json.dumps(g)
meta['ds.checksums'] = json.dumps(sums)
head = json.dumps(h).encode()
head += b' ' * (-len(head) % 8)
open(dst, 'wb').write(struct.pack('<Q', len(head)) + head + bytes(data))
PY
}
