/* test_preprocess - a model's ds.preprocess against hand-computed
 * references: normalisation, resize modes, 16-bit and alpha images, text. */
#include "config.h"
#include "ds.h"
#include "tap.h"

#include <png.h>
#include <stdint.h>

typedef struct membuf {
	uint8_t *data;
	size_t len, cap;
} membuf;

static void on_write(png_structp png, png_bytep data, size_t n)
{
	membuf *m = png_get_io_ptr(png);

	if (m->len + n > m->cap) {
		m->cap = (m->len + n) * 2;
		m->data = realloc(m->data, m->cap);
	}
	memcpy(m->data + m->len, data, n);
	m->len += n;
}

static void on_flush(png_structp png)
{
	(void)png;
}

/* A PNG of w x h pixels of color_type at bit depth from rows of bytes
 * (16-bit samples big-endian, as PNG stores them). */
static membuf make_png(int w, int h, int color_type, int depth, const uint8_t *pixels, size_t row_bytes)
{
	membuf m = { 0 };
	png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
	png_infop info = png_create_info_struct(png);

	if (setjmp(png_jmpbuf(png))) {
		png_destroy_write_struct(&png, &info);
		free(m.data);
		m.data = NULL;
		return m;
	}
	png_set_write_fn(png, &m, on_write, on_flush);
	png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color_type, PNG_INTERLACE_NONE,
		     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	png_write_info(png, info);
	for (int y = 0; y < h; y++)
		png_write_row(png, pixels + (size_t)y * row_bytes);
	png_write_end(png, info);
	png_destroy_write_struct(&png, &info);
	return m;
}

static ds_preprocess *image_pp(const char *spec_text, int c, int h, int w)
{
	ds_shape in = { DS_F32, 4, { 1, c, h, w } };
	json_t *spec = spec_text ? json_loads(spec_text, 0, NULL) : NULL;
	ds_preprocess *pp = NULL;
	ds_error err = { 0 };

	if (ds_preprocess_new(spec, &in, &pp, &err))
		diag("%s", err.message);
	json_decref(spec);
	return pp;
}

static void test_normalize(void)
{
	json_t *spec = json_pack("{s:f, s:[f, f, f], s:[f, f, f]}", "scale", 1.0 / 255.0, "mean", 0.5, 0.25, 0.0,
				 "std", 0.5, 2.0, 1.0);
	const uint8_t hwc[2 * 1 * 3] = { 0, 128, 255, 51, 102, 204 };   /* two RGB pixels in a row */
	float out[6];
	ds_normalize n;
	ds_error err = { 0 };

	is_int(ds_normalize_from_json(spec, &n, &err), 0, "mean and std per channel");
	ds_normalize_apply(&n, hwc, 1, 2, 3, out);
	/* CHW: channel 0 holds both pixels' red, and so on. */
	is_near(out[0], (0 / 255.0 - 0.5) / 0.5, 1e-6, "R of pixel 0");
	is_near(out[1], (51 / 255.0 - 0.5) / 0.5, 1e-6, "R of pixel 1");
	is_near(out[2], (128 / 255.0 - 0.25) / 2.0, 1e-6, "G of pixel 0");
	is_near(out[3], (102 / 255.0 - 0.25) / 2.0, 1e-6, "G of pixel 1");
	is_near(out[4], 255 / 255.0, 1e-6, "B of pixel 0");
	is_near(out[5], 204 / 255.0, 1e-6, "B of pixel 1");
	json_decref(spec);

	spec = json_pack("{s:[f], s:[f]}", "mean", 0.5, "std", 0.25);
	is_int(ds_normalize_from_json(spec, &n, &err), 0, "one mean and std for every channel");
	ok(n.mean[2] == 0.5f && n.inv_std[2] == 4.0f && n.scale == 1.0f / 255.0f, "broadcast, default scale");
	json_decref(spec);

	spec = json_pack("{s:[f, f]}", "std", 1.0, 0.0);
	is_int(ds_normalize_from_json(spec, &n, &err), DS_ERR_DATA, "a std of 0 is bad data");
	json_decref(spec);
	is_int(ds_normalize_from_json(NULL, &n, &err), 0, "no spec: the defaults");
	ok(n.scale == 1.0f / 255.0f && n.mean[0] == 0 && n.inv_std[0] == 1, "scale 1/255, mean 0, std 1");
}

static void test_spec(void)
{
	ds_shape text = { DS_I32, 2, { 1, 8 } }, vec = { DS_F32, 2, { 1, 10 } };
	ds_preprocess *pp = NULL;
	ds_error err = { 0 };
	json_t *spec;
	int w, h, c;

	pp = image_pp("{\"kind\":\"image\",\"width\":28,\"height\":28,\"channels\":1,\"resize\":\"fit\"}", 1, 28, 28);
	ok(pp != NULL, "a spec that agrees with the input");
	ds_preprocess_image_size(pp, &w, &h, &c);
	ok(w == 28 && h == 28 && c == 1 && ds_preprocess_item_elems(pp) == 784 && ds_preprocess_dtype(pp) == DS_F32,
	   "28x28x1, 784 F32 per item");
	ds_preprocess_free(pp);

	spec = json_pack("{s:s, s:i, s:i, s:i}", "kind", "image", "width", 32, "height", 32, "channels", 1);
	is_int(ds_preprocess_new(spec, &(ds_shape){ DS_F32, 4, { 1, 1, 28, 28 } }, &pp, &err), DS_ERR_DATA,
	       "a spec of another size than the input is bad data");
	ok(strstr(err.message, "32x32x1") != NULL, "the message gives both: %s", err.message);
	json_decref(spec);

	ds_error_clear(&err);
	is_int(ds_preprocess_new(NULL, &vec, &pp, &err), DS_ERR_DATA, "an input that takes neither images nor ids");
	ds_error_clear(&err);
	spec = json_pack("{s:s}", "kind", "image");
	is_int(ds_preprocess_new(spec, &text, &pp, &err), DS_ERR_DATA, "an image spec on an ids input");
	json_decref(spec);
	ds_error_clear(&err);
	is_int(ds_preprocess_new(NULL, &text, &pp, &err), 0, "ids without a spec: packed ids only");
	ok(pp && !ds_preprocess_has_tokenizer(pp) && ds_preprocess_length(pp) == 8, "no tokenizer, length 8");
	{
		int32_t row[8];

		is_int(ds_preprocess_text(pp, "hi", 2, row, &err), DS_ERR_USAGE, "raw text without a tokenizer");
	}
	ds_preprocess_free(pp);
}

/* Gray 4 x 2, columns 0, 100, 200, 250, into a 2 x 2 model. */
static void test_resize_modes(void)
{
	uint8_t px[8] = { 0, 100, 200, 250, 0, 100, 200, 250 };
	ds_image img = { 4, 2, 1, px };
	float out[4];
	ds_error err = { 0 };
	ds_preprocess *pp;
	const double k = 1 / 255.0;

	pp = image_pp("{\"resize\":\"stretch\",\"scale\":1}", 1, 2, 2);
	is_int(ds_preprocess_pixels(pp, &img, out, &err), 0, "stretch");
	ok(fabs(out[0] - 50) <= 1 && fabs(out[1] - 225) <= 1 && fabs(out[2] - 50) <= 1 && fabs(out[3] - 225) <= 1,
	   "stretch averages pairs of columns: %g %g %g %g", out[0], out[1], out[2], out[3]);
	ds_preprocess_free(pp);

	pp = image_pp("{\"resize\":\"fill\"}", 1, 2, 2);
	is_int(ds_preprocess_pixels(pp, &img, out, &err), 0, "fill");
	ok(fabs(out[0] - 100 * k) < 1.5 * k && fabs(out[1] - 200 * k) < 1.5 * k && fabs(out[3] - 200 * k) < 1.5 * k,
	   "fill keeps the middle columns: %g %g", out[0] / k, out[1] / k);
	ds_preprocess_free(pp);

	pp = image_pp("{\"resize\":\"fit\"}", 1, 2, 2);
	is_int(ds_preprocess_pixels(pp, &img, out, &err), 0, "fit");
	ok((fabs(out[0] - 50 * k) <= k && fabs(out[1] - 225 * k) <= k && out[2] == 0 && out[3] == 0) ||
	   (out[0] == 0 && out[1] == 0 && fabs(out[2] - 50 * k) <= k && fabs(out[3] - 225 * k) <= k),
	   "fit letterboxes one row with black: %g %g %g %g", out[0] / k, out[1] / k, out[2] / k, out[3] / k);
	ds_preprocess_free(pp);

	/* The model's own size: normalised as it is, bit for bit. */
	pp = image_pp(NULL, 1, 2, 4);
	{
		float same[8], ref[8];
		ds_normalize n;

		is_int(ds_preprocess_pixels(pp, &img, same, &err), 0, "the model's size");
		ds_normalize_from_json(NULL, &n, &err);
		ds_normalize_apply(&n, px, 2, 4, 1, ref);
		ok(memcmp(same, ref, sizeof ref) == 0, "no resampling of an item of the model's shape");
	}
	ds_preprocess_free(pp);

	/* Gray into an RGB model: three equal planes. */
	pp = image_pp(NULL, 3, 2, 4);
	{
		float rgb[24];

		ds_error_clear(&err);
		if (!is_int(ds_preprocess_pixels(pp, &img, rgb, &err), 0, "gray into RGB"))
			diag("%s", err.message);
		ok(memcmp(rgb, rgb + 8, 8 * sizeof *rgb) == 0 && memcmp(rgb, rgb + 16, 8 * sizeof *rgb) == 0 &&
		   fabs(rgb[3] - 250 * k) < 1e-6, "the gray copied into R, G and B");
	}
	ds_preprocess_free(pp);
}

static void test_deep_and_alpha(void)
{
	uint8_t gray8[2 * 2] = { 10, 20, 30, 255 }, gray16[2 * 4], rgba16[2 * 2 * 8], rgb8[2 * 2 * 3];
	float a[4], b[4], c[12], d[12];
	ds_error err = { 0 };
	ds_preprocess *pp = image_pp(NULL, 1, 2, 2), *pp3 = image_pp(NULL, 3, 2, 2);
	membuf p8, p16, pa, p3;

	for (int i = 0; i < 4; i++) {
		gray16[2 * i] = gray8[i];        /* v * 257 reduces to v */
		gray16[2 * i + 1] = gray8[i];
		for (int ch = 0; ch < 3; ch++) {
			uint8_t v = (uint8_t)(gray8[i] + 40 * ch);

			rgb8[3 * i + ch] = v;
			rgba16[8 * i + 2 * ch] = v;
			rgba16[8 * i + 2 * ch + 1] = v;
		}
		rgba16[8 * i + 6] = 0xff;        /* opaque */
		rgba16[8 * i + 7] = 0xff;
	}
	/* The last pixel fully transparent: white after compositing. */
	rgba16[8 * 3 + 6] = rgba16[8 * 3 + 7] = 0;
	rgb8[9] = rgb8[10] = rgb8[11] = 255;
	p8 = make_png(2, 2, PNG_COLOR_TYPE_GRAY, 8, gray8, 2);
	p16 = make_png(2, 2, PNG_COLOR_TYPE_GRAY, 16, gray16, 4);
	pa = make_png(2, 2, PNG_COLOR_TYPE_RGB_ALPHA, 16, rgba16, 16);
	p3 = make_png(2, 2, PNG_COLOR_TYPE_RGB, 8, rgb8, 6);
	ok(p8.data && p16.data && pa.data && p3.data, "fixture PNGs");
	is_int(ds_preprocess_image(pp, p8.data, p8.len, a, &err), 0, "8-bit gray");
	is_int(ds_preprocess_image(pp, p16.data, p16.len, b, &err), 0, "16-bit gray");
	ok(memcmp(a, b, sizeof a) == 0, "16-bit gray reads as its 8-bit twin");
	is_int(ds_preprocess_image(pp3, pa.data, pa.len, c, &err), 0, "16-bit RGBA");
	is_int(ds_preprocess_image(pp3, p3.data, p3.len, d, &err), 0, "8-bit RGB");
	ok(memcmp(c, d, sizeof c) == 0, "16-bit RGBA over white reads as the 8-bit RGB twin");
	ok(c[3] == 1.0f && c[7] == 1.0f && c[11] == 1.0f, "the transparent pixel is white");
	is_int(ds_preprocess_image(pp, "junk", 4, a, &err), DS_ERR_DATA, "not an image: bad data");
	is_str(err.code, "not_image", "with its code");
	free(p8.data);
	free(p16.data);
	free(pa.data);
	free(p3.data);
	ds_preprocess_free(pp);
	ds_preprocess_free(pp3);
}

static void test_text(void)
{
	ds_shape in = { DS_I32, 2, { 1, 6 } };
	json_t *spec = json_pack("{s:s, s:{s:s}, s:i}", "kind", "text", "tokenizer", "kind", "bytes", "max_chars", 4);
	ds_preprocess *pp = NULL;
	ds_error err = { 0 };
	int32_t row[6];
	const int32_t ids[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };

	is_int(ds_preprocess_new(spec, &in, &pp, &err), 0, "a bytes tokenizer, rows of 6");
	json_decref(spec);
	is_int(ds_preprocess_text(pp, "  a \t b  ", 9, row, &err), 0, "white space");
	ok(row[0] == 'a' && row[1] == ' ' && row[2] == 'b' && row[3] == -1 && row[5] == -1,
	   "normalised to 'a b', padded with -1");
	is_int(ds_preprocess_text(pp, "abcdefgh", 8, row, &err), 0, "a long text");
	ok(row[3] == 'd' && row[4] == -1, "cut at max_chars (4 code points)");
	is_int(ds_preprocess_text(pp, "\xc3\xa9t\xc3\xa9!!", 8, row, &err), 0, "UTF-8");
	ok(row[0] == 0xc3 && row[4] == 0xa9 && row[5] == '!', "four code points are six bytes");
	is_int(ds_preprocess_text(pp, "   ", 3, row, &err), DS_ERR_DATA, "nothing left is an error");
	is_str(err.code, "empty", "code empty");
	ds_preprocess_tokens(pp, ids, 8, row);
	ok(row[0] == 1 && row[5] == 6, "packed ids cut to the row");
	ds_preprocess_tokens(pp, ids, 2, row);
	ok(row[1] == 2 && row[2] == -1 && row[5] == -1, "packed ids padded with -1");
	ds_preprocess_free(pp);
}

int main(void)
{
	test_normalize();
	test_spec();
	test_resize_modes();
	test_deep_and_alpha();
	test_text();
	return done_testing();
}
