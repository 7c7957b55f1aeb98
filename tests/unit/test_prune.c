/* test_prune.c - channel pruning on small hand-written graphs: the pruned
 * tensors have the right shapes, and where the removed channels carry
 * nothing (all-zero filters, zero bias and beta) the pruned model computes
 * exactly what the original did. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "tap.h"

static void add_param(ds_container *c, const char *name, int ndim, const int64_t *shape, double lo, double hi)
{
	ds_tensor *t = ds_tensor_new(DS_F32, ndim, shape, DS_CPU, NULL);

	for (int64_t i = 0; i < ds_tensor_numel(t); i++)
		((float *)t->data)[i] = (float)(lo + (hi - lo) * tap_uniform());
	ds_container_add(c, name, t, NULL);
	ds_tensor_unref(t);
}

/* Zero the slices of channel ch along dim 0 of a tensor. */
static void zero_channel(ds_container *c, const char *name, int64_t ch)
{
	ds_tensor *t = ds_container_get(c, name);
	int64_t per = ds_tensor_numel(t) / t->shape[0];

	memset((float *)t->data + ch * per, 0, (size_t)per * sizeof(float));
}

static ds_container *model_of(const char *graph)
{
	ds_container *c = ds_container_new();

	ds_container_meta_set(c, "ds.format", DS_FORMAT_MODEL, NULL);
	ds_container_meta_set(c, "ds.graph", graph, NULL);
	ds_container_meta_set(c, "ds.labels", "[\"a\", \"b\"]", NULL);
	return c;
}

static ds_container *copy_of(const ds_container *m)
{
	void *buf = NULL;
	size_t len = 0;
	ds_container *c = NULL;

	ds_container_serialize((ds_container *)m, &buf, &len, NULL);
	ds_container_parse(buf, len, "copy", 0, &c, NULL);
	free(buf);
	return c;
}

static int64_t dim(const ds_container *c, const char *name, int d)
{
	const ds_tensor *t = ds_container_get(c, name);

	return t && d < t->ndim ? t->shape[d] : -1;
}

/* Prune a copy of m; the copy (or NULL on failure, with the status in
 * *status). */
static ds_container *pruned(const ds_container *m, const ds_prune_options *o, json_t **report, int *status)
{
	ds_container *c = copy_of(m);
	ds_error err = { 0 };
	json_t *r = NULL;

	*status = ds_prune_model(c, o, &r, &err);
	if (*status) {
		diag("ds_prune_model: %s", err.message);
		ds_container_free(c);
		c = NULL;
	}
	if (report)
		*report = r;
	else
		json_decref(r);
	return c;
}

static double max_diff(ds_container *a, ds_container *b)
{
	json_t *f = NULL;
	ds_error err = { 0 };
	double d;

	if (ds_model_compare(a, b, 16, 7, &f, &err)) {
		diag("compare: %s", err.message);
		return INFINITY;
	}
	d = json_real_value(json_object_get(f, "max_abs_diff"));
	json_decref(f);
	return d;
}

static const char *bn_graph =
	"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 2, 5, 5]}],"
	" \"nodes\": ["
	"  {\"op\": \"conv2d\", \"name\": \"conv1\", \"inputs\": [\"x\", \"conv1.weight\"], \"outputs\": [\"c1\"],"
	"   \"attrs\": {\"padding\": 1}},"
	"  {\"op\": \"batchnorm\", \"name\": \"bn1\", \"inputs\": [\"c1\", \"bn1.weight\", \"bn1.bias\", \"bn1.mean\", \"bn1.var\"],"
	"   \"outputs\": [\"b1\"]},"
	"  {\"op\": \"relu\", \"name\": \"relu1\", \"inputs\": [\"b1\"], \"outputs\": [\"r1\"]},"
	"  {\"op\": \"conv2d\", \"name\": \"conv2\", \"inputs\": [\"r1\", \"conv2.weight\", \"conv2.bias\"], \"outputs\": [\"c2\"],"
	"   \"attrs\": {\"padding\": 1}},"
	"  {\"op\": \"global_avg_pool\", \"name\": \"pool\", \"inputs\": [\"c2\"], \"outputs\": [\"p\"]},"
	"  {\"op\": \"flatten\", \"name\": \"flat\", \"inputs\": [\"p\"], \"outputs\": [\"f\"]},"
	"  {\"op\": \"linear\", \"name\": \"fc\", \"inputs\": [\"f\", \"fc.weight\", \"fc.bias\"], \"outputs\": [\"logits\"]}],"
	" \"outputs\": [\"logits\"]}";

static ds_container *bn_model(void)
{
	ds_container *c = model_of(bn_graph);
	int64_t w1[4] = { 4, 2, 3, 3 }, ch[1] = { 4 }, w2[4] = { 3, 4, 3, 3 }, b2[1] = { 3 }, fw[2] = { 2, 3 }, fb[1] = { 2 };

	add_param(c, "conv1.weight", 4, w1, -0.5, 0.5);
	add_param(c, "bn1.weight", 1, ch, 0.5, 1.5);
	add_param(c, "bn1.bias", 1, ch, -0.5, 0.5);
	add_param(c, "bn1.mean", 1, ch, -0.3, 0.3);
	add_param(c, "bn1.var", 1, ch, 0.2, 2.0);
	add_param(c, "conv2.weight", 4, w2, -0.5, 0.5);
	add_param(c, "conv2.bias", 1, b2, -0.5, 0.5);
	add_param(c, "fc.weight", 2, fw, -0.5, 0.5);
	add_param(c, "fc.bias", 1, fb, -0.5, 0.5);
	/* Channels 1 and 3 of conv1 carry nothing past the batch norm. */
	for (int64_t k = 1; k < 4; k += 2) {
		zero_channel(c, "conv1.weight", k);
		((float *)ds_container_get(c, "bn1.bias")->data)[k] = 0;
		((float *)ds_container_get(c, "bn1.mean")->data)[k] = 0;
	}
	return c;
}

static void test_conv_bn_conv(void)
{
	ds_container *m = bn_model(), *p;
	const char *ratios[] = { "conv2=0" };
	ds_prune_options o = { .ratio = 0.5, .prune_first = 1, .prune_last = 1, .layer_ratios = ratios,
			       .layer_ratio_count = 1 };
	json_t *report = NULL;
	int status;

	p = pruned(m, &o, &report, &status);
	ok(p != NULL, "conv -> bn -> relu -> conv prunes");
	if (p) {
		is_int(dim(p, "conv1.weight", 0), 2, "conv1 keeps 2 of 4 filters");
		is_int(dim(p, "bn1.weight", 0), 2, "bn1 gamma follows");
		is_int(dim(p, "bn1.var", 0), 2, "bn1 running variance follows");
		is_int(dim(p, "conv2.weight", 1), 2, "conv2 reads 2 channels");
		is_int(dim(p, "conv2.weight", 0), 3, "conv2 keeps its filters (--layer-ratio conv2=0)");
		ok(max_diff(m, p) < 1e-5, "the zero channels removed: the same outputs");
		is_int(json_integer_value(json_object_get(json_object_get(report, "figures"), "channels_after")), 2 + 3 + 2,
		       "the report counts the channels left");
		ok(json_integer_value(json_object_get(json_object_get(report, "figures"), "flops_after")) <
			   json_integer_value(json_object_get(json_object_get(report, "figures"), "flops_before")),
		   "the FLOPs fall");
		ok(ds_container_meta_get(p, "ds.labels") != NULL, "ds.labels kept");
	}
	ds_container_free(p);
	json_decref(report);

	/* bn-gamma: gamma of the zero channels made smallest. */
	((float *)ds_container_get(m, "bn1.weight")->data)[1] = 0.01f;
	((float *)ds_container_get(m, "bn1.weight")->data)[3] = -0.02f;
	o.criterion = "bn-gamma";
	p = pruned(m, &o, NULL, &status);
	ok(p && dim(p, "conv1.weight", 0) == 2 && max_diff(m, p) < 1e-5, "bn-gamma removes the small-gamma channels");
	ds_container_free(p);

	/* Defaults keep the first layer: conv1 reads the input. */
	o = (ds_prune_options){ .ratio = 0.5 };
	p = pruned(m, &o, NULL, &status);
	ok(p && dim(p, "conv1.weight", 0) == 4, "the first layer is kept without prune_first");
	ok(p && dim(p, "conv2.weight", 0) == 3, "conv2 feeds the last layer: kept without prune_last");
	ds_container_free(p);

	/* --round 4 keeps all 4: nothing to remove. */
	o = (ds_prune_options){ .ratio = 0.5, .prune_first = 1, .round = 4 };
	p = pruned(m, &o, NULL, &status);
	ok(p && dim(p, "conv1.weight", 0) == 4, "--round rounds the channels kept up");
	ds_container_free(p);

	o = (ds_prune_options){ .ratio = 1.0, .prune_first = 1 };
	p = pruned(m, &o, NULL, &status);
	ok(!p && status == DS_ERR_USAGE, "a ratio that removes every channel is status 2");

	o = (ds_prune_options){ .ratio = 0.8, .prune_first = 1, .min_channels = 3 };
	p = pruned(m, &o, NULL, &status);
	ok(p && dim(p, "conv1.weight", 0) == 3, "--min-channels holds");
	ds_container_free(p);

	((float *)ds_container_get(m, "conv2.weight")->data)[5] = NAN;
	o = (ds_prune_options){ .ratio = 0.5 };
	p = pruned(m, &o, NULL, &status);
	ok(!p && status == DS_ERR_DATA, "NaN weights are status 3");
	ds_container_free(m);
}

/* Two convolutions of the input summed: their channels are one group. */
static const char *res_graph =
	"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 2, 5, 5]}],"
	" \"nodes\": ["
	"  {\"op\": \"conv2d\", \"name\": \"a\", \"inputs\": [\"x\", \"a.weight\", \"a.bias\"], \"outputs\": [\"ya\"],"
	"   \"attrs\": {\"padding\": 1}},"
	"  {\"op\": \"conv2d\", \"name\": \"b\", \"inputs\": [\"x\", \"b.weight\", \"b.bias\"], \"outputs\": [\"yb\"]},"
	"  {\"op\": \"add\", \"name\": \"sum\", \"inputs\": [\"ya\", \"yb\"], \"outputs\": [\"s\"]},"
	"  {\"op\": \"relu\", \"name\": \"act\", \"inputs\": [\"s\"], \"outputs\": [\"r\"]},"
	"  {\"op\": \"conv2d\", \"name\": \"c\", \"inputs\": [\"r\", \"c.weight\"], \"outputs\": [\"yc\"]},"
	"  {\"op\": \"global_avg_pool\", \"name\": \"pool\", \"inputs\": [\"yc\"], \"outputs\": [\"p\"]},"
	"  {\"op\": \"flatten\", \"name\": \"flat\", \"inputs\": [\"p\"], \"outputs\": [\"f\"]},"
	"  {\"op\": \"linear\", \"name\": \"fc\", \"inputs\": [\"f\", \"fc.weight\", \"fc.bias\"], \"outputs\": [\"logits\"]}],"
	" \"outputs\": [\"logits\"]}";

static void test_residual(void)
{
	ds_container *m = model_of(res_graph), *p;
	ds_prune_options o = { .ratio = 0.5, .prune_first = 1 };
	int64_t wa[4] = { 4, 2, 3, 3 }, wb[4] = { 4, 2, 1, 1 }, b[1] = { 4 }, wc[4] = { 3, 4, 1, 1 }, fw[2] = { 2, 3 },
		fb[1] = { 2 };
	int status;

	add_param(m, "a.weight", 4, wa, -0.5, 0.5);
	add_param(m, "a.bias", 1, b, -0.5, 0.5);
	add_param(m, "b.weight", 4, wb, -0.5, 0.5);
	add_param(m, "b.bias", 1, b, -0.5, 0.5);
	add_param(m, "c.weight", 4, wc, -0.5, 0.5);
	add_param(m, "fc.weight", 2, fw, -0.5, 0.5);
	add_param(m, "fc.bias", 1, fb, -0.5, 0.5);
	/* Channel 0 dead in a, channel 2 in b, and both dead in both: the
	 * group's sum ranks 0 and 2 last only because both producers count. */
	for (int64_t k = 0; k < 4; k += 2) {
		zero_channel(m, "a.weight", k);
		zero_channel(m, "b.weight", k);
		((float *)ds_container_get(m, "a.bias")->data)[k] = 0;
		((float *)ds_container_get(m, "b.bias")->data)[k] = 0;
	}
	p = pruned(m, &o, NULL, &status);
	ok(p != NULL, "a residual add prunes");
	if (p) {
		is_int(dim(p, "a.weight", 0), 2, "a keeps 2 filters");
		is_int(dim(p, "b.weight", 0), 2, "b keeps the same 2");
		is_int(dim(p, "b.bias", 0), 2, "b's bias follows");
		is_int(dim(p, "c.weight", 1), 2, "c reads the 2 left");
		ok(max_diff(m, p) < 1e-5, "the sum's zero channels removed: the same outputs");
	}
	ds_container_free(p);
	ds_container_free(m);
}

/* 1x1 expand, depthwise 3x3, 1x1 project: the depthwise channels follow
 * the expansion's and its groups shrink with them. */
static const char *dw_graph =
	"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 2, 6, 6]}],"
	" \"nodes\": ["
	"  {\"op\": \"conv2d\", \"name\": \"expand\", \"inputs\": [\"x\", \"expand.weight\"], \"outputs\": [\"e\"]},"
	"  {\"op\": \"batchnorm\", \"name\": \"bn1\", \"inputs\": [\"e\", \"bn1.weight\", \"bn1.bias\", \"bn1.mean\", \"bn1.var\"],"
	"   \"outputs\": [\"eb\"]},"
	"  {\"op\": \"relu6\", \"name\": \"act1\", \"inputs\": [\"eb\"], \"outputs\": [\"er\"]},"
	"  {\"op\": \"conv2d\", \"name\": \"dw\", \"inputs\": [\"er\", \"dw.weight\"], \"outputs\": [\"d\"],"
	"   \"attrs\": {\"padding\": 1, \"groups\": 6, \"stride\": 2}},"
	"  {\"op\": \"batchnorm\", \"name\": \"bn2\", \"inputs\": [\"d\", \"bn2.weight\", \"bn2.bias\", \"bn2.mean\", \"bn2.var\"],"
	"   \"outputs\": [\"db\"]},"
	"  {\"op\": \"relu6\", \"name\": \"act2\", \"inputs\": [\"db\"], \"outputs\": [\"dr\"]},"
	"  {\"op\": \"conv2d\", \"name\": \"project\", \"inputs\": [\"dr\", \"project.weight\"], \"outputs\": [\"pr\"]},"
	"  {\"op\": \"global_avg_pool\", \"name\": \"pool\", \"inputs\": [\"pr\"], \"outputs\": [\"p\"]},"
	"  {\"op\": \"flatten\", \"name\": \"flat\", \"inputs\": [\"p\"], \"outputs\": [\"f\"]},"
	"  {\"op\": \"linear\", \"name\": \"fc\", \"inputs\": [\"f\", \"fc.weight\", \"fc.bias\"], \"outputs\": [\"logits\"]}],"
	" \"outputs\": [\"logits\"]}";

static void test_depthwise(void)
{
	ds_container *m = model_of(dw_graph), *p;
	ds_prune_options o = { .ratio = 0.5, .prune_first = 1 };
	int64_t we[4] = { 6, 2, 1, 1 }, ch[1] = { 6 }, wd[4] = { 6, 1, 3, 3 }, wp[4] = { 4, 6, 1, 1 }, fw[2] = { 2, 4 },
		fb[1] = { 2 };
	static const int64_t dead[3] = { 0, 2, 5 };
	ds_graph *g = NULL;
	int status;

	add_param(m, "expand.weight", 4, we, -0.5, 0.5);
	add_param(m, "dw.weight", 4, wd, -0.5, 0.5);
	add_param(m, "project.weight", 4, wp, -0.5, 0.5);
	add_param(m, "fc.weight", 2, fw, -0.5, 0.5);
	add_param(m, "fc.bias", 1, fb, -0.5, 0.5);
	for (int i = 1; i <= 2; i++) {
		char n[4][32];

		snprintf(n[0], sizeof n[0], "bn%d.weight", i);
		snprintf(n[1], sizeof n[1], "bn%d.bias", i);
		snprintf(n[2], sizeof n[2], "bn%d.mean", i);
		snprintf(n[3], sizeof n[3], "bn%d.var", i);
		add_param(m, n[0], 1, ch, 0.5, 1.5);
		add_param(m, n[1], 1, ch, -0.5, 0.5);
		add_param(m, n[2], 1, ch, -0.3, 0.3);
		add_param(m, n[3], 1, ch, 0.2, 2.0);
		for (int k = 0; k < 3; k++) {
			((float *)ds_container_get(m, n[1])->data)[dead[k]] = 0;
			((float *)ds_container_get(m, n[2])->data)[dead[k]] = 0;
		}
	}
	for (int k = 0; k < 3; k++)
		zero_channel(m, "expand.weight", dead[k]);
	p = pruned(m, &o, NULL, &status);
	ok(p != NULL, "a depthwise chain prunes");
	if (p) {
		is_int(dim(p, "expand.weight", 0), 3, "expand keeps 3 of 6");
		is_int(dim(p, "dw.weight", 0), 3, "the depthwise filters follow");
		is_int(dim(p, "bn2.mean", 0), 3, "the batch norm after the depthwise follows");
		is_int(dim(p, "project.weight", 1), 3, "project reads 3 channels");
		ok(ds_graph_from_model(p, &g, NULL) == 0, "the pruned graph parses");
		for (size_t i = 0; g && i < ds_graph_node_count(g); i++)
			if (!strcmp(ds_node_name(ds_graph_node(g, i)), "dw"))
				is_int(ds_node_attr_int(ds_graph_node(g, i), "groups", 0), 3, "dw has 3 groups");
		ds_graph_free(g);
		ok(max_diff(m, p) < 1e-5, "the dead channels removed: the same outputs");
	}
	ds_container_free(p);
	ds_container_free(m);
}

/* conv -> relu -> flatten -> linear: the linear layer loses H*W columns per
 * channel. */
static const char *flat_graph =
	"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 1, 4, 4]}],"
	" \"nodes\": ["
	"  {\"op\": \"conv2d\", \"name\": \"conv\", \"inputs\": [\"x\", \"conv.weight\", \"conv.bias\"], \"outputs\": [\"c\"],"
	"   \"attrs\": {\"padding\": 1}},"
	"  {\"op\": \"relu\", \"name\": \"act\", \"inputs\": [\"c\"], \"outputs\": [\"r\"]},"
	"  {\"op\": \"flatten\", \"name\": \"flat\", \"inputs\": [\"r\"], \"outputs\": [\"f\"]},"
	"  {\"op\": \"linear\", \"name\": \"fc\", \"inputs\": [\"f\", \"fc.weight\", \"fc.bias\"], \"outputs\": [\"logits\"]}],"
	" \"outputs\": [\"logits\"]}";

static void test_flatten_linear(void)
{
	ds_container *m = model_of(flat_graph), *p;
	ds_prune_options o = { .ratio = 0.5, .prune_first = 1, .prune_last = 1 };
	int64_t w[4] = { 4, 1, 3, 3 }, b[1] = { 4 }, fw[2] = { 2, 64 }, fb[1] = { 2 };
	json_t *report = NULL;
	int status;

	add_param(m, "conv.weight", 4, w, -0.5, 0.5);
	add_param(m, "conv.bias", 1, b, -0.5, 0.5);
	add_param(m, "fc.weight", 2, fw, -0.5, 0.5);
	add_param(m, "fc.bias", 1, fb, -0.5, 0.5);
	zero_channel(m, "conv.weight", 0);
	zero_channel(m, "conv.weight", 3);
	((float *)ds_container_get(m, "conv.bias")->data)[0] = 0;
	((float *)ds_container_get(m, "conv.bias")->data)[3] = 0;
	p = pruned(m, &o, NULL, &status);
	ok(p != NULL, "conv -> flatten -> linear prunes");
	if (p) {
		is_int(dim(p, "conv.weight", 0), 2, "conv keeps 2 filters");
		is_int(dim(p, "fc.weight", 1), 32, "fc loses 16 columns per channel");
		is_int(dim(p, "fc.weight", 0), 2, "the logits stay");
		ok(max_diff(m, p) < 1e-5, "the zero channels removed: the same outputs");
	}
	ds_container_free(p);

	/* Without --prune-last the conv feeds the last layer: nothing moves. */
	o.prune_last = 0;
	p = pruned(m, &o, &report, &status);
	ok(p && dim(p, "fc.weight", 1) == 64, "without prune_last the last layer's input stays");
	ds_container_free(p);
	json_decref(report);
	ds_container_free(m);
}

/* A reshape stops the analysis: the channels reaching it stay, the report
 * says why; a concat along the channels joins its inputs' maps. */
static const char *odd_graph =
	"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 2, 4, 4]}],"
	" \"nodes\": ["
	"  {\"op\": \"conv2d\", \"name\": \"a\", \"inputs\": [\"x\", \"a.weight\"], \"outputs\": [\"ya\"]},"
	"  {\"op\": \"conv2d\", \"name\": \"b\", \"inputs\": [\"x\", \"b.weight\"], \"outputs\": [\"yb\"]},"
	"  {\"op\": \"concat\", \"name\": \"cat\", \"inputs\": [\"ya\", \"yb\"], \"outputs\": [\"y\"], \"attrs\": {\"axis\": 1}},"
	"  {\"op\": \"conv2d\", \"name\": \"c\", \"inputs\": [\"y\", \"c.weight\"], \"outputs\": [\"yc\"]},"
	"  {\"op\": \"conv2d\", \"name\": \"d\", \"inputs\": [\"x\", \"d.weight\"], \"outputs\": [\"yd\"]},"
	"  {\"op\": \"reshape\", \"name\": \"shape\", \"inputs\": [\"yd\"], \"outputs\": [\"rd\"], \"attrs\": {\"shape\": [0, 4, 4, 4]}},"
	"  {\"op\": \"add\", \"name\": \"sum\", \"inputs\": [\"yc\", \"rd\"], \"outputs\": [\"s\"]},"
	"  {\"op\": \"global_avg_pool\", \"name\": \"pool\", \"inputs\": [\"s\"], \"outputs\": [\"p\"]},"
	"  {\"op\": \"flatten\", \"name\": \"flat\", \"inputs\": [\"p\"], \"outputs\": [\"f\"]},"
	"  {\"op\": \"linear\", \"name\": \"fc\", \"inputs\": [\"f\", \"fc.weight\"], \"outputs\": [\"logits\"]}],"
	" \"outputs\": [\"logits\"]}";

static void test_concat_reshape(void)
{
	ds_container *m = model_of(odd_graph), *p;
	ds_prune_options o = { .ratio = 0.5, .prune_first = 1 };
	int64_t wa[4] = { 2, 2, 1, 1 }, wc[4] = { 4, 4, 1, 1 }, wd[4] = { 4, 2, 1, 1 }, fw[2] = { 2, 4 };
	json_t *report = NULL, *groups;
	int status, said = 0;

	add_param(m, "a.weight", 4, wa, -0.5, 0.5);
	add_param(m, "b.weight", 4, wa, -0.5, 0.5);
	add_param(m, "c.weight", 4, wc, -0.5, 0.5);
	add_param(m, "d.weight", 4, wd, -0.5, 0.5);
	add_param(m, "fc.weight", 2, fw, -0.5, 0.5);
	zero_channel(m, "a.weight", 1);
	zero_channel(m, "b.weight", 0);
	p = pruned(m, &o, &report, &status);
	ok(p != NULL, "concat and reshape prune");
	if (p) {
		is_int(dim(p, "a.weight", 0), 1, "a keeps 1");
		is_int(dim(p, "b.weight", 0), 1, "b keeps 1");
		is_int(dim(p, "c.weight", 1), 2, "c reads the concat's 2 left");
		is_int(dim(p, "c.weight", 0), 4, "c is tied through the reshape: kept");
		is_int(dim(p, "d.weight", 0), 4, "d reaches the reshape: kept");
		ok(max_diff(m, p) < 1e-5, "the zero channels removed: the same outputs");
		groups = json_object_get(report, "notes");
		for (size_t i = 0; i < json_array_size(groups); i++)
			said |= strstr(json_string_value(json_object_get(json_array_get(groups, i), "note")), "reshape") != NULL;
		ok(said, "the report names the reshape");
	}
	ds_container_free(p);
	json_decref(report);
	ds_container_free(m);
}

int main(void)
{
	test_conv_bn_conv();
	test_residual();
	test_depthwise();
	test_flatten_linear();
	test_concat_reshape();
	return done_testing();
}
