/* fuzz_container.c - libFuzzer target for the container reader.
 *
 * Each input is read as one container (in every checksum mode) and as a
 * stream, from a mapped file and from a pipe.  Whatever parses must survive
 * a round trip through the writer unchanged.  A seed corpus:
 *   tests/gen_malformed.py corpus/ && tests/fuzz/fuzz_container corpus/
 */
#define _GNU_SOURCE
#include "config.h"
#include "ds.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same(const ds_container *a, const ds_container *b)
{
	if (ds_container_count(a) != ds_container_count(b))
		return 0;
	for (size_t i = 0; i < ds_container_count(a); i++) {
		const ds_tensor *x = ds_container_tensor(a, i), *y = ds_container_tensor(b, i);

		if (strcmp(ds_container_name(a, i), ds_container_name(b, i)) != 0 || x->dtype != y->dtype ||
		    x->ndim != y->ndim || memcmp(x->shape, y->shape, sizeof x->shape[0] * (size_t)x->ndim) != 0 ||
		    (ds_tensor_nbytes(x) && memcmp(x->data, y->data, ds_tensor_nbytes(x)) != 0))
			return 0;
	}
	for (size_t i = 0; i < ds_container_meta_count(a); i++) {
		const char *k = ds_container_meta_key(a, i), *v = ds_container_meta_get(b, k);

		if (strcmp(k, "ds.checksums") != 0 && (!v || strcmp(v, ds_container_meta_get(a, k)) != 0))
			return 0;
	}
	return 1;
}

static void round_trip(ds_container *c)
{
	ds_container *back = NULL;
	ds_error err = { 0 };
	void *buf;
	size_t len;

	if (ds_container_serialize(c, &buf, &len, &err) != 0)
		return;   /* e.g. a header over the limit once rewritten */
	if (ds_container_parse(buf, len, "again", 0, &back, &err) != 0 || !same(c, back)) {
		fprintf(stderr, "round trip failed: %s\n", err.message);
		abort();
	}
	ds_container_free(back);
	free(buf);
}

static void read_stream(const char *path)
{
	ds_stream *s;
	ds_container *c;
	ds_error err = { 0 };

	if (ds_stream_open(path, DS_LOAD_REPORT, &s, &err) != 0)
		return;
	while (ds_stream_read(s, &c, &err) == 0 && c)
		ds_container_free(c);
	ds_stream_close(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned modes[] = { 0, DS_LOAD_NO_VERIFY, DS_LOAD_REPORT };
	char path[64];
	int fd, p[2];

	for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
		ds_container *c = NULL;
		ds_error err = { 0 };

		if (ds_container_parse(data, size, "fuzz", modes[m], &c, &err) == 0) {
			if (m == 0)
				round_trip(c);
			ds_container_free(c);
		} else if (err.status == 0 || !err.code[0]) {
			abort();   /* a failure must say why */
		}
	}

	/* A mapped file. */
	fd = memfd_create("fuzz", MFD_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, data, size) == (ssize_t)size) {
			snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
			read_stream(path);
		}
		close(fd);
	}
	/* A pipe, when the input fits in its buffer. */
	if (size <= 60000 && pipe(p) == 0) {
		if (write(p[1], data, size) == (ssize_t)size) {
			close(p[1]);
			p[1] = -1;
			snprintf(path, sizeof path, "/proc/self/fd/%d", p[0]);
			read_stream(path);
		}
		if (p[1] >= 0)
			close(p[1]);
		close(p[0]);
	}
	return 0;
}
