/* test_optimize.c - ds-optimize's passes on small hand-written graphs: each
 * rewrite happens where it should and nowhere else, the rewritten model
 * computes what the original did, and the levels and --disable-pass
 * switches hold. */
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

/* conv -> batchnorm -> relu -> dropout -> flatten -> linear (+ a constant
 * bias computed from two parameters) -> logits, with a dead branch. */
static const char *graph_json =
	"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 2, 5, 5]}],"
	" \"nodes\": ["
	"  {\"op\": \"conv2d\", \"name\": \"conv\", \"inputs\": [\"x\", \"conv.weight\"], \"outputs\": [\"c\"],"
	"   \"attrs\": {\"padding\": 1}},"
	"  {\"op\": \"batchnorm\", \"name\": \"bn\", \"inputs\": [\"c\", \"bn.weight\", \"bn.bias\", \"bn.mean\", \"bn.var\"],"
	"   \"outputs\": [\"b\"], \"attrs\": {\"eps\": 0.001}},"
	"  {\"op\": \"relu\", \"name\": \"act\", \"inputs\": [\"b\"], \"outputs\": [\"r\"]},"
	"  {\"op\": \"relu\", \"name\": \"unused\", \"inputs\": [\"r\"], \"outputs\": [\"dead\"]},"
	"  {\"op\": \"dropout\", \"name\": \"drop\", \"inputs\": [\"r\"], \"outputs\": [\"d\"], \"attrs\": {\"p\": 0.5}},"
	"  {\"op\": \"flatten\", \"name\": \"flat\", \"inputs\": [\"d\"], \"outputs\": [\"f\"]},"
	"  {\"op\": \"flatten\", \"name\": \"flat2\", \"inputs\": [\"f\"], \"outputs\": [\"f2\"]},"
	"  {\"op\": \"add\", \"name\": \"bias_sum\", \"inputs\": [\"fc.b1\", \"fc.b2\"], \"outputs\": [\"fc.bias\"]},"
	"  {\"op\": \"linear\", \"name\": \"fc\", \"inputs\": [\"f2\", \"fc.weight\", \"fc.bias\"], \"outputs\": [\"z\"]},"
	"  {\"op\": \"dropout\", \"name\": \"drop_out\", \"inputs\": [\"z\"], \"outputs\": [\"logits\"]}],"
	" \"outputs\": [\"logits\"]}";

static ds_container *make_model(void)
{
	ds_container *c = ds_container_new();
	int64_t w[4] = { 3, 2, 3, 3 }, ch[1] = { 3 }, fw[2] = { 4, 75 }, fb[1] = { 4 };

	tap_rng = 0x2545f4914f6cdd1dull;     /* every copy has the same weights */

	add_param(c, "conv.weight", 4, w, -0.5, 0.5);
	add_param(c, "bn.weight", 1, ch, 0.5, 1.5);
	add_param(c, "bn.bias", 1, ch, -0.5, 0.5);
	add_param(c, "bn.mean", 1, ch, -0.3, 0.3);
	add_param(c, "bn.var", 1, ch, 0.2, 2.0);
	add_param(c, "fc.weight", 2, fw, -0.2, 0.2);
	add_param(c, "fc.b1", 1, fb, -0.1, 0.1);
	add_param(c, "fc.b2", 1, fb, -0.1, 0.1);
	ds_container_meta_set(c, "ds.graph", graph_json, NULL);
	return c;
}

static int has_node(const ds_container *c, const char *op, const char *name)
{
	ds_graph *g = NULL;
	int found = 0;

	if (ds_graph_from_model(c, &g, NULL))
		return -1;
	for (size_t i = 0; i < ds_graph_node_count(g); i++) {
		const ds_node *n = ds_graph_node(g, i);

		found |= (!op || !strcmp(ds_node_op(n), op)) && (!name || !strcmp(ds_node_name(n), name));
	}
	ds_graph_free(g);
	return found;
}

static int pass_rewrites(const json_t *report, const char *pass)
{
	size_t i;
	json_t *row;

	json_array_foreach(json_object_get(report, "passes"), i, row)
		if (!strcmp(json_string_value(json_object_get(row, "pass")), pass))
			return (int)json_integer_value(json_object_get(row, "rewrites"));
	return -1;
}

int main(void)
{
	ds_error err = { 0 };
	ds_optimize_options o = { .level = -1 };
	ds_container *orig = make_model(), *opt = make_model();
	json_t *report = NULL, *cmp = NULL;
	ds_graph *g = NULL;

	is_int(has_node(orig, NULL, "conv"), 1, "the test graph parses");
	is_int(ds_optimize_model(opt, &o, &report, &err), 0, "the default level runs: %s", err.message);
	is_int(pass_rewrites(report, "drop-dropout"), 2, "both dropouts are removed");
	is_int(has_node(opt, "dropout", NULL), 0, "no dropout is left");
	is_int(pass_rewrites(report, "drop-identity"), 1, "the flatten of a flat tensor is removed");
	is_int(has_node(opt, NULL, "flat"), 1, "the flatten that flattens stays");
	is_int(pass_rewrites(report, "constant-fold"), 1, "the sum of two parameters is folded");
	ok(ds_container_get(opt, "fc.bias") != NULL, "its result is a parameter");
	ok(!ds_container_get(opt, "fc.b1") && !ds_container_get(opt, "fc.b2"), "its inputs are dropped");
	is_int(pass_rewrites(report, "fold-batchnorm"), 1, "the batch norm is folded");
	is_int(has_node(opt, "batchnorm", NULL), 0, "no batch norm is left");
	ok(ds_container_get(opt, "conv.bias") != NULL, "the convolution got a bias");
	ok(!ds_container_get(opt, "bn.mean"), "the norm's statistics are dropped");
	is_int(pass_rewrites(report, "dead-nodes"), 1, "the unread relu is removed");
	is_int(has_node(opt, NULL, "unused"), 0, "it is gone");
	ok(ds_graph_from_model(opt, &g, &err) == 0 && !strcmp(ds_graph_output_name(g, 0), "logits"),
	   "the graph output keeps its name");
	ds_graph_free(g);
	json_decref(report);

	is_int(ds_model_compare(orig, opt, 50, 7, &cmp, &err), 0, "the two models compare: %s", err.message);
	ok(json_real_value(json_object_get(cmp, "max_rel_diff")) < 1e-5, "outputs agree within 1e-5 relative (%g)",
	   json_real_value(json_object_get(cmp, "max_rel_diff")));
	is_int((int)(json_real_value(json_object_get(cmp, "top1_agreement")) * 100), 100, "top-1 agrees everywhere");
	json_decref(cmp);
	ds_container_free(opt);

	/* Activations join the layer before them; the result computes the same. */
	{
		static const char *mlp =
			"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 6]}],"
			" \"nodes\": ["
			"  {\"op\": \"linear\", \"name\": \"fc1\", \"inputs\": [\"x\", \"w1\", \"b1\"], \"outputs\": [\"h\"]},"
			"  {\"op\": \"relu\", \"name\": \"act1\", \"inputs\": [\"h\"], \"outputs\": [\"a\"]},"
			"  {\"op\": \"linear\", \"name\": \"fc2\", \"inputs\": [\"a\", \"w2\"], \"outputs\": [\"z\"]},"
			"  {\"op\": \"silu\", \"name\": \"act2\", \"inputs\": [\"z\"], \"outputs\": [\"logits\"]}],"
			" \"outputs\": [\"logits\"]}";
		ds_container *m[2];
		int64_t w1[2] = { 5, 6 }, b1[1] = { 5 }, w2[2] = { 3, 5 };

		for (int k = 0; k < 2; k++) {
			tap_rng = 99;
			m[k] = ds_container_new();
			add_param(m[k], "w1", 2, w1, -1, 1);
			add_param(m[k], "b1", 1, b1, -1, 1);
			add_param(m[k], "w2", 2, w2, -1, 1);
			ds_container_meta_set(m[k], "ds.graph", mlp, NULL);
		}
		o.level = 2;
		is_int(ds_optimize_model(m[1], &o, &report, &err), 0, "an MLP optimizes: %s", err.message);
		is_int(pass_rewrites(report, "fuse-activation"), 2, "both activations are fused");
		is_int(has_node(m[1], "relu", NULL) + has_node(m[1], "silu", NULL), 0, "no activation node is left");
		is_int(ds_model_compare(m[0], m[1], 20, 3, &cmp, &err), 0, "the fused model runs");
		ok(json_real_value(json_object_get(cmp, "max_rel_diff")) < 1e-6, "and computes the same (%g)",
		   json_real_value(json_object_get(cmp, "max_rel_diff")));
		json_decref(cmp);
		json_decref(report);
		ds_container_free(m[0]);
		ds_container_free(m[1]);
	}

	/* A 2x2 max-pool joins the convolution before it when nothing else
	 * reads the convolution and its activation is ReLU or none; a ceil
	 * pool and a pool after a sigmoid stay. */
	{
		static const char *cnn =
			"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 2, 9, 10]}],"
			" \"nodes\": ["
			"  {\"op\": \"conv2d\", \"name\": \"c1\", \"inputs\": [\"x\", \"w1\", \"b1\"], \"outputs\": [\"h1\"],"
			"   \"attrs\": {\"padding\": 1}},"
			"  {\"op\": \"relu\", \"name\": \"r1\", \"inputs\": [\"h1\"], \"outputs\": [\"a1\"]},"
			"  {\"op\": \"max_pool\", \"name\": \"p1\", \"inputs\": [\"a1\"], \"outputs\": [\"q1\"],"
			"   \"attrs\": {\"kernel\": 2}},"
			"  {\"op\": \"conv2d\", \"name\": \"c2\", \"inputs\": [\"q1\", \"w2\"], \"outputs\": [\"h2\"],"
			"   \"attrs\": {\"padding\": [1, 1]}},"
			"  {\"op\": \"max_pool\", \"name\": \"p2\", \"inputs\": [\"h2\"], \"outputs\": [\"q2\"],"
			"   \"attrs\": {\"kernel\": [2, 2], \"stride\": [2, 2], \"padding\": 0, \"ceil_mode\": 0}},"
			"  {\"op\": \"conv2d\", \"name\": \"c3\", \"inputs\": [\"q2\", \"w3\"], \"outputs\": [\"h3\"],"
			"   \"attrs\": {\"padding\": 1}},"
			"  {\"op\": \"sigmoid\", \"name\": \"s3\", \"inputs\": [\"h3\"], \"outputs\": [\"a3\"]},"
			"  {\"op\": \"max_pool\", \"name\": \"p3\", \"inputs\": [\"a3\"], \"outputs\": [\"q3\"],"
			"   \"attrs\": {\"kernel\": 2}},"
			"  {\"op\": \"max_pool\", \"name\": \"p4\", \"inputs\": [\"q3\"], \"outputs\": [\"logits\"],"
			"   \"attrs\": {\"kernel\": 1, \"ceil_mode\": 1}}],"
			" \"outputs\": [\"logits\"]}";
		ds_container *m[2];
		int64_t w1[4] = { 4, 2, 3, 3 }, b1[1] = { 4 }, w2[4] = { 5, 4, 3, 3 }, w3[4] = { 3, 5, 3, 3 };

		for (int k = 0; k < 2; k++) {
			tap_rng = 7;
			m[k] = ds_container_new();
			add_param(m[k], "w1", 4, w1, -1, 1);
			add_param(m[k], "b1", 1, b1, -1, 1);
			add_param(m[k], "w2", 4, w2, -1, 1);
			add_param(m[k], "w3", 4, w3, -1, 1);
			ds_container_meta_set(m[k], "ds.graph", cnn, NULL);
		}
		o.level = 2;
		is_int(ds_optimize_model(m[1], &o, &report, &err), 0, "a CNN optimizes: %s", err.message);
		is_int(pass_rewrites(report, "fuse-pool"), 2, "two pools are fused");
		is_int(has_node(m[1], NULL, "p1") + has_node(m[1], NULL, "p2"), 0, "after relu and after none");
		is_int(has_node(m[1], NULL, "p3") + has_node(m[1], NULL, "p4"), 2, "not after sigmoid, nor a 1x1 pool");
		is_int(ds_model_compare(m[0], m[1], 20, 3, &cmp, &err), 0, "the fused model runs: %s", err.message);
		ok(json_real_value(json_object_get(cmp, "max_rel_diff")) < 1e-6, "and computes the same (%g)",
		   json_real_value(json_object_get(cmp, "max_rel_diff")));
		json_decref(cmp);
		json_decref(report);
		ds_container_free(m[0]);
		ds_container_free(m[1]);
	}

	/* Residual additions join the convolution or linear layer that
	 * computes one operand alone, with no activation yet, and no
	 * broadcasting: the direct, depthwise and pointwise kernels and the
	 * linear layer each add the residual, and the result is the same bit
	 * for bit. */
	{
		static const char *res =
			"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 3, 6, 6]}],"
			" \"nodes\": ["
			"  {\"op\": \"conv2d\", \"name\": \"c1\", \"inputs\": [\"x\", \"w1\", \"b1\"], \"outputs\": [\"h1\"],"
			"   \"attrs\": {\"padding\": 1}},"
			"  {\"op\": \"add\", \"name\": \"a1\", \"inputs\": [\"h1\", \"x\"], \"outputs\": [\"s1\"]},"
			"  {\"op\": \"relu\", \"name\": \"r1\", \"inputs\": [\"s1\"], \"outputs\": [\"y1\"]},"
			"  {\"op\": \"conv2d\", \"name\": \"c2\", \"inputs\": [\"y1\", \"w2\"], \"outputs\": [\"h2\"],"
			"   \"attrs\": {\"padding\": 1}},"
			"  {\"op\": \"add\", \"name\": \"a2\", \"inputs\": [\"y1\", \"h2\"], \"outputs\": [\"s2\"]},"
			"  {\"op\": \"conv2d\", \"name\": \"c3\", \"inputs\": [\"s2\", \"w3\", \"b3\"], \"outputs\": [\"h3\"],"
			"   \"attrs\": {\"activation\": \"relu\"}},"
			"  {\"op\": \"add\", \"name\": \"a3\", \"inputs\": [\"h3\", \"s2\"], \"outputs\": [\"s3\"]},"
			"  {\"op\": \"conv2d\", \"name\": \"c4\", \"inputs\": [\"s3\", \"w4\", \"b4\"], \"outputs\": [\"h4\"],"
			"   \"attrs\": {\"padding\": 1, \"groups\": 3}},"
			"  {\"op\": \"add\", \"name\": \"a4\", \"inputs\": [\"h4\", \"s3\"], \"outputs\": [\"s4\"]},"
			"  {\"op\": \"relu6\", \"name\": \"r4\", \"inputs\": [\"s4\"], \"outputs\": [\"y4\"]},"
			"  {\"op\": \"conv2d\", \"name\": \"c5\", \"inputs\": [\"y4\", \"w5\", \"b5\"], \"outputs\": [\"h5\"]},"
			"  {\"op\": \"add\", \"name\": \"a5\", \"inputs\": [\"h5\", \"y4\"], \"outputs\": [\"s5\"]},"
			"  {\"op\": \"flatten\", \"name\": \"flat\", \"inputs\": [\"s5\"], \"outputs\": [\"f\"]},"
			"  {\"op\": \"linear\", \"name\": \"fc1\", \"inputs\": [\"f\", \"w6\", \"b6\"], \"outputs\": [\"z1\"]},"
			"  {\"op\": \"add\", \"name\": \"ab\", \"inputs\": [\"z1\", \"bb\"], \"outputs\": [\"z1b\"]},"
			"  {\"op\": \"linear\", \"name\": \"fc2\", \"inputs\": [\"z1b\", \"w7\", \"b7\"], \"outputs\": [\"z2\"]},"
			"  {\"op\": \"add\", \"name\": \"al\", \"inputs\": [\"z2\", \"z1b\"], \"outputs\": [\"logits\"]}],"
			" \"outputs\": [\"logits\"]}";
		ds_container *m[2];
		int64_t w1[4] = { 3, 3, 3, 3 }, v3[1] = { 3 }, w3[4] = { 3, 3, 1, 1 }, w4[4] = { 3, 1, 3, 3 };
		int64_t w6[2] = { 8, 108 }, v8[1] = { 8 }, w7[2] = { 8, 8 };
		ds_graph *fg = NULL;
		int n_in = 0;

		for (int k = 0; k < 2; k++) {
			tap_rng = 11;
			m[k] = ds_container_new();
			add_param(m[k], "w1", 4, w1, -0.5, 0.5);
			add_param(m[k], "b1", 1, v3, -0.5, 0.5);
			add_param(m[k], "w2", 4, w1, -0.5, 0.5);
			add_param(m[k], "w3", 4, w3, -0.5, 0.5);
			add_param(m[k], "b3", 1, v3, -0.5, 0.5);
			add_param(m[k], "w4", 4, w4, -0.5, 0.5);
			add_param(m[k], "b4", 1, v3, -0.5, 0.5);
			add_param(m[k], "w5", 4, w3, -0.5, 0.5);
			add_param(m[k], "b5", 1, v3, -0.5, 0.5);
			add_param(m[k], "w6", 2, w6, -0.1, 0.1);
			add_param(m[k], "b6", 1, v8, -0.1, 0.1);
			add_param(m[k], "bb", 1, v8, -0.1, 0.1);
			add_param(m[k], "w7", 2, w7, -0.5, 0.5);
			add_param(m[k], "b7", 1, v8, -0.5, 0.5);
			ds_container_meta_set(m[k], "ds.graph", res, NULL);
		}
		is_int(has_node(m[0], NULL, "a1"), 1, "the residual graph parses");
		o.level = 2;
		/* The blocked layout sums in another order: not bit for bit. */
		o.disable = "layout";
		is_int(ds_optimize_model(m[1], &o, &report, &err), 0, "it optimizes: %s", err.message);
		o.disable = NULL;
		is_int(pass_rewrites(report, "fuse-add"), 5, "five additions are fused");
		is_int(has_node(m[1], "add", "a3") + has_node(m[1], "add", "ab"), 2,
		       "not after a fused activation, nor a broadcast one");
		is_int(has_node(m[1], "add", NULL), 1, "the others are gone");
		is_int(pass_rewrites(report, "fuse-activation"), 2, "the activations after them are fused too");
		ok(ds_container_get(m[1], "c2.bias") != NULL, "a convolution without a bias gets a zero one");
		if (!ds_graph_from_model(m[1], &fg, &err)) {
			for (size_t i = 0; i < ds_graph_node_count(fg); i++)
				n_in += (int)ds_node_input_count(ds_graph_node(fg, i)) == 4;
			ds_graph_free(fg);
		}
		is_int(n_in, 5, "five layers read a residual");
		is_int(ds_model_compare(m[0], m[1], 40, 5, &cmp, &err), 0, "the fused model runs: %s", err.message);
		ok(json_real_value(json_object_get(cmp, "max_abs_diff")) == 0.0, "and computes the same bit for bit (%g)",
		   json_real_value(json_object_get(cmp, "max_abs_diff")));
		json_decref(cmp);
		json_decref(report);
		ds_container_free(m[0]);
		ds_container_free(m[1]);
	}

	/* A residual must be shaped like the output. */
	{
		static const char *bad =
			"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 3, 6, 6]}],"
			" \"nodes\": ["
			"  {\"op\": \"conv2d\", \"name\": \"c\", \"inputs\": [\"x\", \"w\", \"b\", \"x\"], \"outputs\": [\"y\"]}],"
			" \"outputs\": [\"y\"]}";
		ds_container *m = ds_container_new();
		int64_t w[4] = { 4, 3, 1, 1 }, b[1] = { 4 };

		add_param(m, "w", 4, w, -1, 1);
		add_param(m, "b", 1, b, -1, 1);
		ds_container_meta_set(m, "ds.graph", bad, NULL);
		ds_error_clear(&err);
		is_int(ds_graph_from_model(m, &g, &err), DS_ERR_DATA, "a residual of another shape is bad data");
		ok(strstr(err.message, "residual 'x'") != NULL, "naming it: %s", err.message);
		ds_error_clear(&err);
		ds_container_free(m);
	}

	/* A layer that already adds a residual (a model optimized before)
	 * takes no batch norm and no pool after it: neither commutes with the
	 * addition. */
	{
		static const char *again =
			"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 3, 6, 6]}],"
			" \"nodes\": ["
			"  {\"op\": \"conv2d\", \"name\": \"c1\", \"inputs\": [\"x\", \"w\", \"b\", \"x\"], \"outputs\": [\"h1\"],"
			"   \"attrs\": {\"padding\": 1}},"
			"  {\"op\": \"batchnorm\", \"name\": \"bn\", \"inputs\": [\"h1\", \"g\", \"be\", \"mu\", \"var\"],"
			"   \"outputs\": [\"n1\"]},"
			"  {\"op\": \"conv2d\", \"name\": \"c2\", \"inputs\": [\"n1\", \"w\", \"b\", \"n1\"], \"outputs\": [\"h2\"],"
			"   \"attrs\": {\"padding\": 1}},"
			"  {\"op\": \"max_pool\", \"name\": \"pool\", \"inputs\": [\"h2\"], \"outputs\": [\"logits\"],"
			"   \"attrs\": {\"kernel\": 2}}],"
			" \"outputs\": [\"logits\"]}";
		ds_container *m[2];
		int64_t w[4] = { 3, 3, 3, 3 }, v3[1] = { 3 };

		for (int k = 0; k < 2; k++) {
			tap_rng = 13;
			m[k] = ds_container_new();
			add_param(m[k], "w", 4, w, -0.5, 0.5);
			add_param(m[k], "b", 1, v3, -0.5, 0.5);
			add_param(m[k], "g", 1, v3, 0.5, 1.5);
			add_param(m[k], "be", 1, v3, -0.5, 0.5);
			add_param(m[k], "mu", 1, v3, -0.5, 0.5);
			add_param(m[k], "var", 1, v3, 0.5, 1.5);
			ds_container_meta_set(m[k], "ds.graph", again, NULL);
		}
		o.level = 2;
		is_int(ds_optimize_model(m[1], &o, &report, &err), 0, "a model with residuals optimizes again: %s",
		       err.message);
		is_int(pass_rewrites(report, "fold-batchnorm") + pass_rewrites(report, "fuse-pool"), 0,
		       "no batch norm or pool joins a layer with a residual");
		is_int(ds_model_compare(m[0], m[1], 10, 3, &cmp, &err), 0, "it runs: %s", err.message);
		ok(json_real_value(json_object_get(cmp, "max_abs_diff")) == 0.0, "unchanged (%g)",
		   json_real_value(json_object_get(cmp, "max_abs_diff")));
		json_decref(cmp);
		json_decref(report);
		ds_container_free(m[0]);
		ds_container_free(m[1]);
	}

	/* A 1x1 convolution of a globally pooled tensor, flattened, is a
	 * linear layer (its activation goes with it). */
	{
		static const char *head =
			"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 8, 4, 4]}],"
			" \"nodes\": ["
			"  {\"op\": \"global_avg_pool\", \"name\": \"gap\", \"inputs\": [\"x\"], \"outputs\": [\"p\"]},"
			"  {\"op\": \"conv2d\", \"name\": \"head\", \"inputs\": [\"p\", \"w\", \"b\"], \"outputs\": [\"h\"]},"
			"  {\"op\": \"hardswish\", \"name\": \"act\", \"inputs\": [\"h\"], \"outputs\": [\"a\"]},"
			"  {\"op\": \"flatten\", \"name\": \"flat\", \"inputs\": [\"a\"], \"outputs\": [\"logits\"],"
			"   \"attrs\": {\"axis\": 1}}],"
			" \"outputs\": [\"logits\"]}";
		ds_container *m[2];
		int64_t w[4] = { 5, 8, 1, 1 }, b[1] = { 5 };

		for (int k = 0; k < 2; k++) {
			tap_rng = 5;
			m[k] = ds_container_new();
			add_param(m[k], "w", 4, w, -1, 1);
			add_param(m[k], "b", 1, b, -1, 1);
			ds_container_meta_set(m[k], "ds.graph", head, NULL);
		}
		o.level = 2;
		is_int(ds_optimize_model(m[1], &o, &report, &err), 0, "a pooled head optimizes: %s", err.message);
		is_int(pass_rewrites(report, "gap-linear"), 1, "its 1x1 convolution is rewritten");
		is_int(has_node(m[1], "linear", "head"), 1, "as a linear layer");
		is_int(has_node(m[1], "conv2d", NULL) + has_node(m[1], "hardswish", NULL), 0,
		       "no convolution or activation node is left");
		ok(ds_container_get(m[1], "w") && ds_container_get(m[1], "w")->ndim == 2, "its weight is [O, C]");
		is_int(ds_model_compare(m[0], m[1], 20, 3, &cmp, &err), 0, "the rewritten head runs: %s", err.message);
		ok(json_real_value(json_object_get(cmp, "max_rel_diff")) < 1e-6, "and computes the same (%g)",
		   json_real_value(json_object_get(cmp, "max_rel_diff")));
		json_decref(cmp);
		json_decref(report);
		ds_container_free(m[0]);
		ds_container_free(m[1]);
	}

	/* Levels and switches. */
	opt = make_model();
	o.level = 0;
	is_int(ds_optimize_model(opt, &o, &report, &err), 0, "-O0 runs");
	is_int(has_node(opt, "batchnorm", NULL) + has_node(opt, "dropout", NULL), 2, "-O0 changes nothing");
	json_decref(report);
	o.level = 1;
	is_int(ds_optimize_model(opt, &o, &report, &err), 0, "-O1 runs");
	is_int(has_node(opt, "batchnorm", NULL), 1, "-O1 keeps the batch norm");
	is_int(has_node(opt, "dropout", NULL), 0, "-O1 drops dropout");
	json_decref(report);
	ds_container_free(opt);
	opt = make_model();
	o.level = 2;
	o.disable = "fold-batchnorm,dead-nodes";
	is_int(ds_optimize_model(opt, &o, &report, &err), 0, "-O2 with two passes disabled runs");
	is_int(has_node(opt, "batchnorm", NULL) + has_node(opt, NULL, "unused"), 2, "the disabled passes did not run");
	json_decref(report);
	o.disable = "fold-batchnorm,nope";
	ds_error_clear(&err);
	is_int(ds_optimize_model(opt, &o, &report, &err), DS_ERR_USAGE, "an unknown pass is a usage error");
	ok(strstr(err.message, "'nope'") != NULL, "naming it: %s", err.message);
	o.disable = NULL;
	o.level = 4;
	is_int(ds_optimize_model(opt, &o, &report, &err), DS_ERR_USAGE, "-O4 is a usage error");
	ds_container_free(opt);
	ds_container_free(orig);
	return done_testing();
}
