/* pool.c - pooling over NCHW windows: max_pool, avg_pool, global_avg_pool. */
#include "config.h"
#include "ops.h"

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

const ds_op ds_ops_pool[] = {
	{ .name = "max_pool", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = max_pool_attrs, .infer = pool_infer, .flops = pool_flops },
	{ .name = "avg_pool", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = avg_pool_attrs, .infer = pool_infer, .flops = pool_flops },
	{ .name = "global_avg_pool", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = no_attrs, .infer = global_avg_pool_infer, .flops = global_avg_pool_flops },
	{ .name = NULL },
};
