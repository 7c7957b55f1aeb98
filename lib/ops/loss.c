/* loss.c - training losses: cross_entropy over class logits, with label
 * smoothing; the result is a scalar (mean over the batch). */
#include "config.h"
#include "ops.h"

#include <inttypes.h>

static const char *const cross_entropy_attrs[] = { "label_smoothing", NULL };

/* logits [N, K], labels I32/I64 [N] -> [] */
static int cross_entropy_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
			       ds_error *err)
{
	double smoothing;
	char ls[128], ys[128];
	int rc;

	(void)n_in;
	if ((rc = ds_op_attr_float(node, "label_smoothing", 0.0, 0.0, 1.0, &smoothing, err)) ||
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

const ds_op ds_ops_loss[] = {
	{ .name = "cross_entropy", .min_inputs = 2, .max_inputs = 2, .num_outputs = 1, .attrs = cross_entropy_attrs, .infer = cross_entropy_infer, .flops = cross_entropy_flops },
	{ .name = NULL },
};
