/* norm.c - normalization: batchnorm over the channel dim (NC...), layernorm
 * over the trailing dims from axis on. */
#include "config.h"
#include "ops.h"
#include "cpu/elementwise.h"

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

/* ---------------------------------------------------------------- kernels */

static int want_f32(const ds_op_args *a, int n, ds_error *err)
{
	for (int i = 0; i < n && i < a->n_in; i++)
		if (a->in[i]->dtype != DS_F32)
			return ds_error_set(err, DS_ERR_DATA, "bad_dtype", "input '%s': expected F32, got %s",
					    ds_node_input(a->node, (size_t)i), ds_dtype_name(a->in[i]->dtype));
	return 0;
}

static int no_saved(const ds_op_args *a, ds_error *err)
{
	return ds_error_set(err, DS_ERR_RUN, "no_saved", "%s: backward without the state forward saves",
			    ds_node_op(a->node));
}

static float *data_or_null(ds_tensor *const *t, int i, int n)
{
	return i < n && t[i] ? t[i]->data : NULL;
}

/* Per channel: the mean and 1/sqrt(var + eps) that normalised, the
 * batch's while training and the running ones at inference. */
static size_t batchnorm_saved(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	(void)node;
	(void)n_in;
	(void)out;
	return 2 * (size_t)in[0].dim[1] * sizeof(float);
}

static void batchnorm_dims(const ds_tensor *x, int64_t *n, int64_t *c, int64_t *hw)
{
	*n = x->shape[0];
	*c = x->shape[1];
	*hw = 1;
	for (int d = 2; d < x->ndim; d++)
		*hw *= x->shape[d];
}

static int batchnorm_forward(const ds_op_args *a, ds_error *err)
{
	float eps = (float)ds_node_attr_float(a->node, "eps", 1e-5);
	float momentum = (float)ds_node_attr_float(a->node, "momentum", 0.1);
	float *mean = a->saved, *invstd;
	int64_t n, c, hw;
	int rc = want_f32(a, 5, err);

	if (rc)
		return rc;
	batchnorm_dims(a->in[0], &n, &c, &hw);
	invstd = mean ? mean + c : NULL;
	if (a->training)
		ds_cpu_batchnorm_train(a->in[0]->data, n, c, hw, a->in[1]->data, a->in[2]->data, eps,
				       momentum, a->in[3]->data, a->in[4]->data, a->out[0]->data, mean,
				       invstd);
	else
		ds_cpu_batchnorm_infer(a->in[0]->data, n, c, hw, a->in[1]->data, a->in[2]->data, eps,
				       a->in[3]->data, a->in[4]->data, a->out[0]->data, mean, invstd);
	return 0;
}

static int batchnorm_backward(const ds_op_args *a, ds_error *err)
{
	const float *mean = a->saved;
	int64_t n, c, hw;

	if (!mean)
		return no_saved(a, err);
	batchnorm_dims(a->in[0], &n, &c, &hw);
	ds_cpu_batchnorm_backward(a->in[0]->data, a->grad_out[0]->data, n, c, hw, a->in[1]->data, mean,
				  mean + c, a->training, data_or_null(a->grad_in, 0, a->n_in),
				  data_or_null(a->grad_in, 1, a->n_in), data_or_null(a->grad_in, 2, a->n_in));
	return 0;
}

/* x as [rows, d]: d the elements from axis on. */
static void layernorm_dims(const ds_node *node, int ndim, const int64_t *shape, int64_t *rows, int64_t *d)
{
	int64_t axis = ds_node_attr_int(node, "axis", -1);

	if (axis < 0)
		axis += ndim;
	*rows = *d = 1;
	for (int i = 0; i < ndim; i++) {
		if (i < axis)
			*rows *= shape[i];
		else
			*d *= shape[i];
	}
}

/* Per row: mean and 1/sqrt(var + eps). */
static size_t layernorm_saved(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	int64_t rows, d;

	(void)n_in;
	(void)out;
	layernorm_dims(node, in[0].ndim, in[0].dim, &rows, &d);
	return 2 * (size_t)rows * sizeof(float);
}

static int layernorm_forward(const ds_op_args *a, ds_error *err)
{
	float eps = (float)ds_node_attr_float(a->node, "eps", 1e-5);
	float *mean = a->saved;
	int64_t rows, d;
	int rc = want_f32(a, a->n_in, err);

	if (rc)
		return rc;
	layernorm_dims(a->node, a->in[0]->ndim, a->in[0]->shape, &rows, &d);
	ds_cpu_layernorm_forward(a->in[0]->data, rows, d, data_or_null(a->in, 1, a->n_in),
				 data_or_null(a->in, 2, a->n_in), eps, a->out[0]->data, mean,
				 mean ? mean + rows : NULL);
	return 0;
}

static int layernorm_backward(const ds_op_args *a, ds_error *err)
{
	const float *mean = a->saved;
	int64_t rows, d;

	if (!mean)
		return no_saved(a, err);
	layernorm_dims(a->node, a->in[0]->ndim, a->in[0]->shape, &rows, &d);
	ds_cpu_layernorm_backward(a->in[0]->data, a->grad_out[0]->data, rows, d,
				  data_or_null(a->in, 1, a->n_in), mean, mean + rows,
				  data_or_null(a->grad_in, 0, a->n_in), data_or_null(a->grad_in, 1, a->n_in),
				  data_or_null(a->grad_in, 2, a->n_in));
	return 0;
}

const ds_op ds_ops_norm[] = {
	{ .name = "batchnorm", .min_inputs = 5, .max_inputs = 5, .num_outputs = 1, .attrs = batchnorm_attrs, .infer = batchnorm_infer, .flops = batchnorm_flops,
	  .forward = { [DS_BACKEND_CPU] = batchnorm_forward }, .backward = { [DS_BACKEND_CPU] = batchnorm_backward },
	  .saved = batchnorm_saved, .backward_needs = DS_NEEDS_IN(0) | DS_NEEDS_IN(1), .no_grad = (1u << 3) | (1u << 4) },
	{ .name = "layernorm", .min_inputs = 1, .max_inputs = 3, .num_outputs = 1, .attrs = layernorm_attrs, .infer = layernorm_infer, .flops = layernorm_flops,
	  .forward = { [DS_BACKEND_CPU] = layernorm_forward }, .backward = { [DS_BACKEND_CPU] = layernorm_backward },
	  .saved = layernorm_saved, .backward_needs = DS_NEEDS_IN(0) | DS_NEEDS_IN(1) },
	{ .name = NULL },
};
