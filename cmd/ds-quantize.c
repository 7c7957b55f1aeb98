/* ds-quantize - quantize a model to INT8: weights per output channel,
 * activations calibrated on data, and a comparison with the float model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"

static const ds_option options[] = {
	{ "model", 'm', DS_OPT_STRING, "FILE", "the float model to quantize (- is stdin; or give it as the operand)", NULL,
	  NULL },
	{ "calib", 0, DS_OPT_STRING, "DATA", "a .dst stream whose inputs calibrate the activations (static mode)", NULL,
	  NULL },
	{ "calib-count", 0, DS_OPT_INT, "N", "calibrate on at most N items of DATA", NULL, "1000" },
	{ "mode", 0, DS_OPT_STRING, "MODE", "static (INT8 activations, calibrated) or dynamic (INT8 weights only)", NULL,
	  "static" },
	{ "method", 0, DS_OPT_STRING, "METHOD", "how activation ranges are chosen: minmax, percentile or entropy", NULL,
	  "percentile" },
	{ "percentile", 0, DS_OPT_FLOAT, "P", "percentile of values the percentile method keeps in range", NULL,
	  "99.99" },
	{ "skip", 0, DS_OPT_LIST, "PATTERN", "keep the layers whose node names match this shell pattern in float", NULL,
	  NULL },
	{ "skip-first-last", 0, DS_OPT_FLAG, NULL, "keep the first and the last convolution or linear layer in float",
	  NULL, NULL },
	{ "no-bias-correction", 0, DS_OPT_FLAG, NULL,
	  "keep the float biases: do not correct them for the mean shift INT8 puts on each output", NULL, NULL },
	{ "batch", 0, DS_OPT_INT, "N", "batch size of calibration and comparison", NULL, "64" },
	{ "compare", 0, DS_OPT_STRING, "DATA", "run the float and the INT8 model on a labelled .dst and compare them",
	  NULL, NULL },
	{ "compare-count", 0, DS_OPT_INT, "N", "compare on at most N items of DATA (0: all)", NULL, "0" },
	{ "dry-run", 'n', DS_OPT_FLAG, NULL, "report what would change, per layer and tensor; write nothing", NULL,
	  NULL },
	{ NULL, 0, 0, NULL, NULL, NULL, NULL }
};

static const ds_program program = {
	.name = "ds-quantize",
	.usage = "[OPTIONS] [MODEL|-]",
	.summary = "Quantize a model to INT8, calibrated on a tensor stream.",
	.options = options,
	.formats = "text,md,csv,json,jsonl",
	.min_args = 0,
	.max_args = 1,
};

/* A private copy of a container (the float model for --compare), also when
 * it came from a pipe. */
static int copy_model(ds_container *c, ds_container **out, ds_error *err)
{
	void *buf = NULL;
	size_t len = 0;
	int rc = ds_container_serialize(c, &buf, &len, err);

	if (!rc)
		rc = ds_container_parse(buf, len, "model", DS_LOAD_NO_VERIFY, out, err);
	free(buf);
	return rc;
}

int main(int argc, char **argv)
{
	ds_error err = { 0 };
	ds_quantize_options o = { 0 };
	ds_container *model = NULL, *original = NULL;
	ds_writer *w = NULL;
	json_t *report = NULL, *compare = NULL, *doc = NULL;
	const char **skip = NULL;
	const char *path, *output;
	int dry, done, rc;
	ds_cli *cli;

	rc = ds_cli_start(&cli, &program, argc, argv, &done);
	if (rc || done)
		return rc;
	dry = ds_cli_flag(cli, "dry-run");
	if ((rc = ds_cli_model_io(cli, &path, &output, &err)))
		goto out;
	if (ds_cli_int(cli, "calib-count") < 1 || ds_cli_int(cli, "batch") < 1 || ds_cli_int(cli, "compare-count") < 0) {
		rc = ds_error_set(&err, DS_ERR_USAGE, "usage", "--calib-count and --batch take a positive count");
		goto out;
	}
	if (!(skip = calloc(ds_cli_list_count(cli, "skip") + 1, sizeof *skip))) {
		rc = ds_error_set(&err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		goto out;
	}
	for (size_t i = 0; i < ds_cli_list_count(cli, "skip"); i++)
		skip[i] = ds_cli_list_at(cli, "skip", i);
	o = (ds_quantize_options){
		.mode = ds_cli_get(cli, "mode"),
		.method = ds_cli_get(cli, "method"),
		.percentile = ds_cli_float(cli, "percentile"),
		.calib = ds_cli_get(cli, "calib"),
		.calib_count = ds_cli_int(cli, "calib-count"),
		.batch = ds_cli_int(cli, "batch"),
		.skip = skip,
		.skip_count = ds_cli_list_count(cli, "skip"),
		.skip_first_last = ds_cli_flag(cli, "skip-first-last"),
		.no_bias_correction = ds_cli_flag(cli, "no-bias-correction"),
		.cli = cli,
	};
	/* Open the output first: a refused terminal or an unwritable folder
	 * fails before any work. */
	if (!dry && (rc = ds_writer_open(output, &w, &err)))
		goto out;
	if ((rc = ds_container_load(path, 0, &model, &err)))
		goto out;
	if (ds_cli_get(cli, "compare") && (rc = copy_model(model, &original, &err)))
		goto out;
	if ((rc = ds_quantize_model(model, &o, &report, &err))) {
		/* Errors about the calibration data name that file already. */
		if (rc != DS_ERR_USAGE && !(o.calib && !strncmp(err.message, o.calib, strlen(o.calib))))
			ds_error_prefix(&err, "%s", path);
		goto out;
	}
	if (original && (rc = ds_quantize_compare(original, model, ds_cli_get(cli, "compare"),
						  ds_cli_int(cli, "compare-count"), o.batch, &compare, &err)))
		goto out;
	if (w) {
		json_t *figures = json_deep_copy(json_object_get(report, "figures"));

		if (compare)
			json_object_set(figures, "compare", compare);
		rc = ds_cli_history(cli, model, figures, &err);
		json_decref(figures);
		if (rc || (rc = ds_writer_put(w, model, &err)) || (rc = ds_writer_commit(w, &err)))
			goto out;
		w = NULL;
	}
	/* The report goes to stderr, as ds-optimize's: stdout may carry the
	 * model.  Per-layer and per-tensor tables with --dry-run or -v. */
	if (ds_cli_verbosity(cli) >= 0 || dry) {
		doc = json_pack("{s:O}", "figures", json_object_get(report, "figures"));
		if (compare)
			json_object_set(doc, "compare", compare);
		if (dry || ds_cli_verbosity(cli) > 0) {
			json_object_set(doc, "layers", json_object_get(report, "layers"));
			json_object_set(doc, "tensors", json_object_get(report, "tensors"));
			json_object_set(doc, "activations", json_object_get(report, "activations"));
		}
		rc = ds_print(dry ? stdout : stderr, ds_cli_format(cli), doc, &err);
	}
out:
	ds_writer_abort(w);
	json_decref(doc);
	json_decref(report);
	json_decref(compare);
	ds_container_free(model);
	ds_container_free(original);
	free(skip);
	return ds_cli_finish(cli, rc, &err);
}
