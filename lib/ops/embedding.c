/* embedding.c - table lookups: embedding gathers one row per id,
 * embedding_bag reduces each bag of ids to one row (sum or mean).  The output
 * has the table's dtype. */
#include "config.h"
#include "ops.h"
#include "cpu/elementwise.h"

#include <inttypes.h>
#include <string.h>

/* "sparse": 1 asks the plan to keep the table's gradient row-sparse (only
 * the rows of the ids seen are zeroed and updated; lib/plan.c). */
static const char *const embedding_attrs[] = { "sparse", NULL };
static const char *const embedding_bag_attrs[] = { "mode", "sparse", NULL };

static int check_sparse(const ds_node *node, ds_error *err)
{
	int64_t sparse;

	return ds_op_attr_int(node, "sparse", 0, 0, 1, &sparse, err);
}

/* ids I32/I64 [...], table [V, D] -> [..., D] */
static int embedding_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
			   ds_error *err)
{
	int rc;

	(void)n_in;
	if ((rc = check_sparse(node, err)) ||
	    (rc = ds_op_check_index_dtype(node, in, 0, err)) ||
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
	    (rc = check_sparse(node, err)) ||
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

/* ---------------------------------------------------------------- kernels */

/* Ids below 0 are padding (ds-clean pads token rows with -1); ids past
 * the table are bad data. */
static int check_ids(const ds_op_args *a, int64_t n, int64_t row_len, ds_error *err)
{
	const ds_tensor *ids = a->in[0], *table = a->in[1];
	int64_t vocab = table->shape[0], bad;
	int ids64 = ids->dtype == DS_I64;

	if (table->dtype != DS_F32)
		return ds_error_set(err, DS_ERR_DATA, "bad_dtype", "input '%s': expected F32, got %s",
				    ds_node_input(a->node, 1), ds_dtype_name(table->dtype));
	if ((bad = ds_cpu_ids_check(ids->data, ids64, n, vocab)) < 0)
		return 0;
	return ds_error_set(err, DS_ERR_DATA, "bad_id",
			    "ids '%s': row %" PRId64 ", position %" PRId64 ": id %" PRId64
			    " is outside [0, %" PRId64 ")", ds_node_input(a->node, 0), bad / row_len,
			    bad % row_len, ds_cpu_id_at(ids->data, ids64, bad), vocab);
}

static int64_t last_dim(const ds_tensor *t)
{
	return t->ndim ? t->shape[t->ndim - 1] : 1;
}

static int embedding_forward(const ds_op_args *a, ds_error *err)
{
	const ds_tensor *ids = a->in[0], *table = a->in[1];
	int64_t n = ds_tensor_numel(ids);
	int rc = check_ids(a, n, last_dim(ids), err);

	if (rc)
		return rc;
	ds_cpu_embedding_forward(ids->data, ids->dtype == DS_I64, n, table->data, table->shape[1],
				 a->out[0]->data);
	return 0;
}

static int embedding_backward(const ds_op_args *a, ds_error *err)
{
	const ds_tensor *ids = a->in[0];

	(void)err;
	if (a->grad_in[1])
		ds_cpu_embedding_backward(ids->data, ids->dtype == DS_I64, ds_tensor_numel(ids),
					  a->grad_out[0]->data, a->in[1]->shape[1], a->grad_in[1]->data);
	return 0;
}

static int bag_mean(const ds_op_args *a)
{
	const json_t *attrs = ds_node_attrs(a->node);
	const char *mode = attrs ? json_string_value(json_object_get(attrs, "mode")) : NULL;

	return !mode || strcmp(mode, "sum") != 0;
}

static int embedding_bag_forward(const ds_op_args *a, ds_error *err)
{
	const ds_tensor *ids = a->in[0], *table = a->in[1];
	int rc = check_ids(a, ds_tensor_numel(ids), ids->shape[1], err);

	if (rc)
		return rc;
	ds_cpu_embedding_bag_forward(ids->data, ids->dtype == DS_I64, ids->shape[0], ids->shape[1],
				     table->data, table->shape[1], bag_mean(a), a->out[0]->data);
	return 0;
}

static int embedding_bag_backward(const ds_op_args *a, ds_error *err)
{
	const ds_tensor *ids = a->in[0];

	(void)err;
	if (a->grad_in[1])
		ds_cpu_embedding_bag_backward(ids->data, ids->dtype == DS_I64, ids->shape[0], ids->shape[1],
					      a->grad_out[0]->data, a->in[1]->shape[1], bag_mean(a),
					      a->grad_in[1]->data);
	return 0;
}

const ds_op ds_ops_embedding[] = {
	{ .name = "embedding", .min_inputs = 2, .max_inputs = 2, .num_outputs = 1, .attrs = embedding_attrs, .infer = embedding_infer, .flops = ds_op_flops_zero,
	  .forward = { [DS_BACKEND_CPU] = embedding_forward }, .backward = { [DS_BACKEND_CPU] = embedding_backward },
	  .backward_needs = DS_NEEDS_IN(0), .no_grad = 1u << 0 },
	{ .name = "embedding_bag", .min_inputs = 2, .max_inputs = 2, .num_outputs = 1, .attrs = embedding_bag_attrs, .infer = embedding_bag_infer, .flops = embedding_bag_flops,
	  .forward = { [DS_BACKEND_CPU] = embedding_bag_forward }, .backward = { [DS_BACKEND_CPU] = embedding_bag_backward },
	  .backward_needs = DS_NEEDS_IN(0), .no_grad = 1u << 0 },
	{ .name = NULL },
};
