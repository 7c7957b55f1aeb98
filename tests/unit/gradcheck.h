/* gradcheck.h - check an op's forward and backward kernels on the CPU.
 *
 * A one-node graph is built from JSON, so shapes and attributes go through
 * the same parser and shape inference as real models.  Inputs are random;
 * the loss is L = sum(out * r) for a fixed random r, computed in double, so
 * dL/dout = r.  Each input gradient from backward is compared with central
 * finite differences of L, entry by entry (a sample of entries for large
 * tensors).  float32 kernels and a float64 loss: the tolerance is relative
 * to the gradient's scale.
 *
 * Use: gc_check("conv2d", "{\"stride\":2}", shapes, dtypes, n_in, tol)
 * where shapes[i] is a -1 terminated list of dims, and the graph input names
 * are in0, in1, ...  Integer inputs (ids, labels) get values in [0, int_max).
 */
#ifndef DS_GRADCHECK_H
#define DS_GRADCHECK_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "tap.h"

#define GC_MAX_IN 8

static uint64_t gc_rng = 0x2545f4914f6cdd1dull;

static double gc_uniform(void)
{
	gc_rng ^= gc_rng << 13;
	gc_rng ^= gc_rng >> 7;
	gc_rng ^= gc_rng << 17;
	return (double)(gc_rng >> 11) / 9007199254740992.0;
}

struct gc_case {
	const ds_op *op;
	ds_graph *graph;
	const ds_node *node;
	ds_tensor *in[GC_MAX_IN], *out[4], *grad_in[GC_MAX_IN], *grad_out[4], *r[4];
	int n_in, n_out;
	void *saved, *workspace;
	int training;
	uint64_t seed;
};

static ds_tensor *gc_tensor(const ds_shape *s)
{
	return ds_tensor_new(s->dtype, s->ndim, s->dim, DS_CPU, NULL);
}

static void gc_free(struct gc_case *c)
{
	for (int i = 0; i < GC_MAX_IN; i++) {
		ds_tensor_unref(c->in[i]);
		ds_tensor_unref(c->grad_in[i]);
	}
	for (int j = 0; j < 4; j++) {
		ds_tensor_unref(c->out[j]);
		ds_tensor_unref(c->grad_out[j]);
		ds_tensor_unref(c->r[j]);
	}
	free(c->saved);
	free(c->workspace);
	ds_graph_free(c->graph);
	memset(c, 0, sizeof *c);
}

static int gc_forward(struct gc_case *c, ds_error *err)
{
	ds_op_args a = { .node = c->node, .in = c->in, .n_in = c->n_in, .out = c->out, .n_out = c->n_out,
			 .saved = c->saved, .workspace = c->workspace, .training = c->training, .seed = c->seed };

	return c->op->forward[DS_BACKEND_CPU](&a, err);
}

static int gc_backward(struct gc_case *c, ds_error *err)
{
	ds_op_args a = { .node = c->node, .in = c->in, .n_in = c->n_in, .out = c->out, .n_out = c->n_out,
			 .grad_out = c->grad_out, .grad_in = c->grad_in, .saved = c->saved,
			 .workspace = c->workspace, .training = c->training, .seed = c->seed };

	return c->op->backward[DS_BACKEND_CPU](&a, err);
}

/* L = sum over outputs of out * r, in double. */
static double gc_loss(struct gc_case *c)
{
	double l = 0;

	for (int j = 0; j < c->n_out; j++) {
		const float *o = c->out[j]->data, *r = c->r[j]->data;
		int64_t n = ds_tensor_numel(c->out[j]);

		if (c->out[j]->dtype != DS_F32)
			continue;
		for (int64_t k = 0; k < n; k++)
			l += (double)o[k] * (double)r[k];
	}
	return l;
}

/* Build the case: a graph with inputs in0.. and one node; random data. */
static int gc_setup(struct gc_case *c, const char *op, const char *attrs, const int64_t *const *shapes,
		    const ds_dtype *dtypes, int n_in, int int_max, int training)
{
	json_t *g = json_object(), *inputs = json_array(), *node_inputs = json_array(), *outs = json_array();
	ds_error err = { 0 };
	ds_shape in_shapes[GC_MAX_IN], out_shapes[4];
	char *text;
	int rc;

	memset(c, 0, sizeof *c);
	c->op = ds_op_find(op);
	if (!c->op || !c->op->forward[DS_BACKEND_CPU])
		return -1;
	c->n_in = n_in;
	c->n_out = c->op->num_outputs;
	c->training = training;
	c->seed = 12345;
	for (int i = 0; i < n_in; i++) {
		json_t *shape = json_array();
		char name[16];

		for (const int64_t *d = shapes[i]; *d >= 0; d++)
			json_array_append_new(shape, json_integer(*d));
		snprintf(name, sizeof name, "in%d", i);
		json_array_append_new(inputs, json_pack("{s:s, s:s, s:o}", "name", name, "dtype",
							ds_dtype_name(dtypes[i]), "shape", shape));
		json_array_append_new(node_inputs, json_string(name));
	}
	for (int j = 0; j < c->n_out; j++) {
		char name[16];

		snprintf(name, sizeof name, "out%d", j);
		json_array_append_new(outs, json_string(name));
	}
	json_object_set_new(g, "inputs", inputs);
	json_object_set_new(g, "nodes", json_pack("[{s:s, s:s, s:o, s:O, s:o}]", "op", op, "name", "n",
						  "inputs", node_inputs, "outputs", outs,
						  "attrs", json_loads(attrs ? attrs : "{}", 0, NULL)));
	json_object_set_new(g, "outputs", outs);
	text = json_dumps(g, 0);
	json_decref(g);
	rc = ds_graph_parse(text, NULL, &c->graph, &err);
	free(text);
	if (rc) {
		diag("gradcheck %s: %s", op, err.message);
		return -1;
	}
	c->node = ds_graph_node(c->graph, 0);
	for (int i = 0; i < n_in; i++) {
		char name[16];

		snprintf(name, sizeof name, "in%d", i);
		in_shapes[i] = *ds_graph_shape(c->graph, name);
		c->in[i] = gc_tensor(&in_shapes[i]);
		for (int64_t k = 0; k < ds_tensor_numel(c->in[i]); k++) {
			if (dtypes[i] == DS_F32)
				((float *)c->in[i]->data)[k] = (float)(gc_uniform() * 2 - 1);
			else if (dtypes[i] == DS_I32)
				((int32_t *)c->in[i]->data)[k] = (int32_t)(gc_uniform() * int_max);
			else if (dtypes[i] == DS_I64)
				((int64_t *)c->in[i]->data)[k] = (int64_t)(gc_uniform() * int_max);
		}
		if (dtypes[i] == DS_F32 && !(c->op->no_grad & (1u << i)))
			c->grad_in[i] = gc_tensor(&in_shapes[i]);
	}
	for (int j = 0; j < c->n_out; j++) {
		char name[16];

		snprintf(name, sizeof name, "out%d", j);
		out_shapes[j] = *ds_graph_shape(c->graph, name);
		c->out[j] = gc_tensor(&out_shapes[j]);
		c->grad_out[j] = gc_tensor(&out_shapes[j]);
		c->r[j] = gc_tensor(&out_shapes[j]);
		for (int64_t k = 0; out_shapes[j].dtype == DS_F32 && k < ds_tensor_numel(c->r[j]); k++)
			((float *)c->r[j]->data)[k] = ((float *)c->grad_out[j]->data)[k] = (float)(gc_uniform() * 2 - 1);
	}
	if (c->op->saved)
		c->saved = calloc(1, c->op->saved(c->node, in_shapes, n_in, out_shapes) + 64);
	if (c->op->workspace)
		c->workspace = calloc(1, c->op->workspace(c->node, in_shapes, n_in, out_shapes) + 64);
	return 0;
}

/* Check every float input's gradient; returns the worst relative error.
 * prep (may be NULL) adjusts the random inputs first: away from a kink,
 * positive variances, padding ids. */
static double gc_check_prep(const char *op, const char *attrs, const int64_t *const *shapes,
			    const ds_dtype *dtypes, int n_in, int int_max, int training, double tol,
			    void (*prep)(struct gc_case *c))
{
	struct gc_case c;
	ds_error err = { 0 };
	double worst = 0;
	int fail = 0;

	if (gc_setup(&c, op, attrs, shapes, dtypes, n_in, int_max, training) != 0) {
		ok(0, "gradcheck %s %s: set-up", op, attrs ? attrs : "");
		gc_free(&c);
		return INFINITY;
	}
	if (prep)
		prep(&c);
	if (gc_forward(&c, &err) != 0 || gc_backward(&c, &err) != 0) {
		ok(0, "gradcheck %s %s: %s", op, attrs ? attrs : "", err.message);
		gc_free(&c);
		return INFINITY;
	}
	for (int i = 0; i < c.n_in && !fail; i++) {
		int64_t n;
		double scale = 1e-3;

		if (!c.grad_in[i])
			continue;
		n = ds_tensor_numel(c.in[i]);
		for (int64_t k = 0; k < n; k++)
			scale = fmax(scale, fabs(((float *)c.grad_in[i]->data)[k]));
		/* Every entry of small tensors, about 200 spread over large ones. */
		for (int64_t k = 0; k < n; k += n > 200 ? n / 200 + 1 : 1) {
			float *x = (float *)c.in[i]->data + k, keep = *x;
			const float h = 1e-2f;
			double up, down, fd, an, e;

			*x = keep + h;
			gc_forward(&c, &err);
			up = gc_loss(&c);
			*x = keep - h;
			gc_forward(&c, &err);
			down = gc_loss(&c);
			*x = keep;
			fd = (up - down) / (2.0 * h);
			an = ((float *)c.grad_in[i]->data)[k];
			e = fabs(fd - an) / scale;
			if (e > worst)
				worst = e;
			if (e > tol && !fail) {
				diag("%s %s: d/d in%d[%lld]: backward %.6g, finite difference %.6g", op,
				     attrs ? attrs : "", i, (long long)k, an, fd);
				fail = 1;
			}
		}
	}
	ok(!fail, "gradcheck %s %s (worst relative error %.2g)", op, attrs ? attrs : "", worst);
	gc_free(&c);
	return worst;
}

static inline double gc_check(const char *op, const char *attrs, const int64_t *const *shapes,
			      const ds_dtype *dtypes, int n_in, int int_max, int training, double tol)
{
	return gc_check_prep(op, attrs, shapes, dtypes, n_in, int_max, training, tol, NULL);
}

#endif
