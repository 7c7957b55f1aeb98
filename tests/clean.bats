#!/usr/bin/env bats
# ds-clean: every planted fault gets its reason and no clean file a false
# one; the input is never modified; outputs are whole or absent.

setup() {
	py=${PYTHON3:-python3}
	T=$BATS_TEST_TMPDIR
}

# Python over the report: `report FILE EXPR` with r = list of records.
report() {
	"$py" -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print(eval(sys.argv[2]))' "$1" "$2"
}

info() {
	ds-info --format json "$1" | "$py" -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$2"
}

tree_sum() {
	(cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
}

@test "every planted image fault gets exactly its reason, clean images none" {
	mkimages faults "$T/raw" "$T/expected.tsv"
	before=$(tree_sum "$T/raw")
	run ds-clean "$T/raw" --report "$T/r.jsonl" -o "$T/out.dst"
	[ "$status" -eq 0 ] || { echo "$output"; false; }
	[ "$(tree_sum "$T/raw")" = "$before" ]
	"$py" - "$T/r.jsonl" "$T/expected.tsv" "$T/raw" <<'PY'
import json, sys
recs = {r["item"]: r for r in map(json.loads, open(sys.argv[1]))}
root = sys.argv[3].rstrip("/") + "/"
expected = {}
for line in open(sys.argv[2]):
    path, verdict, reason = line.rstrip("\n").split("\t")
    expected[root + path] = (verdict, reason)
bad = []
for item, rec in recs.items():
    got = rec["reasons"] + rec["warnings"]
    if item in expected:
        verdict, reason = expected[item]
        if rec["verdict"] != verdict or (reason and reason not in got):
            bad.append(f"{item}: want {verdict} {reason}, got {rec['verdict']} {got}")
    elif rec["verdict"] != "keep" or got:
        bad.append(f"{item}: a clean file got {rec['verdict']} {got}")
missing = set(expected) - set(recs)
bad += [f"{m}: no record" for m in missing]
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
	# The stream holds exactly the kept items, labelled.
	kept=$(report "$T/r.jsonl" 'sum(x["verdict"] != "drop" for x in r)')
	[ "$(info "$T/out.dst" 'd["items"]')" = "$kept" ]
	[ "$(info "$T/out.dst" '[l["label"] for l in d["labels"]]')" = "['cat', 'dog', 'fox']" ]
}

@test "the same run on one thread and on two gives the same stream and report" {
	mkimages faults "$T/raw" "$T/expected.tsv"
	SOURCE_DATE_EPOCH=0 ds-clean -q --threads 1 "$T/raw" --report "$T/r1.jsonl" -o "$T/a.dst"
	SOURCE_DATE_EPOCH=0 ds-clean -q --threads 2 "$T/raw" --report "$T/r2.jsonl" -o "$T/b.dst"
	cmp "$T/r1.jsonl" "$T/r2.jsonl"
	"$py" "$DS_SRCDIR/tests/safetensors_check.py" "$T/a.dst" | grep -v history > "$T/a.txt" || true
	"$py" "$DS_SRCDIR/tests/safetensors_check.py" "$T/b.dst" | grep -v history > "$T/b.txt" || true
	[ "$(report "$T/r1.jsonl" 'len(r)')" -gt 20 ]
	"$py" - "$T/a.dst" "$T/b.dst" <<'PY'
import sys, struct, json
def tensors(p):
    out, b = {}, open(p, "rb").read()
    off = 0
    while off < len(b):
        n = struct.unpack("<Q", b[off:off+8])[0]
        h = json.loads(b[off+8:off+8+n])
        data = off + 8 + n
        end = 0
        for k, v in h.items():
            if k == "__metadata__":
                continue
            s, e = v["data_offsets"]
            out.setdefault(k, []).append(b[data+s:data+e])
            end = max(end, e)
        off = data + end
    return out
a, c = tensors(sys.argv[1]), tensors(sys.argv[2])
sys.exit(0 if a == c else 1)
PY
}

@test "an IDX pair packs with its labels" {
	mkimages idx "$T/idx" 50
	ds-clean -q "$T/idx/t-images-idx3-ubyte" -o "$T/i.dst" --report "$T/r.jsonl"
	[ "$(info "$T/i.dst" 'd["items"]')" = 50 ]
	[ "$(info "$T/i.dst" 'd["tensors"][0]["dtype"]')" = U8 ]
	[ "$(info "$T/i.dst" 'len(d["labels"])')" = 10 ]
	[ "$(report "$T/r.jsonl" 'r[7]["label"]')" = 7 ]
}

@test "Fashion-MNIST's test set packs into a stream ds-info describes" {
	f=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
	[ -f "$f" ] || skip "dataset-fashion-mnist is not installed"
	ds-clean -q "$f" -o "$T/test.dst" --report "$T/r.jsonl"
	items=$(info "$T/test.dst" 'd["items"]')
	dropped=$(report "$T/r.jsonl" 'sum(x["verdict"] == "drop" for x in r)')
	[ "$((items + dropped))" -eq 10000 ]
	[ "$dropped" -lt 100 ]
	[ "$(info "$T/test.dst" 'd["labels"][0]["label"]')" = T-shirt/top ]
	[ "$(info "$T/test.dst" '[t["shape"] for t in d["tensors"] if t["name"] == "x"][0][1:]')" = "[28, 28, 1]" ]
}

@test "--split is stratified by class and reproducible with --seed" {
	mkimages idx "$T/idx" 200
	ds-clean -q "$T/idx/t-images-idx3-ubyte" --split 0.8,0.2 --seed 7 -o "$T/s.dst" --report "$T/r.jsonl"
	[ "$(info "$T/s.train.dst" 'd["items"]')" = 160 ]
	[ "$(info "$T/s.val.dst" 'd["items"]')" = 40 ]
	# 20 items per class: 16 and 4 of each in train and val.
	[ "$(report "$T/r.jsonl" 'sorted(set(sum(1 for x in r if x["label"] == l and x.get("split") == "val") for l in map(str, range(10))))')" = "[4]" ]
	ds-clean -q "$T/idx/t-images-idx3-ubyte" --split 0.8,0.2 --seed 7 --report "$T/r2.jsonl"
	cmp "$T/r.jsonl" "$T/r2.jsonl"
	ds-clean -q "$T/idx/t-images-idx3-ubyte" --split 0.8,0.2 --seed 8 --report "$T/r3.jsonl"
	! cmp -s "$T/r.jsonl" "$T/r3.jsonl"
}

@test "a stream from a pipe unpacks into a PNG folder" {
	mkimages idx "$T/idx" 12
	ds-clean -q "$T/idx/t-images-idx3-ubyte" -o - | ds-clean -q - --output-dir "$T/png"
	[ "$(find "$T/png" -name '*.png' | wc -l)" -eq 12 ]
	[ -d "$T/png/3" ]
	ds-clean -q "$T/png" -o "$T/again.dst"
	[ "$(info "$T/again.dst" 'd["items"]')" = 12 ]
}

@test "--output-dir copies the kept files and refuses a folder in use" {
	mkimages faults "$T/raw" "$T/expected.tsv"
	ds-clean -q "$T/raw" --output-dir "$T/clean"
	[ -d "$T/clean/cat" ]
	kept=$(find "$T/clean" -type f | wc -l)
	all=$(find "$T/raw" -type f | wc -l)
	[ "$kept" -gt 10 ] && [ "$kept" -lt "$all" ]
	run ds-clean -q "$T/raw" --output-dir "$T/clean"
	[ "$status" -eq 2 ]
	[ -z "$(find "$T" -maxdepth 1 -name '.clean.*')" ]
}

@test "texts: fortunes, JSON Lines, invalid UTF-8, duplicates and repair" {
	mkdir -p "$T/txt"
	printf 'Ein Apfel am Tag.\n%%\nDer frühe Vogel fängt den Wurm.\n%%\nEin Apfel am Tag.\n%%\n' > "$T/txt/de"
	printf 'Утро вечера мудренее.\n%%\nbad \xff byte\n%%\n\xef\xbb\xbfБез труда не вытащишь и рыбку из пруда.\n%%\n' > "$T/txt/ru"
	printf '{"nope": 1}\n{"text": "  spaced\\t out  ", "label": "de"}\n' > "$T/txt/more.jsonl"
	ds-clean -q "$T/txt" --report "$T/r.jsonl" -o "$T/t.dst"
	[ "$(report "$T/r.jsonl" '[x["item"].split("/")[-1] for x in r if "duplicate" in x["reasons"]]')" = "['de#2']" ]
	[ "$(report "$T/r.jsonl" '[x["verdict"] for x in r if "invalid_utf8" in x["reasons"]]')" = "['drop']" ]
	[ "$(report "$T/r.jsonl" 'sum("bad_record" in x["reasons"] for x in r)')" = 1 ]
	[ "$(report "$T/r.jsonl" 'sum("bom" in x["fixes"] for x in r)')" = 1 ]
	[ "$(report "$T/r.jsonl" 'sum("whitespace" in x["fixes"] for x in r)')" -ge 1 ]
	[ "$(info "$T/t.dst" 'd["tensors"][0]["dtype"]')" = I32 ]
	[ "$(info "$T/t.dst" 'd["items"]')" = 5 ]
	ds-clean -q "$T/txt" --repair --report "$T/r2.jsonl"
	[ "$(report "$T/r2.jsonl" '[x["verdict"] for x in r if "repaired_utf8" in x["warnings"]]')" = "['warn']" ]
}

@test "the fortunes packages become a labelled language set" {
	f=/usr/share/games/fortunes
	[ -f $f/fortunes ] && [ -d $f/de ] && [ -d $f/ru ] || skip "fortunes-min, fortunes-de and fortunes-ru are not installed"
	# Class folders name the languages; English lives at the top level.
	mkdir -p "$T/lang/en"
	ln -s $f/de "$T/lang/de"
	ln -s $f/ru "$T/lang/ru"
	ln -s $f/fortunes "$T/lang/en/fortunes"
	ds-clean -q "$T/lang" --tokenizer ngrams --split 0.9,0.1 --report "$T/r.jsonl" -o "$T/lang.dst"
	[ "$(info "$T/lang.train.dst" '[l["label"] for l in d["labels"]]')" = "['de', 'en', 'ru']" ]
	[ "$(report "$T/r.jsonl" 'min(sum(x["label"] == l and x["verdict"] != "drop" for x in r) for l in ("de", "en", "ru")) > 200')" = True ]
	# Debian ships each file twice, the .u8 name a link to the other: the
	# second copy of every entry goes as a duplicate.
	[ "$(report "$T/r.jsonl" 'sum("duplicate" in x["reasons"] and x["item"].endswith(".u8#0") for x in r) > 10')" = True ]
	[ "$(info "$T/lang.train.dst" 'd["tensors"][0]["dtype"]')" = I32 ]
}

@test "names that are not UTF-8 or hold a newline are reported as valid JSON" {
	mkdir -p "$T/odd" "$T/loop/a"
	mkimages one png "$T/odd/$(printf 'caf\xe9').png"
	mkimages one png "$T/odd/$(printf 'two\nlines').png"
	mkimages one jpeg "$T/odd/plain.jpg"
	ds-clean -q --near-distance -1 "$T/odd" --report "$T/r.jsonl"
	[ "$(report "$T/r.jsonl" 'len(r)')" = 3 ]
	report "$T/r.jsonl" '[x["item"] for x in r]' | grep -qF 'caf\\xe9'
}

@test "a symlink loop is reported and the run goes on" {
	mkdir -p "$T/loop/a"
	mkimages one png "$T/loop/a/x.png"
	ln -s .. "$T/loop/a/back"
	run ds-clean -q "$T/loop" --report "$T/r.jsonl"
	[ "$status" -eq 0 ]
	[ "$(report "$T/r.jsonl" 'sum("symlink_loop" in x["reasons"] for x in r)')" -ge 1 ]
}

@test "--fail-on fails the run after writing the outputs" {
	mkimages faults "$T/raw" "$T/expected.tsv"
	run ds-clean -q "$T/raw" --fail-on truncated -o "$T/f.dst"
	[ "$status" -eq 1 ]
	[ -f "$T/f.dst" ]
	run ds-clean -q "$T/raw" --fail-on nonsense
	[ "$status" -eq 2 ]
}

@test "a full disk is status 5 and leaves nothing behind" {
	mkimages idx "$T/idx" 20
	run ds-clean -q "$T/idx/t-images-idx3-ubyte" -o /dev/full
	[ "$status" -eq 5 ]
	run ds-clean -q "$T/idx/t-images-idx3-ubyte" -o "$T/no/such/dir/x.dst"
	[ "$status" -eq 5 ]
}

@test "shards partition the items" {
	mkimages idx "$T/idx" 30
	ds-clean -q "$T/idx/t-images-idx3-ubyte" --shard 1/2 -o "$T/a.dst"
	ds-clean -q "$T/idx/t-images-idx3-ubyte" --shard 2/2 -o "$T/b.dst"
	[ "$(info "$T/a.dst" 'd["items"]')" = 15 ]
	cat "$T/a.dst" "$T/b.dst" > "$T/ab.dst"
	[ "$(info "$T/ab.dst" 'd["items"]')" = 30 ]
}

@test "bad usage and unreadable inputs" {
	run ds-clean -q "$T/nothing-here"
	[ "$status" -eq 5 ]
	run ds-clean -q
	[ "$status" -eq 2 ]
	run ds-clean --size 0x5 "$T"
	[ "$status" -eq 2 ]
	printf 'x\0\0\x08\0\0\0\x09' > "$T/bad-images-idx3-ubyte"
	run ds-clean -q "$T/bad-images-idx3-ubyte"
	[ "$status" -eq 3 ]
	ds-clean --list-reasons | grep -q label_conflict
}

@test "SIGTERM stops the run with status 130 and leaves no output behind" {
	f=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
	[ -f "$f" ] || skip "dataset-fashion-mnist is not installed"
	mkdir -p "$T/out"
	ds-clean -q "$f" --near-distance -1 --output-dir "$T/out/png" --encode png \
		--report "$T/out/r.jsonl" -o "$T/out/s.dst" &
	pid=$!
	sleep 1
	kill -TERM $pid
	rc=0
	wait $pid || rc=$?
	[ "$rc" -eq 130 ]
	[ -z "$(ls -A "$T/out")" ] || { ls -la "$T/out"; false; }
}
