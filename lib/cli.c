/* cli.c - the command line every program shares.
 *
 * A program describes its options in one table (ds_option); this file adds
 * the shared ones, parses argv the way getopt_long does (options and operands
 * may mix, "--" ends options, "-" is an operand), fills what the command line
 * left unset from the environment, then from --config, then from the table's
 * fallback, and validates the result.  --help is generated from the same
 * rows, so help, config keys and environment names cannot drift apart.
 * Long options must be spelled out: abbreviations would make every new
 * option a possible break of somebody's script. */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Where a value came from, in rising precedence. */
enum source { SRC_NONE, SRC_FALLBACK, SRC_CONFIG, SRC_ENV, SRC_CMD };

struct value {
	const ds_option *opt;
	enum source source;
	char *text;             /* STRING, INT, FLOAT: the winning value */
	int count;              /* FLAG: how many times given (-vv is 2) */
	char **list;            /* LIST: every value, in order */
	size_t n_list;
};

struct ds_cli {
	const ds_program *prog;
	int argc;
	char **argv;
	struct value *vals;
	size_t n_vals;
	char **args;            /* operands: pointers into argv */
	int n_args;
	ds_option format_opt;   /* the --format row, built from prog->formats */
	char *format_list;      /* "text, json" for messages */
	char *format_help;
	char *format_fallback;
	ds_device device;
	FILE *log;
	struct timespec started;
};

static const ds_option shared_options[] = {
	{ "help", 'h', DS_OPT_FLAG, NULL, "show this help and exit", NULL, NULL },
	{ "version", 'V', DS_OPT_FLAG, NULL, "show the version and exit", NULL, NULL },
	{ "quiet", 'q', DS_OPT_FLAG, NULL, "print only warnings and errors", NULL, NULL },
	{ "verbose", 'v', DS_OPT_FLAG, NULL, "print more detail (repeat for more)", NULL, NULL },
	{ "output", 'o', DS_OPT_STRING, "FILE", "write the output to FILE (- is stdout)", NULL, NULL },
	{ "device", 0, DS_OPT_STRING, "DEVICE", "run on auto, cpu, cuda or cuda:N", "DS_DEVICE", "auto" },
	{ "threads", 0, DS_OPT_INT, "N", "CPU threads for compute (0: the default)", "DS_THREADS", NULL },
	{ "seed", 0, DS_OPT_INT, "N", "seed for random numbers", NULL, NULL },
	{ "config", 0, DS_OPT_STRING, "FILE", "read options from FILE, a JSON object of long option names",
	  NULL, NULL },
	{ "log", 0, DS_OPT_STRING, "FILE", "write JSON Lines events to FILE", NULL, NULL },
};
/* --format goes in front of this row of shared_options when the program has formats. */
#define FORMAT_SLOT 8

static const char *last_name = "ds";
static int stdout_closed;
static volatile sig_atomic_t catch_mode, interrupted;

/* ------------------------------------------------------------ the table */

static size_t program_option_count(const ds_program *prog)
{
	size_t n = 0;

	while (prog->options && prog->options[n].name)
		n++;
	return n;
}

static struct value *find_long(const ds_cli *cli, const char *name, size_t len)
{
	for (size_t i = 0; i < cli->n_vals; i++) {
		const char *have = cli->vals[i].opt->name;

		if (strlen(have) == len && memcmp(have, name, len) == 0)
			return &cli->vals[i];
	}
	return NULL;
}

static struct value *find_value(const ds_cli *cli, const char *name)
{
	return cli ? find_long(cli, name, strlen(name)) : NULL;
}

static struct value *find_short(const ds_cli *cli, char c)
{
	for (size_t i = 0; i < cli->n_vals; i++)
		if (cli->vals[i].opt->short_name == c)
			return &cli->vals[i];
	return NULL;
}

/* "text, json" from "text,json". */
static char *comma_space(const char *list, ds_error *err)
{
	size_t n = 0;
	char *out, *q;

	for (const char *p = list; *p; p++)
		n += *p == ',' ? 2 : 1;
	out = ds_malloc(n + 1, err);
	if (!out)
		return NULL;
	q = out;
	for (const char *p = list; *p; p++) {
		*q++ = *p;
		if (*p == ',')
			*q++ = ' ';
	}
	*q = '\0';
	return out;
}

/* A shared row whose name the program's table also has: the program's row
 * replaces it and the program checks that value itself (ds-bench takes
 * --threads 1,2 and --device cpu,cuda as lists to sweep). */
static int program_overrides(const ds_program *prog, const char *name)
{
	for (size_t i = 0; prog->options && prog->options[i].name; i++)
		if (strcmp(prog->options[i].name, name) == 0)
			return 1;
	return 0;
}

/* Whether opt is the shared row itself rather than a program's override. */
static int shared_row(const ds_option *opt, const char *name)
{
	for (size_t i = 0; i < DS_ARRAY_LEN(shared_options); i++)
		if (opt == &shared_options[i])
			return strcmp(opt->name, name) == 0;
	return 0;
}

static int build_table(ds_cli *cli, ds_error *err)
{
	const ds_program *prog = cli->prog;
	size_t n_prog = program_option_count(prog), k = 0;

	cli->n_vals = n_prog + DS_ARRAY_LEN(shared_options) + (prog->formats ? 1 : 0);
	cli->vals = ds_calloc(cli->n_vals, sizeof *cli->vals, err);
	if (!cli->vals)
		return DS_ERR_NOMEM;
	if (prog->formats) {
		size_t first = strcspn(prog->formats, ",");
		char *list = comma_space(prog->formats, err);

		if (!list)
			return DS_ERR_NOMEM;
		cli->format_list = list;
		cli->format_help = ds_malloc(strlen(list) + 32, err);
		cli->format_fallback = ds_malloc(first + 1, err);
		if (!cli->format_help || !cli->format_fallback)
			return DS_ERR_NOMEM;
		sprintf(cli->format_help, "output format: %s", list);
		memcpy(cli->format_fallback, prog->formats, first);
		cli->format_fallback[first] = '\0';
		cli->format_opt = (ds_option){ "format", 0, DS_OPT_STRING, "FMT", cli->format_help,
					       NULL, cli->format_fallback };
	}
	for (size_t i = 0; i < n_prog; i++)
		cli->vals[k++].opt = &prog->options[i];
	for (size_t i = 0; i < DS_ARRAY_LEN(shared_options); i++) {
		if (i == FORMAT_SLOT && prog->formats)
			cli->vals[k++].opt = &cli->format_opt;
		if (!program_overrides(prog, shared_options[i].name))
			cli->vals[k++].opt = &shared_options[i];
	}
	cli->n_vals = k;
	return 0;
}

/* ------------------------------------------------------------ values */

/* Whether a value of this kind reads as a number; where names the source
 * ("--threads", "DS_THREADS", "c.json: threads") in the message. */
static int check_number(const ds_option *opt, const char *text, const char *where, ds_error *err)
{
	char *end = NULL;
	const char *what = opt->kind == DS_OPT_INT ? "an integer" : "a number";

	if (opt->kind != DS_OPT_INT && opt->kind != DS_OPT_FLOAT)
		return 0;
	errno = 0;
	if (*text && !isspace((unsigned char)*text)) {
		if (opt->kind == DS_OPT_INT)
			(void)strtoll(text, &end, 10);
		else
			(void)strtod(text, &end);
	}
	if (!end || end == text || *end)
		return ds_error_set(err, DS_ERR_USAGE, "bad_value", "%s: '%s' is not %s", where, text, what);
	if (errno == ERANGE)
		return ds_error_set(err, DS_ERR_USAGE, "bad_value", "%s: '%s' is out of range", where, text);
	return 0;
}

static int set_text(struct value *v, const char *text, enum source src, ds_error *err)
{
	char *copy = ds_strdup(text, err);

	if (!copy)
		return DS_ERR_NOMEM;
	free(v->text);
	v->text = copy;
	v->source = src;
	return 0;
}

static int append_list(struct value *v, const char *text, enum source src, ds_error *err)
{
	char **grown = ds_realloc(v->list, (v->n_list + 1) * sizeof *grown, err);

	if (!grown)
		return DS_ERR_NOMEM;
	v->list = grown;
	v->list[v->n_list] = ds_strdup(text, err);
	if (!v->list[v->n_list])
		return DS_ERR_NOMEM;
	v->n_list++;
	v->source = src;
	return 0;
}

/* Flags read from the environment: 1/true/yes or 0/false/no. */
static int parse_bool(const char *text, int *out)
{
	static const char *const yes[] = { "1", "true", "yes", "on" };
	static const char *const no[] = { "0", "false", "no", "off" };

	for (size_t i = 0; i < DS_ARRAY_LEN(yes); i++) {
		if (strcmp(text, yes[i]) == 0)
			return *out = 1, 0;
		if (strcmp(text, no[i]) == 0)
			return *out = 0, 0;
	}
	return -1;
}

/* A value from the command line or the environment, where names it. */
static int take(struct value *v, const char *text, enum source src, const char *where, ds_error *err)
{
	int status;

	if (v->opt->kind == DS_OPT_FLAG) {
		int on;

		if (src == SRC_CMD) {
			v->count++;
		} else if (parse_bool(text, &on) == 0) {
			v->count = on;
		} else {
			return ds_error_set(err, DS_ERR_USAGE, "bad_value",
					    "%s: '%s' is not 1, true, yes, 0, false or no", where, text);
		}
		v->source = src;
		return 0;
	}
	status = check_number(v->opt, text, where, err);
	if (status)
		return status;
	if (v->opt->kind == DS_OPT_LIST)
		return append_list(v, text, src, err);
	return set_text(v, text, src, err);
}

/* -------------------------------------------------------- command line */

static int add_operand(ds_cli *cli, char *arg, ds_error *err)
{
	char **grown = ds_realloc(cli->args, (size_t)(cli->n_args + 1) * sizeof *grown, err);

	if (!grown)
		return DS_ERR_NOMEM;
	cli->args = grown;
	cli->args[cli->n_args++] = arg;
	return 0;
}

static int parse_long(ds_cli *cli, int *i, ds_error *err)
{
	char *arg = cli->argv[*i] + 2, *eq = strchr(arg, '=');
	size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
	struct value *v = find_long(cli, arg, len);
	char where[128];

	if (!v)
		return ds_error_set(err, DS_ERR_USAGE, "unknown_option", "unrecognized option '--%.*s'",
				    (int)len, arg);
	snprintf(where, sizeof where, "--%s", v->opt->name);
	if (v->opt->kind == DS_OPT_FLAG) {
		if (eq)
			return ds_error_set(err, DS_ERR_USAGE, "unexpected_argument",
					    "option '--%s' doesn't allow an argument", v->opt->name);
		return take(v, NULL, SRC_CMD, where, err);
	}
	if (eq)
		return take(v, eq + 1, SRC_CMD, where, err);
	if (*i + 1 >= cli->argc)
		return ds_error_set(err, DS_ERR_USAGE, "missing_argument",
				    "option '--%s' requires an argument", v->opt->name);
	return take(v, cli->argv[++*i], SRC_CMD, where, err);
}

/* -qv bundles flags; -ofile and -o file both give -o its value. */
static int parse_short(ds_cli *cli, int *i, ds_error *err)
{
	char *arg = cli->argv[*i];
	char where[128];

	for (char *p = arg + 1; *p; p++) {
		struct value *v = find_short(cli, *p);
		int status;

		if (!v)
			return ds_error_set(err, DS_ERR_USAGE, "unknown_option", "invalid option -- '%c'", *p);
		snprintf(where, sizeof where, "--%s", v->opt->name);
		if (v->opt->kind == DS_OPT_FLAG) {
			status = take(v, NULL, SRC_CMD, where, err);
			if (status)
				return status;
			continue;
		}
		if (p[1])
			return take(v, p + 1, SRC_CMD, where, err);
		if (*i + 1 >= cli->argc)
			return ds_error_set(err, DS_ERR_USAGE, "missing_argument",
					    "option requires an argument -- '%c'", *p);
		return take(v, cli->argv[++*i], SRC_CMD, where, err);
	}
	return 0;
}

static int parse_argv(ds_cli *cli, ds_error *err)
{
	int only_operands = 0, status = 0;

	for (int i = 1; i < cli->argc && !status; i++) {
		char *arg = cli->argv[i];

		if (only_operands || arg[0] != '-' || arg[1] == '\0')
			status = add_operand(cli, arg, err);
		else if (strcmp(arg, "--") == 0)
			only_operands = 1;
		else if (arg[1] == '-')
			status = parse_long(cli, &i, err);
		else
			status = parse_short(cli, &i, err);
	}
	return status;
}

/* -------------------------------------------------- environment, config */

static int apply_env(ds_cli *cli, ds_error *err)
{
	for (size_t i = 0; i < cli->n_vals; i++) {
		struct value *v = &cli->vals[i];
		const char *text;
		int status;

		if (v->source != SRC_NONE || !v->opt->env)
			continue;
		text = getenv(v->opt->env);
		if (!text || !*text)
			continue;
		status = take(v, text, SRC_ENV, v->opt->env, err);
		if (status)
			return status;
	}
	return 0;
}

/* The text of one scalar config value; NULL for a type that has none. */
static char *config_scalar(const json_t *j, char *buf, size_t len)
{
	if (json_is_string(j))
		return (char *)json_string_value(j);
	if (json_is_integer(j))
		snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
	else if (json_is_real(j))
		snprintf(buf, len, "%.17g", json_real_value(j));
	else
		return NULL;
	return buf;
}

static int config_type_error(const char *path, const ds_option *opt, ds_error *err)
{
	static const char *const wants[] = {
		[DS_OPT_FLAG] = "true or false",
		[DS_OPT_INT] = "an integer",
		[DS_OPT_FLOAT] = "a number",
		[DS_OPT_STRING] = "a string",
		[DS_OPT_LIST] = "a string or an array of strings",
	};
	return ds_error_set(err, DS_ERR_USAGE, "bad_config", "%s: %s: expected %s", path, opt->name,
			    wants[opt->kind]);
}

/* One config member.  Every member is checked, even one the command line or
 * the environment overrides: a mistake in the file should not wait for the
 * day the override goes away. */
static int config_member(ds_cli *cli, const char *path, const char *key, const json_t *j, ds_error *err)
{
	struct value *v = find_value(cli, key);
	struct value scratch;
	char where[1100], buf[64];
	int status = 0;

	if (!v)
		return ds_error_set(err, DS_ERR_USAGE, "unknown_config_key", "%s: unknown option '%s'",
				    path, key);
	if (v->opt == &shared_options[0] || v->opt == &shared_options[1] || strcmp(key, "config") == 0)
		return ds_error_set(err, DS_ERR_USAGE, "bad_config",
				    "%s: '%s' cannot be set in a config file", path, key);
	snprintf(where, sizeof where, "%s: %s", path, key);
	/* Decode into a scratch value, then keep it only if nothing higher set one. */
	memset(&scratch, 0, sizeof scratch);
	scratch.opt = v->opt;
	if (v->opt->kind == DS_OPT_FLAG) {
		if (json_is_boolean(j))
			scratch.count = json_is_true(j);
		else if (json_is_integer(j) && (json_integer_value(j) == 0 || json_integer_value(j) == 1))
			scratch.count = (int)json_integer_value(j);
		else
			return config_type_error(path, v->opt, err);
		scratch.source = SRC_CONFIG;
	} else if (v->opt->kind == DS_OPT_LIST && json_is_array(j)) {
		size_t i;
		json_t *item;

		json_array_foreach(j, i, item) {
			const char *text = config_scalar(item, buf, sizeof buf);

			if (!text) {
				status = config_type_error(path, v->opt, err);
				goto out;
			}
			status = append_list(&scratch, text, SRC_CONFIG, err);
			if (status)
				goto out;
		}
		scratch.source = SRC_CONFIG;
	} else {
		const char *text = config_scalar(j, buf, sizeof buf);

		if (!text || (json_is_real(j) && v->opt->kind == DS_OPT_INT))
			return config_type_error(path, v->opt, err);
		status = take(&scratch, text, SRC_CONFIG, where, err);
		if (status)
			goto out;
	}
	if (v->source == SRC_NONE) {
		*v = scratch;
		memset(&scratch, 0, sizeof scratch);
	}
out:
	free(scratch.text);
	for (size_t i = 0; i < scratch.n_list; i++)
		free(scratch.list[i]);
	free(scratch.list);
	return status;
}

static int apply_config(ds_cli *cli, ds_error *err)
{
	struct value *cfg = find_value(cli, "config");
	json_t *doc = NULL, *j;
	const char *key;
	int status;

	if (!cfg || !cfg->text)
		return 0;
	status = ds_config_load(cfg->text, &doc, err);
	if (status)
		return status;
	json_object_foreach(doc, key, j) {
		status = config_member(cli, cfg->text, key, j, err);
		if (status)
			break;
	}
	json_decref(doc);
	return status;
}

static int apply_fallbacks(ds_cli *cli, ds_error *err)
{
	for (size_t i = 0; i < cli->n_vals; i++) {
		struct value *v = &cli->vals[i];
		int status = 0, on;

		if (v->source != SRC_NONE || !v->opt->fallback)
			continue;
		if (v->opt->kind == DS_OPT_LIST)
			status = append_list(v, v->opt->fallback, SRC_FALLBACK, err);
		else if (v->opt->kind == DS_OPT_FLAG && parse_bool(v->opt->fallback, &on) == 0)
			v->count = on;
		else if (v->opt->kind != DS_OPT_FLAG)
			status = set_text(v, v->opt->fallback, SRC_FALLBACK, err);
		if (status)
			return status;
	}
	return 0;
}

/* ------------------------------------------------------------ checks */

/* Name the source of a value in a message. */
static const char *source_name(const ds_cli *cli, const struct value *v, char *buf, size_t len)
{
	const struct value *cfg = find_value(cli, "config");

	switch (v->source) {
	case SRC_ENV:
		return v->opt->env;
	case SRC_CONFIG:
		snprintf(buf, len, "%s: %s", cfg && cfg->text ? cfg->text : "config", v->opt->name);
		return buf;
	default:
		snprintf(buf, len, "--%s", v->opt->name);
		return buf;
	}
}

static int in_list(const char *list, const char *word)
{
	size_t len = strlen(word);

	while (*list) {
		size_t n = strcspn(list, ",");

		if (n == len && memcmp(list, word, n) == 0)
			return 1;
		list += n + (list[n] == ',');
	}
	return 0;
}

static int check_values(ds_cli *cli, ds_error *err)
{
	struct value *v;
	char where[1100];
	ds_format fmt;
	ds_device dev;
	ds_error ignored = { 0 };
	int is_auto;

	v = find_value(cli, "format");
	if (cli->prog->formats && v && v->text &&
	    (!in_list(cli->prog->formats, v->text) || ds_format_parse(v->text, &fmt) != 0))
		return ds_error_set(err, DS_ERR_USAGE, "bad_value", "%s: '%s' is not one of %s",
				    source_name(cli, v, where, sizeof where), v->text, cli->format_list);
	v = find_value(cli, "device");
	if (v && v->text && shared_row(v->opt, "device") && ds_device_parse(v->text, &dev, &is_auto, &ignored) != 0)
		return ds_error_set(err, DS_ERR_USAGE, "bad_value", "%s: '%s' is not auto, cpu, cuda or cuda:N",
				    source_name(cli, v, where, sizeof where), v->text);
	v = find_value(cli, "threads");
	if (v && v->text && shared_row(v->opt, "threads") && strtoll(v->text, NULL, 10) < 0)
		return ds_error_set(err, DS_ERR_USAGE, "bad_value", "%s: '%s' is negative",
				    source_name(cli, v, where, sizeof where), v->text);
	if (cli->n_args < cli->prog->min_args) {
		if (cli->n_args == 0)
			return ds_error_set(err, DS_ERR_USAGE, "missing_operand", "missing operand");
		return ds_error_set(err, DS_ERR_USAGE, "missing_operand",
				    "expected at least %d operands, got %d", cli->prog->min_args, cli->n_args);
	}
	if (cli->prog->max_args >= 0 && cli->n_args > cli->prog->max_args)
		return ds_error_set(err, DS_ERR_USAGE, "extra_operand", "extra operand '%s'",
				    cli->args[cli->prog->max_args]);
	return 0;
}

/* ------------------------------------------------------------ parse */

int ds_cli_parse(ds_cli **out, const ds_program *prog, int argc, char **argv, ds_error *err)
{
	ds_cli *cli;
	int status;

	*out = NULL;
	last_name = prog->name;
	cli = ds_calloc(1, sizeof *cli, err);
	if (!cli)
		return DS_ERR_NOMEM;
	cli->prog = prog;
	cli->argc = argc;
	cli->argv = argv;
	cli->device = DS_CPU;
	clock_gettime(CLOCK_MONOTONIC, &cli->started);
	status = build_table(cli, err);
	if (!status)
		status = parse_argv(cli, err);
	if (status)
		goto fail;
	/* --help and --version answer whatever else is wrong: a broken
	 * DS_THREADS should not hide the help that explains it. */
	if (ds_cli_flag(cli, "help") || ds_cli_flag(cli, "version")) {
		*out = cli;
		return 0;
	}
	status = apply_env(cli, err);
	if (!status)
		status = apply_config(cli, err);
	if (!status)
		status = apply_fallbacks(cli, err);
	if (!status)
		status = check_values(cli, err);
	if (status)
		goto fail;
	*out = cli;
	return 0;
fail:
	ds_cli_free(cli);
	return status;
}

void ds_cli_free(ds_cli *cli)
{
	if (!cli)
		return;
	for (size_t i = 0; i < cli->n_vals; i++) {
		free(cli->vals[i].text);
		for (size_t k = 0; k < cli->vals[i].n_list; k++)
			free(cli->vals[i].list[k]);
		free(cli->vals[i].list);
	}
	if (cli->log)
		fclose(cli->log);
	free(cli->vals);
	free(cli->args);
	free(cli->format_list);
	free(cli->format_help);
	free(cli->format_fallback);
	free(cli);
}

/* ------------------------------------------------------------ help */

static void help_row(FILE *f, const ds_option *o, int width)
{
	char left[160];
	int n;

	n = snprintf(left, sizeof left, "  %c%c%c --%s%s%s", o->short_name ? '-' : ' ',
		     o->short_name ? o->short_name : ' ', o->short_name ? ',' : ' ', o->name,
		     o->kind == DS_OPT_FLAG ? "" : " ", o->kind == DS_OPT_FLAG ? "" : (o->arg ? o->arg : "VALUE"));
	if (n >= width)
		fprintf(f, "%s\n%*s", left, width, "");
	else
		fprintf(f, "%-*s", width, left);
	fputs(o->help ? o->help : "", f);
	if (o->kind == DS_OPT_LIST)
		fputs(" (repeatable)", f);
	if (o->fallback)
		fprintf(f, " (default: %s)", o->fallback);
	if (o->env)
		fprintf(f, " [env %s]", o->env);
	fputc('\n', f);
}

static void print_help(const ds_cli *cli, FILE *f)
{
	const ds_program *prog = cli->prog;
	size_t n_prog = program_option_count(prog);
	int width = 0;

	for (size_t i = 0; i < cli->n_vals; i++) {
		const ds_option *o = cli->vals[i].opt;
		int n = 8 + (int)strlen(o->name) + (o->kind == DS_OPT_FLAG ? 0 : 1 + (int)strlen(o->arg ? o->arg : "VALUE"));

		if (n > width && n <= 30)
			width = n;
	}
	width += 2;
	fprintf(f, "Usage: %s %s\n", prog->name, prog->usage ? prog->usage : "[OPTIONS]");
	if (prog->summary)
		fprintf(f, "%s\n", prog->summary);
	if (n_prog) {
		fputs("\nOptions:\n", f);
		for (size_t i = 0; i < n_prog; i++)
			help_row(f, cli->vals[i].opt, width);
	}
	fputs("\nShared options:\n", f);
	for (size_t i = n_prog; i < cli->n_vals; i++)
		help_row(f, cli->vals[i].opt, width);
	fputs("\nDS_LOG=json writes messages and errors on stderr as JSON objects.\n", f);
	fputs("Exit status: 0 ok, 1 failure while running, 2 usage error, 3 bad input data,\n"
	      "4 out of memory, 5 cannot read or write a file, 130 interrupted.\n", f);
	fprintf(f, "See %s(1) and ds(7).\n", prog->name);
}

/* ------------------------------------------------------------ signals */

static void on_signal(int sig)
{
	struct sigaction dfl;

	/* A second signal while caught means the user insists: stop now. */
	if (catch_mode && !interrupted) {
		interrupted = 1;
		return;
	}
	ds_writer_cleanup_all();
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	sigaction(sig, &dfl, NULL);
	raise(sig);
}

static void install_signals(void)
{
	struct sigaction sa, old;
	sigset_t pipe_set;
	static const int stops[] = { SIGINT, SIGTERM };

	/* A filter whose reader went away ends quietly, as `yes | head` does,
	 * even when the parent left SIGPIPE ignored or blocked. */
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_DFL;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGPIPE, &sa, NULL);
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	sigprocmask(SIG_UNBLOCK, &pipe_set, NULL);

	sa.sa_handler = on_signal;
	for (size_t i = 0; i < DS_ARRAY_LEN(stops); i++) {
		/* A shell runs background jobs with SIGINT ignored; keep it so. */
		if (sigaction(stops[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
			continue;
		sigaction(stops[i], &sa, NULL);
	}
}

void ds_cli_catch_interrupts(int catch_them)
{
	catch_mode = catch_them ? 1 : 0;
}

int ds_cli_interrupted(void)
{
	return interrupted ? DS_ERR_INTERRUPTED : 0;
}

/* ------------------------------------------------------ start, finish */

/* Flush, check and close stdout once.  141 without a message for a reader
 * that went away (what SIGPIPE would have made of it). */
static int check_stdout(ds_error *err)
{
	int errnum = 0, failed = 0;

	if (stdout_closed)
		return 0;
	stdout_closed = 1;
	errno = 0;
	if (fflush(stdout) != 0) {
		failed = 1;
		errnum = errno;
	} else if (ferror(stdout)) {
		failed = 1;
	}
	errno = 0;
	if (fclose(stdout) != 0 && !failed) {
		failed = 1;
		errnum = errno;
	}
	if (!failed)
		return 0;
	if (errnum == EPIPE)
		return 128 + SIGPIPE;
	if (!errnum)
		return ds_error_set(err, DS_ERR_IO, "io_error", "stdout: write error");
	return ds_error_errno(err, errnum, "stdout");
}

static int open_log(ds_cli *cli, ds_error *err)
{
	const char *path = ds_cli_get(cli, "log");

	if (!path)
		return 0;
	cli->log = fopen(path, "w");
	if (!cli->log)
		return ds_error_errno(err, errno, path);
	return 0;
}

int ds_cli_start(ds_cli **out, const ds_program *prog, int argc, char **argv, int *done)
{
	ds_error err = { 0 };
	ds_cli *cli = NULL;
	int status;

	*out = NULL;
	if (done)
		*done = 0;
	ds_blas_prefer_avx512(argv);
	install_signals();
	status = ds_cli_parse(&cli, prog, argc, argv, &err);
	if (status)
		goto fail;
	if (ds_cli_flag(cli, "help") || ds_cli_flag(cli, "version")) {
		if (ds_cli_flag(cli, "help"))
			print_help(cli, stdout);
		else
			printf("%s (ds) %s\n", prog->name, ds_version());
		if (done)
			*done = 1;
		status = check_stdout(&err);
		goto fail;
	}
	if (shared_row(find_value(cli, "threads")->opt, "threads"))
		ds_threads_set(ds_cli_get(cli, "threads") ? (int)ds_cli_int(cli, "threads") : 0);
	if (shared_row(find_value(cli, "device")->opt, "device"))
		status = ds_device_resolve(ds_cli_get(cli, "device"), &cli->device, &err);
	if (!status)
		status = open_log(cli, &err);
	if (status)
		goto fail;
	ds_log_verbose(cli, "OpenBLAS kernels %s, %d threads", ds_blas_core(), ds_threads_get());
	*out = cli;
	return 0;
fail:
	if (status && err.status)
		ds_log_error(cli, status, &err);
	ds_cli_free(cli);
	return status;
}

int ds_cli_finish(ds_cli *cli, int status, ds_error *err)
{
	ds_error io = { 0 };
	int io_status = check_stdout(&io);

	if (cli && cli->log) {
		if (fclose(cli->log) != 0 && !io_status)
			io_status = ds_error_errno(&io, errno, ds_cli_get(cli, "log"));
		cli->log = NULL;
	}
	if (status && err && strcmp(err->code, "broken_pipe") == 0) {
		/* The printer met EPIPE: the reader left, which is no error of ours. */
		status = 128 + SIGPIPE;
	} else if (status) {
		if (err && err->status)
			ds_log_error(cli, status, err);
	} else if (io_status) {
		status = io_status;
		if (io.status)
			ds_log_error(cli, status, &io);
	}
	ds_cli_free(cli);
	return status;
}

/* ------------------------------------------------------------ accessors */

const char *ds_cli_get(const ds_cli *cli, const char *name)
{
	const struct value *v = find_value(cli, name);

	if (!v)
		return NULL;
	switch (v->opt->kind) {
	case DS_OPT_FLAG:
		return v->count ? "1" : NULL;
	case DS_OPT_LIST:
		return v->n_list ? v->list[v->n_list - 1] : NULL;
	default:
		return v->text;
	}
}

int ds_cli_flag(const ds_cli *cli, const char *name)
{
	const struct value *v = find_value(cli, name);

	return v && v->opt->kind == DS_OPT_FLAG ? v->count : 0;
}

int64_t ds_cli_int(const ds_cli *cli, const char *name)
{
	const char *text = ds_cli_get(cli, name);

	return text ? strtoll(text, NULL, 10) : 0;
}

double ds_cli_float(const ds_cli *cli, const char *name)
{
	const char *text = ds_cli_get(cli, name);

	return text ? strtod(text, NULL) : 0.0;
}

size_t ds_cli_list_count(const ds_cli *cli, const char *name)
{
	const struct value *v = find_value(cli, name);

	return v ? v->n_list : 0;
}

const char *ds_cli_list_at(const ds_cli *cli, const char *name, size_t i)
{
	const struct value *v = find_value(cli, name);

	return v && i < v->n_list ? v->list[i] : NULL;
}

int ds_cli_argc(const ds_cli *cli)
{
	return cli ? cli->n_args : 0;
}

const char *ds_cli_arg(const ds_cli *cli, int i)
{
	return cli && i >= 0 && i < cli->n_args ? cli->args[i] : NULL;
}

ds_format ds_cli_format(const ds_cli *cli)
{
	const char *text = ds_cli_get(cli, "format");
	ds_format fmt = DS_FORMAT_TEXT;

	if (text && ds_format_parse(text, &fmt) != 0)
		fmt = DS_FORMAT_TEXT;
	return fmt;
}

int ds_cli_verbosity(const ds_cli *cli)
{
	if (ds_cli_flag(cli, "quiet"))
		return -1;
	return ds_cli_flag(cli, "verbose");
}

const ds_program *ds_cli_program(const ds_cli *cli)
{
	return cli ? cli->prog : NULL;
}

const char *ds_cli_name(const ds_cli *cli)
{
	return cli ? cli->prog->name : last_name;
}

ds_device ds_cli_device(const ds_cli *cli)
{
	return cli ? cli->device : DS_CPU;
}

int ds_cli_history(const ds_cli *cli, ds_container *c, const json_t *figures, ds_error *err)
{
	return ds_container_history_append(c, cli->prog->name, cli->argc > 0 ? cli->argc - 1 : 0,
					   cli->argc > 0 ? cli->argv + 1 : cli->argv, figures, err);
}

/* Events carry wall time for people and elapsed seconds for plots. */
int ds_cli_event(const ds_cli *cli, const char *event, const json_t *fields)
{
	struct timespec now, mono;
	struct tm tm;
	char stamp[64];
	json_t *line;
	const char *key;
	json_t *j;
	int status = 0;

	if (!cli || !cli->log)
		return 0;
	clock_gettime(CLOCK_REALTIME, &now);
	clock_gettime(CLOCK_MONOTONIC, &mono);
	gmtime_r(&now.tv_sec, &tm);
	strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(stamp + strlen(stamp), sizeof stamp - strlen(stamp), ".%03ldZ", now.tv_nsec / 1000000);
	line = json_object();
	if (!line)
		return DS_ERR_NOMEM;
	json_object_set_new(line, "event", json_string(event));
	json_object_set_new(line, "time", json_string(stamp));
	json_object_set_new(line, "elapsed",
			    json_real((double)(mono.tv_sec - cli->started.tv_sec) +
				      (double)(mono.tv_nsec - cli->started.tv_nsec) / 1e9));
	/* jansson's iterators take a non-const object but do not change it. */
	json_object_foreach((json_t *)fields, key, j) {
		if (!json_object_get(line, key))
			json_object_set(line, key, j);
	}
	if (json_dumpf(line, cli->log, JSON_COMPACT) != 0 || fputc('\n', cli->log) == EOF ||
	    fflush(cli->log) != 0)
		status = DS_ERR_IO;
	json_decref(line);
	return status;
}

int ds_cli_shard(const ds_cli *cli, int *k, int *n, ds_error *err)
{
	const char *text = ds_cli_get(cli, "shard");
	char tail;

	*k = *n = 0;
	if (!text)
		return 0;
	if (sscanf(text, "%d/%d%c", k, n, &tail) != 2 || *n < 1 || *k < 1 || *k > *n)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--shard: '%s' is not K/N with 1 <= K <= N", text);
	return 0;
}

int ds_cli_bytes(const ds_cli *cli, const char *option, uint64_t *out, ds_error *err)
{
	const char *text = ds_cli_get(cli, option);
	char *end;
	double v, unit = 1;

	*out = 0;
	if (!text)
		return 0;
	v = strtod(text, &end);
	if (*end == 'K' || *end == 'k')
		unit = 1024, end++;
	else if (*end == 'M' || *end == 'm')
		unit = 1024.0 * 1024, end++;
	else if (*end == 'G' || *end == 'g')
		unit = 1024.0 * 1024 * 1024, end++;
	if (end == text || *end || !(v >= 0) || v * unit > 1e18)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--%s: '%s' is not a size such as 512M", option, text);
	*out = (uint64_t)(v * unit);
	return 0;
}

int ds_cli_model_io(const ds_cli *cli, const char **model, const char **output, ds_error *err)
{
	const char *m = ds_cli_get(cli, "model");

	if (m && ds_cli_argc(cli))
		return ds_error_set(err, DS_ERR_USAGE, "usage", "give the model once: --model or the operand");
	*model = m ? m : ds_cli_argc(cli) ? ds_cli_arg(cli, 0) : "-";
	*output = ds_cli_get(cli, "output");
	if (!*output && !ds_cli_flag(cli, "dry-run"))
		return ds_error_set(err, DS_ERR_USAGE, "usage",
				    "say where the model goes: -o FILE (- is stdout), or --dry-run");
	return 0;
}
