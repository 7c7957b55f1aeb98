/* ds-prune - remove whole channels of a model's convolutions and linear
 * layers: a smaller dense model, faster wherever it runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"

static const ds_option options[] = {
	{ "model", 'm', DS_OPT_STRING, "FILE", "the model to prune (- is stdin; or give it as the operand)", NULL, NULL },
	{ "criterion", 'c', DS_OPT_STRING, "NAME", "channel importance: l1, bn-gamma or taylor", NULL, "l1" },
	{ "ratio", 'r', DS_OPT_FLOAT, "R", "fraction of the channels of every prunable group to remove", NULL, "0.3" },
	{ "layer-ratio", 0, DS_OPT_LIST, "NAME=R", "ratio for the group of layer NAME (a glob)", NULL, NULL },
	{ "min-channels", 0, DS_OPT_INT, "N", "a group keeps at least N channels", NULL, "1" },
	{ "round", 0, DS_OPT_INT, "N", "round the channels kept up to a multiple of N", NULL, "1" },
	{ "prune-first", 0, DS_OPT_FLAG, NULL, "also prune the layers that read the input", NULL, NULL },
	{ "prune-last", 0, DS_OPT_FLAG, NULL, "also prune the channels the last layer reads", NULL, NULL },
	{ "data", 'd', DS_OPT_STRING, "FILE", "labelled stream (.dst) the taylor criterion runs on", NULL, NULL },
	{ "data-count", 0, DS_OPT_INT, "N", "taylor: items of --data to use at most (0: all)", NULL, "1024" },
	{ "batch", 0, DS_OPT_INT, "N", "taylor: items per batch", NULL, "32" },
	{ "dry-run", 'n', DS_OPT_FLAG, NULL, "report what would be removed; write nothing", NULL, NULL },
	{ NULL, 0, 0, NULL, NULL, NULL, NULL }
};

static const ds_program program = {
	.name = "ds-prune",
	.usage = "[OPTIONS] [MODEL|-]",
	.summary = "Remove whole channels of a model's layers: a smaller, faster dense model.",
	.options = options,
	.formats = "text,md,csv,json,jsonl",
	.min_args = 0,
	.max_args = 1,
};

int main(int argc, char **argv)
{
	ds_error err = { 0 };
	ds_prune_options o = { 0 };
	ds_container *model = NULL;
	ds_writer *w = NULL;
	json_t *report = NULL;
	const char **ratios = NULL;
	const char *path, *output;
	int dry;
	ds_cli *cli;
	int done, rc;

	rc = ds_cli_start(&cli, &program, argc, argv, &done);
	if (rc || done)
		return rc;
	dry = ds_cli_flag(cli, "dry-run");
	if ((rc = ds_cli_model_io(cli, &path, &output, &err)))
		goto out;
	o.layer_ratio_count = ds_cli_list_count(cli, "layer-ratio");
	if (!(ratios = calloc(o.layer_ratio_count + 1, sizeof *ratios))) {
		rc = ds_error_set(&err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		goto out;
	}
	for (size_t i = 0; i < o.layer_ratio_count; i++)
		ratios[i] = ds_cli_list_at(cli, "layer-ratio", i);
	o.layer_ratios = ratios;
	o.criterion = ds_cli_get(cli, "criterion");
	o.ratio = ds_cli_float(cli, "ratio");
	o.min_channels = ds_cli_int(cli, "min-channels");
	o.round = ds_cli_int(cli, "round");
	o.prune_first = ds_cli_flag(cli, "prune-first");
	o.prune_last = ds_cli_flag(cli, "prune-last");
	o.data = ds_cli_get(cli, "data");
	o.data_count = ds_cli_int(cli, "data-count");
	o.batch = ds_cli_int(cli, "batch");
	o.cli = cli;
	if (o.min_channels < 1 || o.round < 1 || o.batch < 1 || o.data_count < 0) {
		rc = ds_error_set(&err, DS_ERR_USAGE, "usage",
				  "--min-channels, --round and --batch must be at least 1, --data-count at least 0");
		goto out;
	}
	if (o.data && strcmp(o.criterion, "taylor") != 0) {
		rc = ds_error_set(&err, DS_ERR_USAGE, "usage", "--data is for --criterion taylor");
		goto out;
	}
	/* Open the output first: a refused terminal or an unwritable folder
	 * fails before any work. */
	if (!dry && (rc = ds_writer_open(output, &w, &err)))
		goto out;
	if ((rc = ds_container_load(path, 0, &model, &err)))
		goto out;
	ds_cli_catch_interrupts(1);
	rc = ds_prune_model(model, &o, &report, &err);
	ds_cli_catch_interrupts(0);
	if (rc) {
		if (rc != DS_ERR_USAGE && rc != DS_ERR_INTERRUPTED)
			ds_error_prefix(&err, "%s", path);
		goto out;
	}
	if (w) {
		if ((rc = ds_cli_history(cli, model, json_object_get(report, "figures"), &err)) ||
		    (rc = ds_writer_put(w, model, &err)) || (rc = ds_writer_commit(w, &err)))
			goto out;
		w = NULL;
	}
	/* The report goes to stderr, as ds-optimize's: stdout may carry the
	 * model.  --dry-run writes no model, so its report is the output. */
	if (ds_cli_verbosity(cli) >= 0 || dry)
		rc = ds_print(dry ? stdout : stderr, ds_cli_format(cli), report, &err);
out:
	ds_writer_abort(w);
	json_decref(report);
	ds_container_free(model);
	free(ratios);
	return ds_cli_finish(cli, rc, &err);
}
