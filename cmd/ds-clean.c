/* ds-clean - validate, clean, de-duplicate and pack image and text datasets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"

static const ds_option options[] = {
	{ "input", 'i', DS_OPT_LIST, "PATH", "an input: folder, image, text, IDX, .jsonl, fortune file, .dst or -", NULL, NULL },
	{ "files-from", 0, DS_OPT_STRING, "FILE", "read input paths, one per line, from FILE (- is stdin)", NULL, NULL },
	{ "kind", 0, DS_OPT_STRING, "KIND", "auto, image or text", NULL, "auto" },
	{ "output-dir", 0, DS_OPT_STRING, "DIR", "write a cleaned copy of the tree to DIR (also unpacks .dst and IDX)", NULL, NULL },
	{ "encode", 0, DS_OPT_STRING, "FMT", "re-encode images in --output-dir as png or jpeg", NULL, NULL },
	{ "jpeg-quality", 0, DS_OPT_INT, "Q", "JPEG quality for --encode jpeg", NULL, "95" },
	{ "report", 0, DS_OPT_STRING, "FILE", "write one JSON Lines record per item to FILE", NULL, NULL },
	{ "split", 0, DS_OPT_STRING, "SPEC", "write parts such as 0.9,0.1 or train=0.8,val=0.1,test=0.1", NULL, NULL },
	{ "shard", 0, DS_OPT_STRING, "K/N", "take every N-th item from the K-th (K from 1)", NULL, NULL },
	{ "frame-items", 0, DS_OPT_INT, "N", "items per frame of the output stream", NULL, "1024" },
	{ "no-labels", 0, DS_OPT_FLAG, NULL, "do not take labels from class sub-folders", NULL, NULL },
	{ "text-field", 0, DS_OPT_STRING, "NAME", "JSON Lines field holding the text", NULL, "text" },
	{ "label-field", 0, DS_OPT_STRING, "NAME", "JSON Lines field holding the label", NULL, "label" },
	{ "max-bytes", 0, DS_OPT_STRING, "SIZE", "larger files are dropped as too_large (K, M, G suffixes)", NULL, "1G" },
	{ "size", 0, DS_OPT_STRING, "WxH", "output image size (default: the first image's)", NULL, NULL },
	{ "channels", 0, DS_OPT_INT, "N", "output channels, 1 or 3 (default: the first image's)", NULL, NULL },
	{ "resize", 0, DS_OPT_STRING, "MODE", "fit, fill or stretch", NULL, "fill" },
	{ "min-size", 0, DS_OPT_STRING, "WxH", "smaller images are dropped as too_small", NULL, "8x8" },
	{ "max-aspect", 0, DS_OPT_FLOAT, "R", "longer over shorter side above R is aspect_ratio", NULL, "10" },
	{ "blank-threshold", 0, DS_OPT_FLOAT, "SD", "luma standard deviation below SD is blank", NULL, "2" },
	{ "near-distance", 0, DS_OPT_INT, "BITS", "pHash Hamming distance of near duplicates (-1: off)", NULL, "4" },
	{ "repair", 0, DS_OPT_FLAG, NULL, "replace invalid UTF-8 with U+FFFD instead of dropping", NULL, NULL },
	{ "min-chars", 0, DS_OPT_INT, "N", "shorter texts are too_short", NULL, "1" },
	{ "max-chars", 0, DS_OPT_INT, "N", "longer texts are too_long", NULL, "2048" },
	{ "near-jaccard", 0, DS_OPT_FLOAT, "J", "MinHash Jaccard similarity of near duplicates (0: off)", NULL, "0.8" },
	{ "shingle", 0, DS_OPT_INT, "N", "code points per shingle for MinHash", NULL, "5" },
	{ "tokenizer", 0, DS_OPT_STRING, "KIND", "bytes or ngrams", NULL, "bytes" },
	{ "ngram-buckets", 0, DS_OPT_INT, "N", "hash buckets of the ngrams tokenizer", NULL, "1048576" },
	{ "max-tokens", 0, DS_OPT_INT, "N", "token ids kept per text", NULL, "1024" },
	{ "drop", 0, DS_OPT_STRING, "REASONS", "drop items with these reasons instead of warning", NULL, NULL },
	{ "keep", 0, DS_OPT_STRING, "REASONS", "keep (with a warning) items with these reasons", NULL, NULL },
	{ "strict", 0, DS_OPT_FLAG, NULL, "every warning drops the item", NULL, NULL },
	{ "fail-on", 0, DS_OPT_STRING, "REASONS", "exit with status 1 when any item has one of these reasons", NULL, NULL },
	{ "max-imbalance", 0, DS_OPT_FLOAT, "R", "warn when the largest class is over R times the smallest", NULL, "10" },
	{ "list-reasons", 0, DS_OPT_FLAG, NULL, "print every reason code with its default action and exit", NULL, NULL },
	{ NULL, 0, 0, NULL, NULL, NULL, NULL }
};

static const ds_program program = {
	.name = "ds-clean",
	.usage = "[OPTIONS] [INPUT...]",
	.summary = "Validate, clean, de-duplicate and pack image and text datasets.",
	.options = options,
	.formats = "text,json",
	.min_args = 0,
	.max_args = -1,
};

static int parse_size(const char *text, const char *option, int *w, int *h, ds_error *err)
{
	char *end;
	long a, b;

	if (!text)
		return 0;
	a = strtol(text, &end, 10);
	if (end != text && (*end == 'x' || *end == 'X')) {
		b = strtol(end + 1, &end, 10);
		if (!*end && a > 0 && b > 0 && a <= 65535 && b <= 65535) {
			*w = (int)a, *h = (int)b;
			return 0;
		}
	}
	return ds_error_set(err, DS_ERR_USAGE, "usage", "--%s: '%s' is not a size such as 28x28", option, text);
}

int main(int argc, char **argv)
{
	ds_error err = { 0 };
	ds_cli *cli = NULL;
	ds_clean_options o = { 0 };
	const char **inputs = NULL;
	json_t *summary = NULL;
	size_t n_inputs = 0;
	int done = 0, rc;

	rc = ds_cli_start(&cli, &program, argc, argv, &done);
	if (rc || done)
		return rc;
	/* Stop between chunks on SIGINT/SIGTERM, so that the temporary files
	 * and the --output-dir folder under way are removed, not left behind. */
	ds_cli_catch_interrupts(1);
	if (ds_cli_flag(cli, "list-reasons")) {
		json_t *table = ds_clean_reason_table();

		rc = ds_print(stdout, ds_cli_format(cli), table, &err);
		json_decref(table);
		return ds_cli_finish(cli, rc, &err);
	}

	inputs = calloc((size_t)ds_cli_argc(cli) + ds_cli_list_count(cli, "input") + 1, sizeof *inputs);
	if (!inputs) {
		rc = ds_error_set(&err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		goto out;
	}
	for (size_t i = 0; i < ds_cli_list_count(cli, "input"); i++)
		inputs[n_inputs++] = ds_cli_list_at(cli, "input", i);
	for (int i = 0; i < ds_cli_argc(cli); i++)
		inputs[n_inputs++] = ds_cli_arg(cli, i);

	o.inputs = inputs;
	o.input_count = n_inputs;
	o.files_from = ds_cli_get(cli, "files-from");
	o.kind = ds_cli_get(cli, "kind");
	o.source.text_field = ds_cli_get(cli, "text-field");
	o.source.label_field = ds_cli_get(cli, "label-field");
	o.source.labels_from_dirs = !ds_cli_flag(cli, "no-labels");
	o.output = ds_cli_get(cli, "output");
	o.output_dir = ds_cli_get(cli, "output-dir");
	o.report = ds_cli_get(cli, "report");
	o.encode = ds_cli_get(cli, "encode");
	o.jpeg_quality = (int)ds_cli_int(cli, "jpeg-quality");
	o.split = ds_cli_get(cli, "split");
	o.seed = (uint64_t)ds_cli_int(cli, "seed");
	o.frame_items = (int)ds_cli_int(cli, "frame-items");
	o.channels = (int)ds_cli_int(cli, "channels");
	o.max_aspect = ds_cli_float(cli, "max-aspect");
	o.blank_stddev = ds_cli_float(cli, "blank-threshold");
	o.near_distance = (int)ds_cli_int(cli, "near-distance");
	o.repair = ds_cli_flag(cli, "repair");
	o.min_chars = (int)ds_cli_int(cli, "min-chars");
	o.max_chars = (int)ds_cli_int(cli, "max-chars");
	o.near_jaccard = ds_cli_float(cli, "near-jaccard");
	o.shingle = (int)ds_cli_int(cli, "shingle");
	o.tokenizer = ds_cli_get(cli, "tokenizer");
	o.ngram_buckets = (int)ds_cli_int(cli, "ngram-buckets");
	o.max_tokens = (int)ds_cli_int(cli, "max-tokens");
	o.drop = ds_cli_get(cli, "drop");
	o.keep = ds_cli_get(cli, "keep");
	o.strict = ds_cli_flag(cli, "strict");
	o.fail_on = ds_cli_get(cli, "fail-on");
	o.max_imbalance = ds_cli_float(cli, "max-imbalance");
	o.cli = cli;
	o.argc = argc;
	o.argv = argv;

	if ((rc = parse_size(ds_cli_get(cli, "size"), "size", &o.width, &o.height, &err)) ||
	    (rc = parse_size(ds_cli_get(cli, "min-size"), "min-size", &o.min_width, &o.min_height, &err)) ||
	    (rc = ds_cli_bytes(cli, "max-bytes", &o.source.max_bytes, &err)) ||
	    (rc = ds_cli_shard(cli, &o.shard_index, &o.shard_count, &err)))
		goto out;
	if (ds_resize_mode_parse(ds_cli_get(cli, "resize"), &o.resize) != 0) {
		rc = ds_error_set(&err, DS_ERR_USAGE, "usage", "--resize: '%s' is not fit, fill or stretch",
				  ds_cli_get(cli, "resize"));
		goto out;
	}
	if (o.channels != 0 && o.channels != 1 && o.channels != 3) {
		rc = ds_error_set(&err, DS_ERR_USAGE, "usage", "--channels: %d is not 1 or 3", o.channels);
		goto out;
	}
	if (o.encode && strcmp(o.encode, "png") && strcmp(o.encode, "jpeg")) {
		rc = ds_error_set(&err, DS_ERR_USAGE, "usage", "--encode: '%s' is not png or jpeg", o.encode);
		goto out;
	}
	if (o.frame_items < 1 || o.jpeg_quality < 1 || o.jpeg_quality > 100 || o.max_chars < 1 || o.shingle < 1 ||
	    o.max_tokens < 1 || o.near_distance > 15 || o.near_jaccard < 0 || o.near_jaccard > 1) {
		rc = ds_error_set(&err, DS_ERR_USAGE, "usage",
				  "an option is out of range (see ds-clean --help and ds-clean(1))");
		goto out;
	}
	if (!o.output && !o.output_dir && !o.report)
		ds_log_warn(cli, "no -o, --output-dir or --report: checking only");

	rc = ds_clean_run(&o, &summary, &err);
	/* The summary goes to stderr: stdout may carry the packed stream. */
	if (summary && ds_cli_verbosity(cli) >= 0) {
		ds_error print_err = { 0 };

		ds_print(stderr, ds_cli_format(cli), summary, &print_err);
	}
out:
	json_decref(summary);
	free(inputs);
	return ds_cli_finish(cli, rc, &err);
}
