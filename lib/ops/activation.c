/* activation.c - elementwise activations, dropout and softmax: the output
 * has the shape and dtype of the input.
 *
 * FLOPs per element are rough counts of the arithmetic a fast kernel does
 * (a transcendental such as exp counted as a few): relu 1, relu6 2,
 * leaky_relu 2, hardswish 4, sigmoid 4, silu 5, tanh 5, gelu 8, softmax 5,
 * dropout 0 (identity at inference). */
#include "config.h"
#include "ops.h"
#include "cpu/elementwise.h"

#include <string.h>

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

/* ---------------------------------------------------------------- kernels */

static int want_f32(const ds_op_args *a, ds_error *err)
{
	if (a->in[0]->dtype == DS_F32)
		return 0;
	return ds_error_set(err, DS_ERR_DATA, "bad_dtype", "input '%s': expected F32, got %s",
			    ds_node_input(a->node, 0), ds_dtype_name(a->in[0]->dtype));
}

static float leaky_alpha(const ds_op_args *a)
{
	return (float)ds_node_attr_float(a->node, "alpha", 0.01);
}

static float no_alpha(const ds_op_args *a)
{
	(void)a;
	return 0.0f;
}

static int act_forward(const ds_op_args *a, ds_cpu_act act, float alpha, ds_error *err)
{
	int rc = want_f32(a, err);

	if (rc)
		return rc;
	ds_cpu_act_forward(act, alpha, a->in[0]->data, a->out[0]->data, ds_tensor_numel(a->out[0]));
	return 0;
}

/* Backward reads the output where the derivative can be told from it
 * (relu, relu6, sigmoid, tanh), so the input need not be kept. */
static int act_backward(const ds_op_args *a, ds_cpu_act act, float alpha, ds_error *err)
{
	const ds_tensor *t = ds_cpu_act_uses_output(act) ? a->out[0] : a->in[0];

	(void)err;
	if (!a->grad_in[0])
		return 0;
	ds_cpu_act_backward(act, alpha, t->data, a->grad_out[0]->data, a->grad_in[0]->data,
			    ds_tensor_numel(a->grad_out[0]));
	return 0;
}

#define ACT_KERNELS(name, act, alpha)                                                \
	static int name##_forward(const ds_op_args *a, ds_error *err)                \
	{                                                                            \
		return act_forward(a, act, alpha(a), err);                           \
	}                                                                            \
	static int name##_backward(const ds_op_args *a, ds_error *err)               \
	{                                                                            \
		return act_backward(a, act, alpha(a), err);                          \
	}

ACT_KERNELS(relu, DS_CPU_RELU, no_alpha)
ACT_KERNELS(relu6, DS_CPU_RELU6, no_alpha)
ACT_KERNELS(leaky_relu, DS_CPU_LEAKY_RELU, leaky_alpha)
ACT_KERNELS(sigmoid, DS_CPU_SIGMOID, no_alpha)
ACT_KERNELS(tanh, DS_CPU_TANH, no_alpha)
ACT_KERNELS(silu, DS_CPU_SILU, no_alpha)
ACT_KERNELS(hardswish, DS_CPU_HARDSWISH, no_alpha)

static ds_cpu_act gelu_kind(const ds_op_args *a)
{
	const json_t *attrs = ds_node_attrs(a->node);
	const char *mode = attrs ? json_string_value(json_object_get(attrs, "approximate")) : NULL;

	return mode && strcmp(mode, "tanh") == 0 ? DS_CPU_GELU_TANH : DS_CPU_GELU;
}

static int gelu_forward(const ds_op_args *a, ds_error *err)
{
	return act_forward(a, gelu_kind(a), 0.0f, err);
}

static int gelu_backward(const ds_op_args *a, ds_error *err)
{
	return act_backward(a, gelu_kind(a), 0.0f, err);
}

/* Dropout draws its mask from args->seed, so backward, given the same
 * seed, drops the same elements without a stored mask. */
static int dropout_forward(const ds_op_args *a, ds_error *err)
{
	float p = (float)ds_node_attr_float(a->node, "p", 0.5);
	int rc = want_f32(a, err);

	if (rc)
		return rc;
	if (a->training && p > 0.0f)
		ds_cpu_dropout_forward(a->in[0]->data, a->out[0]->data, ds_tensor_numel(a->out[0]), p,
				       a->seed);
	else if (a->out[0]->data != a->in[0]->data)
		memcpy(a->out[0]->data, a->in[0]->data, ds_tensor_nbytes(a->out[0]));
	return 0;
}

static int dropout_backward(const ds_op_args *a, ds_error *err)
{
	float p = (float)ds_node_attr_float(a->node, "p", 0.5);
	int64_t n = ds_tensor_numel(a->grad_out[0]);

	(void)err;
	if (!a->grad_in[0])
		return 0;
	if (a->training && p > 0.0f)
		ds_cpu_dropout_backward(a->grad_out[0]->data, a->grad_in[0]->data, n, p, a->seed);
	else
		ds_cpu_accumulate(a->grad_in[0]->data, a->grad_out[0]->data, n);
	return 0;
}

/* x as [outer, k, inner] around the axis. */
static int softmax_dims(const ds_op_args *a, const ds_tensor *t, int64_t *outer, int64_t *k,
			int64_t *inner, ds_error *err)
{
	int axis, rc = ds_op_attr_axis(a->node, "axis", -1, t->ndim, 0, &axis, err);

	if (rc)
		return rc;
	*outer = *inner = 1;
	for (int d = 0; d < t->ndim; d++) {
		if (d < axis)
			*outer *= t->shape[d];
		else if (d > axis)
			*inner *= t->shape[d];
	}
	*k = t->shape[axis];
	return 0;
}

static int softmax_forward(const ds_op_args *a, ds_error *err)
{
	int64_t outer, k, inner;
	int rc;

	if ((rc = want_f32(a, err)) || (rc = softmax_dims(a, a->out[0], &outer, &k, &inner, err)))
		return rc;
	ds_cpu_softmax_forward(a->in[0]->data, outer, k, inner, a->out[0]->data);
	return 0;
}

static int softmax_backward(const ds_op_args *a, ds_error *err)
{
	int64_t outer, k, inner;
	int rc;

	if (!a->grad_in[0])
		return 0;
	if ((rc = softmax_dims(a, a->grad_out[0], &outer, &k, &inner, err)))
		return rc;
	ds_cpu_softmax_backward(a->out[0]->data, a->grad_out[0]->data, outer, k, inner,
				a->grad_in[0]->data);
	return 0;
}

#define CPU_KERNELS(name)                                                          \
	.forward = { [DS_BACKEND_CPU] = name##_forward },                            \
	.backward = { [DS_BACKEND_CPU] = name##_backward }

const ds_op ds_ops_activation[] = {
	{ .name = "relu", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = no_attrs, .infer = ds_op_infer_same, .flops = flops_1,
	  CPU_KERNELS(relu), .backward_needs = DS_NEEDS_OUT(0) },
	{ .name = "relu6", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = no_attrs, .infer = ds_op_infer_same, .flops = flops_2,
	  CPU_KERNELS(relu6), .backward_needs = DS_NEEDS_OUT(0) },
	{ .name = "leaky_relu", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = leaky_relu_attrs, .infer = leaky_relu_infer, .flops = flops_2,
	  CPU_KERNELS(leaky_relu), .backward_needs = DS_NEEDS_IN(0) },
	{ .name = "gelu", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = gelu_attrs, .infer = gelu_infer, .flops = flops_8,
	  CPU_KERNELS(gelu), .backward_needs = DS_NEEDS_IN(0) },
	{ .name = "sigmoid", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = no_attrs, .infer = ds_op_infer_same, .flops = flops_4,
	  CPU_KERNELS(sigmoid), .backward_needs = DS_NEEDS_OUT(0) },
	{ .name = "tanh", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = no_attrs, .infer = ds_op_infer_same, .flops = flops_5,
	  CPU_KERNELS(tanh), .backward_needs = DS_NEEDS_OUT(0) },
	{ .name = "silu", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = no_attrs, .infer = ds_op_infer_same, .flops = flops_5,
	  CPU_KERNELS(silu), .backward_needs = DS_NEEDS_IN(0) },
	{ .name = "hardswish", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = no_attrs, .infer = ds_op_infer_same, .flops = flops_4,
	  CPU_KERNELS(hardswish), .backward_needs = DS_NEEDS_IN(0) },
	{ .name = "dropout", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = dropout_attrs, .infer = dropout_infer, .flops = ds_op_flops_zero,
	  CPU_KERNELS(dropout), .backward_needs = 0 },
	{ .name = "softmax", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = softmax_attrs, .infer = softmax_infer, .flops = flops_5,
	  CPU_KERNELS(softmax), .backward_needs = DS_NEEDS_OUT(0) },
	{ .name = NULL },
};

/* The epilogue names, in ds_cpu_act order where the kernels have them. */
static const struct {
	const char *name;
	ds_cpu_act act;
} epilogues[] = {
	{ "relu", DS_CPU_RELU }, { "relu6", DS_CPU_RELU6 }, { "gelu", DS_CPU_GELU },
	{ "sigmoid", DS_CPU_SIGMOID }, { "tanh", DS_CPU_TANH }, { "silu", DS_CPU_SILU },
	{ "hardswish", DS_CPU_HARDSWISH },
};

int ds_op_epilogue(const ds_node *node, int *act, ds_error *err)
{
	const json_t *attrs = ds_node_attrs(node);
	const json_t *v = attrs ? json_object_get(attrs, "activation") : NULL;

	*act = 0;
	if (!v)
		return 0;
	for (size_t i = 0; json_is_string(v) && i < sizeof epilogues / sizeof epilogues[0]; i++)
		if (!strcmp(json_string_value(v), epilogues[i].name)) {
			*act = 1 + (int)epilogues[i].act;
			return 0;
		}
	return ds_error_set(err, DS_ERR_DATA, "bad_attr",
			    "attribute 'activation': expected relu, relu6, gelu, sigmoid, tanh, silu or hardswish");
}
