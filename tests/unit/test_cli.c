/* test_cli.c - the shared command line: precedence (command line >
 * environment > --config > fallback), getopt_long-style spellings, value
 * checks and operand counts.  Uses ds_cli_parse, which prints nothing and
 * installs no handlers. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ds.h"
#include "tap.h"

static const ds_option options[] = {
	{ "size", 's', DS_OPT_INT, "N", "a size", "DS_TEST_SIZE", "7" },
	{ "rate", 0, DS_OPT_FLOAT, "X", "a rate", NULL, NULL },
	{ "name", 'n', DS_OPT_STRING, "NAME", "a name", NULL, NULL },
	{ "tag", 't', DS_OPT_LIST, "TAG", "a tag", "DS_TEST_TAG", NULL },
	{ "fast", 'f', DS_OPT_FLAG, NULL, "go fast", "DS_TEST_FAST", NULL },
	{ NULL, 0, 0, NULL, NULL, NULL, NULL }
};

static const ds_program program = {
	.name = "ds-test",
	.usage = "[OPTIONS] FILE",
	.summary = "A program for the tests.",
	.options = options,
	.formats = "text,json",
	.min_args = 1,
	.max_args = 2,
};

/* Parse a NULL-terminated argument list; returns the status, the cli in *out
 * (or NULL) and the error in *err. */
static int parse(ds_cli **out, ds_error *err, ...)
{
	/* Static: a cli keeps pointers into its argv. */
	static char *argv[32];
	int argc = 0;
	va_list ap;

	argv[argc++] = "ds-test";
	va_start(ap, err);
	while (argc < 31 && (argv[argc] = va_arg(ap, char *)) != NULL)
		argc++;
	va_end(ap);
	argv[argc] = NULL;
	ds_error_clear(err);
	return ds_cli_parse(out, &program, argc, argv, err);
}

static char config_path[256];

static void write_config(const char *text)
{
	FILE *f = fopen(config_path, "w");

	fputs(text, f);
	fclose(f);
}

static void test_defaults(void)
{
	ds_cli *cli;
	ds_error err;

	is_int(parse(&cli, &err, "in", NULL), 0, "one operand parses");
	is_int(ds_cli_int(cli, "size"), 7, "fallback fills size");
	is_str(ds_cli_get(cli, "device"), "auto", "device defaults to auto");
	ok(ds_cli_get(cli, "threads") == NULL, "threads unset");
	is_int(ds_cli_format(cli), DS_FORMAT_TEXT, "format defaults to the first listed");
	is_int(ds_cli_verbosity(cli), 0, "verbosity 0");
	is_int(ds_cli_flag(cli, "fast"), 0, "flag unset");
	is_int(ds_cli_list_count(cli, "tag"), 0, "list empty");
	is_str(ds_cli_name(cli), "ds-test", "name");
	ok(ds_cli_program(cli) == &program, "program");
	is_int(ds_cli_device(cli).kind, DS_DEVICE_CPU, "device before start is the CPU");
	ds_cli_free(cli);
}

static void test_spellings(void)
{
	ds_cli *cli;
	ds_error err;

	is_int(parse(&cli, &err, "--size=3", "--name", "x", "-qv", "-ofile", "a", "--rate", "0.5", "-t",
		     "one", "--tag=two", "-ttri", NULL), 0, "long, =, bundled and attached forms parse");
	is_int(ds_cli_int(cli, "size"), 3, "--size=3");
	is_str(ds_cli_get(cli, "name"), "x", "--name x");
	is_int(ds_cli_flag(cli, "quiet"), 1, "-q of -qv");
	is_int(ds_cli_flag(cli, "verbose"), 1, "-v of -qv");
	is_int(ds_cli_verbosity(cli), -1, "quiet wins over verbose");
	is_str(ds_cli_get(cli, "output"), "file", "-ofile");
	is_near(ds_cli_float(cli, "rate"), 0.5, 1e-12, "--rate 0.5");
	is_int(ds_cli_list_count(cli, "tag"), 3, "list options accumulate");
	is_str(ds_cli_list_at(cli, "tag", 0), "one", "first tag");
	is_str(ds_cli_list_at(cli, "tag", 2), "tri", "third tag");
	is_int(ds_cli_argc(cli), 1, "one operand among the options");
	is_str(ds_cli_arg(cli, 0), "a", "the operand");
	ds_cli_free(cli);

	is_int(parse(&cli, &err, "-vv", "-s", "9", "-", "--", "--size", NULL), 0, "-- ends options");
	is_int(ds_cli_verbosity(cli), 2, "-vv is verbosity 2");
	is_int(ds_cli_int(cli, "size"), 9, "-s 9");
	is_int(ds_cli_argc(cli), 2, "- and --size are operands");
	is_str(ds_cli_arg(cli, 0), "-", "- is an operand");
	is_str(ds_cli_arg(cli, 1), "--size", "after --, an option name is an operand");
	ds_cli_free(cli);

	is_int(parse(&cli, &err, "-o", "-", "x", "--format", "json", "--size", "-4", NULL), 0,
	       "an option's value may start with -");
	is_str(ds_cli_get(cli, "output"), "-", "-o -");
	is_int(ds_cli_int(cli, "size"), -4, "--size -4");
	is_int(ds_cli_format(cli), DS_FORMAT_JSON, "--format json");
	ds_cli_free(cli);

	is_int(parse(&cli, &err, "--help", NULL), 0, "--help needs no operand");
	is_int(ds_cli_flag(cli, "help"), 1, "help set");
	ds_cli_free(cli);
}

static void test_errors(void)
{
	ds_cli *cli;
	ds_error err;

	is_int(parse(&cli, &err, "x", "--threads", "abc", NULL), DS_ERR_USAGE, "bad integer is status 2");
	is_str(err.message, "--threads: 'abc' is not an integer", "bad integer message");
	ok(cli == NULL, "no cli on failure");
	is_int(parse(&cli, &err, "x", "--size", "12x", NULL), DS_ERR_USAGE, "trailing junk is not an integer");
	is_int(parse(&cli, &err, "x", "--size", "", NULL), DS_ERR_USAGE, "empty is not an integer");
	is_int(parse(&cli, &err, "x", "--size", "99999999999999999999", NULL), DS_ERR_USAGE, "overflow");
	is_str(err.message, "--size: '99999999999999999999' is out of range", "overflow message");
	is_int(parse(&cli, &err, "x", "--rate", "fast", NULL), DS_ERR_USAGE, "bad float is status 2");
	is_str(err.message, "--rate: 'fast' is not a number", "bad float message");
	is_int(parse(&cli, &err, "x", "--bogus", NULL), DS_ERR_USAGE, "unknown long option is status 2");
	is_str(err.message, "unrecognized option '--bogus'", "unknown long option message");
	is_str(err.code, "unknown_option", "unknown option code");
	is_int(parse(&cli, &err, "x", "--bogus=1", NULL), DS_ERR_USAGE, "unknown long option with a value");
	is_str(err.message, "unrecognized option '--bogus'", "the value is not part of the name");
	is_int(parse(&cli, &err, "x", "-qz", NULL), DS_ERR_USAGE, "unknown short option is status 2");
	is_str(err.message, "invalid option -- 'z'", "unknown short option message");
	is_int(parse(&cli, &err, "x", "--siz", "3", NULL), DS_ERR_USAGE, "no abbreviations");
	is_int(parse(&cli, &err, "x", "--name", NULL), DS_ERR_USAGE, "missing argument is status 2");
	is_str(err.message, "option '--name' requires an argument", "missing argument message");
	is_int(parse(&cli, &err, "x", "-n", NULL), DS_ERR_USAGE, "missing short argument");
	is_int(parse(&cli, &err, "x", "--fast=yes", NULL), DS_ERR_USAGE, "a flag takes no argument");
	is_int(parse(&cli, &err, "x", "--format", "xml", NULL), DS_ERR_USAGE, "a format not listed");
	is_str(err.message, "--format: 'xml' is not one of text, json", "format message");
	is_int(parse(&cli, &err, "x", "--device", "gpu", NULL), DS_ERR_USAGE, "a bad device is status 2");
	is_int(parse(&cli, &err, "x", "--threads", "-2", NULL), DS_ERR_USAGE, "negative threads");
	is_int(parse(&cli, &err, NULL), DS_ERR_USAGE, "too few operands");
	is_str(err.message, "missing operand", "too few message");
	is_int(parse(&cli, &err, "a", "b", "c", NULL), DS_ERR_USAGE, "too many operands");
	is_str(err.message, "extra operand 'c'", "too many message");
	is_int(parse(&cli, &err, "a", "b", NULL), 0, "two operands are allowed");
	ds_cli_free(cli);
}

static void test_precedence(void)
{
	ds_cli *cli;
	ds_error err;

	write_config("{\"size\": 5, \"name\": \"cfg\", \"tag\": [\"c1\", \"c2\"], \"fast\": true, "
		     "\"format\": \"json\", \"rate\": 2}");
	is_int(parse(&cli, &err, "x", "--config", config_path, NULL), 0, "config parses");
	is_int(ds_cli_int(cli, "size"), 5, "config beats fallback");
	is_str(ds_cli_get(cli, "name"), "cfg", "config sets a string");
	is_int(ds_cli_list_count(cli, "tag"), 2, "config array fills a list");
	is_int(ds_cli_flag(cli, "fast"), 1, "config true sets a flag");
	is_int(ds_cli_format(cli), DS_FORMAT_JSON, "config sets the format");
	is_near(ds_cli_float(cli, "rate"), 2.0, 1e-12, "an integer is a float");
	ds_cli_free(cli);

	setenv("DS_TEST_SIZE", "6", 1);
	setenv("DS_TEST_TAG", "e1", 1);
	is_int(parse(&cli, &err, "x", "--config", config_path, NULL), 0, "env and config");
	is_int(ds_cli_int(cli, "size"), 6, "env beats config");
	is_int(ds_cli_list_count(cli, "tag"), 1, "env list beats config list");
	is_str(ds_cli_list_at(cli, "tag", 0), "e1", "env list value");
	ds_cli_free(cli);

	is_int(parse(&cli, &err, "x", "--config", config_path, "-s", "8", "-t", "a", NULL), 0, "all three");
	is_int(ds_cli_int(cli, "size"), 8, "command line beats env");
	is_int(ds_cli_list_count(cli, "tag"), 1, "command line list beats env");
	ds_cli_free(cli);

	setenv("DS_TEST_SIZE", "lots", 1);
	is_int(parse(&cli, &err, "x", NULL), DS_ERR_USAGE, "bad env value is status 2");
	is_str(err.message, "DS_TEST_SIZE: 'lots' is not an integer", "names the variable");
	is_int(parse(&cli, &err, "x", "--size", "1", NULL), 0, "an overridden env value is not read");
	ds_cli_free(cli);
	unsetenv("DS_TEST_SIZE");
	unsetenv("DS_TEST_TAG");

	setenv("DS_TEST_FAST", "yes", 1);
	is_int(parse(&cli, &err, "x", NULL), 0, "a flag from env");
	is_int(ds_cli_flag(cli, "fast"), 1, "DS_TEST_FAST=yes");
	ds_cli_free(cli);
	setenv("DS_TEST_FAST", "maybe", 1);
	is_int(parse(&cli, &err, "x", NULL), DS_ERR_USAGE, "a flag from env must be a boolean");
	unsetenv("DS_TEST_FAST");

	setenv("DS_DEVICE", "cpu", 1);
	is_int(parse(&cli, &err, "x", NULL), 0, "DS_DEVICE");
	is_str(ds_cli_get(cli, "device"), "cpu", "DS_DEVICE=cpu");
	ds_cli_free(cli);
	setenv("DS_DEVICE", "tpu", 1);
	is_int(parse(&cli, &err, "x", NULL), DS_ERR_USAGE, "bad DS_DEVICE is status 2");
	is_str(err.message, "DS_DEVICE: 'tpu' is not auto, cpu, cuda or cuda:N", "names DS_DEVICE");
	unsetenv("DS_DEVICE");
}

static void test_config_errors(void)
{
	ds_cli *cli;
	ds_error err;
	char want_buf[512];
	const char *want = want_buf;

	write_config("{\"size\": 5, \"colour\": \"red\"}");
	is_int(parse(&cli, &err, "x", "--config", config_path, NULL), DS_ERR_USAGE, "unknown key is status 2");
	snprintf(want_buf, sizeof want_buf, "%s: unknown option 'colour'", config_path);
	is_str(err.message, want, "names the file and the key");
	is_str(err.code, "unknown_config_key", "unknown key code");

	write_config("{\"size\": \"big\"}");
	is_int(parse(&cli, &err, "x", "--config", config_path, NULL), DS_ERR_USAGE, "bad value in config");
	snprintf(want_buf, sizeof want_buf, "%s: size: 'big' is not an integer", config_path);
	is_str(err.message, want, "names the file and the key");
	is_int(parse(&cli, &err, "x", "--config", config_path, "--size", "1", NULL), DS_ERR_USAGE,
	       "a config value is checked even when overridden");

	write_config("{\"size\": 1.5}");
	is_int(parse(&cli, &err, "x", "--config", config_path, NULL), DS_ERR_USAGE, "a real for an int");
	write_config("{\"fast\": \"yes\"}");
	is_int(parse(&cli, &err, "x", "--config", config_path, NULL), DS_ERR_USAGE, "a string for a flag");
	write_config("{\"help\": true}");
	is_int(parse(&cli, &err, "x", "--config", config_path, NULL), DS_ERR_USAGE, "help in a config");
	write_config("[1, 2]");
	is_int(parse(&cli, &err, "x", "--config", config_path, NULL), DS_ERR_USAGE, "not an object");
	write_config("{\"size\": ");
	is_int(parse(&cli, &err, "x", "--config", config_path, NULL), DS_ERR_USAGE, "not JSON");
	is_str(err.code, "bad_config", "bad config code");
	is_int(parse(&cli, &err, "x", "--config", "/nonexistent/c.json", NULL), DS_ERR_IO,
	       "a missing config file is status 5");
}

/* ds_cli_start with a --log file: events are JSON lines with time fields. */
static void test_start_and_events(void)
{
	char log_path[300];
	char *argv[] = { "ds-test", "in", "--log", log_path, "--threads", "1", NULL };
	ds_cli *cli = NULL;
	ds_container *c;
	json_t *fields, *line, *history;
	ds_error err = { 0 };
	int done = -1;
	FILE *f;
	char buf[1024];

	snprintf(log_path, sizeof log_path, "%s.log", config_path);
	is_int(ds_cli_start(&cli, &program, 6, argv, &done), 0, "start succeeds");
	is_int(done, 0, "not done");
	ok(cli != NULL, "a cli");
	is_int(ds_cli_device(cli).kind, DS_DEVICE_CPU, "auto resolves to the CPU here");
	fields = json_pack("{s:i, s:f}", "step", 3, "loss", 0.5);
	is_int(ds_cli_event(cli, "step", fields), 0, "event written");
	json_decref(fields);

	c = ds_container_new();
	fields = json_pack("{s:i}", "kept", 7);
	is_int(ds_cli_history(cli, c, fields, &err), 0, "history appended");
	json_decref(fields);
	ds_container_meta_json(c, "ds.history", &history, &err);
	line = json_array_get(history, 0);
	is_str(json_string_value(json_object_get(line, "tool")), "ds-test", "history names the program");
	is_int(json_array_size(json_object_get(line, "args")), 5, "history keeps the arguments, not argv[0]");
	json_decref(history);
	ds_container_free(c);
	ds_cli_free(cli);

	f = fopen(log_path, "r");
	ok(f && fgets(buf, sizeof buf, f), "the log has a line");
	line = f ? json_loads(buf, 0, NULL) : NULL;
	is_str(json_string_value(json_object_get(line, "event")), "step", "event name");
	ok(json_is_string(json_object_get(line, "time")), "wall time");
	ok(json_is_real(json_object_get(line, "elapsed")), "elapsed seconds");
	is_int(json_integer_value(json_object_get(line, "step")), 3, "fields follow");
	json_decref(line);
	if (f)
		fclose(f);
	unlink(log_path);
}

/* A caught SIGINT only sets the flag; an uncaught one ends the process by
 * the signal, as the shell expects (status 130). */
static void test_interrupts(void)
{
	char *argv[] = { "ds-test", "in", NULL };
	ds_cli *cli = NULL;
	int done, wstatus = 0;
	pid_t pid;

	is_int(ds_cli_start(&cli, &program, 2, argv, &done), 0, "start");
	ds_cli_catch_interrupts(1);
	is_int(ds_cli_interrupted(), 0, "not interrupted yet");
	raise(SIGINT);
	is_int(ds_cli_interrupted(), DS_ERR_INTERRUPTED, "a caught SIGINT is status 130");
	ds_cli_catch_interrupts(0);
	ds_cli_free(cli);

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		ds_cli *child = NULL;

		ds_cli_start(&child, &program, 2, argv, &done);
		raise(SIGTERM);
		_exit(0);
	}
	waitpid(pid, &wstatus, 0);
	ok(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGTERM, "an uncaught SIGTERM ends the process");
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	int fd;

	unsetenv("DS_DEVICE");
	unsetenv("DS_THREADS");
	/* ds_cli_start may execute the program again to pick OpenBLAS's
	 * kernels (ds.7); a test that calls it mid-way must not restart. */
	setenv("DS_BLAS_KEEP", "1", 1);
	snprintf(config_path, sizeof config_path, "%s/test_cli_XXXXXX", tmp && *tmp ? tmp : "/tmp");
	fd = mkstemp(config_path);
	if (fd < 0) {
		perror(config_path);
		return 1;
	}
	close(fd);
	test_defaults();
	test_spellings();
	test_errors();
	test_precedence();
	test_config_errors();
	test_start_and_events();
	test_interrupts();
	unlink(config_path);
	return done_testing();
}
