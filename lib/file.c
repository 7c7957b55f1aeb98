/* file.c - reading whole files and telling what kind of data they hold. */
#include "source.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* Enough of a file to see a fortune file's first '%' line behind a long
 * opening entry, and little enough to sniff thousands of files quickly. */
#define SNIFF_BYTES 16384

int ds_file_error(ds_error *err, int errnum, const char *path)
{
	if (errnum == ENOMEM)
		return ds_error_errno(err, errnum, path);
	return ds_error_set(err, DS_ERR_IO, "unreadable", "%s: %s", path, strerror(errnum));
}

int ds_file_read(const char *path, uint64_t max_bytes, void **buf, size_t *len, ds_error *err)
{
	unsigned char *data = NULL;
	size_t cap = 65536, have = 0;
	struct stat st;
	int fd, rc = 0;

	*buf = NULL;
	*len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ds_file_error(err, errno, path);
	if (fstat(fd, &st) != 0) {
		rc = ds_file_error(err, errno, path);
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		rc = ds_file_error(err, EISDIR, path);
		goto out;
	}
	if (S_ISREG(st.st_mode)) {
		if (max_bytes && (uint64_t)st.st_size > max_bytes) {
			rc = ds_error_set(err, DS_ERR_DATA, "too_large", "%s: %" PRIu64 " bytes, more than %" PRIu64,
					  path, (uint64_t)st.st_size, max_bytes);
			goto out;
		}
		if ((uint64_t)st.st_size >= SIZE_MAX) {
			rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "%s: too large for memory", path);
			goto out;
		}
		/* One byte more than the size, so that the read which sees the
		 * end needs no second allocation. */
		cap = (size_t)st.st_size + 1;
	}
	for (;;) {
		ssize_t n;

		if (have + 1 >= cap || !data) {
			unsigned char *grown;

			if (data)
				cap = cap > SIZE_MAX / 2 ? SIZE_MAX : 2 * cap;
			grown = ds_realloc(data, cap, err);
			if (!grown) {
				rc = DS_ERR_NOMEM;
				goto out;
			}
			data = grown;
		}
		n = read(fd, data + have, cap - 1 - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = ds_file_error(err, errno, path);
			goto out;
		}
		if (n == 0)
			break;
		have += (size_t)n;
		if (max_bytes && have > max_bytes) {
			rc = ds_error_set(err, DS_ERR_DATA, "too_large", "%s: more than %" PRIu64 " bytes",
					  path, max_bytes);
			goto out;
		}
	}
	data[have] = 0;
	*buf = data;
	*len = have;
	data = NULL;
out:
	free(data);
	close(fd);
	return rc;
}

const char *ds_path_base(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

void ds_file_safe_name(char *s)
{
	for (; *s; s++)
		if (*s == '/' || *s == '#' || *s == ':' || *s == '\n')
			*s = '_';
}

int ds_name_ends_with(const char *name, const char *suffix)
{
	size_t n = strlen(name), m = strlen(suffix);

	if (m > n)
		return 0;
	name += n - m;
	for (size_t i = 0; i < m; i++) {
		unsigned char a = (unsigned char)name[i], b = (unsigned char)suffix[i];

		if (a >= 'A' && a <= 'Z')
			a = (unsigned char)(a - 'A' + 'a');
		if (a != b)
			return 0;
	}
	return 1;
}

static int is_idx_name(const char *base)
{
	static const char *const ends[] = { "-idx3-ubyte", "-idx1-ubyte", ".idx3", ".idx1" };
	char name[512];
	size_t n = strlen(base);

	if (n >= sizeof name)
		return 0;
	memcpy(name, base, n + 1);
	if (ds_name_ends_with(name, ".gz"))
		name[n - 3] = 0;
	for (size_t i = 0; i < DS_ARRAY_LEN(ends); i++)
		if (ds_name_ends_with(name, ends[i]))
			return 1;
	return 0;
}

static ds_file_kind kind_by_name(const char *base)
{
	static const struct {
		const char *suffix;
		ds_file_kind kind;
	} table[] = {
		{ ".png", DS_FILE_IMAGE }, { ".jpg", DS_FILE_IMAGE }, { ".jpeg", DS_FILE_IMAGE },
		{ ".jpe", DS_FILE_IMAGE }, { ".txt", DS_FILE_TEXT }, { ".jsonl", DS_FILE_JSONL },
		{ ".ndjson", DS_FILE_JSONL }, { ".dst", DS_FILE_DST },
	};

	for (size_t i = 0; i < DS_ARRAY_LEN(table); i++)
		if (ds_name_ends_with(base, table[i].suffix))
			return table[i].kind;
	return is_idx_name(base) ? DS_FILE_IDX : DS_FILE_OTHER;
}

static int is_idx_magic(const unsigned char *p)
{
	return p[0] == 0 && p[1] == 0 && p[2] == 0x08 && (p[3] == 1 || p[3] == 3);
}

/* Valid UTF-8 without NUL bytes.  Not ds_utf8_invalid: a sequence cut by
 * the end of a full sniffing buffer must not be held against the file. */
static int looks_like_utf8(const unsigned char *s, size_t len, int cut_ok)
{
	size_t i = 0;

	while (i < len) {
		unsigned c = s[i];
		size_t need;
		unsigned cp, min;

		if (c == 0)
			return 0;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1, cp = c & 0x1f, min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2, cp = c & 0x0f, min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return 0;
		}
		if (i + need >= len)
			return cut_ok;
		for (size_t k = 1; k <= need; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += need + 1;
	}
	return 1;
}

static ds_file_kind gzip_kind(const char *path)
{
	unsigned char magic[4];
	gzFile gz = gzopen(path, "rb");
	int n;

	if (!gz)
		return DS_FILE_OTHER;
	n = gzread(gz, magic, sizeof magic);
	gzclose(gz);
	return n == (int)sizeof magic && is_idx_magic(magic) ? DS_FILE_IDX : DS_FILE_OTHER;
}

static ds_file_kind kind_by_content(const char *path)
{
	unsigned char buf[SNIFF_BYTES];
	size_t have = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	struct stat st;

	if (fd < 0)
		return DS_FILE_OTHER;
	/* A FIFO or a device could block or never end. */
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return DS_FILE_OTHER;
	}
	while (have < sizeof buf) {
		ssize_t n = read(fd, buf + have, sizeof buf - have);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	close(fd);
	if (have >= 8 && memcmp(buf, "\x89PNG\r\n\x1a\n", 8) == 0)
		return DS_FILE_IMAGE;
	if (have >= 3 && buf[0] == 0xff && buf[1] == 0xd8 && buf[2] == 0xff)
		return DS_FILE_IMAGE;
	if (have >= 4 && is_idx_magic(buf))
		return DS_FILE_IDX;
	if (have >= 2 && buf[0] == 0x1f && buf[1] == 0x8b)
		return gzip_kind(path);
	if (have >= 9 && buf[8] == '{') {
		uint64_t n = 0;

		for (int i = 7; i >= 0; i--)
			n = (n << 8) | buf[i];
		if (n >= 2 && n <= DS_HEADER_MAX)
			return DS_FILE_DST;
	}
	/* Fortune files in a legacy encoding are still fortune files: the
	 * pipeline reports their entries' bad UTF-8 one by one. */
	if (have == 0 || memchr(buf, 0, have))
		return DS_FILE_OTHER;
	if (ds_fortune_sniff((const char *)buf, have))
		return DS_FILE_FORTUNE;
	return looks_like_utf8(buf, have, have == sizeof buf) ? DS_FILE_TEXT : DS_FILE_OTHER;
}

ds_file_kind ds_file_kind_of(const char *path)
{
	ds_file_kind kind = kind_by_name(ds_path_base(path));

	return kind != DS_FILE_OTHER ? kind : kind_by_content(path);
}
