/* mkimages - generated image fixtures for the ds-clean tests.
 *
 *   mkimages faults DIR [EXPECTED]   a class-folder tree with one planted fault
 *                                    of each kind, and EXPECTED (default
 *                                    DIR/../expected.tsv): "path\tverdict\treason"
 *                                    per file, paths relative to DIR, sorted
 *   mkimages one KIND OUT [SEED]     one image: png jpeg progressive cmyk png16
 *                                    palette gray graya exif6, or a fault: empty
 *                                    text truncated corrupt tiny wide blank
 *   mkimages idx DIR N [gz]          DIR/t-images-idx3-ubyte and
 *                                    DIR/t-labels-idx1-ubyte (gzipped with "gz"):
 *                                    N distinct 28x28 images, labels i % 10
 *
 * Every picture is a pattern of flat 8x8 blocks drawn from a seeded
 * generator, so that no two clean images are near duplicates of each other
 * and the bytes depend only on the arguments. */
#include "config.h"
#include "ds.h"

#include <errno.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <zlib.h>

#define DS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

typedef struct membuf {
	uint8_t *data;
	size_t len, cap;
} membuf;

static const char *prog = "mkimages";

static void die(const char *fmt, const char *arg)
{
	fprintf(stderr, "%s: ", prog);
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n");
	exit(1);
}

static void put(membuf *m, const void *p, size_t n)
{
	if (m->len + n > m->cap) {
		m->cap = (m->len + n) * 2 + 256;
		m->data = realloc(m->data, m->cap);
		if (!m->data)
			die("%s", "out of memory");
	}
	memcpy(m->data + m->len, p, n);
	m->len += n;
}

static uint32_t rng_state;

static void seed(uint32_t s)
{
	rng_state = s * 2654435761u + 0x9e3779b9u;
	if (!rng_state)
		rng_state = 1;
}

static uint32_t next(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

/* Flat 8x8 blocks of random levels in 0..250 (room left for +3 brightness);
 * gray blocks when channels is 1.  Images smaller than 16 pixels get
 * 1-pixel blocks, so that a tiny image is not also a blank one. */
static ds_image blocks(int w, int h, int channels, uint32_t s)
{
	ds_image img = { w, h, channels, malloc((size_t)w * (size_t)h * (size_t)channels) };
	int b = w < 16 || h < 16 ? 1 : 8;
	int bw = (w + b - 1) / b, bh = (h + b - 1) / b;
	uint8_t *levels = malloc((size_t)bw * (size_t)bh * 3);

	if (!img.pixels || !levels)
		die("%s", "out of memory");
	seed(s);
	for (int i = 0; i < bw * bh * 3; i++)
		levels[i] = (uint8_t)(next() % 251);
	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++)
			for (int c = 0; c < channels; c++)
				img.pixels[((size_t)y * (size_t)w + (size_t)x) * (size_t)channels + (size_t)c] =
					levels[((y / b) * bw + x / b) * 3 + c];
	free(levels);
	return img;
}

static membuf encode(const ds_image *img, ds_image_format fmt)
{
	ds_error err = { 0 };
	membuf m = { 0 };
	void *buf;
	size_t len;

	if (ds_image_encode(img, fmt, 90, &buf, &len, &err) != 0)
		die("encode: %s", err.message);
	put(&m, buf, len);
	free(buf);
	return m;
}

static membuf tj_encode(const uint8_t *px, int w, int h, int pf, int subsamp, int flags)
{
	tjhandle tj = tjInitCompress();
	unsigned char *jpeg = NULL;
	unsigned long size = 0;
	membuf m = { 0 };

	if (!tj || tjCompress2(tj, px, w, 0, h, pf, &jpeg, &size, subsamp, 90, flags) != 0)
		die("tjCompress2: %s", tjGetErrorStr2(tj));
	put(&m, jpeg, size);
	tjFree(jpeg);
	tjDestroy(tj);
	return m;
}

static void png_put(png_structp png, png_bytep data, size_t n)
{
	put(png_get_io_ptr(png), data, n);
}

static void png_flush_none(png_structp png)
{
	(void)png;
}

/* A PNG of any colour type through libpng; rows as libpng stores them. */
static membuf raw_png(int w, int h, int depth, int ctype, uint8_t **rows, const png_color *pal, int npal,
		      const png_byte *trans, int ntrans)
{
	png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
	png_infop info = png ? png_create_info_struct(png) : NULL;
	membuf m = { 0 };

	if (!info)
		die("%s", "libpng: out of memory");
	if (setjmp(png_jmpbuf(png)))
		die("%s", "libpng: cannot write");
	png_set_write_fn(png, &m, png_put, png_flush_none);
	png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, ctype, PNG_INTERLACE_NONE,
		     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	if (pal)
		png_set_PLTE(png, info, pal, npal);
	if (trans)
		png_set_tRNS(png, info, trans, ntrans, NULL);
	png_write_info(png, info);
	png_write_image(png, rows);
	png_write_end(png, NULL);
	png_destroy_write_struct(&png, &info);
	return m;
}

static uint8_t **alloc_rows(int h, size_t rowbytes)
{
	uint8_t **rows = calloc((size_t)h, sizeof *rows);

	for (int y = 0; rows && y < h; y++)
		if (!(rows[y] = calloc(rowbytes, 1)))
			die("%s", "out of memory");
	if (!rows)
		die("%s", "out of memory");
	return rows;
}

static void free_rows(uint8_t **rows, int h)
{
	for (int y = 0; y < h; y++)
		free(rows[y]);
	free(rows);
}

/* ------------------------------------------------------- image kinds */

static membuf make_png16(uint32_t s)
{
	ds_image img = blocks(64, 64, 3, s);
	uint8_t **rows = alloc_rows(64, 64 * 6);
	membuf m;

	for (int y = 0; y < 64; y++)
		for (int i = 0; i < 64 * 3; i++) {
			unsigned v = img.pixels[y * 64 * 3 + i] * 257u + (next() % 64);

			rows[y][2 * i] = (uint8_t)(v >> 8);
			rows[y][2 * i + 1] = (uint8_t)v;
		}
	m = raw_png(64, 64, 16, PNG_COLOR_TYPE_RGB, rows, NULL, 0, NULL, 0);
	free_rows(rows, 64);
	free(img.pixels);
	return m;
}

static membuf make_palette(uint32_t s)
{
	png_color pal[16];
	png_byte trans[16];
	uint8_t **rows = alloc_rows(64, 64);
	membuf m;

	seed(s);
	for (int i = 0; i < 16; i++) {
		pal[i].red = (png_byte)(next() % 256);
		pal[i].green = (png_byte)(next() % 256);
		pal[i].blue = (png_byte)(next() % 256);
		trans[i] = (png_byte)(i < 3 ? 64 * i : 255);
	}
	for (int by = 0; by < 8; by++)
		for (int bx = 0; bx < 8; bx++) {
			int idx = (int)(next() % 16);

			for (int y = 0; y < 8; y++)
				memset(rows[by * 8 + y] + bx * 8, idx, 8);
		}
	m = raw_png(64, 64, 8, PNG_COLOR_TYPE_PALETTE, rows, pal, 16, trans, 16);
	free_rows(rows, 64);
	return m;
}

static membuf make_graya(uint32_t s)
{
	ds_image img = blocks(64, 64, 1, s);
	uint8_t **rows = alloc_rows(64, 64 * 2);
	membuf m;

	for (int y = 0; y < 64; y++)
		for (int x = 0; x < 64; x++) {
			rows[y][2 * x] = img.pixels[y * 64 + x];
			rows[y][2 * x + 1] = (uint8_t)((x / 8 + y / 8) % 3 == 0 ? 160 : 255);
		}
	m = raw_png(64, 64, 8, PNG_COLOR_TYPE_GRAY_ALPHA, rows, NULL, 0, NULL, 0);
	free_rows(rows, 64);
	free(img.pixels);
	return m;
}

/* CMYK stored inverted, as Photoshop and libjpeg-turbo do (255: no ink). */
static membuf make_cmyk(uint32_t s)
{
	ds_image img = blocks(64, 64, 3, s);
	uint8_t *cmyk = malloc(64 * 64 * 4);
	membuf m;

	for (int i = 0; i < 64 * 64; i++) {
		const uint8_t *p = img.pixels + 3 * i;
		int mx = p[0] > p[1] ? p[0] : p[1];

		mx = mx > p[2] ? mx : p[2];
		for (int c = 0; c < 3; c++)   /* inverted C = 255 * (R / max) */
			cmyk[4 * i + c] = (uint8_t)(mx ? (p[c] * 255 + mx / 2) / mx : 255);
		cmyk[4 * i + 3] = (uint8_t)mx;
	}
	m = tj_encode(cmyk, 64, 64, TJPF_CMYK, TJSAMP_444, 0);
	free(cmyk);
	free(img.pixels);
	return m;
}

static membuf make_exif6(uint32_t s)
{
	static const uint8_t app1[] = {
		0xff, 0xe1, 0x00, 0x22, 'E', 'x', 'i', 'f', 0, 0,
		'M', 'M', 0, 42, 0, 0, 0, 8,              /* big-endian TIFF, IFD0 at 8 */
		0, 1,                                      /* one entry */
		0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0,  /* orientation, SHORT, 1, value 6 */
		0, 0, 0, 0,                                /* no next IFD */
	};
	ds_image img = blocks(64, 48, 3, s);
	membuf jpeg = encode(&img, DS_IMAGE_JPEG), m = { 0 };

	put(&m, jpeg.data, 2);
	put(&m, app1, sizeof app1);
	put(&m, jpeg.data + 2, jpeg.len - 2);
	free(jpeg.data);
	free(img.pixels);
	return m;
}

/* The offset of the first marker of a kind after SOI, or 0. */
static size_t jpeg_marker(const membuf *m, int marker)
{
	size_t pos = 2;

	while (pos + 4 <= m->len && m->data[pos] == 0xff) {
		if (m->data[pos + 1] == marker)
			return pos;
		pos += 2 + ((size_t)m->data[pos + 2] << 8 | m->data[pos + 3]);
	}
	return 0;
}

static membuf make_truncated(uint32_t s)
{
	ds_image img = blocks(64, 64, 3, s);
	membuf m = encode(&img, DS_IMAGE_JPEG);
	size_t sos = jpeg_marker(&m, 0xda);

	if (!sos)
		die("%s", "no SOS in our own JPEG");
	m.len = sos + (m.len - sos) / 2;   /* in the middle of the scan data */
	free(img.pixels);
	return m;
}

static membuf make_corrupt(uint32_t s)
{
	ds_image img = blocks(64, 64, 3, s);
	membuf m = encode(&img, DS_IMAGE_PNG);
	size_t pos = 8;

	while (pos + 12 <= m.len) {
		uint32_t n = (uint32_t)m.data[pos] << 24 | (uint32_t)m.data[pos + 1] << 16 |
			     (uint32_t)m.data[pos + 2] << 8 | m.data[pos + 3];

		if (memcmp(m.data + pos + 4, "IDAT", 4) == 0) {
			m.data[pos + 8 + n / 2] ^= 0x5a;   /* the CRC no longer matches */
			free(img.pixels);
			return m;
		}
		pos += 12 + n;
	}
	die("%s", "no IDAT in our own PNG");
	return m;
}

static membuf make_plain(int w, int h, int channels, ds_image_format fmt, uint32_t s)
{
	ds_image img = blocks(w, h, channels, s);
	membuf m = encode(&img, fmt);

	free(img.pixels);
	return m;
}

static membuf make_blank(void)
{
	ds_image img = { 64, 64, 1, malloc(64 * 64) };
	membuf m;

	memset(img.pixels, 128, 64 * 64);
	m = encode(&img, DS_IMAGE_PNG);
	free(img.pixels);
	return m;
}

static int make_kind(const char *kind, uint32_t s, membuf *out)
{
	static const char text[] = "This is a text file, whatever its name says.\n";

	memset(out, 0, sizeof *out);
	if (strcmp(kind, "png") == 0)
		*out = make_plain(64, 64, 3, DS_IMAGE_PNG, s);
	else if (strcmp(kind, "jpeg") == 0)
		*out = make_plain(64, 64, 3, DS_IMAGE_JPEG, s);
	else if (strcmp(kind, "gray") == 0)
		*out = make_plain(64, 64, 1, DS_IMAGE_PNG, s);
	else if (strcmp(kind, "grayjpeg") == 0)
		*out = make_plain(64, 64, 1, DS_IMAGE_JPEG, s);
	else if (strcmp(kind, "progressive") == 0) {
		ds_image img = blocks(64, 64, 3, s);

		*out = tj_encode(img.pixels, 64, 64, TJPF_RGB, TJSAMP_420, TJFLAG_PROGRESSIVE);
		free(img.pixels);
	} else if (strcmp(kind, "cmyk") == 0)
		*out = make_cmyk(s);
	else if (strcmp(kind, "png16") == 0)
		*out = make_png16(s);
	else if (strcmp(kind, "palette") == 0)
		*out = make_palette(s);
	else if (strcmp(kind, "graya") == 0)
		*out = make_graya(s);
	else if (strcmp(kind, "exif6") == 0)
		*out = make_exif6(s);
	else if (strcmp(kind, "empty") == 0)
		;
	else if (strcmp(kind, "text") == 0)
		put(out, text, sizeof text - 1);
	else if (strcmp(kind, "truncated") == 0)
		*out = make_truncated(s);
	else if (strcmp(kind, "corrupt") == 0)
		*out = make_corrupt(s);
	else if (strcmp(kind, "tiny") == 0)
		*out = make_plain(4, 4, 3, DS_IMAGE_PNG, s);
	else if (strcmp(kind, "wide") == 0)
		*out = make_plain(200, 8, 3, DS_IMAGE_PNG, s);
	else if (strcmp(kind, "blank") == 0)
		*out = make_blank();
	else
		return -1;
	return 0;
}

/* ------------------------------------------------------------- files */

static void save(const char *path, const membuf *m)
{
	FILE *f = fopen(path, "wb");

	if (!f)
		die("cannot create %s", path);
	if ((m->len && fwrite(m->data, 1, m->len, f) != m->len) || fclose(f) != 0)
		die("cannot write %s", path);
}

static void make_dir(const char *path)
{
	char buf[4096];

	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0777) != 0 && errno != EEXIST)
			die("cannot create %s", buf);
		*p = '/';
	}
	if (mkdir(buf, 0777) != 0 && errno != EEXIST)
		die("cannot create %s", buf);
}

typedef struct planted {
	const char *path, *verdict, *reason;
} planted;

static int by_path(const void *a, const void *b)
{
	return strcmp(((const planted *)a)->path, ((const planted *)b)->path);
}

static void file_at(const char *dir, const char *rel, const membuf *m)
{
	char path[4096];

	snprintf(path, sizeof path, "%s/%s", dir, rel);
	save(path, m);
}

static int cmd_faults(const char *dir, const char *expected)
{
	static const char *classes[] = { "cat", "dog", "fox" };
	/* the clean images: gray and RGB, PNG and JPEG */
	static const struct { const char *name; int channels; ds_image_format fmt; } clean[] = {
		{ "a_01.png", 1, DS_IMAGE_PNG }, { "a_02.png", 3, DS_IMAGE_PNG }, { "a_03.jpg", 1, DS_IMAGE_JPEG },
		{ "a_04.jpg", 3, DS_IMAGE_JPEG }, { "a_05.png", 3, DS_IMAGE_PNG }, { "a_06.jpg", 3, DS_IMAGE_JPEG },
	};
	/* one planted fault each, and the images that must pass */
	static const struct { const char *path, *kind, *verdict, *reason; } faults[] = {
		{ "cat/empty.png", "empty", "drop", "empty" },
		{ "cat/notes.jpg", "text", "drop", "not_image" },
		{ "cat/cut.jpg", "truncated", "drop", "truncated" },
		{ "dog/crc.png", "corrupt", "drop", "corrupt" },
		{ "dog/really_png.jpg", "png", "warn", "extension_mismatch" },
		{ "dog/tiny.png", "tiny", "drop", "too_small" },
		{ "fox/wide.png", "wide", "drop", "aspect_ratio" },
		{ "fox/blank.png", "blank", "drop", "blank" },
		{ "cat/k_progressive.jpg", "progressive", "keep", "" },
		{ "dog/k_cmyk.jpg", "cmyk", "keep", "" },
		{ "fox/k_png16.png", "png16", "keep", "" },
		{ "cat/k_palette.png", "palette", "keep", "" },
		{ "dog/k_gray_alpha.png", "graya", "keep", "" },
		{ "fox/k_exif6.jpg", "exif6", "keep", "" },
	};
	planted list[64];
	char names[64][64];
	size_t n = 0;
	char path[4096];
	FILE *f;
	membuf m;

	make_dir(dir);
	for (size_t c = 0; c < DS_ARRAY_LEN(classes); c++) {
		snprintf(path, sizeof path, "%s/%s", dir, classes[c]);
		make_dir(path);
		for (size_t i = 0; i < DS_ARRAY_LEN(clean); i++) {
			m = make_plain(64, 64, clean[i].channels, clean[i].fmt, (uint32_t)(100 + 10 * c + i));
			snprintf(names[n], sizeof names[n], "%s/%s", classes[c], clean[i].name);
			file_at(dir, names[n], &m);
			free(m.data);
			list[n] = (planted){ names[n], "keep", "" };
			n++;
		}
	}
	for (size_t i = 0; i < DS_ARRAY_LEN(faults); i++) {
		if (make_kind(faults[i].kind, (uint32_t)(500 + i), &m) != 0)
			die("unknown kind %s", faults[i].kind);
		file_at(dir, faults[i].path, &m);
		free(m.data);
		list[n++] = (planted){ faults[i].path, faults[i].verdict, faults[i].reason };
	}
	/* copies: made from the PNG originals, whose pixels are exact */
	m = make_plain(64, 64, 1, DS_IMAGE_PNG, 100);   /* cat/a_01.png again */
	file_at(dir, "cat/z_copy.png", &m);
	free(m.data);
	list[n++] = (planted){ "cat/z_copy.png", "drop", "duplicate" };
	m = make_plain(64, 64, 3, DS_IMAGE_PNG, 101);   /* cat/a_02.png, under another label */
	file_at(dir, "fox/z_conflict.png", &m);
	free(m.data);
	list[n++] = (planted){ "fox/z_conflict.png", "drop", "label_conflict" };
	{
		ds_image img = blocks(64, 64, 3, 111);   /* dog/a_02.png, 3 levels brighter */

		for (size_t i = 0; i < 64 * 64 * 3; i++)
			img.pixels[i] = (uint8_t)(img.pixels[i] + 3);
		m = encode(&img, DS_IMAGE_PNG);
		file_at(dir, "dog/z_brighter.png", &m);
		free(m.data);
		free(img.pixels);
		list[n++] = (planted){ "dog/z_brighter.png", "warn", "near_duplicate" };
	}
	qsort(list, n, sizeof list[0], by_path);
	if (expected)
		snprintf(path, sizeof path, "%s", expected);
	else
		snprintf(path, sizeof path, "%s/../expected.tsv", dir);
	if (!(f = fopen(path, "w")))
		die("cannot create %s", path);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s\t%s\t%s\n", list[i].path, list[i].verdict, list[i].reason);
	if (ferror(f) | fclose(f))
		die("cannot write %s", path);
	return 0;
}

static void idx_write(const char *path, int gz, const membuf *m)
{
	if (gz) {
		gzFile g = gzopen(path, "wb9");

		if (!g)
			die("cannot create %s", path);
		if (gzwrite(g, m->data, (unsigned)m->len) != (int)m->len || gzclose(g) != Z_OK)
			die("cannot write %s", path);
	} else {
		save(path, m);
	}
}

static int cmd_idx(const char *dir, long n, int gz)
{
	uint8_t head[16] = { 0, 0, 8, 3 };
	membuf images = { 0 }, labels = { 0 };
	char path[4096];

	if (n < 1 || n > 1000000)
		die("bad count %s", "(1..1000000)");
	make_dir(dir);
	for (int i = 0; i < 4; i++)
		head[4 + i] = (uint8_t)(n >> (24 - 8 * i));
	head[11] = 28;
	head[15] = 28;
	put(&images, head, 16);
	head[3] = 1;
	put(&labels, head, 8);
	for (long i = 0; i < n; i++) {
		ds_image img = blocks(28, 28, 1, (uint32_t)(1000 + i));
		uint8_t label = (uint8_t)(i % 10);

		put(&images, img.pixels, 28 * 28);
		put(&labels, &label, 1);
		free(img.pixels);
	}
	snprintf(path, sizeof path, "%s/t-images-idx3-ubyte%s", dir, gz ? ".gz" : "");
	idx_write(path, gz, &images);
	snprintf(path, sizeof path, "%s/t-labels-idx1-ubyte%s", dir, gz ? ".gz" : "");
	idx_write(path, gz, &labels);
	free(images.data);
	free(labels.data);
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: %s faults DIR [EXPECTED]\n"
			"       %s one KIND OUT [SEED]\n"
			"       %s idx DIR N [gz]\n", prog, prog, prog);
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc >= 3 && argc <= 4 && strcmp(argv[1], "faults") == 0)
		return cmd_faults(argv[2], argc == 4 ? argv[3] : NULL);
	if (argc >= 4 && argc <= 5 && strcmp(argv[1], "one") == 0) {
		membuf m;

		if (make_kind(argv[2], argc == 5 ? (uint32_t)strtoul(argv[4], NULL, 10) : 7, &m) != 0)
			die("unknown kind %s", argv[2]);
		save(argv[3], &m);
		free(m.data);
		return 0;
	}
	if (argc >= 4 && argc <= 5 && strcmp(argv[1], "idx") == 0)
		return cmd_idx(argv[2], strtol(argv[3], NULL, 10), argc == 5 && strcmp(argv[4], "gz") == 0);
	usage();
	return 2;
}
