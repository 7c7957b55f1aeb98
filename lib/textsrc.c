/* textsrc.c - text data held many items to a file: JSON Lines (one object a
 * line) and fortune files (entries between lines holding '%').  Bytes are
 * passed on as found; the pipeline validates and normalises them. */
#include "source.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "%" alone on a line; strfile's "%%" and trailing blanks or a CR (files
 * edited elsewhere) are tolerated. */
static int is_separator(const char *line, size_t len)
{
	while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t' || line[len - 1] == '\r'))
		len--;
	return (len == 1 && line[0] == '%') || (len == 2 && line[0] == '%' && line[1] == '%');
}

int ds_fortune_sniff(const char *buf, size_t len)
{
	size_t pos = 0;

	while (pos < len) {
		const char *nl = memchr(buf + pos, '\n', len - pos);

		if (!nl)
			break;   /* the last line may be cut by the sniffing buffer */
		if (is_separator(buf + pos, (size_t)(nl - (buf + pos))))
			return 1;
		pos = (size_t)(nl - buf) + 1;
	}
	return 0;
}

static int is_blank(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
			return 0;
	return 1;
}

static int push_text(ds_item_list *list, const char *id, const char *label, const char *text, size_t len,
		     ds_error *err)
{
	ds_item *item = ds_item_new(DS_ITEM_TEXT, id, label, err);

	if (!item)
		return DS_ERR_NOMEM;
	if (ds_item_set_data(item, text, len, err)) {
		ds_item_free(item);
		return DS_ERR_NOMEM;
	}
	return ds_item_list_push(list, item, err);
}

/* The label of a fortune file: its folder's when it sits in a class folder,
 * else its own name less the ".u8" Debian gives UTF-8 copies. */
static char *fortune_label(const ds_source_ctx *ctx, ds_error *err)
{
	const char *base = ds_path_base(ctx->path);
	char *label;

	if (ctx->dir_label)
		return ds_strdup(ctx->dir_label, err);
	label = ds_strdup(base, err);
	if (label && ds_name_ends_with(label, ".u8") && strlen(label) > 3)
		label[strlen(label) - 3] = 0;
	return label;
}

int ds_fortune_list(const ds_source_ctx *ctx, ds_item_list *list, ds_error *err)
{
	char *text = NULL, *label = NULL, *id = NULL;
	size_t len, pos = 0, start = 0, k = 0, id_cap;
	void *buf;
	int rc;

	rc = ds_file_read(ctx->path, 0, &buf, &len, err);
	if (rc)
		return rc;
	text = buf;
	label = fortune_label(ctx, err);
	id_cap = strlen(ctx->path) + 24;
	id = ds_malloc(id_cap, err);
	if (!label || !id) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	/* Each pass looks at one line; an entry ends at a separator line or at
	 * the end of the file. */
	for (;;) {
		int at_end = pos >= len;
		const char *nl = at_end ? NULL : memchr(text + pos, '\n', len - pos);
		size_t line_end = nl ? (size_t)(nl - text) : len, next = nl ? line_end + 1 : len;

		if (at_end || is_separator(text + pos, line_end - pos)) {
			size_t end = at_end ? len : pos;

			/* The newline before the separator belongs to it. */
			if (end > start && text[end - 1] == '\n')
				end--;
			if (end > start && text[end - 1] == '\r')
				end--;
			if (end > start && !is_blank(text + start, end - start)) {
				snprintf(id, id_cap, "%s#%zu", ctx->path, k++);
				rc = push_text(list, id, label, text + start, end - start, err);
				if (rc)
					goto out;
			}
			if (at_end)
				break;
			start = next;
		}
		pos = next;
	}
out:
	free(id);
	free(label);
	free(text);
	return rc;
}

/* One line of a JSON Lines file to an item (or an error item). */
static int jsonl_line(const ds_source_ctx *ctx, const char *line, size_t len, size_t lineno, const char *id,
		      ds_item_list *list, ds_error *err)
{
	const char *text_field = ctx->opts && ctx->opts->text_field ? ctx->opts->text_field : "text";
	const char *label_field = ctx->opts && ctx->opts->label_field ? ctx->opts->label_field : "label";
	json_error_t jerr;
	json_t *obj, *text, *label;
	char number[32];
	const char *label_text = ctx->dir_label;
	int rc;

	if (ctx->opts && ctx->opts->max_bytes && len > ctx->opts->max_bytes)
		return ds_item_push_error(list, err, id, ctx->path, NULL, "too_large",
					  "line %zu: %zu bytes, more than %" PRIu64, lineno, len,
					  ctx->opts->max_bytes);
	obj = json_loadb(line, len, JSON_ALLOW_NUL, &jerr);
	if (!obj)
		return ds_item_push_error(list, err, id, ctx->path, NULL, "bad_record", "line %zu: not valid JSON: %s",
					  lineno, jerr.text);
	if (!json_is_object(obj)) {
		rc = ds_item_push_error(list, err, id, ctx->path, NULL, "bad_record", "line %zu: not a JSON object",
					lineno);
		goto out;
	}
	text = json_object_get(obj, text_field);
	if (!json_is_string(text)) {
		rc = ds_item_push_error(list, err, id, ctx->path, NULL, "bad_record", "line %zu: %s '%.64s'", lineno,
					text ? "not a string:" : "no field", text_field);
		goto out;
	}
	label = json_object_get(obj, label_field);
	if (json_is_string(label)) {
		label_text = json_string_value(label);
	} else if (json_is_integer(label)) {
		snprintf(number, sizeof number, "%" JSON_INTEGER_FORMAT, json_integer_value(label));
		label_text = number;
	} else if (label && !json_is_null(label)) {
		rc = ds_item_push_error(list, err, id, ctx->path, NULL, "bad_record",
					"line %zu: '%.64s' is not a string or an integer", lineno, label_field);
		goto out;
	}
	rc = push_text(list, id, label_text, json_string_value(text), json_string_length(text), err);
out:
	json_decref(obj);
	return rc;
}

int ds_jsonl_list(const ds_source_ctx *ctx, ds_item_list *list, ds_error *err)
{
	char *line = NULL, *id = NULL;
	size_t line_cap = 0, lineno = 0, id_cap;
	FILE *f;
	int rc = 0;

	f = fopen(ctx->path, "rbe");
	if (!f)
		return ds_file_error(err, errno, ctx->path);
	id_cap = strlen(ctx->path) + 24;
	id = ds_malloc(id_cap, err);
	if (!id) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	for (;;) {
		ssize_t n = getline(&line, &line_cap, f);
		size_t len;

		if (n < 0)
			break;
		len = (size_t)n;
		lineno++;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			len--;
		if (is_blank(line, len))
			continue;
		snprintf(id, id_cap, "%s:%zu", ctx->path, lineno);
		rc = jsonl_line(ctx, line, len, lineno, id, list, err);
		if (rc)
			goto out;
	}
	if (ferror(f))
		rc = ds_file_error(err, errno ? errno : EIO, ctx->path);
out:
	free(id);
	free(line);
	fclose(f);
	return rc;
}
