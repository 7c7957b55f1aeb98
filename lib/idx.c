/* idx.c - the IDX files of MNIST and Fashion-MNIST: a big-endian magic
 * (0x00000803 for [N, rows, cols] unsigned bytes, 0x00000801 for [N] labels),
 * the dimensions, then the bytes.  zlib reads gzipped and plain files alike. */
#include "source.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define IDX_LABELS 0x00000801u
#define IDX_IMAGES 0x00000803u
/* Far beyond any real set, and small enough that dims multiply safely. */
#define IDX_MAX_BYTES ((uint64_t)1 << 40)

typedef struct idx_file {
	uint32_t dims[3];
	unsigned char *data;
	size_t len;
} idx_file;

static const char *const fashion_names[] = {
	"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
	"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
};

static int contains_fashion(const char *s)
{
	static const char word[] = "fashion";

	for (; *s; s++) {
		size_t i = 0;

		while (word[i] && tolower((unsigned char)s[i]) == word[i])
			i++;
		if (!word[i])
			return 1;
	}
	return 0;
}

const char *const *ds_idx_class_names(const char *path, size_t *count)
{
	char *full = realpath(path, NULL);
	int fashion = contains_fashion(path) || (full && contains_fashion(full));

	free(full);
	*count = fashion ? DS_ARRAY_LEN(fashion_names) : 0;
	return fashion ? fashion_names : NULL;
}

/* zlib's errors: a failed system call is the file's fault (5), anything
 * else is a damaged gzip stream (3). */
static int gz_fail(gzFile gz, const char *path, ds_error *err)
{
	int errnum = 0;
	const char *msg = gzerror(gz, &errnum);

	if (errnum == Z_ERRNO)
		return ds_file_error(err, errno ? errno : EIO, path);
	return ds_error_set(err, DS_ERR_DATA, "corrupt", "%s: %s", path, msg);
}

/* Up to len bytes; *got < len only at the end of the data. */
static int gz_read_full(gzFile gz, const char *path, void *buf, size_t len, size_t *got, ds_error *err)
{
	unsigned char *p = buf;

	*got = 0;
	while (*got < len) {
		size_t want = len - *got;
		int n = gzread(gz, p + *got, want > (1u << 30) ? (1u << 30) : (unsigned)want);

		if (n < 0)
			return gz_fail(gz, path, err);
		if (n == 0)
			break;
		*got += (size_t)n;
	}
	return 0;
}

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Read a whole IDX file of the expected kind and check that its data is
 * exactly as long as its dimensions say.  The buffer grows as data arrives,
 * so a short file claiming a huge size is a truncation, not an allocation. */
static int idx_read(const char *path, uint32_t want, idx_file *f, ds_error *err)
{
	unsigned char head[16], extra;
	int ndim = want == IDX_IMAGES ? 3 : 1, rc = 0;
	uint64_t expect = 1;
	size_t got, cap;
	gzFile gz;

	memset(f, 0, sizeof *f);
	errno = 0;
	gz = gzopen(path, "rbe");
	if (!gz)
		return ds_file_error(err, errno ? errno : ENOMEM, path);
	gzbuffer(gz, 1u << 18);
	rc = gz_read_full(gz, path, head, 4 + 4 * (size_t)ndim, &got, err);
	if (rc)
		goto out;
	if (got >= 4 && be32(head) != want) {
		rc = ds_error_set(err, DS_ERR_DATA, "bad_idx", "%s: not an IDX %s file (magic 0x%08x, want 0x%08x)",
				  path, want == IDX_IMAGES ? "image" : "label", be32(head), want);
		goto out;
	}
	if (got < 4 + 4 * (size_t)ndim) {
		rc = ds_error_set(err, DS_ERR_DATA, "truncated", "%s: IDX header runs past end of file", path);
		goto out;
	}
	for (int i = 0; i < ndim; i++) {
		f->dims[i] = be32(head + 4 + 4 * i);
		if (i > 0 && (f->dims[i] == 0 || f->dims[i] > INT_MAX / 4)) {
			rc = ds_error_set(err, DS_ERR_DATA, "bad_idx", "%s: dimension %d is %u", path, i, f->dims[i]);
			goto out;
		}
		expect *= f->dims[i];
		if (expect > IDX_MAX_BYTES) {
			rc = ds_error_set(err, DS_ERR_DATA, "bad_idx", "%s: dimensions too large", path);
			goto out;
		}
	}
	cap = expect < (16u << 20) ? (size_t)expect : (16u << 20);
	for (;;) {
		unsigned char *grown = ds_realloc(f->data, cap, err);

		if (!grown) {
			rc = DS_ERR_NOMEM;
			goto out;
		}
		f->data = grown;
		rc = gz_read_full(gz, path, f->data + f->len, cap - f->len, &got, err);
		if (rc)
			goto out;
		f->len += got;
		if (f->len < cap || f->len == expect)
			break;
		cap = expect - cap < cap ? (size_t)expect : 2 * cap;
	}
	if (f->len < expect) {
		rc = ds_error_set(err, DS_ERR_DATA, "truncated", "%s: %zu bytes of data, the header says %llu",
				  path, f->len, (unsigned long long)expect);
		goto out;
	}
	rc = gz_read_full(gz, path, &extra, 1, &got, err);
	if (!rc && got)
		rc = ds_error_set(err, DS_ERR_DATA, "bad_idx", "%s: data runs past the %llu bytes the header says",
				  path, (unsigned long long)expect);
out:
	gzclose(gz);
	if (rc) {
		free(f->data);
		f->data = NULL;
	}
	return rc;
}

/* The label file beside an image file: "images-idx3" becomes "labels-idx1",
 * gzipped or not, whichever exists.  NULL when there is none. */
static char *labels_path(const char *images, ds_error *err)
{
	static const char from[] = "images-idx3", to[] = "labels-idx1";
	const char *base = ds_path_base(images), *at = strstr(base, from);
	size_t n = strlen(images);
	char *cand;

	if (!at)
		return NULL;
	cand = ds_malloc(n + 4, err);
	if (!cand)
		return NULL;
	memcpy(cand, images, n + 1);
	memcpy(cand + (at - images), to, sizeof to - 1);
	if (access(cand, F_OK) == 0)
		return cand;
	if (ds_name_ends_with(cand, ".gz"))
		cand[n - 3] = 0;
	else
		memcpy(cand + n, ".gz", 4);
	if (access(cand, F_OK) == 0)
		return cand;
	free(cand);
	return NULL;
}

int ds_idx_list(const ds_source_ctx *ctx, ds_item_list *list, ds_error *err)
{
	idx_file images = { { 0 }, NULL, 0 }, labels = { { 0 }, NULL, 0 };
	const char *const *names;
	const char *base = ds_path_base(ctx->path);
	char *lpath = NULL, *id = NULL, digits[256][4];
	size_t n_names, pixels, id_cap;
	int rc;

	rc = idx_read(ctx->path, IDX_IMAGES, &images, err);
	if (rc)
		return rc;
	lpath = labels_path(ctx->path, err);
	if (!lpath && err && err->status) {
		rc = err->status;
		goto out;
	}
	if (lpath) {
		rc = idx_read(lpath, IDX_LABELS, &labels, err);
		if (rc)
			goto out;
		if (labels.dims[0] != images.dims[0]) {
			rc = ds_error_set(err, DS_ERR_DATA, "bad_idx", "%s: %u labels for the %u images of %s",
					  lpath, labels.dims[0], images.dims[0], base);
			goto out;
		}
	}
	names = ds_idx_class_names(ctx->path, &n_names);
	for (int v = 0; v < 256; v++)
		snprintf(digits[v], sizeof digits[v], "%d", v);
	pixels = (size_t)images.dims[1] * images.dims[2];
	id_cap = strlen(base) + 16;
	id = ds_malloc(id_cap, err);
	if (!id) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < images.dims[0]; i++) {
		const char *label = NULL;
		ds_item *item;

		if (labels.data) {
			unsigned v = labels.data[i];

			label = v < n_names ? names[v] : digits[v];
		}
		snprintf(id, id_cap, "%s#%u", base, i);
		item = ds_item_new(DS_ITEM_PIXELS, id, label, err);
		if (!item || ds_item_set_data(item, images.data + (size_t)i * pixels, pixels, err)) {
			ds_item_free(item);
			rc = DS_ERR_NOMEM;
			goto out;
		}
		item->height = (int)images.dims[1];
		item->width = (int)images.dims[2];
		item->channels = 1;
		rc = ds_item_list_push(list, item, err);
		if (rc)
			goto out;
	}
out:
	free(id);
	free(lpath);
	free(labels.data);
	free(images.data);
	return rc;
}
