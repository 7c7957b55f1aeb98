/* fuzz_graph.c - libFuzzer target for the graph JSON: parse, re-infer at
 * another batch and walk every accessor.  The bytes are parsed against two
 * fixed parameter sets, so both seed graphs (tests/fuzz/graphs) resolve. */
#include "config.h"
#include "ds.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ds_container *params[2];

static void add(ds_container *c, const char *name, ds_dtype dtype, int ndim, const int64_t *shape)
{
	ds_tensor *t = ds_tensor_new(dtype, ndim, shape, DS_CPU, NULL);

	if (t)
		ds_container_add(c, name, t, NULL);
	ds_tensor_unref(t);
}

static void setup(void)
{
	static const int64_t cw[] = { 8, 1, 3, 3 }, cb[] = { 8 }, fw0[] = { 10, 1568 },
			     fb[] = { 10 }, fw1[] = { 8, 4 }, emb[] = { 50, 16 }, dw[] = { 8, 1, 3, 3 };

	params[0] = ds_container_new();
	add(params[0], "conv1.weight", DS_F32, 4, cw);
	add(params[0], "conv1.bias", DS_F32, 1, cb);
	add(params[0], "fc.weight", DS_F32, 2, fw0);
	add(params[0], "fc.bias", DS_F32, 1, fb);
	params[1] = ds_container_new();
	add(params[1], "fc.weight", DS_F32, 2, fw1);
	add(params[1], "emb", DS_F32, 2, emb);
	add(params[1], "dw.weight", DS_F32, 4, dw);
	add(params[1], "labels", DS_I32, 1, cb);
}

static void walk(ds_graph *g)
{
	volatile size_t sink = 0;
	int64_t vals[4];

	for (size_t i = 0; i < ds_graph_node_count(g); i++) {
		const ds_node *n = ds_graph_node(g, i);

		for (size_t j = 0; j < ds_node_input_count(n); j++)
			sink += ds_graph_shape(g, ds_node_input(n, j)) != NULL;
		for (size_t j = 0; j < ds_node_output_count(n); j++)
			sink += ds_graph_shape(g, ds_node_output(n, j))->ndim;
		sink += (size_t)ds_node_attr_int(n, "axis", 0);
		sink += (size_t)ds_node_attr_float(n, "eps", 0.0);
		sink += (size_t)ds_node_attr_ints(n, "stride", vals, 4);
		sink += strlen(ds_node_op(n)) + strlen(ds_node_name(n));
	}
	for (size_t i = 0; i < ds_graph_output_count(g); i++)
		sink += ds_graph_shape(g, ds_graph_output_name(g, i)) != NULL;
	sink += (size_t)ds_graph_param_count(g) + (size_t)ds_graph_flops(g);
	(void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text;

	if (!params[0])
		setup();
	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	for (int p = 0; p < 3; p++) {
		ds_error err = { 0 };
		ds_graph *g = NULL;

		if (ds_graph_parse(text, p < 2 ? params[p] : NULL, &g, &err) == 0) {
			walk(g);
			if (ds_graph_infer(g, 64, &err) == 0)
				walk(g);
			ds_graph_free(g);
		}
	}
	free(text);
	return 0;
}
