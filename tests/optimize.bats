#!/usr/bin/env bats
# ds-optimize: every zoo architecture optimizes to a model that computes what
# the original did; the report, levels and switches; bad input writes nothing.

load helpers

setup() {
	T=$BATS_TEST_TMPDIR
	need ds-optimize
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
	[ -f "$T/$1.dsm" ] || ds-train -q --data "$T/d.dst" --arch "$1" --epochs "${2:-0}" --max-steps 2 -o "$T/$1.dsm"
}

nodes() {
	ds-info --format json "$1" | "$PY" -c 'import json,sys; print(" ".join(sorted(o["op"] for o in json.load(sys.stdin)["ops"])))'
}

@test "every image architecture of the zoo optimizes and verifies" {
	for arch in mlp cnn-small cnn-bn resnet-s mobilenet-s resnet18 mobilenet-v2 resnet50; do
		model "$arch"
		run ds-optimize --verify 8 -o "$T/$arch.opt.dsm" "$T/$arch.dsm"
		[ "$status" -eq 0 ] || { echo "$arch: $output"; false; }
		[[ "$(nodes "$T/$arch.opt.dsm")" != *batchnorm* ]] || { echo "$arch kept a batch norm"; false; }
		[[ "$(nodes "$T/$arch.opt.dsm")" != *dropout* ]]
	done
}

@test "text-bag optimizes and verifies" {
	mkdir -p "$T/txt/en" "$T/txt/de"
	for i in $(seq 10); do
		echo "the cat sat on the mat number $i" > "$T/txt/en/$i.txt"
		echo "der Hund lief nach Hause nummer $i" > "$T/txt/de/$i.txt"
	done
	ds-clean -q "$T/txt" --near-jaccard 0 -o "$T/t.dst" --report /dev/null
	ds-train -q --data "$T/t.dst" --arch text-bag --epochs 0 -o "$T/t.dsm"
	ds-optimize -q --verify 16 -o "$T/t.opt.dsm" "$T/t.dsm"
}

@test "a trained cnn-bn keeps its predictions: batch norm folded, the report says so" {
	model cnn-bn 1
	run --separate-stderr ds-optimize --verify 64 --format json -o "$T/o.dsm" "$T/cnn-bn.dsm"
	[ "$status" -eq 0 ]
	echo "$stderr" > "$T/r.json"
	[ "$(json_eval "$T/r.json" "[p['rewrites'] for p in d['passes'] if p['pass'] == 'fold-batchnorm'][0]")" = 2 ]
	[ "$(json_eval "$T/r.json" "d['verify']['top1_agreement']")" = 1.0 ]
	[ "$(json_eval "$T/r.json" "d['verify']['max_rel_diff'] < 1e-5")" = True ]
	[ "$(json_eval "$T/r.json" "d['figures']['after_nodes'] < d['figures']['before_nodes']")" = True ]
	[ "$(json_eval "$T/r.json" "len(d['rewrites'])")" -ge 3 ]
	# The history records the run and its figures.
	ds-info --format json "$T/o.dsm" > "$T/i.json"
	[ "$(json_eval "$T/i.json" "d['history'][-1]['tool']")" = ds-optimize ]
	[ "$(json_eval "$T/i.json" "d['history'][-1]['figures']['verify']['inputs']")" = 64 ]
}

@test "activations are fused into the layers; the fused model is for inference only" {
	model cnn-small
	# (the layout pass aside: it has a test of its own)
	ds-optimize -q --disable-pass layout -o "$T/o.dsm" "$T/cnn-small.dsm"
	# ReLUs into the convolutions and fc1, then the pools into the convolutions.
	[ "$(nodes "$T/o.dsm")" = "conv2d flatten linear" ]
	run -0 ds-optimize --disable-pass fuse-pool,layout -q -o "$T/np.dsm" "$T/cnn-small.dsm"
	[ "$(nodes "$T/np.dsm")" = "conv2d flatten linear max_pool" ]
	run -3 --separate-stderr ds-train -q --finetune "$T/o.dsm" --data "$T/d.dst" --epochs 1 -o "$T/t.dsm"
	[[ "$stderr" == *"a fused activation is for inference"* ]]
	[ ! -e "$T/t.dsm" ]
}

@test "residual additions are fused into the layers: the same result bit for bit, inference only" {
	model resnet-s
	run -0 --separate-stderr ds-optimize --verify 16 --format json -o "$T/r.dsm" "$T/resnet-s.dsm"
	echo "$stderr" > "$T/r.json"
	[ "$(json_eval "$T/r.json" "[p['rewrites'] for p in d['passes'] if p['pass'] == 'fuse-add'][0]")" = 6 ]
	[ "$(json_eval "$T/r.json" "d['verify']['max_rel_diff'] < 1e-5")" = True ]
	[ "$(nodes "$T/r.dsm")" = "conv2d_nchw16c flatten global_avg_pool_nchw16c linear" ]
	# Against the same passes without it, nothing moves (--tolerance 0;
	# the layout pass sums in another order).
	ds-optimize -q --disable-pass fuse-add,layout -o "$T/na.dsm" "$T/resnet-s.dsm"
	[[ "$(nodes "$T/na.dsm")" == *add* ]]
	run -0 ds-optimize -q --disable-pass layout --verify 16 --tolerance 0 -o "$T/a.dsm" "$T/na.dsm"
	# The residuals of mobilenet-s, alone: training through them is refused.
	model mobilenet-s
	ds-optimize -q --disable-pass fuse-activation -o "$T/m.dsm" "$T/mobilenet-s.dsm"
	[[ "$(nodes "$T/m.dsm")" != *add* ]]
	run -3 --separate-stderr ds-train -q --finetune "$T/m.dsm" --data "$T/d.dst" --epochs 1 -o "$T/t.dsm"
	[[ "$stderr" == *"a fused residual is for inference"* ]]
	[ ! -e "$T/t.dsm" ]
}

@test "layout: chains of convolutions run blocked on the cpu, within rounding, inference only" {
	model resnet-s
	run -0 --separate-stderr ds-optimize --verify 16 --format json -o "$T/r.dsm" "$T/resnet-s.dsm"
	echo "$stderr" > "$T/r.json"
	# Every convolution: the first (16 channels) reads the plain image,
	# the rest the blocked outputs; the global pool reads the last output
	# blocked.
	[ "$(json_eval "$T/r.json" "[p['rewrites'] for p in d['passes'] if p['pass'] == 'layout'][0]")" = 16 ]
	json_eval "$T/r.json" "[r['rewrite'] for r in d['rewrites']]" > "$T/log"
	grep -q "layout: conv2d 'conv1' in nchw16c, plain input" "$T/log"
	grep -q "layout: conv2d 'layer1.0.conv1' in nchw16c, blocked input" "$T/log"
	grep -q "layout: conv2d 'layer2.0.conv1' in nchw16c, blocked input" "$T/log"
	grep -q "layout: conv2d 'layer3.0.conv1' in nchw16c, blocked input" "$T/log"
	grep -q "layout: conv2d 'layer3.1.conv2' in nchw16c, blocked input" "$T/log"
	grep -q "layout: global_avg_pool 'avgpool.pool' reads 'layer3.1.relu' blocked" "$T/log"
	! grep -q "back to nchw" "$T/log"
	[ "$(json_eval "$T/r.json" "d['verify']['max_rel_diff'] < 1e-5")" = True ]
	# The same model without the pass: the same FLOPs, and the same labels.
	ds-optimize -q --disable-pass layout -o "$T/n.dsm" "$T/resnet-s.dsm"
	[[ "$(nodes "$T/n.dsm")" != *nchw16c* ]]
	[ "$(ds-info --format json "$T/r.dsm" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["flops_per_item"])')" = \
	  "$(ds-info --format json "$T/n.dsm" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["flops_per_item"])')" ]
	ds-infer -q --model "$T/r.dsm" "$T/d.dst" | cut -d, -f1-3 > "$T/r.out"
	ds-infer -q --model "$T/n.dsm" "$T/d.dst" | cut -d, -f1-3 > "$T/n.out"
	cmp "$T/r.out" "$T/n.out"
	# CUDA models stay NCHW.
	ds-optimize -q --target cuda -o "$T/c.dsm" "$T/resnet-s.dsm"
	[[ "$(nodes "$T/c.dsm")" != *nchw16c* ]]
	# Training starts from the model before ds-optimize.
	run -3 --separate-stderr ds-train -q --finetune "$T/r.dsm" --data "$T/d.dst" --epochs 1 -o "$T/t.dsm"
	[[ "$stderr" == *"the blocked layout is for inference"* ]]
	[ ! -e "$T/t.dsm" ]
}

@test "layout: the CNN's first layer reads the image, pooled layers stay pooled, flattened into the linear layer" {
	model cnn-small
	run -0 --separate-stderr ds-optimize --verify 16 --format json -o "$T/s.dsm" "$T/cnn-small.dsm"
	echo "$stderr" > "$T/s.json"
	json_eval "$T/s.json" "[r['rewrite'] for r in d['rewrites']]" > "$T/log"
	# conv1 (one input channel) reads the plain image; conv2 keeps its
	# pool and reads conv1's blocked output; fc1 takes conv2's, with no
	# reorder anywhere.
	grep -q "layout: conv2d 'conv1' in nchw16c, plain input" "$T/log"
	grep -q "layout: conv2d 'conv2' in nchw16c, blocked input" "$T/log"
	grep -q "layout: linear 'fc1' reads 'flatten' blocked, its weight columns reordered" "$T/log"
	! grep -q "reorder" "$T/log"
	! grep -q "back to nchw" "$T/log"
	[ "$(json_eval "$T/s.json" "d['verify']['max_rel_diff'] < 1e-5")" = True ]
	[ "$(nodes "$T/s.dsm")" = "conv2d_nchw16c flatten linear" ]
	# With a first layer the kernel has no register form for (dilated),
	# conv1 stays NCHW and conv2 (64 channels, pooled) goes blocked alone,
	# its input reordered first.
	edit_model "$T/cnn-small.dsm" "
for x in g['nodes']:
    if x['name'] == 'conv1': x['attrs'].update(dilation=2, padding=2)
" "$T/dilated.dsm"
	run -0 --separate-stderr ds-optimize --verify 16 --format json -o "$T/d.dsm" "$T/dilated.dsm"
	echo "$stderr" > "$T/d.json"
	json_eval "$T/d.json" "[r['rewrite'] for r in d['rewrites']]" > "$T/log"
	grep -q "layout: reorder 'pool1' to nchw16c for 'conv2'" "$T/log"
	grep -q "layout: conv2d 'conv2' in nchw16c, blocked input" "$T/log"
	! grep -q "conv1' in nchw16c" "$T/log"
	[ "$(nodes "$T/d.dsm")" = "conv2d conv2d_nchw16c flatten linear reorder" ]
	ds-optimize -q --disable-pass layout -o "$T/n.dsm" "$T/cnn-small.dsm"
	[ "$(ds-info --format json "$T/s.dsm" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["flops_per_item"])')" = \
	  "$(ds-info --format json "$T/n.dsm" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["flops_per_item"])')" ]
	for b in 1 7 64; do
		ds-infer -q --batch $b --model "$T/s.dsm" "$T/d.dst" | cut -d, -f1-3 > "$T/s.out"
		ds-infer -q --batch $b --model "$T/n.dsm" "$T/d.dst" | cut -d, -f1-3 > "$T/n.out"
		cmp "$T/s.out" "$T/n.out"
	done
}

@test "levels, --disable-pass and --dry-run" {
	model cnn-bn
	cp "$T/cnn-bn.dsm" "$T/orig.dsm"
	run -0 ds-optimize -O0 -q -o "$T/o0.dsm" "$T/cnn-bn.dsm"
	[[ "$(nodes "$T/o0.dsm")" == *batchnorm*dropout* ]]
	[[ "$(nodes "$T/cnn-bn.dsm")" == *batchnorm*dropout* ]]
	run -0 ds-optimize -O1 -q -o "$T/o1.dsm" "$T/cnn-bn.dsm"
	[[ "$(nodes "$T/o1.dsm")" == *batchnorm* ]]
	[[ "$(nodes "$T/o1.dsm")" != *dropout* ]]
	run -0 ds-optimize --disable-pass fold-batchnorm -q -o "$T/od.dsm" "$T/cnn-bn.dsm"
	[[ "$(nodes "$T/od.dsm")" == *batchnorm* ]]
	run -0 --separate-stderr ds-optimize --dry-run "$T/cnn-bn.dsm"
	[[ "$output" == *"fold-batchnorm: folded 'bn1' into conv2d 'conv1'"* ]]
	run -0 ds-optimize --list-passes --format csv
	[[ "${lines[0]}" == "pass,level,exact,does" ]]
	# The input is never touched.
	cmp "$T/cnn-bn.dsm" "$T/orig.dsm"
}

@test "pipes: a model from stdin to stdout" {
	model cnn-small
	ds-optimize -q -o - < "$T/cnn-small.dsm" > "$T/p.dsm"
	ds-optimize -q --verify 4 -o "$T/p2.dsm" - < "$T/p.dsm"
	[ "$(nodes "$T/p.dsm")" = "conv2d_nchw16c flatten linear" ]
}

@test "bad input and bad options write nothing" {
	model cnn-small
	run -2 ds-optimize "$T/cnn-small.dsm"
	[[ "$output" == *"-o FILE"* ]]
	run -2 ds-optimize -O7 -o "$T/x.dsm" "$T/cnn-small.dsm"
	run -2 --separate-stderr ds-optimize --disable-pass nope -o "$T/x.dsm" "$T/cnn-small.dsm"
	[[ "$stderr" == *"no pass 'nope'"* ]]
	run -2 ds-optimize --target tpu -o "$T/x.dsm" "$T/cnn-small.dsm"
	printf 'garbage' > "$T/bad.dsm"
	run -3 ds-optimize -o "$T/x.dsm" "$T/bad.dsm"
	run -5 ds-optimize -o "$T/x.dsm" "$T/missing.dsm"
	run -3 --separate-stderr ds-optimize -o "$T/x.dsm" "$T/d.dst"
	[[ "$stderr" == *"not a model"* ]]
	[ ! -e "$T/x.dsm" ]
	[ -z "$(ls -a "$T" | grep -i 'tmp')" ]
}
