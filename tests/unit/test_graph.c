/* test_graph.c - the graph JSON, shape inference, FLOPs and the op registry.
 *
 * Graphs are written with ' for " to keep them readable; q() swaps them. */
#include "config.h"
#include "ds.h"
#include "tap.h"

#include <stdint.h>

static char buf[1 << 16];
static unsigned char covered[1024];   /* registry index -> seen in a parsed graph */

static const char *q(const char *text)
{
	size_t i;

	for (i = 0; text[i] && i + 1 < sizeof buf; i++)
		buf[i] = text[i] == '\'' ? '"' : text[i];
	buf[i] = '\0';
	return buf;
}

static void cover(const ds_graph *g)
{
	for (size_t i = 0; i < ds_graph_node_count(g); i++)
		for (size_t k = 0; k < ds_op_count() && k < sizeof covered; k++)
			if (strcmp(ds_op_at(k)->name, ds_node_op(ds_graph_node(g, i))) == 0)
				covered[k] = 1;
}

/* Parse and expect success; reports the error otherwise. */
static ds_graph *parse_ok(const char *text, const ds_container *params, const char *what)
{
	ds_error err = { 0 };
	ds_graph *g = NULL;
	int rc = ds_graph_parse(q(text), params, &g, &err);

	if (!ok(rc == 0 && g, "%s: parses", what))
		diag("status %d, %s: %s", rc, err.code, err.message);
	if (g)
		cover(g);
	return g;
}

static void parse_fails(const char *text, const ds_container *params, const char *code,
			const char *message, const char *what)
{
	ds_error err = { 0 };
	ds_graph *g = (ds_graph *)1;
	int rc = ds_graph_parse(q(text), params, &g, &err);

	is_int(rc, DS_ERR_DATA, "%s: status 3", what);
	ok(g == NULL, "%s: no graph", what);
	is_str(err.code, code, "%s: code", what);
	if (!ok(strstr(err.message, message) != NULL, "%s: message names it", what))
		diag("message: %s (want '%s')", err.message, message);
	if (rc == 0)
		ds_graph_free(g);
}

static void add_param(ds_container *c, const char *name, ds_dtype dtype, int ndim,
		      const int64_t *shape)
{
	ds_error err = { 0 };
	ds_tensor *t = ds_tensor_new(dtype, ndim, shape, DS_CPU, &err);

	if (!t || ds_container_add(c, name, t, &err) != 0)
		diag("cannot add %s: %s", name, err.message);
	ds_tensor_unref(t);
}

#define P(c, name, ...) \
	add_param(c, name, DS_F32, (int)(sizeof((int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t)), \
		  (int64_t[]){ __VA_ARGS__ })

/* The shape of value as "[1, 8, 28, 28]". */
static const char *shape_of(const ds_graph *g, const char *value)
{
	static char text[256];
	const ds_shape *s = ds_graph_shape(g, value);
	size_t used = 0;

	if (!s)
		return "(none)";
	used += (size_t)snprintf(text, sizeof text, "[");
	for (int i = 0; i < s->ndim; i++)
		used += (size_t)snprintf(text + used, sizeof text - used, "%s%lld", i ? ", " : "",
					 (long long)s->dim[i]);
	snprintf(text + used, sizeof text - used, "]");
	return text;
}

/* --------------------------------------------------------------- registry */

static void test_registry(void)
{
	static const char *const expected[] = {
		"conv2d", "linear", "batchnorm", "layernorm", "relu", "relu6", "leaky_relu", "gelu",
		"sigmoid", "tanh", "silu", "hardswish", "max_pool", "avg_pool", "global_avg_pool",
		"add", "mul", "concat", "flatten", "reshape", "dropout", "softmax", "cross_entropy",
		"distill", "embedding", "embedding_bag",
	};
	int sorted = 1, found = 1;

	ok(ds_op_count() >= sizeof expected / sizeof expected[0], "registry: %zu ops", ds_op_count());
	for (size_t i = 1; i < ds_op_count(); i++)
		sorted &= strcmp(ds_op_at(i - 1)->name, ds_op_at(i)->name) < 0;
	ok(sorted, "registry: sorted by name, no duplicates");
	for (size_t i = 0; i < ds_op_count(); i++)
		found &= ds_op_find(ds_op_at(i)->name) == ds_op_at(i);
	ok(found, "registry: every op found by name");
	for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
		ok(ds_op_find(expected[i]) != NULL, "registry: %s", expected[i]);
	ok(ds_op_find("conv3d") == NULL && ds_op_find("") == NULL && ds_op_find(NULL) == NULL,
	   "registry: unknown names are not found");
	ok(ds_op_at(ds_op_count()) == NULL, "registry: ds_op_at past the end is NULL");
	for (size_t i = 0; i < ds_op_count(); i++) {
		const ds_op *op = ds_op_at(i);

		if (!op->infer || !op->attrs || op->num_outputs < 1 || op->min_inputs < 0 ||
		    (op->max_inputs >= 0 && op->max_inputs < op->min_inputs))
			ok(0, "registry: %s is well-formed", op->name);
	}
}

/* -------------------------------------------------------------------- CNN */

static const char cnn[] =
	"{'inputs':[{'name':'x','dtype':'F32','shape':[-1,1,28,28]}],"
	"'nodes':["
	"{'op':'conv2d','name':'conv1','inputs':['x','conv1.weight','conv1.bias'],"
	" 'outputs':['conv1.out'],'attrs':{'stride':[1,1],'padding':[1,1]}},"
	"{'op':'relu','name':'relu1','inputs':['conv1.out'],'outputs':['relu1.out']},"
	"{'op':'max_pool','name':'pool1','inputs':['relu1.out'],'outputs':['pool1.out'],"
	" 'attrs':{'kernel':2}},"
	"{'op':'flatten','name':'flat','inputs':['pool1.out'],'outputs':['flat.out']},"
	"{'op':'linear','name':'fc1','inputs':['flat.out','fc1.weight','fc1.bias'],"
	" 'outputs':['logits']}],"
	"'outputs':['logits']}";

static ds_container *cnn_params(void)
{
	ds_container *c = ds_container_new();

	P(c, "conv1.weight", 8, 1, 3, 3);
	P(c, "conv1.bias", 8);
	P(c, "fc1.weight", 10, 1568);
	P(c, "fc1.bias", 10);
	P(c, "unused", 1000);
	return c;
}

static void test_cnn(void)
{
	ds_container *c = cnn_params();
	ds_graph *g = parse_ok(cnn, c, "cnn");
	ds_error err = { 0 };
	int64_t v[2] = { 0, 0 };
	const ds_node *conv;

	if (!g)
		goto out;
	is_int(ds_graph_node_count(g), 5, "cnn: 5 nodes");
	is_str(ds_node_name(ds_graph_node(g, 0)), "conv1", "cnn: file order kept");
	is_str(ds_node_name(ds_graph_node(g, 4)), "fc1", "cnn: fc1 last");
	is_int(ds_graph_input_count(g), 1, "cnn: one input");
	is_str(ds_graph_input_name(g, 0), "x", "cnn: input x");
	is_int(ds_graph_output_count(g), 1, "cnn: one output");
	is_str(ds_graph_output_name(g, 0), "logits", "cnn: output logits");
	is_str(shape_of(g, "x"), "[1, 1, 28, 28]", "cnn: x at batch 1");
	is_str(shape_of(g, "conv1.out"), "[1, 8, 28, 28]", "cnn: conv1 keeps 28x28 with padding 1");
	is_str(shape_of(g, "relu1.out"), "[1, 8, 28, 28]", "cnn: relu");
	is_str(shape_of(g, "pool1.out"), "[1, 8, 14, 14]", "cnn: pool halves");
	is_str(shape_of(g, "flat.out"), "[1, 1568]", "cnn: flatten");
	is_str(shape_of(g, "logits"), "[1, 10]", "cnn: logits");
	is_str(shape_of(g, "fc1.weight"), "[10, 1568]", "cnn: parameter shapes known");
	ok(ds_graph_shape(g, "nope") == NULL, "cnn: unknown value has no shape");
	ok(ds_graph_shape(g, "unused") == NULL, "cnn: unused container tensor is no value");
	is_int(ds_graph_shape(g, "logits")->dtype, DS_F32, "cnn: logits F32");
	is_int(ds_graph_param_count(g), 72 + 8 + 15680 + 10, "cnn: parameters (unused not counted)");
	/* conv: 8*28*28 outputs x 9 taps x 2 + 6272 bias = 119168; relu 6272;
	 * pool 1568 x 4 = 6272; flatten 0; fc: 2*1568*10 + 10 = 31370. */
	is_int(ds_graph_flops(g), 119168 + 6272 + 6272 + 31370, "cnn: flops by hand");

	conv = ds_graph_node(g, 0);
	is_str(ds_node_op(conv), "conv2d", "node: op");
	is_int(ds_node_input_count(conv), 3, "node: input count");
	is_str(ds_node_input(conv, 1), "conv1.weight", "node: input name");
	ok(ds_node_input(conv, 3) == NULL, "node: input past the end is NULL");
	is_int(ds_node_output_count(conv), 1, "node: output count");
	is_str(ds_node_output(conv, 0), "conv1.out", "node: output name");
	ok(ds_node_attrs(conv) != NULL && ds_node_attrs(ds_graph_node(g, 1)) == NULL, "node: attrs");
	is_int(ds_node_attr_ints(conv, "stride", v, 2), 2, "attr_ints: list length");
	ok(v[0] == 1 && v[1] == 1, "attr_ints: values");
	is_int(ds_node_attr_ints(conv, "dilation", v, 2), 0, "attr_ints: absent is 0");
	is_int(ds_node_attr_ints(ds_graph_node(g, 2), "kernel", v, 2), 2, "attr_ints: scalar fills");
	ok(v[0] == 2 && v[1] == 2, "attr_ints: scalar in every slot");
	is_int(ds_node_attr_int(ds_graph_node(g, 2), "kernel", 7), 2, "attr_int: present");
	is_int(ds_node_attr_int(conv, "groups", 1), 1, "attr_int: fallback");
	is_near(ds_node_attr_float(conv, "eps", 0.5), 0.5, 0, "attr_float: fallback");

	is_int(ds_graph_infer(g, 64, &err), 0, "cnn: infer at batch 64");
	is_str(shape_of(g, "x"), "[64, 1, 28, 28]", "cnn: x at batch 64");
	is_str(shape_of(g, "conv1.out"), "[64, 8, 28, 28]", "cnn: conv1 at batch 64");
	is_str(shape_of(g, "flat.out"), "[64, 1568]", "cnn: flatten at batch 64");
	is_str(shape_of(g, "logits"), "[64, 10]", "cnn: logits at batch 64");
	is_str(shape_of(g, "fc1.weight"), "[10, 1568]", "cnn: parameters keep their shape");
	is_int(ds_graph_flops(g), 119168 + 6272 + 6272 + 31370, "cnn: flops stay per item");
	is_int(ds_graph_infer(g, 0, &err), DS_ERR_USAGE, "cnn: batch 0 refused");
	ds_graph_free(g);
out:
	ds_container_free(c);
}

static void test_from_model(void)
{
	ds_container *c = cnn_params();
	ds_error err = { 0 };
	ds_graph *g = NULL;

	is_int(ds_graph_from_model(c, &g, &err), DS_ERR_DATA, "from_model: no ds.graph is status 3");
	ds_error_clear(&err);
	ds_container_meta_set(c, "ds.graph", q(cnn), &err);
	is_int(ds_graph_from_model(c, &g, &err), 0, "from_model: parses ds.graph");
	if (g)
		is_str(shape_of(g, "logits"), "[1, 10]", "from_model: shapes");
	ds_graph_free(g);
	ds_container_free(c);
}

/* ------------------------------------------------------------ shapes */

static void expect_shape(const char *text, const ds_container *params, const char *value,
			 const char *shape, const char *what)
{
	ds_graph *g = parse_ok(text, params, what);

	if (g)
		is_str(shape_of(g, value), shape, "%s: shape of %s", what, value);
	ds_graph_free(g);
}

static void test_conv(void)
{
	ds_container *c = ds_container_new();
	ds_graph *g;

	P(c, "dw", 16, 1, 3, 3);
	P(c, "gw", 32, 4, 1, 1);
	P(c, "w5", 4, 3, 5, 5);
	g = parse_ok("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,16,10,10]}],"
		     "'nodes':[{'op':'conv2d','name':'dw','inputs':['x','dw'],'outputs':['y'],"
		     "'attrs':{'stride':2,'padding':1,'groups':16}}],'outputs':['y']}", c, "depthwise");
	if (g) {
		is_str(shape_of(g, "y"), "[1, 16, 5, 5]", "depthwise: shape");
		is_int(ds_graph_flops(g), 2 * 16 * 25 * 9, "depthwise: flops (no bias)");
		is_int(ds_graph_param_count(g), 144, "depthwise: parameters");
		ds_graph_free(g);
	}
	expect_shape("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,16,10,10]}],"
		     "'nodes':[{'op':'conv2d','name':'g','inputs':['x','gw'],'outputs':['y'],"
		     "'attrs':{'groups':4}}],'outputs':['y']}", c, "y", "[1, 32, 10, 10]", "grouped conv");
	expect_shape("{'inputs':[{'name':'x','dtype':'F32','shape':[2,3,12,11]}],"
		     "'nodes':[{'op':'conv2d','name':'d','inputs':['x','w5'],'outputs':['y'],"
		     "'attrs':{'dilation':[2,1],'stride':[1,2],'padding':[0,2]}}],'outputs':['y']}",
		     c, "y", "[2, 4, 4, 6]", "dilated conv");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,3,10,10]}],"
		    "'nodes':[{'op':'conv2d','name':'dw','inputs':['x','dw'],'outputs':['y'],"
		    "'attrs':{'groups':16}}],'outputs':['y']}", c, "shape_mismatch",
		    "graph: node 'dw': groups 16 does not divide the 3 input channels of 'x'",
		    "conv groups mismatch");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,3,10,10]}],"
		    "'nodes':[{'op':'conv2d','name':'c','inputs':['x','dw'],'outputs':['y']}],"
		    "'outputs':['y']}", c, "shape_mismatch",
		    "graph: node 'c': weight 'dw' [16, 1, 3, 3] takes 1 channels per group, input 'x' [1, 3, 10, 10] has 3",
		    "conv channel mismatch");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,4,2,2]}],"
		    "'nodes':[{'op':'conv2d','name':'c','inputs':['x','w5'],'outputs':['y']}],"
		    "'outputs':['y']}", c, "shape_mismatch", "graph: node 'c': ", "conv window too big");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,16,10,10]}],"
		    "'nodes':[{'op':'conv2d','name':'c','inputs':['x','dw','gw'],'outputs':['y'],"
		    "'attrs':{'groups':16}}],'outputs':['y']}", c, "shape_mismatch",
		    "input 'gw': expected [16]", "conv bias mismatch");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,10,10]}],"
		    "'nodes':[{'op':'conv2d','name':'c','inputs':['x','dw'],'outputs':['y']}],"
		    "'outputs':['y']}", c, "shape_mismatch", "input 'x': expected 4 dims", "conv on 3-d");
	ds_container_free(c);
}

static void test_linear_norm(void)
{
	ds_container *c = ds_container_new();

	P(c, "w", 5, 7);
	P(c, "b", 5);
	P(c, "g8", 8);
	P(c, "g32", 32);
	P(c, "g2", 10, 32);
	expect_shape("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,3,7]}],"
		     "'nodes':[{'op':'linear','name':'fc','inputs':['x','w','b'],'outputs':['y']}],"
		     "'outputs':['y']}", c, "y", "[1, 3, 5]", "linear on 3-d");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,6]}],"
		    "'nodes':[{'op':'linear','name':'fc1','inputs':['x','w','b'],'outputs':['y']}],"
		    "'outputs':['y']}", c, "shape_mismatch",
		    "graph: node 'fc1': weight 'w' [5, 7] takes 7 input features, input 'x' [1, 6] has 6",
		    "linear in-features mismatch");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,7]}],"
		    "'nodes':[{'op':'linear','name':'fc1','inputs':['x','w','w'],'outputs':['y']}],"
		    "'outputs':['y']}", c, "shape_mismatch", "input 'w': expected [5]",
		    "linear bias mismatch");
	expect_shape("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,8,4,4]}],"
		     "'nodes':[{'op':'batchnorm','name':'bn','inputs':['x','g8','g8','g8','g8'],"
		     "'outputs':['y'],'attrs':{'eps':1e-5,'momentum':0.1}}],'outputs':['y']}",
		     c, "y", "[1, 8, 4, 4]", "batchnorm");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,8,4,4]}],"
		    "'nodes':[{'op':'batchnorm','name':'bn','inputs':['x','g8','g8','g32','g8'],"
		    "'outputs':['y']}],'outputs':['y']}", c, "shape_mismatch",
		    "graph: node 'bn': input 'g32': expected [8]", "batchnorm channel mismatch");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,8,4,4]}],"
		    "'nodes':[{'op':'batchnorm','name':'bn','inputs':['x','g8','g8','g8','g8'],"
		    "'outputs':['y'],'attrs':{'eps':-1}}],'outputs':['y']}", c, "bad_attr",
		    "attribute 'eps'", "batchnorm negative eps");
	expect_shape("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,10,32]}],"
		     "'nodes':[{'op':'layernorm','name':'ln','inputs':['x','g32','g32'],"
		     "'outputs':['y'],'attrs':{'eps':1e-6,'axis':-1}}],'outputs':['y']}",
		     c, "y", "[1, 10, 32]", "layernorm");
	expect_shape("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,10,32]}],"
		     "'nodes':[{'op':'layernorm','name':'ln','inputs':['x','g2','g2'],"
		     "'outputs':['y'],'attrs':{'axis':1}}],'outputs':['y']}",
		     c, "y", "[1, 10, 32]", "layernorm over two dims");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,10,32]}],"
		    "'nodes':[{'op':'layernorm','name':'ln','inputs':['x','g8','g8'],"
		    "'outputs':['y']}],'outputs':['y']}", c, "shape_mismatch",
		    "input 'g8' [8] does not match", "layernorm mismatch");
	ds_container_free(c);
}

static void test_elementwise(void)
{
	static const char *const ops[] = {
		"relu", "relu6", "leaky_relu", "gelu", "sigmoid", "tanh", "silu", "hardswish",
		"dropout", "softmax",
	};
	static const int64_t cost[] = { 1, 2, 2, 8, 4, 5, 5, 4, 0, 5 };
	char text[512];

	for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
		ds_graph *g;

		snprintf(text, sizeof text,
			 "{'inputs':[{'name':'x','dtype':'F32','shape':[-1,3,5]}],"
			 "'nodes':[{'op':'%s','name':'a','inputs':['x'],'outputs':['y']}],"
			 "'outputs':['y']}", ops[i]);
		g = parse_ok(text, NULL, ops[i]);
		if (!g)
			continue;
		is_str(shape_of(g, "y"), "[1, 3, 5]", "%s: same shape", ops[i]);
		is_int(ds_graph_flops(g), 15 * cost[i], "%s: flops", ops[i]);
		ds_graph_free(g);
	}
	expect_shape("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,3]}],"
		     "'nodes':[{'op':'leaky_relu','name':'a','inputs':['x'],'outputs':['y'],"
		     "'attrs':{'alpha':0.2}},"
		     "{'op':'dropout','name':'d','inputs':['y'],'outputs':['z'],'attrs':{'p':0.1}},"
		     "{'op':'gelu','name':'g','inputs':['z'],'outputs':['w'],'attrs':{'approximate':'tanh'}},"
		     "{'op':'softmax','name':'s','inputs':['w'],'outputs':['p'],'attrs':{'axis':1}}],"
		     "'outputs':['p']}", NULL, "p", "[1, 3]", "activation attrs");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,3]}],"
		    "'nodes':[{'op':'dropout','name':'d','inputs':['x'],'outputs':['y'],'attrs':{'p':1}}],"
		    "'outputs':['y']}", NULL, "bad_attr", "graph: node 'd': attribute 'p'", "dropout p 1");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,3]}],"
		    "'nodes':[{'op':'softmax','name':'s','inputs':['x'],'outputs':['y'],'attrs':{'axis':2}}],"
		    "'outputs':['y']}", NULL, "bad_attr", "attribute 'axis'", "softmax axis out of range");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,3]}],"
		    "'nodes':[{'op':'gelu','name':'g','inputs':['x'],'outputs':['y'],"
		    "'attrs':{'approximate':'erf'}}],'outputs':['y']}", NULL, "bad_attr",
		    "attribute 'approximate'", "gelu bad mode");
}

static void test_pool(void)
{
	ds_graph *g;

	expect_shape("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,2,5,5]}],"
		     "'nodes':[{'op':'avg_pool','name':'p','inputs':['x'],'outputs':['y'],"
		     "'attrs':{'kernel':2,'stride':2,'ceil_mode':true}}],'outputs':['y']}",
		     NULL, "y", "[1, 2, 3, 3]", "avg_pool ceil_mode");
	expect_shape("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,2,5,5]}],"
		     "'nodes':[{'op':'avg_pool','name':'p','inputs':['x'],'outputs':['y'],"
		     "'attrs':{'kernel':2,'stride':2}}],'outputs':['y']}",
		     NULL, "y", "[1, 2, 2, 2]", "avg_pool floor");
	expect_shape("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,2,6,6]}],"
		     "'nodes':[{'op':'max_pool','name':'p','inputs':['x'],'outputs':['y'],"
		     "'attrs':{'kernel':3,'stride':2,'padding':1,'ceil_mode':1}}],'outputs':['y']}",
		     NULL, "y", "[1, 2, 4, 4]", "max_pool ceil_mode with padding");
	expect_shape("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,2,5,5]}],"
		     "'nodes':[{'op':'max_pool','name':'p','inputs':['x'],'outputs':['y'],"
		     "'attrs':{'kernel':2,'stride':2,'padding':1,'ceil_mode':true}}],'outputs':['y']}",
		     NULL, "y", "[1, 2, 3, 3]", "max_pool ceil_mode drops a window in the padding");
	expect_shape("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,2,7,7]}],"
		     "'nodes':[{'op':'max_pool','name':'p','inputs':['x'],'outputs':['y'],"
		     "'attrs':{'kernel':[3,1],'stride':[2,1],'padding':[1,0]}}],'outputs':['y']}",
		     NULL, "y", "[1, 2, 4, 7]", "max_pool pairs");
	g = parse_ok("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,64,7,7]}],"
		     "'nodes':[{'op':'global_avg_pool','name':'gap','inputs':['x'],'outputs':['y']}],"
		     "'outputs':['y']}", NULL, "global_avg_pool");
	if (g) {
		is_str(shape_of(g, "y"), "[1, 64, 1, 1]", "global_avg_pool: shape");
		is_int(ds_graph_flops(g), 64 * 49, "global_avg_pool: flops");
		ds_graph_free(g);
	}
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,2,6,6]}],"
		    "'nodes':[{'op':'max_pool','name':'p','inputs':['x'],'outputs':['y']}],"
		    "'outputs':['y']}", NULL, "bad_attr", "graph: node 'p': attribute 'kernel': required",
		    "max_pool without kernel");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,2,6,6]}],"
		    "'nodes':[{'op':'max_pool','name':'p','inputs':['x'],'outputs':['y'],"
		    "'attrs':{'kernel':2,'padding':2}}],'outputs':['y']}", NULL, "bad_attr",
		    "attribute 'padding'", "max_pool padding over half the kernel");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,2,6,6]}],"
		    "'nodes':[{'op':'max_pool','name':'p','inputs':['x'],'outputs':['y'],"
		    "'attrs':{'kernel':2,'count_include_pad':true}}],'outputs':['y']}", NULL, "bad_attr",
		    "op 'max_pool' has no attribute 'count_include_pad'", "max_pool avg-only attr");
}

static void test_broadcast_concat(void)
{
	static const char add[] =
		"{'inputs':[{'name':'a','dtype':'F32','shape':[2,3,4]},{'name':'b','dtype':'F32','shape':[3,1]},"
		"{'name':'c','dtype':'F32','shape':[4]},{'name':'d','dtype':'F32','shape':[2,1,1]}],"
		"'nodes':[{'op':'add','name':'add','inputs':['a','b'],'outputs':['ab']},"
		"{'op':'mul','name':'mul','inputs':['c','d'],'outputs':['cd']},"
		"{'op':'add','name':'both','inputs':['ab','cd'],'outputs':['y']}],"
		"'outputs':['y']}";
	ds_graph *g = parse_ok(add, NULL, "broadcast");

	if (g) {
		is_str(shape_of(g, "ab"), "[2, 3, 4]", "broadcast: add [2,3,4] + [3,1]");
		is_str(shape_of(g, "cd"), "[2, 1, 4]", "broadcast: mul [4] * [2,1,1]");
		is_str(shape_of(g, "y"), "[2, 3, 4]", "broadcast: [2,3,4] + [2,1,4]");
		is_int(ds_graph_flops(g), 24 + 8 + 24, "broadcast: one flop per output");
		ds_graph_free(g);
	}
	parse_fails("{'inputs':[{'name':'a','dtype':'F32','shape':[2,3]},{'name':'b','dtype':'F32','shape':[4]}],"
		    "'nodes':[{'op':'add','name':'s','inputs':['a','b'],'outputs':['y']}],"
		    "'outputs':['y']}", NULL, "shape_mismatch",
		    "graph: node 's': inputs 'a' [2, 3] and 'b' [4] do not broadcast", "broadcast mismatch");
	parse_fails("{'inputs':[{'name':'a','dtype':'F32','shape':[2]},{'name':'b','dtype':'I32','shape':[2]}],"
		    "'nodes':[{'op':'mul','name':'m','inputs':['a','b'],'outputs':['y']}],"
		    "'outputs':['y']}", NULL, "shape_mismatch", "differ in dtype", "mul dtype mismatch");
	expect_shape("{'inputs':[{'name':'a','dtype':'F32','shape':[-1,3,4,4]},"
		     "{'name':'b','dtype':'F32','shape':[-1,5,4,4]}],"
		     "'nodes':[{'op':'concat','name':'cat','inputs':['a','b'],'outputs':['y']}],"
		     "'outputs':['y']}", NULL, "y", "[1, 8, 4, 4]", "concat default axis 1");
	expect_shape("{'inputs':[{'name':'a','dtype':'F32','shape':[2,3]},{'name':'b','dtype':'F32','shape':[2,1]},"
		     "{'name':'c','dtype':'F32','shape':[2,4]}],"
		     "'nodes':[{'op':'concat','name':'cat','inputs':['a','b','c'],'outputs':['y'],"
		     "'attrs':{'axis':-1}}],'outputs':['y']}", NULL, "y", "[2, 8]", "concat three on -1");
	expect_shape("{'inputs':[{'name':'a','dtype':'F32','shape':[2,3]}],"
		     "'nodes':[{'op':'concat','name':'cat','inputs':['a'],'outputs':['y'],"
		     "'attrs':{'axis':0}}],'outputs':['y']}", NULL, "y", "[2, 3]", "concat of one");
	parse_fails("{'inputs':[{'name':'a','dtype':'F32','shape':[2,3]},{'name':'b','dtype':'F32','shape':[3,3]}],"
		    "'nodes':[{'op':'concat','name':'cat','inputs':['a','b'],'outputs':['y']}],"
		    "'outputs':['y']}", NULL, "shape_mismatch", "graph: node 'cat': input 'b'",
		    "concat mismatch");
	parse_fails("{'inputs':[],'nodes':[{'op':'concat','name':'cat','inputs':[],'outputs':['y']}],"
		    "'outputs':['y']}", NULL, "bad_graph", "takes at least 1 inputs, got 0", "concat of none");
}

static void test_reshape_flatten(void)
{
	static const char text[] =
		"{'inputs':[{'name':'x','dtype':'F32','shape':[-1,1,28,28]}],"
		"'nodes':[{'op':'reshape','name':'r','inputs':['x'],'outputs':['y'],'attrs':{'shape':[-1,784]}},"
		"{'op':'reshape','name':'r0','inputs':['x'],'outputs':['z'],'attrs':{'shape':[0,28,-1]}},"
		"{'op':'flatten','name':'f2','inputs':['x'],'outputs':['f'],'attrs':{'axis':2}},"
		"{'op':'flatten','name':'f0','inputs':['x'],'outputs':['g'],'attrs':{'axis':0}}],"
		"'outputs':['y','z','f','g']}";
	ds_graph *g = parse_ok(text, NULL, "reshape");
	ds_error err = { 0 };

	if (g) {
		is_str(shape_of(g, "y"), "[1, 784]", "reshape: -1 takes the rest");
		is_str(shape_of(g, "z"), "[1, 28, 28]", "reshape: 0 copies the input dim");
		is_str(shape_of(g, "f"), "[1, 784]", "flatten: axis 2");
		is_str(shape_of(g, "g"), "[1, 784]", "flatten: axis 0");
		is_int(ds_graph_infer(g, 64, &err), 0, "reshape: batch 64");
		is_str(shape_of(g, "y"), "[64, 784]", "reshape: -1 at batch 64");
		is_str(shape_of(g, "z"), "[64, 28, 28]", "reshape: 0 at batch 64");
		is_str(shape_of(g, "f"), "[64, 784]", "flatten: axis 2 at batch 64");
		is_str(shape_of(g, "g"), "[1, 50176]", "flatten: axis 0 at batch 64");
		ds_graph_free(g);
	}
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,1,28,28]}],"
		    "'nodes':[{'op':'reshape','name':'r','inputs':['x'],'outputs':['y'],'attrs':{'shape':[5,-1]}}],"
		    "'outputs':['y']}", NULL, "shape_mismatch",
		    "graph: node 'r': input 'x' [1, 1, 28, 28] cannot be reshaped to [5, -1]", "reshape indivisible");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[4]}],"
		    "'nodes':[{'op':'reshape','name':'r','inputs':['x'],'outputs':['y'],'attrs':{'shape':[-1,-1]}}],"
		    "'outputs':['y']}", NULL, "bad_attr", "more than one -1", "reshape two -1");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[4]}],"
		    "'nodes':[{'op':'reshape','name':'r','inputs':['x'],'outputs':['y']}],"
		    "'outputs':['y']}", NULL, "bad_attr", "attribute 'shape'", "reshape without shape");
}

static void test_loss_embedding(void)
{
	ds_container *c = ds_container_new();
	ds_graph *g;

	P(c, "table", 100, 16);
	g = parse_ok("{'inputs':[{'name':'ids','dtype':'I32','shape':[-1,7]}],"
		     "'nodes':[{'op':'embedding_bag','name':'bag','inputs':['ids','table'],'outputs':['y'],"
		     "'attrs':{'mode':'sum'}},"
		     "{'op':'embedding','name':'emb','inputs':['ids','table'],'outputs':['e']}],"
		     "'outputs':['y','e']}", c, "embedding");
	if (g) {
		is_str(shape_of(g, "y"), "[1, 16]", "embedding_bag: [N, D]");
		is_str(shape_of(g, "e"), "[1, 7, 16]", "embedding: [..., D]");
		is_int(ds_graph_shape(g, "y")->dtype, DS_F32, "embedding_bag: table dtype");
		is_int(ds_graph_flops(g), 7 * 16, "embedding_bag: one add per gathered element");
		is_int(ds_graph_param_count(g), 1600, "embedding: table counted once");
		is_int(ds_graph_infer(g, 64, NULL), 0, "embedding: batch 64");
		is_str(shape_of(g, "y"), "[64, 16]", "embedding_bag at batch 64");
		ds_graph_free(g);
	}
	parse_fails("{'inputs':[{'name':'ids','dtype':'F32','shape':[-1,7]}],"
		    "'nodes':[{'op':'embedding','name':'emb','inputs':['ids','table'],'outputs':['e']}],"
		    "'outputs':['e']}", c, "shape_mismatch", "input 'ids': expected I32 or I64", "embedding float ids");
	parse_fails("{'inputs':[{'name':'ids','dtype':'I32','shape':[-1,7]}],"
		    "'nodes':[{'op':'embedding_bag','name':'bag','inputs':['ids','table'],'outputs':['y'],"
		    "'attrs':{'mode':'max'}}],'outputs':['y']}", c, "bad_attr", "attribute 'mode'",
		    "embedding_bag bad mode");
	g = parse_ok("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,10]},"
		     "{'name':'labels','dtype':'I32','shape':[-1]}],"
		     "'nodes':[{'op':'cross_entropy','name':'loss','inputs':['x','labels'],'outputs':['l'],"
		     "'attrs':{'label_smoothing':0.1}}],'outputs':['l']}", NULL, "cross_entropy");
	if (g) {
		ok(ds_graph_shape(g, "l") && ds_graph_shape(g, "l")->ndim == 0, "cross_entropy: scalar");
		is_int(ds_graph_infer(g, 32, NULL), 0, "cross_entropy: batch 32");
		is_str(shape_of(g, "l"), "[]", "cross_entropy: scalar at batch 32");
		ds_graph_free(g);
	}
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,10]},"
		    "{'name':'labels','dtype':'I32','shape':[2]}],"
		    "'nodes':[{'op':'cross_entropy','name':'loss','inputs':['x','labels'],'outputs':['l']}],"
		    "'outputs':['l']}", NULL, "shape_mismatch", "labels 'labels' [2] do not match",
		    "cross_entropy label count");
	g = parse_ok("{'inputs':[{'name':'s','dtype':'F32','shape':[-1,10]},"
		     "{'name':'t','dtype':'F32','shape':[-1,10]}],"
		     "'nodes':[{'op':'distill','name':'kd','inputs':['s','t'],'outputs':['l'],"
		     "'attrs':{'temperature':2,'weight':0.5}}],'outputs':['l']}", NULL, "distill");
	if (g) {
		is_str(shape_of(g, "l"), "[]", "distill: scalar");
		ds_graph_free(g);
	}
	parse_fails("{'inputs':[{'name':'s','dtype':'F32','shape':[-1,10]},"
		    "{'name':'t','dtype':'F32','shape':[-1,9]}],"
		    "'nodes':[{'op':'distill','name':'kd','inputs':['s','t'],'outputs':['l']}],"
		    "'outputs':['l']}", NULL, "shape_mismatch", "teacher logits 't' [1, 9] do not match",
		    "distill class count");
	parse_fails("{'inputs':[{'name':'s','dtype':'F32','shape':[-1,10]},"
		    "{'name':'t','dtype':'F32','shape':[-1,10]}],"
		    "'nodes':[{'op':'distill','name':'kd','inputs':['s','t'],'outputs':['l'],"
		    "'attrs':{'temperature':0}}],'outputs':['l']}", NULL, "bad_attr", "temperature",
		    "distill temperature 0");
	ds_container_free(c);
}

/* ----------------------------------------------------------------- errors */

static void test_errors(void)
{
	ds_container *c = cnn_params();
	ds_graph *g = NULL;

	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,4]}],"
		    "'nodes':[{'op':'convv2d','name':'c1','inputs':['x'],'outputs':['y']}],"
		    "'outputs':['y']}", NULL, "unknown_op", "graph: node 'c1': unknown op 'convv2d'",
		    "unknown op");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,4]}],"
		    "'nodes':[{'op':'linear','name':'fc1','inputs':['x','nope'],'outputs':['y']}],"
		    "'outputs':['y']}", c, "unknown_tensor", "graph: node 'fc1': input 'nope': no such tensor",
		    "unknown tensor");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,4]}],"
		    "'nodes':[{'op':'linear','name':'fc1','inputs':['x','fc1.weight'],'outputs':['y']}],"
		    "'outputs':['y']}", NULL, "unknown_tensor",
		    "graph: node 'fc1': input 'fc1.weight': no such tensor", "no params container");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,4]}],"
		    "'nodes':[{'op':'relu','name':'r','inputs':['x'],'outputs':['y']}],"
		    "'outputs':['logits']}", NULL, "unknown_tensor", "graph: output 'logits': no such tensor",
		    "unknown graph output");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,4]}],"
		    "'nodes':[{'op':'relu','name':'a','inputs':['b.out'],'outputs':['a.out']},"
		    "{'op':'relu','name':'b','inputs':['a.out'],'outputs':['b.out']},"
		    "{'op':'relu','name':'c','inputs':['b.out'],'outputs':['c.out']}],"
		    "'outputs':['c.out']}", NULL, "cycle", "graph: node 'a': input 'b.out': forms a cycle",
		    "cycle");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,4]}],"
		    "'nodes':[{'op':'relu','name':'r0','inputs':['x'],'outputs':['z']},"
		    "{'op':'add','name':'a','inputs':['x','y'],'outputs':['y']}],"
		    "'outputs':['y']}", NULL, "cycle", "graph: node 'a': input 'y': forms a cycle",
		    "self loop");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,4]}],"
		    "'nodes':[{'op':'relu','name':'a','inputs':['x'],'outputs':['y']},"
		    "{'op':'sigmoid','name':'b','inputs':['x'],'outputs':['y']}],"
		    "'outputs':['y']}", NULL, "duplicate_name",
		    "graph: node 'b': output 'y': already produced by node 'a'", "duplicate output");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,4]}],"
		    "'nodes':[{'op':'relu','name':'a','inputs':['x'],'outputs':['x']}],"
		    "'outputs':['x']}", NULL, "duplicate_name",
		    "graph: node 'a': output 'x': shadows a graph input", "output shadows input");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,1568]}],"
		    "'nodes':[{'op':'relu','name':'a','inputs':['x'],'outputs':['fc1.bias']}],"
		    "'outputs':['fc1.bias']}", c, "duplicate_name",
		    "graph: node 'a': output 'fc1.bias': shadows a parameter", "output shadows parameter");
	parse_fails("{'inputs':[{'name':'fc1.bias','dtype':'F32','shape':[10]}],"
		    "'nodes':[],'outputs':['fc1.bias']}", c, "duplicate_name",
		    "graph: input 'fc1.bias': is also a parameter", "input shadows parameter");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[4]},{'name':'x','dtype':'F32','shape':[4]}],"
		    "'nodes':[],'outputs':['x']}", NULL, "duplicate_name", "graph: input 'x': declared twice",
		    "duplicate input");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,4]}],"
		    "'nodes':[{'op':'relu','name':'a','inputs':['x'],'outputs':['y']},"
		    "{'op':'relu','name':'a','inputs':['y'],'outputs':['z']}],"
		    "'outputs':['z']}", NULL, "duplicate_name", "graph: node 'a': duplicate node name",
		    "duplicate node name");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,4]}],"
		    "'nodes':[{'op':'relu','name':'r','inputs':['x','x'],'outputs':['y']}],"
		    "'outputs':['y']}", NULL, "bad_graph", "graph: node 'r': op 'relu' takes 1 inputs, got 2",
		    "too many inputs");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,4]}],"
		    "'nodes':[{'op':'linear','name':'fc','inputs':['x'],'outputs':['y']}],"
		    "'outputs':['y']}", NULL, "bad_graph", "graph: node 'fc': op 'linear' takes 2 to 4 inputs, got 1",
		    "too few inputs");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,4]}],"
		    "'nodes':[{'op':'relu','name':'r','inputs':['x'],'outputs':['y','z']}],"
		    "'outputs':['y']}", NULL, "bad_graph", "graph: node 'r': op 'relu' makes 1 outputs, got 2",
		    "output count");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,4]}],"
		    "'nodes':[{'op':'relu','name':'r','inputs':['x'],'outputs':['y'],'attrs':{'alpha':1}}],"
		    "'outputs':['y']}", NULL, "bad_attr", "graph: node 'r': op 'relu' has no attribute 'alpha'",
		    "unknown attribute");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,4]}],"
		    "'nodes':[{'op':'relu','name':'r','inputs':['x'],'outputs':['y'],'attrs':[1]}],"
		    "'outputs':['y']}", NULL, "bad_attr", "'attrs' must be an object", "attrs not an object");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,1,28,28]}],"
		    "'nodes':[{'op':'conv2d','name':'conv1','inputs':['x','conv1.weight'],'outputs':['y'],"
		    "'attrs':{'stride':0}}],'outputs':['y']}", c, "bad_attr",
		    "graph: node 'conv1': attribute 'stride': 0 is outside", "stride 0");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,1,28,28]}],"
		    "'nodes':[{'op':'conv2d','name':'conv1','inputs':['x','conv1.weight'],'outputs':['y'],"
		    "'attrs':{'padding':[1,1,1]}}],'outputs':['y']}", c, "bad_attr",
		    "attribute 'padding': expected an integer or [h, w]", "padding of three");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,1,28,28]}],"
		    "'nodes':[{'op':'conv2d','name':'conv1','inputs':['x','conv1.weight'],'outputs':['y'],"
		    "'attrs':{'groups':'two'}}],'outputs':['y']}", c, "bad_attr",
		    "attribute 'groups': expected an integer", "groups not an integer");

	/* Structure. */
	parse_fails("{'inputs':[", NULL, "bad_graph", "graph: invalid JSON", "invalid JSON");
	parse_fails("", NULL, "bad_graph", "graph: invalid JSON", "empty text");
	parse_fails("[]", NULL, "bad_graph", "expected a JSON object", "not an object");
	parse_fails("{'inputs':[],'outputs':['x']}", NULL, "bad_graph", "graph: missing key 'nodes'",
		    "missing nodes");
	parse_fails("{'nodes':[],'outputs':['x']}", NULL, "bad_graph", "graph: missing key 'inputs'",
		    "missing inputs");
	parse_fails("{'inputs':[],'nodes':[]}", NULL, "bad_graph", "graph: missing key 'outputs'",
		    "missing outputs");
	parse_fails("{'inputs':[],'nodes':[],'outputs':[]}", NULL, "bad_graph", "'outputs' must be a non-empty array",
		    "no outputs");
	parse_fails("{'inputs':[],'nodes':[],'outputs':['x'],'extra':1}", NULL, "bad_graph",
		    "graph: top level: unknown key 'extra'", "unknown top-level key");
	parse_fails("{'inputs':[],'nodes':[],'outputs':['x'],'outputs':['y']}", NULL, "bad_graph",
		    "graph: invalid JSON", "duplicate key");
	parse_fails("{'inputs':{},'nodes':[],'outputs':['x']}", NULL, "bad_graph", "'inputs' must be an array",
		    "inputs not an array");
	parse_fails("{'inputs':[],'nodes':{},'outputs':['x']}", NULL, "bad_graph", "'nodes' must be an array",
		    "nodes not an array");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[4],'batch':1}],'nodes':[],'outputs':['x']}",
		    NULL, "bad_graph", "graph: inputs[0]: unknown key 'batch'", "unknown input key");
	parse_fails("{'inputs':[{'name':'','dtype':'F32','shape':[4]}],'nodes':[],'outputs':['x']}",
		    NULL, "bad_graph", "graph: inputs[0]: 'name' must be a non-empty string", "empty input name");
	parse_fails("{'inputs':[{'name':'x','dtype':'F31','shape':[4]}],'nodes':[],'outputs':['x']}",
		    NULL, "bad_graph", "graph: input 'x': 'dtype'", "bad dtype");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[4,-1]}],'nodes':[],'outputs':['x']}",
		    NULL, "bad_graph", "graph: input 'x': shape entry 1", "-1 past dim 0");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[1,1,1,1,1,1,1,1,1]}],'nodes':[],'outputs':['x']}",
		    NULL, "bad_graph", "at most 8", "nine dims");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[1.5]}],'nodes':[],'outputs':['x']}",
		    NULL, "bad_graph", "shape entry 0", "fractional dim");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32'}],'nodes':[],'outputs':['x']}",
		    NULL, "bad_graph", "graph: input 'x': 'shape'", "input without shape");
	parse_fails("{'inputs':[],'nodes':[{'op':'relu','inputs':['x'],'outputs':['y']}],'outputs':['y']}",
		    NULL, "bad_graph", "graph: nodes[0]: 'name' must be a non-empty string", "node without name");
	parse_fails("{'inputs':[],'nodes':[{'name':'n','inputs':['x'],'outputs':['y']}],'outputs':['y']}",
		    NULL, "bad_graph", "graph: node 'n': 'op' must be a non-empty string", "node without op");
	parse_fails("{'inputs':[],'nodes':[{'op':'relu','name':'n','inputs':[''],'outputs':['y']}],'outputs':['y']}",
		    NULL, "bad_graph", "graph: node 'n': inputs[0] must be a non-empty string", "empty input ref");
	parse_fails("{'inputs':[],'nodes':[{'op':'relu','name':'n','inputs':'x','outputs':['y']}],'outputs':['y']}",
		    NULL, "bad_graph", "must be arrays", "node inputs not an array");
	parse_fails("{'inputs':[],'nodes':[{'op':'relu','name':'n','input':['x'],'outputs':['y']}],'outputs':['y']}",
		    NULL, "bad_graph", "graph: nodes[0]: unknown key 'input'", "unknown node key");
	parse_fails("{'inputs':[],'nodes':[7],'outputs':['y']}", NULL, "bad_graph",
		    "graph: nodes[0]: expected an object", "node not an object");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[1099511627776,1099511627776]}],"
		    "'nodes':[],'outputs':['x']}", NULL, "shape_mismatch", "too large", "huge input");

	ok(ds_graph_parse(q("{"), NULL, &g, NULL) == DS_ERR_DATA && g == NULL, "NULL err allowed");
	ds_container_free(c);
}

/* -------------------------------------------------------------- ordering */

static void test_order(void)
{
	ds_graph *g = parse_ok(
		"{'inputs':[{'name':'x','dtype':'F32','shape':[-1,4]}],"
		"'nodes':[{'op':'relu','name':'late','inputs':['mid.out'],'outputs':['late.out']},"
		"{'op':'relu','name':'root2','inputs':['x'],'outputs':['root2.out']},"
		"{'op':'add','name':'mid','inputs':['root1.out','root2.out'],'outputs':['mid.out']},"
		"{'op':'relu','name':'root1','inputs':['x'],'outputs':['root1.out']},"
		"{'op':'relu','name':'side','inputs':['root2.out'],'outputs':['side.out']}],"
		"'outputs':['late.out','side.out']}", NULL, "order");
	const char *want[] = { "root2", "root1", "mid", "late", "side" };

	if (!g)
		return;
	for (size_t i = 0; i < 5; i++)
		is_str(ds_node_name(ds_graph_node(g, i)), want[i], "order: position %zu", i);
	ok(ds_graph_node(g, 5) == NULL, "order: past the end is NULL");
	ds_graph_free(g);
}

/* A long chain checks that parsing is not quadratic and nothing recurses. */
static void test_large(void)
{
	enum { N = 20000 };
	json_t *doc = json_object(), *nodes = json_array(), *inputs = json_array();
	char name[32], in[32], out[32];
	ds_graph *g = NULL;
	ds_error err = { 0 };
	char *text;

	json_array_append_new(inputs, json_pack("{s:s,s:s,s:[i,i]}", "name", "v0", "dtype", "F32",
						"shape", -1, 16));
	/* Listed backwards: the sort must reverse them. */
	for (int i = N; i >= 1; i--) {
		snprintf(name, sizeof name, "n%d", i);
		snprintf(in, sizeof in, "v%d", i - 1);
		snprintf(out, sizeof out, "v%d", i);
		json_array_append_new(nodes, json_pack("{s:s,s:s,s:[s],s:[s]}", "op", "relu", "name",
						       name, "inputs", in, "outputs", out));
	}
	snprintf(out, sizeof out, "v%d", N);
	json_object_set_new(doc, "inputs", inputs);
	json_object_set_new(doc, "nodes", nodes);
	json_object_set_new(doc, "outputs", json_pack("[s]", out));
	text = json_dumps(doc, JSON_COMPACT);
	is_int(ds_graph_parse(text, NULL, &g, &err), 0, "large: %d-node chain parses", N);
	if (g) {
		is_str(ds_node_name(ds_graph_node(g, 0)), "n1", "large: first in order");
		is_str(ds_node_name(ds_graph_node(g, N - 1)), "n20000", "large: last in order");
		is_int(ds_graph_flops(g), (int64_t)N * 16, "large: flops");
		is_int(ds_graph_infer(g, 8, &err), 0, "large: infer at 8");
		is_str(shape_of(g, out), "[8, 16]", "large: last shape");
	}
	ds_graph_free(g);
	free(text);
	json_decref(doc);
}

/* The INT8 ops of ds-quantize: the float ops' shapes, U8 or F32 by their
 * attributes, dtypes checked. */
static void test_quant_ops(void)
{
	ds_container *c = ds_container_new();
	ds_graph *g;

	add_param(c, "cw", DS_I8, 4, (int64_t[]){ 8, 1, 3, 3 });
	P(c, "cs", 8);
	P(c, "cb", 8);
	add_param(c, "fw", DS_I8, 2, (int64_t[]){ 10, 8 });
	P(c, "fs", 10);
	g = parse_ok("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,1,8,8]}],"
		     "'nodes':[{'op':'quantize','name':'q','inputs':['x'],'outputs':['xq'],"
		     "'attrs':{'scale':0.1,'zero_point':3}},"
		     "{'op':'qconv2d','name':'conv','inputs':['xq','cw','cs','cb'],'outputs':['c'],"
		     "'attrs':{'padding':1,'activation':'relu','x_scale':0.1,'x_zero_point':3,'y_scale':0.2,'y_zero_point':0}},"
		     "{'op':'qadd','name':'add','inputs':['c','c'],'outputs':['a'],"
		     "'attrs':{'a_scale':0.2,'a_zero_point':0,'b_scale':0.2,'b_zero_point':0,'y_scale':0.4,'y_zero_point':0}},"
		     "{'op':'qmax_pool','name':'mp','inputs':['a'],'outputs':['m'],'attrs':{'kernel':2}},"
		     "{'op':'qglobal_avg_pool','name':'gap','inputs':['m'],'outputs':['p']},"
		     "{'op':'flatten','name':'flat','inputs':['p'],'outputs':['f']},"
		     "{'op':'qlinear','name':'fc','inputs':['f','fw','fs'],'outputs':['y'],"
		     "'attrs':{'x_scale':0.4,'x_zero_point':0}},"
		     "{'op':'dequantize','name':'dq','inputs':['m'],'outputs':['d'],'attrs':{'scale':0.4,'zero_point':0}}],"
		     "'outputs':['y','d']}", c, "quantized ops");
	if (g) {
		is_str(shape_of(g, "c"), "[1, 8, 8, 8]", "qconv2d: conv2d's shape");
		is_int(ds_graph_shape(g, "c")->dtype, DS_U8, "qconv2d: U8 with y_scale");
		is_str(shape_of(g, "m"), "[1, 8, 4, 4]", "qmax_pool: max_pool's shape");
		is_str(shape_of(g, "p"), "[1, 8, 1, 1]", "qglobal_avg_pool: [N, C, 1, 1]");
		is_int(ds_graph_shape(g, "f")->dtype, DS_U8, "flatten keeps U8");
		is_str(shape_of(g, "y"), "[1, 10]", "qlinear: linear's shape");
		is_int(ds_graph_shape(g, "y")->dtype, DS_F32, "qlinear: F32 without y_scale");
		is_int(ds_graph_shape(g, "d")->dtype, DS_F32, "dequantize: F32");
		ds_graph_free(g);
	}
	/* fake_quant (ds-train --qat): the input's shape, in F32; a range of [2]. */
	P(c, "r", 2);
	P(c, "w", 8);
	g = parse_ok("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,1,8,8]}],"
		     "'nodes':[{'op':'fake_quant','name':'fq','inputs':['x','r'],'outputs':['y'],'attrs':{'momentum':0.1}},"
		     "{'op':'fake_quant','name':'fw','inputs':['w'],'outputs':['v']}],"
		     "'outputs':['y','v']}", c, "fake_quant");
	if (g) {
		is_str(shape_of(g, "y"), "[1, 1, 8, 8]", "fake_quant: the input's shape");
		is_int(ds_graph_shape(g, "y")->dtype, DS_F32, "fake_quant: F32");
		ds_graph_free(g);
	}
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,1,8,8]}],"
		    "'nodes':[{'op':'fake_quant','name':'fq','inputs':['x','cs'],'outputs':['y']}],"
		    "'outputs':['y']}", c, "shape_mismatch", "cs", "fake_quant with a range of [8]");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,1,8,8]}],"
		    "'nodes':[{'op':'qmax_pool','name':'mp','inputs':['x'],'outputs':['m'],'attrs':{'kernel':2}}],"
		    "'outputs':['m']}", c, "shape_mismatch", "expected U8", "qmax_pool on F32");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,1,8,8]}],"
		    "'nodes':[{'op':'quantize','name':'q','inputs':['x'],'outputs':['m'],'attrs':{'scale':0}}],"
		    "'outputs':['m']}", c, "bad_attr", "attribute 'scale'", "quantize with scale 0");
	ds_container_free(c);
}

/* The blocked-layout ops of ds-optimize's layout pass: blocked shapes,
 * packed filters and padded bias checked, the true channels from the
 * attributes (FLOPs as conv2d's). */
static void test_layout_ops(void)
{
	ds_container *c = ds_container_new();
	ds_graph *g;

	add_param(c, "w1", DS_F32, 6, (int64_t[]){ 4, 1, 3, 3, 16, 16 });
	add_param(c, "w2", DS_F32, 6, (int64_t[]){ 4, 4, 3, 3, 16, 16 });
	P(c, "b", 64);
	g = parse_ok("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,3,8,8]}],"
		     "'nodes':[{'op':'conv2d_nchw16c','name':'c1','inputs':['x','w1','b'],'outputs':['y1'],"
		     "'attrs':{'stride':2,'padding':1,'in_channels':3,'out_channels':60}},"
		     "{'op':'conv2d_nchw16c','name':'c2','inputs':['y1','w2','b','y1'],'outputs':['y2'],"
		     "'attrs':{'padding':1,'activation':'relu','in_channels':60,'out_channels':64}},"
		     "{'op':'reorder','name':'r','inputs':['y2'],'outputs':['y'],'attrs':{'to':'nchw','channels':64}},"
		     "{'op':'reorder','name':'b2','inputs':['y'],'outputs':['z'],'attrs':{'to':'nchw16c'}},"
		     "{'op':'conv2d_nchw16c','name':'c3','inputs':['z','w2','b'],'outputs':['p'],"
		     "'attrs':{'padding':1,'activation':'relu','pool':'max_2x2','in_channels':64,'out_channels':64}},"
		     "{'op':'global_avg_pool_nchw16c','name':'g','inputs':['y2'],'outputs':['m'],'attrs':{'channels':60}}],"
		     "'outputs':['y','z','p','m']}", c, "layout ops");
	if (g) {
		is_str(shape_of(g, "y1"), "[1, 4, 4, 4, 16]", "conv2d_nchw16c: blocked output, stride 2");
		is_str(shape_of(g, "y"), "[1, 64, 4, 4]", "reorder: back to NCHW with the channels");
		is_str(shape_of(g, "z"), "[1, 4, 4, 4, 16]", "reorder: to blocked");
		is_str(shape_of(g, "p"), "[1, 4, 2, 2, 16]", "conv2d_nchw16c: a fused pool halves the grid");
		is_str(shape_of(g, "m"), "[1, 60, 1, 1]", "global_avg_pool_nchw16c: the true channels, plain");
		is_int(ds_graph_flops(g), 2 * 60 * 16 * 3 * 9 + 60 * 16 + 2 * 64 * 16 * 60 * 9 + 2 * 64 * 16 +
						  2 * 64 * 16 * 64 * 9 + 64 * 16 + 4 * 64 * 4 + 60 * 16,
		       "conv2d_nchw16c and the pool: conv2d's FLOPs on the true channels");
		ds_graph_free(g);
	}
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,3,8,8]}],"
		    "'nodes':[{'op':'global_avg_pool_nchw16c','name':'g','inputs':['x'],'outputs':['y'],"
		    "'attrs':{'channels':3}}],'outputs':['y']}", c, "shape_mismatch", "expected 5 dims",
		    "global_avg_pool_nchw16c of a plain tensor");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,3,8,8]}],"
		    "'nodes':[{'op':'conv2d_nchw16c','name':'c','inputs':['x','w1','b','x'],'outputs':['y'],"
		    "'attrs':{'padding':1,'pool':'max_2x2','in_channels':3,'out_channels':60}}],"
		    "'outputs':['y']}", c, "bad_attr", "takes no pool", "conv2d_nchw16c: a pool with a residual");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,3,8,8]}],"
		    "'nodes':[{'op':'conv2d_nchw16c','name':'c','inputs':['x','w2'],'outputs':['y'],"
		    "'attrs':{'in_channels':3,'out_channels':64}}],"
		    "'outputs':['y']}", c, "shape_mismatch", "not packed", "conv2d_nchw16c with filters for 64 channels");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,3,8,8]}],"
		    "'nodes':[{'op':'conv2d_nchw16c','name':'c','inputs':['x','w1'],'outputs':['y']}],"
		    "'outputs':['y']}", c, "bad_attr", "required", "conv2d_nchw16c without its channels");
	parse_fails("{'inputs':[{'name':'x','dtype':'F32','shape':[-1,3,8,8]}],"
		    "'nodes':[{'op':'reorder','name':'r','inputs':['x'],'outputs':['y'],'attrs':{'to':'nchw','channels':3}}],"
		    "'outputs':['y']}", c, "shape_mismatch", "", "reorder to nchw of a plain tensor");
	ds_container_free(c);
}

static void test_coverage(void)
{
	for (size_t i = 0; i < ds_op_count(); i++)
		ok(i < sizeof covered && covered[i], "coverage: op %s has a shape test", ds_op_at(i)->name);
}

int main(void)
{
	test_registry();
	test_cnn();
	test_from_model();
	test_conv();
	test_linear_norm();
	test_elementwise();
	test_pool();
	test_broadcast_concat();
	test_reshape_flatten();
	test_loss_embedding();
	test_errors();
	test_order();
	test_large();
	test_quant_ops();
	test_layout_ops();
	test_coverage();
	return done_testing();
}
