/* shape.c - ops that combine or rearrange tensors: add and mul with numpy
 * broadcasting, concat, flatten and reshape (ONNX semantics). */
#include "config.h"
#include "ops.h"
#include "cpu/elementwise.h"

#include <inttypes.h>
#include <string.h>

static const char *const no_attrs[] = { NULL };
static const char *const concat_attrs[] = { "axis", NULL };
static const char *const flatten_attrs[] = { "axis", NULL };
static const char *const reshape_attrs[] = { "shape", NULL };

/* Dims align from the right; each pair is equal or one of them is 1. */
static int broadcast_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
			   ds_error *err)
{
	const ds_shape *a = &in[0], *b = &in[1];
	char as[128], bs[128];
	int nd = a->ndim > b->ndim ? a->ndim : b->ndim;

	(void)n_in;
	if (a->dtype != b->dtype)
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "inputs '%s' (%s) and '%s' (%s) differ in dtype", ds_node_input(node, 0),
				    ds_dtype_name(a->dtype), ds_node_input(node, 1), ds_dtype_name(b->dtype));
	out[0].dtype = a->dtype;
	out[0].ndim = nd;
	for (int i = 0; i < nd; i++) {
		int ia = a->ndim - nd + i, ib = b->ndim - nd + i;
		int64_t da = ia >= 0 ? a->dim[ia] : 1, db = ib >= 0 ? b->dim[ib] : 1;

		if (da != db && da != 1 && db != 1)
			return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
					    "inputs '%s' %s and '%s' %s do not broadcast", ds_node_input(node, 0),
					    ds_op_shape_text(a, as, sizeof as), ds_node_input(node, 1),
					    ds_op_shape_text(b, bs, sizeof bs));
		out[0].dim[i] = da == 1 ? db : da;
	}
	return 0;
}

static int64_t broadcast_flops(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	(void)node;
	(void)in;
	(void)n_in;
	return ds_op_numel(&out[0]);
}

/* All inputs agree in dtype and in every dim but axis (default 1, the
 * channels of NCHW). */
static int concat_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
			ds_error *err)
{
	char s0[128], si[128];
	int axis, rc;

	if ((rc = ds_op_check_ndim(node, in, 0, 1, DS_MAX_DIMS, err)) ||
	    (rc = ds_op_attr_axis(node, "axis", 1, in[0].ndim, 0, &axis, err)))
		return rc;
	out[0] = in[0];
	for (int i = 1; i < n_in; i++) {
		int same = in[i].ndim == in[0].ndim && in[i].dtype == in[0].dtype;

		for (int d = 0; same && d < in[0].ndim; d++)
			same = d == axis || in[i].dim[d] == in[0].dim[d];
		if (!same)
			return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
					    "input '%s' %s %s does not concatenate with '%s' %s %s on axis %d",
					    ds_node_input(node, (size_t)i), ds_dtype_name(in[i].dtype),
					    ds_op_shape_text(&in[i], si, sizeof si), ds_node_input(node, 0),
					    ds_dtype_name(in[0].dtype), ds_op_shape_text(&in[0], s0, sizeof s0),
					    axis);
		out[0].dim[axis] = ds_op_sat_add(out[0].dim[axis], in[i].dim[axis]);
	}
	return 0;
}

/* [d0 .. d(axis-1)] and [d(axis) ..] each collapse to one dim. */
static int flatten_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
			 ds_error *err)
{
	int axis, rc;
	int64_t outer = 1, inner = 1;

	(void)n_in;
	if ((rc = ds_op_attr_axis(node, "axis", 1, in[0].ndim, 1, &axis, err)))
		return rc;
	for (int d = 0; d < in[0].ndim; d++) {
		if (d < axis)
			outer = ds_op_sat_mul(outer, in[0].dim[d]);
		else
			inner = ds_op_sat_mul(inner, in[0].dim[d]);
	}
	out[0].dtype = in[0].dtype;
	out[0].ndim = 2;
	out[0].dim[0] = outer;
	out[0].dim[1] = inner;
	return 0;
}

/* shape: 0 copies the input's dim at that index, one -1 takes the rest. */
static int reshape_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
			 ds_error *err)
{
	const json_t *attrs = ds_node_attrs(node);
	const json_t *shape = attrs ? json_object_get(attrs, "shape") : NULL;
	int64_t numel = ds_op_numel(&in[0]), known = 1;
	int rest = -1;
	char xs[128], os[128];

	(void)n_in;
	if (!json_is_array(shape) || json_array_size(shape) > DS_MAX_DIMS)
		return ds_error_set(err, DS_ERR_DATA, "bad_attr",
				    "attribute 'shape': expected a list of at most %d integers", DS_MAX_DIMS);
	out[0].dtype = in[0].dtype;
	out[0].ndim = (int)json_array_size(shape);
	for (int d = 0; d < out[0].ndim; d++) {
		const json_t *v = json_array_get(shape, (size_t)d);
		int64_t x = json_is_integer(v) ? json_integer_value(v) : -2;

		if (x < -1 || x > DS_OP_DIM_MAX)
			return ds_error_set(err, DS_ERR_DATA, "bad_attr",
					    "attribute 'shape': entry %d is not an integer in [-1, %" PRId64 "]",
					    d, DS_OP_DIM_MAX);
		if (x == 0) {
			if (d >= in[0].ndim)
				return ds_error_set(err, DS_ERR_DATA, "bad_attr",
						    "attribute 'shape': entry %d is 0 but the input has %d dims",
						    d, in[0].ndim);
			x = in[0].dim[d];
		}
		if (x == -1) {
			if (rest >= 0)
				return ds_error_set(err, DS_ERR_DATA, "bad_attr",
						    "attribute 'shape': more than one -1");
			rest = d;
		} else {
			known = ds_op_sat_mul(known, x);
		}
		out[0].dim[d] = x;
	}
	if (rest >= 0 && known > 0 && numel % known == 0) {
		out[0].dim[rest] = numel / known;
		known = numel;
	}
	if (known != numel || numel == INT64_MAX)
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "input '%s' %s cannot be reshaped to %s", ds_node_input(node, 0),
				    ds_op_shape_text(&in[0], xs, sizeof xs),
				    ds_op_shape_text(&out[0], os, sizeof os));
	return 0;
}

/* ---------------------------------------------------------------- kernels */

/* The broadcast of the two inputs as this call's tensors have them. */
static int bcast_of(const ds_op_args *a, ds_cpu_bcast *bc, ds_error *err)
{
	char as[128], bs[128];
	ds_shape sa = { .ndim = a->in[0]->ndim }, sb = { .ndim = a->in[1]->ndim };

	if (a->in[0]->dtype != DS_F32 || a->in[1]->dtype != DS_F32)
		return ds_error_set(err, DS_ERR_DATA, "bad_dtype", "inputs '%s' and '%s': expected F32",
				    ds_node_input(a->node, 0), ds_node_input(a->node, 1));
	if (ds_cpu_bcast_init(bc, a->in[0]->ndim, a->in[0]->shape, a->in[1]->ndim, a->in[1]->shape) == 0)
		return 0;
	memcpy(sa.dim, a->in[0]->shape, sizeof sa.dim);
	memcpy(sb.dim, a->in[1]->shape, sizeof sb.dim);
	return ds_error_set(err, DS_ERR_DATA, "shape_mismatch", "inputs '%s' %s and '%s' %s do not broadcast",
			    ds_node_input(a->node, 0), ds_op_shape_text(&sa, as, sizeof as),
			    ds_node_input(a->node, 1), ds_op_shape_text(&sb, bs, sizeof bs));
}

static int bcast_forward(const ds_op_args *a, int op, ds_error *err)
{
	ds_cpu_bcast bc;
	int rc = bcast_of(a, &bc, err);

	if (rc)
		return rc;
	ds_cpu_bcast_forward(&bc, op, a->in[0]->data, a->in[1]->data, a->out[0]->data);
	return 0;
}

/* Each input's gradient is grad_out times the other input, summed over
 * the dims it was broadcast along. */
static int mul_backward(const ds_op_args *a, ds_error *err)
{
	ds_cpu_bcast bc;
	int rc = bcast_of(a, &bc, err);

	if (rc)
		return rc;
	for (int i = 0; i < 2; i++)
		if (a->grad_in[i])
			ds_cpu_bcast_backward(&bc, i, a->grad_out[0]->data, a->in[1 - i]->data,
					      a->grad_in[i]->data);
	return 0;
}

static int add_forward(const ds_op_args *a, ds_error *err)
{
	return bcast_forward(a, 0, err);
}

/* From the gradients' shapes alone: add's backward reads no input. */
static int add_backward(const ds_op_args *a, ds_error *err)
{
	const ds_tensor *g = a->grad_out[0];

	for (int i = 0; i < 2; i++) {
		const ds_tensor *t = a->grad_in[i];
		ds_cpu_bcast bc;

		if (!t)
			continue;
		if (ds_cpu_bcast_init(&bc, t->ndim, t->shape, g->ndim, g->shape) != 0 || bc.numel != ds_tensor_numel(g))
			return ds_error_set(err, DS_ERR_RUN, "shape_mismatch",
					    "add: the gradient of input '%s' does not broadcast to the output",
					    ds_node_input(a->node, (size_t)i));
		ds_cpu_bcast_backward(&bc, 0, g->data, NULL, t->data);
	}
	return 0;
}

static int mul_forward(const ds_op_args *a, ds_error *err)
{
	return bcast_forward(a, 1, err);
}

/* The output as [outer, out_len * inner]; input i fills its share of each
 * row.  Works on bytes, so any dtype concatenates. */
static void concat_dims(const ds_op_args *a, const ds_tensor *out, int64_t *outer, int64_t *inner)
{
	int axis = (int)ds_node_attr_int(a->node, "axis", 1);

	if (axis < 0)
		axis += out->ndim;
	*outer = *inner = 1;
	for (int d = 0; d < out->ndim; d++) {
		if (d < axis)
			*outer *= out->shape[d];
		else if (d > axis)
			*inner *= out->shape[d];
	}
}

static int64_t concat_len(const ds_op_args *a, const ds_tensor *t)
{
	int axis = (int)ds_node_attr_int(a->node, "axis", 1);

	return t->shape[axis < 0 ? axis + t->ndim : axis];
}

static int concat_forward(const ds_op_args *a, ds_error *err)
{
	const ds_tensor *out = a->out[0];
	int64_t outer, inner, off = 0, es = (int64_t)ds_dtype_size(out->dtype);
	int64_t row = concat_len(a, out);

	(void)err;
	concat_dims(a, out, &outer, &inner);
	row *= inner * es;
	for (int i = 0; i < a->n_in; i++) {
		int64_t bytes = concat_len(a, a->in[i]) * inner * es;

		ds_cpu_copy_rows(out->data, row, off, a->in[i]->data, bytes, 0, bytes, outer);
		off += bytes;
	}
	return 0;
}

/* Reads only the inputs' shapes (to find each share), not their data. */
static int concat_backward(const ds_op_args *a, ds_error *err)
{
	const ds_tensor *g = a->grad_out[0];
	int64_t outer, inner, off = 0, row = concat_len(a, g);

	(void)err;
	concat_dims(a, g, &outer, &inner);
	row *= inner;
	for (int i = 0; i < a->n_in; i++) {
		int64_t len = concat_len(a, a->in[i]) * inner;

		if (a->grad_in[i])
			ds_cpu_add_rows(a->grad_in[i]->data, len, 0, g->data, row, off, len, outer);
		off += len;
	}
	return 0;
}

/* flatten and reshape keep the bytes in order: a copy forward (none when
 * the planner makes the output a view of the input), a sum backward. */
static int copy_forward(const ds_op_args *a, ds_error *err)
{
	(void)err;
	if (a->out[0]->data != a->in[0]->data)
		memcpy(a->out[0]->data, a->in[0]->data, ds_tensor_nbytes(a->out[0]));
	return 0;
}

static int copy_backward(const ds_op_args *a, ds_error *err)
{
	(void)err;
	if (a->grad_in[0])
		ds_cpu_accumulate(a->grad_in[0]->data, a->grad_out[0]->data, ds_tensor_numel(a->grad_out[0]));
	return 0;
}

#define CPU_KERNELS(fwd, bwd) \
	.forward = { [DS_BACKEND_CPU] = fwd }, .backward = { [DS_BACKEND_CPU] = bwd }

const ds_op ds_ops_shape[] = {
	{ .name = "add", .min_inputs = 2, .max_inputs = 2, .num_outputs = 1, .attrs = no_attrs, .infer = broadcast_infer, .flops = broadcast_flops,
	  CPU_KERNELS(add_forward, add_backward), .backward_needs = 0 },
	{ .name = "mul", .min_inputs = 2, .max_inputs = 2, .num_outputs = 1, .attrs = no_attrs, .infer = broadcast_infer, .flops = broadcast_flops,
	  CPU_KERNELS(mul_forward, mul_backward), .backward_needs = DS_NEEDS_IN(0) | DS_NEEDS_IN(1) },
	{ .name = "concat", .min_inputs = 1, .max_inputs = -1, .num_outputs = 1, .attrs = concat_attrs, .infer = concat_infer, .flops = ds_op_flops_zero,
	  CPU_KERNELS(concat_forward, concat_backward), .backward_needs = 0 },
	{ .name = "flatten", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = flatten_attrs, .infer = flatten_infer, .flops = ds_op_flops_zero,
	  CPU_KERNELS(copy_forward, copy_backward), .backward_needs = 0 },
	{ .name = "reshape", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = reshape_attrs, .infer = reshape_infer, .flops = ds_op_flops_zero,
	  CPU_KERNELS(copy_forward, copy_backward), .backward_needs = 0 },
	{ .name = NULL },
};
