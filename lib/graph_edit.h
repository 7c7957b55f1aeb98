/* graph_edit.h - rewriting a graph's JSON document (ds-formats.5) in place:
 * what the optimizer's passes share.  The document is edited, then parsed
 * again with ds_graph_parse, which checks that every rewrite kept the graph
 * valid. */
#ifndef DS_GRAPH_EDIT_H
#define DS_GRAPH_EDIT_H

#include "ds.h"

/* The node object at index i of the document's "nodes" array, its fields,
 * and the number of nodes. */
size_t ds_edit_node_count(const json_t *graph);
json_t *ds_edit_node(const json_t *graph, size_t i);
const char *ds_edit_node_op(const json_t *node);
const char *ds_edit_node_name(const json_t *node);
size_t ds_edit_input_count(const json_t *node);
const char *ds_edit_input(const json_t *node, size_t i);
const char *ds_edit_output(const json_t *node, size_t i);
/* Index of the node producing value, or -1 (an input or a parameter). */
ssize_t ds_edit_producer(const json_t *graph, const char *value);
/* How many node inputs read value, plus 1 when it is a graph output. */
size_t ds_edit_uses(const json_t *graph, const char *value);
int ds_edit_is_output(const json_t *graph, const char *value);
/* Index of the node that reads value, when exactly one node does and value
 * is no graph output; -1 otherwise. */
ssize_t ds_edit_only_reader(const json_t *graph, const char *value);
/* Every read of from (node inputs and graph outputs) now reads to. */
int ds_edit_replace_uses(json_t *graph, const char *from, const char *to, ds_error *err);
/* Remove node i; the caller has rewired its outputs' readers first. */
void ds_edit_remove_node(json_t *graph, size_t i);
/* An attribute that is absent (when absent_ok), want, or [want, want]. */
int ds_edit_pair_is(const json_t *attrs, const char *name, int64_t want, int absent_ok);
/* When node i is a 2x2, stride-2 max-pool (no padding, no ceil mode) that
 * alone reads the output of a conv2d with no pool, no residual and no
 * activation but ReLU (which commutes with the max), or a qmax_pool that
 * so reads a qconv2d: that convolution's index, else -1. */
ssize_t ds_edit_pool_fusable(const json_t *graph, size_t i);
/* Make the pool node i the "pool" attribute of convolution node conv (from
 * ds_edit_pool_fusable): the convolution writes the pool's output, node i
 * goes. */
int ds_edit_fuse_pool(json_t *graph, size_t i, size_t conv, ds_error *err);
/* A tensor name not yet used by the container or the graph: base, or base.N. */
char *ds_edit_unique_name(const json_t *graph, const ds_container *params, const char *base, ds_error *err);
/* Drop container tensors that before read and graph no longer does (a
 * rewrite made them dead; other tensors stay); returns how many. */
size_t ds_edit_drop_unused_params(const json_t *graph, const json_t *before, ds_container *params);

#endif
