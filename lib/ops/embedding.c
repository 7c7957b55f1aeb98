/* embedding.c - table lookups: embedding gathers one row per id,
 * embedding_bag reduces each bag of ids to one row (sum or mean).  The output
 * has the table's dtype. */
#include "config.h"
#include "ops.h"

#include <inttypes.h>

static const char *const no_attrs[] = { NULL };
static const char *const embedding_bag_attrs[] = { "mode", NULL };

/* ids I32/I64 [...], table [V, D] -> [..., D] */
static int embedding_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
			   ds_error *err)
{
	int rc;

	(void)n_in;
	if ((rc = ds_op_check_index_dtype(node, in, 0, err)) ||
	    (rc = ds_op_check_ndim(node, in, 0, 0, DS_MAX_DIMS - 1, err)) ||
	    (rc = ds_op_check_ndim(node, in, 1, 2, 2, err)))
		return rc;
	out[0] = in[0];
	out[0].dtype = in[1].dtype;
	out[0].dim[out[0].ndim++] = in[1].dim[1];
	return 0;
}

/* ids I32/I64 [N, L], table [V, D] -> [N, D] */
static int embedding_bag_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
			       ds_error *err)
{
	static const char *const modes[] = { "sum", "mean", NULL };
	int mode, rc;

	(void)n_in;
	if ((rc = ds_op_attr_choice(node, "mode", modes, 1, &mode, err)) ||
	    (rc = ds_op_check_index_dtype(node, in, 0, err)) ||
	    (rc = ds_op_check_ndim(node, in, 0, 2, 2, err)) ||
	    (rc = ds_op_check_ndim(node, in, 1, 2, 2, err)))
		return rc;
	out[0].dtype = in[1].dtype;
	out[0].ndim = 2;
	out[0].dim[0] = in[0].dim[0];
	out[0].dim[1] = in[1].dim[1];
	return 0;
}

/* One add per gathered element. */
static int64_t embedding_bag_flops(const ds_node *node, const ds_shape *in, int n_in,
				   const ds_shape *out)
{
	(void)node;
	(void)n_in;
	(void)out;
	return ds_op_sat_mul(ds_op_numel(&in[0]), in[1].dim[1]);
}

const ds_op ds_ops_embedding[] = {
	{ .name = "embedding", .min_inputs = 2, .max_inputs = 2, .num_outputs = 1, .attrs = no_attrs, .infer = embedding_infer, .flops = ds_op_flops_zero },
	{ .name = "embedding_bag", .min_inputs = 2, .max_inputs = 2, .num_outputs = 1, .attrs = embedding_bag_attrs, .infer = embedding_bag_infer, .flops = embedding_bag_flops },
	{ .name = NULL },
};
