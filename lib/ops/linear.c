/* linear.c - fully connected layers: y = x W^T + b over the last dim. */
#include "config.h"
#include "ops.h"

#include <inttypes.h>

static const char *const linear_attrs[] = { NULL };

/* x [..., in], weight [out, in], bias [out] -> [..., out] */
static int linear_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
			ds_error *err)
{
	const ds_shape *x = &in[0], *w = &in[1];
	char xs[128], ws[128];
	int rc;

	if ((rc = ds_op_check_ndim(node, in, 0, 1, DS_MAX_DIMS, err)) ||
	    (rc = ds_op_check_ndim(node, in, 1, 2, 2, err)))
		return rc;
	if (x->dim[x->ndim - 1] != w->dim[1])
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "weight '%s' %s takes %" PRId64 " input features, input '%s' %s has %"
				    PRId64, ds_node_input(node, 1), ds_op_shape_text(w, ws, sizeof ws),
				    w->dim[1], ds_node_input(node, 0), ds_op_shape_text(x, xs, sizeof xs),
				    x->dim[x->ndim - 1]);
	if (n_in > 2 && (rc = ds_op_check_vector(node, in, 2, w->dim[0], err)))
		return rc;
	out[0] = *x;
	out[0].dim[x->ndim - 1] = w->dim[0];
	return 0;
}

/* 2 per multiply-add, plus 1 per output for the bias. */
static int64_t linear_flops(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	int64_t outs = ds_op_numel(&out[0]);
	int64_t f = ds_op_sat_mul(ds_op_sat_mul(outs, in[1].dim[1]), 2);

	(void)node;
	return n_in > 2 ? ds_op_sat_add(f, outs) : f;
}

const ds_op ds_ops_linear[] = {
	{ .name = "linear", .min_inputs = 2, .max_inputs = 3, .num_outputs = 1, .attrs = linear_attrs, .infer = linear_infer, .flops = linear_flops },
	{ .name = NULL },
};
