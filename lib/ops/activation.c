/* activation.c - elementwise activations, dropout and softmax: the output
 * has the shape and dtype of the input.
 *
 * FLOPs per element are rough counts of the arithmetic a fast kernel does
 * (a transcendental such as exp counted as a few): relu 1, relu6 2,
 * leaky_relu 2, hardswish 4, sigmoid 4, silu 5, tanh 5, gelu 8, softmax 5,
 * dropout 0 (identity at inference). */
#include "config.h"
#include "ops.h"

static const char *const no_attrs[] = { NULL };
static const char *const leaky_relu_attrs[] = { "alpha", NULL };
static const char *const gelu_attrs[] = { "approximate", NULL };
static const char *const dropout_attrs[] = { "p", NULL };
static const char *const softmax_attrs[] = { "axis", NULL };

#define PER_ELEMENT_FLOPS(fn, cost)                                                         \
	static int64_t fn(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out) \
	{                                                                                   \
		(void)node;                                                         \
		(void)in;                                                           \
		(void)n_in;                                                         \
		return ds_op_sat_mul(ds_op_numel(&out[0]), cost);                   \
	}

PER_ELEMENT_FLOPS(flops_1, 1)
PER_ELEMENT_FLOPS(flops_2, 2)
PER_ELEMENT_FLOPS(flops_4, 4)
PER_ELEMENT_FLOPS(flops_5, 5)
PER_ELEMENT_FLOPS(flops_8, 8)

static int leaky_relu_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
			    ds_error *err)
{
	double alpha;
	int rc = ds_op_attr_float(node, "alpha", 0.01, -1e30, 1e30, &alpha, err);

	return rc ? rc : ds_op_infer_same(node, in, n_in, out, err);
}

static int gelu_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
		      ds_error *err)
{
	static const char *const modes[] = { "none", "tanh", NULL };
	int mode;
	int rc = ds_op_attr_choice(node, "approximate", modes, 0, &mode, err);

	return rc ? rc : ds_op_infer_same(node, in, n_in, out, err);
}

/* p is the probability of dropping while training: 1 would drop all. */
static int dropout_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
			 ds_error *err)
{
	double p;
	int rc = ds_op_attr_float(node, "p", 0.5, 0.0, 0.999999, &p, err);

	return rc ? rc : ds_op_infer_same(node, in, n_in, out, err);
}

static int softmax_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
			 ds_error *err)
{
	int axis, rc;

	if ((rc = ds_op_check_ndim(node, in, 0, 1, DS_MAX_DIMS, err)) ||
	    (rc = ds_op_attr_axis(node, "axis", -1, in[0].ndim, 0, &axis, err)))
		return rc;
	return ds_op_infer_same(node, in, n_in, out, err);
}

const ds_op ds_ops_activation[] = {
	{ .name = "relu", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = no_attrs, .infer = ds_op_infer_same, .flops = flops_1 },
	{ .name = "relu6", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = no_attrs, .infer = ds_op_infer_same, .flops = flops_2 },
	{ .name = "leaky_relu", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = leaky_relu_attrs, .infer = leaky_relu_infer, .flops = flops_2 },
	{ .name = "gelu", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = gelu_attrs, .infer = gelu_infer, .flops = flops_8 },
	{ .name = "sigmoid", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = no_attrs, .infer = ds_op_infer_same, .flops = flops_4 },
	{ .name = "tanh", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = no_attrs, .infer = ds_op_infer_same, .flops = flops_5 },
	{ .name = "silu", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = no_attrs, .infer = ds_op_infer_same, .flops = flops_5 },
	{ .name = "hardswish", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = no_attrs, .infer = ds_op_infer_same, .flops = flops_4 },
	{ .name = "dropout", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = dropout_attrs, .infer = dropout_infer, .flops = ds_op_flops_zero },
	{ .name = "softmax", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = softmax_attrs, .infer = softmax_infer, .flops = flops_5 },
	{ .name = NULL },
};
