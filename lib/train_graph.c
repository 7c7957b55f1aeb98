/* train_graph.c - rewrites of the training graph that compute the same
 * values and the same gradients with less memory traffic.  ds-train applies
 * them to the graph it differentiates; the model it writes keeps the graph
 * as it was given.
 *
 * relu before max_pool: ReLU is monotone, so max over a window of relu(x)
 * is relu of the max over the window, and the ReLU can run after the pool,
 * on a quarter of the values for a 2x2 pool, forward and backward.  The
 * gradients agree too: where the window's max is positive both send the
 * gradient to the max's position (ReLU creates no ties among positive
 * values, and both take the first of equal maxima); where it is not, both
 * send zero (ReLU's derivative is 0 at and below 0).  Padding of the pool
 * (minus infinity) changes neither. */
#include "internal.h"
#include "graph_edit.h"

#include <stdlib.h>
#include <string.h>

static int relu_after_pool(json_t *graph, const ds_container *params, int *rewrites, ds_error *err)
{
	json_t *nodes = json_object_get(graph, "nodes");

	for (size_t i = 0; i < json_array_size(nodes); i++) {
		json_t *relu = json_array_get(nodes, i), *pool;
		const char *r;
		char *mid;
		ssize_t j;

		if (strcmp(ds_edit_node_op(relu), "relu") != 0 || ds_edit_input_count(relu) != 1)
			continue;
		r = ds_edit_output(relu, 0);
		if ((j = ds_edit_only_reader(graph, r)) <= (ssize_t)i)
			continue;
		pool = ds_edit_node(graph, (size_t)j);
		if (strcmp(ds_edit_node_op(pool), "max_pool") != 0 || json_array_size(json_object_get(pool, "outputs")) != 1)
			continue;
		/* relu: x -> r, pool: r -> p  becomes  pool: x -> mid, relu: mid -> p */
		if (!(mid = ds_edit_unique_name(graph, params, r, err)))
			return DS_ERR_NOMEM;
		if (json_array_set(json_object_get(pool, "inputs"), 0, json_array_get(json_object_get(relu, "inputs"), 0)) ||
		    json_array_set_new(json_object_get(relu, "inputs"), 0, json_string(mid)) ||
		    json_array_set(json_object_get(relu, "outputs"), 0, json_array_get(json_object_get(pool, "outputs"), 0)) ||
		    json_array_set_new(json_object_get(pool, "outputs"), 0, json_string(mid))) {
			free(mid);
			return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		}
		free(mid);
		/* The relu now reads the pool's output: it moves after it. */
		json_incref(relu);
		json_array_remove(nodes, i);
		if (json_array_insert_new(nodes, (size_t)j, relu))
			return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		(*rewrites)++;
		i--;   /* the node now at i has not been looked at */
	}
	return 0;
}

/* A 2x2 max-pool into the convolution before it (once the ReLU between
 * them has moved after the pool): the forward keeps where each maximum
 * was, and backward sums the weight gradient over the pooled outputs
 * only (kernels/cpu/conv_pooled.c).  The loss is the same to the bit; the
 * gradients are the same sums in another order. */
static int pool_into_conv(json_t *graph, int *rewrites, ds_error *err)
{
	for (size_t i = 0; i < ds_edit_node_count(graph);) {
		ssize_t conv = ds_edit_pool_fusable(graph, i);
		const json_t *attrs;
		int rc;

		/* A training graph's convolution takes no fused activation. */
		if (conv < 0 || ((attrs = json_object_get(ds_edit_node(graph, (size_t)conv), "attrs")) &&
				 json_object_get(attrs, "activation"))) {
			i++;
			continue;
		}
		if ((rc = ds_edit_fuse_pool(graph, i, (size_t)conv, err)))
			return rc;
		(*rewrites)++;
	}
	return 0;
}

int ds_train_graph_rewrite(json_t *graph, const ds_container *params, unsigned which, int *rewrites, ds_error *err)
{
	int rc = 0;

	*rewrites = 0;
	if (which & DS_TRAIN_RELU_AFTER_POOL)
		rc = relu_after_pool(graph, params, rewrites, err);
	if (!rc && (which & DS_TRAIN_POOL_INTO_CONV))
		rc = pool_into_conv(graph, rewrites, err);
	return rc;
}
