/* test_container.c - the container formats: round trips, checksums, every
 * malformed header the reader must refuse, atomic writers, and streams read
 * from a mapped file and from a pipe. */
#define _GNU_SOURCE   /* posix_openpt for the terminal test */
#include "config.h"
#include "ds.h"
#include "tap.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[256];

static ds_tensor *filled(ds_dtype dtype, int ndim, const int64_t *shape, unsigned seed)
{
	ds_tensor *t = ds_tensor_new(dtype, ndim, shape, DS_CPU, NULL);
	unsigned char *p = t->data;

	for (size_t i = 0; i < ds_tensor_nbytes(t); i++)
		p[i] = (unsigned char)(seed * 31 + i * 7);
	return t;
}

static void add(ds_container *c, const char *name, ds_tensor *t)
{
	ds_container_add(c, name, t, NULL);
	ds_tensor_unref(t);
}

/* One of every dtype, a scalar and an empty tensor, with metadata. */
static ds_container *sample(unsigned seed)
{
	ds_container *c = ds_container_new();
	int64_t s3[] = { 3 }, s23[] = { 2, 3 }, s0[] = { 0, 5 }, s4[] = { 1, 2, 2, 1 };

	add(c, "u8", filled(DS_U8, 1, s3, seed));
	add(c, "f32", filled(DS_F32, 2, s23, seed + 1));
	add(c, "i8", filled(DS_I8, 4, s4, seed + 2));
	add(c, "f16", filled(DS_F16, 1, s3, seed + 3));
	add(c, "i64", filled(DS_I64, 2, s23, seed + 4));
	add(c, "scalar", filled(DS_F32, 0, NULL, seed + 5));
	add(c, "empty", filled(DS_I32, 2, s0, seed + 6));
	add(c, "bf16", filled(DS_BF16, 1, s3, seed + 7));
	add(c, "i32", filled(DS_I32, 1, s3, seed + 8));
	ds_container_meta_set(c, "ds.format", DS_FORMAT_MODEL, NULL);
	ds_container_meta_set(c, "ds.labels", "[\"a\",\"b\"]", NULL);
	return c;
}

static int same_tensor(const ds_tensor *a, const ds_tensor *b)
{
	if (a->dtype != b->dtype || a->ndim != b->ndim)
		return 0;
	for (int i = 0; i < a->ndim; i++)
		if (a->shape[i] != b->shape[i])
			return 0;
	return ds_tensor_nbytes(a) == 0 || memcmp(a->data, b->data, ds_tensor_nbytes(a)) == 0;
}

static int same_container(const ds_container *a, const ds_container *b)
{
	if (ds_container_count(a) != ds_container_count(b))
		return 0;
	for (size_t i = 0; i < ds_container_count(a); i++)
		if (strcmp(ds_container_name(a, i), ds_container_name(b, i)) != 0 ||
		    !same_tensor(ds_container_tensor(a, i), ds_container_tensor(b, i)))
			return 0;
	for (size_t i = 0; i < ds_container_meta_count(a); i++) {
		const char *k = ds_container_meta_key(a, i), *v = ds_container_meta_get(b, k);

		if (!v || strcmp(v, ds_container_meta_get(a, k)) != 0)
			return 0;
	}
	return ds_container_meta_count(a) == ds_container_meta_count(b);
}

static void test_round_trip(void)
{
	ds_container *c = sample(1), *back = NULL;
	ds_error err = { 0 };
	void *buf;
	size_t len;
	uint64_t n = 0;
	int all_ok = 1;

	is_int(ds_container_serialize(c, &buf, &len, &err), 0, "serialize");
	for (int i = 7; i >= 0; i--)
		n = n << 8 | ((unsigned char *)buf)[i];
	is_int((8 + n) % 64, 0, "data starts at a multiple of 64");
	ok(ds_container_meta_get(c, "ds.checksums") != NULL, "serialize sets ds.checksums");
	is_int(ds_container_parse(buf, len, "mem", 0, &back, &err), 0, "parse what was serialized: %s", err.message);
	ok(back && same_container(c, back), "names, order, dtypes, shapes, bytes and metadata survive");
	for (size_t i = 0; back && i < ds_container_count(back); i++) {
		const ds_tensor *t = ds_container_tensor(back, i);

		if (ds_container_checksum(back, i) != DS_CHECKSUM_OK ||
		    (uintptr_t)t->data % ds_dtype_size(t->dtype) != 0)
			all_ok = 0;
	}
	ok(all_ok, "every checksum verified and every tensor aligned");
	ok(back && ds_container_get(back, "scalar")->ndim == 0, "0-dim tensor keeps 0 dims");
	ok(back && ds_tensor_nbytes(ds_container_get(back, "empty")) == 0, "empty tensor keeps 0 bytes");
	ds_container_free(back);
	free(buf);

	/* Again, with a tensor removed and metadata replaced. */
	is_int(ds_container_remove(c, "f16"), 0, "remove a tensor");
	is_int(ds_container_remove(c, "f16"), -1, "remove it twice");
	ds_container_meta_set(c, "ds.labels", "[]", NULL);
	ds_container_serialize(c, &buf, &len, NULL);
	is_int(ds_container_parse(buf, len, "mem", 0, &back, &err), 0, "parse after remove");
	ok(back && same_container(c, back), "round trip after remove and metadata change");
	ds_container_free(back);
	free(buf);
	ds_container_free(c);

	c = ds_container_new();
	ds_container_serialize(c, &buf, &len, NULL);
	is_int(ds_container_parse(buf, len, "mem", 0, &back, &err), 0, "a container with no tensors");
	ok(back && ds_container_count(back) == 0, "no tensors read back");
	ds_container_free(back);
	free(buf);
	ds_container_free(c);
}

static void test_api(void)
{
	ds_container *c = ds_container_new();
	ds_tensor *t = ds_tensor_new(DS_F32, 0, NULL, DS_CPU, NULL);
	ds_error err = { 0 };
	json_t *j = NULL;

	is_int(ds_container_add(c, "a", t, &err), 0, "add");
	is_int(ds_container_add(c, "a", t, &err), DS_ERR_DATA, "names are unique");
	ds_error_clear(&err);
	is_int(ds_container_add(c, "__metadata__", t, &err), DS_ERR_DATA, "__metadata__ is not a tensor name");
	ds_error_clear(&err);
	is_int(ds_container_add(c, "bad\xff", t, &err), DS_ERR_DATA, "names must be UTF-8");
	ok(ds_container_get(c, "a") == t && ds_container_get(c, "b") == NULL, "get");
	is_int(ds_container_checksum(c, 0), DS_CHECKSUM_ABSENT, "new tensors have no checksum");
	ds_tensor_unref(t);

	ds_error_clear(&err);
	ds_container_meta_set(c, "k", "{\"x\": [1, 2]}", NULL);
	is_int(ds_container_meta_json(c, "k", &j, &err), 0, "meta_json parses");
	ok(json_is_object(j) && json_array_size(json_object_get(j, "x")) == 2, "meta_json value");
	is_int(ds_container_meta_set_json(c, "k2", j, &err), 0, "meta_set_json");
	is_str(ds_container_meta_get(c, "k2"), "{\"x\":[1,2]}", "meta_set_json writes compact JSON");
	json_decref(j);
	is_int(ds_container_meta_json(c, "absent", &j, &err), 0, "absent key is not an error");
	ok(j == NULL, "absent key gives NULL");
	ds_container_meta_set(c, "k", "{nope", NULL);
	is_int(ds_container_meta_json(c, "k", &j, &err), DS_ERR_DATA, "invalid JSON metadata is status 3");
	is_str(err.code, "bad_metadata", "code bad_metadata");
	ds_container_free(c);
}

static void test_history(void)
{
	ds_container *c = ds_container_new();
	char *argv[] = { "ds-train", "--epochs", "2" };
	ds_error err = { 0 };
	json_t *h = NULL, *figs = json_pack("{s:f}", "accuracy", 0.5), *e;
	const char *date;

	is_int(ds_container_history_append(c, "ds-train", 3, argv, figs, &err), 0, "append to no history");
	is_int(ds_container_history_append(c, "ds-prune", 1, argv, NULL, &err), 0, "append again");
	ds_container_meta_json(c, "ds.history", &h, &err);
	is_int(json_array_size(h), 2, "two entries");
	e = json_array_get(h, 0);
	is_str(json_string_value(json_object_get(e, "tool")), "ds-train", "tool");
	is_str(json_string_value(json_object_get(e, "version")), ds_version(), "version");
	is_int(json_array_size(json_object_get(e, "args")), 3, "args");
	is_str(json_string_value(json_array_get(json_object_get(e, "args"), 2)), "2", "args in order");
	ok(json_real_value(json_object_get(json_object_get(e, "figures"), "accuracy")) == 0.5, "figures");
	date = json_string_value(json_object_get(e, "date"));
	ok(date && strlen(date) == 20 && date[4] == '-' && date[10] == 'T' && date[19] == 'Z', "date %s", date);
	is_str(json_string_value(json_object_get(json_array_get(h, 1), "tool")), "ds-prune", "second entry last");
	json_decref(h);
	json_decref(figs);

	ds_container_meta_set(c, "ds.history", "{}", NULL);
	is_int(ds_container_history_append(c, "x", 0, NULL, NULL, &err), DS_ERR_DATA,
	       "history that is not an array is status 3");
	ds_container_free(c);
}

static void test_checksums(void)
{
	ds_container *c = sample(2), *back = NULL;
	ds_error err = { 0 };
	unsigned char *buf;
	size_t len, i;
	int ok_others = 1;

	ds_container_serialize(c, (void **)&buf, &len, NULL);
	buf[len - 1] ^= 0x40;   /* the last byte of the data: an I8 or U8 tensor */
	is_int(ds_container_parse(buf, len, "m.dsm", 0, &back, &err), DS_ERR_DATA, "a flipped bit is status 3");
	is_str(err.code, "checksum_mismatch", "code checksum_mismatch");
	ok(strncmp(err.message, "m.dsm: tensor '", 15) == 0 && strstr(err.message, "checksum mismatch"),
	   "message names file and tensor: %s", err.message);

	ds_error_clear(&err);
	is_int(ds_container_parse(buf, len, "m.dsm", DS_LOAD_NO_VERIFY, &back, &err), 0, "--no-verify loads it");
	for (i = 0; back && i < ds_container_count(back); i++)
		if (ds_container_checksum(back, i) != DS_CHECKSUM_UNCHECKED)
			ok_others = 0;
	ok(ok_others, "every tensor UNCHECKED under NO_VERIFY");
	ds_container_free(back);

	is_int(ds_container_parse(buf, len, "m.dsm", DS_LOAD_REPORT, &back, &err), 0, "REPORT loads it");
	{
		int bad = 0;

		for (i = 0; back && i < ds_container_count(back); i++) {
			ds_checksum_state s = ds_container_checksum(back, i);

			bad += s == DS_CHECKSUM_MISMATCH;
			if (s != DS_CHECKSUM_MISMATCH && s != DS_CHECKSUM_OK)
				ok_others = 0;
		}
		is_int(bad, 1, "REPORT marks exactly one tensor MISMATCH");
		ok(ok_others, "and the others OK");
	}
	ds_container_free(back);
	free(buf);
	ds_container_free(c);
}

/* A document from header text and data bytes, unpadded. */
static size_t doc(unsigned char *out, const char *header, const void *data, size_t data_len)
{
	size_t n = strlen(header);

	for (int i = 0; i < 8; i++)
		out[i] = (unsigned char)((uint64_t)n >> (8 * i));
	memcpy(out + 8, header, n);
	if (data_len)
		memcpy(out + 8 + n, data, data_len);
	return 8 + n + data_len;
}

static void expect_bad(const unsigned char *buf, size_t len, const char *code, const char *in_message,
		       const char *what)
{
	ds_container *c = NULL;
	ds_error err = { 0 };
	int rc = ds_container_parse(buf, len, "bad.dsm", 0, &c, &err);

	if (!(is_int(rc, DS_ERR_DATA, "%s: status 3", what) &&
	      ok(strcmp(err.code, code) == 0, "%s: code %s (got %s)", what, code, err.code) &&
	      ok(strncmp(err.message, "bad.dsm: ", 9) == 0 && (!in_message || strstr(err.message, in_message)),
		 "%s: message '%s'", what, err.message)))
		diag("message: %s", err.message);
	ok(c == NULL, "%s: no container", what);
	ds_container_free(c);
}

static void test_malformed(void)
{
	static unsigned char buf[4096];
	unsigned char data[64] = { 0 };
	size_t len;
	char big[600];

	const struct {
		const char *header;
		size_t data_len;
		const char *code, *in_message, *what;
	} cases[] = {
		{ "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "bad_dtype", "tensor 'a': unknown dtype 'F64'", "unknown dtype" },
		{ "{\"a\":{\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "bad_dtype", "tensor 'a'", "missing dtype" },
		{ "{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1, "bad_shape", "tensor 'a'", "negative dim" },
		{ "{\"a\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,1]}}", 1, "bad_shape", "tensor 'a'", "real dim" },
		{ "{\"a\":{\"dtype\":\"U8\",\"shape\":\"1\",\"data_offsets\":[0,1]}}", 1, "bad_shape", "tensor 'a'", "shape not array" },
		{ "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1, "bad_shape", "9 dimensions", "nine dims" },
		{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0, "shape_overflow", "tensor 'a'", "shape product overflow" },
		{ "{\"a\":{\"dtype\":\"I64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,0]}}", 0, "shape_overflow", "tensor 'a'", "bytes overflow" },
		{ "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,1]}}", 2, "bad_offsets", "tensor 'a'", "begin after end" },
		{ "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1, "bad_offsets", "tensor 'a'", "one offset" },
		{ "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 1, "bad_offsets", "tensor 'a'", "negative offset" },
		{ "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[18446744073709551615,0]}}", 1, "bad_json", NULL, "offset past int64" },
		{ "{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, "bad_offsets", "tensor 'a'", "no offsets" },
		{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "size_mismatch", "tensor 'a'", "size mismatch" },
		{ "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", 6, "overlap", "tensor 'b'", "overlap" },
		{ "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, "overlap", "tensor 'b'", "same region twice" },
		{ "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[5,9]}}", 9, "gap", "tensor 'b'", "gap" },
		{ "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 8, "gap", "tensor 'a': data starts at byte 4, not 0", "gap at start" },
		{ "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 3, "truncated", "tensor 'a': data runs past end of file", "data cut short" },
		{ "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 5, "trailing_data", NULL, "trailing data" },
		{ "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}", 4, "bad_json", NULL, "invalid JSON" },
		{ "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}xx", 4, "bad_json", NULL, "junk after the header" },
		{ "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, "duplicate_key", NULL, "duplicate tensor" },
		{ "[1, 2]", 0, "bad_header", NULL, "header is an array" },
		{ "{\"a\":7}", 0, "bad_header", "tensor 'a'", "tensor entry not an object" },
		{ "{\"__metadata__\":{\"k\":1}}", 0, "bad_metadata", "'k'", "metadata value not a string" },
		{ "{\"__metadata__\":[]}", 0, "bad_metadata", NULL, "metadata not an object" },
		{ "{\"__metadata__\":{\"ds.checksums\":\"[\"}}", 0, "bad_checksums", NULL, "ds.checksums not JSON" },
		{ "{\"__metadata__\":{\"ds.checksums\":\"{\\\"a\\\":\\\"ABCDEF00\\\"}\"},\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "bad_checksums", "'a'", "ds.checksums uppercase" },
		{ "{\"__metadata__\":{\"ds.checksums\":\"{\\\"a\\\":5}\"},\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "bad_checksums", "'a'", "ds.checksums number" },
		{ "{\"__metadata__\":{\"ds.checksums\":\"{\\\"zz\\\":\\\"00000000\\\"}\"}}", 0, "bad_checksums", "'zz'", "ds.checksums names a missing tensor" },
		{ "{\"__metadata__\":{\"ds.checksums\":\"{\\\"a\\\":\\\"00000000\\\"}\"},\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "checksum_mismatch", "tensor 'a': checksum mismatch", "checksum mismatch" },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		len = doc(buf, cases[i].header, data, cases[i].data_len);
		expect_bad(buf, len, cases[i].code, cases[i].in_message, cases[i].what);
	}

	/* Header lengths. */
	len = doc(buf, "{}", NULL, 0);
	expect_bad(buf, 0, "empty", "empty file", "empty input");
	expect_bad(buf, 5, "truncated", NULL, "length cut short");
	expect_bad(buf, 9, "truncated", "header runs past end of file", "header cut short");
	memset(buf, 0xff, 8);
	expect_bad(buf, 16, "header_too_large", NULL, "header length 2^64-1");
	memset(buf, 0, 8);
	buf[7] = 0x80;
	expect_bad(buf, 16, "header_too_large", NULL, "header length 2^63");
	memset(buf, 0, 8);
	buf[0] = 1;
	expect_bad(buf, 16, "bad_header", NULL, "header length 1");
	memset(buf, 0, 8);
	buf[0] = 0x01;
	buf[3] = 0x40;   /* 1 GiB */
	expect_bad(buf, 16, "header_too_large", NULL, "header length 1 GiB");

	/* Padding with spaces is allowed. */
	{
		ds_container *c = NULL;
		ds_error err = { 0 };

		snprintf(big, sizeof big, "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}%*s", 40, "");
		len = doc(buf, big, "xy", 2);
		is_int(ds_container_parse(buf, len, "pad", 0, &c, &err), 0, "header padded with spaces");
		ok(c && memcmp(ds_container_get(c, "a")->data, "xy", 2) == 0, "data after padding");
		ds_container_free(c);
	}
}

/* ---------------------------------------------------------------- files */

static void path_in(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", tmpdir, name);
}

static int leftovers(void)
{
	DIR *d = opendir(tmpdir);
	struct dirent *e;
	int n = 0;

	while ((e = readdir(d)))
		n += e->d_name[0] == '.' && strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
	closedir(d);
	return n;
}

static int file_equals(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *got = malloc(len + 1);
	size_t n = f ? fread(got, 1, len + 1, f) : 0;
	int same = f && n == len && memcmp(got, buf, len) == 0;

	if (f)
		fclose(f);
	free(got);
	return same;
}

static void test_writer(void)
{
	char path[512], other[512];
	ds_container *c = sample(3), *back = NULL;
	ds_writer *w = NULL;
	ds_error err = { 0 };
	struct stat st;
	void *buf;
	size_t len;
	mode_t old = umask(022);

	path_in(path, sizeof path, "w.dsm");
	is_int(ds_writer_open(path, &w, &err), 0, "writer open");
	ok(stat(path, &st) != 0, "target not there before commit");
	is_int(leftovers(), 1, "one temporary file while writing");
	is_int(ds_writer_put(w, c, &err), 0, "put");
	is_int(ds_writer_commit(w, &err), 0, "commit");
	ok(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644, "committed with mode 0644 under umask 022");
	is_int(leftovers(), 0, "no temporary file after commit");
	ds_container_serialize(c, &buf, &len, NULL);
	ok(file_equals(path, buf, len), "file bytes equal ds_container_serialize");
	free(buf);
	is_int(ds_container_load(path, 0, &back, &err), 0, "load the file: %s", err.message);
	ok(back && same_container(c, back), "load gives back the container");
	ds_container_free(back);

	/* Abort: the old output stays, nothing else appears. */
	back = sample(9);
	ds_writer_open(path, &w, NULL);
	ds_writer_put(w, back, NULL);
	ds_writer_abort(w);
	ds_container_free(back);
	is_int(leftovers(), 0, "abort leaves no temporary file");
	is_int(ds_container_load(path, 0, &back, &err), 0, "old output intact after abort");
	ds_container_free(back);

	/* A signal handler's cleanup removes the temporary file. */
	path_in(other, sizeof other, "sig.dsm");
	ds_writer_open(other, &w, NULL);
	ds_writer_put(w, c, NULL);
	ds_writer_cleanup_all();
	is_int(leftovers(), 0, "cleanup_all removes temporary files");
	ds_writer_abort(w);
	ok(stat(other, &st) != 0, "and the target never appears");

	/* A write that fails: the file size limit stands in for a full disk. */
	{
		struct rlimit rl, low = { 4096, 4096 };
		int64_t shape[] = { 100000 };
		ds_container *huge = ds_container_new();

		add(huge, "x", ds_tensor_new(DS_F32, 1, shape, DS_CPU, NULL));
		signal(SIGXFSZ, SIG_IGN);
		getrlimit(RLIMIT_FSIZE, &rl);
		low.rlim_max = rl.rlim_max;
		setrlimit(RLIMIT_FSIZE, &low);
		ds_error_clear(&err);
		ds_writer_open(path, &w, NULL);
		is_int(ds_writer_put(w, huge, &err), DS_ERR_IO, "a failed write is status 5");
		ok(strstr(err.message, path) != NULL, "naming the path: %s", err.message);
		is_int(ds_writer_commit(w, NULL), DS_ERR_IO, "commit after a failed write fails");
		setrlimit(RLIMIT_FSIZE, &rl);
		signal(SIGXFSZ, SIG_DFL);
		is_int(leftovers(), 0, "no temporary file after a failed write");
		is_int(ds_container_load(path, 0, &back, &err), 0, "target untouched after a failed write");
		ds_container_free(back);
		ds_container_free(huge);
	}

	/* /dev/full is written in place and fails like a full disk. */
	ds_error_clear(&err);
	if (ds_writer_open("/dev/full", &w, &err) == 0) {
		int rc = ds_writer_put(w, c, &err);

		if (rc == 0)
			rc = ds_writer_commit(w, &err);
		else
			ds_writer_abort(w);
		is_int(rc, DS_ERR_IO, "/dev/full: status 5");
		is_str(err.code, "disk_full", "/dev/full: code disk_full");
		ok(stat("/dev/full", &st) == 0 && S_ISCHR(st.st_mode), "/dev/full is still a device");
	} else {
		ok(1, "# SKIP no /dev/full");
	}

	ds_error_clear(&err);
	is_int(ds_writer_open("/nonexistent-ds-dir/m.dsm", &w, &err), DS_ERR_IO, "unwritable folder: status 5");
	ok(strstr(err.message, "/nonexistent-ds-dir/m.dsm") != NULL, "naming the path: %s", err.message);
	ds_error_clear(&err);
	is_int(ds_writer_open(tmpdir, &w, &err), DS_ERR_IO, "a directory as output: status 5");

	ds_error_clear(&err);
	is_int(ds_container_load("/nonexistent-ds-dir/m.dsm", 0, &back, &err), DS_ERR_IO, "missing input: status 5");
	ok(strstr(err.message, "/nonexistent-ds-dir/m.dsm: No such file") != NULL, "message: %s", err.message);
	ds_error_clear(&err);
	is_int(ds_container_load(tmpdir, 0, &back, &err), DS_ERR_IO, "directory as input: status 5");

	umask(old);
	ds_container_free(c);
}

/* Run f with stdout redirected to fd; TAP output resumes after. */
static int with_stdout(int fd, int (*f)(ds_error *), ds_error *err)
{
	int saved, rc;

	fflush(stdout);
	saved = dup(STDOUT_FILENO);
	dup2(fd, STDOUT_FILENO);
	rc = f(err);
	fflush(stdout);
	dup2(saved, STDOUT_FILENO);
	close(saved);
	clearerr(stdout);
	return rc;
}

static int write_sample_to_stdout(ds_error *err)
{
	ds_container *c = sample(4);
	ds_writer *w;
	int rc = ds_writer_open("-", &w, err);

	if (!rc) {
		/* Enough bytes to get past stdio's buffer into the pipe. */
		for (int i = 0; !rc && i < 2000; i++)
			rc = ds_writer_put(w, c, err);
		if (rc)
			ds_writer_abort(w);
		else
			rc = ds_writer_commit(w, err);
	}
	ds_container_free(c);
	return rc;
}

static void test_stdout(void)
{
	ds_error err = { 0 };
	int p[2], pty;

	/* A closed pipe: status 5, code broken_pipe, for the CLI to keep quiet. */
	if (pipe(p) == 0) {
		signal(SIGPIPE, SIG_IGN);
		close(p[0]);
		is_int(with_stdout(p[1], write_sample_to_stdout, &err), DS_ERR_IO, "stdout to a closed pipe: status 5");
		is_str(err.code, "broken_pipe", "code broken_pipe");
		close(p[1]);
		signal(SIGPIPE, SIG_DFL);
	}

	/* A terminal: refused, status 2, as gzip does. */
	pty = posix_openpt(O_RDWR | O_NOCTTY);
	if (pty >= 0 && grantpt(pty) == 0 && unlockpt(pty) == 0) {
		const char *name = ptsname(pty);
		int tty = name ? open(name, O_RDWR | O_NOCTTY) : -1;
		ds_writer *w = NULL;

		ds_error_clear(&err);
		is_int(with_stdout(tty, write_sample_to_stdout, &err), DS_ERR_USAGE, "stdout on a terminal: status 2");
		is_str(err.code, "terminal_output", "code terminal_output");
		ds_error_clear(&err);
		is_int(ds_writer_open(name, &w, &err), DS_ERR_USAGE, "a terminal named as the output: status 2");
		if (tty >= 0)
			close(tty);
	} else {
		ok(1, "# SKIP no pseudo-terminal");
	}
	if (pty >= 0)
		close(pty);
}

/* ---------------------------------------------------------------- streams */

static ds_container *frame(int k)
{
	ds_container *c = ds_container_new();
	int64_t sx[] = { 2, 28, 28, 1 }, sy[] = { 2 };

	add(c, "x", filled(DS_U8, 4, sx, (unsigned)k));
	add(c, "y", filled(DS_I32, 1, sy, (unsigned)k + 100));
	ds_container_meta_set(c, "ds.format", DS_FORMAT_FRAME, NULL);
	return c;
}

static void write_frames(const char *path, int n)
{
	ds_writer *w;

	ds_writer_open(path, &w, NULL);
	for (int k = 0; k < n; k++) {
		ds_container *c = frame(k);

		ds_writer_put(w, c, NULL);
		ds_container_free(c);
	}
	ds_writer_commit(w, NULL);
}

/* Read all frames of path; checks contents against frame(k). */
static int read_frames(const char *path, int *frames, ds_error *err, int check_shared)
{
	ds_stream *s;
	ds_container *c, *first = NULL;
	int rc = ds_stream_open(path, 0, &s, err), same = 1;

	*frames = 0;
	if (rc)
		return rc;
	while ((rc = ds_stream_read(s, &c, err)) == 0 && c) {
		ds_container *want = frame(*frames);

		same &= same_container(want, c) || (ds_container_meta_get(c, "ds.checksums") &&
						    ds_container_count(c) == 2 &&
						    same_tensor(ds_container_tensor(want, 0), ds_container_tensor(c, 0)) &&
						    same_tensor(ds_container_tensor(want, 1), ds_container_tensor(c, 1)));
		ds_container_free(want);
		if (!first)
			first = c;
		else if (check_shared && ds_container_get(first, "x")->storage != ds_container_get(c, "x")->storage)
			same = 0;
		if (c != first)
			ds_container_free(c);
		(*frames)++;
	}
	is_int(ds_stream_frames(s), *frames, "ds_stream_frames counts the frames read");
	ds_stream_close(s);
	/* Tensors outlive the stream: the mapping goes with the last one. */
	if (first) {
		ds_container *want = frame(0);

		same &= same_tensor(ds_container_get(want, "x"), ds_container_get(first, "x"));
		ds_container_free(want);
		ds_container_free(first);
	}
	if (!rc && !same)
		rc = ds_error_set(err, DS_ERR_RUN, "differs", "frames differ");
	return rc;
}

/* Feed bytes [0, len) of a file through a pipe, a few at a time. */
static pid_t feed_pipe(const char *path, size_t len, int *fd)
{
	int p[2];
	pid_t pid;

	if (pipe(p) != 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		FILE *f = fopen(path, "rb");
		char b[777];
		size_t n;

		close(p[0]);
		while (len && (n = fread(b, 1, len < sizeof b ? len : sizeof b, f)) > 0) {
			if (write(p[1], b, n) != (ssize_t)n)
				_exit(1);
			len -= n;
		}
		_exit(0);
	}
	close(p[1]);
	*fd = p[0];
	return pid;
}

static void test_stream(void)
{
	char path[512], fdpath[64];
	ds_error err = { 0 };
	ds_container *c = NULL;
	struct stat st;
	int frames, fd;
	pid_t pid;

	path_in(path, sizeof path, "s.dst");
	write_frames(path, 3);
	stat(path, &st);
	is_int(read_frames(path, &frames, &err, 1), 0, "read a stream file: %s", err.message);
	is_int(frames, 3, "three frames from the file, views into one mapping");

	pid = feed_pipe(path, (size_t)st.st_size, &fd);
	snprintf(fdpath, sizeof fdpath, "/dev/fd/%d", fd);
	is_int(read_frames(fdpath, &frames, &err, 0), 0, "read a stream from a pipe: %s", err.message);
	is_int(frames, 3, "three frames from the pipe");
	close(fd);
	waitpid(pid, NULL, 0);

	/* Cut in frame 2's data: two good frames, then the error names frame 2. */
	pid = feed_pipe(path, (size_t)st.st_size - 100, &fd);
	snprintf(fdpath, sizeof fdpath, "/dev/fd/%d", fd);
	ds_error_clear(&err);
	is_int(read_frames(fdpath, &frames, &err, 0), DS_ERR_DATA, "pipe cut short: status 3");
	is_int(frames, 2, "after two good frames");
	is_str(err.code, "truncated", "code truncated");
	ok(strstr(err.message, ": frame 2: tensor '") && strstr(err.message, "data runs past end of file"),
	   "message: %s", err.message);
	close(fd);
	waitpid(pid, NULL, 0);

	/* The same cut in a file. */
	if (truncate(path, st.st_size - 100) != 0)
		diag("truncate: %s", strerror(errno));
	ds_error_clear(&err);
	is_int(read_frames(path, &frames, &err, 0), DS_ERR_DATA, "file cut short: status 3");
	ok(strncmp(err.message, path, strlen(path)) == 0 && strstr(err.message, ": frame 2: tensor '"),
	   "message: %s", err.message);

	/* A cut inside the length of frame 1. */
	{
		ds_stream *s;

		write_frames(path, 2);
		stat(path, &st);
		if (truncate(path, st.st_size / 2 + 3) != 0)
			diag("truncate: %s", strerror(errno));
		ds_error_clear(&err);
		ds_stream_open(path, 0, &s, &err);
		ds_stream_read(s, &c, &err);
		ds_container_free(c);
		is_int(ds_stream_read(s, &c, &err), DS_ERR_DATA, "cut in frame 1's header: status 3");
		ok(strstr(err.message, "frame 1: ") != NULL, "message: %s", err.message);
		ds_stream_close(s);
	}

	/* An empty pipe is a stream of no frames, but not a model. */
	pid = feed_pipe(path, 0, &fd);
	snprintf(fdpath, sizeof fdpath, "/dev/fd/%d", fd);
	is_int(read_frames(fdpath, &frames, &err, 0), 0, "empty pipe: no error");
	is_int(frames, 0, "empty pipe: no frames");
	close(fd);
	waitpid(pid, NULL, 0);
	path_in(path, sizeof path, "empty.dsm");
	close(open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644));
	is_int(read_frames(path, &frames, &err, 0), 0, "empty file: a stream of no frames");
	ds_error_clear(&err);
	is_int(ds_container_load(path, 0, &c, &err), DS_ERR_DATA, "empty file as a model: status 3");
	is_str(err.code, "empty", "code empty");

	/* A stream is not a model. */
	path_in(path, sizeof path, "two.dst");
	write_frames(path, 2);
	ds_error_clear(&err);
	is_int(ds_container_load(path, 0, &c, &err), DS_ERR_DATA, "two frames as a model: status 3");
	is_str(err.code, "trailing_data", "code trailing_data");
	stat(path, &st);
	pid = feed_pipe(path, (size_t)st.st_size, &fd);
	snprintf(fdpath, sizeof fdpath, "/dev/fd/%d", fd);
	ds_error_clear(&err);
	is_int(ds_container_load(fdpath, 0, &c, &err), DS_ERR_DATA, "two frames through a pipe as a model: status 3");
	is_str(err.code, "trailing_data", "pipe: code trailing_data");
	close(fd);
	waitpid(pid, NULL, 0);

	/* One frame through a pipe is a model. */
	path_in(path, sizeof path, "one.dst");
	write_frames(path, 1);
	stat(path, &st);
	pid = feed_pipe(path, (size_t)st.st_size, &fd);
	snprintf(fdpath, sizeof fdpath, "/dev/fd/%d", fd);
	is_int(ds_container_load(fdpath, 0, &c, &err), 0, "one frame through a pipe loads as a model");
	ds_container_free(c);
	close(fd);
	waitpid(pid, NULL, 0);

	/* Data not aligned for its type in a mapped file is copied. */
	{
		static unsigned char buf[256];
		const char *h = "{\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
				"\"f\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]}}";
		float v[2] = { 1.5f, -2.25f };
		unsigned char bytes[9];
		size_t len;
		FILE *f;

		bytes[0] = 7;
		memcpy(bytes + 1, v, 8);
		len = doc(buf, h, bytes, 9);
		path_in(path, sizeof path, "odd.dsm");
		f = fopen(path, "wb");
		fwrite(buf, 1, len, f);
		fclose(f);
		ds_error_clear(&err);
		is_int(ds_container_load(path, 0, &c, &err), 0, "unaligned file loads: %s", err.message);
		if (c) {
			const ds_tensor *t = ds_container_get(c, "f");

			ok((uintptr_t)t->data % 4 == 0, "F32 data is aligned");
			ok(((float *)t->data)[0] == 1.5f && ((float *)t->data)[1] == -2.25f, "and right");
			ok(((unsigned char *)ds_container_get(c, "b")->data)[0] == 7, "U8 beside it");
		}
		ds_container_free(c);
	}
}

int main(void)
{
	const char *base = getenv("TMPDIR");

	snprintf(tmpdir, sizeof tmpdir, "%s/test_container.XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	test_round_trip();
	test_api();
	test_history();
	test_checksums();
	test_malformed();
	test_writer();
	test_stdout();
	test_stream();
	{
		char cmd[600];

		snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			diag("could not remove %s", tmpdir);
	}
	return done_testing();
}
