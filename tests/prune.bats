#!/usr/bin/env bats
# ds-prune: the zoo's convolutional models lose channels and FLOPs, still
# verify, optimize and fine-tune; the report and history; pipes; bad input
# writes nothing.

load helpers

setup() {
	T=$BATS_TEST_TMPDIR
	need ds-prune
	need ds-train
	need ds-clean
	need mkimages
}

data() {
	[ -f "$T/d.dst" ] && return 0
	mkimages idx "$T/idx" 64
	ds-clean -q "$T/idx/t-images-idx3-ubyte" -o "$T/d.dst" --report /dev/null
}

model() {
	data
	[ -f "$T/$1.dsm" ] || ds-train -q --data "$T/d.dst" --arch "$1" --epochs 1 --max-steps 2 -o "$T/$1.dsm"
}

figure() {
	json_eval "$1" "d['figures']['$2']"
}

@test "cnn-bn, resnet-s and mobilenet-s prune at 0.3 (l1, bn-gamma): fewer FLOPs, and the result verifies" {
	need ds-optimize
	for arch in cnn-bn resnet-s mobilenet-s; do
		model "$arch"
		for c in l1 bn-gamma; do
			run --separate-stderr ds-prune --ratio 0.3 --criterion "$c" --format json -o "$T/$arch.$c.dsm" "$T/$arch.dsm"
			[ "$status" -eq 0 ] || { echo "$arch $c: $stderr"; false; }
			echo "$stderr" > "$T/r.json"
			[ "$(json_eval "$T/r.json" "d['figures']['flops_after'] < d['figures']['flops_before']")" = True ] ||
				{ echo "$arch $c: FLOPs did not fall"; false; }
			run ds-optimize -q --verify 8 -o "$T/o.dsm" "$T/$arch.$c.dsm"
			[ "$status" -eq 0 ] || { echo "$arch $c: $output"; false; }
		done
		ds-train -q --finetune "$T/$arch.l1.dsm" --data "$T/d.dst" --epochs 1 --max-steps 1 -o "$T/$arch.ft.dsm"
	done
}

@test "30% of the channels of cnn-bn and resnet-s remove at least 35% of the FLOPs" {
	for arch in cnn-bn resnet-s; do
		model "$arch"
		ds-prune --dry-run --ratio 0.3 --prune-first --prune-last --format json "$T/$arch.dsm" > "$T/r.json"
		removed=$(figure "$T/r.json" flops_removed)
		echo "$arch: $removed of the FLOPs removed"
		"$PY" -c "import sys; sys.exit(0 if $removed >= 0.35 else 1)"
	done
}

@test "residual groups prune together; first and last layers stay unless asked" {
	model resnet-s
	ds-prune --dry-run --format json "$T/resnet-s.dsm" > "$T/r.json"
	[ "$(json_eval "$T/r.json" "[r['status'] for r in d['groups'] if 'layer2.0.downsample.0' in r['layers']][0]")" = pruned ]
	[ "$(json_eval "$T/r.json" "[r['layers'] for r in d['groups'] if 'layer2.0.downsample.0' in r['layers']][0]")" = \
		"layer2.0.conv2,layer2.0.downsample.0,layer2.1.conv2" ]
	[[ "$(json_eval "$T/r.json" "[r['status'] for r in d['groups'] if 'conv1' in r['layers'].split(',')][0]")" == *first* ]]
	[[ "$(json_eval "$T/r.json" "[r['status'] for r in d['groups'] if 'layer3.1.conv2' in r['layers']][0]")" == *last* ]]
	ds-prune --dry-run --format json --prune-first --prune-last "$T/resnet-s.dsm" > "$T/all.json"
	[ "$(json_eval "$T/all.json" "all(r['status'] == 'pruned' for r in d['groups'] if r['layers'] != 'fc')")" = True ]
	# Per-layer ratios, and rounding to a multiple.
	ds-prune --dry-run --format json --layer-ratio 'layer3.*=0.5' --round 4 "$T/resnet-s.dsm" > "$T/l.json"
	[ "$(json_eval "$T/l.json" "[r['channels_after'] for r in d['layers'] if r['layer'] == 'layer3.0.conv1'][0]")" = 32 ]
	[ "$(json_eval "$T/l.json" "[r['channels_after'] for r in d['layers'] if r['layer'] == 'layer2.0.conv1'][0]")" = 24 ]
}

@test "taylor ranks channels on --data; the report, history, labels and preprocess" {
	model cnn-bn
	run --separate-stderr ds-prune --criterion taylor --data "$T/d.dst" --data-count 32 --batch 16 --prune-first \
		--format json -o "$T/t.dsm" "$T/cnn-bn.dsm"
	[ "$status" -eq 0 ] || { echo "$stderr"; false; }
	echo "$stderr" > "$T/r.json"
	[ "$(figure "$T/r.json" criterion)" = taylor ]
	[ "$(json_eval "$T/r.json" "[r['channels_after'] for r in d['layers'] if r['layer'] == 'conv1'][0]")" = 22 ]
	ds-info --format json "$T/t.dsm" > "$T/i.json"
	[ "$(json_eval "$T/i.json" "d['history'][-1]['tool']")" = ds-prune ]
	[ "$(json_eval "$T/i.json" "d['history'][-1]['figures']['flops_after'] < d['history'][-1]['figures']['flops_before']")" = True ]
	ds-info --format json "$T/cnn-bn.dsm" > "$T/o.json"
	[ "$(json_eval "$T/i.json" "d['labels']")" = "$(json_eval "$T/o.json" "d['labels']")" ]
	[ "$(json_eval "$T/i.json" "d['preprocess']")" = "$(json_eval "$T/o.json" "d['preprocess']")" ]
	run -2 ds-prune --criterion taylor -o "$T/x.dsm" "$T/cnn-bn.dsm"
	[[ "$output" == *"--data"* ]]
	run -2 ds-prune --data "$T/d.dst" -o "$T/x.dsm" "$T/cnn-bn.dsm"
	[ ! -e "$T/x.dsm" ]
}

@test "--dry-run writes nothing and leaves the input alone" {
	model cnn-bn
	cp "$T/cnn-bn.dsm" "$T/orig.dsm"
	run -0 --separate-stderr ds-prune --dry-run "$T/cnn-bn.dsm"
	[[ "$output" == *"channels_before"* ]]
	[[ "$output" == *conv2* ]]
	cmp "$T/cnn-bn.dsm" "$T/orig.dsm"
	[ "$(ls "$T" | grep -c dsm)" -eq 2 ]
}

@test "pipes: a model from stdin, to stdout, into ds-train --finetune" {
	model cnn-bn
	ds-prune -q -o - < "$T/cnn-bn.dsm" > "$T/p.dsm"
	cat "$T/cnn-bn.dsm" | ds-prune -q --ratio 0.5 -o - - | ds-train -q --finetune - --data "$T/d.dst" --epochs 1 \
		--max-steps 1 -o "$T/ft.dsm"
	ds-info --format json "$T/ft.dsm" > "$T/i.json"
	[ "$(json_eval "$T/i.json" "[h['tool'] for h in d['history']][-2:]")" = "['ds-prune', 'ds-train']" ]
}

@test "a model output is refused on a terminal" {
	model cnn-bn
	"$PY" - "$T/cnn-bn.dsm" <<'PY'
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execvp('ds-prune', ['ds-prune', '-o', '-', sys.argv[1]])
out = b''
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, st = os.waitpid(pid, 0)
assert os.WEXITSTATUS(st) == 2, (st, out)
assert b'terminal' in out, out
PY
}

@test "a ratio that removes every channel: status 2, nothing written" {
	model cnn-bn
	run -2 --separate-stderr ds-prune --ratio 1 -o "$T/x.dsm" "$T/cnn-bn.dsm"
	[[ "$stderr" == *"removes every channel"* ]]
	run -2 --separate-stderr ds-prune --ratio 0.5 --layer-ratio conv2=1 -o "$T/x.dsm" "$T/cnn-bn.dsm"
	[[ "$stderr" == *conv2* ]]
	run -2 ds-prune --ratio 1.5 -o "$T/x.dsm" "$T/cnn-bn.dsm"
	run -2 ds-prune --layer-ratio conv2 -o "$T/x.dsm" "$T/cnn-bn.dsm"
	run -2 ds-prune --criterion magic -o "$T/x.dsm" "$T/cnn-bn.dsm"
	[ ! -e "$T/x.dsm" ]
	[ -z "$(ls -a "$T" | grep -i 'tmp')" ]
}

@test "NaN or infinite weights: status 3 naming the tensor, nothing written" {
	model cnn-bn
	edit_model "$T/cnn-bn.dsm" "set_float('conv2.weight', 7, float('nan'))" "$T/nan.dsm"
	run -3 --separate-stderr ds-prune -o "$T/x.dsm" "$T/nan.dsm"
	[[ "$stderr" == *"conv2.weight"*NaN* ]]
	edit_model "$T/cnn-bn.dsm" "set_float('fc1.bias', 0, float('inf'))" "$T/inf.dsm"
	run -3 --separate-stderr ds-prune -o "$T/x.dsm" "$T/inf.dsm"
	[[ "$stderr" == *"fc1.bias"*infinite* ]]
	printf 'garbage' > "$T/bad.dsm"
	run -3 ds-prune -o "$T/x.dsm" "$T/bad.dsm"
	run -5 ds-prune -o "$T/x.dsm" "$T/missing.dsm"
	[ ! -e "$T/x.dsm" ]
}

@test "an op the analysis does not follow passes through untouched, with a warning" {
	need ds-optimize
	model cnn-bn
	# A reshape between relu2 and pool2 (it keeps the shape).
	edit_model "$T/cnn-bn.dsm" "
i = [k for k, x in enumerate(g['nodes']) if x['name'] == 'pool2'][0]
g['nodes'][i]['inputs'] = ['odd']
g['nodes'].insert(i, {'op': 'reshape', 'name': 'odd', 'inputs': ['relu2'], 'outputs': ['odd'], 'attrs': {'shape': [0, 64, 14, 14]}})
" "$T/odd.dsm"
	run --separate-stderr ds-prune --prune-first --format json -o "$T/p.dsm" "$T/odd.dsm"
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"warning: reshape 'odd'"* ]]
	echo "$stderr" | sed -n '/^{/,$p' > "$T/r.json"
	[ "$(json_eval "$T/r.json" "[r['channels_after'] for r in d['layers'] if r['layer'] == 'conv2'][0]")" = 64 ]
	[ "$(json_eval "$T/r.json" "[r['channels_after'] for r in d['layers'] if r['layer'] == 'conv1'][0]")" = 22 ]
	[[ "$(json_eval "$T/r.json" "d['notes'][0]['note']")" == *reshape* ]]
	ds-optimize -q --verify 4 -o "$T/o.dsm" "$T/p.dsm"
}

@test "a convolution with a fused residual is a barrier: the model prunes around it and verifies" {
	need ds-optimize
	model resnet-s
	# In NCHW: the blocked layout's convolutions are barriers of their own.
	ds-optimize -q --disable-pass layout -o "$T/o.dsm" "$T/resnet-s.dsm"
	edit_model "$T/o.dsm" "
assert any(len(x['inputs']) > 3 for x in g['nodes'] if x['op'] == 'conv2d'), 'no fused residual'
" "$T/check.dsm"
	run --separate-stderr ds-prune --ratio 0.3 --format json -o "$T/p.dsm" "$T/o.dsm"
	[ "$status" -eq 0 ] || { echo "$stderr"; false; }
	echo "$stderr" | sed -n '/^{/,$p' > "$T/r.json"
	[ "$(json_eval "$T/r.json" "d['figures']['flops_after'] < d['figures']['flops_before']")" = True ]
	ds-optimize -q --verify 4 -o "$T/o2.dsm" "$T/p.dsm"
}
