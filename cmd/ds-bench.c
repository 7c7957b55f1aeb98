/* ds-bench - measure the speed and accuracy of models, side by side. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"

/* --threads and --device replace the shared options of the same names: here
 * they take lists to sweep rather than one value. */
static const ds_option options[] = {
	{ "model", 0, DS_OPT_LIST, "FILE", "a model to measure (operands are models too)", NULL, NULL },
	{ "data", 0, DS_OPT_STRING, "FILE", "labelled stream (.dst): real inputs, and top-1, top-5 and loss", NULL, NULL },
	{ "batch", 'b', DS_OPT_STRING, "LIST", "batch sizes: 1,8,64 or ranges such as 1-64*2 or 1-8+1", NULL, "1,64" },
	{ "threads", 0, DS_OPT_STRING, "N,...", "CPU thread counts to sweep (0: the default)", "DS_THREADS", "0" },
	{ "device", 0, DS_OPT_STRING, "DEVICE,...", "devices to sweep: auto, cpu, cuda or cuda:N", "DS_DEVICE", "auto" },
	{ "warmup", 0, DS_OPT_STRING, "N|Ts", "untimed runs first: N runs, or T seconds (2s, 500ms)", NULL, "0.2s" },
	{ "repeat", 'r', DS_OPT_INT, "N", "timed iterations at least", NULL, "10" },
	{ "min-time", 0, DS_OPT_FLOAT, "SECONDS", "and timed seconds at least", NULL, "1" },
	{ "max-cv", 0, DS_OPT_FLOAT, "PCT", "warn when throughput varies more than PCT percent", NULL, "5" },
	{ "compare", 0, DS_OPT_FLAG, NULL, "add every model's figures as ratios to the first model's", NULL, NULL },
	{ "export-times", 0, DS_OPT_STRING, "FILE", "write every timed iteration to FILE (.csv: CSV, else JSON Lines)",
	  NULL, NULL },
	{ "profile", 0, DS_OPT_FLAG, NULL, "time every node too, in runs of their own: a \"profile\" table", NULL,
	  NULL },
	{ "continue-after-failure", 0, DS_OPT_FLAG, NULL, "record a failed configuration and go on (exit status 1)",
	  NULL, NULL },
	{ "no-verify", 0, DS_OPT_FLAG, NULL, "skip the models' checksum checks", NULL, NULL },
	{ NULL, 0, 0, NULL, NULL, NULL, NULL }
};

static const ds_program program = {
	.name = "ds-bench",
	.usage = "[OPTIONS] [--model] MODEL...",
	.summary = "Measure the speed and accuracy of models, side by side.",
	.options = options,
	.formats = "md,text,csv,json,jsonl",
	.min_args = 0,
	.max_args = -1,
};

/* The report goes to stdout or, atomically, to -o FILE. */
static int print_report(const ds_cli *cli, const json_t *report, ds_error *err)
{
	const char *path = ds_cli_get(cli, "output");
	ds_writer *w = NULL;
	int rc;

	if (!path || !strcmp(path, "-"))
		return ds_print(stdout, ds_cli_format(cli), report, err);
	if ((rc = ds_writer_open_text(path, &w, err)))
		return rc;
	if ((rc = ds_print(ds_writer_file(w), ds_cli_format(cli), report, err))) {
		ds_writer_abort(w);
		return rc;
	}
	return ds_writer_commit(w, err);
}

int main(int argc, char **argv)
{
	ds_error err = { 0 }, out_err = { 0 };
	ds_bench_options o = { 0 };
	const char **models = NULL;
	json_t *report = NULL;
	ds_cli *cli;
	size_t n_list;
	int done, rc, out_rc;

	rc = ds_cli_start(&cli, &program, argc, argv, &done);
	if (rc || done)
		return rc;
	n_list = ds_cli_list_count(cli, "model");
	models = calloc(n_list + (size_t)ds_cli_argc(cli) + 1, sizeof *models);
	if (!models) {
		rc = ds_error_set(&err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n_list; i++)
		models[o.model_count++] = ds_cli_list_at(cli, "model", i);
	for (int i = 0; i < ds_cli_argc(cli); i++)
		models[o.model_count++] = ds_cli_arg(cli, i);
	o.models = models;
	o.data = ds_cli_get(cli, "data");
	o.batch = ds_cli_get(cli, "batch");
	o.threads = ds_cli_get(cli, "threads");
	o.device = ds_cli_get(cli, "device");
	o.warmup = ds_cli_get(cli, "warmup");
	o.repeat = ds_cli_int(cli, "repeat");
	o.min_time = ds_cli_float(cli, "min-time");
	o.max_cv = ds_cli_float(cli, "max-cv");
	o.compare = ds_cli_flag(cli, "compare");
	o.continue_after_failure = ds_cli_flag(cli, "continue-after-failure");
	o.profile = ds_cli_flag(cli, "profile");
	o.keep_samples = ds_cli_format(cli) == DS_FORMAT_JSON || ds_cli_get(cli, "export-times");
	o.seed = (uint64_t)ds_cli_int(cli, "seed");
	o.load_flags = ds_cli_flag(cli, "no-verify") ? DS_LOAD_NO_VERIFY : 0;
	o.cli = cli;

	ds_cli_catch_interrupts(1);
	rc = ds_bench_run(&o, &report, &err);
	ds_cli_catch_interrupts(0);
	/* With --continue-after-failure the report comes back with status 1:
	 * print what was measured, then say what failed. */
	if (!report)
		goto out;
	out_rc = ds_cli_get(cli, "export-times") ? ds_bench_write_times(report, ds_cli_get(cli, "export-times"), &out_err) : 0;
	/* Raw samples belong to json only: a table cell cannot hold them. */
	if (ds_cli_format(cli) != DS_FORMAT_JSON)
		json_object_del(report, "samples");
	if (!out_rc)
		out_rc = print_report(cli, report, &out_err);
	if (out_rc) {
		rc = out_rc;
		err = out_err;
	}
out:
	json_decref(report);
	free(models);
	return ds_cli_finish(cli, rc, &err);
}
