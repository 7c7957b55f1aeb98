/* writer.c - writing containers, atomically.
 *
 * A file is written under a temporary name in its own folder and renamed
 * into place on commit, so an interrupted or failed run leaves the old output
 * untouched and no partial file behind.  Temporary names sit in a fixed table
 * that a signal handler can walk (ds_writer_cleanup_all). */
#include "container.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------ serializing */

void ds_layout_free(ds_layout *l)
{
	for (size_t i = 0; l->host && i < l->count; i++)
		ds_tensor_unref(l->host[i]);
	free(l->host);
	free(l->order);
	free(l->header);
	memset(l, 0, sizeof *l);
}

/* Recompute ds.checksums from the bytes about to be written. */
static int layout_checksums(ds_container *c, ds_layout *l, ds_error *err)
{
	json_t *sums = json_object();
	int rc = 0;

	if (!sums)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	for (size_t i = 0; i < l->count; i++) {
		char hex[9];

		snprintf(hex, sizeof hex, "%08x",
			 (unsigned)ds_crc32c(0, l->host[i]->data, ds_tensor_nbytes(l->host[i])));
		if (json_object_set_new(sums, ds_container_name(c, i), json_string(hex)) != 0) {
			rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
			goto out;
		}
	}
	rc = ds_container_meta_set_json(c, "ds.checksums", sums, err);
	for (size_t i = 0; !rc && i < l->count; i++)
		ds_container_set_checksum(c, i, DS_CHECKSUM_OK);
out:
	json_decref(sums);
	return rc;
}

static json_t *tensor_entry(const ds_tensor *t, uint64_t begin)
{
	json_t *shape = json_array();

	for (int d = 0; shape && d < t->ndim; d++)
		json_array_append_new(shape, json_integer(t->shape[d]));
	return json_pack("{s:s, s:o, s:[I, I]}", "dtype", ds_dtype_name(t->dtype), "shape", shape,
			 "data_offsets", (json_int_t)begin, (json_int_t)(begin + ds_tensor_nbytes(t)));
}

/* Data is laid out by decreasing element size, so every tensor starts at a
 * multiple of its element size once the data start is 64-byte aligned: a
 * mapped file can then be used in place.  Within a size, the tensors of
 * whole cache lines come first, so that each of them starts on a line:
 * a kernel's vector loads of a weight then never straddle two (a
 * classifier's 40-byte bias ahead of them cost fc1 of the reference CNN
 * half its speed at batch 1). */
int ds_layout_make(ds_container *c, ds_layout *l, ds_error *err)
{
	static const size_t sizes[] = { 8, 4, 2, 1 };
	json_t *root = NULL, *meta = NULL;
	uint64_t *begin = NULL, at = 0;
	char *text = NULL;
	size_t k = 0, len, padded;
	int rc = 0;

	memset(l, 0, sizeof *l);
	l->count = ds_container_count(c);
	l->host = ds_calloc(l->count, sizeof *l->host, err);
	l->order = ds_calloc(l->count, sizeof *l->order, err);
	begin = ds_calloc(l->count, sizeof *begin, err);
	if (!l->host || !l->order || !begin) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < l->count; i++) {
		ds_tensor *t = ds_container_tensor(c, i);

		l->host[i] = t->device.kind == DS_DEVICE_CPU ? ds_tensor_ref(t) : ds_tensor_to(t, DS_CPU, err);
		if (!l->host[i]) {
			rc = err && err->status ? err->status : DS_ERR_RUN;
			ds_error_prefix(err, "tensor '%s'", ds_container_name(c, i));
			goto out;
		}
	}
	rc = layout_checksums(c, l, err);
	if (rc)
		goto out;
	for (size_t s = 0; s < 2 * DS_ARRAY_LEN(sizes); s++) {
		for (size_t i = 0; i < l->count; i++) {
			if (ds_dtype_size(l->host[i]->dtype) != sizes[s / 2] ||
			    (ds_tensor_nbytes(l->host[i]) % 64 == 0) != (s % 2 == 0))
				continue;
			l->order[k++] = i;
			begin[i] = at;
			at += ds_tensor_nbytes(l->host[i]);
		}
	}
	l->data_bytes = at;

	root = json_object();
	meta = json_object();
	if (!root || !meta || json_object_set(root, "__metadata__", meta) != 0)
		goto nomem;
	for (size_t i = 0; i < ds_container_meta_count(c); i++) {
		const char *key = ds_container_meta_key(c, i);

		if (json_object_set_new(meta, key, json_string(ds_container_meta_get(c, key))) != 0)
			goto nomem;
	}
	for (size_t i = 0; i < l->count; i++)
		if (json_object_set_new(root, ds_container_name(c, i), tensor_entry(l->host[i], begin[i])) != 0)
			goto nomem;
	text = json_dumps(root, JSON_COMPACT);
	if (!text)
		goto nomem;
	len = strlen(text);
	padded = (DS_LENGTH_BYTES + len + 63) / 64 * 64 - DS_LENGTH_BYTES;
	if (padded > DS_HEADER_MAX) {
		rc = ds_error_set(err, DS_ERR_DATA, "header_too_large",
				  "header of %zu bytes is over the limit of %u bytes", padded, DS_HEADER_MAX);
		goto out;
	}
	l->header = ds_malloc(padded, err);
	if (!l->header) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	memcpy(l->header, text, len);
	memset(l->header + len, ' ', padded - len);
	l->header_len = padded;
	goto out;
nomem:
	rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory writing the header");
out:
	free(text);
	json_decref(meta);
	json_decref(root);
	free(begin);
	if (rc)
		ds_layout_free(l);
	return rc;
}

static void put_length(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < DS_LENGTH_BYTES; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

int ds_container_serialize(ds_container *c, void **buf, size_t *len, ds_error *err)
{
	ds_layout l;
	unsigned char *p;
	uint64_t total;
	int rc;

	*buf = NULL;
	*len = 0;
	rc = ds_layout_make(c, &l, err);
	if (rc)
		return rc;
	total = DS_LENGTH_BYTES + l.header_len + l.data_bytes;
	if (total > SIZE_MAX || !(p = ds_malloc((size_t)total, err))) {
		ds_layout_free(&l);
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory serializing a container");
	}
	*buf = p;
	*len = (size_t)total;
	put_length(p, l.header_len);
	p += DS_LENGTH_BYTES;
	memcpy(p, l.header, l.header_len);
	p += l.header_len;
	for (size_t k = 0; k < l.count; k++) {
		const ds_tensor *t = l.host[l.order[k]];
		size_t n = ds_tensor_nbytes(t);

		if (n)
			memcpy(p, t->data, n);
		p += n;
	}
	ds_layout_free(&l);
	return 0;
}

/* ------------------------------------------------- temporary-file registry */

/* Slot states: free, being filled or emptied, armed (unlink on cleanup).
 * The handler reads only armed slots, whose path is complete. */
enum { SLOT_FREE, SLOT_BUSY, SLOT_ARMED };
#define WRITER_SLOTS 64

static char slot_path[WRITER_SLOTS][PATH_MAX];
static int slot_state[WRITER_SLOTS];

/* A slot for path, or -1 when the table is full or the path too long: the
 * output is still written, only a signal could leave it behind. */
static int slot_arm(const char *path)
{
	size_t len = strlen(path);

	if (len >= PATH_MAX)
		return -1;
	for (int i = 0; i < WRITER_SLOTS; i++) {
		int expect = SLOT_FREE;

		if (__atomic_compare_exchange_n(&slot_state[i], &expect, SLOT_BUSY, 0, __ATOMIC_ACQ_REL,
						__ATOMIC_RELAXED)) {
			memcpy(slot_path[i], path, len + 1);
			__atomic_store_n(&slot_state[i], SLOT_ARMED, __ATOMIC_RELEASE);
			return i;
		}
	}
	return -1;
}

static void slot_release(int i)
{
	if (i >= 0)
		__atomic_store_n(&slot_state[i], SLOT_FREE, __ATOMIC_RELEASE);
}

void ds_writer_cleanup_all(void)
{
	for (int i = 0; i < WRITER_SLOTS; i++)
		if (__atomic_load_n(&slot_state[i], __ATOMIC_ACQUIRE) == SLOT_ARMED)
			unlink(slot_path[i]);
}

/* ------------------------------------------------------------------ writer */

struct ds_writer {
	char *path;             /* the target */
	const char *name;       /* the target in messages */
	char *tmp;              /* temporary name, or NULL when writing in place */
	FILE *fp;
	int is_stdout;
	int slot;
	int failed;             /* status of the first failed write */
};

static mode_t file_mode;
static pthread_once_t file_mode_once = PTHREAD_ONCE_INIT;

/* mkstemp makes 0600 files; outputs get the mode open(2) would give. */
static void file_mode_init(void)
{
	mode_t mask = umask(0);

	umask(mask);
	file_mode = 0666 & ~mask;
}

static void writer_free(ds_writer *w)
{
	if (w->fp && !w->is_stdout)
		fclose(w->fp);
	if (w->tmp) {
		unlink(w->tmp);
		slot_release(w->slot);
	}
	free(w->tmp);
	free(w->path);
	free(w);
}

/* A failed write: report it, and drop the temporary file at once so that
 * nothing is left behind even if the caller forgets to abort. */
static int writer_fail(ds_writer *w, int errnum, ds_error *err)
{
	int rc;

	if (errnum == EPIPE)
		rc = ds_error_set(err, DS_ERR_IO, "broken_pipe", "%s: %s", w->name, strerror(errnum));
	else
		rc = ds_error_errno(err, errnum ? errnum : EIO, w->name);
	if (w->tmp) {
		unlink(w->tmp);
		slot_release(w->slot);
		free(w->tmp);
		w->tmp = NULL;
	}
	w->failed = rc;
	return rc;
}

static int open_temporary(ds_writer *w, ds_error *err)
{
	const char *slash = strrchr(w->path, '/');
	const char *base = slash ? slash + 1 : w->path;
	size_t dir_len = slash ? (size_t)(slash - w->path) + 1 : 0;
	int fd;

	w->tmp = ds_malloc(dir_len + strlen(base) + 10, err);
	if (!w->tmp)
		return DS_ERR_NOMEM;
	memcpy(w->tmp, w->path, dir_len);
	sprintf(w->tmp + dir_len, ".%s.XXXXXX", base);
	fd = mkstemp(w->tmp);
	if (fd < 0) {
		int e = errno;

		free(w->tmp);
		w->tmp = NULL;
		return ds_error_errno(err, e, w->path);
	}
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	w->slot = slot_arm(w->tmp);
	w->fp = fdopen(fd, "wb");
	if (!w->fp) {
		int e = errno;

		close(fd);
		return ds_error_errno(err, e, w->path);
	}
	return 0;
}

/* Devices and FIFOs (/dev/null, /dev/stdout, a named pipe) are written in
 * place: renaming over them would replace the device node. */
static int open_in_place(ds_writer *w, int binary, ds_error *err)
{
	int fd = open(w->path, O_WRONLY | O_CLOEXEC | O_NOCTTY);

	if (fd < 0)
		return ds_error_errno(err, errno, w->path);
	if (binary && isatty(fd)) {
		close(fd);
		return ds_error_set(err, DS_ERR_USAGE, "terminal_output",
				    "refusing to write binary data to a terminal");
	}
	w->fp = fdopen(fd, "wb");
	if (!w->fp) {
		int e = errno;

		close(fd);
		return ds_error_errno(err, e, w->path);
	}
	return 0;
}

static int writer_open(const char *path, int binary, ds_writer **out, ds_error *err)
{
	ds_writer *w;
	struct stat st;
	int rc;

	*out = NULL;
	w = ds_calloc(1, sizeof *w, err);
	if (!w)
		return DS_ERR_NOMEM;
	w->slot = -1;
	w->path = ds_strdup(path, err);
	if (!w->path) {
		free(w);
		return DS_ERR_NOMEM;
	}
	w->name = w->path;
	if (strcmp(path, "-") == 0) {
		w->is_stdout = 1;
		w->name = "standard output";
		w->fp = stdout;
		rc = binary && isatty(STDOUT_FILENO) ? ds_error_set(err, DS_ERR_USAGE, "terminal_output",
							  "refusing to write binary data to a terminal") : 0;
	} else if (stat(path, &st) != 0 || S_ISREG(st.st_mode)) {
		rc = open_temporary(w, err);
	} else if (S_ISDIR(st.st_mode)) {
		rc = ds_error_errno(err, EISDIR, path);
	} else {
		rc = open_in_place(w, binary, err);
	}
	if (rc)
		writer_free(w);
	else
		*out = w;
	return rc;
}

int ds_writer_open(const char *path, ds_writer **out, ds_error *err)
{
	return writer_open(path, 1, out, err);
}

int ds_writer_open_text(const char *path, ds_writer **out, ds_error *err)
{
	return writer_open(path, 0, out, err);
}

FILE *ds_writer_file(ds_writer *w)
{
	return w->fp;
}

static int writer_write(ds_writer *w, const void *p, size_t n, ds_error *err)
{
	errno = 0;
	if (n && fwrite(p, 1, n, w->fp) != n)
		return writer_fail(w, errno, err);
	return 0;
}

int ds_writer_put(ds_writer *w, ds_container *c, ds_error *err)
{
	unsigned char prefix[DS_LENGTH_BYTES];
	ds_layout l;
	int rc;

	if (w->failed)
		return ds_error_set(err, w->failed, "write_failed", "%s: an earlier write failed", w->name);
	rc = ds_layout_make(c, &l, err);
	if (rc)
		return rc;
	put_length(prefix, l.header_len);
	rc = writer_write(w, prefix, sizeof prefix, err);
	if (!rc)
		rc = writer_write(w, l.header, l.header_len, err);
	for (size_t k = 0; !rc && k < l.count; k++) {
		const ds_tensor *t = l.host[l.order[k]];

		rc = writer_write(w, t->data, ds_tensor_nbytes(t), err);
	}
	ds_layout_free(&l);
	return rc;
}

int ds_writer_commit(ds_writer *w, ds_error *err)
{
	int rc = 0;

	if (w->failed) {
		rc = ds_error_set(err, w->failed, "write_failed", "%s: an earlier write failed", w->name);
		goto out;
	}
	errno = 0;
	if (fflush(w->fp) != 0 || ferror(w->fp)) {
		rc = writer_fail(w, errno, err);
		goto out;
	}
	if (w->is_stdout)
		goto out;
	if (w->tmp) {
		pthread_once(&file_mode_once, file_mode_init);
		if (fsync(fileno(w->fp)) != 0 || fchmod(fileno(w->fp), file_mode) != 0) {
			rc = writer_fail(w, errno, err);
			goto out;
		}
	}
	errno = 0;
	if (fclose(w->fp) != 0) {
		w->fp = NULL;
		rc = writer_fail(w, errno, err);
		goto out;
	}
	w->fp = NULL;
	if (w->tmp) {
		if (rename(w->tmp, w->path) != 0) {
			rc = writer_fail(w, errno, err);
			goto out;
		}
		/* The rename is done; only now may a signal no longer remove it. */
		slot_release(w->slot);
		free(w->tmp);
		w->tmp = NULL;
	}
out:
	writer_free(w);
	return rc;
}

void ds_writer_abort(ds_writer *w)
{
	if (w)
		writer_free(w);
}
