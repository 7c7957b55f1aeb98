/* container_read.c - reading one safetensors document, trusting nothing.
 *
 * A document is an 8-byte little-endian length N, N bytes of JSON header and
 * the data.  The header is parsed and checked first (ds_header_parse), which
 * tells a pipe reader how many data bytes follow; then the tensors are made
 * over the data (ds_header_build).  Every failure is status 3 with a stable
 * code; the caller puts the file and frame in front of the message. */
#include "container.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

struct spec {
	const char *name;       /* borrowed from the header's JSON */
	ds_dtype dtype;
	int ndim;
	int64_t shape[DS_MAX_DIMS];
	uint64_t begin, end;
};

struct ds_header {
	json_t *root;
	json_t *metadata;       /* borrowed from root, or NULL */
	struct spec *specs;     /* in header order */
	size_t count;
	size_t *order;          /* spec indices in data order */
	uint64_t data_bytes;
};

int ds_header_length(const unsigned char prefix[DS_LENGTH_BYTES], uint64_t avail, uint64_t *n,
		     ds_error *err)
{
	uint64_t v = 0;

	for (int i = DS_LENGTH_BYTES - 1; i >= 0; i--)
		v = v << 8 | prefix[i];
	*n = v;
	if (v < 2)
		return ds_error_set(err, DS_ERR_DATA, "bad_header", "header length %" PRIu64 " is too small", v);
	if (v > DS_HEADER_MAX)
		return ds_error_set(err, DS_ERR_DATA, "header_too_large",
				    "header length %" PRIu64 " is over the limit of %u bytes", v, DS_HEADER_MAX);
	if (avail != UINT64_MAX && v > avail)
		return ds_error_set(err, DS_ERR_DATA, "truncated",
				    "header runs past end of file (%" PRIu64 " bytes declared, %" PRIu64 " present)",
				    v, avail);
	return 0;
}

void ds_header_free(ds_header *h)
{
	if (!h)
		return;
	json_decref(h->root);
	free(h->specs);
	free(h->order);
	free(h);
}

uint64_t ds_header_data_bytes(const ds_header *h)
{
	return h->data_bytes;
}

const char *ds_header_meta(const ds_header *h, const char *key)
{
	return h->metadata ? json_string_value(json_object_get(h->metadata, key)) : NULL;
}

static int parse_metadata(json_t *meta, ds_error *err)
{
	const char *key;
	json_t *value;

	if (!json_is_object(meta))
		return ds_error_set(err, DS_ERR_DATA, "bad_metadata", "__metadata__ is not an object");
	json_object_foreach(meta, key, value) {
		if (!json_is_string(value))
			return ds_error_set(err, DS_ERR_DATA, "bad_metadata",
					    "__metadata__: value of '%s' is not a string", key);
	}
	return 0;
}

static int parse_spec(const char *name, json_t *obj, struct spec *s, ds_error *err)
{
	json_t *dtype, *shape, *offsets, *v;
	uint64_t bytes, off[2];
	char text[256];
	size_t i;

	s->name = name;
	if (!json_is_object(obj))
		return ds_error_set(err, DS_ERR_DATA, "bad_header", "tensor '%s': entry is not an object", name);

	dtype = json_object_get(obj, "dtype");
	if (!json_is_string(dtype))
		return ds_error_set(err, DS_ERR_DATA, "bad_dtype", "tensor '%s': dtype missing or not a string", name);
	if (ds_dtype_parse(json_string_value(dtype), &s->dtype) != 0)
		return ds_error_set(err, DS_ERR_DATA, "bad_dtype", "tensor '%s': unknown dtype '%.32s'",
				    name, json_string_value(dtype));

	shape = json_object_get(obj, "shape");
	if (!json_is_array(shape))
		return ds_error_set(err, DS_ERR_DATA, "bad_shape", "tensor '%s': shape missing or not an array", name);
	if (json_array_size(shape) > DS_MAX_DIMS)
		return ds_error_set(err, DS_ERR_DATA, "bad_shape", "tensor '%s': %zu dimensions, at most %d allowed",
				    name, json_array_size(shape), DS_MAX_DIMS);
	s->ndim = (int)json_array_size(shape);
	json_array_foreach(shape, i, v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return ds_error_set(err, DS_ERR_DATA, "bad_shape",
					    "tensor '%s': dimension %zu is not a non-negative integer", name, i);
		s->shape[i] = json_integer_value(v);
	}
	if (ds_shape_bytes(s->dtype, s->ndim, s->shape, &bytes) != 0)
		return ds_error_set(err, DS_ERR_DATA, "shape_overflow", "tensor '%s': shape %s of %s is too large",
				    name, ds_shape_format(s->ndim, s->shape, text, sizeof text),
				    ds_dtype_name(s->dtype));

	offsets = json_object_get(obj, "data_offsets");
	if (!json_is_array(offsets) || json_array_size(offsets) != 2)
		return ds_error_set(err, DS_ERR_DATA, "bad_offsets",
				    "tensor '%s': data_offsets missing or not a [begin, end] pair", name);
	for (i = 0; i < 2; i++) {
		v = json_array_get(offsets, i);
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return ds_error_set(err, DS_ERR_DATA, "bad_offsets",
					    "tensor '%s': data_offsets hold a value that is not a non-negative integer",
					    name);
		off[i] = (uint64_t)json_integer_value(v);
	}
	s->begin = off[0];
	s->end = off[1];
	if (s->begin > s->end)
		return ds_error_set(err, DS_ERR_DATA, "bad_offsets",
				    "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin",
				    name, s->begin, s->end);
	if (s->end - s->begin != bytes)
		return ds_error_set(err, DS_ERR_DATA, "size_mismatch",
				    "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
				    " bytes but shape %s of %s needs %" PRIu64,
				    name, s->begin, s->end, s->end - s->begin,
				    ds_shape_format(s->ndim, s->shape, text, sizeof text), ds_dtype_name(s->dtype), bytes);
	return 0;
}

struct span {
	uint64_t begin, end;
	size_t index;
};

/* By begin, then end (empty tensors first), then header order: stable. */
static int span_cmp(const void *a, const void *b)
{
	const struct span *x = a, *y = b;

	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

/* The regions must tile [0, data_bytes) exactly: sorted by begin, each starts
 * where the one before it ended. */
static int check_layout(ds_header *h, ds_error *err)
{
	struct span *spans;
	uint64_t expect = 0;
	size_t prev = 0;
	int rc = 0;

	h->order = ds_calloc(h->count, sizeof *h->order, err);
	spans = ds_calloc(h->count, sizeof *spans, err);
	if (!h->order || !spans) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < h->count; i++)
		spans[i] = (struct span){ h->specs[i].begin, h->specs[i].end, i };
	qsort(spans, h->count, sizeof *spans, span_cmp);
	for (size_t k = 0; k < h->count; k++) {
		const struct spec *s = &h->specs[spans[k].index];

		if (s->begin > expect) {
			if (k == 0)
				rc = ds_error_set(err, DS_ERR_DATA, "gap",
						  "tensor '%s': data starts at byte %" PRIu64 ", not 0", s->name, s->begin);
			else
				rc = ds_error_set(err, DS_ERR_DATA, "gap",
						  "tensor '%s': data starts at byte %" PRIu64 " but tensor '%s' ends at %"
						  PRIu64, s->name, s->begin, h->specs[prev].name, expect);
			goto out;
		}
		if (s->begin < expect) {
			rc = ds_error_set(err, DS_ERR_DATA, "overlap",
					  "tensor '%s': data [%" PRIu64 ", %" PRIu64 "] overlaps tensor '%s' [%" PRIu64
					  ", %" PRIu64 "]", s->name, s->begin, s->end, h->specs[prev].name,
					  h->specs[prev].begin, h->specs[prev].end);
			goto out;
		}
		expect = s->end;
		prev = spans[k].index;
		h->order[k] = spans[k].index;
	}
	h->data_bytes = expect;
out:
	free(spans);
	return rc;
}

int ds_header_parse(const void *text, size_t len, ds_header **out, ds_error *err)
{
	ds_header *h;
	json_error_t jerr;
	const char *key;
	json_t *value;
	int rc = 0;

	*out = NULL;
	h = ds_calloc(1, sizeof *h, err);
	if (!h)
		return DS_ERR_NOMEM;
	h->root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!h->root) {
		if (json_error_code(&jerr) == json_error_duplicate_key)
			rc = ds_error_set(err, DS_ERR_DATA, "duplicate_key", "header: %s", jerr.text);
		else if (json_error_code(&jerr) == json_error_out_of_memory)
			rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory reading the header");
		else
			rc = ds_error_set(err, DS_ERR_DATA, "bad_json", "header is not valid JSON: %s at byte %d",
					  jerr.text, jerr.position);
		goto out;
	}
	if (!json_is_object(h->root)) {
		rc = ds_error_set(err, DS_ERR_DATA, "bad_header", "header is not a JSON object");
		goto out;
	}
	h->specs = ds_calloc(json_object_size(h->root), sizeof *h->specs, err);
	if (!h->specs) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	json_object_foreach(h->root, key, value) {
		if (strcmp(key, "__metadata__") == 0) {
			rc = parse_metadata(value, err);
			h->metadata = value;
		} else {
			rc = parse_spec(key, value, &h->specs[h->count++], err);
		}
		if (rc)
			goto out;
	}
	rc = check_layout(h, err);
out:
	if (rc)
		ds_header_free(h);
	else
		*out = h;
	return rc;
}

int ds_header_truncated(const ds_header *h, uint64_t avail, ds_error *err)
{
	for (size_t k = 0; k < h->count; k++) {
		const struct spec *s = &h->specs[h->order[k]];

		if (s->end > avail)
			return ds_error_set(err, DS_ERR_DATA, "truncated",
					    "tensor '%s': data runs past end of file (%" PRIu64 " of %" PRIu64
					    " data bytes present)", s->name, avail, h->data_bytes);
	}
	return ds_error_set(err, DS_ERR_DATA, "truncated", "data runs past end of file");
}

static int is_crc_text(const char *s)
{
	for (int i = 0; i < 8; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return s[8] == 0;
}

/* ds.checksums: {"name": "8 lowercase hex digits"} for tensors of this
 * document.  Malformed is status 3 unless checks are off. */
static int check_sums(const ds_header *h, ds_container *c, const unsigned char *data, unsigned flags,
		      ds_error *err)
{
	const char *text = ds_container_meta_get(c, "ds.checksums");
	int verify = !(flags & DS_LOAD_NO_VERIFY);
	json_t *sums = NULL, *v;
	json_error_t jerr;
	const char *key;
	int rc = 0;

	if (!text)
		return 0;
	sums = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(sums)) {
		if (verify)
			rc = ds_error_set(err, DS_ERR_DATA, "bad_checksums",
					  "metadata 'ds.checksums' is not a JSON object");
		goto out;
	}
	if (verify) {
		json_object_foreach(sums, key, v) {
			json_t *entry = json_object_get(h->root, key);

			if (!entry || strcmp(key, "__metadata__") == 0) {
				rc = ds_error_set(err, DS_ERR_DATA, "bad_checksums",
						  "metadata 'ds.checksums' names tensor '%s', which is not in the file", key);
				goto out;
			}
			if (!json_is_string(v) || !is_crc_text(json_string_value(v))) {
				rc = ds_error_set(err, DS_ERR_DATA, "bad_checksums",
						  "metadata 'ds.checksums': value for '%s' is not 8 lowercase hex digits",
						  key);
				goto out;
			}
		}
	}
	for (size_t i = 0; i < h->count; i++) {
		const struct spec *s = &h->specs[i];
		uint32_t stored, got;

		v = json_object_get(sums, s->name);
		if (!v)
			continue;
		if (!verify) {
			ds_container_set_checksum(c, i, DS_CHECKSUM_UNCHECKED);
			continue;
		}
		stored = (uint32_t)strtoul(json_string_value(v), NULL, 16);
		got = ds_crc32c(0, data ? data + s->begin : NULL, s->end - s->begin);
		if (got == stored) {
			ds_container_set_checksum(c, i, DS_CHECKSUM_OK);
		} else if (flags & DS_LOAD_REPORT) {
			ds_container_set_checksum(c, i, DS_CHECKSUM_MISMATCH);
		} else {
			rc = ds_error_set(err, DS_ERR_DATA, "checksum_mismatch",
					  "tensor '%s': checksum mismatch (stored %08" PRIx32 ", computed %08" PRIx32 ")",
					  s->name, stored, got);
			goto out;
		}
	}
out:
	json_decref(sums);
	return rc;
}

/* A view into storage when the bytes sit at an address the element type can
 * be loaded from; a copy otherwise (and for empty tensors, which have no
 * address in the data). */
static ds_tensor *make_tensor(const struct spec *s, const unsigned char *data, ds_storage *storage,
			      ds_error *err)
{
	size_t bytes = (size_t)(s->end - s->begin);
	const unsigned char *p = bytes ? data + s->begin : NULL;
	ds_tensor *t;

	if (storage && p && (uintptr_t)p % ds_dtype_size(s->dtype) == 0)
		return ds_tensor_view(s->dtype, s->ndim, s->shape, (void *)p, DS_CPU, storage, err);
	t = ds_tensor_new(s->dtype, s->ndim, s->shape, DS_CPU, err);
	if (t && bytes)
		memcpy(t->data, p, bytes);
	return t;
}

int ds_header_build(const ds_header *h, const unsigned char *data, ds_storage *storage,
		    unsigned flags, ds_container **out, ds_error *err)
{
	ds_container *c;
	const char *key;
	json_t *value;
	int rc = 0;

	*out = NULL;
	c = ds_container_new();
	if (!c)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	if (h->metadata) {
		json_object_foreach(h->metadata, key, value) {
			rc = ds_container_meta_set(c, key, json_string_value(value), err);
			if (rc)
				goto out;
		}
	}
	for (size_t i = 0; i < h->count; i++) {
		ds_tensor *t = make_tensor(&h->specs[i], data, storage, err);

		if (!t) {
			rc = err && err->status ? err->status : DS_ERR_NOMEM;
			ds_error_prefix(err, "tensor '%s'", h->specs[i].name);
			goto out;
		}
		rc = ds_container_add_owned(c, h->specs[i].name, t, err);
		if (rc) {
			ds_tensor_unref(t);
			goto out;
		}
	}
	rc = check_sums(h, c, data, flags, err);
out:
	if (rc)
		ds_container_free(c);
	else
		*out = c;
	return rc;
}
