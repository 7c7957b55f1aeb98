/* pool.c - pooling over NCHW windows: max_pool, avg_pool, global_avg_pool. */
#include "config.h"
#include "ops.h"
#include "cpu/conv.h"

#include <inttypes.h>

static const char *const max_pool_attrs[] = { "kernel", "stride", "padding", "ceil_mode", NULL };
static const char *const avg_pool_attrs[] = {
	"kernel", "stride", "padding", "ceil_mode", "count_include_pad", NULL
};
static const char *const no_attrs[] = { NULL };

/* kernel is required; stride defaults to the kernel, as in PyTorch. */
static int pool_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
		      ds_error *err)
{
	int64_t kernel[2], stride[2], pad[2], ceil_mode, include_pad, oh, ow;
	int rc;

	(void)n_in;
	if ((rc = ds_op_attr_pair(node, "kernel", -1, 1, kernel, err)) ||
	    (rc = ds_op_attr_pair(node, "stride", 0, 0, stride, err)) ||
	    (rc = ds_op_attr_pair(node, "padding", 0, 0, pad, err)) ||
	    (rc = ds_op_attr_int(node, "ceil_mode", 0, 0, 1, &ceil_mode, err)) ||
	    (rc = ds_op_attr_int(node, "count_include_pad", 1, 0, 1, &include_pad, err)) ||
	    (rc = ds_op_check_ndim(node, in, 0, 4, 4, err)))
		return rc;
	for (int i = 0; i < 2; i++) {
		if (!stride[i])
			stride[i] = kernel[i];
		/* A window wholly in the padding would have nothing to pool. */
		if (pad[i] > kernel[i] / 2)
			return ds_error_set(err, DS_ERR_DATA, "bad_attr",
					    "attribute 'padding': %" PRId64 " is more than half the kernel %" PRId64,
					    pad[i], kernel[i]);
	}
	if ((rc = ds_op_window_out(node, "height", in[0].dim[2], kernel[0], stride[0], pad[0], 1,
				   (int)ceil_mode, &oh, err)) ||
	    (rc = ds_op_window_out(node, "width", in[0].dim[3], kernel[1], stride[1], pad[1], 1,
				   (int)ceil_mode, &ow, err)))
		return rc;
	out[0] = in[0];
	out[0].dim[2] = oh;
	out[0].dim[3] = ow;
	return 0;
}

/* One compare or add per window element. */
static int64_t pool_flops(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	int64_t kernel[2];

	(void)in;
	(void)n_in;
	if (ds_op_attr_pair(node, "kernel", 1, 1, kernel, NULL))
		return 0;
	return ds_op_sat_mul(ds_op_numel(&out[0]), ds_op_sat_mul(kernel[0], kernel[1]));
}

/* x [N, C, H, W] -> [N, C, 1, 1] */
static int global_avg_pool_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
				 ds_error *err)
{
	int rc;

	(void)n_in;
	if ((rc = ds_op_check_ndim(node, in, 0, 4, 4, err)))
		return rc;
	out[0] = in[0];
	out[0].dim[2] = out[0].dim[3] = 1;
	return 0;
}

static int64_t global_avg_pool_flops(const ds_node *node, const ds_shape *in, int n_in,
				     const ds_shape *out)
{
	(void)node;
	(void)n_in;
	(void)out;
	return ds_op_numel(&in[0]);
}

/* The kernel's view of a call, from the input and output dims. */
static int pool_dims(const ds_node *node, const int64_t *x, const int64_t *y, ds_pool_dims *d,
		     ds_error *err)
{
	int64_t kernel[2], stride[2], pad[2], include_pad;
	int rc;

	if ((rc = ds_op_attr_pair(node, "kernel", -1, 1, kernel, err)) ||
	    (rc = ds_op_attr_pair(node, "stride", 0, 0, stride, err)) ||
	    (rc = ds_op_attr_pair(node, "padding", 0, 0, pad, err)) ||
	    (rc = ds_op_attr_int(node, "count_include_pad", 1, 0, 1, &include_pad, err)))
		return rc;
	*d = (ds_pool_dims){
		.n = x[0], .c = x[1], .h = x[2], .w = x[3], .oh = y[2], .ow = y[3],
		.kh = kernel[0], .kw = kernel[1],
		.sh = stride[0] ? stride[0] : kernel[0], .sw = stride[1] ? stride[1] : kernel[1],
		.ph = pad[0], .pw = pad[1],
		.count_include_pad = (int)include_pad,
	};
	return 0;
}

/* max_pool keeps, per output, where its maximum came from (int32 offset
 * within the input plane), so backward needs neither input nor output. */
static size_t max_pool_saved(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	(void)node;
	(void)in;
	(void)n_in;
	return (size_t)ds_op_numel(&out[0]) * sizeof(int32_t);
}

static int max_pool_forward_cpu(const ds_op_args *a, ds_error *err)
{
	ds_pool_dims d;
	int rc;

	if ((rc = pool_dims(a->node, a->in[0]->shape, a->out[0]->shape, &d, err)))
		return rc;
	ds_max_pool_forward(&d, a->in[0]->data, a->out[0]->data, a->saved);
	return 0;
}

static int max_pool_backward_cpu(const ds_op_args *a, ds_error *err)
{
	ds_pool_dims d;
	int rc;

	if (!a->grad_in[0])
		return 0;
	if (!a->saved)
		return ds_error_set(err, DS_ERR_RUN, "no_saved_state", "max_pool backward without saved indices");
	if ((rc = pool_dims(a->node, a->grad_in[0]->shape, a->grad_out[0]->shape, &d, err)))
		return rc;
	ds_max_pool_backward(&d, a->saved, a->grad_out[0]->data, a->grad_in[0]->data);
	return 0;
}

static int avg_pool_forward_cpu(const ds_op_args *a, ds_error *err)
{
	ds_pool_dims d;
	int rc;

	if ((rc = pool_dims(a->node, a->in[0]->shape, a->out[0]->shape, &d, err)))
		return rc;
	ds_avg_pool_forward(&d, a->in[0]->data, a->out[0]->data);
	return 0;
}

static int avg_pool_backward_cpu(const ds_op_args *a, ds_error *err)
{
	ds_pool_dims d;
	int rc;

	if (!a->grad_in[0])
		return 0;
	if ((rc = pool_dims(a->node, a->grad_in[0]->shape, a->grad_out[0]->shape, &d, err)))
		return rc;
	ds_avg_pool_backward(&d, a->grad_out[0]->data, a->grad_in[0]->data);
	return 0;
}

static int global_avg_pool_forward_cpu(const ds_op_args *a, ds_error *err)
{
	const int64_t *x = a->in[0]->shape;

	(void)err;
	ds_global_avg_pool_forward(x[0] * x[1], x[2] * x[3], a->in[0]->data, a->out[0]->data);
	return 0;
}

static int global_avg_pool_backward_cpu(const ds_op_args *a, ds_error *err)
{
	const int64_t *x;

	(void)err;
	if (!a->grad_in[0])
		return 0;
	x = a->grad_in[0]->shape;
	ds_global_avg_pool_backward(x[0] * x[1], x[2] * x[3], a->grad_out[0]->data, a->grad_in[0]->data);
	return 0;
}

const ds_op ds_ops_pool[] = {
	{ .name = "max_pool", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = max_pool_attrs, .infer = pool_infer, .flops = pool_flops,
	  .forward = { [DS_BACKEND_CPU] = max_pool_forward_cpu }, .backward = { [DS_BACKEND_CPU] = max_pool_backward_cpu },
	  .saved = max_pool_saved, .backward_needs = 0 },
	{ .name = "avg_pool", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = avg_pool_attrs, .infer = pool_infer, .flops = pool_flops,
	  .forward = { [DS_BACKEND_CPU] = avg_pool_forward_cpu }, .backward = { [DS_BACKEND_CPU] = avg_pool_backward_cpu },
	  .backward_needs = 0 },
	{ .name = "global_avg_pool", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = no_attrs, .infer = global_avg_pool_infer, .flops = global_avg_pool_flops,
	  .forward = { [DS_BACKEND_CPU] = global_avg_pool_forward_cpu }, .backward = { [DS_BACKEND_CPU] = global_avg_pool_backward_cpu },
	  .backward_needs = 0 },
	{ .name = NULL },
};
