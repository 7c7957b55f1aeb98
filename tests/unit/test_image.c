/* test_image - decoding, probing, orientation, resizing and encoding.
 *
 * Every image is made here in memory: plain ones through ds_image_encode,
 * the PNG colour types and bit depths our encoder never writes through
 * libpng directly, progressive and CMYK JPEGs through TurboJPEG. */
#include "config.h"
#include "ds.h"
#include "tap.h"

#include <png.h>
#include <stdint.h>
#include <turbojpeg.h>
#include <zlib.h>

#define DS_ARRAY_LEN_T(a) (sizeof(a) / sizeof((a)[0]))

static uint32_t rng = 2463534242u;

static uint32_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return rng;
}

/* ------------------------------------------------------------ helpers */

typedef struct membuf {
	uint8_t *data;
	size_t len, cap;
} membuf;

static void mb_put(membuf *m, const void *p, size_t n)
{
	if (m->len + n > m->cap) {
		m->cap = (m->len + n) * 2 + 64;
		m->data = realloc(m->data, m->cap);
		if (!m->data)
			exit(99);
	}
	memcpy(m->data + m->len, p, n);
	m->len += n;
}

static void on_write(png_structp png, png_bytep data, size_t n)
{
	mb_put(png_get_io_ptr(png), data, n);
}

static void on_flush(png_structp png)
{
	(void)png;
}

typedef struct png_spec {
	int width, height, depth, ctype, interlace;
	const png_color *palette;
	int npalette;
	const png_byte *trans;      /* palette alpha */
	int ntrans;
	const png_color_16 *trans_color;   /* gray or RGB single transparent colour */
} png_spec;

/* Write packed rows (as libpng stores them: big-endian 16-bit, packed low
 * depths) into a PNG. */
static membuf write_png(const png_spec *s, uint8_t *const *rows)
{
	membuf m = { 0 };
	png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
	png_infop info = png_create_info_struct(png);

	if (setjmp(png_jmpbuf(png)))
		exit(98);
	png_set_write_fn(png, &m, on_write, on_flush);
	png_set_IHDR(png, info, (png_uint_32)s->width, (png_uint_32)s->height, s->depth, s->ctype,
		     s->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
		     PNG_FILTER_TYPE_DEFAULT);
	if (s->palette)
		png_set_PLTE(png, info, s->palette, s->npalette);
	if (s->trans || s->trans_color)
		png_set_tRNS(png, info, s->trans, s->ntrans, s->trans_color);
	png_write_info(png, info);
	png_write_image(png, (png_bytepp)rows);
	png_write_end(png, NULL);
	png_destroy_write_struct(&png, &info);
	return m;
}

/* A row-major table of samples, stored per bit depth. */
static uint8_t **pack_rows(const uint16_t *samples, int w, int h, int spp, int depth)
{
	uint8_t **rows = calloc((size_t)h, sizeof *rows);
	size_t rowbytes = ((size_t)w * (size_t)spp * (size_t)depth + 7) / 8;

	for (int y = 0; y < h; y++) {
		rows[y] = calloc(rowbytes, 1);
		for (int i = 0; i < w * spp; i++) {
			unsigned v = samples[(size_t)y * (size_t)w * (size_t)spp + (size_t)i];

			if (depth == 16) {
				rows[y][2 * i] = (uint8_t)(v >> 8);
				rows[y][2 * i + 1] = (uint8_t)v;
			} else if (depth == 8) {
				rows[y][i] = (uint8_t)v;
			} else {
				int per = 8 / depth, shift = 8 - depth * (i % per + 1);

				rows[y][i / per] |= (uint8_t)(v << shift);
			}
		}
	}
	return rows;
}

static void free_rows(uint8_t **rows, int h)
{
	for (int y = 0; y < h; y++)
		free(rows[y]);
	free(rows);
}

static unsigned over_white(unsigned c, unsigned a)
{
	return (c * a + 255 * (255 - a) + 127) / 255;
}

static int decode(const void *buf, size_t len, int channels, ds_image *img, ds_image_info *info, ds_error *err)
{
	ds_error_clear(err);
	return ds_image_decode(buf, len, channels, 0, 0, img, info, err);
}

static int max_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
	int m = 0;

	for (size_t i = 0; i < n; i++) {
		int d = abs((int)a[i] - (int)b[i]);

		if (d > m)
			m = d;
	}
	return m;
}

/* A smooth picture that JPEG keeps well. */
static ds_image smooth(int w, int h, int c)
{
	ds_image img = { w, h, c, malloc((size_t)w * (size_t)h * (size_t)c) };

	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++)
			for (int k = 0; k < c; k++)
				img.pixels[((size_t)y * (size_t)w + (size_t)x) * (size_t)c + (size_t)k] =
					(uint8_t)((x * 255 / (w > 1 ? w - 1 : 1) * (k + 1) + y * 255 / (h > 1 ? h - 1 : 1) * (3 - k)) / 4);
	return img;
}

/* Flat 16x16 blocks of distinct colours: exact enough after JPEG to tell
 * where every block went. */
static ds_image blocks(int bw, int bh)
{
	int w = bw * 16, h = bh * 16;
	ds_image img = { w, h, 3, malloc((size_t)w * (size_t)h * 3) };

	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++) {
			int b = (y / 16) * bw + x / 16;
			uint8_t *p = img.pixels + ((size_t)y * (size_t)w + (size_t)x) * 3;

			p[0] = (uint8_t)(40 + 30 * b);
			p[1] = (uint8_t)(220 - 25 * b);
			p[2] = (uint8_t)(b % 2 ? 200 : 60);
		}
	return img;
}

static membuf tj_encode(const uint8_t *px, int w, int h, int pf, int subsamp, int quality, int flags)
{
	tjhandle tj = tjInitCompress();
	unsigned char *jpeg = NULL;
	unsigned long size = 0;
	membuf m = { 0 };

	if (tjCompress2(tj, px, w, 0, h, pf, &jpeg, &size, subsamp, quality, flags) != 0) {
		diag("tjCompress2: %s", tjGetErrorStr2(tj));
		exit(97);
	}
	mb_put(&m, jpeg, size);
	tjFree(jpeg);
	tjDestroy(tj);
	return m;
}

/* --------------------------------------------------------------- tests */

static void test_basics(void)
{
	static const uint8_t png_sig[] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0 };
	static const uint8_t jpg_sig[] = { 0xff, 0xd8, 0xff, 0xe0 };
	ds_resize_mode mode;
	ds_image_info info;
	ds_error err = { 0 };
	ds_image img;

	is_str(ds_image_format_name(DS_IMAGE_PNG), "png", "format name png");
	is_str(ds_image_format_name(DS_IMAGE_JPEG), "jpeg", "format name jpeg");
	is_str(ds_image_format_name(DS_IMAGE_UNKNOWN), "unknown", "format name unknown");
	is_int(ds_image_sniff(png_sig, sizeof png_sig), DS_IMAGE_PNG, "sniff png");
	is_int(ds_image_sniff(jpg_sig, sizeof jpg_sig), DS_IMAGE_JPEG, "sniff jpeg");
	is_int(ds_image_sniff("GIF89a", 6), DS_IMAGE_UNKNOWN, "sniff gif is unknown");
	is_int(ds_image_sniff("", 0), DS_IMAGE_UNKNOWN, "sniff empty");
	ok(ds_resize_mode_parse("fit", &mode) == 0 && mode == DS_RESIZE_FIT, "parse fit");
	ok(ds_resize_mode_parse("fill", &mode) == 0 && mode == DS_RESIZE_FILL, "parse fill");
	ok(ds_resize_mode_parse("stretch", &mode) == 0 && mode == DS_RESIZE_STRETCH, "parse stretch");
	ok(ds_resize_mode_parse("crop", &mode) != 0, "parse rejects crop");

	is_int(ds_image_probe("hello, world\n", 13, &info, &err), DS_ERR_DATA, "probe text: status 3");
	is_str(err.code, "not_image", "probe text: not_image");
	ds_error_clear(&err);
	is_int(ds_image_probe("", 0, &info, &err), DS_ERR_DATA, "probe empty: status 3");
	is_str(err.code, "empty", "probe empty: empty");
	is_int(decode("\x00\x01\x02", 3, 3, &img, &info, &err), DS_ERR_DATA, "decode garbage: status 3");
	is_str(err.code, "not_image", "decode garbage: not_image");
	ok(img.pixels == NULL, "decode garbage leaves no pixels");
}

static void test_png_roundtrip(void)
{
	for (int c = 1; c <= 3; c += 2) {
		ds_image src = { 37, 23, c, malloc(37 * 23 * 3) }, out;
		ds_image_info info;
		ds_error err = { 0 };
		void *buf;
		size_t len;

		for (size_t i = 0; i < (size_t)37 * 23 * (size_t)c; i++)
			src.pixels[i] = (uint8_t)next();
		is_int(ds_image_encode(&src, DS_IMAGE_PNG, 0, &buf, &len, &err), 0, "encode png, %d channels", c);
		is_int(ds_image_probe(buf, len, &info, &err), 0, "probe own png");
		ok(info.format == DS_IMAGE_PNG && info.width == 37 && info.height == 23 && info.channels == c &&
		   info.bit_depth == 8 && info.orientation == 1, "probe: png 37x23x%d", c);
		is_int(decode(buf, len, 0, &out, &info, &err), 0, "decode own png");
		ok(out.width == 37 && out.height == 23 && out.channels == c &&
		   memcmp(out.pixels, src.pixels, (size_t)37 * 23 * (size_t)c) == 0, "png round trip exact, %d channels", c);
		ds_image_free(&out);
		/* the other channel count, converted */
		is_int(decode(buf, len, c == 1 ? 3 : 1, &out, NULL, &err), 0, "decode png converting channels");
		if (c == 1) {
			int same = out.channels == 3;

			for (size_t i = 0; same && i < (size_t)37 * 23; i++)
				same = out.pixels[3 * i] == src.pixels[i] && out.pixels[3 * i + 1] == src.pixels[i] &&
				       out.pixels[3 * i + 2] == src.pixels[i];
			ok(same, "gray png decoded as RGB replicates");
		} else {
			int same = out.channels == 1;

			for (size_t i = 0; same && i < (size_t)37 * 23; i++) {
				const uint8_t *p = src.pixels + 3 * i;

				same = out.pixels[i] == (uint8_t)((299 * p[0] + 587 * p[1] + 114 * p[2] + 500) / 1000);
			}
			ok(same, "RGB png decoded as gray is BT.601 luma");
		}
		ds_image_free(&out);
		free(buf);
		free(src.pixels);
	}
}

/* Gray at every depth, with expected 8-bit values. */
static void test_png_gray_depths(void)
{
	static const int depths[] = { 1, 2, 4, 8, 16 };

	for (size_t d = 0; d < DS_ARRAY_LEN_T(depths); d++) {
		int w = 13, h = 7, depth = depths[d];
		uint16_t *s = malloc(sizeof *s * (size_t)w * (size_t)h);
		uint8_t *want = malloc((size_t)w * (size_t)h);
		png_spec spec = { w, h, depth, PNG_COLOR_TYPE_GRAY, 0, NULL, 0, NULL, 0, NULL };
		uint8_t **rows;
		membuf m;
		ds_image img;
		ds_image_info info;
		ds_error err = { 0 };

		for (int i = 0; i < w * h; i++) {
			unsigned max = (1u << depth) - 1;

			s[i] = (uint16_t)(next() % (max + 1));
			if (i == 0)
				s[i] = (uint16_t)max;
			want[i] = (uint8_t)((s[i] * 255u * 2 + max) / (2 * max));   /* round(v * 255 / max) */
		}
		rows = pack_rows(s, w, h, 1, depth);
		m = write_png(&spec, rows);
		is_int(ds_image_probe(m.data, m.len, &info, &err), 0, "probe gray %d-bit", depth);
		ok(info.bit_depth == depth && info.channels == 1 && !info.has_alpha && !info.is_palette,
		   "probe gray %d-bit: depth %d, channels %d", depth, info.bit_depth, info.channels);
		is_int(decode(m.data, m.len, 0, &img, &info, &err), 0, "decode gray %d-bit", depth);
		ok(img.channels == 1 && img.width == w && img.height == h, "gray %d-bit stays gray", depth);
		is_int(img.pixels ? max_diff(img.pixels, want, (size_t)w * (size_t)h) : 999, 0,
		       "gray %d-bit pixels exact", depth);
		ds_image_free(&img);
		free_rows(rows, h);
		free(m.data);
		free(want);
		free(s);
	}
}

static void test_png_colour_types(void)
{
	static const png_color pal[4] = { { 255, 0, 0 }, { 0, 255, 0 }, { 0, 0, 255 }, { 10, 20, 30 } };
	static const png_byte pal_alpha[3] = { 0, 128, 255 };
	int w = 11, h = 9, n = 11 * 9;
	/* room for the largest case below, the 19x17 gray one */
	uint16_t *s = malloc(sizeof *s * 19 * 17 * 4);
	uint8_t *want = malloc(19 * 17 * 3);
	ds_error err = { 0 };
	ds_image_info info;
	ds_image img;
	uint8_t **rows;
	membuf m;

	/* palette with tRNS */
	for (int i = 0; i < n; i++) {
		const png_color *c;
		unsigned a;

		s[i] = (uint16_t)(next() % 4);
		c = &pal[s[i]];
		a = s[i] < 3 ? pal_alpha[s[i]] : 255;
		want[3 * i] = (uint8_t)over_white(c->red, a);
		want[3 * i + 1] = (uint8_t)over_white(c->green, a);
		want[3 * i + 2] = (uint8_t)over_white(c->blue, a);
	}
	{
		png_spec spec = { w, h, 2, PNG_COLOR_TYPE_PALETTE, 0, pal, 4, pal_alpha, 3, NULL };

		rows = pack_rows(s, w, h, 1, 2);
		m = write_png(&spec, rows);
		free_rows(rows, h);
	}
	is_int(ds_image_probe(m.data, m.len, &info, &err), 0, "probe palette+tRNS");
	ok(info.is_palette && info.has_alpha && info.bit_depth == 2, "probe: palette, alpha, 2-bit");
	is_int(decode(m.data, m.len, 0, &img, &info, &err), 0, "decode palette+tRNS");
	ok(img.channels == 3 && img.pixels && max_diff(img.pixels, want, (size_t)n * 3) == 0,
	   "palette+tRNS over white exact");
	ds_image_free(&img);
	free(m.data);

	/* gray + alpha, 8 bits */
	for (int i = 0; i < n; i++) {
		s[2 * i] = (uint16_t)(next() & 255);
		s[2 * i + 1] = (uint16_t)(i % 3 == 0 ? 0 : i % 3 == 1 ? 255 : next() & 255);
		want[i] = (uint8_t)over_white(s[2 * i], s[2 * i + 1]);
	}
	{
		png_spec spec = { w, h, 8, PNG_COLOR_TYPE_GRAY_ALPHA, 0, NULL, 0, NULL, 0, NULL };

		rows = pack_rows(s, w, h, 2, 8);
		m = write_png(&spec, rows);
		free_rows(rows, h);
	}
	is_int(ds_image_probe(m.data, m.len, &info, &err), 0, "probe gray+alpha");
	ok(info.channels == 2 && info.has_alpha && !info.is_palette, "probe: 2 channels with alpha");
	is_int(decode(m.data, m.len, 0, &img, &info, &err), 0, "decode gray+alpha");
	ok(img.channels == 1 && img.pixels && max_diff(img.pixels, want, (size_t)n) == 0, "gray+alpha over white exact");
	ds_image_free(&img);
	free(m.data);

	/* gray with one transparent value (tRNS on a gray image) */
	for (int i = 0; i < n; i++) {
		s[i] = (uint16_t)(next() & 255);
		if (i % 5 == 0)
			s[i] = 7;
		want[i] = s[i] == 7 ? 255 : (uint8_t)s[i];
	}
	{
		png_color_16 tc = { 0, 0, 0, 0, 7 };
		png_spec spec = { w, h, 8, PNG_COLOR_TYPE_GRAY, 0, NULL, 0, NULL, 0, &tc };

		rows = pack_rows(s, w, h, 1, 8);
		m = write_png(&spec, rows);
		free_rows(rows, h);
	}
	is_int(decode(m.data, m.len, 0, &img, &info, &err), 0, "decode gray with tRNS colour");
	ok(info.has_alpha && img.channels == 1 && img.pixels && max_diff(img.pixels, want, (size_t)n) == 0,
	   "gray tRNS colour becomes white");
	ds_image_free(&img);
	free(m.data);

	/* RGB 16 bits */
	for (int i = 0; i < n * 3; i++) {
		s[i] = (uint16_t)next();
		want[i] = (uint8_t)((s[i] * 255u * 2 + 65535) / (2 * 65535));
	}
	{
		png_spec spec = { w, h, 16, PNG_COLOR_TYPE_RGB, 0, NULL, 0, NULL, 0, NULL };

		rows = pack_rows(s, w, h, 3, 16);
		m = write_png(&spec, rows);
		free_rows(rows, h);
	}
	is_int(ds_image_probe(m.data, m.len, &info, &err), 0, "probe RGB 16-bit");
	ok(info.bit_depth == 16 && info.channels == 3, "probe: 16-bit RGB");
	is_int(decode(m.data, m.len, 0, &img, &info, &err), 0, "decode RGB 16-bit");
	ok(img.channels == 3 && img.pixels && max_diff(img.pixels, want, (size_t)n * 3) <= 0,
	   "RGB 16-bit scaled to 8 with rounding");
	ds_image_free(&img);
	free(m.data);

	/* RGBA 8 bits, interlaced too */
	for (int interlace = 0; interlace <= 1; interlace++) {
		for (int i = 0; i < n; i++) {
			for (int k = 0; k < 4; k++)
				s[4 * i + k] = (uint16_t)(next() & 255);
			if (i % 4 == 0)
				s[4 * i + 3] = 255;
			for (int k = 0; k < 3; k++)
				want[3 * i + k] = (uint8_t)over_white(s[4 * i + k], s[4 * i + 3]);
		}
		{
			png_spec spec = { w, h, 8, PNG_COLOR_TYPE_RGB_ALPHA, interlace, NULL, 0, NULL, 0, NULL };

			rows = pack_rows(s, w, h, 4, 8);
			m = write_png(&spec, rows);
			free_rows(rows, h);
		}
		is_int(ds_image_probe(m.data, m.len, &info, &err), 0, "probe RGBA%s", interlace ? " interlaced" : "");
		ok(info.channels == 4 && info.has_alpha, "probe: RGBA");
		is_int(decode(m.data, m.len, 0, &img, &info, &err), 0, "decode RGBA%s", interlace ? " interlaced" : "");
		ok(img.channels == 3 && img.pixels && max_diff(img.pixels, want, (size_t)n * 3) == 0,
		   "RGBA%s over white exact", interlace ? " interlaced" : "");
		ds_image_free(&img);
		free(m.data);
	}

	/* gray 1-bit interlaced */
	{
		png_spec spec = { 19, 17, 1, PNG_COLOR_TYPE_GRAY, 1, NULL, 0, NULL, 0, NULL };

		for (int i = 0; i < 19 * 17; i++) {
			s[i] = (uint16_t)(next() & 1);
			want[i] = s[i] ? 255 : 0;
		}
		rows = pack_rows(s, 19, 17, 1, 1);
		m = write_png(&spec, rows);
		free_rows(rows, 17);
		is_int(decode(m.data, m.len, 0, &img, &info, &err), 0, "decode gray 1-bit interlaced");
		ok(img.channels == 1 && img.pixels && max_diff(img.pixels, want, 19 * 17) == 0,
		   "gray 1-bit interlaced exact");
		ds_image_free(&img);
		free(m.data);
	}
	free(want);
	free(s);
}

/* The offset of the first chunk of a type, or 0. */
static size_t find_chunk(const uint8_t *p, size_t len, const char *type)
{
	size_t pos = 8;

	while (pos + 12 <= len) {
		uint32_t n = (uint32_t)p[pos] << 24 | (uint32_t)p[pos + 1] << 16 | (uint32_t)p[pos + 2] << 8 | p[pos + 3];

		if (memcmp(p + pos + 4, type, 4) == 0)
			return pos;
		pos += 12 + n;
	}
	return 0;
}

/* Insert a chunk (with a right or wrong CRC) before the first IDAT. */
static membuf with_chunk(const membuf *png, const char *type, const void *data, uint32_t n, int bad_crc)
{
	size_t at = find_chunk(png->data, png->len, "IDAT");
	uint8_t hdr[8] = { (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n };
	uint32_t crc;
	uint8_t c[4];
	membuf m = { 0 };

	memcpy(hdr + 4, type, 4);
	crc = (uint32_t)crc32(0, hdr + 4, 4);
	crc = (uint32_t)crc32(crc, data, n);
	if (bad_crc)
		crc ^= 1;
	c[0] = (uint8_t)(crc >> 24);
	c[1] = (uint8_t)(crc >> 16);
	c[2] = (uint8_t)(crc >> 8);
	c[3] = (uint8_t)crc;
	mb_put(&m, png->data, at);
	mb_put(&m, hdr, 8);
	mb_put(&m, data, n);
	mb_put(&m, c, 4);
	mb_put(&m, png->data + at, png->len - at);
	return m;
}

static void test_png_damage(void)
{
	ds_image src = smooth(64, 48, 3), img;
	ds_error err = { 0 };
	void *buf;
	size_t len, idat;
	const size_t cuts[] = { 4, 8, 12, 20, 33, 40, 60, 0, 0, 0 };
	membuf png = { 0 }, m;

	ok(ds_image_encode(&src, DS_IMAGE_PNG, 0, &buf, &len, &err) == 0, "encode png for damage tests");
	mb_put(&png, buf, len);
	free(buf);
	for (size_t i = 0; i < DS_ARRAY_LEN_T(cuts); i++) {
		size_t cut = cuts[i] ? cuts[i] : i == 7 ? png.len / 2 : i == 8 ? png.len - 12 : png.len - 1;

		is_int(decode(png.data, cut, 3, &img, NULL, &err), DS_ERR_DATA, "png cut at %zu of %zu: status 3",
		       cut, png.len);
		is_str(err.code, "truncated", "png cut at %zu: truncated", cut);
		ok(img.pixels == NULL, "png cut at %zu: no pixels", cut);
	}
	idat = find_chunk(png.data, png.len, "IDAT");
	ok(idat > 0, "found IDAT");
	for (int k = 0; k < 3; k++) {
		uint32_t n = (uint32_t)png.data[idat] << 24 | (uint32_t)png.data[idat + 1] << 16 |
			     (uint32_t)png.data[idat + 2] << 8 | png.data[idat + 3];
		size_t at = idat + 8 + (k == 0 ? 2 : k == 1 ? n / 2 : n - 1);

		png.data[at] ^= 0x10;
		is_int(decode(png.data, png.len, 3, &img, NULL, &err), DS_ERR_DATA, "flipped IDAT byte %d: status 3", k);
		is_str(err.code, "corrupt", "flipped IDAT byte %d: corrupt", k);
		png.data[at] ^= 0x10;
	}
	/* a flipped byte in the CRC itself: the data is fine, the file is not */
	{
		uint32_t n = (uint32_t)png.data[idat] << 24 | (uint32_t)png.data[idat + 1] << 16 |
			     (uint32_t)png.data[idat + 2] << 8 | png.data[idat + 3];

		png.data[idat + 8 + n] ^= 1;
		is_int(decode(png.data, png.len, 3, &img, NULL, &err), DS_ERR_DATA, "bad IDAT CRC: status 3");
		is_str(err.code, "corrupt", "bad IDAT CRC: corrupt");
		png.data[idat + 8 + n] ^= 1;
	}
	/* ancillary chunks: a bad CRC fails, an unusable colour profile does not */
	m = with_chunk(&png, "tEXt", "Comment\0hello", 13, 1);
	is_int(decode(m.data, m.len, 3, &img, NULL, &err), DS_ERR_DATA, "tEXt with bad CRC: status 3");
	is_str(err.code, "corrupt", "tEXt with bad CRC: corrupt");
	free(m.data);
	m = with_chunk(&png, "iCCP", "junk\0\0xxxxxxxxxxxx", 18, 0);
	is_int(decode(m.data, m.len, 3, &img, NULL, &err), 0, "junk iCCP profile is ignored");
	ok(img.pixels && max_diff(img.pixels, src.pixels, 64 * 48 * 3) == 0, "pixels intact beside junk iCCP");
	ds_image_free(&img);
	free(m.data);
	/* the probe needs the header only */
	{
		ds_image_info info;

		ds_error_clear(&err);
		is_int(ds_image_probe(png.data, png.len / 2, &info, &err), 0, "probe of a png cut in its pixels works");
		ds_error_clear(&err);
		is_int(ds_image_probe(png.data, 20, &info, &err), DS_ERR_DATA, "probe of a png cut in IHDR fails");
		is_str(err.code, "truncated", "probe of a png cut in IHDR: truncated");
	}
	free(png.data);
	free(src.pixels);
}

static void test_jpeg_basic(void)
{
	for (int c = 1; c <= 3; c += 2) {
		ds_image src = smooth(64, 40, c), img;
		ds_image_info info;
		ds_error err = { 0 };
		void *buf;
		size_t len;

		is_int(ds_image_encode(&src, DS_IMAGE_JPEG, 95, &buf, &len, &err), 0, "encode jpeg %d channels", c);
		is_int(ds_image_probe(buf, len, &info, &err), 0, "probe own jpeg");
		ok(info.format == DS_IMAGE_JPEG && info.width == 64 && info.height == 40 && info.channels == c &&
		   info.bit_depth == 8 && !info.is_progressive && !info.is_cmyk && info.orientation == 1,
		   "probe: jpeg 64x40x%d baseline", c);
		is_int(decode(buf, len, 0, &img, &info, &err), 0, "decode own jpeg");
		ok(img.channels == c && img.width == 64 && img.height == 40, "jpeg keeps %d channels", c);
		ok(img.pixels && max_diff(img.pixels, src.pixels, (size_t)64 * 40 * (size_t)c) <= 12,
		   "jpeg round trip within 12 (%d)", img.pixels ? max_diff(img.pixels, src.pixels, (size_t)64 * 40 * (size_t)c) : -1);
		ds_image_free(&img);
		free(buf);
		free(src.pixels);
	}
}

static void test_jpeg_progressive_cmyk(void)
{
	ds_image src = smooth(48, 32, 3), img;
	ds_image_info info;
	ds_error err = { 0 };
	membuf m;
	uint8_t *cmyk;

	m = tj_encode(src.pixels, 48, 32, TJPF_RGB, TJSAMP_444, 95, TJFLAG_PROGRESSIVE);
	is_int(ds_image_probe(m.data, m.len, &info, &err), 0, "probe progressive");
	ok(info.is_progressive && info.channels == 3, "probe: progressive");
	is_int(decode(m.data, m.len, 3, &img, &info, &err), 0, "decode progressive");
	ok(img.pixels && max_diff(img.pixels, src.pixels, 48 * 32 * 3) <= 10, "progressive within 10");
	ds_image_free(&img);
	free(m.data);

	/* CMYK as libjpeg-turbo and Photoshop store it: inverted, 255 = no ink */
	cmyk = malloc(48 * 32 * 4);
	for (int i = 0; i < 48 * 32; i++) {
		const uint8_t *p = src.pixels + 3 * i;
		double r = p[0] / 255.0, g = p[1] / 255.0, b = p[2] / 255.0;
		double k = 1 - fmax(r, fmax(g, b)), c = 0, mm = 0, y = 0;

		if (k < 1) {
			c = (1 - r - k) / (1 - k);
			mm = (1 - g - k) / (1 - k);
			y = (1 - b - k) / (1 - k);
		}
		cmyk[4 * i] = (uint8_t)(255 - c * 255 + 0.5);
		cmyk[4 * i + 1] = (uint8_t)(255 - mm * 255 + 0.5);
		cmyk[4 * i + 2] = (uint8_t)(255 - y * 255 + 0.5);
		cmyk[4 * i + 3] = (uint8_t)(255 - k * 255 + 0.5);
	}
	m = tj_encode(cmyk, 48, 32, TJPF_CMYK, TJSAMP_444, 100, 0);
	{
		/* TJPF_CMYK must hand back the values as stored, not inverted */
		tjhandle tj = tjInitDecompress();
		uint8_t *back = malloc(48 * 32 * 4);

		ok(tjDecompress2(tj, m.data, m.len, back, 48, 0, 32, TJPF_CMYK, 0) == 0 &&
		   max_diff(back, cmyk, 48 * 32 * 4) <= 6, "TJPF_CMYK returns the stored (inverted) values");
		free(back);
		tjDestroy(tj);
	}
	is_int(ds_image_probe(m.data, m.len, &info, &err), 0, "probe CMYK");
	ok(info.is_cmyk && info.channels == 4, "probe: CMYK, 4 channels");
	is_int(decode(m.data, m.len, 0, &img, &info, &err), 0, "decode CMYK");
	ok(img.channels == 3 && img.pixels && max_diff(img.pixels, src.pixels, 48 * 32 * 3) <= 8,
	   "CMYK to RGB within 8 (%d)", img.pixels ? max_diff(img.pixels, src.pixels, 48 * 32 * 3) : -1);
	ds_image_free(&img);
	free(m.data);
	free(cmyk);
	{
		/* pure red: C=0 M=Y=full K=0, stored inverted as 255,0,0,255 */
		uint8_t red[16 * 16 * 4];

		for (int i = 0; i < 16 * 16; i++) {
			red[4 * i] = 255;
			red[4 * i + 1] = 0;
			red[4 * i + 2] = 0;
			red[4 * i + 3] = 255;
		}
		m = tj_encode(red, 16, 16, TJPF_CMYK, TJSAMP_444, 100, 0);
		is_int(decode(m.data, m.len, 3, &img, &info, &err), 0, "decode red CMYK");
		ok(img.pixels && img.pixels[0] >= 250 && img.pixels[1] <= 5 && img.pixels[2] <= 5,
		   "inverted CMYK 255,0,0,255 is red (%d,%d,%d)", img.pixels ? img.pixels[0] : -1,
		   img.pixels ? img.pixels[1] : -1, img.pixels ? img.pixels[2] : -1);
		ds_image_free(&img);
		free(m.data);
	}
	free(src.pixels);
}

/* A JPEG with an APP1 Exif segment holding one orientation tag. */
static membuf with_exif(const membuf *jpeg, int orientation, int big)
{
	uint8_t seg[2 + 2 + 6 + 8 + 2 + 12 + 4];
	membuf m = { 0 };
	uint8_t *t = seg + 10;

	memset(seg, 0, sizeof seg);
	seg[0] = 0xff;
	seg[1] = 0xe1;
	seg[2] = (uint8_t)((sizeof seg - 2) >> 8);
	seg[3] = (uint8_t)(sizeof seg - 2);
	memcpy(seg + 4, "Exif\0\0", 6);
	if (big) {
		memcpy(t, "MM\0\x2a\0\0\0\x08", 8);
		t[9] = 1;                              /* one entry */
		t[10] = 0x01; t[11] = 0x12;            /* tag */
		t[13] = 3;                             /* SHORT */
		t[17] = 1;                             /* count */
		t[19] = (uint8_t)orientation;
	} else {
		memcpy(t, "II\x2a\0\x08\0\0\0", 8);
		t[8] = 1;
		t[10] = 0x12; t[11] = 0x01;
		t[12] = 3;
		t[14] = 1;
		t[18] = (uint8_t)orientation;
	}
	mb_put(&m, jpeg->data, 2);
	mb_put(&m, seg, sizeof seg);
	mb_put(&m, jpeg->data + 2, jpeg->len - 2);
	return m;
}

/* Reference transforms, composed from the three primitives. */
static ds_image flip_h(ds_image a)
{
	ds_image b = { a.width, a.height, 3, malloc((size_t)a.width * (size_t)a.height * 3) };

	for (int y = 0; y < a.height; y++)
		for (int x = 0; x < a.width; x++)
			memcpy(b.pixels + ((size_t)y * (size_t)a.width + (size_t)x) * 3,
			       a.pixels + ((size_t)y * (size_t)a.width + (size_t)(a.width - 1 - x)) * 3, 3);
	free(a.pixels);
	return b;
}

static ds_image flip_v(ds_image a)
{
	ds_image b = { a.width, a.height, 3, malloc((size_t)a.width * (size_t)a.height * 3) };

	for (int y = 0; y < a.height; y++)
		memcpy(b.pixels + (size_t)y * (size_t)a.width * 3,
		       a.pixels + (size_t)(a.height - 1 - y) * (size_t)a.width * 3, (size_t)a.width * 3);
	free(a.pixels);
	return b;
}

static ds_image transpose(ds_image a)
{
	ds_image b = { a.height, a.width, 3, malloc((size_t)a.width * (size_t)a.height * 3) };

	for (int y = 0; y < b.height; y++)
		for (int x = 0; x < b.width; x++)
			memcpy(b.pixels + ((size_t)y * (size_t)b.width + (size_t)x) * 3,
			       a.pixels + ((size_t)x * (size_t)a.width + (size_t)y) * 3, 3);
	free(a.pixels);
	return b;
}

static ds_image displayed(const ds_image *stored, int o)
{
	ds_image a = { stored->width, stored->height, 3, malloc((size_t)stored->width * (size_t)stored->height * 3) };

	memcpy(a.pixels, stored->pixels, (size_t)a.width * (size_t)a.height * 3);
	switch (o) {
	case 2: return flip_h(a);
	case 3: return flip_v(flip_h(a));
	case 4: return flip_v(a);
	case 5: return transpose(a);
	case 6: return flip_h(transpose(a));          /* turned 90 degrees clockwise */
	case 7: return flip_v(flip_h(transpose(a)));
	case 8: return flip_v(transpose(a));          /* turned 90 degrees counter-clockwise */
	default: return a;
	}
}

/* The largest difference at the centres of the 16x16 blocks: chroma
 * upsampling blurs block edges. */
static int block_diff(const ds_image *a, const ds_image *b)
{
	int m = 0;

	for (int y = 8; y < a->height; y += 16)
		for (int x = 8; x < a->width; x += 16) {
			size_t at = ((size_t)y * (size_t)a->width + (size_t)x) * 3;
			int d = max_diff(a->pixels + at, b->pixels + at, 3);

			if (d > m)
				m = d;
		}
	return m;
}

static void test_exif(void)
{
	ds_image src = blocks(3, 2), img;
	ds_error err = { 0 };
	ds_image_info info;
	void *buf;
	size_t len;
	membuf plain = { 0 };

	ds_image_encode(&src, DS_IMAGE_JPEG, 100, &buf, &len, &err);
	mb_put(&plain, buf, len);
	free(buf);
	for (int o = 1; o <= 8; o++) {
		membuf m = with_exif(&plain, o, o % 2);
		ds_image want = displayed(&src, o);

		ds_error_clear(&err);
		is_int(ds_image_probe(m.data, m.len, &info, &err), 0, "probe exif %d", o);
		ok(info.orientation == o && info.width == (o >= 5 ? 32 : 48) && info.height == (o >= 5 ? 48 : 32),
		   "probe exif %d: orientation %d, %dx%d", o, info.orientation, info.width, info.height);
		is_int(decode(m.data, m.len, 3, &img, &info, &err), 0, "decode exif %d", o);
		ok(img.width == want.width && img.height == want.height && img.pixels &&
		   block_diff(&img, &want) <= 8, "exif %d: pixels turned as displayed (%dx%d, %d)", o, img.width,
		   img.height, img.pixels ? block_diff(&img, &want) : -1);
		ds_image_free(&img);
		free(want.pixels);
		free(m.data);
	}
	/* orientation 6 on a known corner: the stored bottom-left shows top-left */
	{
		membuf m = with_exif(&plain, 6, 0);

		decode(m.data, m.len, 3, &img, &info, &err);
		ok(img.pixels && abs(img.pixels[0] - src.pixels[(size_t)(31 * 48) * 3]) <= 8,
		   "exif 6: displayed top-left is stored bottom-left");
		ds_image_free(&img);
		free(m.data);
	}
	/* junk EXIF is ignored, never trusted */
	{
		membuf m = with_exif(&plain, 6, 0);

		m.data[2 + 10 + 4] = 0xff;   /* IFD offset far past the block */
		is_int(ds_image_probe(m.data, m.len, &info, &err), 0, "probe with broken EXIF works");
		is_int(info.orientation, 1, "broken EXIF means orientation 1");
		free(m.data);
		m = with_exif(&plain, 9, 1);
		is_int(ds_image_probe(m.data, m.len, &info, &err), 0, "probe with orientation 9 works");
		is_int(info.orientation, 1, "orientation 9 means 1");
		free(m.data);
	}
	free(plain.data);
	free(src.pixels);
}

static void test_jpeg_damage(void)
{
	ds_image src = smooth(96, 64, 3), img;
	ds_error err = { 0 };
	void *buf;
	size_t len;

	ds_image_encode(&src, DS_IMAGE_JPEG, 90, &buf, &len, &err);
	for (int prog = 0; prog <= 1; prog++) {
		membuf m = { 0 };
		size_t cuts[] = { 2, 3, 10, 30, 150, 0, 0, 0 };

		if (prog)
			m = tj_encode(src.pixels, 96, 64, TJPF_RGB, TJSAMP_420, 90, TJFLAG_PROGRESSIVE);
		else
			mb_put(&m, buf, len);
		cuts[5] = m.len / 2;
		cuts[6] = m.len * 3 / 4;
		cuts[7] = m.len - 2;
		for (size_t i = 0; i < DS_ARRAY_LEN_T(cuts); i++) {
			int rc = decode(m.data, cuts[i], 3, &img, NULL, &err);

			is_int(rc, DS_ERR_DATA, "%s jpeg cut at %zu of %zu: status 3", prog ? "progressive" : "baseline",
			       cuts[i], m.len);
			is_str(err.code, "truncated", "%s jpeg cut at %zu: truncated (%s)", prog ? "progressive" : "baseline",
			       cuts[i], err.message);
			ok(img.pixels == NULL, "no pixels after a failed decode");
		}
		/* random damage never crashes and never passes silently with garbage size */
		for (int k = 0; k < 50; k++) {
			uint8_t *copy = malloc(m.len);
			size_t at = 2 + next() % (m.len - 2);

			memcpy(copy, m.data, m.len);
			copy[at] ^= (uint8_t)(1 + next() % 255);
			if (decode(copy, m.len, 3, &img, NULL, &err) == 0) {
				if (img.width != 96 || img.height != 64)
					diag("damaged at %zu decodes as %dx%d", at, img.width, img.height);
				ds_image_free(&img);
			} else if (err.status != DS_ERR_DATA) {
				diag("damaged at %zu: status %d %s", at, err.status, err.code);
			}
			free(copy);
		}
		ok(1, "%s jpeg: 50 random byte flips did not crash", prog ? "progressive" : "baseline");
		free(m.data);
	}
	free(buf);
	free(src.pixels);
}

static void test_dct_scaling(void)
{
	ds_image src = smooth(800, 600, 1), img;
	ds_error err = { 0 };
	ds_image_info info;
	void *buf;
	size_t len;
	static const struct { int mw, mh, w, h; } cases[] = {
		{ 0, 0, 800, 600 }, { 800, 600, 800, 600 }, { 801, 0, 800, 600 }, { 100, 100, 200, 150 },
		{ 90, 70, 100, 75 }, { 1, 1, 100, 75 }, { 400, 0, 400, 300 }, { 0, 226, 400, 300 },
		{ 500, 0, 500, 375 }, { 701, 0, 800, 600 }, { 700, 0, 700, 525 },
	};

	ds_image_encode(&src, DS_IMAGE_JPEG, 50, &buf, &len, &err);
	for (size_t i = 0; i < DS_ARRAY_LEN_T(cases); i++) {
		ds_error_clear(&err);
		is_int(ds_image_decode(buf, len, 0, cases[i].mw, cases[i].mh, &img, &info, &err), 0,
		       "decode with minimum %dx%d", cases[i].mw, cases[i].mh);
		ok(img.width == cases[i].w && img.height == cases[i].h, "minimum %dx%d gives %dx%d (got %dx%d)",
		   cases[i].mw, cases[i].mh, cases[i].w, cases[i].h, img.width, img.height);
		ok(info.width == 800 && info.height == 600, "info keeps the full size");
		ds_image_free(&img);
	}
	/* with orientation 6 the minimum applies to the displayed size */
	{
		membuf plain = { 0 }, m;

		mb_put(&plain, buf, len);
		m = with_exif(&plain, 6, 0);
		ds_error_clear(&err);
		is_int(ds_image_decode(m.data, m.len, 0, 150, 100, &img, &info, &err), 0, "decode exif 6 with minimum");
		ok(img.width == 150 && img.height == 200, "exif 6, minimum 150x100 gives 150x200 (got %dx%d)",
		   img.width, img.height);
		ds_image_free(&img);
		is_int(ds_image_decode(m.data, m.len, 0, 160, 100, &img, &info, &err), 0, "decode exif 6 with minimum");
		ok(img.width == 225 && img.height == 300, "exif 6, minimum 160x100 gives 225x300 (got %dx%d)",
		   img.width, img.height);
		ds_image_free(&img);
		free(m.data);
		free(plain.data);
	}
	/* PNG ignores the minimum */
	{
		void *p;
		size_t plen;

		ds_image_encode(&src, DS_IMAGE_PNG, 0, &p, &plen, &err);
		ds_image_decode(p, plen, 0, 100, 100, &img, &info, &err);
		ok(img.width == 800 && img.height == 600, "png decodes full size whatever the minimum");
		ds_image_free(&img);
		free(p);
	}
	free(buf);
	free(src.pixels);
}

static void test_resize(void)
{
	ds_error err = { 0 };
	uint8_t out[64 * 64 * 3];

	{
		uint8_t px[16] = { 0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150 };
		ds_image in = { 4, 4, 1, px };

		is_int(ds_image_resize(&in, 4, 4, 1, DS_RESIZE_STRETCH, out, &err), 0, "resize same size");
		ok(memcmp(out, px, 16) == 0, "same size is a copy");
		is_int(ds_image_resize(&in, 2, 2, 1, DS_RESIZE_STRETCH, out, &err), 0, "resize 4x4 to 2x2");
		ok(out[0] == 25 && out[1] == 45 && out[2] == 105 && out[3] == 125, "2x2 area averages (%d %d %d %d)",
		   out[0], out[1], out[2], out[3]);
		is_int(ds_image_resize(&in, 1, 1, 1, DS_RESIZE_STRETCH, out, &err), 0, "resize 4x4 to 1x1");
		is_int(out[0], 75, "1x1 is the mean");
	}
	{
		uint8_t px[2] = { 0, 255 };
		ds_image in = { 2, 1, 1, px };

		ds_image_resize(&in, 4, 1, 1, DS_RESIZE_STRETCH, out, &err);
		ok(out[0] == 0 && out[1] == 64 && out[2] == 191 && out[3] == 255, "bilinear 2 to 4 (%d %d %d %d)",
		   out[0], out[1], out[2], out[3]);
	}
	{
		uint8_t px[8];
		ds_image in = { 4, 2, 1, px };

		memset(px, 200, sizeof px);
		ds_image_resize(&in, 4, 4, 1, DS_RESIZE_FIT, out, &err);
		ok(out[0] == 0 && out[3] == 0 && out[4] == 200 && out[11] == 200 && out[12] == 0 && out[15] == 0,
		   "fit letterboxes with black, centred");
	}
	{
		uint8_t px[8 * 4];
		ds_image in = { 8, 4, 1, px };
		int good = 1;

		for (int y = 0; y < 4; y++)
			for (int x = 0; x < 8; x++)
				px[y * 8 + x] = (uint8_t)(x * 10 + y);
		ds_image_resize(&in, 4, 4, 1, DS_RESIZE_FILL, out, &err);
		for (int y = 0; y < 4; y++)
			for (int x = 0; x < 4; x++)
				good &= out[y * 4 + x] == (uint8_t)((x + 2) * 10 + y);
		ok(good, "fill crops the centre");
		ds_image_resize(&in, 2, 4, 1, DS_RESIZE_STRETCH, out, &err);
		ok(out[0] == 15 && out[1] == 55, "stretch squeezes one axis only (%d %d)", out[0], out[1]);
	}
	{
		uint8_t rgb[3] = { 255, 0, 0 }, gray[1] = { 77 };
		ds_image in = { 1, 1, 3, rgb }, g = { 1, 1, 1, gray };

		ds_image_resize(&in, 1, 1, 1, DS_RESIZE_STRETCH, out, &err);
		is_int(out[0], 76, "red to gray is BT.601 luma");
		ds_image_resize(&g, 2, 2, 3, DS_RESIZE_FIT, out, &err);
		ok(out[0] == 77 && out[1] == 77 && out[2] == 77 && out[11] == 77, "gray to RGB replicates");
		ds_image_resize(&g, 64, 64, 1, DS_RESIZE_FILL, out, &err);
		ok(out[0] == 77 && out[64 * 64 - 1] == 77, "1x1 grows to 64x64");
	}
	{
		int w = 20000, h = 1;
		ds_image in = { w, h, 1, malloc((size_t)w) };
		int good;

		memset(in.pixels, 255, (size_t)w);
		is_int(ds_image_resize(&in, 8, 8, 1, DS_RESIZE_FIT, out, &err), 0, "20000x1 fits in 8x8");
		good = out[2 * 8] == 0 && out[3 * 8] == 255 && out[3 * 8 + 7] == 255 && out[4 * 8] == 0;
		ok(good, "20000x1 becomes one white row");
		is_int(ds_image_resize(&in, 8, 8, 3, DS_RESIZE_FILL, out, &err), 0, "20000x1 fills 8x8");
		ok(out[0] == 255 && out[8 * 8 * 3 - 1] == 255, "fill of a line is all white");
		free(in.pixels);
		in = (ds_image){ 1, 30000, 1, malloc(30000) };
		memset(in.pixels, 9, 30000);
		is_int(ds_image_resize(&in, 5, 3, 1, DS_RESIZE_STRETCH, out, &err), 0, "1x30000 stretches to 5x3");
		ok(out[0] == 9 && out[14] == 9, "stretch keeps the value");
		free(in.pixels);
	}
	{
		ds_image in = { 3, 3, 2, out };

		ds_error_clear(&err);
		ok(ds_image_resize(&in, 4, 4, 1, DS_RESIZE_FIT, out + 100, &err) != 0, "2-channel input refused");
	}
}

/* Bytes changed anywhere, headers included: every answer is pixels or a
 * status 3 (4 would do for an absurd size), never a crash or a leak. */
static void test_mutations(void)
{
	ds_image src = blocks(4, 3), img;
	ds_error err = { 0 };
	ds_image_info info;
	int bad = 0;

	for (int f = 0; f < 3; f++) {
		membuf m = { 0 };
		void *buf;
		size_t len;

		if (f == 2) {
			m = tj_encode(src.pixels, 64, 48, TJPF_RGB, TJSAMP_420, 80, TJFLAG_PROGRESSIVE);
		} else {
			ds_image_encode(&src, f ? DS_IMAGE_JPEG : DS_IMAGE_PNG, 80, &buf, &len, &err);
			mb_put(&m, buf, len);
			free(buf);
		}
		for (int k = 0; k < 400; k++) {
			uint8_t *copy = malloc(m.len);
			size_t at = (k < 200 ? next() % 700 : next()) % m.len;
			int rc;

			memcpy(copy, m.data, m.len);
			copy[at] = (uint8_t)next();
			if (k % 3 == 0)
				copy[(at + 1 + next() % 16) % m.len] = (uint8_t)next();
			ds_error_clear(&err);
			rc = ds_image_probe(copy, m.len, &info, &err);
			bad += rc != 0 && rc != DS_ERR_DATA;
			rc = decode(copy, m.len - (k % 5 == 0 ? next() % m.len : 0), 0, &img, &info, &err);
			bad += rc != 0 && rc != DS_ERR_DATA && rc != DS_ERR_NOMEM;
			if (rc == 0)
				bad += img.width < 1 || img.height < 1 || !img.pixels;
			else
				bad += img.pixels != NULL || !err.code[0];
			ds_image_free(&img);
			free(copy);
		}
		free(m.data);
	}
	is_int(bad, 0, "1200 mutated files: pixels or status 3, nothing else");
	free(src.pixels);
}

/* Decoding on many threads at once gives the same pixels as on one. */
static void test_threads(void)
{
	ds_image src = smooth(120, 80, 3), ref;
	ds_error err = { 0 };
	void *jpg, *png;
	size_t jlen, plen;
	int bad = 0;

	ds_image_encode(&src, DS_IMAGE_JPEG, 85, &jpg, &jlen, &err);
	ds_image_encode(&src, DS_IMAGE_PNG, 0, &png, &plen, &err);
	decode(jpg, jlen, 3, &ref, NULL, &err);
#pragma omp parallel for reduction(+:bad)
	for (int i = 0; i < 64; i++) {
		ds_image img;
		ds_error e = { 0 };

		if (i % 2) {
			if (ds_image_decode(jpg, jlen, 3, 0, 0, &img, NULL, &e) != 0 ||
			    memcmp(img.pixels, ref.pixels, 120 * 80 * 3) != 0)
				bad++;
		} else if (ds_image_decode(png, plen, 3, 0, 0, &img, NULL, &e) != 0 ||
			   memcmp(img.pixels, src.pixels, 120 * 80 * 3) != 0) {
			bad++;
		}
		ds_image_free(&img);
	}
	is_int(bad, 0, "64 concurrent decodes agree");
	ds_image_free(&ref);
	free(jpg);
	free(png);
	free(src.pixels);
}

int main(void)
{
	test_basics();
	test_png_roundtrip();
	test_png_gray_depths();
	test_png_colour_types();
	test_png_damage();
	test_jpeg_basic();
	test_jpeg_progressive_cmyk();
	test_exif();
	test_jpeg_damage();
	test_dct_scaling();
	test_resize();
	test_mutations();
	test_threads();
	return done_testing();
}
