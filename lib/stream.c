/* stream.c - reading containers one after another from a file or a pipe.
 *
 * A regular file is mapped read-only in one piece and its tensors are views
 * into the mapping, which stays alive until the last of them goes.  Anything
 * else (a pipe, a socket, a terminal) is read one frame at a time: the
 * length, the header, then exactly the data the header announces. */
#include "container.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct ds_stream {
	char *path;
	unsigned flags;
	int fd;                 /* -1 once closed; stdin is not ours to close */
	int own_fd;
	/* Mapped files. */
	ds_storage *map;
	const unsigned char *base;
	uint64_t size;
	/* Both. */
	uint64_t offset;
	size_t frames;
	/* The document being read declares itself something other than a
	 * frame (a model, a foreign safetensors file): its errors need no frame
	 * number when it is the first. */
	int not_frame;
};

struct mapping {
	void *addr;
	size_t len;
};

static void mapping_release(void *ctx)
{
	struct mapping *m = ctx;

	munmap(m->addr, m->len);
	free(m);
}

/* Map what is left of the file from the descriptor's position (stdin may
 * have been read from already).  0 when mapped or empty, 1 when the file
 * cannot be mapped and must be read instead, or an error status (4). */
static int stream_map(ds_stream *s, const struct stat *st, ds_error *err)
{
	struct mapping *m;
	off_t pos = lseek(s->fd, 0, SEEK_CUR);
	void *addr;

	if (pos < 0 || pos > st->st_size)
		pos = 0;
	if (st->st_size == pos || (uint64_t)st->st_size > SIZE_MAX)
		return st->st_size == pos ? 0 : 1;
	addr = mmap(NULL, (size_t)st->st_size, PROT_READ, MAP_PRIVATE, s->fd, 0);
	if (addr == MAP_FAILED)
		return 1;
	m = ds_malloc(sizeof *m, err);
	if (m) {
		m->addr = addr;
		m->len = (size_t)st->st_size;
		s->map = ds_storage_wrap(addr, m->len, mapping_release, m);
	}
	if (!s->map) {
		munmap(addr, (size_t)st->st_size);
		free(m);
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	}
	s->base = (const unsigned char *)addr + pos;
	s->size = (uint64_t)st->st_size - (uint64_t)pos;
	return 0;
}

int ds_stream_open(const char *path, unsigned flags, ds_stream **out, ds_error *err)
{
	ds_stream *s;
	struct stat st;
	int rc = 0, is_stdin = strcmp(path, "-") == 0;

	*out = NULL;
	s = ds_calloc(1, sizeof *s, err);
	if (!s)
		return DS_ERR_NOMEM;
	s->flags = flags;
	s->fd = -1;
	s->path = ds_strdup(is_stdin ? "stdin" : path, err);
	if (!s->path) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	if (is_stdin) {
		s->fd = STDIN_FILENO;
	} else {
		s->fd = open(path, O_RDONLY | O_CLOEXEC);
		if (s->fd < 0) {
			rc = ds_error_errno(err, errno, path);
			goto out;
		}
		s->own_fd = 1;
	}
	if (fstat(s->fd, &st) != 0) {
		rc = ds_error_errno(err, errno, s->path);
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		rc = ds_error_errno(err, EISDIR, s->path);
		goto out;
	}
	if (S_ISREG(st.st_mode)) {
		rc = stream_map(s, &st, err);
		if (rc == 1)
			rc = 0;      /* not mappable: read it like a pipe */
		else if (!rc && !s->map)
			s->base = (const unsigned char *)"";  /* empty: mapped, nothing in it */
	}
out:
	if (rc)
		ds_stream_close(s);
	else
		*out = s;
	return rc;
}

void ds_stream_close(ds_stream *s)
{
	if (!s)
		return;
	if (s->own_fd && s->fd >= 0)
		close(s->fd);
	ds_storage_unref(s->map);
	free(s->path);
	free(s);
}

size_t ds_stream_frames(const ds_stream *s)
{
	return s->frames;
}

uint64_t ds_stream_offset(const ds_stream *s)
{
	return s->offset;
}

const char *ds_stream_path(const ds_stream *s)
{
	return s->path;
}

/* Read up to len bytes; *got < len only at end of input. */
static int read_full(ds_stream *s, void *buf, size_t len, size_t *got, ds_error *err)
{
	unsigned char *p = buf;

	*got = 0;
	while (*got < len) {
		size_t want = len - *got;
		ssize_t n = read(s->fd, p + *got, want > (1u << 30) ? (1u << 30) : want);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return ds_error_errno(err, errno, s->path);
		if (n == 0)
			break;
		*got += (size_t)n;
	}
	s->offset += *got;
	return 0;
}

static int not_frame(const ds_header *h)
{
	const char *format = ds_header_meta(h, "ds.format");

	return !format || strcmp(format, DS_FORMAT_FRAME) != 0;
}

static int next_mapped(ds_stream *s, ds_container **out, ds_error *err)
{
	uint64_t left = s->size - s->offset, n, data;
	const unsigned char *p = s->base + s->offset;
	ds_header *h = NULL;
	int rc;

	if (left == 0)
		return 0;
	if (left < DS_LENGTH_BYTES)
		return ds_error_set(err, DS_ERR_DATA, "truncated",
				    "header length runs past end of file (%" PRIu64 " of 8 bytes present)", left);
	rc = ds_header_length(p, left - DS_LENGTH_BYTES, &n, err);
	if (rc)
		return rc;
	rc = ds_header_parse(p + DS_LENGTH_BYTES, (size_t)n, &h, err);
	if (rc)
		return rc;
	s->not_frame = not_frame(h);
	data = ds_header_data_bytes(h);
	left -= DS_LENGTH_BYTES + n;
	if (data > left) {
		rc = ds_header_truncated(h, left, err);
		goto out;
	}
	rc = ds_header_build(h, p + DS_LENGTH_BYTES + n, s->map, s->flags, out, err);
	if (!rc)
		s->offset += DS_LENGTH_BYTES + n + data;
out:
	ds_header_free(h);
	return rc;
}

static void free_data(void *p)
{
	free(p);
}

/* Data from a pipe.  The buffer grows as bytes arrive instead of trusting the
 * header's total up front, so a short input that claims terabytes is a
 * truncation, not an attempt to allocate them. */
static int read_data(ds_stream *s, const ds_header *h, ds_storage **out, unsigned char **data, ds_error *err)
{
	uint64_t want = ds_header_data_bytes(h);
	size_t cap, have = 0;
	unsigned char *buf = NULL;
	int rc = 0;

	*out = NULL;
	*data = NULL;
	if (want == 0)
		return 0;
	if (want > SIZE_MAX)
		return ds_header_truncated(h, 0, err);
	cap = want < (16u << 20) ? (size_t)want : (16u << 20);
	for (;;) {
		unsigned char *grown = ds_realloc(buf, cap, err);
		size_t got;

		if (!grown) {
			rc = DS_ERR_NOMEM;
			goto out;
		}
		buf = grown;
		rc = read_full(s, buf + have, cap - have, &got, err);
		if (rc)
			goto out;
		have += got;
		if (have < cap) {
			rc = ds_header_truncated(h, have, err);
			goto out;
		}
		if (have == want)
			break;
		cap = want - cap < cap ? (size_t)want : 2 * cap;
	}
	*out = ds_storage_wrap(buf, have, free_data, buf);
	if (!*out)
		rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	else
		*data = buf;
out:
	if (rc)
		free(buf);
	return rc;
}

static int next_read(ds_stream *s, ds_container **out, ds_error *err)
{
	unsigned char prefix[DS_LENGTH_BYTES], *text = NULL, *data;
	ds_storage *storage = NULL;
	ds_header *h = NULL;
	size_t got;
	uint64_t n;
	int rc;

	rc = read_full(s, prefix, sizeof prefix, &got, err);
	if (rc || got == 0)
		return rc;
	if (got < sizeof prefix)
		return ds_error_set(err, DS_ERR_DATA, "truncated",
				    "header length runs past end of file (%zu of 8 bytes present)", got);
	rc = ds_header_length(prefix, UINT64_MAX, &n, err);
	if (rc)
		return rc;
	text = ds_malloc((size_t)n, err);
	if (!text)
		return DS_ERR_NOMEM;
	rc = read_full(s, text, (size_t)n, &got, err);
	if (rc)
		goto out;
	if (got < n) {
		rc = ds_error_set(err, DS_ERR_DATA, "truncated",
				  "header runs past end of file (%" PRIu64 " bytes declared, %zu present)", n, got);
		goto out;
	}
	rc = ds_header_parse(text, (size_t)n, &h, err);
	if (rc)
		goto out;
	s->not_frame = not_frame(h);
	rc = read_data(s, h, &storage, &data, err);
	if (rc)
		goto out;
	rc = ds_header_build(h, data, storage, s->flags, out, err);
out:
	ds_storage_unref(storage);
	ds_header_free(h);
	free(text);
	return rc;
}

static int stream_next(ds_stream *s, ds_container **out, ds_error *err)
{
	*out = NULL;
	s->not_frame = 0;
	return s->base ? next_mapped(s, out, err) : next_read(s, out, err);
}

int ds_stream_read(ds_stream *s, ds_container **out, ds_error *err)
{
	int rc = stream_next(s, out, err);

	/* Read errors already name the file. */
	if (rc) {
		if (err && err->status != DS_ERR_IO) {
			if (s->frames > 0 || !s->not_frame)
				ds_error_prefix(err, "frame %zu", s->frames);
			ds_error_prefix(err, "%s", s->path);
		}
		return rc;
	}
	if (*out)
		s->frames++;
	return 0;
}

int ds_container_load(const char *path, unsigned flags, ds_container **out, ds_error *err)
{
	ds_stream *s = NULL;
	ds_container *c = NULL;
	unsigned char extra;
	size_t got = 0;
	int rc;

	*out = NULL;
	rc = ds_stream_open(path, flags, &s, err);
	if (rc)
		return rc;
	rc = stream_next(s, &c, err);
	if (rc)
		goto out;
	if (!c) {
		rc = ds_error_set(err, DS_ERR_DATA, "empty", "empty file");
		goto out;
	}
	if (s->base)
		got = s->offset < s->size;
	else
		rc = read_full(s, &extra, 1, &got, err);
	if (!rc && got)
		rc = ds_error_set(err, DS_ERR_DATA, "trailing_data",
				  "trailing data after the container at byte %" PRIu64 " (a stream of frames?)",
				  s->offset - (s->base ? 0 : 1));
out:
	if (rc) {
		if (err && err->status != DS_ERR_IO)
			ds_error_prefix(err, "%s", s->path);
		ds_container_free(c);
	} else {
		*out = c;
	}
	ds_stream_close(s);
	return rc;
}

int ds_container_parse(const void *buf, size_t len, const char *where, unsigned flags,
		       ds_container **out, ds_error *err)
{
	const unsigned char *p = buf;
	ds_storage *storage = NULL;
	ds_header *h = NULL;
	unsigned char *copy = NULL;
	uint64_t n, data, left;
	int rc;

	*out = NULL;
	if (len == 0) {
		rc = ds_error_set(err, DS_ERR_DATA, "empty", "empty file");
		goto out;
	}
	if (len < DS_LENGTH_BYTES) {
		rc = ds_error_set(err, DS_ERR_DATA, "truncated",
				  "header length runs past end of file (%zu of 8 bytes present)", len);
		goto out;
	}
	rc = ds_header_length(p, len - DS_LENGTH_BYTES, &n, err);
	if (rc)
		goto out;
	rc = ds_header_parse(p + DS_LENGTH_BYTES, (size_t)n, &h, err);
	if (rc)
		goto out;
	data = ds_header_data_bytes(h);
	left = len - DS_LENGTH_BYTES - n;
	if (data > left) {
		rc = ds_header_truncated(h, left, err);
		goto out;
	}
	if (data < left) {
		rc = ds_error_set(err, DS_ERR_DATA, "trailing_data",
				  "trailing data after the container at byte %" PRIu64 " (a stream of frames?)",
				  DS_LENGTH_BYTES + n + data);
		goto out;
	}
	/* The copy is aligned, so tensors can be views into it as into a file. */
	if (data) {
		copy = ds_aligned_alloc((size_t)data, err);
		if (!copy) {
			rc = DS_ERR_NOMEM;
			goto out;
		}
		memcpy(copy, p + DS_LENGTH_BYTES + n, (size_t)data);
		storage = ds_storage_host(copy, (size_t)data);
		if (!storage) {
			ds_aligned_free(copy);
			rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
			goto out;
		}
	}
	rc = ds_header_build(h, copy, storage, flags, out, err);
out:
	if (rc && where)
		ds_error_prefix(err, "%s", where);
	ds_storage_unref(storage);
	ds_header_free(h);
	return rc;
}
