/* source.h - what the data-source files (source.c, idx.c, textsrc.c, file.c)
 * share: item construction and the readers of multi-item files. */
#ifndef DS_SOURCE_H
#define DS_SOURCE_H

#include "internal.h"

/* Where a multi-item file sits in a listing: the name its item ids start
 * with and the label its folder gives (NULL when none). */
typedef struct ds_source_ctx {
	const char *path;            /* the file to open */
	const char *dir_label;       /* class folder's name, or NULL */
	const ds_source_options *opts;
} ds_source_ctx;

/* A new item of a kind with its id (copied) and label (copied, may be NULL);
 * NULL and status 4 on failure. */
ds_item *ds_item_new(ds_item_kind kind, const char *id, const char *label, ds_error *err);
/* Append an item that records why something could not be listed or read;
 * path and label may be NULL.  A status only when memory runs out. */
int ds_item_push_error(ds_item_list *list, ds_error *err, const char *id, const char *path, const char *label,
		       const char *code, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
/* Take len bytes from data as the item's payload (copied, NUL-terminated). */
int ds_item_set_data(ds_item *item, const void *data, size_t len, ds_error *err);

/* Status 5 and code "unreadable" for a failed open or read, naming path
 * (status 4 for ENOMEM). */
int ds_file_error(ds_error *err, int errnum, const char *path);

/* The last component of a path ("a/b.txt" -> "b.txt"). */
const char *ds_path_base(const char *path);
/* 1 when name ends in suffix, ASCII letters compared without case. */
int ds_name_ends_with(const char *name, const char *suffix);
/* Make a label or item id usable as one file name, in place: '/', '#', ':'
 * and newlines become '_' (ds-clean --output-dir names class folders so;
 * ds-infer matches such folders back to the model's labels). */
void ds_file_safe_name(char *s);

/* The readers behind ds_source_list; each appends to list and returns a
 * status only when the file as a whole cannot be read. */
int ds_idx_list(const ds_source_ctx *ctx, ds_item_list *list, ds_error *err);
int ds_jsonl_list(const ds_source_ctx *ctx, ds_item_list *list, ds_error *err);
int ds_fortune_list(const ds_source_ctx *ctx, ds_item_list *list, ds_error *err);

/* A packed stream (.dst file or "-") read frame by frame: each call of
 * ds_dst_reader_next appends the items of one frame, so a long stream or a
 * pipe is never held whole; *done is set at its end.  A frame that cannot
 * be read is status 3 or 5 naming the stream and the frame. */
typedef struct ds_dst_reader ds_dst_reader;
int ds_dst_reader_open(const char *path, ds_dst_reader **out, ds_error *err);
int ds_dst_reader_next(ds_dst_reader *r, ds_item_list *list, int *done, ds_error *err);
void ds_dst_reader_close(ds_dst_reader *r);

/* 1 when buf looks like a fortune file: text with a line that is "%". */
int ds_fortune_sniff(const char *buf, size_t len);

#endif
