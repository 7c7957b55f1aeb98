#!/usr/bin/env bats
# ds-infer: the same predictions from a packed stream, a PNG folder and a
# pipe, in input order whatever the threads; shards that add up; bad items
# as error records; bad inputs as clear errors with the documented status.

load helpers

setup_file() {
	command -v ds-infer >/dev/null && command -v ds-train >/dev/null && command -v mkimages >/dev/null || return 0
	D=$BATS_FILE_TMPDIR
	# 200 distinct 28x28 gray images in 10 classes, packed and as PNG class folders.
	mkimages idx "$D/idx" 200
	ds-clean -q "$D/idx/t-images-idx3-ubyte" -o "$D/d.dst" --report /dev/null
	ds-clean -q "$D/d.dst" --output-dir "$D/png" --report /dev/null
	# Validating on the training set itself: ds-train reports the accuracy
	# of the final model on exactly these items.
	ds-train -q --data "$D/d.dst" --val "$D/d.dst" --arch cnn-small --epochs 1 --batch 64 -o "$D/m.dsm"
}

setup() {
	need ds-infer
	need ds-train
	need mkimages
	T=$BATS_TEST_TMPDIR
	D=$BATS_FILE_TMPDIR
}

# Python over records: `records FILE EXPR` with r = the list of records.
records() {
	"$PY" -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print(eval(sys.argv[2]))' "$1" "$2"
}

@test "a stream and the PNG folder of the same images: the same predictions and ds-train's accuracy" {
	ds-infer --model "$D/m.dsm" "$D/d.dst" --format json > "$T/a.jsonl" 2> "$T/a.json"
	ds-infer --model "$D/m.dsm" "$D/png" --format json > "$T/b.jsonl" 2> "$T/b.json"
	[ "$(records "$T/a.jsonl" 'len(r)')" = 200 ]
	"$PY" - "$T/a.jsonl" "$T/b.jsonl" <<'PY'
import json, os, sys
a = {r["item"].replace("#", "_") + ".png": r for r in map(json.loads, open(sys.argv[1]))}
b = {os.path.basename(r["item"]): r for r in map(json.loads, open(sys.argv[2]))}
assert a.keys() == b.keys(), (len(a), len(b))
for k in a:
    x, y = a[k], b[k]
    assert x["label"] == y["label"] and x["top"] == y["top"], (k, x, y)
PY
	want=$(ds-info --format json "$D/m.dsm" | "$PY" -c 'import json,sys; print(round(json.load(sys.stdin)["history"][-1]["figures"]["final_val_accuracy"], 9))')
	[ "$(json_eval "$T/a.json" 'round(d["top1_accuracy"], 9)')" = "$want" ]
	[ "$(json_eval "$T/b.json" 'round(d["top1_accuracy"], 9)')" = "$want" ]
	[ "$(json_eval "$T/a.json" 'd["labelled"]')" = 200 ]
	[ "$(json_eval "$T/a.json" 'sum(c["items"] for c in d["classes"])')" = 200 ]
	[ "$(json_eval "$T/a.json" 'sum(sum(v for k, v in row.items() if k != "actual") for row in d["confusion"])')" = 200 ]
}

@test "class folders named by ds-clean --output-dir match labels with a slash (T-shirt/top)" {
	need ds-clean
	fm=/usr/share/datasets/fashion-mnist
	[ -f "$fm/t10k-images-idx3-ubyte.gz" ] || skip "dataset-fashion-mnist is not installed"
	ds-clean -q "$fm/t10k-images-idx3-ubyte.gz" --shard 1/50 -o "$T/f.dst" --report /dev/null
	ds-clean -q "$T/f.dst" --output-dir "$T/png" --encode png --report /dev/null
	[ -d "$T/png/T-shirt_top" ]
	ds-train -q --data "$T/f.dst" --arch mlp --epochs 0 -o "$T/f.dsm"
	ds-infer --model "$T/f.dsm" "$T/f.dst" --format json > /dev/null 2> "$T/a.json"
	ds-infer --model "$T/f.dsm" "$T/png" --format json > "$T/b.jsonl" 2> "$T/b.json"
	[ "$(json_eval "$T/b.json" 'd["unknown_labels"]')" = 0 ]
	[ "$(json_eval "$T/b.json" 'd["labelled"]')" = "$(json_eval "$T/a.json" 'd["labelled"]')" ]
	[ "$(json_eval "$T/b.json" 'd["top1_accuracy"]')" = "$(json_eval "$T/a.json" 'd["top1_accuracy"]')" ]
}

@test "records keep input order; one thread or several, any batch: byte-identical output" {
	ds-infer -q --model "$D/m.dsm" "$D/d.dst" --threads 1 --workers 1 > "$T/1.jsonl"
	ds-infer -q --model "$D/m.dsm" "$D/d.dst" --threads 2 --workers 3 > "$T/2.jsonl"
	ds-infer -q --model "$D/m.dsm" "$D/d.dst" --threads 2 --batch 64 > "$T/3.jsonl"
	cmp "$T/1.jsonl" "$T/2.jsonl"
	cmp "$T/1.jsonl" "$T/3.jsonl"
	[ "$(records "$T/1.jsonl" '[x["item"] for x in r] == ["t-images-idx3-ubyte#%d" % i for i in range(200)]')" = True ]
	ds-infer -q --model "$D/m.dsm" "$D/png" --threads 1 > "$T/p1.jsonl"
	ds-infer -q --model "$D/m.dsm" "$D/png" --threads 2 --workers 2 --batch 7 > "$T/p2.jsonl"
	cmp "$T/p1.jsonl" "$T/p2.jsonl"
	[ "$(records "$T/p1.jsonl" '[x["item"] for x in r] == sorted(x["item"] for x in r)')" = True ]
}

@test "--shard 1/2 and 2/2 together are the whole run" {
	ds-infer -q --model "$D/m.dsm" "$D/png" > "$T/all.jsonl"
	ds-infer -q --model "$D/m.dsm" "$D/png" --shard 1/2 > "$T/s1.jsonl"
	ds-infer -q --model "$D/m.dsm" "$D/png" --shard 2/2 > "$T/s2.jsonl"
	[ "$(wc -l < "$T/s1.jsonl")" -eq 100 ]
	[ "$(cat "$T/s1.jsonl" "$T/s2.jsonl" | sort)" = "$(sort "$T/all.jsonl")" ]
	run ds-infer -q --model "$D/m.dsm" "$D/png" --shard 3/2
	[ "$status" -eq 2 ]
}

@test "a corrupt image and a missing file: error records, status 3, the rest classified" {
	cp -r "$D/png" "$T/png"
	mkimages one truncated "$T/png/3/cut.png"
	printf 'not an image' > "$T/png/5/text.png"
	run ds-infer --model "$D/m.dsm" "$T/png" "$T/nothing-here.png" -o "$T/r.jsonl"
	[ "$status" -eq 3 ]
	[[ "$output" == *"3 of 203 items could not be read or decoded"* ]]
	[ "$(records "$T/r.jsonl" 'len(r)')" = 203 ]
	[ "$(records "$T/r.jsonl" 'sum("prediction" in x for x in r)')" = 200 ]
	[ "$(records "$T/r.jsonl" '[x["error"]["code"] for x in r if "error" in x]')" = "['truncated', 'not_image', 'unreadable']" ]
	[ "$(records "$T/r.jsonl" '[x["label"] for x in r if x["item"].endswith("cut.png")]')" = "['3']" ]
}

@test "a pipe from ds-clean gives what the file gives" {
	ds-infer -q --model "$D/m.dsm" "$D/d.dst" > "$T/file.jsonl"
	ds-clean -q "$D/idx/t-images-idx3-ubyte" -o - --report /dev/null | ds-infer -q --model "$D/m.dsm" - > "$T/pipe.jsonl"
	cmp "$T/file.jsonl" "$T/pipe.jsonl"
	ls "$D"/png/*/*.png | ds-infer -q --model "$D/m.dsm" --files-from - > "$T/list.jsonl"
	[ "$(records "$T/list.jsonl" 'len(r)')" = 200 ]
}

@test "a stream read a part at a time gives what one read whole gives, shards and summary included" {
	ds-clean -q "$D/idx/t-images-idx3-ubyte" --frame-items 16 -o "$T/f16.dst" --report /dev/null
	ds-infer -q --model "$D/m.dsm" "$D/d.dst" > "$T/whole.jsonl"
	# 1K of 784-byte items: two frames of 16 a part
	ds-infer --format json --model "$D/m.dsm" --buffer-size 1K --batch 12 "$T/f16.dst" > "$T/parts.jsonl" 2> "$T/parts.json"
	cmp "$T/whole.jsonl" "$T/parts.jsonl"
	[ "$(json_eval "$T/parts.json" "d['items']")" = 200 ]
	ds-infer --format json --model "$D/m.dsm" "$D/d.dst" 2> "$T/whole.json" > /dev/null
	[ "$(json_eval "$T/parts.json" "d['top1_accuracy']")" = "$(json_eval "$T/whole.json" "d['top1_accuracy']")" ]
	ds-infer -q --model "$D/m.dsm" --shard 2/3 "$D/d.dst" > "$T/s.jsonl"
	ds-infer -q --model "$D/m.dsm" --shard 2/3 --buffer-size 1K "$T/f16.dst" > "$T/sp.jsonl"
	cmp "$T/s.jsonl" "$T/sp.jsonl"
	# a packed stream between other inputs keeps the input order
	ds-infer -q --model "$D/m.dsm" "$D/png/3" "$T/f16.dst" "$D/png/4" > "$T/mixed.jsonl"
	ds-infer -q --model "$D/m.dsm" --buffer-size 1K "$D/png/3" "$T/f16.dst" "$D/png/4" > "$T/mixedp.jsonl"
	cmp "$T/mixed.jsonl" "$T/mixedp.jsonl"
}

@test "a pipe's first records come out while its producer is still writing" {
	ds-clean -q "$D/idx/t-images-idx3-ubyte" --frame-items 100 -o "$T/f.dst" --report /dev/null
	# Write the first frame, wait for a record, only then the second: a
	# reader that waited for the end of its input would never answer.
	"$PY" - "$T/f.dst" "$D/m.dsm" <<'PY'
import json, select, struct, subprocess, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
size = 8 + n + max(v["data_offsets"][1] for k, v in head.items() if k != "__metadata__")
assert size < len(raw), "one frame only"
p = subprocess.Popen(["ds-infer", "-q", "--model", sys.argv[2], "--buffer-size", "1K", "--batch", "10", "-"],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
p.stdin.write(raw[:size])
p.stdin.flush()
ready, _, _ = select.select([p.stdout], [], [], 60)
assert ready, "no record before the end of the input"
first = json.loads(p.stdout.readline())
p.stdin.write(raw[size:])
p.stdin.close()
rest = p.stdout.read().decode().splitlines()
assert p.wait() == 0
assert len(rest) == 199, len(rest)
assert first["item"].endswith("#0") or "prediction" in first, first
PY
}

@test "csv records, dst frames of logits, probabilities and an intermediate tensor" {
	ds-infer -q --model "$D/m.dsm" "$D/d.dst" --output-format csv --topk 2 -o "$T/r.csv"
	[ "$(head -1 "$T/r.csv")" = "item,label,prediction,probability,top,error" ]
	[ "$(wc -l < "$T/r.csv")" -eq 201 ]
	"$PY" - "$T/r.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert all(len(r["top"].split()) == 2 and r["top"].startswith(r["prediction"] + ":") for r in rows)
PY
	ds-infer -q --model "$D/m.dsm" "$D/d.dst" --output-format dst -o "$T/l.dst"
	ds-infer -q --model "$D/m.dsm" "$D/d.dst" --output-format dst --output-tensor probs -o "$T/p.dst"
	ds-infer -q --model "$D/m.dsm" "$D/d.dst" --output-format dst --output-tensor relu3 -o "$T/e.dst"
	"$PY" - "$T/l.dst" "$T/p.dst" "$T/e.dst" <<'PY'
import json, struct, sys
def frames(path):
    b, off = open(path, "rb").read(), 0
    while off < len(b):
        n = struct.unpack("<Q", b[off:off + 8])[0]
        h = json.loads(b[off + 8:off + 8 + n])
        base = off + 8 + n
        end = max(v["data_offsets"][1] for k, v in h.items() if k != "__metadata__")
        yield h, b[base:base + end]
        off = base + end
for path, name, width in zip(sys.argv[1:], ["logits", "probs", "relu3"], [10, 10, 128]):
    rows = 0
    for h, data in frames(path):
        t = h[name]
        assert t["dtype"] == "F32" and t["shape"][1] == width, (path, t)
        ids = json.loads(h["__metadata__"]["ds.items"])
        assert len(ids) == t["shape"][0] == h["y"]["shape"][0]
        if name == "probs":
            s, e = t["data_offsets"]
            v = struct.unpack("<%df" % ((e - s) // 4), data[s:e])
            for i in range(0, len(v), 10):
                assert abs(sum(v[i:i + 10]) - 1) < 1e-4
        rows += t["shape"][0]
    assert rows == 200, (path, rows)
PY
	"$PY" "$DS_SRCDIR/tests/safetensors_check.py" "$T/e.dst" > /dev/null
	run ds-infer -q --model "$D/m.dsm" "$D/d.dst" --output-format dst --output-tensor nope -o "$T/n.dst"
	[ "$status" -eq 2 ]
	[[ "$output" == *"no value 'nope'"* ]]
	[ ! -e "$T/n.dst" ]
}

@test "images of any kind are converted, not failed: 16-bit, alpha, palette, CMYK, RGB for a gray model" {
	mkdir -p "$T/kinds"
	for k in png png16 palette gray graya; do
		mkimages one "$k" "$T/kinds/$k.png" 3
	done
	for k in jpeg progressive cmyk exif6; do
		mkimages one "$k" "$T/kinds/$k.jpg" 3
	done
	run ds-infer -q --model "$D/m.dsm" "$T/kinds" -o "$T/k.jsonl"
	[ "$status" -eq 0 ] || { echo "$output"; cat "$T/k.jsonl"; false; }
	[ "$(records "$T/k.jsonl" 'sum("prediction" in x for x in r)')" = 9 ]
	# And gray images into an RGB model of another size.
	ds-clean -q "$D/idx/t-images-idx3-ubyte" --channels 3 --size 20x24 -o "$T/rgb.dst" --report /dev/null
	ds-train -q --data "$T/rgb.dst" --arch mlp --epochs 0 -o "$T/rgb.dsm"
	ds-infer -q --model "$T/rgb.dsm" "$T/kinds" "$D/png/1" -o "$T/k3.jsonl"
	[ "$(records "$T/k3.jsonl" 'sum("prediction" in x for x in r)')" = 29 ]
}

@test "bad input: a stream of another image size, status 3 naming the file and both shapes" {
	ds-clean -q "$D/idx/t-images-idx3-ubyte" --size 32x32 -o "$T/big.dst" --report /dev/null
	run ds-infer -q --model "$D/m.dsm" "$T/big.dst" -o "$T/r.jsonl"
	[ "$status" -eq 3 ]
	[[ "$output" == *"big.dst: tensor 'x': U8 [N, 32, 32, 1] (NHWC) does not fit the model's input 'x' F32 [N, 1, 28, 28]"* ]]
	[ ! -e "$T/r.jsonl" ]
	# The same stream on a pipe.
	run sh -c "cat '$T/big.dst' | ds-infer -q --model '$D/m.dsm' -"
	[ "$status" -eq 3 ]
	[[ "$output" == *"stdin: tensor 'x'"* ]]
}

@test "bad input: a stream whose x has the wrong dtype, and token ids into an image model" {
	"$PY" - "$T/f32.dst" <<'PY'
import json, struct, sys
x = struct.pack("<%df" % (2 * 28 * 28), *([0.5] * (2 * 28 * 28)))
head = {"x": {"dtype": "F32", "shape": [2, 28, 28, 1], "data_offsets": [0, len(x)]},
        "__metadata__": {"ds.format": "frame/1"}}
h = json.dumps(head).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + x)
PY
	run ds-infer -q --model "$D/m.dsm" "$T/f32.dst"
	[ "$status" -eq 3 ]
	[[ "$output" == *"f32.dst: frame 0: tensor 'x' is not U8"* ]]
	printf '{"text": "hello there", "label": "a"}\n{"text": "hallo du", "label": "b"}\n' > "$T/t.jsonl"
	ds-clean -q "$T/t.jsonl" -o "$T/t.dst" --report /dev/null --near-jaccard 0
	run ds-infer -q --model "$D/m.dsm" "$T/t.dst"
	[ "$status" -eq 3 ]
	[[ "$output" == *"t.dst: tensor 'x': I32 token ids do not fit the model's input 'x'"* ]]
}

@test "bad input: a missing model is status 5, a corrupt one 3, no input 2" {
	run ds-infer -q --model "$T/none.dsm" "$D/d.dst"
	[ "$status" -eq 5 ]
	[[ "$output" == *"none.dsm"* ]]
	head -c 2000 "$D/m.dsm" > "$T/cut.dsm"
	run ds-infer -q --model "$T/cut.dsm" "$D/d.dst"
	[ "$status" -eq 3 ]
	[[ "$output" == *"cut.dsm"* ]]
	cp "$D/d.dst" "$T/notmodel.dsm"
	run ds-infer -q --model "$T/notmodel.dsm" "$D/d.dst"
	[ "$status" -eq 3 ]
	run ds-infer -q --model "$D/m.dsm"
	[ "$status" -eq 2 ]
	run ds-infer -q "$D/d.dst"
	[ "$status" -eq 2 ]
	run ds-infer -q --model - -
	[ "$status" -eq 2 ]
	run ds-infer -q --model "$D/m.dsm" "$D/d.dst" --output-format xml
	[ "$status" -eq 2 ]
}

@test "labels the model does not know are not counted in the accuracy" {
	mkdir -p "$T/odd/zebra" "$T/odd/0"
	cp "$D"/png/0/*_0.png "$D"/png/0/*_10.png "$T/odd/0/"
	cp "$D"/png/1/*_1.png "$T/odd/zebra/"
	run ds-infer --model "$D/m.dsm" "$T/odd" --format json -o "$T/r.jsonl"
	[ "$status" -eq 0 ]
	echo "$output" | grep -v '^ds-infer: ' > "$T/s.json"
	[ "$(json_eval "$T/s.json" 'd["labelled"], d["unknown_labels"]')" = "(2, 1)" ]
	[[ "$output" == *"1 items have a label the model does not know"* ]]
}

@test "a text model over raw JSON Lines and over its packed stream: the same predictions" {
	"$PY" - "$T/t.jsonl" <<'PY'
import json, random, sys
rng = random.Random(3)
words = {"en": "the cat sat on a mat and the dog ran over hill with some big red apples".split(),
         "de": "der hund und die katze sitzen auf einer matte mit vielen roten aepfeln heute".split()}
with open(sys.argv[1], "w") as f:
    for i in range(120):
        lab = "en" if i % 2 == 0 else "de"
        t = " ".join(rng.choice(words[lab]) for _ in range(rng.randint(4, 9)))
        f.write(json.dumps({"text": f"{t} {i}", "label": lab}) + "\n")
PY
	ds-clean -q "$T/t.jsonl" -o "$T/t.dst" --report /dev/null --tokenizer ngrams --ngram-buckets 4096 --max-tokens 64
	ds-train -q --data "$T/t.dst" --arch text-bag --epochs 5 -o "$T/t.dsm"
	ds-infer --model "$T/t.dsm" "$T/t.jsonl" --format json > "$T/raw.jsonl" 2> "$T/raw.json"
	ds-infer -q --model "$T/t.dsm" "$T/t.dst" > "$T/packed.jsonl"
	cmp "$T/raw.jsonl" "$T/packed.jsonl"
	[ "$(json_eval "$T/raw.json" 'd["top1_accuracy"] > 0.9')" = True ]
	# A fortune file is text too, its name the label.
	printf 'the dog ran over the hill\n%%\nder hund und die katze\n%%\n' > "$T/en"
	ds-infer -q --model "$T/t.dsm" "$T/en" > "$T/f.jsonl"
	[ "$(records "$T/f.jsonl" '[x["prediction"] for x in r]')" = "['en', 'de']" ]
}
