/* optimize.c - ds-optimize's pass manager: rewrite a model's graph (and the
 * parameters it reads) for inference, one named pass at a time, checking
 * after each that the graph still parses, and reporting every rewrite.
 *
 * Passes work on the graph's JSON document (graph_edit.h) and are listed in
 * one table; adding a pass is one function and one row.  Exact passes change
 * no result beyond float rounding (folding batch norm reorders a product);
 * none here drops or approximates anything. */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "cpu/conv.h"
#include "graph_edit.h"
#include "internal.h"

struct pass_ctx {
	json_t *graph;
	ds_container *params;
	const ds_optimize_options *o;
	json_t *log;                 /* array of rewrite lines */
	int rewrites;                /* of the pass running */
};

static int note(struct pass_ctx *c, ds_error *err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int note(struct pass_ctx *c, ds_error *err, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	c->rewrites++;
	ds_log_verbose(c->o->cli, "%s", line);
	if (json_array_append_new(c->log, json_string(line)))
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	return 0;
}

/* Make node i's only output disappear into its first input: readers of the
 * output read the input instead.  When the output is a graph output the
 * producer of the input is renamed instead (graph outputs keep their
 * names); 1 when that is impossible and the node stays. */
static int bypass_node(struct pass_ctx *c, size_t i, int *kept, ds_error *err)
{
	json_t *node = ds_edit_node(c->graph, i);
	const char *in = ds_edit_input(node, 0), *out = ds_edit_output(node, 0);
	char *in_copy, *out_copy;
	int rc = 0;

	*kept = 0;
	if (!(in_copy = ds_strdup(in, err)) || !(out_copy = ds_strdup(out, err))) {
		free(in_copy);
		return DS_ERR_NOMEM;
	}
	if (ds_edit_is_output(c->graph, out)) {
		ssize_t p = ds_edit_producer(c->graph, in);

		if (p < 0 || ds_edit_uses(c->graph, in) != 1) {
			*kept = 1;
			goto out;
		}
		/* The producer now writes the graph output directly. */
		json_t *outs = json_object_get(ds_edit_node(c->graph, (size_t)p), "outputs");

		for (size_t j = 0; j < json_array_size(outs); j++)
			if (!strcmp(json_string_value(json_array_get(outs, j)), in_copy))
				json_array_set_new(outs, j, json_string(out_copy));
		ds_edit_remove_node(c->graph, i);
	} else {
		ds_edit_remove_node(c->graph, i);
		rc = ds_edit_replace_uses(c->graph, out_copy, in_copy, err);
	}
out:
	free(in_copy);
	free(out_copy);
	return rc;
}

/* ---------------------------------------------------------------- passes */

/* Remove every node the predicate calls an identity, readers rewired to
 * its input (bypass_node), with one log line each: "<pass>: removed ...". */
static int drop_identities(struct pass_ctx *c, const char *pass,
			   int (*is_identity)(struct pass_ctx *c, const json_t *node, int *yes, ds_error *err),
			   ds_error *err)
{
	for (size_t i = 0; i < ds_edit_node_count(c->graph);) {
		json_t *node = ds_edit_node(c->graph, i);
		char name[256];
		int yes = 0, kept, rc;

		if ((rc = is_identity(c, node, &yes, err)))
			return rc;
		if (!yes) {
			i++;
			continue;
		}
		snprintf(name, sizeof name, "%s '%s'", ds_edit_node_op(node), ds_edit_node_name(node));
		if ((rc = bypass_node(c, i, &kept, err)))
			return rc;
		if (kept) {
			i++;
			continue;
		}
		if ((rc = note(c, err, "%s: removed %s", pass, name)))
			return rc;
	}
	return 0;
}

/* Dropout is the identity at inference. */
static int is_dropout(struct pass_ctx *c, const json_t *node, int *yes, ds_error *err)
{
	(void)c;
	(void)err;
	*yes = !strcmp(ds_edit_node_op(node), "dropout");
	return 0;
}

static int pass_drop_dropout(struct pass_ctx *c, ds_error *err)
{
	return drop_identities(c, "drop-dropout", is_dropout, err);
}

/* Reshapes and flattens whose output has the shape of their input. */
static int keeps_shape(struct pass_ctx *c, const json_t *node, int *yes, ds_error *err)
{
	const char *op = ds_edit_node_op(node);
	const ds_shape *a, *b;
	ds_graph *g = NULL;
	char *text;
	int rc;

	*yes = 0;
	if (strcmp(op, "reshape") != 0 && strcmp(op, "flatten") != 0)
		return 0;
	if (!(text = json_dumps(c->graph, JSON_COMPACT)))
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	rc = ds_graph_parse(text, c->params, &g, err);
	free(text);
	if (rc)
		return rc;
	a = ds_graph_shape(g, ds_edit_input(node, 0));
	b = ds_graph_shape(g, ds_edit_output(node, 0));
	*yes = a && b && a->ndim == b->ndim && !memcmp(a->dim, b->dim, (size_t)a->ndim * sizeof a->dim[0]);
	ds_graph_free(g);
	return 0;
}

static int pass_drop_identity(struct pass_ctx *c, ds_error *err)
{
	return drop_identities(c, "drop-identity", keeps_shape, err);
}

/* Nodes none of whose outputs is read, repeatedly. */
static int pass_dead_nodes(struct pass_ctx *c, ds_error *err)
{
	int changed = 1, rc;

	while (changed) {
		changed = 0;
		for (size_t i = ds_edit_node_count(c->graph); i-- > 0;) {
			json_t *node = ds_edit_node(c->graph, i);
			const json_t *outs = json_object_get(node, "outputs");
			size_t used = 0;
			char name[256];

			for (size_t j = 0; j < json_array_size(outs); j++)
				used += ds_edit_uses(c->graph, json_string_value(json_array_get(outs, j)));
			if (used)
				continue;
			snprintf(name, sizeof name, "%s", ds_edit_node_name(node));
			ds_edit_remove_node(c->graph, i);
			changed = 1;
			if ((rc = note(c, err, "dead-nodes: removed '%s' (its outputs are never read)", name)))
				return rc;
		}
	}
	return 0;
}

/* A node that reads only parameters computes the same tensor every run:
 * compute it once and store it as a parameter under its output's name. */
static int pass_constant_fold(struct pass_ctx *c, ds_error *err)
{
	int rc = 0;

	for (size_t i = 0; i < ds_edit_node_count(c->graph);) {
		json_t *node = ds_edit_node(c->graph, i), *sub = NULL;
		const json_t *outs = json_object_get(node, "outputs");
		ds_graph *g = NULL;
		ds_plan *p = NULL;
		ds_tensor *t = NULL;
		char name[256], out[256], *text = NULL;
		int constant = json_array_size(outs) == 1 && ds_edit_input_count(node) > 0;

		for (size_t j = 0; constant && j < ds_edit_input_count(node); j++)
			constant = ds_container_get(c->params, ds_edit_input(node, j)) != NULL;
		if (!constant || !strcmp(ds_edit_node_op(node), "dropout")) {
			i++;
			continue;
		}
		snprintf(name, sizeof name, "%s", ds_edit_node_name(node));
		snprintf(out, sizeof out, "%s", ds_edit_output(node, 0));
		if (!(sub = json_pack("{s:[], s:[O], s:[s]}", "inputs", "nodes", node, "outputs", out)) ||
		    !(text = json_dumps(sub, JSON_COMPACT))) {
			rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
			goto next;
		}
		if ((rc = ds_graph_parse(text, c->params, &g, err)) ||
		    (rc = ds_plan_new(g, c->params, 1, NULL, DS_CPU, &p, err)) || (rc = ds_plan_keep(p, out, err)) ||
		    (rc = ds_plan_forward(p, 0, 0, err)))
			goto next;
		if (!(t = ds_tensor_to(ds_plan_tensor(p, out), DS_CPU, err))) {
			rc = DS_ERR_NOMEM;
			goto next;
		}
		ds_edit_remove_node(c->graph, i);
		if ((rc = ds_container_add(c->params, out, t, err)) ||
		    (rc = note(c, err, "constant-fold: computed '%s' once; '%s' is now a parameter", name, out)))
			goto next;
	next:
		ds_tensor_unref(t);
		ds_plan_free(p);
		ds_graph_free(g);
		free(text);
		json_decref(sub);
		if (rc)
			return rc;
	}
	return 0;
}

/* Put t into the container as the new value of the parameter old_name of a
 * node: in place when only this node reads it, else under a new name that
 * the node's input slot then reads. */
static int set_param(struct pass_ctx *c, json_t *node, size_t slot, const char *base, ds_tensor *t, ds_error *err)
{
	json_t *ins = json_object_get(node, "inputs");
	const char *old = slot < json_array_size(ins) ? json_string_value(json_array_get(ins, slot)) : NULL;
	char *name;
	int rc;

	if (old && ds_edit_uses(c->graph, old) == 1) {
		ds_container_remove(c->params, old);
		return ds_container_add(c->params, old, t, err);
	}
	if (!(name = ds_edit_unique_name(c->graph, c->params, base, err)))
		return DS_ERR_NOMEM;
	rc = ds_container_add(c->params, name, t, err);
	if (!rc && (old ? json_array_set_new(ins, slot, json_string(name)) : json_array_append_new(ins, json_string(name))))
		rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	free(name);
	return rc;
}

static const float *f32_param(const struct pass_ctx *c, const char *name, int64_t count)
{
	ds_tensor *t = name ? ds_container_get(c->params, name) : NULL;

	return t && t->dtype == DS_F32 && ds_tensor_numel(t) == count ? t->data : NULL;
}

/* batchnorm(conv(x, W, b)) = conv(x, W * s, (b - mean) * s + beta) with
 * s = gamma / sqrt(var + eps) per output channel; the same for linear. */
static int fold_one(struct pass_ctx *c, size_t bn_index, int *folded, ds_error *err)
{
	json_t *bn = ds_edit_node(c->graph, bn_index), *prod;
	const char *x = ds_edit_input(bn, 0), *op;
	ssize_t pi = ds_edit_producer(c->graph, x);
	ds_tensor *w, *nw = NULL, *nb = NULL;
	const float *gamma, *beta, *mean, *var, *bias = NULL;
	int64_t outc, per;
	double eps;
	char bn_name[256], prod_name[256], base[300], *bn_out = NULL, *x_copy = NULL;
	int rc = 0;

	*folded = 0;
	if (pi < 0 || ds_edit_uses(c->graph, x) != 1 || ds_edit_input_count(bn) != 5)
		return 0;
	prod = ds_edit_node(c->graph, (size_t)pi);
	op = ds_edit_node_op(prod);
	/* Not through an epilogue: bn(act(conv)) and bn(conv + r) do not
	 * fold. */
	if ((strcmp(op, "conv2d") != 0 && strcmp(op, "linear") != 0) ||
	    json_object_get(json_object_get(prod, "attrs"), "activation") || ds_edit_input_count(prod) > 3)
		return 0;
	w = ds_container_get(c->params, ds_edit_input(prod, 1));
	if (!w || w->dtype != DS_F32 || w->ndim < 2)
		return 0;
	outc = w->shape[0];
	per = ds_tensor_numel(w) / outc;
	gamma = f32_param(c, ds_edit_input(bn, 1), outc);
	beta = f32_param(c, ds_edit_input(bn, 2), outc);
	mean = f32_param(c, ds_edit_input(bn, 3), outc);
	var = f32_param(c, ds_edit_input(bn, 4), outc);
	if (ds_edit_input_count(prod) > 2 && !(bias = f32_param(c, ds_edit_input(prod, 2), outc)))
		return 0;
	if (!gamma || !beta || !mean || !var)
		return 0;
	eps = json_number_value(json_object_get(json_object_get(bn, "attrs"), "eps"));
	if (!json_is_number(json_object_get(json_object_get(bn, "attrs"), "eps")))
		eps = 1e-5;
	if (!(nw = ds_tensor_new(DS_F32, w->ndim, w->shape, DS_CPU, err)) ||
	    !(nb = ds_tensor_new(DS_F32, 1, &outc, DS_CPU, err))) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	for (int64_t o = 0; o < outc; o++) {
		double s = gamma[o] / sqrt((double)var[o] + eps);
		const float *src = (const float *)w->data + o * per;
		float *dst = (float *)nw->data + o * per;

		for (int64_t k = 0; k < per; k++)
			dst[k] = (float)(src[k] * s);
		((float *)nb->data)[o] = (float)(((bias ? bias[o] : 0.0) - mean[o]) * s + beta[o]);
	}
	snprintf(bn_name, sizeof bn_name, "%s", ds_edit_node_name(bn));
	snprintf(prod_name, sizeof prod_name, "%s", ds_edit_node_name(prod));
	if (!(bn_out = ds_strdup(ds_edit_output(bn, 0), err)) || !(x_copy = ds_strdup(x, err))) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	snprintf(base, sizeof base, "%s.weight", prod_name);
	if ((rc = set_param(c, prod, 1, base, nw, err)))
		goto out;
	snprintf(base, sizeof base, "%s.bias", prod_name);
	if ((rc = set_param(c, prod, 2, base, nb, err)))
		goto out;
	/* The producer writes what the batch norm wrote; the norm goes. */
	json_array_set_new(json_object_get(prod, "outputs"), 0, json_string(bn_out));
	ds_edit_remove_node(c->graph, bn_index);
	*folded = 1;
	rc = note(c, err, "fold-batchnorm: folded '%s' into %s '%s'", bn_name, op, prod_name);
out:
	free(bn_out);
	free(x_copy);
	ds_tensor_unref(nw);
	ds_tensor_unref(nb);
	return rc;
}

static int pass_fold_batchnorm(struct pass_ctx *c, ds_error *err)
{
	for (size_t i = 0; i < ds_edit_node_count(c->graph);) {
		int folded = 0, rc;

		if (!strcmp(ds_edit_node_op(ds_edit_node(c->graph, i)), "batchnorm") &&
		    (rc = fold_one(c, i, &folded, err)))
			return rc;
		if (!folded)
			i++;
	}
	return 0;
}

/* Does the op take this attribute (its kernels implement it)? */
static int op_accepts(const char *op_name, const char *attr)
{
	const ds_op *op = ds_op_find(op_name);

	for (const char *const *a = op ? op->attrs : NULL; a && *a; a++)
		if (!strcmp(*a, attr))
			return 1;
	return 0;
}

/* An activation that alone reads a convolution's or linear layer's output
 * becomes that layer's epilogue ("activation" attribute): the kernels apply
 * it while the output is in cache (ReLU inside the convolution's tiles),
 * and its buffer and pass over memory go.  The list is what ds_op_epilogue
 * takes. */
static int pass_fuse_activation(struct pass_ctx *c, ds_error *err)
{
	static const char *const fusable[] = { "relu", "relu6", "sigmoid", "silu", "hardswish", "gelu", "tanh", NULL };

	for (size_t i = 0; i < ds_edit_node_count(c->graph);) {
		json_t *act = ds_edit_node(c->graph, i), *prod, *attrs;
		const char *op = ds_edit_node_op(act), *x = ds_edit_input(act, 0), *pop;
		char act_name[256], prod_name[256], *out;
		ssize_t pi;
		int known = 0, rc;

		for (const char *const *f = fusable; *f; f++)
			known |= !strcmp(*f, op);
		pi = known ? ds_edit_producer(c->graph, x) : -1;
		if (pi < 0 || ds_edit_uses(c->graph, x) != 1 || json_object_size(json_object_get(act, "attrs"))) {
			i++;
			continue;
		}
		prod = ds_edit_node(c->graph, (size_t)pi);
		pop = ds_edit_node_op(prod);
		attrs = json_object_get(prod, "attrs");
		if ((strcmp(pop, "conv2d") != 0 && strcmp(pop, "linear") != 0) || !op_accepts(pop, "activation") ||
		    json_object_get(attrs, "activation")) {
			i++;
			continue;
		}
		if (!attrs) {
			json_object_set_new(prod, "attrs", json_object());
			attrs = json_object_get(prod, "attrs");
		}
		snprintf(act_name, sizeof act_name, "%s '%s'", op, ds_edit_node_name(act));
		snprintf(prod_name, sizeof prod_name, "%s", ds_edit_node_name(prod));
		if (!attrs || json_object_set_new(attrs, "activation", json_string(op)) ||
		    !(out = ds_strdup(ds_edit_output(act, 0), err)))
			return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		rc = json_array_set_new(json_object_get(prod, "outputs"), 0, json_string(out));
		free(out);
		if (rc)
			return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		ds_edit_remove_node(c->graph, i);
		if ((rc = note(c, err, "fuse-activation: %s into %s '%s'", act_name, pop, prod_name)))
			return rc;
	}
	return 0;
}

/* A 2x2, stride-2 max-pool that alone reads a convolution's output (with
 * no activation or ReLU, which commutes with the max) becomes that
 * convolution's "pool" attribute: the kernel pools its output tiles while
 * they are in cache, and the full-size output is never written. */
/* The INT8 kernels pool inside only a first layer (one input channel, 3x3,
 * stride 1, padding 1: conv_dw3.c on VNNI).  Any other qconv2d would run
 * into scratch and be pooled from there: no faster, and the unpooled
 * output in the arena. */
static int qconv2d_pools_inside(const struct pass_ctx *c, const json_t *conv)
{
	const json_t *attrs = json_object_get(conv, "attrs"), *groups = json_object_get(attrs, "groups");
	const ds_tensor *w = ds_container_get(c->params, ds_edit_input(conv, 1));

	return w && w->ndim == 4 && w->shape[1] == 1 && w->shape[2] == 3 && w->shape[3] == 3 &&
	       (!groups || (json_is_integer(groups) && json_integer_value(groups) == 1)) &&
	       ds_edit_pair_is(attrs, "stride", 1, 1) && ds_edit_pair_is(attrs, "padding", 1, 0) &&
	       ds_edit_pair_is(attrs, "dilation", 1, 1);
}

static int pass_fuse_pool(struct pass_ctx *c, ds_error *err)
{
	for (size_t i = 0; i < ds_edit_node_count(c->graph);) {
		ssize_t pi = ds_edit_pool_fusable(c->graph, i);
		char pool_name[256], prod_name[256], pool_op[32], prod_op[32];
		int rc;

		const json_t *prod = pi < 0 ? NULL : ds_edit_node(c->graph, (size_t)pi);

		if (!prod || !op_accepts(ds_edit_node_op(prod), "pool") ||
		    (!strcmp(ds_edit_node_op(prod), "qconv2d") && !qconv2d_pools_inside(c, prod))) {
			i++;
			continue;
		}
		snprintf(pool_name, sizeof pool_name, "%s", ds_edit_node_name(ds_edit_node(c->graph, i)));
		snprintf(pool_op, sizeof pool_op, "%s", ds_edit_node_op(ds_edit_node(c->graph, i)));
		snprintf(prod_name, sizeof prod_name, "%s", ds_edit_node_name(ds_edit_node(c->graph, (size_t)pi)));
		snprintf(prod_op, sizeof prod_op, "%s", ds_edit_node_op(ds_edit_node(c->graph, (size_t)pi)));
		if ((rc = ds_edit_fuse_pool(c->graph, i, (size_t)pi, err)) ||
		    (rc = note(c, err, "fuse-pool: %s '%s' into %s '%s'", pool_op, pool_name, prod_op, prod_name)))
			return rc;
	}
	return 0;
}

/* The graph document parsed, for its shapes. */
static int parse_graph(const struct pass_ctx *c, ds_graph **g, ds_error *err)
{
	char *text = json_dumps(c->graph, JSON_COMPACT);
	int rc;

	*g = NULL;
	if (!text)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	rc = ds_graph_parse(text, c->params, g, err);
	free(text);
	return rc;
}

static int same_shape(const ds_shape *a, const ds_shape *b)
{
	return a && b && a->ndim == b->ndim && a->dtype == b->dtype &&
	       !memcmp(a->dim, b->dim, (size_t)a->ndim * sizeof a->dim[0]);
}

/* May the add's operand v move into its producer's epilogue: a conv2d or
 * linear layer that v alone comes out of, read only by the add, with no
 * epilogue yet (act(conv) + r is not act(conv + r)).  The index of that
 * producer, or -1. */
static ssize_t residual_host(const struct pass_ctx *c, const char *v)
{
	ssize_t pi = ds_edit_producer(c->graph, v);
	const json_t *prod, *attrs;
	const char *op;

	if (pi < 0 || ds_edit_uses(c->graph, v) != 1)
		return -1;
	prod = ds_edit_node(c->graph, (size_t)pi);
	op = ds_edit_node_op(prod);
	attrs = json_object_get(prod, "attrs");
	if ((strcmp(op, "conv2d") != 0 && strcmp(op, "linear") != 0) || ds_edit_input_count(prod) < 2 ||
	    ds_edit_input_count(prod) > 3 || json_array_size(json_object_get(prod, "outputs")) != 1 ||
	    json_object_get(attrs, "activation") || json_object_get(attrs, "pool"))
		return -1;
	return pi;
}

/* add(y, r) where y comes out of a convolution or linear layer alone
 * becomes that layer's fourth input: the kernel adds r after the bias
 * while its output tile is in cache, and the add's pass over memory and
 * its buffer go.  The sum is rounded as the add rounded it (the layer's
 * output first, then + r), so the result is the same bit for bit.  A layer
 * without a bias gets a zero one (the residual's slot is the fourth). */
static int pass_fuse_add(struct pass_ctx *c, ds_error *err)
{
	for (size_t i = 0; i < ds_edit_node_count(c->graph);) {
		json_t *add = ds_edit_node(c->graph, i), *prod;
		const char *in[2];
		const ds_shape *sy;
		ds_graph *g = NULL;
		ds_tensor *zero = NULL;
		ssize_t host[2], pi;
		size_t k;
		char add_name[256], prod_name[256], res[256], base[300], *out = NULL, *bname = NULL;
		int rc = 0;

		if (strcmp(ds_edit_node_op(add), "add") != 0 || ds_edit_input_count(add) != 2 ||
		    json_object_size(json_object_get(add, "attrs")) ||
		    json_array_size(json_object_get(add, "outputs")) != 1) {
			i++;
			continue;
		}
		in[0] = ds_edit_input(add, 0);
		in[1] = ds_edit_input(add, 1);
		host[0] = strcmp(in[0], in[1]) ? residual_host(c, in[0]) : -1;
		host[1] = strcmp(in[0], in[1]) ? residual_host(c, in[1]) : -1;
		if (host[0] < 0 && host[1] < 0) {
			i++;
			continue;
		}
		/* No broadcasting: both operands are shaped like the sum. */
		if ((rc = parse_graph(c, &g, err)))
			return rc;
		sy = ds_graph_shape(g, ds_edit_output(add, 0));
		if (!same_shape(ds_graph_shape(g, in[0]), sy) || !same_shape(ds_graph_shape(g, in[1]), sy) ||
		    sy->dtype != DS_F32) {
			ds_graph_free(g);
			i++;
			continue;
		}
		/* The later producer, so that the residual is ready before it
		 * in file order too (the parser sorts anyway). */
		k = host[1] > host[0] ? 1 : 0;
		pi = host[k];
		prod = ds_edit_node(c->graph, (size_t)pi);
		snprintf(add_name, sizeof add_name, "%s", ds_edit_node_name(add));
		snprintf(prod_name, sizeof prod_name, "%s", ds_edit_node_name(prod));
		snprintf(res, sizeof res, "%s", in[1 - k]);
		if (!(out = ds_strdup(ds_edit_output(add, 0), err))) {
			rc = DS_ERR_NOMEM;
			goto next;
		}
		if (ds_edit_input_count(prod) == 2) {
			int64_t outc = !strcmp(ds_edit_node_op(prod), "conv2d") ? sy->dim[1] : sy->dim[sy->ndim - 1];

			snprintf(base, sizeof base, "%s.bias", prod_name);
			if (!(zero = ds_tensor_new(DS_F32, 1, &outc, DS_CPU, err)) ||
			    !(bname = ds_edit_unique_name(c->graph, c->params, base, err))) {
				rc = DS_ERR_NOMEM;
				goto next;
			}
			memset(zero->data, 0, (size_t)outc * sizeof(float));
			if ((rc = ds_container_add(c->params, bname, zero, err)))
				goto next;
			if (json_array_append_new(json_object_get(prod, "inputs"), json_string(bname)))
				goto nomem;
		}
		if (json_array_append_new(json_object_get(prod, "inputs"), json_string(res)) ||
		    json_array_set_new(json_object_get(prod, "outputs"), 0, json_string(out)))
			goto nomem;
		ds_edit_remove_node(c->graph, i);
		rc = note(c, err, "fuse-add: add '%s' into %s '%s' (residual '%s')", add_name,
			  ds_edit_node_op(prod), prod_name, res);
		goto next;
	nomem:
		rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	next:
		ds_tensor_unref(zero);
		free(bname);
		free(out);
		ds_graph_free(g);
		if (rc)
			return rc;
	}
	return 0;
}

/* A 1x1 convolution of a [N, C, 1, 1] tensor (what a global average pool
 * leaves) that is flattened to [N, O] right after is a linear layer on the
 * flattened input: flatten first, then linear with the weight seen as
 * [O, C].  The flatten of [N, C, 1, 1] moves no data, and the small GEMM
 * on [N, C] skips the convolution's per-image calls.  The products are the
 * same; only the GEMM's order of summation may differ (rounding). */
static int pass_gap_linear(struct pass_ctx *c, ds_error *err)
{
	for (size_t i = 0; i < ds_edit_node_count(c->graph); i++) {
		json_t *conv = ds_edit_node(c->graph, i), *attrs = json_object_get(conv, "attrs"), *lin = NULL;
		json_t *flat = NULL, *ins;
		const ds_shape *sx, *sy, *sf;
		const char *act;
		ds_tensor *w, *w2 = NULL;
		ds_graph *g = NULL;
		ssize_t fi;
		char conv_name[256], base[300], *flat_out = NULL, *fout = NULL;
		int rc = 0;

		if (strcmp(ds_edit_node_op(conv), "conv2d") != 0 || ds_edit_input_count(conv) > 3 ||
		    json_object_get(attrs, "pool") || !ds_edit_pair_is(attrs, "padding", 0, 1) ||
		    !ds_edit_pair_is(attrs, "groups", 1, 1) || json_array_size(json_object_get(conv, "outputs")) != 1 ||
		    (fi = ds_edit_only_reader(c->graph, ds_edit_output(conv, 0))) < 0)
			continue;
		flat = ds_edit_node(c->graph, (size_t)fi);
		if ((strcmp(ds_edit_node_op(flat), "flatten") != 0 && strcmp(ds_edit_node_op(flat), "reshape") != 0) ||
		    ds_edit_input_count(flat) != 1)
			continue;
		w = ds_container_get(c->params, ds_edit_input(conv, 1));
		if (!w || w->dtype != DS_F32 || w->ndim != 4 || w->shape[2] != 1 || w->shape[3] != 1)
			continue;
		if ((rc = parse_graph(c, &g, err)))
			return rc;
		sx = ds_graph_shape(g, ds_edit_input(conv, 0));
		sy = ds_graph_shape(g, ds_edit_output(conv, 0));
		sf = ds_graph_shape(g, ds_edit_output(flat, 0));
		if (!sx || !sy || !sf || sx->ndim != 4 || sx->dim[2] != 1 || sx->dim[3] != 1 || sx->dtype != DS_F32 ||
		    sf->ndim != 2 || sf->dim[0] != sy->dim[0] || sf->dim[1] != sy->dim[1]) {
			ds_graph_free(g);
			continue;
		}
		snprintf(conv_name, sizeof conv_name, "%s", ds_edit_node_name(conv));
		act = json_string_value(json_object_get(attrs, "activation"));
		snprintf(base, sizeof base, "%s.flat", ds_edit_input(conv, 0));
		if (!(flat_out = ds_edit_unique_name(c->graph, c->params, base, err)) ||
		    !(fout = ds_strdup(ds_edit_output(flat, 0), err)) ||
		    !(w2 = ds_tensor_new(DS_F32, 2, w->shape, DS_CPU, err))) {
			rc = DS_ERR_NOMEM;
			goto next;
		}
		memcpy(w2->data, w->data, (size_t)ds_tensor_numel(w) * sizeof(float));
		ins = json_object_get(conv, "inputs");
		if (!(lin = json_pack("{s:s, s:s, s:[s], s:[s]}", "op", "linear", "name", conv_name, "inputs", flat_out,
				      "outputs", fout)))
			goto nomem;
		for (size_t j = 1; j < json_array_size(ins); j++)
			if (json_array_append(json_object_get(lin, "inputs"), json_array_get(ins, j)))
				goto nomem;
		if (act && json_object_set_new(lin, "attrs", json_pack("{s:s}", "activation", act)))
			goto nomem;
		/* The flatten node now flattens the convolution's input. */
		if (json_object_set_new(flat, "op", json_string("flatten")) ||
		    json_object_set_new(flat, "attrs", json_pack("{s:i}", "axis", 1)) ||
		    json_array_set_new(json_object_get(flat, "inputs"), 0, json_string(ds_edit_input(conv, 0))) ||
		    json_array_set_new(json_object_get(flat, "outputs"), 0, json_string(flat_out)))
			goto nomem;
		snprintf(base, sizeof base, "%s.weight", conv_name);
		if ((rc = set_param(c, lin, 1, base, w2, err)))
			goto next;
		/* The flatten takes the convolution's place, the linear node the
		 * flatten's: the file stays in topological order. */
		if (json_array_set(json_object_get(c->graph, "nodes"), i, flat) ||
		    json_array_set(json_object_get(c->graph, "nodes"), (size_t)fi, lin))
			goto nomem;
		rc = note(c, err, "gap-linear: 1x1 conv2d '%s' on a 1x1 input is now a linear layer", conv_name);
		goto next;
	nomem:
		rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	next:
		json_decref(lin);
		ds_tensor_unref(w2);
		free(flat_out);
		free(fout);
		ds_graph_free(g);
		if (rc)
			return rc;
	}
	return 0;
}

/* The blocked layout NCHW16c (lib/ops/layout.c) for chains of convolutions
 * on the CPU.  A convolution goes blocked when it has one group, its
 * output channels fill tiles of 2 or 4 vectors (ceil(O / 16) even) or
 * one vector (O <= 16), its input is blocked or its stride 2, and a
 * blocked convolution feeds it or reads it: alone, the reorders around it
 * would cost what it gains.
 * Measured alone, 2 threads, blocked against the masked kernel on NCHW
 * (GFLOP/s): 7x7 64 -> 64 300-330 vs 280 at batch 64 and 260 vs 208 at
 * batch 1, 14x14 32 -> 32 290-310 vs 283, 3x3 stride 2 300 vs 205 (with a
 * plain input 203 vs 198), 1x1 stride 2 224 vs 143; a stride-1 layer
 * reading a plain input in place loses (240 vs 280).
 *
 * A stride-1 layer of 3x3 or wider filters with 4 vectors of output
 * channels goes blocked even alone, its plain input reordered first: the
 * 4 x 6 tiles on a blocked input gain more than both reorders cost.  At
 * batch 64 (microseconds, reorder included): 14x14 32 -> 64 1,272 vs
 * 1,425, pooled 1,288-1,304 vs 1,458-1,546; 7x7 64 -> 64 658 vs 828.  With
 * 2 vectors it is a tie (14x14 32 -> 32 726 vs 717), and 1x1 filters lose
 * (28x28 16 -> 64 625 vs 574).
 *
 * A stride-1 layer of 3x3 or wider filters with one vector of output
 * channels goes blocked on any input, read in place: its row tiles beat
 * the masked kernel (28x28 16 -> 16, batch 64, 765-790 vs 880 us; batch 1
 * 13.6 vs 15.8) and cost no reorder ahead: resnet-s's first five
 * layers, 1.04x at batch 64 and 1.18x at batch 1.  A first layer of one
 * input channel, 3x3 filters and up to 32 output channels takes the
 * kernel's form that keeps its filters in registers (conv_blocked.c):
 * 28x28 1 -> 32 pooled, batch 64, 152 vs 242 us; 1 -> 16 85 vs 95.
 *
 * Filters are packed for the kernel and the bias padded to whole blocks; a
 * blocked output read by anything else (or a graph output) is reordered
 * back under its own name, except where flattens into linear layers or
 * global average pools read it: those read it blocked.  A plain residual
 * is reordered to blocked.  The sums are the same products in another
 * order (rounding). */
struct blocked_conv {
	int on;
	int reorder_in;              /* its plain input reordered first */
	int64_t c, o;
	char *out;                   /* the blocked output's name */
};

static int layout_candidate(const struct pass_ctx *c, const ds_graph *g, const json_t *node, int64_t *cin,
			    int64_t *cout)
{
	const json_t *attrs = json_object_get(node, "attrs");
	const ds_shape *x;
	ds_tensor *w;

	if (strcmp(ds_edit_node_op(node), "conv2d") != 0 || !ds_edit_pair_is(attrs, "groups", 1, 1) ||
	    ds_edit_input_count(node) < 2 ||
	    json_array_size(json_object_get(node, "outputs")) != 1)
		return 0;
	w = ds_container_get(c->params, ds_edit_input(node, 1));
	x = ds_graph_shape(g, ds_edit_input(node, 0));
	if (!w || w->dtype != DS_F32 || w->ndim != 4 || !x || x->ndim != 4 || x->dtype != DS_F32 ||
	    x->dim[1] != w->shape[1] || ((w->shape[0] + 15) / 16 % 2 != 0 && w->shape[0] > 16))
		return 0;
	*cin = w->shape[1];
	*cout = w->shape[0];
	return 1;
}

/* A stride-1 first layer that the blocked kernel runs with its filters in
 * registers (conv_blocked.c's first_fits): one input channel, up to 32
 * output channels, 3x3 filters, padding 0 or 1, no dilation. */
static int first_layer(const json_t *node, const ds_tensor *w)
{
	const json_t *attrs = json_object_get(node, "attrs");

	return w->shape[1] == 1 && w->shape[0] <= 32 && w->shape[2] == 3 && w->shape[3] == 3 &&
	       ds_edit_pair_is(attrs, "stride", 1, 1) && ds_edit_pair_is(attrs, "dilation", 1, 1) &&
	       (ds_edit_pair_is(attrs, "padding", 0, 1) || ds_edit_pair_is(attrs, "padding", 1, 0));
}

/* Index of the convolution whose output value is, when it goes blocked;
 * -1 otherwise. */
static ssize_t blocked_producer(const struct pass_ctx *c, const struct blocked_conv *bc, const char *value)
{
	ssize_t p = value ? ds_edit_producer(c->graph, value) : -1;

	return p >= 0 && bc[p].on ? p : -1;
}

/* Does node i read value as a blocked convolution's input or residual? */
static int reads_blocked(const struct pass_ctx *c, const struct blocked_conv *bc, size_t i, const char *value)
{
	const json_t *node = ds_edit_node(c->graph, i);
	size_t n = ds_edit_input_count(node);

	if (!bc[i].on)
		return 0;
	for (size_t k = 0; k < n; k++)
		if ((k == 0 || k == 3) && !strcmp(ds_edit_input(node, k), value))
			return 1;
	return 0;
}

/* Does value need its plain form: a graph output, or read by a node
 * other than a blocked convolution's input and residual? */
static int needs_plain(const struct pass_ctx *c, const struct blocked_conv *bc, const char *value)
{
	if (ds_edit_is_output(c->graph, value))
		return 1;
	for (size_t i = 0; i < ds_edit_node_count(c->graph); i++) {
		const json_t *node = ds_edit_node(c->graph, i);

		for (size_t k = 0; k < ds_edit_input_count(node); k++)
			if (!strcmp(ds_edit_input(node, k), value) && !(reads_blocked(c, bc, i, value) && (k == 0 || k == 3)))
				return 1;
	}
	return 0;
}

/* Is value read only by flattens (from axis 1) whose outputs only linear
 * layers read, as their input, with F32 weights of o * plane columns?  A
 * blocked value read so needs no reorder back: the weights' columns can
 * follow the blocked order instead. */
static int flattened_into_linear(const struct pass_ctx *c, const char *value, int64_t o, int64_t plane)
{
	size_t n = ds_edit_node_count(c->graph), found = 0;

	if (ds_edit_is_output(c->graph, value))
		return 0;
	for (size_t i = 0; i < n; i++) {
		const json_t *node = ds_edit_node(c->graph, i), *axis;
		const char *fo;

		for (size_t k = 0; k < ds_edit_input_count(node); k++)
			if (!strcmp(ds_edit_input(node, k), value) &&
			    (k || strcmp(ds_edit_node_op(node), "flatten") != 0))
				return 0;
		if (strcmp(ds_edit_input(node, 0) ? ds_edit_input(node, 0) : "", value) != 0)
			continue;
		axis = json_object_get(json_object_get(node, "attrs"), "axis");
		fo = ds_edit_output(node, 0);
		if ((axis && (!json_is_integer(axis) || json_integer_value(axis) != 1)) || !fo ||
		    ds_edit_is_output(c->graph, fo))
			return 0;
		for (size_t j = 0; j < n; j++) {
			const json_t *lin = ds_edit_node(c->graph, j);
			ds_tensor *w;

			for (size_t k = 0; k < ds_edit_input_count(lin); k++)
				if (!strcmp(ds_edit_input(lin, k), fo) &&
				    (k || strcmp(ds_edit_node_op(lin), "linear") != 0 ||
				     !(w = ds_container_get(c->params, ds_edit_input(lin, 1))) || w->dtype != DS_F32 ||
				     w->ndim != 2 || w->shape[1] != o * plane))
					return 0;
		}
		found++;
	}
	return found > 0;
}

/* The flattens of value read blocked instead, and their linear layers'
 * weight columns permuted to match: plain column c * plane + q is blocked
 * column ((c / 16) * plane + q) * 16 + c % 16, the padding channels' columns
 * zero. */
static int flatten_blocked(struct pass_ctx *c, const char *value, const char *blocked, int64_t o, int64_t plane,
			   ds_error *err)
{
	const int64_t cols = (o + 15) / 16 * 16 * plane;
	int rc;

	for (size_t i = 0; i < ds_edit_node_count(c->graph); i++) {
		json_t *node = ds_edit_node(c->graph, i);
		const char *fo;

		if (ds_edit_input_count(node) < 1 || strcmp(ds_edit_input(node, 0), value) != 0)
			continue;
		if (json_array_set_new(json_object_get(node, "inputs"), 0, json_string(blocked)))
			return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		fo = ds_edit_output(node, 0);
		for (size_t j = 0; j < ds_edit_node_count(c->graph); j++) {
			json_t *lin = ds_edit_node(c->graph, j);
			ds_tensor *w, *wb;
			char base[300];

			if (ds_edit_input_count(lin) < 2 || strcmp(ds_edit_input(lin, 0), fo) != 0)
				continue;
			w = ds_container_get(c->params, ds_edit_input(lin, 1));
			{
				const int64_t shape[2] = { w->shape[0], cols };

				if (!(wb = ds_tensor_new(DS_F32, 2, shape, DS_CPU, err)))
					return DS_ERR_NOMEM;
			}
			memset(wb->data, 0, (size_t)(w->shape[0] * cols) * sizeof(float));
			for (int64_t r = 0; r < w->shape[0]; r++)
				for (int64_t ch = 0; ch < o; ch++)
					for (int64_t q = 0; q < plane; q++)
						((float *)wb->data)[r * cols + (ch / 16 * plane + q) * 16 + ch % 16] =
							((const float *)w->data)[(r * o + ch) * plane + q];
			snprintf(base, sizeof base, "%s.nchw16c", ds_edit_input(lin, 1));
			rc = set_param(c, lin, 1, base, wb, err);
			ds_tensor_unref(wb);
			if (rc)
				return rc;
			if ((rc = note(c, err, "layout: linear '%s' reads '%s' blocked, its weight columns reordered",
				       ds_edit_node_name(lin), fo)))
				return rc;
		}
	}
	return 0;
}

/* Is value read only by global average pools?  They can read it blocked
 * (global_avg_pool_nchw16c), with no reorder back. */
static int pooled_globally(const struct pass_ctx *c, const char *value)
{
	size_t found = 0;

	if (ds_edit_is_output(c->graph, value))
		return 0;
	for (size_t i = 0; i < ds_edit_node_count(c->graph); i++) {
		const json_t *node = ds_edit_node(c->graph, i);

		for (size_t k = 0; k < ds_edit_input_count(node); k++)
			if (!strcmp(ds_edit_input(node, k), value)) {
				if (k || strcmp(ds_edit_node_op(node), "global_avg_pool") != 0)
					return 0;
				found++;
			}
	}
	return found > 0;
}

static int pool_blocked(struct pass_ctx *c, const char *value, const char *blocked, int64_t o, ds_error *err)
{
	for (size_t i = 0; i < ds_edit_node_count(c->graph); i++) {
		json_t *node = ds_edit_node(c->graph, i);
		int rc;

		if (ds_edit_input_count(node) < 1 || strcmp(ds_edit_input(node, 0), value) != 0)
			continue;
		if (json_object_set_new(node, "op", json_string("global_avg_pool_nchw16c")) ||
		    json_array_set_new(json_object_get(node, "inputs"), 0, json_string(blocked)) ||
		    json_object_set_new(node, "attrs", json_pack("{s:I}", "channels", (json_int_t)o)))
			return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		if ((rc = note(c, err, "layout: global_avg_pool '%s' reads '%s' blocked", ds_edit_node_name(node),
			       value)))
			return rc;
	}
	return 0;
}

/* The filters packed, and the bias padded to whole blocks, as parameters
 * of node (inputs 1 and 2). */
static int layout_params(struct pass_ctx *c, json_t *node, int64_t cin, int64_t cout, ds_error *err)
{
	ds_tensor *w = ds_container_get(c->params, ds_edit_input(node, 1)), *wp = NULL, *bp = NULL;
	const int64_t ob = (cout + 15) / 16, cb = (cin + 15) / 16;
	const int64_t shape[6] = { ob, cb, w->shape[2], w->shape[3], 16, 16 };
	ds_conv2d_dims d = { .o = cout, .c = cin, .kh = w->shape[2], .kw = w->shape[3] };
	char base[300];
	int rc;

	if (!(wp = ds_tensor_new(DS_F32, 6, shape, DS_CPU, err)))
		return DS_ERR_NOMEM;
	ds_conv2d_blocked_pack(&d, w->data, wp->data);
	snprintf(base, sizeof base, "%s.nchw16c", ds_edit_input(node, 1));
	rc = set_param(c, node, 1, base, wp, err);
	ds_tensor_unref(wp);
	if (rc || ds_edit_input_count(node) < 3 || cout % 16 == 0)
		return rc;
	{
		const int64_t len = ob * 16;
		const float *b = f32_param(c, ds_edit_input(node, 2), cout);

		if (!b)
			return ds_error_set(err, DS_ERR_DATA, "bad_param", "bias '%s' is not F32 [%" PRId64 "]",
					    ds_edit_input(node, 2), cout);
		if (!(bp = ds_tensor_new(DS_F32, 1, &len, DS_CPU, err)))
			return DS_ERR_NOMEM;
		memset(bp->data, 0, (size_t)len * sizeof(float));
		memcpy(bp->data, b, (size_t)cout * sizeof(float));
		snprintf(base, sizeof base, "%s.nchw16c", ds_edit_input(node, 2));
		rc = set_param(c, node, 2, base, bp, err);
		ds_tensor_unref(bp);
	}
	return rc;
}

static json_t *reorder_node(const char *name, const char *in, const char *out, int to_blocked, int64_t channels)
{
	json_t *n = json_pack("{s:s, s:s, s:[s], s:[s]}", "op", "reorder", "name", name, "inputs", in, "outputs", out);

	if (n && json_object_set_new(n, "attrs", to_blocked ? json_pack("{s:s}", "to", "nchw16c")
							    : json_pack("{s:s, s:I}", "to", "nchw", "channels",
									(json_int_t)channels))) {
		json_decref(n);
		return NULL;
	}
	return n;
}

/* A reorder of the plain value v to blocked, named after node, appended to
 * nodes and its output to ins. */
static int reorder_to_blocked(struct pass_ctx *c, json_t *nodes, json_t *ins, const json_t *node, const char *v,
			      const char *suffix, const char *why, ds_error *err)
{
	char name[300], *rv;
	json_t *r;
	int bad;

	snprintf(name, sizeof name, "%s.%s", ds_edit_node_name(node), suffix);
	if (!(rv = ds_edit_unique_name(c->graph, c->params, name, err)))
		return DS_ERR_NOMEM;
	r = reorder_node(name, v, rv, 1, 0);
	bad = !r || json_array_append_new(nodes, r) || json_array_append_new(ins, json_string(rv));
	free(rv);
	if (bad)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	return note(c, err, "layout: reorder '%s' to nchw16c for %s'%s'", v, why, ds_edit_node_name(node));
}

static int pass_layout(struct pass_ctx *c, ds_error *err)
{
	const size_t n = ds_edit_node_count(c->graph);
	struct blocked_conv *bc = NULL;
	json_t *nodes = NULL;
	ds_graph *g = NULL;
	char name[300], base[300];
	int rc = 0;

	if (strcmp(c->o->target ? c->o->target : "cpu", "cpu") != 0 || !n)
		return 0;
	if ((rc = parse_graph(c, &g, err)))
		return rc;
	if (!(bc = calloc(n, sizeof *bc)) || !(nodes = json_array()))
		goto nomem;
	/* Blocked where the input is (the nodes are in topological order), or
	 * at stride 2, where even a plain input wins, or with a reorder ahead
	 * where 4 x 6 tiles of 3x3 filters pay for it. */
	for (size_t i = 0; i < n; i++) {
		json_t *node = ds_edit_node(c->graph, i);
		const int s1 = ds_edit_pair_is(json_object_get(node, "attrs"), "stride", 1, 1);
		ds_tensor *w;

		if (!layout_candidate(c, g, node, &bc[i].c, &bc[i].o))
			continue;
		w = ds_container_get(c->params, ds_edit_input(node, 1));
		bc[i].on = !s1 || blocked_producer(c, bc, ds_edit_input(node, 0)) >= 0 ||
			   (bc[i].o <= 16 && w->shape[2] * w->shape[3] >= 9) || first_layer(node, w);
		if (!bc[i].on && (bc[i].o + 15) / 16 % 4 == 0 && w->shape[2] * w->shape[3] >= 9)
			bc[i].on = bc[i].reorder_in = 1;
	}
	/* Only chains: a candidate fed by a candidate or feeding one, or one
	 * that pays for its reorders alone. */
	{
		char *chained = calloc(n, 1);

		if (!chained)
			goto nomem;
		for (size_t i = 0; i < n; i++) {
			const json_t *node = ds_edit_node(c->graph, i);

			if (!bc[i].on)
				continue;
			chained[i] |= (char)bc[i].reorder_in;
			for (size_t k = 0; k < ds_edit_input_count(node); k++) {
				ssize_t p = k == 0 || k == 3 ? blocked_producer(c, bc, ds_edit_input(node, k)) : -1;

				if (p >= 0)
					chained[i] = chained[p] = 1;
			}
		}
		for (size_t i = 0; i < n; i++)
			bc[i].on = chained[i];
		free(chained);
	}
	for (size_t i = 0; i < n; i++) {
		json_t *node = ds_edit_node(c->graph, i), *attrs = json_object_get(node, "attrs"), *bn = NULL;
		const char *out = ds_edit_output(node, 0);
		json_t *ins;

		if (!bc[i].on) {
			if (json_array_append(nodes, node))
				goto nomem;
			continue;
		}
		snprintf(base, sizeof base, "%s.nchw16c", out);
		if (!(bc[i].out = ds_edit_unique_name(c->graph, c->params, base, err)))
			goto fail;
		if ((rc = layout_params(c, node, bc[i].c, bc[i].o, err)))
			goto fail;
		if (!(bn = json_pack("{s:s, s:s, s:[], s:[s]}", "op", "conv2d_nchw16c", "name", ds_edit_node_name(node),
				     "inputs", "outputs", bc[i].out)))
			goto nomem;
		ins = json_object_get(bn, "inputs");
		for (size_t k = 0; k < ds_edit_input_count(node); k++) {
			const char *v = ds_edit_input(node, k);
			ssize_t p = k == 0 || k == 3 ? blocked_producer(c, bc, v) : -1;

			if (p >= 0) {
				v = bc[p].out;
			} else if ((k == 0 && bc[i].reorder_in) || k == 3) {
				/* A plain input or residual: blocked first. */
				if ((rc = reorder_to_blocked(c, nodes, ins, node, v,
							     k ? "residual_nchw16c" : "input_nchw16c",
							     k ? "the residual of " : "", err))) {
					json_decref(bn);
					goto fail;
				}
				continue;
			}
			if (json_array_append_new(ins, json_string(v))) {
				json_decref(bn);
				goto nomem;
			}
		}
		{
			json_t *na = json_object();
			static const char *const keep[] = { "stride", "padding", "dilation", "activation", "pool" };

			if (!na || json_object_set_new(bn, "attrs", na)) {
				json_decref(bn);
				goto nomem;
			}
			for (size_t k = 0; k < DS_ARRAY_LEN(keep); k++)
				if (json_object_get(attrs, keep[k]) &&
				    json_object_set(na, keep[k], json_object_get(attrs, keep[k]))) {
					json_decref(bn);
					goto nomem;
				}
			if (json_object_set_new(na, "in_channels", json_integer(bc[i].c)) ||
			    json_object_set_new(na, "out_channels", json_integer(bc[i].o)) ||
			    json_array_append_new(nodes, bn))
				goto nomem;
		}
		if ((rc = note(c, err, "layout: conv2d '%s' in nchw16c, %s input", ds_edit_node_name(node),
			       blocked_producer(c, bc, ds_edit_input(node, 0)) >= 0 || bc[i].reorder_in ? "blocked"
												      : "plain")))
			goto fail;
		if (needs_plain(c, bc, out)) {
			const ds_shape *ys = ds_graph_shape(g, out);
			const int64_t plane = ys && ys->ndim == 4 ? ys->dim[2] * ys->dim[3] : 0;
			json_t *r;

			if (plane > 0 && flattened_into_linear(c, out, bc[i].o, plane)) {
				if ((rc = flatten_blocked(c, out, bc[i].out, bc[i].o, plane, err)))
					goto fail;
				continue;
			}
			if (pooled_globally(c, out)) {
				if ((rc = pool_blocked(c, out, bc[i].out, bc[i].o, err)))
					goto fail;
				continue;
			}

			snprintf(name, sizeof name, "%s.to_nchw", ds_edit_node_name(node));
			if (!(r = reorder_node(name, bc[i].out, out, 0, bc[i].o)) || json_array_append_new(nodes, r))
				goto nomem;
			if ((rc = note(c, err, "layout: reorder '%s' back to nchw", out)))
				goto fail;
		}
	}
	if (json_object_set(c->graph, "nodes", nodes))
		goto nomem;
	goto out;
nomem:
	rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	goto out;
fail:
	if (!rc)
		rc = DS_ERR_NOMEM;
out:
	for (size_t i = 0; bc && i < n; i++)
		free(bc[i].out);
	free(bc);
	json_decref(nodes);
	ds_graph_free(g);
	return rc;
}

/* ----------------------------------------------------------- the manager */

struct pass {
	const char *name;
	int level;                   /* runs from this -O level up */
	int (*run)(struct pass_ctx *c, ds_error *err);
	const char *what;
};

static const struct pass passes[] = {
	{ "drop-dropout", 1, pass_drop_dropout, "remove dropout (the identity at inference)" },
	{ "drop-identity", 1, pass_drop_identity, "remove reshapes and flattens that keep the shape" },
	{ "constant-fold", 1, pass_constant_fold, "compute nodes that read only parameters once" },
	{ "fold-batchnorm", 2, pass_fold_batchnorm, "fold batch norm into the convolution or linear layer before it" },
	{ "fuse-add", 2, pass_fuse_add,
	  "add a residual in the epilogue of the convolution or linear layer that computes the other operand" },
	{ "fuse-activation", 2, pass_fuse_activation,
	  "apply an activation in the epilogue of the convolution or linear layer before it" },
	{ "gap-linear", 2, pass_gap_linear, "turn a 1x1 convolution of a globally pooled tensor into a linear layer" },
	{ "fuse-pool", 2, pass_fuse_pool, "pool 2x2 inside the convolution before it" },
	{ "layout", 2, pass_layout,
	  "run chains of convolutions in the blocked layout nchw16c (cpu)" },
	{ "dead-nodes", 1, pass_dead_nodes, "remove nodes whose outputs are never read" },
};

json_t *ds_optimize_pass_table(void)
{
	json_t *rows = json_array();

	for (size_t i = 0; i < sizeof passes / sizeof passes[0]; i++)
		json_array_append_new(rows, json_pack("{s:s, s:i, s:b, s:s}", "pass", passes[i].name, "level",
						      passes[i].level, "exact", 1, "does", passes[i].what));
	return json_pack("{s:o}", "passes", rows);
}

static int in_list(const char *list, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = list; p && *p;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		if (len == n && !strncmp(p, name, n))
			return 1;
		p = end ? end + 1 : NULL;
	}
	return 0;
}

/* Arena bytes of an inference plan at batch, for the report. */
static int measure(const json_t *graph, ds_container *params, int64_t batch, json_t *into, const char *prefix,
		   ds_error *err)
{
	char *text = json_dumps(graph, JSON_COMPACT), key[64];
	ds_graph *g = NULL;
	ds_plan *p = NULL;
	int rc;

	if (!text)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	if ((rc = ds_graph_parse(text, params, &g, err)) || (rc = ds_plan_new(g, params, batch, NULL, DS_CPU, &p, err)))
		goto out;
	snprintf(key, sizeof key, "%s_nodes", prefix);
	json_object_set_new(into, key, json_integer((json_int_t)ds_graph_node_count(g)));
	snprintf(key, sizeof key, "%s_params", prefix);
	json_object_set_new(into, key, json_integer(ds_graph_param_count(g)));
	snprintf(key, sizeof key, "%s_flops", prefix);
	json_object_set_new(into, key, json_integer(ds_graph_flops(g)));
	snprintf(key, sizeof key, "%s_arena_bytes", prefix);
	json_object_set_new(into, key, json_integer((json_int_t)ds_plan_arena_bytes(p)));
out:
	ds_plan_free(p);
	ds_graph_free(g);
	free(text);
	return rc;
}

int ds_optimize_model(ds_container *model, const ds_optimize_options *o, json_t **report, ds_error *err)
{
	struct pass_ctx c = { .params = model, .o = o };
	json_t *before = NULL, *rows = NULL, *figures = NULL;
	int level = o->level < 0 ? 2 : o->level;
	int64_t batch = o->batch > 0 ? o->batch : 64;
	const char *target = o->target ? o->target : "cpu", *fmt;
	int rc;

	*report = NULL;
	if (strcmp(target, "cpu") != 0 && strcmp(target, "cuda") != 0)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--target: '%s' is not cpu or cuda", target);
	if (level > 3)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "-O%d: levels are 0 to 3", level);
	for (const char *p = o->disable; p && *p;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p), i;
		char name[64];

		snprintf(name, sizeof name, "%.*s", (int)(len < 63 ? len : 63), p);
		for (i = 0; i < sizeof passes / sizeof passes[0] && strcmp(passes[i].name, name); i++)
			;
		if (i == sizeof passes / sizeof passes[0])
			return ds_error_set(err, DS_ERR_USAGE, "usage",
					    "--disable-pass: no pass '%s' (--list-passes shows them)", name);
		p = end ? end + 1 : NULL;
	}
	fmt = ds_container_meta_get(model, "ds.format");
	if (fmt && strcmp(fmt, DS_FORMAT_MODEL) != 0)
		return ds_error_set(err, DS_ERR_DATA, "not_model", "ds.format is '%s', not a model (%s)", fmt,
				    DS_FORMAT_MODEL);
	if ((rc = ds_container_meta_json(model, "ds.graph", &c.graph, err)))
		return rc;
	if (!c.graph)
		return ds_error_set(err, DS_ERR_DATA, "bad_graph", "the model has no ds.graph");
	if (!(before = json_deep_copy(c.graph)) || !(rows = json_array()) || !(figures = json_object())) {
		rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		goto out;
	}
	if ((rc = measure(c.graph, model, batch, figures, "before", err)))
		goto out;
	for (size_t i = 0; i < sizeof passes / sizeof passes[0]; i++) {
		const struct pass *ps = &passes[i];
		int on = level >= ps->level && !in_list(o->disable, ps->name);
		char *text;
		ds_graph *check = NULL;

		c.rewrites = 0;
		if (!(c.log = json_array())) {
			rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
			goto out;
		}
		if (on && (rc = ps->run(&c, err))) {
			ds_error_prefix(err, "%s", ps->name);
			json_decref(c.log);
			goto out;
		}
		/* Every pass leaves a graph that parses, or it has a bug. */
		if (!(text = json_dumps(c.graph, JSON_COMPACT))) {
			json_decref(c.log);
			rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
			goto out;
		}
		rc = ds_graph_parse(text, model, &check, err);
		free(text);
		ds_graph_free(check);
		if (rc) {
			json_decref(c.log);
			ds_error_prefix(err, "after pass %s", ps->name);
			rc = DS_ERR_RUN;
			goto out;
		}
		json_array_append_new(rows, json_pack("{s:s, s:s, s:i, s:o}", "pass", ps->name, "state",
						      on ? "ran" : level < ps->level ? "level" : "disabled",
						      "rewrites", c.rewrites, "log", c.log));
	}
	ds_edit_drop_unused_params(c.graph, before, model);
	if ((rc = measure(c.graph, model, batch, figures, "after", err)) ||
	    (rc = ds_container_meta_set_json(model, "ds.graph", c.graph, err)))
		goto out;
	json_object_set_new(figures, "target", json_string(target));
	json_object_set_new(figures, "level", json_integer(level));
	json_object_set_new(figures, "batch", json_integer(batch));
	*report = json_pack("{s:O, s:O}", "figures", figures, "passes", rows);
	if (!*report)
		rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
out:
	json_decref(before);
	json_decref(rows);
	json_decref(figures);
	json_decref(c.graph);
	return rc;
}
