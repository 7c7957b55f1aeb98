/* norm.c - normalization: batchnorm over the channel dim (NC...), layernorm
 * over the trailing dims from axis on. */
#include "config.h"
#include "ops.h"

#include <inttypes.h>

static const char *const batchnorm_attrs[] = { "eps", "momentum", NULL };
static const char *const layernorm_attrs[] = { "eps", "axis", NULL };

static int norm_eps(const ds_node *node, ds_error *err)
{
	double eps;

	return ds_op_attr_float(node, "eps", 1e-5, 0.0, 1.0, &eps, err);
}

/* x [N, C, ...], gamma, beta, running_mean, running_var [C] -> x */
static int batchnorm_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
			   ds_error *err)
{
	double momentum;
	int rc;

	if ((rc = norm_eps(node, err)) ||
	    (rc = ds_op_attr_float(node, "momentum", 0.1, 0.0, 1.0, &momentum, err)) ||
	    (rc = ds_op_check_ndim(node, in, 0, 2, DS_MAX_DIMS, err)))
		return rc;
	for (int i = 1; i < n_in; i++)
		if ((rc = ds_op_check_vector(node, in, i, in[0].dim[1], err)))
			return rc;
	out[0] = in[0];
	return 0;
}

/* Folded into a scale and a shift at inference: 2 per element. */
static int64_t batchnorm_flops(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	(void)node;
	(void)in;
	(void)n_in;
	return ds_op_sat_mul(ds_op_numel(&out[0]), 2);
}

/* x [..., D1..Dk] with axis at D1; gamma and beta [D1..Dk] -> x */
static int layernorm_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
			   ds_error *err)
{
	char xs[128], ps[128];
	int axis, rc;

	if ((rc = norm_eps(node, err)) ||
	    (rc = ds_op_check_ndim(node, in, 0, 1, DS_MAX_DIMS, err)) ||
	    (rc = ds_op_attr_axis(node, "axis", -1, in[0].ndim, 0, &axis, err)))
		return rc;
	for (int i = 1; i < n_in; i++) {
		int same = in[i].ndim == in[0].ndim - axis;

		for (int d = 0; same && d < in[i].ndim; d++)
			same = in[i].dim[d] == in[0].dim[axis + d];
		if (!same)
			return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
					    "input '%s' %s does not match the normalized dims of '%s' %s from axis %d",
					    ds_node_input(node, (size_t)i), ds_op_shape_text(&in[i], ps, sizeof ps),
					    ds_node_input(node, 0), ds_op_shape_text(&in[0], xs, sizeof xs), axis);
	}
	out[0] = in[0];
	return 0;
}

/* Mean, variance, normalize (5 per element), then scale and shift (2). */
static int64_t layernorm_flops(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	(void)node;
	(void)in;
	return ds_op_sat_mul(ds_op_numel(&out[0]), n_in > 1 ? 7 : 5);
}

const ds_op ds_ops_norm[] = {
	{ .name = "batchnorm", .min_inputs = 5, .max_inputs = 5, .num_outputs = 1, .attrs = batchnorm_attrs, .infer = batchnorm_infer, .flops = batchnorm_flops },
	{ .name = "layernorm", .min_inputs = 1, .max_inputs = 3, .num_outputs = 1, .attrs = layernorm_attrs, .infer = layernorm_infer, .flops = layernorm_flops },
	{ .name = NULL },
};
