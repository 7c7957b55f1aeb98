/* log.c - messages on stderr.  People read "ds-x: message" lines; with
 * DS_LOG=json scripts read one JSON object per line instead, with the same
 * stable fields for every program. */
#include "internal.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static int json_mode(void)
{
	const char *mode = getenv("DS_LOG");

	return mode && strcmp(mode, "json") == 0;
}

/* One JSON line on stderr; obj is stolen. */
static void emit_json(json_t *obj)
{
	if (!obj)
		return;
	json_dumpf(obj, stderr, JSON_COMPACT | JSON_PRESERVE_ORDER);
	fputc('\n', stderr);
	fflush(stderr);
	json_decref(obj);
}

/* jansson refuses strings that are not UTF-8, and a file name in a message
 * may not be: such a message keeps its ASCII and shows '?' for the rest, so
 * the line is never lost. */
static json_t *message_json(const char *msg)
{
	json_t *j = json_string(msg);
	char *copy;

	if (j)
		return j;
	copy = ds_strdup(msg, NULL);
	if (!copy)
		return NULL;
	for (char *p = copy; *p; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	j = json_string(copy);
	free(copy);
	return j;
}

static void emit(const ds_cli *cli, const char *level, const char *fmt, va_list ap)
{
	char msg[2048];

	vsnprintf(msg, sizeof msg, fmt, ap);
	if (json_mode()) {
		emit_json(json_pack("{s:s, s:s, s:o}", "program", ds_cli_name(cli), "level", level,
				    "message", message_json(msg)));
		return;
	}
	if (strcmp(level, "warn") == 0)
		fprintf(stderr, "%s: warning: %s\n", ds_cli_name(cli), msg);
	else
		fprintf(stderr, "%s: %s\n", ds_cli_name(cli), msg);
}

void ds_log_info(const ds_cli *cli, const char *fmt, ...)
{
	va_list ap;

	if (ds_cli_verbosity(cli) < 0)
		return;
	va_start(ap, fmt);
	emit(cli, "info", fmt, ap);
	va_end(ap);
}

void ds_log_verbose(const ds_cli *cli, const char *fmt, ...)
{
	va_list ap;

	if (ds_cli_verbosity(cli) < 1)
		return;
	va_start(ap, fmt);
	emit(cli, "verbose", fmt, ap);
	va_end(ap);
}

/* Warnings stay visible under -q: they tell about results, not progress. */
void ds_log_warn(const ds_cli *cli, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	emit(cli, "warn", fmt, ap);
	va_end(ap);
}

void ds_log_error(const ds_cli *cli, int status, const ds_error *err)
{
	const char *name = ds_cli_name(cli);
	const char *message = err && err->message[0] ? err->message : "failed";
	const char *code = err && err->code[0] ? err->code : "error";

	if (json_mode()) {
		emit_json(json_pack("{s:s, s:s, s:i, s:s, s:o}", "program", name, "level", "error",
				    "status", status, "code", code, "message", message_json(message)));
		return;
	}
	fprintf(stderr, "%s: error: %s\n", name, message);
	if (status == DS_ERR_USAGE)
		fprintf(stderr, "Try '%s --help'.\n", name);
	fflush(stderr);
}
