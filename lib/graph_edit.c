/* graph_edit.c - small edits of a graph document for the optimizer.
 * Documents are small (hundreds of nodes), so lookups scan: clarity wins
 * over indexes here, and every pass re-parses the result anyway. */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "graph_edit.h"
#include "internal.h"

static json_t *nodes_of(const json_t *graph)
{
	return json_object_get(graph, "nodes");
}

size_t ds_edit_node_count(const json_t *graph)
{
	return json_array_size(nodes_of(graph));
}

json_t *ds_edit_node(const json_t *graph, size_t i)
{
	return json_array_get(nodes_of(graph), i);
}

const char *ds_edit_node_op(const json_t *node)
{
	return json_string_value(json_object_get(node, "op"));
}

const char *ds_edit_node_name(const json_t *node)
{
	return json_string_value(json_object_get(node, "name"));
}

size_t ds_edit_input_count(const json_t *node)
{
	return json_array_size(json_object_get(node, "inputs"));
}

const char *ds_edit_input(const json_t *node, size_t i)
{
	return json_string_value(json_array_get(json_object_get(node, "inputs"), i));
}

const char *ds_edit_output(const json_t *node, size_t i)
{
	return json_string_value(json_array_get(json_object_get(node, "outputs"), i));
}

ssize_t ds_edit_producer(const json_t *graph, const char *value)
{
	for (size_t i = 0; i < ds_edit_node_count(graph); i++) {
		const json_t *outs = json_object_get(ds_edit_node(graph, i), "outputs");

		for (size_t j = 0; j < json_array_size(outs); j++)
			if (!strcmp(json_string_value(json_array_get(outs, j)), value))
				return (ssize_t)i;
	}
	return -1;
}

int ds_edit_is_output(const json_t *graph, const char *value)
{
	const json_t *outs = json_object_get(graph, "outputs");

	for (size_t j = 0; j < json_array_size(outs); j++)
		if (!strcmp(json_string_value(json_array_get(outs, j)), value))
			return 1;
	return 0;
}

size_t ds_edit_uses(const json_t *graph, const char *value)
{
	size_t uses = (size_t)ds_edit_is_output(graph, value);

	for (size_t i = 0; i < ds_edit_node_count(graph); i++) {
		const json_t *node = ds_edit_node(graph, i);

		for (size_t j = 0; j < ds_edit_input_count(node); j++)
			if (!strcmp(ds_edit_input(node, j), value))
				uses++;
	}
	return uses;
}

ssize_t ds_edit_only_reader(const json_t *graph, const char *value)
{
	if (ds_edit_uses(graph, value) != 1 || ds_edit_is_output(graph, value))
		return -1;
	for (size_t i = 0; i < ds_edit_node_count(graph); i++) {
		const json_t *node = ds_edit_node(graph, i);

		for (size_t j = 0; j < ds_edit_input_count(node); j++)
			if (!strcmp(ds_edit_input(node, j), value))
				return (ssize_t)i;
	}
	return -1;
}

static int replace_in(json_t *names, const char *from, const char *to, ds_error *err)
{
	for (size_t j = 0; j < json_array_size(names); j++)
		if (!strcmp(json_string_value(json_array_get(names, j)), from) &&
		    json_array_set_new(names, j, json_string(to)))
			return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	return 0;
}

int ds_edit_replace_uses(json_t *graph, const char *from, const char *to, ds_error *err)
{
	int rc;

	for (size_t i = 0; i < ds_edit_node_count(graph); i++)
		if ((rc = replace_in(json_object_get(ds_edit_node(graph, i), "inputs"), from, to, err)))
			return rc;
	return replace_in(json_object_get(graph, "outputs"), from, to, err);
}

void ds_edit_remove_node(json_t *graph, size_t i)
{
	json_array_remove(nodes_of(graph), i);
}

int ds_edit_pair_is(const json_t *attrs, const char *name, int64_t want, int absent_ok)
{
	const json_t *v = json_object_get(attrs, name);

	if (!v)
		return absent_ok;
	if (json_is_integer(v))
		return json_integer_value(v) == want;
	return json_is_array(v) && json_array_size(v) == 2 &&
	       json_is_integer(json_array_get(v, 0)) && json_integer_value(json_array_get(v, 0)) == want &&
	       json_is_integer(json_array_get(v, 1)) && json_integer_value(json_array_get(v, 1)) == want;
}

ssize_t ds_edit_pool_fusable(const json_t *graph, size_t i)
{
	const json_t *pool = ds_edit_node(graph, i), *pattrs = json_object_get(pool, "attrs"), *prod, *attrs;
	const json_t *ceil = json_object_get(pattrs, "ceil_mode"), *act;
	const char *x = ds_edit_input(pool, 0);
	ssize_t pi;

	const char *conv = !strcmp(ds_edit_node_op(pool), "qmax_pool") ? "qconv2d" : "conv2d";

	if ((strcmp(ds_edit_node_op(pool), "max_pool") != 0 && strcmp(ds_edit_node_op(pool), "qmax_pool") != 0) ||
	    !ds_edit_pair_is(pattrs, "kernel", 2, 0) ||
	    !ds_edit_pair_is(pattrs, "stride", 2, 1) || !ds_edit_pair_is(pattrs, "padding", 0, 1) ||
	    !(!ceil || (json_is_integer(ceil) && !json_integer_value(ceil)) || json_is_false(ceil)) ||
	    json_array_size(json_object_get(pool, "outputs")) != 1 || ds_edit_uses(graph, x) != 1 ||
	    (pi = ds_edit_producer(graph, x)) < 0)
		return -1;
	prod = ds_edit_node(graph, (size_t)pi);
	attrs = json_object_get(prod, "attrs");
	act = json_object_get(attrs, "activation");
	/* A residual (conv2d's fourth input) comes before the pool; qconv2d's
	 * fourth is its bias. */
	if (strcmp(ds_edit_node_op(prod), conv) != 0 || json_object_get(attrs, "pool") ||
	    ds_edit_input_count(prod) > (strcmp(conv, "conv2d") ? 4 : 3) || (act && (!json_is_string(act) || strcmp(json_string_value(act), "relu"))))
		return -1;
	return pi;
}

int ds_edit_fuse_pool(json_t *graph, size_t i, size_t conv, ds_error *err)
{
	json_t *prod = ds_edit_node(graph, conv), *attrs = json_object_get(prod, "attrs");
	json_t *out = json_array_get(json_object_get(ds_edit_node(graph, i), "outputs"), 0);

	if (!attrs && json_object_set_new(prod, "attrs", json_object()) == 0)
		attrs = json_object_get(prod, "attrs");
	if (!attrs || json_object_set_new(attrs, "pool", json_string("max_2x2")) ||
	    json_array_set(json_object_get(prod, "outputs"), 0, out))
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	ds_edit_remove_node(graph, i);
	return 0;
}

static int name_taken(const json_t *graph, const ds_container *params, const char *name)
{
	const json_t *ins = json_object_get(graph, "inputs");

	if (ds_container_get(params, name) || ds_edit_producer(graph, name) >= 0)
		return 1;
	for (size_t j = 0; j < json_array_size(ins); j++)
		if (!strcmp(json_string_value(json_object_get(json_array_get(ins, j), "name")), name))
			return 1;
	return 0;
}

char *ds_edit_unique_name(const json_t *graph, const ds_container *params, const char *base, ds_error *err)
{
	size_t len = strlen(base) + 24;
	char *name = ds_malloc(len, err);

	if (!name)
		return NULL;
	snprintf(name, len, "%s", base);
	for (unsigned n = 1; name_taken(graph, params, name); n++)
		snprintf(name, len, "%s.%u", base, n);
	return name;
}

size_t ds_edit_drop_unused_params(const json_t *graph, const json_t *before, ds_container *params)
{
	size_t dropped = 0;

	for (size_t i = ds_container_count(params); i-- > 0;) {
		const char *name = ds_container_name(params, i);

		if (ds_edit_uses(before, name) && !ds_edit_uses(graph, name)) {
			ds_container_remove(params, name);
			dropped++;
		}
	}
	return dropped;
}
