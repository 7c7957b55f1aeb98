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

static uint64_t rng = 0x2545f4914f6cdd1dull;

static double uniform(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) / 9007199254740992.0;
}

static void add_param(ds_container *c, const char *name, int ndim, const int64_t *shape, double lo, double hi)
{
	ds_tensor *t = ds_tensor_new(DS_F32, ndim, shape, DS_CPU, NULL);

	for (int64_t i = 0; i < ds_tensor_numel(t); i++)
		((float *)t->data)[i] = (float)(lo + (hi - lo) * uniform());
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

	rng = 0x2545f4914f6cdd1dull;     /* every copy has the same weights */

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
			rng = 99;
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
			rng = 7;
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
