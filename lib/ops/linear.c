/* linear.c - fully connected layers: y = x W^T + b over the last dim.  An
 * optional fourth input (after a bias), the residual that ds-optimize's
 * fuse-add moves in, is added after the bias and before the activation:
 * y = act(x W^T + b + r). */
#include "config.h"
#include "ops.h"
#include "cpu/conv.h"
#include "cpu/elementwise.h"

#include <inttypes.h>
#include <string.h>

static const char *const linear_attrs[] = { "activation", NULL };

/* x [..., in], weight [out, in], bias [out] -> [..., out] */
static int linear_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
			ds_error *err)
{
	const ds_shape *x = &in[0], *w = &in[1];
	char xs[128], ws[128];
	int act, rc;

	if ((rc = ds_op_check_ndim(node, in, 0, 1, DS_MAX_DIMS, err)) ||
	    (rc = ds_op_check_ndim(node, in, 1, 2, 2, err)) || (rc = ds_op_epilogue(node, &act, err)))
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
	if (n_in > 3 && (in[3].ndim != out[0].ndim || in[3].dtype != x->dtype ||
			 memcmp(in[3].dim, out[0].dim, sizeof out[0].dim[0] * (size_t)out[0].ndim))) {
		char os[128], rs[128];

		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "residual '%s' %s is not shaped like the output %s", ds_node_input(node, 3),
				    ds_op_shape_text(&in[3], rs, sizeof rs), ds_op_shape_text(&out[0], os, sizeof os));
	}
	return 0;
}

/* 2 per multiply-add, plus 1 per output for the bias and 1 for a
 * residual. */
static int64_t linear_flops(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	int64_t outs = ds_op_numel(&out[0]);
	int64_t f = ds_op_sat_mul(ds_op_sat_mul(outs, in[1].dim[1]), 2);

	(void)node;
	if (n_in > 3)
		f = ds_op_sat_add(f, outs);
	return n_in > 2 ? ds_op_sat_add(f, outs) : f;
}

/* Every leading dim of x is one row of a single GEMM. */
static int64_t linear_rows(const ds_tensor *x)
{
	int64_t m = 1;

	for (int i = 0; i < x->ndim - 1; i++)
		m *= x->shape[i];
	return m;
}

static int linear_forward_cpu(const ds_op_args *a, ds_error *err)
{
	const ds_tensor *x = a->in[0], *w = a->in[1];
	int act, rc;

	if ((rc = ds_op_epilogue(a->node, &act, err)))
		return rc;
	/* Inference sums each output in one order, so that a record does not
	 * depend on its batch; training takes OpenBLAS's faster GEMM. */
	(a->training ? ds_linear_forward : ds_linear_forward_fixed)(linear_rows(x), w->shape[1], w->shape[0],
								     x->data, w->data,
								     a->n_in > 2 ? a->in[2]->data : NULL,
								     a->out[0]->data);
	/* y + r as the add node computed it, before the activation. */
	if (a->n_in > 3)
		ds_cpu_accumulate(a->out[0]->data, a->in[3]->data, ds_tensor_numel(a->out[0]));
	if (act)
		ds_cpu_act_forward((ds_cpu_act)(act - 1), 0.0f, a->out[0]->data, a->out[0]->data,
				   ds_tensor_numel(a->out[0]));
	return 0;
}

static int linear_backward_cpu(const ds_op_args *a, ds_error *err)
{
	const ds_tensor *x = a->in[0], *w = a->in[1];
	ds_tensor *gx = a->grad_in[0], *gw = a->grad_in[1], *gb = a->n_in > 2 ? a->grad_in[2] : NULL;

	if ((ds_node_attrs(a->node) && json_object_get(ds_node_attrs(a->node), "activation")) || a->n_in > 3)
		return ds_error_set(err, DS_ERR_DATA, "inference_only",
				    "node '%s': a fused %s is for inference; train the model before ds-optimize",
				    ds_node_name(a->node), a->n_in > 3 ? "residual" : "activation");
	ds_linear_backward(linear_rows(a->grad_out[0]), w->shape[1], w->shape[0], x->data, w->data,
			   a->grad_out[0]->data, gx ? gx->data : NULL, gw ? gw->data : NULL,
			   gb ? gb->data : NULL);
	return 0;
}

const ds_op ds_ops_linear[] = {
	{ .name = "linear", .min_inputs = 2, .max_inputs = 4, .num_outputs = 1, .attrs = linear_attrs, .infer = linear_infer, .flops = linear_flops,
	  .forward = { [DS_BACKEND_CPU] = linear_forward_cpu }, .backward = { [DS_BACKEND_CPU] = linear_backward_cpu },
	  .backward_needs = DS_NEEDS_IN(0) | DS_NEEDS_IN(1) },
	{ .name = NULL },
};
