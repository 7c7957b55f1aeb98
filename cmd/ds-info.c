/* ds-info - describe a model or a tensor stream, as ffprobe describes media. */
#include <stdlib.h>
#include <string.h>

#include "ds.h"

static const ds_option options[] = {
	{ "verify", 0, DS_OPT_FLAG, NULL, "check every checksum; a mismatch is exit status 3", NULL, NULL },
	{ "no-verify", 0, DS_OPT_FLAG, NULL, "do not compute checksums (fast on large files)", NULL, NULL },
	{ "frames", 0, DS_OPT_FLAG, NULL, "list every frame of a stream", NULL, NULL },
	{ NULL, 0, 0, NULL, NULL, NULL, NULL }
};

static const ds_program program = {
	.name = "ds-info",
	.usage = "[OPTIONS] FILE|-",
	.summary = "Describe a model (.dsm) or a tensor stream (.dst).",
	.options = options,
	.formats = "text,md,csv,json,jsonl",
	.min_args = 1,
	.max_args = 1,
};

static const char *checksum_word(ds_checksum_state state)
{
	switch (state) {
	case DS_CHECKSUM_OK: return "ok";
	case DS_CHECKSUM_MISMATCH: return "mismatch";
	case DS_CHECKSUM_ABSENT: return "absent";
	default: return "unchecked";
	}
}

static json_t *shape_json(const ds_tensor *t)
{
	json_t *shape = json_array();

	for (int d = 0; d < t->ndim; d++)
		json_array_append_new(shape, json_integer(t->shape[d]));
	return shape;
}

/* Totals over the tensors of one container, added into the caller's sums. */
struct totals {
	uint64_t tensors, bytes, elements;
	uint64_t checked, mismatched, absent;
};

static void count_tensors(const ds_container *c, struct totals *sum)
{
	for (size_t i = 0; i < ds_container_count(c); i++) {
		const ds_tensor *t = ds_container_tensor(c, i);
		ds_checksum_state state = ds_container_checksum(c, i);

		sum->tensors++;
		sum->bytes += ds_tensor_nbytes(t);
		sum->elements += (uint64_t)ds_tensor_numel(t);
		sum->checked += state == DS_CHECKSUM_OK || state == DS_CHECKSUM_MISMATCH;
		sum->mismatched += state == DS_CHECKSUM_MISMATCH;
		sum->absent += state == DS_CHECKSUM_ABSENT;
	}
}

static const char *checksum_summary(const struct totals *sum, char *buf, size_t len)
{
	if (sum->mismatched)
		snprintf(buf, len, "%llu mismatched", (unsigned long long)sum->mismatched);
	else if (sum->checked && sum->absent)
		snprintf(buf, len, "ok (%llu without)", (unsigned long long)sum->absent);
	else if (sum->checked)
		snprintf(buf, len, "ok");
	else if (sum->absent)
		snprintf(buf, len, "absent");
	else
		snprintf(buf, len, "unchecked");
	return buf;
}

static json_t *tensor_table(const ds_container *c)
{
	json_t *rows = json_array();

	for (size_t i = 0; i < ds_container_count(c); i++) {
		const ds_tensor *t = ds_container_tensor(c, i);

		json_array_append_new(rows, json_pack("{s:s, s:s, s:o, s:I, s:s}",
			"name", ds_container_name(c, i),
			"dtype", ds_dtype_name(t->dtype),
			"shape", shape_json(t),
			"bytes", (json_int_t)ds_tensor_nbytes(t),
			"checksum", checksum_word(ds_container_checksum(c, i))));
	}
	return rows;
}

/* ds.labels as a table of index and name. */
static int add_labels(json_t *doc, const ds_container *c, ds_error *err)
{
	json_t *labels, *rows, *name;
	size_t i;
	int rc = ds_container_meta_json(c, "ds.labels", &labels, err);

	if (rc || !labels)
		return rc;
	if (!json_is_array(labels)) {
		json_decref(labels);
		return ds_error_set(err, DS_ERR_DATA, "bad_metadata", "ds.labels: not a JSON array");
	}
	rows = json_array();
	json_array_foreach(labels, i, name)
		json_array_append_new(rows, json_pack("{s:I, s:O}", "index", (json_int_t)i, "label", name));
	json_object_set_new(doc, "labels", rows);
	json_decref(labels);
	return 0;
}

static int add_history(json_t *doc, const ds_container *c, ds_error *err)
{
	json_t *history, *entry, *rows;
	size_t i;
	int rc = ds_container_meta_json(c, "ds.history", &history, err);

	if (rc || !history)
		return rc;
	rows = json_array();
	json_array_foreach(history, i, entry) {
		json_t *row = json_object();
		const char *keys[] = { "tool", "version", "date", "args", "figures" };

		json_object_set_new(row, "step", json_integer((json_int_t)i));
		for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
			json_t *v = json_object_get(entry, keys[k]);

			if (v)
				json_object_set(row, keys[k], v);
		}
		json_array_append_new(rows, row);
	}
	json_object_set_new(doc, "history", rows);
	json_decref(history);
	return 0;
}

static int add_preprocess(json_t *doc, const ds_container *c, ds_error *err)
{
	json_t *pre;
	int rc = ds_container_meta_json(c, "ds.preprocess", &pre, err);

	if (rc || !pre)
		return rc;
	json_object_set_new(doc, "preprocess", pre);
	return 0;
}

/* Metadata that no section above shows. */
static void add_other_metadata(json_t *doc, const ds_container *c)
{
	static const char *shown[] = { "ds.format", "ds.graph", "ds.preprocess", "ds.labels",
				       "ds.history", "ds.checksums", "ds.items" };
	json_t *rows = json_array();

	for (size_t i = 0; i < ds_container_meta_count(c); i++) {
		const char *key = ds_container_meta_key(c, i);
		size_t k;

		for (k = 0; k < sizeof shown / sizeof shown[0]; k++)
			if (strcmp(key, shown[k]) == 0)
				break;
		if (k == sizeof shown / sizeof shown[0])
			json_array_append_new(rows, json_pack("{s:s, s:s}", "key", key,
							      "value", ds_container_meta_get(c, key)));
	}
	if (json_array_size(rows))
		json_object_set_new(doc, "metadata", rows);
	else
		json_decref(rows);
}

static json_t *value_row(const ds_graph *g, const char *name, const char *role)
{
	const ds_shape *s = ds_graph_shape(g, name);
	json_t *shape = json_array();

	for (int d = 0; s && d < s->ndim; d++)
		json_array_append_new(shape, json_integer(s->dim[d]));
	return json_pack("{s:s, s:s, s:s, s:o}", "role", role, "name", name,
			 "dtype", s ? ds_dtype_name(s->dtype) : "?", "shape", shape);
}

/* Graph summary: inputs and outputs with shapes at batch 1, nodes by op,
 * parameters and FLOPs per item. */
static int add_graph(json_t *doc, const ds_container *c, ds_error *err)
{
	ds_graph *g;
	json_t *graph, *io, *ops, *by_op;
	const char *op;
	json_t *count;
	int64_t flops;
	int rc;

	if (!ds_container_meta_get(c, "ds.graph"))
		return 0;
	if ((rc = ds_graph_from_model(c, &g, err)) != 0)
		return rc;
	graph = json_object();
	json_object_set_new(graph, "nodes", json_integer((json_int_t)ds_graph_node_count(g)));
	json_object_set_new(graph, "parameters", json_integer(ds_graph_param_count(g)));
	flops = ds_graph_flops(g);
	json_object_set_new(graph, "flops_per_item", flops >= 0 ? json_integer(flops) : json_null());
	json_object_set_new(doc, "graph", graph);

	io = json_array();
	for (size_t i = 0; i < ds_graph_input_count(g); i++)
		json_array_append_new(io, value_row(g, ds_graph_input_name(g, i), "input"));
	for (size_t i = 0; i < ds_graph_output_count(g); i++)
		json_array_append_new(io, value_row(g, ds_graph_output_name(g, i), "output"));
	json_object_set_new(doc, "graph_io", io);

	by_op = json_object();
	for (size_t i = 0; i < ds_graph_node_count(g); i++) {
		const char *name = ds_node_op(ds_graph_node(g, i));
		json_t *n = json_object_get(by_op, name);

		json_object_set_new(by_op, name, json_integer(n ? json_integer_value(n) + 1 : 1));
	}
	ops = json_array();
	json_object_foreach(by_op, op, count)
		json_array_append_new(ops, json_pack("{s:s, s:O}", "op", op, "nodes", count));
	json_decref(by_op);
	json_object_set_new(doc, "ops", ops);
	ds_graph_free(g);
	return 0;
}

static int describe_model(json_t *doc, const ds_container *c, ds_error *err)
{
	struct totals sum = { 0 };
	char buf[64];
	int rc;

	count_tensors(c, &sum);
	json_object_set_new(doc, "tensors_total", json_integer((json_int_t)sum.tensors));
	json_object_set_new(doc, "tensor_bytes", json_integer((json_int_t)sum.bytes));
	json_object_set_new(doc, "checksums", json_string(checksum_summary(&sum, buf, sizeof buf)));
	if ((rc = add_graph(doc, c, err)) || (rc = add_preprocess(doc, c, err)) ||
	    (rc = add_labels(doc, c, err)))
		return rc;
	json_object_set_new(doc, "tensors", tensor_table(c));
	add_other_metadata(doc, c);
	return add_history(doc, c, err);
}

/* Items in a frame: the length of ds.items, else the batch of its first tensor. */
static int64_t frame_items(const ds_container *frame)
{
	const char *items = ds_container_meta_get(frame, "ds.items");
	json_t *list;
	int64_t n = 0;

	if (items && (list = json_loads(items, 0, NULL))) {
		n = json_is_array(list) ? (int64_t)json_array_size(list) : 0;
		json_decref(list);
		return n;
	}
	if (ds_container_count(frame) && ds_container_tensor(frame, 0)->ndim > 0)
		n = ds_container_tensor(frame, 0)->shape[0];
	return n;
}

/* Fold one frame's tensors into the per-name table of the stream. */
static void merge_stream_tensors(json_t *by_name, const ds_container *frame)
{
	for (size_t i = 0; i < ds_container_count(frame); i++) {
		const ds_tensor *t = ds_container_tensor(frame, i);
		const char *name = ds_container_name(frame, i);
		const char *state = checksum_word(ds_container_checksum(frame, i));
		json_t *row = json_object_get(by_name, name);

		if (!row) {
			row = json_pack("{s:s, s:s, s:o, s:I, s:I, s:s}", "name", name,
					"dtype", ds_dtype_name(t->dtype), "shape", shape_json(t),
					"frames", (json_int_t)0, "bytes", (json_int_t)0, "checksum", state);
			json_object_set_new(by_name, name, row);
		}
		json_object_set_new(row, "frames",
				    json_integer(json_integer_value(json_object_get(row, "frames")) + 1));
		json_object_set_new(row, "bytes", json_integer(json_integer_value(json_object_get(row, "bytes")) +
							       (json_int_t)ds_tensor_nbytes(t)));
		/* The first dimension is the batch; frames may differ in it. */
		if (t->ndim > 0) {
			json_t *shape = json_object_get(row, "shape");

			if (json_array_size(shape) != (size_t)t->ndim)
				json_object_set_new(row, "shape", json_string("varies"));
			else if (json_integer_value(json_array_get(shape, 0)) != t->shape[0])
				json_array_set_new(shape, 0, json_string("*"));
		}
		if (strcmp(state, "ok") != 0 && strcmp(json_string_value(json_object_get(row, "checksum")), "mismatch"))
			json_object_set_new(row, "checksum", json_string(state));
	}
}

static int describe_stream(json_t *doc, ds_stream *s, ds_container *first, int list_frames, ds_error *err)
{
	struct totals sum = { 0 };
	json_t *by_name = json_object(), *rows = json_array(), *frame_rows = json_array(), *row;
	json_t *labelled = json_object();  /* ds.labels of the first frame that has them */
	ds_container *frame = first;
	uint64_t offset = 0;
	int64_t items = 0;
	const char *name;
	char buf[64];
	int rc = 0;

	while (frame) {
		size_t index = ds_stream_frames(s) - 1;
		int64_t n = frame_items(frame);
		struct totals one = { 0 };

		count_tensors(frame, &one);
		sum.tensors += one.tensors;
		sum.bytes += one.bytes;
		sum.elements += one.elements;
		sum.checked += one.checked;
		sum.mismatched += one.mismatched;
		sum.absent += one.absent;
		items += n;
		merge_stream_tensors(by_name, frame);
		if (!json_object_get(labelled, "labels") && ds_container_meta_get(frame, "ds.labels") &&
		    (rc = add_labels(labelled, frame, err)) != 0) {
			ds_error_prefix(err, "%s: frame %zu", ds_stream_path(s), index);
			break;
		}
		if (list_frames)
			json_array_append_new(frame_rows, json_pack("{s:I, s:I, s:I, s:I, s:I}",
				"frame", (json_int_t)index, "offset", (json_int_t)offset,
				"bytes", (json_int_t)(ds_stream_offset(s) - offset),
				"tensors", (json_int_t)one.tensors, "items", (json_int_t)n));
		offset = ds_stream_offset(s);
		if (frame != first)
			ds_container_free(frame);
		if ((rc = ds_stream_read(s, &frame, err)) != 0)
			break;
	}
	if (rc == 0) {
		json_object_set_new(doc, "bytes", json_integer((json_int_t)ds_stream_offset(s)));
		json_object_set_new(doc, "frames", json_integer((json_int_t)ds_stream_frames(s)));
		json_object_set_new(doc, "items", json_integer(items));
		json_object_set_new(doc, "tensor_bytes", json_integer((json_int_t)sum.bytes));
		json_object_set_new(doc, "checksums", json_string(checksum_summary(&sum, buf, sizeof buf)));
		json_object_update(doc, labelled);
		json_object_foreach(by_name, name, row)
			json_array_append(rows, row);
		json_object_set_new(doc, "tensors", rows);
		rows = NULL;
		if (list_frames) {
			json_object_set_new(doc, "frame_list", frame_rows);
			frame_rows = NULL;
		}
	}
	json_decref(rows);
	json_decref(frame_rows);
	json_decref(by_name);
	json_decref(labelled);
	return rc;
}

/* To stdout, or atomically to the file that -o names. */
static int print_description(const char *output, ds_format format, const json_t *doc, ds_error *err)
{
	ds_writer *w;
	int rc;

	if (!output || strcmp(output, "-") == 0)
		return ds_print(stdout, format, doc, err);
	if ((rc = ds_writer_open_text(output, &w, err)) != 0)
		return rc;
	if ((rc = ds_print(ds_writer_file(w), format, doc, err)) != 0) {
		ds_writer_abort(w);
		return rc;
	}
	return ds_writer_commit(w, err);
}

int main(int argc, char **argv)
{
	ds_error err = { 0 };
	ds_cli *cli = NULL;
	ds_stream *s = NULL;
	ds_container *first = NULL, *next = NULL;
	json_t *doc = NULL;
	const char *path, *format;
	unsigned flags = DS_LOAD_REPORT;
	int done = 0, rc;

	rc = ds_cli_start(&cli, &program, argc, argv, &done);
	if (rc || done)
		return rc;
	path = ds_cli_arg(cli, 0);
	if (ds_cli_flag(cli, "verify") && ds_cli_flag(cli, "no-verify")) {
		rc = ds_error_set(&err, DS_ERR_USAGE, "usage", "--verify and --no-verify exclude each other");
		goto out;
	}
	if (ds_cli_flag(cli, "verify"))
		flags = 0;
	else if (ds_cli_flag(cli, "no-verify"))
		flags = DS_LOAD_NO_VERIFY;

	if ((rc = ds_stream_open(path, flags, &s, &err)) != 0)
		goto out;
	if ((rc = ds_stream_read(s, &first, &err)) != 0)
		goto out;
	if (!first) {
		rc = ds_error_set(&err, DS_ERR_DATA, "empty_file", "%s: empty file", path);
		goto out;
	}
	format = ds_container_meta_get(first, "ds.format");
	doc = json_object();
	json_object_set_new(doc, "file", json_string(strcmp(path, "-") ? path : "stdin"));
	json_object_set_new(doc, "format", json_string(format ? format : "safetensors"));
	if (format && strcmp(format, DS_FORMAT_FRAME) == 0) {
		json_object_set_new(doc, "kind", json_string("stream"));
		/* Stream errors name the file and frame themselves. */
		rc = describe_stream(doc, s, first, ds_cli_flag(cli, "frames"), &err);
	} else {
		/* A model, or a safetensors file from elsewhere: one container. */
		json_object_set_new(doc, "kind", json_string(format ? "model" : "safetensors"));
		uint64_t end = ds_stream_offset(s);

		/* Whatever follows, even something that does not parse, is
		 * trailing data: report it as such, not as a broken frame 1. */
		if (ds_stream_read(s, &next, &err) != 0 || next) {
			ds_error_clear(&err);
			rc = ds_error_set(&err, DS_ERR_DATA, "trailing_data",
					  "%s: data after the end of the model at byte %llu",
					  ds_stream_path(s), (unsigned long long)end);
			goto out;
		}
		json_object_set_new(doc, "bytes", json_integer((json_int_t)ds_stream_offset(s)));
		if ((rc = describe_model(doc, first, &err)) != 0)
			ds_error_prefix(&err, "%s", ds_stream_path(s));
	}
	if (rc == 0)
		rc = print_description(ds_cli_get(cli, "output"), ds_cli_format(cli), doc, &err);
out:
	json_decref(doc);
	ds_container_free(next);
	ds_container_free(first);
	ds_stream_close(s);
	return ds_cli_finish(cli, rc, &err);
}
