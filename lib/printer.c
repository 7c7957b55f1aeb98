/* printer.c - every summary and record a program prints goes through here,
 * so all programs speak text, md, csv, json and jsonl the same way.
 *
 * A document is a JSON object.  Its scalar members are "key: value" lines;
 * an object member is a titled section of key/value lines; an array of
 * objects is a table whose columns are the union of its rows' keys in the
 * order first seen.  Anything else (an array of numbers, say) is a value,
 * written as compact JSON. */
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Reals in json and jsonl: 15 significant digits print 0.1 as 0.1 rather
 * than 0.10000000000000001, and every figure ds computes (float32 results,
 * timings) has fewer true digits than that. */
#define JSON_FLAGS (JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15))

static const char *const format_names[] = {
	[DS_FORMAT_TEXT] = "text",
	[DS_FORMAT_MD] = "md",
	[DS_FORMAT_CSV] = "csv",
	[DS_FORMAT_JSON] = "json",
	[DS_FORMAT_JSONL] = "jsonl",
};

int ds_format_parse(const char *text, ds_format *out)
{
	for (size_t i = 0; i < DS_ARRAY_LEN(format_names); i++) {
		if (text && strcmp(text, format_names[i]) == 0) {
			*out = (ds_format)i;
			return 0;
		}
	}
	return -1;
}

const char *ds_format_name(ds_format fmt)
{
	return (size_t)fmt < DS_ARRAY_LEN(format_names) ? format_names[fmt] : "unknown";
}

/* ------------------------------------------------------------ output */

/* Writes remember the first failure so rendering code need not check each. */
struct sink {
	FILE *f;
	int errnum;
	int failed;
};

static void sink_check(struct sink *s, int rc)
{
	if (rc < 0 && !s->failed) {
		s->failed = 1;
		s->errnum = errno;
	}
}

static void put(struct sink *s, const char *text)
{
	sink_check(s, fputs(text, s->f));
}

static void putf(struct sink *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct sink *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	sink_check(s, vfprintf(s->f, fmt, ap));
	va_end(ap);
}

static void put_json(struct sink *s, const json_t *j, size_t flags)
{
	sink_check(s, json_dumpf(j, s->f, flags) == 0 ? 0 : -1);
}

static int sink_status(struct sink *s, ds_error *err)
{
	const char *what = s->f == stdout ? "stdout" : "output";

	if (!s->failed && ferror(s->f)) {
		s->failed = 1;
		s->errnum = errno;
	}
	if (!s->failed)
		return 0;
	if (s->errnum == EPIPE)
		return ds_error_set(err, DS_ERR_IO, "broken_pipe", "%s: %s", what, strerror(EPIPE));
	if (s->errnum == 0)
		return ds_error_set(err, DS_ERR_IO, "io_error", "%s: write error", what);
	return ds_error_errno(err, s->errnum, what);
}

/* ------------------------------------------------------------ cells */

static int is_number(const json_t *v)
{
	return json_is_integer(v) || json_is_real(v);
}

/* The text of one cell (malloc'd); a missing or null value is "-" in tables
 * people read and empty in CSV. */
static char *cell_text(const json_t *v, ds_format fmt)
{
	char buf[64];

	if (!v || json_is_null(v))
		return strdup(fmt == DS_FORMAT_CSV ? "" : "-");
	if (json_is_string(v))
		return strdup(json_string_value(v));
	if (json_is_integer(v)) {
		snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return strdup(buf);
	}
	if (json_is_real(v)) {
		snprintf(buf, sizeof buf, "%.6g", json_real_value(v));
		return strdup(buf);
	}
	if (json_is_boolean(v))
		return strdup(json_is_true(v) ? "true" : "false");
	return json_dumps(v, JSON_COMPACT | JSON_FLAGS);
}

/* A pipe in a markdown cell would split it; a newline would end the row. */
static char *md_escape(char *text)
{
	size_t extra = 0, n = 0;
	char *out;

	if (!text)
		return NULL;
	for (const char *p = text; *p; p++)
		extra += *p == '|';
	out = malloc(strlen(text) + extra + 1);
	if (out) {
		for (const char *p = text; *p; p++) {
			if (*p == '|')
				out[n++] = '\\';
			out[n++] = *p == '\n' || *p == '\r' ? ' ' : *p;
		}
		out[n] = '\0';
	}
	free(text);
	return out;
}

/* Columns line up by characters, not bytes: UTF-8 continuation bytes take
 * no column. */
static size_t display_width(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += ((unsigned char)*s & 0xC0) != 0x80;
	return n;
}

static void put_padded(struct sink *s, const char *text, size_t width, int right)
{
	size_t w = display_width(text);
	size_t pad = width > w ? width - w : 0;

	if (right)
		putf(s, "%*s", (int)pad, "");
	put(s, text);
	if (!right)
		putf(s, "%*s", (int)pad, "");
}

/* RFC 4180 quoting; lines end in \n, as every Unix tool expects. */
static void put_csv_cell(struct sink *s, const char *text)
{
	if (!strpbrk(text, ",\"\r\n")) {
		put(s, text);
		return;
	}
	put(s, "\"");
	for (const char *p = text; *p; p++) {
		if (*p == '"')
			put(s, "\"\"");
		else
			sink_check(s, fputc(*p, s->f) == EOF ? -1 : 0);
	}
	put(s, "\"");
}

/* ------------------------------------------------------------ tables */

struct table {
	const char *title;       /* NULL for the document's own scalars */
	size_t ncols, nrows;
	const char **cols;       /* column names, held by names or static */
	json_t *names;
	char **cells;            /* nrows x ncols */
	size_t *width;
	int *right;              /* numbers right-aligned in text and md */
};

static void table_free(struct table *t)
{
	for (size_t i = 0; i < t->ncols * t->nrows; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t->cols);
	free(t->width);
	free(t->right);
	json_decref(t->names);
	memset(t, 0, sizeof *t);
}

static int is_table(const json_t *v)
{
	size_t i;
	json_t *row;

	if (!json_is_array(v) || json_array_size(v) == 0)
		return 0;
	json_array_foreach(v, i, row) {
		if (!json_is_object(row))
			return 0;
	}
	return 1;
}

static int table_alloc(struct table *t, size_t ncols, size_t nrows, ds_error *err)
{
	t->ncols = ncols;
	t->nrows = nrows;
	t->cols = ds_calloc(ncols, sizeof *t->cols, err);
	t->cells = ds_calloc(ncols * nrows, sizeof *t->cells, err);
	t->width = ds_calloc(ncols, sizeof *t->width, err);
	t->right = ds_calloc(ncols, sizeof *t->right, err);
	return t->cols && t->cells && t->width && t->right ? 0 : DS_ERR_NOMEM;
}

/* Fill cell texts, widths and alignment once the columns are known. */
static int table_finish(struct table *t, ds_format fmt, const json_t *const *vals, ds_error *err)
{
	for (size_t c = 0; c < t->ncols; c++) {
		int numbers = 0, others = 0;

		t->width[c] = display_width(t->cols[c]);
		for (size_t r = 0; r < t->nrows; r++) {
			const json_t *v = vals[r * t->ncols + c];
			char *text = cell_text(v, fmt);

			if (fmt == DS_FORMAT_MD)
				text = md_escape(text);
			if (!text)
				return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory printing");
			t->cells[r * t->ncols + c] = text;
			if (display_width(text) > t->width[c])
				t->width[c] = display_width(text);
			if (is_number(v))
				numbers++;
			else if (v && !json_is_null(v))
				others++;
		}
		t->right[c] = numbers > 0 && others == 0;
	}
	if (fmt == DS_FORMAT_MD) {
		for (size_t c = 0; c < t->ncols; c++)
			if (t->width[c] < 3)
				t->width[c] = 3;
	}
	return 0;
}

/* A table from an array of objects: columns are every key, first seen first. */
static int table_from_rows(struct table *t, const char *title, const json_t *rows, ds_format fmt,
			   ds_error *err)
{
	json_t *cols, *row, *v;
	const json_t **vals = NULL;
	const char *key;
	size_t i, k, ncols;
	int status = 0;

	memset(t, 0, sizeof *t);
	t->title = title;
	cols = t->names = json_array();
	if (!cols)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory printing");
	json_array_foreach(rows, i, row) {
		json_object_foreach(row, key, v) {
			int seen = 0;

			for (k = 0; k < json_array_size(cols) && !seen; k++)
				seen = strcmp(json_string_value(json_array_get(cols, k)), key) == 0;
			if (!seen)
				json_array_append_new(cols, json_string(key));
		}
	}
	ncols = json_array_size(cols);
	status = table_alloc(t, ncols, json_array_size(rows), err);
	if (status)
		goto out;
	vals = ds_calloc(ncols * t->nrows, sizeof *vals, err);
	if (!vals) {
		status = DS_ERR_NOMEM;
		goto out;
	}
	for (k = 0; k < ncols; k++)
		t->cols[k] = json_string_value(json_array_get(cols, k));
	json_array_foreach(rows, i, row) {
		for (k = 0; k < ncols; k++)
			vals[i * ncols + k] = json_object_get(row, t->cols[k]);
	}
	status = table_finish(t, fmt, vals, err);
out:
	free(vals);
	return status;
}

/* A two-column key/value table from an object's members, or from the
 * document's scalar members when skip_nested is set. */
static int table_from_pairs(struct table *t, const char *title, const json_t *obj, int skip_nested,
			    ds_format fmt, ds_error *err)
{
	static const char *const kv[] = { "key", "value" };
	const json_t **vals = NULL;
	json_t *keys = json_array(), *v;
	const char *key;
	size_t n = 0, r = 0;
	int status;

	memset(t, 0, sizeof *t);
	t->title = title;
	json_object_foreach((json_t *)obj, key, v) {
		if (!skip_nested || (!json_is_object(v) && !is_table(v)))
			n++;
	}
	status = table_alloc(t, 2, n, err);
	if (!status) {
		vals = ds_calloc(2 * n, sizeof *vals, err);
		if (!vals || !keys)
			status = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory printing");
	}
	if (status)
		goto out;
	json_object_foreach((json_t *)obj, key, v) {
		if (skip_nested && (json_is_object(v) || is_table(v)))
			continue;
		json_array_append_new(keys, json_string(key));
		vals[2 * r] = json_array_get(keys, r);
		vals[2 * r + 1] = v;
		r++;
	}
	t->cols[0] = kv[0];
	t->cols[1] = kv[1];
	status = table_finish(t, fmt, vals, err);
	t->right[0] = t->right[1] = 0;
out:
	free(vals);
	json_decref(keys);
	return status;
}

/* ------------------------------------------------------------ text */

static void text_pairs(struct sink *s, const struct table *t, const char *indent)
{
	size_t kw = 0;

	for (size_t r = 0; r < t->nrows; r++)
		if (display_width(t->cells[2 * r]) + 1 > kw)
			kw = display_width(t->cells[2 * r]) + 1;
	for (size_t r = 0; r < t->nrows; r++) {
		char key[1024];

		snprintf(key, sizeof key, "%s:", t->cells[2 * r]);
		put(s, indent);
		put_padded(s, key, kw, 0);
		putf(s, " %s\n", t->cells[2 * r + 1]);
	}
}

static void text_row(struct sink *s, const struct table *t, const char *const *cells)
{
	put(s, "  ");
	for (size_t c = 0; c < t->ncols; c++) {
		int last = c + 1 == t->ncols;

		if (c)
			put(s, "  ");
		/* The last column is not padded: no trailing blanks. */
		put_padded(s, cells[c], last && !t->right[c] ? 0 : t->width[c], t->right[c]);
	}
	put(s, "\n");
}

static void text_table(struct sink *s, const struct table *t)
{
	putf(s, "%s:\n", t->title);
	text_row(s, t, t->cols);
	for (size_t r = 0; r < t->nrows; r++)
		text_row(s, t, (const char *const *)&t->cells[r * t->ncols]);
}

/* ------------------------------------------------------------ md */

static void md_row(struct sink *s, const struct table *t, const char *const *cells)
{
	put(s, "|");
	for (size_t c = 0; c < t->ncols; c++) {
		put(s, " ");
		put_padded(s, cells[c], t->width[c], t->right[c]);
		put(s, " |");
	}
	put(s, "\n");
}

static void md_table(struct sink *s, const struct table *t)
{
	if (t->title)
		putf(s, "## %s\n\n", t->title);
	md_row(s, t, t->cols);
	put(s, "|");
	for (size_t c = 0; c < t->ncols; c++) {
		put(s, " ");
		for (size_t i = 0; i + (t->right[c] ? 1 : 0) < t->width[c]; i++)
			put(s, "-");
		put(s, t->right[c] ? ": |" : " |");
	}
	put(s, "\n");
	for (size_t r = 0; r < t->nrows; r++)
		md_row(s, t, (const char *const *)&t->cells[r * t->ncols]);
}

/* ------------------------------------------------------------ csv */

static void csv_row(struct sink *s, size_t n, const char *const *cells)
{
	for (size_t c = 0; c < n; c++) {
		if (c)
			put(s, ",");
		put_csv_cell(s, cells[c]);
	}
	put(s, "\n");
}

static void csv_table(struct sink *s, const struct table *t)
{
	csv_row(s, t->ncols, t->cols);
	for (size_t r = 0; r < t->nrows; r++)
		csv_row(s, t->ncols, (const char *const *)&t->cells[r * t->ncols]);
}

/* A document without tables still gives CSV: its scalars, and its sections'
 * members as "section.key", in key,value rows. */
static void csv_pairs(struct sink *s, const json_t *doc)
{
	const char *key, *sub;
	json_t *v, *w;

	put(s, "key,value\n");
	json_object_foreach((json_t *)doc, key, v) {
		if (json_is_object(v)) {
			json_object_foreach(v, sub, w) {
				char *name = malloc(strlen(key) + strlen(sub) + 2);
				char *text = cell_text(w, DS_FORMAT_CSV);

				if (name && text) {
					sprintf(name, "%s.%s", key, sub);
					csv_row(s, 2, (const char *const[]){ name, text });
				}
				free(name);
				free(text);
			}
		} else {
			char *text = cell_text(v, DS_FORMAT_CSV);

			if (text)
				csv_row(s, 2, (const char *const[]){ key, text });
			free(text);
		}
	}
}

/* ------------------------------------------------------------ render */

static int print_blocks(struct sink *s, ds_format fmt, const json_t *doc, ds_error *err)
{
	const char *key;
	json_t *v;
	struct table t;
	int status = 0, blocks = 0, scalars_done = 0, tables = 0, seen = 0;

	if (fmt == DS_FORMAT_CSV) {
		json_object_foreach((json_t *)doc, key, v)
			tables += is_table(v);
		if (!tables) {
			csv_pairs(s, doc);
			return 0;
		}
	}
	json_object_foreach((json_t *)doc, key, v) {
		int table = is_table(v), section = json_is_object(v);

		if (!table && !section) {
			/* All the document's scalars form one block, where the first stands. */
			if (scalars_done || fmt == DS_FORMAT_CSV)
				continue;
			scalars_done = 1;
			status = table_from_pairs(&t, NULL, doc, 1, fmt, err);
		} else if (table) {
			status = table_from_rows(&t, key, v, fmt, err);
		} else {
			if (fmt == DS_FORMAT_CSV)
				continue;
			status = table_from_pairs(&t, key, v, 0, fmt, err);
		}
		if (status) {
			table_free(&t);
			return status;
		}
		if (blocks++ && fmt != DS_FORMAT_CSV)
			put(s, "\n");
		switch (fmt) {
		case DS_FORMAT_TEXT:
			if (table) {
				text_table(s, &t);
			} else if (section) {
				putf(s, "%s:\n", key);
				text_pairs(s, &t, "  ");
			} else {
				text_pairs(s, &t, "");
			}
			break;
		case DS_FORMAT_MD:
			md_table(s, &t);
			break;
		default:
			if (tables > 1)
				putf(s, "%s# %s\n", seen ? "\n" : "", key);
			seen = 1;
			csv_table(s, &t);
			break;
		}
		table_free(&t);
	}
	return 0;
}

/* jsonl: one line of the document's other members, then one per table row
 * tagged with its table. */
static int print_jsonl(struct sink *s, const json_t *doc, ds_error *err)
{
	json_t *rest = json_object(), *v, *row, *cell;
	const char *key, *col;
	size_t i;

	if (!rest)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory printing");
	json_object_foreach((json_t *)doc, key, v) {
		if (!is_table(v))
			json_object_set(rest, key, v);
	}
	if (json_object_size(rest)) {
		put_json(s, rest, JSON_COMPACT | JSON_FLAGS);
		put(s, "\n");
	}
	json_decref(rest);
	json_object_foreach((json_t *)doc, key, v) {
		if (!is_table(v))
			continue;
		json_array_foreach(v, i, row) {
			json_t *line = json_pack("{s:s}", "table", key);

			if (!line)
				return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory printing");
			json_object_foreach(row, col, cell) {
				if (strcmp(col, "table") != 0)
					json_object_set(line, col, cell);
			}
			put_json(s, line, JSON_COMPACT | JSON_FLAGS);
			put(s, "\n");
			json_decref(line);
		}
	}
	return 0;
}

int ds_print(FILE *out, ds_format fmt, const json_t *doc, ds_error *err)
{
	struct sink s = { out, 0, 0 };
	int status = 0;

	if (!json_is_object(doc))
		return ds_error_set(err, DS_ERR_RUN, "not_object", "the printer takes a JSON object");
	switch (fmt) {
	case DS_FORMAT_JSON:
		put_json(&s, doc, JSON_INDENT(2) | JSON_FLAGS);
		put(&s, "\n");
		break;
	case DS_FORMAT_JSONL:
		status = print_jsonl(&s, doc, err);
		break;
	case DS_FORMAT_TEXT:
	case DS_FORMAT_MD:
	case DS_FORMAT_CSV:
		status = print_blocks(&s, fmt, doc, err);
		break;
	default:
		return ds_error_set(err, DS_ERR_RUN, "bad_format", "unknown output format %d", (int)fmt);
	}
	if (status)
		return status;
	return sink_status(&s, err);
}

/* ------------------------------------------------------------ records */

struct ds_printer {
	struct sink s;
	ds_format fmt;
	size_t count;
	json_t *cols;            /* csv and md: the first record's keys */
};

ds_printer *ds_printer_new(FILE *out, ds_format fmt)
{
	ds_printer *p = calloc(1, sizeof *p);

	if (!p)
		return NULL;
	p->s.f = out;
	p->fmt = fmt;
	return p;
}

/* key=value with the value quoted when a reader could not split it back. */
static void put_logfmt(struct sink *s, const char *key, const char *text)
{
	put(s, key);
	put(s, "=");
	if (*text && !strpbrk(text, " \t\r\n\"=\\")) {
		put(s, text);
		return;
	}
	put(s, "\"");
	for (const char *p = text; *p; p++) {
		if (*p == '"' || *p == '\\')
			putf(s, "\\%c", *p);
		else if (*p == '\n')
			put(s, "\\n");
		else
			sink_check(s, fputc(*p, s->f) == EOF ? -1 : 0);
	}
	put(s, "\"");
}

/* One row of a streamed csv or md table, in the first record's columns. */
static int put_stream_row(ds_printer *p, const json_t *record, ds_error *err)
{
	size_t i;
	json_t *col;

	if (p->fmt == DS_FORMAT_MD)
		put(&p->s, "|");
	json_array_foreach(p->cols, i, col) {
		char *text = cell_text(json_object_get(record, json_string_value(col)), p->fmt);

		if (p->fmt == DS_FORMAT_MD)
			text = md_escape(text);
		if (!text)
			return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory printing");
		if (p->fmt == DS_FORMAT_MD) {
			putf(&p->s, " %s |", text);
		} else {
			if (i)
				put(&p->s, ",");
			put_csv_cell(&p->s, text);
		}
		free(text);
	}
	put(&p->s, "\n");
	return 0;
}

static int stream_header(ds_printer *p, const json_t *record, ds_error *err)
{
	const char *key;
	json_t *v, *col;
	size_t i;

	p->cols = json_array();
	if (!p->cols)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory printing");
	json_object_foreach((json_t *)record, key, v)
		json_array_append_new(p->cols, json_string(key));
	if (p->fmt == DS_FORMAT_MD)
		put(&p->s, "|");
	json_array_foreach(p->cols, i, col) {
		if (p->fmt == DS_FORMAT_MD) {
			putf(&p->s, " %s |", json_string_value(col));
		} else {
			if (i)
				put(&p->s, ",");
			put_csv_cell(&p->s, json_string_value(col));
		}
	}
	put(&p->s, "\n");
	if (p->fmt == DS_FORMAT_MD) {
		put(&p->s, "|");
		for (i = 0; i < json_array_size(p->cols); i++)
			put(&p->s, " --- |");
		put(&p->s, "\n");
	}
	return 0;
}

int ds_printer_record(ds_printer *p, const json_t *record, ds_error *err)
{
	const char *key;
	json_t *v;
	int status = 0;

	if (!p)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory printing");
	if (!json_is_object(record))
		return ds_error_set(err, DS_ERR_RUN, "not_object", "a record must be a JSON object");
	switch (p->fmt) {
	case DS_FORMAT_JSONL:
		put_json(&p->s, record, JSON_COMPACT | JSON_FLAGS);
		put(&p->s, "\n");
		break;
	case DS_FORMAT_JSON:
		put(&p->s, p->count ? ",\n  " : "[\n  ");
		put_json(&p->s, record, JSON_COMPACT | JSON_FLAGS);
		break;
	case DS_FORMAT_TEXT: {
		int first = 1;

		json_object_foreach((json_t *)record, key, v) {
			char *text = cell_text(v, p->fmt);

			if (!text)
				return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory printing");
			if (!first)
				put(&p->s, " ");
			first = 0;
			put_logfmt(&p->s, key, text);
			free(text);
		}
		put(&p->s, "\n");
		break;
	}
	case DS_FORMAT_CSV:
	case DS_FORMAT_MD:
		if (!p->count)
			status = stream_header(p, record, err);
		if (!status)
			status = put_stream_row(p, record, err);
		break;
	default:
		return ds_error_set(err, DS_ERR_RUN, "bad_format", "unknown output format %d", (int)p->fmt);
	}
	p->count++;
	if (status)
		return status;
	return sink_status(&p->s, err);
}

int ds_printer_free(ds_printer *p, ds_error *err)
{
	int status;

	if (!p)
		return 0;
	if (p->fmt == DS_FORMAT_JSON)
		put(&p->s, p->count ? "\n]\n" : "[]\n");
	status = sink_status(&p->s, err);
	json_decref(p->cols);
	free(p);
	return status;
}
