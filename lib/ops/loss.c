/* loss.c - training losses, each a scalar mean over the batch, scaled by an
 * optional "weight" so that losses can be added into one (distillation):
 * cross_entropy over class logits, with label smoothing, and distill, the
 * temperature-softened KL divergence from a teacher's logits. */
#include "config.h"
#include "ops.h"
#include "cpu/elementwise.h"

#include <inttypes.h>

static const char *const cross_entropy_attrs[] = { "label_smoothing", "weight", NULL };
static const char *const distill_attrs[] = { "temperature", "weight", NULL };

/* logits [N, K], labels I32/I64 [N] -> [] */
static int cross_entropy_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
			       ds_error *err)
{
	double smoothing, weight;
	char ls[128], ys[128];
	int rc;

	(void)n_in;
	if ((rc = ds_op_attr_float(node, "label_smoothing", 0.0, 0.0, 1.0, &smoothing, err)) ||
	    (rc = ds_op_attr_float(node, "weight", 1.0, 0.0, 1e6, &weight, err)) ||
	    (rc = ds_op_check_ndim(node, in, 0, 2, 2, err)) ||
	    (rc = ds_op_check_index_dtype(node, in, 1, err)))
		return rc;
	if (in[1].ndim != 1 || in[1].dim[0] != in[0].dim[0])
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "labels '%s' %s do not match logits '%s' %s: expected [%" PRId64 "]",
				    ds_node_input(node, 1), ds_op_shape_text(&in[1], ys, sizeof ys),
				    ds_node_input(node, 0), ds_op_shape_text(&in[0], ls, sizeof ls),
				    in[0].dim[0]);
	out[0].dtype = in[0].dtype;
	out[0].ndim = 0;
	return 0;
}

/* Log-softmax and the smoothed sum: about 5 per logit. */
static int64_t cross_entropy_flops(const ds_node *node, const ds_shape *in, int n_in,
				   const ds_shape *out)
{
	(void)node;
	(void)n_in;
	(void)out;
	return ds_op_sat_mul(ds_op_numel(&in[0]), 5);
}

/* ---------------------------------------------------------------- kernels */

/* The softmax of the logits, [N, K] floats, for backward. */
static size_t cross_entropy_saved(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	(void)node;
	(void)n_in;
	(void)out;
	return (size_t)ds_op_numel(&in[0]) * sizeof(float);
}

/* A double per row, so rows run in parallel and sum in a fixed order. */
static size_t cross_entropy_workspace(const ds_node *node, const ds_shape *in, int n_in,
				      const ds_shape *out)
{
	(void)node;
	(void)n_in;
	(void)out;
	return (size_t)in[0].dim[0] * sizeof(double);
}

static int cross_entropy_forward(const ds_op_args *a, ds_error *err)
{
	const ds_tensor *x = a->in[0], *y = a->in[1];
	float smoothing = (float)ds_node_attr_float(a->node, "label_smoothing", 0.0);
	int64_t n = x->shape[0], k = x->shape[1], bad;
	int y64 = y->dtype == DS_I64;

	if (x->dtype != DS_F32)
		return ds_error_set(err, DS_ERR_DATA, "bad_dtype", "input '%s': expected F32, got %s",
				    ds_node_input(a->node, 0), ds_dtype_name(x->dtype));
	if ((bad = ds_cpu_labels_check(y->data, y64, n, k)) >= 0)
		return ds_error_set(err, DS_ERR_DATA, "bad_label",
				    "labels '%s': row %" PRId64 ": label %" PRId64 " is outside [0, %" PRId64 ")",
				    ds_node_input(a->node, 1), bad,
				    y64 ? ((const int64_t *)y->data)[bad] : ((const int32_t *)y->data)[bad], k);
	((float *)a->out[0]->data)[0] = (float)(ds_node_attr_float(a->node, "weight", 1.0) *
		ds_cpu_cross_entropy_forward(x->data, y->data, y64, n, k, smoothing, a->saved, a->workspace));
	return 0;
}

/* d loss / d logits = (softmax - smoothed one-hot) / N, times the
 * incoming gradient of the loss. */
static int cross_entropy_backward(const ds_op_args *a, ds_error *err)
{
	const ds_tensor *x = a->in[0], *y = a->in[1];
	float smoothing = (float)ds_node_attr_float(a->node, "label_smoothing", 0.0);

	if (!a->grad_in[0])
		return 0;
	if (!a->saved)
		return ds_error_set(err, DS_ERR_RUN, "no_saved",
				    "cross_entropy: backward without the softmax forward saves");
	ds_cpu_cross_entropy_backward(a->saved, y->data, y->dtype == DS_I64, x->shape[0], x->shape[1],
				      smoothing, (float)ds_node_attr_float(a->node, "weight", 1.0) *
				      ((const float *)a->grad_out[0]->data)[0], a->grad_in[0]->data);
	return 0;
}

/* ------------------------------------------------------------- distill */

/* student logits [N, K], teacher logits [N, K] -> [] */
static int distill_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out, ds_error *err)
{
	double temperature, weight;
	char ss[128], ts[128];
	int rc;

	(void)n_in;
	if ((rc = ds_op_attr_float(node, "temperature", 4.0, 1e-3, 1e3, &temperature, err)) ||
	    (rc = ds_op_attr_float(node, "weight", 1.0, 0.0, 1e6, &weight, err)) ||
	    (rc = ds_op_check_ndim(node, in, 0, 2, 2, err)))
		return rc;
	if (in[1].ndim != 2 || in[1].dim[0] != in[0].dim[0] || in[1].dim[1] != in[0].dim[1] ||
	    in[1].dtype != in[0].dtype)
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "teacher logits '%s' %s do not match the logits '%s' %s",
				    ds_node_input(node, 1), ds_op_shape_text(&in[1], ts, sizeof ts),
				    ds_node_input(node, 0), ds_op_shape_text(&in[0], ss, sizeof ss));
	out[0].dtype = in[0].dtype;
	out[0].ndim = 0;
	return 0;
}

/* Two softmaxes and the KL sum: about 10 per logit. */
static int64_t distill_flops(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	(void)node;
	(void)n_in;
	(void)out;
	return ds_op_sat_mul(ds_op_numel(&in[0]), 10);
}

/* The softened student and teacher distributions, for backward. */
static size_t distill_saved(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	(void)node;
	(void)n_in;
	(void)out;
	return 2 * (size_t)ds_op_numel(&in[0]) * sizeof(float);
}

static int distill_forward(const ds_op_args *a, ds_error *err)
{
	const ds_tensor *s = a->in[0], *t = a->in[1];
	float temperature = (float)ds_node_attr_float(a->node, "temperature", 4.0);
	int64_t n = s->shape[0], k = s->shape[1];
	float *q = a->saved;

	if (s->dtype != DS_F32 || t->dtype != DS_F32)
		return ds_error_set(err, DS_ERR_DATA, "bad_dtype", "distill: logits must be F32");
	if (!q)
		return ds_error_set(err, DS_ERR_RUN, "no_saved", "distill: no room for the softened outputs");
	((float *)a->out[0]->data)[0] = (float)(ds_node_attr_float(a->node, "weight", 1.0) *
		ds_cpu_distill_forward(s->data, t->data, n, k, temperature, q, q + n * k, a->workspace));
	return 0;
}

static int distill_backward(const ds_op_args *a, ds_error *err)
{
	const ds_tensor *s = a->in[0];
	int64_t n = s->shape[0], k = s->shape[1];
	const float *q = a->saved;

	if (!a->grad_in[0])
		return 0;
	if (!q)
		return ds_error_set(err, DS_ERR_RUN, "no_saved", "distill: backward without its forward's saves");
	ds_cpu_distill_backward(q, q + n * k, n, k, (float)ds_node_attr_float(a->node, "temperature", 4.0),
				(float)ds_node_attr_float(a->node, "weight", 1.0) *
				((const float *)a->grad_out[0]->data)[0], a->grad_in[0]->data);
	return 0;
}

const ds_op ds_ops_loss[] = {
	{ .name = "cross_entropy", .min_inputs = 2, .max_inputs = 2, .num_outputs = 1, .attrs = cross_entropy_attrs, .infer = cross_entropy_infer, .flops = cross_entropy_flops,
	  .forward = { [DS_BACKEND_CPU] = cross_entropy_forward }, .backward = { [DS_BACKEND_CPU] = cross_entropy_backward },
	  .saved = cross_entropy_saved, .workspace = cross_entropy_workspace, .backward_needs = DS_NEEDS_IN(1),
	  .no_grad = 1u << 1 },
	{ .name = "distill", .min_inputs = 2, .max_inputs = 2, .num_outputs = 1, .attrs = distill_attrs, .infer = distill_infer, .flops = distill_flops,
	  .forward = { [DS_BACKEND_CPU] = distill_forward }, .backward = { [DS_BACKEND_CPU] = distill_backward },
	  .saved = distill_saved, .workspace = cross_entropy_workspace, .backward_needs = 0,
	  .no_grad = 1u << 1 },
	{ .name = NULL },
};
