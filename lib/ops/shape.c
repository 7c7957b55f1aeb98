/* shape.c - ops that combine or rearrange tensors: add and mul with numpy
 * broadcasting, concat, flatten and reshape (ONNX semantics). */
#include "config.h"
#include "ops.h"

#include <inttypes.h>

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

const ds_op ds_ops_shape[] = {
	{ .name = "add", .min_inputs = 2, .max_inputs = 2, .num_outputs = 1, .attrs = no_attrs, .infer = broadcast_infer, .flops = broadcast_flops },
	{ .name = "mul", .min_inputs = 2, .max_inputs = 2, .num_outputs = 1, .attrs = no_attrs, .infer = broadcast_infer, .flops = broadcast_flops },
	{ .name = "concat", .min_inputs = 1, .max_inputs = -1, .num_outputs = 1, .attrs = concat_attrs, .infer = concat_infer, .flops = ds_op_flops_zero },
	{ .name = "flatten", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = flatten_attrs, .infer = flatten_infer, .flops = ds_op_flops_zero },
	{ .name = "reshape", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = reshape_attrs, .infer = reshape_infer, .flops = ds_op_flops_zero },
	{ .name = NULL },
};
