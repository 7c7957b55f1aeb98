/* ds-optimize - fold, fuse and prune a model's graph for the device it will
 * run on, checking that its outputs do not change. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"

static const ds_option options[] = {
	{ "model", 'm', DS_OPT_STRING, "FILE", "the model to optimize (- is stdin; or give it as the operand)", NULL, NULL },
	{ "target", 0, DS_OPT_STRING, "DEVICE", "the device the model will run on: cpu or cuda", NULL, "cpu" },
	{ "level", 'O', DS_OPT_INT, "N", "optimization level 0 to 3 (-O0 copies the model unchanged)", NULL, "2" },
	{ "disable-pass", 0, DS_OPT_LIST, "NAME", "do not run this pass (or a comma-separated list of them)", NULL, NULL },
	{ "list-passes", 0, DS_OPT_FLAG, NULL, "list the passes with their levels and exit", NULL, NULL },
	{ "dry-run", 'n', DS_OPT_FLAG, NULL, "report what would change; write nothing", NULL, NULL },
	{ "verify", 0, DS_OPT_INT, "N", "run the original and the result on N random inputs; fail if they differ", NULL,
	  "0" },
	{ "tolerance", 0, DS_OPT_FLOAT, "REL", "largest relative difference --verify accepts", NULL, "1e-5" },
	{ "batch", 0, DS_OPT_INT, "N", "batch size of the memory figures and of --tune", NULL, "64" },
	{ "tune", 0, DS_OPT_FLAG, NULL, "time each convolution's kernels on this machine and record the fastest", NULL,
	  NULL },
	{ NULL, 0, 0, NULL, NULL, NULL, NULL }
};

static const ds_program program = {
	.name = "ds-optimize",
	.usage = "[OPTIONS] [MODEL|-]",
	.summary = "Fold, fuse and prune a model's graph for the device it will run on.",
	.options = options,
	.formats = "text,md,csv,json,jsonl",
	.min_args = 0,
	.max_args = 1,
};

/* --disable-pass values joined into one comma-separated list. */
static char *disabled_passes(const ds_cli *cli, ds_error *err)
{
	size_t n = ds_cli_list_count(cli, "disable-pass"), len = 1;
	char *list;

	for (size_t i = 0; i < n; i++)
		len += strlen(ds_cli_list_at(cli, "disable-pass", i)) + 1;
	if (!(list = calloc(1, len))) {
		ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		if (i)
			strcat(list, ",");
		strcat(list, ds_cli_list_at(cli, "disable-pass", i));
	}
	return list;
}

/* The report as the printer draws it: figures as a section, the passes as
 * a table, every rewrite as a row of a second table. */
static json_t *printable(const json_t *report, const json_t *verify, const json_t *tune)
{
	json_t *doc = json_object(), *passes = json_array(), *rewrites = json_array(), *row;
	size_t i, j;
	json_t *line;

	json_object_set(doc, "figures", json_object_get(report, "figures"));
	json_array_foreach(json_object_get(report, "passes"), i, row) {
		json_array_append_new(passes, json_pack("{s:O, s:O, s:O}", "pass", json_object_get(row, "pass"), "state",
							json_object_get(row, "state"), "rewrites",
							json_object_get(row, "rewrites")));
		json_array_foreach(json_object_get(row, "log"), j, line)
			json_array_append_new(rewrites, json_pack("{s:O}", "rewrite", line));
	}
	json_object_set_new(doc, "passes", passes);
	json_object_set_new(doc, "rewrites", rewrites);
	if (verify)
		json_object_set(doc, "verify", (json_t *)verify);
	if (tune)
		json_object_set(doc, "tune", json_object_get(tune, "tune"));
	return doc;
}

int main(int argc, char **argv)
{
	ds_error err = { 0 };
	ds_optimize_options o = { 0 };
	ds_container *model = NULL, *original = NULL;
	ds_writer *w = NULL;
	json_t *report = NULL, *verify = NULL, *doc = NULL, *tune = NULL;
	const char *path, *output;
	char *disable = NULL;
	int64_t verify_n;
	ds_cli *cli;
	int done, rc;

	rc = ds_cli_start(&cli, &program, argc, argv, &done);
	if (rc || done)
		return rc;
	if (ds_cli_flag(cli, "list-passes")) {
		json_t *table = ds_optimize_pass_table();

		rc = ds_print(stdout, ds_cli_format(cli), table, &err);
		json_decref(table);
		goto out;
	}
	verify_n = ds_cli_int(cli, "verify");
	if ((rc = ds_cli_model_io(cli, &path, &output, &err)))
		goto out;
	if (verify_n < 0) {
		rc = ds_error_set(&err, DS_ERR_USAGE, "usage", "--verify: %lld is negative", (long long)verify_n);
		goto out;
	}
	if (!(disable = disabled_passes(cli, &err))) {
		rc = err.status;
		goto out;
	}
	/* Open the output first: a refused terminal or an unwritable folder
	 * fails before any work. */
	if (output && !ds_cli_flag(cli, "dry-run") && (rc = ds_writer_open(output, &w, &err)))
		goto out;
	if ((rc = ds_container_load(path, 0, &model, &err)))
		goto out;
	if (verify_n && (rc = ds_container_load(path, 0, &original, &err)))
		goto out;
	o.target = ds_cli_get(cli, "target");
	o.level = (int)ds_cli_int(cli, "level");
	o.disable = disable;
	o.batch = ds_cli_int(cli, "batch");
	o.cli = cli;
	if ((rc = ds_optimize_model(model, &o, &report, &err))) {
		if (rc != DS_ERR_USAGE)
			ds_error_prefix(&err, "%s", path);
		goto out;
	}
	/* Tuning after the passes: it times the kernels the final graph runs. */
	if (ds_cli_flag(cli, "tune")) {
		if ((rc = ds_tune_model(model, o.batch, cli, &tune, &err))) {
			ds_error_prefix(&err, "%s: --tune", path);
			goto out;
		}
		json_object_update(json_object_get(report, "figures"), json_object_get(tune, "figures"));
	}
	if (verify_n) {
		double rel;

		if ((rc = ds_model_compare(original, model, verify_n, (uint64_t)ds_cli_int(cli, "seed"), &verify, &err)))
			goto out;
		rel = json_real_value(json_object_get(verify, "max_rel_diff"));
		if (!(rel <= ds_cli_float(cli, "tolerance"))) {
			rc = ds_error_set(&err, DS_ERR_RUN, "verify_failed",
					  "--verify: outputs differ by %.3g relative (more than %g) on %lld inputs", rel,
					  ds_cli_float(cli, "tolerance"), (long long)verify_n);
			goto out;
		}
		json_object_set_new(verify, "tolerance", json_real(ds_cli_float(cli, "tolerance")));
	}
	if (w) {
		json_t *figures = json_deep_copy(json_object_get(report, "figures"));

		if (verify)
			json_object_set(figures, "verify", verify);
		rc = ds_cli_history(cli, model, figures, &err);
		json_decref(figures);
		if (rc || (rc = ds_writer_put(w, model, &err)) || (rc = ds_writer_commit(w, &err)))
			goto out;
		w = NULL;
	}
	/* The report goes to stderr, as ds-train's summary: stdout may carry
	 * the model. */
	if (ds_cli_verbosity(cli) >= 0 || ds_cli_flag(cli, "dry-run")) {
		doc = printable(report, verify, tune);
		rc = ds_print(ds_cli_flag(cli, "dry-run") ? stdout : stderr, ds_cli_format(cli), doc, &err);
	}
out:
	ds_writer_abort(w);
	json_decref(doc);
	json_decref(report);
	json_decref(verify);
	json_decref(tune);
	ds_container_free(model);
	ds_container_free(original);
	free(disable);
	return ds_cli_finish(cli, rc, &err);
}
