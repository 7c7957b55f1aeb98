/* source.c - turning inputs into items: folders walked in a fixed order,
 * files dispatched by kind, .dst streams read back row by row, and the item
 * list the pipeline consumes.
 *
 * A walk never stops at one bad entry: what cannot be listed becomes a
 * DS_ITEM_ERROR item that the report shows, and only an input that cannot
 * be read at all fails with a status. */
#include "source.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ items */

ds_item *ds_item_new(ds_item_kind kind, const char *id, const char *label, ds_error *err)
{
	ds_item *item = ds_calloc(1, sizeof *item, err);

	if (!item)
		return NULL;
	item->kind = kind;
	item->id = ds_strdup(id, err);
	if (label)
		item->label = ds_strdup(label, err);
	if (!item->id || (label && !item->label)) {
		ds_item_free(item);
		return NULL;
	}
	return item;
}

int ds_item_set_data(ds_item *item, const void *data, size_t len, ds_error *err)
{
	char *copy = ds_malloc(len + 1, err);

	if (!copy)
		return DS_ERR_NOMEM;
	memcpy(copy, data, len);
	copy[len] = 0;
	free(item->data);
	item->data = copy;
	item->len = len;
	return 0;
}

int ds_item_push_error(ds_item_list *list, ds_error *err, const char *id, const char *path, const char *label,
		       const char *code, const char *fmt, ...)
{
	ds_item *item = ds_item_new(DS_ITEM_ERROR, id, label, err);
	va_list ap;

	if (!item)
		return DS_ERR_NOMEM;
	if (path) {
		item->path = ds_strdup(path, err);
		if (!item->path) {
			ds_item_free(item);
			return DS_ERR_NOMEM;
		}
	}
	snprintf(item->code, sizeof item->code, "%s", code);
	va_start(ap, fmt);
	vsnprintf(item->message, sizeof item->message, fmt, ap);
	va_end(ap);
	return ds_item_list_push(list, item, err);
}

void ds_item_free(ds_item *item)
{
	if (!item)
		return;
	free(item->id);
	free(item->path);
	free(item->label);
	free(item->data);
	free(item);
}

int ds_item_list_push(ds_item_list *list, ds_item *item, ds_error *err)
{
	if (list->count == list->cap) {
		size_t cap = list->cap ? 2 * list->cap : 256;
		ds_item **grown = ds_realloc(list->items, cap * sizeof *grown, err);

		if (!grown) {
			ds_item_free(item);
			return DS_ERR_NOMEM;
		}
		list->items = grown;
		list->cap = cap;
	}
	list->items[list->count++] = item;
	return 0;
}

static int compare_strings(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_classes(ds_item_list *list)
{
	for (size_t i = 0; i < list->class_count; i++)
		free(list->classes[i]);
	free(list->classes);
	list->classes = NULL;
	list->class_count = 0;
}

int ds_item_list_classes(ds_item_list *list, ds_error *err)
{
	char **labels = NULL;
	size_t n = 0, unique = 0;
	int rc = 0;

	free_classes(list);
	labels = ds_malloc((list->count ? list->count : 1) * sizeof *labels, err);
	if (!labels)
		return DS_ERR_NOMEM;
	for (size_t i = 0; i < list->count; i++)
		if (list->items[i]->label)
			labels[n++] = list->items[i]->label;
	qsort(labels, n, sizeof *labels, compare_strings);
	/* Unique names first, in place; then owned copies of them. */
	for (size_t i = 0; i < n; i++)
		if (unique == 0 || strcmp(labels[unique - 1], labels[i]) != 0)
			labels[unique++] = labels[i];
	list->classes = ds_calloc(unique ? unique : 1, sizeof *list->classes, err);
	if (!list->classes) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < unique; i++) {
		list->classes[i] = ds_strdup(labels[i], err);
		if (!list->classes[i]) {
			list->class_count = i;
			free_classes(list);
			rc = DS_ERR_NOMEM;
			goto out;
		}
	}
	list->class_count = unique;
out:
	free(labels);
	return rc;
}

void ds_item_list_free(ds_item_list *list)
{
	if (!list)
		return;
	for (size_t i = 0; i < list->count; i++)
		ds_item_free(list->items[i]);
	free(list->items);
	free_classes(list);
	memset(list, 0, sizeof *list);
}

/* ------------------------------------------------------------- .dst input */

static int frame_fail(ds_error *err, const char *name, size_t frame, const char *fmt, const char *what)
{
	return ds_error_set(err, DS_ERR_DATA, "bad_frame", "%s: frame %zu: %s%s", name, frame, fmt, what);
}

/* The label of row r: its class name from ds.labels, or the number. */
static const char *row_label(const ds_tensor *y, const json_t *names, int64_t r, char *buf, size_t len)
{
	int32_t v;

	if (!y)
		return NULL;
	v = ((const int32_t *)y->data)[r];
	if (v < 0)
		return NULL;   /* -1 marks an unlabelled row */
	if (json_is_string(json_array_get(names, (size_t)v)))
		return json_string_value(json_array_get(names, (size_t)v));
	snprintf(buf, len, "%" PRId32, v);
	return buf;
}

/* Every row of one frame's x becomes an item of its own, copied out of the
 * frame so that items outlive it. */
static int frame_items(const ds_container *c, const char *name, size_t frame, ds_item_list *list, ds_error *err)
{
	const ds_tensor *x = ds_container_get(c, "x"), *y = ds_container_get(c, "y");
	json_t *names = NULL, *ids = NULL;
	char shape[96], id[512], number[16];
	int64_t rows, row_elems;
	int rc = 0, tokens;

	if (!x)
		return frame_fail(err, name, frame, "no tensor 'x'", "");
	ds_shape_format(x->ndim, x->shape, shape, sizeof shape);
	tokens = x->dtype == DS_I32 && x->ndim == 2;
	if (!tokens && !(x->dtype == DS_U8 && (x->ndim == 4 || x->ndim == 3)))
		return frame_fail(err, name, frame, "tensor 'x' is not U8 [B, H, W, C] or I32 [B, L]: ", shape);
	if (!tokens && (x->shape[1] > INT32_MAX || x->shape[2] > INT32_MAX ||
			(x->ndim == 4 && (x->shape[3] < 1 || x->shape[3] > 4))))
		return frame_fail(err, name, frame, "tensor 'x' has an image shape out of range: ", shape);
	rows = x->shape[0];
	row_elems = rows ? ds_tensor_numel(x) / rows : 0;
	if (y && (y->dtype != DS_I32 || y->ndim != 1 || y->shape[0] != rows))
		return frame_fail(err, name, frame, "tensor 'y' is not I32 [B] beside 'x' ", shape);
	rc = ds_container_meta_json(c, "ds.labels", &names, err);
	if (!rc)
		rc = ds_container_meta_json(c, "ds.items", &ids, err);
	if (rc) {
		ds_error_prefix(err, "%s: frame %zu", name, frame);
		goto out;
	}
	if ((names && !json_is_array(names)) ||
	    (ids && (!json_is_array(ids) || json_array_size(ids) != (size_t)rows))) {
		rc = frame_fail(err, name, frame, "ds.labels or ds.items is not an array of the batch's size", "");
		goto out;
	}
	for (int64_t r = 0; r < rows; r++) {
		const char *row_id = json_string_value(json_array_get(ids, (size_t)r));
		ds_item *item;
		size_t n = (size_t)row_elems;

		if (!row_id) {
			snprintf(id, sizeof id, "%s#%zu:%" PRId64, name, frame, r);
			row_id = id;
		}
		item = ds_item_new(tokens ? DS_ITEM_TOKENS : DS_ITEM_PIXELS, row_id,
				   row_label(y, names, r, number, sizeof number), err);
		if (!item) {
			rc = DS_ERR_NOMEM;
			goto out;
		}
		if (tokens) {
			const int32_t *ids_row = (const int32_t *)x->data + r * row_elems;

			while (n > 0 && ids_row[n - 1] == -1)
				n--;   /* padding of a short text */
			rc = ds_item_set_data(item, ids_row, n * sizeof *ids_row, err);
			item->len = n;
		} else {
			item->height = (int)x->shape[1];
			item->width = (int)x->shape[2];
			item->channels = x->ndim == 4 ? (int)x->shape[3] : 1;
			rc = ds_item_set_data(item, (const uint8_t *)x->data + r * row_elems, n, err);
		}
		if (rc) {
			ds_item_free(item);
			goto out;
		}
		rc = ds_item_list_push(list, item, err);
		if (rc)
			goto out;
	}
out:
	json_decref(ids);
	json_decref(names);
	return rc;
}

struct ds_dst_reader {
	ds_stream *s;
	const char *name;            /* for messages and item ids */
};

int ds_dst_reader_open(const char *path, ds_dst_reader **out, ds_error *err)
{
	ds_dst_reader *r = ds_calloc(1, sizeof *r, err);
	int rc;

	*out = NULL;
	if (!r)
		return DS_ERR_NOMEM;
	r->name = strcmp(path, "-") == 0 ? "stdin" : path;
	if ((rc = ds_stream_open(path, 0, &r->s, err))) {
		free(r);
		return rc;
	}
	*out = r;
	return 0;
}

int ds_dst_reader_next(ds_dst_reader *r, ds_item_list *list, int *done, ds_error *err)
{
	ds_container *c = NULL;
	int rc;

	*done = 0;
	if ((rc = ds_stream_read(r->s, &c, err)))
		return rc;
	if (!c) {
		*done = 1;
		return 0;
	}
	rc = frame_items(c, r->name, ds_stream_frames(r->s) - 1, list, err);
	ds_container_free(c);
	return rc;
}

void ds_dst_reader_close(ds_dst_reader *r)
{
	if (!r)
		return;
	ds_stream_close(r->s);
	free(r);
}

static int dst_list(const char *path, ds_item_list *list, ds_error *err)
{
	ds_dst_reader *r = NULL;
	int rc, done = 0;

	rc = ds_dst_reader_open(path, &r, err);
	while (!rc && !done)
		rc = ds_dst_reader_next(r, list, &done, err);
	ds_dst_reader_close(r);
	return rc;
}

/* ------------------------------------------------------------------ walks */

static const ds_source_options default_options = { "text", "label", 1, 0 };

typedef struct dir_id {
	dev_t dev;
	ino_t ino;
} dir_id;

typedef struct walk {
	const ds_source_options *opts;
	ds_item_list *list;
	ds_error *err;
	/* The folders from the input down to the one being read: a folder met
	 * again below itself is a loop through a symlink. */
	dir_id *stack;
	size_t depth, cap;
} walk;

/* One file: a multi-item file is expanded, anything else is an item the
 * pipeline reads later. */
static int list_file(const char *path, ds_file_kind kind, const struct stat *st, const char *label,
		     const ds_source_options *opts, ds_item_list *list, ds_error *err)
{
	ds_source_ctx ctx = { path, label, opts };
	ds_item *item;

	switch (kind) {
	case DS_FILE_IDX:
		return ds_idx_list(&ctx, list, err);
	case DS_FILE_JSONL:
		return ds_jsonl_list(&ctx, list, err);
	case DS_FILE_FORTUNE:
		return ds_fortune_list(&ctx, list, err);
	case DS_FILE_DST:
		return dst_list(path, list, err);
	default:
		break;
	}
	if (opts->max_bytes && (uint64_t)st->st_size > opts->max_bytes)
		return ds_item_push_error(list, err, path, path, label, "too_large",
					  "%" PRIu64 " bytes, more than %" PRIu64, (uint64_t)st->st_size,
					  opts->max_bytes);
	item = ds_item_new(DS_ITEM_FILE, path, label, err);
	if (item)
		item->path = ds_strdup(path, err);
	if (!item || !item->path) {
		ds_item_free(item);
		return DS_ERR_NOMEM;
	}
	item->file_bytes = (uint64_t)st->st_size;
	return ds_item_list_push(list, item, err);
}

/* A file inside a walk: its own failure becomes an error item so the walk
 * goes on; running out of memory still ends it. */
static int walk_file(walk *w, const char *path, const char *name, const struct stat *st, const char *label)
{
	ds_error sub = { 0 };
	ds_file_kind kind;
	int rc;

	/* strfile's index beside a fortune file, and IDX label files, which
	 * their image files read. */
	if (ds_name_ends_with(name, ".dat"))
		return 0;
	kind = ds_file_kind_of(path);
	if (kind == DS_FILE_IDX && strstr(name, "labels-idx1"))
		return 0;
	/* Images and texts are read later, where a failure is reported the
	 * same way: no second system call per file here. */
	if (kind != DS_FILE_IMAGE && kind != DS_FILE_TEXT && access(path, R_OK) != 0)
		return ds_item_push_error(w->list, w->err, path, path, label, "unreadable", "%s", strerror(errno));
	rc = list_file(path, kind, st, label, w->opts, w->list, &sub);
	if (rc == DS_ERR_DATA || rc == DS_ERR_IO)
		return ds_item_push_error(w->list, w->err, path, path, label, sub.code, "%s", sub.message);
	if (rc)
		ds_error_set(w->err, sub.status, sub.code, "%s", sub.message);
	return rc;
}

static char *join_path(const char *dir, const char *name, ds_error *err)
{
	size_t n = strlen(dir), m = strlen(name);
	int slash = n > 0 && dir[n - 1] != '/';
	char *p = ds_malloc(n + slash + m + 1, err);

	if (!p)
		return NULL;
	memcpy(p, dir, n);
	if (slash)
		p[n] = '/';
	memcpy(p + n + slash, name, m + 1);
	return p;
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* The visible entries of a folder in bytewise order, so that a listing is the
 * same on every machine and file system.  A folder that cannot be read is an
 * error item and no entries. */
static int read_names(walk *w, const char *dir, const char *label, char ***out, size_t *count)
{
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *e;
	DIR *d;
	int rc = 0;

	*out = NULL;
	*count = 0;
	d = opendir(dir);
	if (!d) {
		if (errno == ENOMEM)
			return ds_error_errno(w->err, errno, dir);
		return ds_item_push_error(w->list, w->err, dir, dir, label, errno == ELOOP ? "symlink_loop" : "unreadable",
					  "%s", strerror(errno));
	}
	for (;;) {
		errno = 0;
		e = readdir(d);
		if (!e)
			break;
		if (e->d_name[0] == '.')
			continue;   /* hidden, and "." and ".." */
		if (n == cap) {
			char **grown;

			cap = cap ? 2 * cap : 64;
			grown = ds_realloc(names, cap * sizeof *names, w->err);
			if (!grown) {
				rc = DS_ERR_NOMEM;
				goto out;
			}
			names = grown;
		}
		names[n] = ds_strdup(e->d_name, w->err);
		if (!names[n]) {
			rc = DS_ERR_NOMEM;
			goto out;
		}
		n++;
	}
	if (errno)
		rc = ds_item_push_error(w->list, w->err, dir, dir, label, "unreadable", "%s", strerror(errno));
	qsort(names, n, sizeof *names, compare_strings);
out:
	closedir(d);
	if (rc) {
		free_names(names, n);
		return rc;
	}
	*out = names;
	*count = n;
	return 0;
}

static int stack_push(walk *w, const struct stat *st)
{
	if (w->depth == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 16;
		dir_id *grown = ds_realloc(w->stack, cap * sizeof *grown, w->err);

		if (!grown)
			return DS_ERR_NOMEM;
		w->stack = grown;
		w->cap = cap;
	}
	w->stack[w->depth].dev = st->st_dev;
	w->stack[w->depth].ino = st->st_ino;
	w->depth++;
	return 0;
}

static int on_stack(const walk *w, const struct stat *st)
{
	for (size_t i = 0; i < w->depth; i++)
		if (w->stack[i].dev == st->st_dev && w->stack[i].ino == st->st_ino)
			return 1;
	return 0;
}

/* label: the class of everything below (the first folder under the input),
 * NULL at the top. */
static int walk_dir(walk *w, const char *dir, const char *label, int top)
{
	char **names = NULL, *path = NULL;
	size_t n = 0;
	int rc;

	rc = read_names(w, dir, label, &names, &n);
	for (size_t i = 0; !rc && i < n; i++) {
		const char *child_label = label;
		struct stat st;

		if (ds_cli_interrupted()) {
			rc = ds_error_set(w->err, DS_ERR_INTERRUPTED, "interrupted", "interrupted");
			break;
		}
		free(path);
		path = join_path(dir, names[i], w->err);
		if (!path) {
			rc = DS_ERR_NOMEM;
			break;
		}
		if (top && w->opts->labels_from_dirs)
			child_label = names[i];
		/* stat, not lstat: symlinks are followed. */
		if (stat(path, &st) != 0) {
			rc = ds_item_push_error(w->list, w->err, path, path, child_label,
						errno == ELOOP ? "symlink_loop" : "unreadable", "%s", strerror(errno));
		} else if (S_ISDIR(st.st_mode)) {
			if (on_stack(w, &st)) {
				rc = ds_item_push_error(w->list, w->err, path, path, child_label, "symlink_loop",
							"leads back to a folder that contains it");
				continue;
			}
			rc = stack_push(w, &st);
			if (!rc)
				rc = walk_dir(w, path, child_label, 0);
			w->depth--;
		} else if (S_ISREG(st.st_mode)) {
			rc = walk_file(w, path, names[i], &st, label);
		} else {
			rc = ds_item_push_error(w->list, w->err, path, path, child_label, "unreadable",
						"not a regular file or folder");
		}
	}
	free(path);
	free_names(names, n);
	return rc;
}

/* A path named on the command line or in a --files-from list. */
static int list_path(const char *input, const ds_source_options *opts, ds_item_list *list, ds_error *err)
{
	walk w = { opts, list, err, NULL, 0, 0 };
	struct stat st;
	int rc;

	if (stat(input, &st) != 0)
		return ds_file_error(err, errno, input);
	if (!S_ISDIR(st.st_mode)) {
		if (access(input, R_OK) != 0)
			return ds_file_error(err, errno, input);
		return list_file(input, ds_file_kind_of(input), &st, NULL, opts, list, err);
	}
	rc = stack_push(&w, &st);
	if (!rc)
		rc = walk_dir(&w, input, NULL, 1);
	free(w.stack);
	return rc;
}

int ds_source_list(const char *input, const ds_source_options *opts, ds_item_list *list, ds_error *err)
{
	if (!opts)
		opts = &default_options;
	if (strcmp(input, "-") == 0)
		return dst_list(input, list, err);
	return list_path(input, opts, list, err);
}

int ds_source_list_files_from(const char *from, const ds_source_options *opts, ds_item_list *list,
			      ds_error *err)
{
	int is_stdin = strcmp(from, "-") == 0, rc = 0;
	FILE *f = is_stdin ? stdin : fopen(from, "re");
	size_t cap = 0;
	char *line = NULL;

	if (!f)
		return ds_file_error(err, errno, from);
	if (!opts)
		opts = &default_options;
	for (;;) {
		ds_error sub = { 0 };
		ssize_t n = getline(&line, &cap, f);

		if (n < 0)
			break;
		/* Only the newline ends a name: anything else may belong to it. */
		if (n > 0 && line[n - 1] == '\n')
			line[--n] = 0;
		if (n == 0)
			continue;
		rc = list_path(line, opts, list, &sub);
		if (rc == DS_ERR_DATA || rc == DS_ERR_IO) {
			rc = ds_item_push_error(list, err, line, line, NULL, sub.code, "%s", sub.message);
		} else if (rc) {
			ds_error_set(err, sub.status, sub.code, "%s", sub.message);
		}
		if (rc)
			break;
	}
	if (!rc && ferror(f))
		rc = ds_file_error(err, errno ? errno : EIO, is_stdin ? "stdin" : from);
	free(line);
	if (!is_stdin)
		fclose(f);
	return rc;
}
