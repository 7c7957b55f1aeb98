/* ds-infer - run a model on images, text or a tensor stream: one result per item. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"

static const ds_option options[] = {
	{ "model", 'm', DS_OPT_STRING, "FILE", "the model (.dsm, - for stdin)", NULL, NULL },
	{ "input", 'i', DS_OPT_LIST, "PATH", "an input: image, folder, text, .jsonl, fortune file, IDX, .dst or -", NULL, NULL },
	{ "files-from", 0, DS_OPT_STRING, "FILE", "read input paths, one per line, from FILE (- is stdin)", NULL, NULL },
	{ "output-format", 0, DS_OPT_STRING, "FMT", "records as jsonl or csv, or dst frames", NULL, "jsonl" },
	{ "output-tensor", 0, DS_OPT_STRING, "NAME", "dst: the value written: the model's output, probs, or any graph value", NULL, NULL },
	{ "topk", 'k', DS_OPT_INT, "K", "labels with probabilities per record (at most the class count)", NULL, "5" },
	{ "batch", 'b', DS_OPT_INT, "N", "items per batch", NULL, "64" },
	{ "workers", 0, DS_OPT_INT, "N", "threads that read and decode ahead of the model (0: one per core --threads leaves free)", NULL, "0" },
	{ "shard", 0, DS_OPT_STRING, "K/N", "take every N-th item from the K-th (K from 1)", NULL, NULL },
	{ "no-labels", 0, DS_OPT_FLAG, NULL, "do not take labels from class sub-folders", NULL, NULL },
	{ "text-field", 0, DS_OPT_STRING, "NAME", "JSON Lines field holding the text", NULL, "text" },
	{ "label-field", 0, DS_OPT_STRING, "NAME", "JSON Lines field holding the label", NULL, "label" },
	{ "max-bytes", 0, DS_OPT_STRING, "SIZE", "larger files are errors (K, M, G suffixes)", NULL, "1G" },
	{ "buffer-size", 0, DS_OPT_STRING, "SIZE", "items of a .dst stream held at once; the rest is read as the run goes",
	  NULL, "64M" },
	{ "no-verify", 0, DS_OPT_FLAG, NULL, "do not check the model's CRC-32C checksums", NULL, NULL },
	{ NULL, 0, 0, NULL, NULL, NULL, NULL }
};

static const ds_program program = {
	.name = "ds-infer",
	.usage = "[OPTIONS] --model FILE [INPUT...]",
	.summary = "Run a model on images, text or a tensor stream: one result per item.",
	.options = options,
	.formats = "text,md,json",
	.min_args = 0,
	.max_args = -1,
};

int main(int argc, char **argv)
{
	ds_error err = { 0 };
	ds_infer_options o = { 0 };
	ds_source_options source = { 0 };
	const char **inputs = NULL;
	json_t *summary = NULL;
	size_t n_inputs = 0;
	ds_cli *cli;
	int done, rc;

	rc = ds_cli_start(&cli, &program, argc, argv, &done);
	if (rc || done)
		return rc;
	inputs = calloc((size_t)ds_cli_argc(cli) + ds_cli_list_count(cli, "input") + 1, sizeof *inputs);
	if (!inputs) {
		rc = ds_error_set(&err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		goto out;
	}
	for (size_t i = 0; i < ds_cli_list_count(cli, "input"); i++)
		inputs[n_inputs++] = ds_cli_list_at(cli, "input", i);
	for (int i = 0; i < ds_cli_argc(cli); i++)
		inputs[n_inputs++] = ds_cli_arg(cli, i);

	source.text_field = ds_cli_get(cli, "text-field");
	source.label_field = ds_cli_get(cli, "label-field");
	source.labels_from_dirs = !ds_cli_flag(cli, "no-labels");
	o.model = ds_cli_get(cli, "model");
	o.load_flags = ds_cli_flag(cli, "no-verify") ? DS_LOAD_NO_VERIFY : 0;
	o.inputs = inputs;
	o.input_count = n_inputs;
	o.files_from = ds_cli_get(cli, "files-from");
	o.source = &source;
	o.output = ds_cli_get(cli, "output");
	o.output_format = ds_cli_get(cli, "output-format");
	o.output_tensor = ds_cli_get(cli, "output-tensor");
	o.batch = ds_cli_int(cli, "batch");
	o.topk = (int)ds_cli_int(cli, "topk");
	o.workers = (int)ds_cli_int(cli, "workers");
	o.device = ds_cli_device(cli);
	o.cli = cli;
	if ((rc = ds_cli_bytes(cli, "max-bytes", &source.max_bytes, &err)) ||
	    (rc = ds_cli_bytes(cli, "buffer-size", &o.buffer_bytes, &err)) ||
	    (rc = ds_cli_shard(cli, &o.shard_index, &o.shard_count, &err)))
		goto out;
	if (o.batch < 1 || o.topk < 1 || o.workers < 0) {
		rc = ds_error_set(&err, DS_ERR_USAGE, "usage", "--batch and --topk must be at least 1, --workers at least 0");
		goto out;
	}
	/* Stop between batches on SIGINT/SIGTERM: the output under way is
	 * removed, not left half written. */
	ds_cli_catch_interrupts(1);
	rc = ds_infer_run(&o, &summary, &err);
	ds_cli_catch_interrupts(0);
	/* The summary goes to stderr: stdout carries the records. */
	if (summary && ds_cli_verbosity(cli) >= 0) {
		ds_error print_err = { 0 };

		ds_print(stderr, ds_cli_format(cli), summary, &print_err);
	}
out:
	json_decref(summary);
	free(inputs);
	return ds_cli_finish(cli, rc, &err);
}
