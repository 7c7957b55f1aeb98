/* container.h - what the container files (container.c, container_read.c,
 * stream.c, writer.c) share: reading a document in two steps, so that a pipe
 * can learn from the header how many data bytes to read. */
#ifndef DS_CONTAINER_H
#define DS_CONTAINER_H

#include "internal.h"

/* The 8-byte length prefix of a document. */
#define DS_LENGTH_BYTES 8

/* A parsed and validated header: tensor specs in header order, metadata,
 * and the data length the offsets add up to. */
typedef struct ds_header ds_header;

/* Check the length prefix: at least 2, at most DS_HEADER_MAX, and (when
 * avail is not UINT64_MAX) no more than avail bytes. */
int ds_header_length(const unsigned char prefix[DS_LENGTH_BYTES], uint64_t avail, uint64_t *n,
		     ds_error *err);
int ds_header_parse(const void *text, size_t len, ds_header **out, ds_error *err);
uint64_t ds_header_data_bytes(const ds_header *h);
/* A __metadata__ value of the header, or NULL. */
const char *ds_header_meta(const ds_header *h, const char *key);
/* The error for a data section cut short after avail bytes, naming the first
 * tensor that does not fit. */
int ds_header_truncated(const ds_header *h, uint64_t avail, ds_error *err);
/* Make the container over data (ds_header_data_bytes(h) bytes).  With
 * storage, tensors are views into it where aligned; otherwise copies.
 * Checksums are checked as flags say. */
int ds_header_build(const ds_header *h, const unsigned char *data, ds_storage *storage,
		    unsigned flags, ds_container **out, ds_error *err);
void ds_header_free(ds_header *h);

/* Add without the uniqueness check, for the reader (the header's JSON
 * already rejects duplicate names); takes ownership of t. */
int ds_container_add_owned(ds_container *c, const char *name, ds_tensor *t, ds_error *err);
void ds_container_set_checksum(ds_container *c, size_t i, ds_checksum_state state);

/* Serialize: the padded header text and the order data is laid out in. */
typedef struct ds_layout {
	char *header;          /* JSON padded with spaces; not NUL-terminated past len */
	size_t header_len;
	size_t *order;         /* tensor indices in data order */
	uint64_t data_bytes;
	ds_tensor **host;      /* host copies (or references) of each tensor */
	size_t count;
} ds_layout;

int ds_layout_make(ds_container *c, ds_layout *l, ds_error *err);
void ds_layout_free(ds_layout *l);

#endif
