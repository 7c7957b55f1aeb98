/* image_png.c - PNG through libpng's classic API.
 *
 * The classic API rather than png_image: it lets every libpng warning reach
 * us, and a warning (an ancillary chunk with a bad CRC, extra compressed
 * data) means the file is damaged, so it fails the decode as "corrupt".
 * Chunks that never affect the pixels we produce (colour management, text)
 * are skipped unparsed, though their CRCs are still checked: a file is not
 * dropped for an odd ICC profile. */
#include "image.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

typedef struct png_ctx {
	const uint8_t *buf;
	size_t len, pos;
	int truncated;          /* the reader ran past the end of the buffer */
	char message[200];      /* the first error or warning */
	/* owned here so that a longjmp out of libpng cannot leak them */
	png_structp png;
	png_infop info;
	uint8_t *raw;
	png_bytep *rows;
	/* encoding */
	uint8_t *out;
	size_t out_len, out_cap;
	int nomem;
} png_ctx;

static void note(png_ctx *ctx, const char *msg)
{
	if (!ctx->message[0])
		snprintf(ctx->message, sizeof ctx->message, "%s", msg ? msg : "error");
}

static void on_error(png_structp png, png_const_charp msg)
{
	note(png_get_error_ptr(png), msg);
	png_longjmp(png, 1);
}

/* A warning stops the decode just as an error does. */
static void on_warning(png_structp png, png_const_charp msg)
{
	note(png_get_error_ptr(png), msg);
	png_longjmp(png, 1);
}

static void on_read(png_structp png, png_bytep data, size_t n)
{
	png_ctx *ctx = png_get_io_ptr(png);

	if (n > ctx->len - ctx->pos) {
		ctx->truncated = 1;
		png_error(png, "file ends early");
	}
	memcpy(data, ctx->buf + ctx->pos, n);
	ctx->pos += n;
}

static void ctx_free(png_ctx *ctx)
{
	if (ctx->png)
		png_destroy_read_struct(&ctx->png, ctx->info ? &ctx->info : NULL, NULL);
	free(ctx->rows);
	free(ctx->raw);
	ctx->rows = NULL;
	ctx->raw = NULL;
}

static int fail(png_ctx *ctx, ds_error *err)
{
	if (ctx->truncated)
		return ds_error_set(err, DS_ERR_DATA, "truncated", "PNG: file is truncated");
	if (strstr(ctx->message, "memory"))
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "PNG: %s", ctx->message);
	return ds_error_set(err, DS_ERR_DATA, "corrupt", "PNG: %s", ctx->message);
}

static int ctx_open(png_ctx *ctx, const uint8_t *buf, size_t len, ds_error *err)
{
	memset(ctx, 0, sizeof *ctx);
	ctx->buf = buf;
	ctx->len = len;
	ctx->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx, on_error, on_warning);
	if (ctx->png)
		ctx->info = png_create_info_struct(ctx->png);
	if (!ctx->png || !ctx->info) {
		ctx_free(ctx);
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "PNG: out of memory");
	}
	return 0;
}

/* Under setjmp: these may warn, and a warning jumps. */
static void read_setup(png_ctx *ctx)
{
	/* chunk names are 4 letters each, one after the other */
	static const png_byte skipped[] = "iCCP" "sRGB" "gAMA" "cHRM" "tEXt" "zTXt" "iTXt";

	png_set_read_fn(ctx->png, ctx, on_read);
	png_set_crc_action(ctx->png, PNG_CRC_DEFAULT, PNG_CRC_ERROR_QUIT);
	png_set_keep_unknown_chunks(ctx->png, PNG_HANDLE_CHUNK_NEVER, skipped, (int)(sizeof skipped - 1) / 4);
}

static void fill_info(png_ctx *ctx, ds_image_info *info)
{
	png_structp png = ctx->png;
	int ctype = png_get_color_type(png, ctx->info);
	int trns = png_get_valid(png, ctx->info, PNG_INFO_tRNS) != 0;

	info->format = DS_IMAGE_PNG;
	info->width = (int)png_get_image_width(png, ctx->info);
	info->height = (int)png_get_image_height(png, ctx->info);
	info->bit_depth = png_get_bit_depth(png, ctx->info);
	info->is_palette = ctype == PNG_COLOR_TYPE_PALETTE;
	info->has_alpha = (ctype & PNG_COLOR_MASK_ALPHA) != 0 || trns;
	info->orientation = 1;
	switch (ctype) {
	case PNG_COLOR_TYPE_GRAY: info->channels = 1; break;
	case PNG_COLOR_TYPE_GRAY_ALPHA: info->channels = 2; break;
	case PNG_COLOR_TYPE_RGB_ALPHA: info->channels = 4; break;
	default: info->channels = 3; break;   /* RGB, and a palette of RGB entries */
	}
}

static int probe_jmp(png_ctx *ctx, ds_image_info *info)
{
	if (setjmp(png_jmpbuf(ctx->png)))
		return -1;
	read_setup(ctx);
	png_read_info(ctx->png, ctx->info);
	fill_info(ctx, info);
	return 0;
}

int ds_png_probe(const uint8_t *buf, size_t len, ds_image_info *info, ds_error *err)
{
	png_ctx ctx;
	int rc;

	if ((rc = ctx_open(&ctx, buf, len, err)) != 0)
		return rc;
	rc = probe_jmp(&ctx, info) ? fail(&ctx, err) : 0;
	ctx_free(&ctx);
	return rc;
}

/* Reads the whole image into ctx->raw as 8-bit G, GA, RGB or RGBA; returns
 * the number of channels, or -1 after a libpng error. */
static int decode_jmp(png_ctx *ctx, ds_image_info *info, size_t *rowbytes, ds_error *err)
{
	png_structp png = ctx->png;
	int w, h;

	if (setjmp(png_jmpbuf(png)))
		return -1;
	read_setup(ctx);
	png_read_info(png, ctx->info);
	fill_info(ctx, info);
	png_set_expand(png);          /* palette to RGB, gray to 8 bits, tRNS to alpha */
	png_set_scale_16(png);        /* rounds, where strip_16 would truncate */
	png_set_interlace_handling(png);
	png_read_update_info(png, ctx->info);
	w = info->width;
	h = info->height;
	if ((uint64_t)w * (uint64_t)h > DS_IMAGE_MAX_PIXELS) {
		ds_error_set(err, DS_ERR_DATA, "too_large", "PNG: image of %d x %d pixels is too large to decode", w, h);
		return 0;
	}
	*rowbytes = png_get_rowbytes(png, ctx->info);
	ctx->raw = malloc(*rowbytes * (size_t)h);
	ctx->rows = malloc(sizeof *ctx->rows * (size_t)h);
	if (!ctx->raw || !ctx->rows)
		png_error(png, "out of memory");
	for (int y = 0; y < h; y++)
		ctx->rows[y] = ctx->raw + (size_t)y * *rowbytes;
	png_read_image(png, ctx->rows);
	png_read_end(png, NULL);   /* the CRCs and chunks after the pixels count too */
	return png_get_channels(png, ctx->info);
}

/* Alpha over white, then gray or RGB as asked. */
static void convert(const uint8_t *src, int sc, uint8_t *dst, int dc, size_t n)
{
	for (size_t i = 0; i < n; i++, src += sc, dst += dc) {
		unsigned r, g, b, a = 255;

		if (sc <= 2) {
			r = g = b = src[0];
			if (sc == 2)
				a = src[1];
		} else {
			r = src[0];
			g = src[1];
			b = src[2];
			if (sc == 4)
				a = src[3];
		}
		if (a != 255) {
			r = (r * a + 255 * (255 - a) + 127) / 255;
			g = (g * a + 255 * (255 - a) + 127) / 255;
			b = (b * a + 255 * (255 - a) + 127) / 255;
		}
		if (dc == 1) {
			dst[0] = sc <= 2 ? (uint8_t)r : ds_luma(r, g, b);
		} else {
			dst[0] = (uint8_t)r;
			dst[1] = (uint8_t)g;
			dst[2] = (uint8_t)b;
		}
	}
}

int ds_png_decode(const uint8_t *buf, size_t len, int channels, ds_image *out, ds_image_info *info,
		  ds_error *err)
{
	png_ctx ctx;
	size_t rowbytes = 0;
	int rc, sc, dc;

	if ((rc = ctx_open(&ctx, buf, len, err)) != 0)
		return rc;
	sc = decode_jmp(&ctx, info, &rowbytes, err);
	if (sc < 0) {
		rc = fail(&ctx, err);
		goto out;
	}
	if (sc == 0) {
		rc = err ? err->status : DS_ERR_DATA;
		goto out;
	}
	dc = ds_image_want_channels(channels, sc <= 2 && !info->is_palette);
	if ((rc = ds_image_alloc(out, info->width, info->height, dc, err)) != 0)
		goto out;
	for (int y = 0; y < info->height; y++)
		convert(ctx.raw + (size_t)y * rowbytes, sc, out->pixels + (size_t)y * (size_t)info->width * (size_t)dc,
			dc, (size_t)info->width);
out:
	ctx_free(&ctx);
	if (rc)
		ds_image_free(out);
	return rc;
}

/* ------------------------------------------------------------ encoding */

static void on_write(png_structp png, png_bytep data, size_t n)
{
	png_ctx *ctx = png_get_io_ptr(png);

	if (n > ctx->out_cap - ctx->out_len) {
		size_t cap = ctx->out_cap ? ctx->out_cap : 4096;
		uint8_t *p;

		while (cap - ctx->out_len < n)
			cap *= 2;
		p = realloc(ctx->out, cap);
		if (!p) {
			ctx->nomem = 1;
			png_error(png, "out of memory");
		}
		ctx->out = p;
		ctx->out_cap = cap;
	}
	memcpy(ctx->out + ctx->out_len, data, n);
	ctx->out_len += n;
}

static void on_flush(png_structp png)
{
	(void)png;
}

static int encode_jmp(png_ctx *ctx, const ds_image *img)
{
	png_structp png = ctx->png;
	size_t stride = (size_t)img->width * (size_t)img->channels;

	if (setjmp(png_jmpbuf(png)))
		return -1;
	png_set_write_fn(png, ctx, on_write, on_flush);
	png_set_IHDR(png, ctx->info, (png_uint_32)img->width, (png_uint_32)img->height, 8,
		     img->channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
		     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	png_write_info(png, ctx->info);
	for (int y = 0; y < img->height; y++)
		png_write_row(png, img->pixels + (size_t)y * stride);
	png_write_end(png, NULL);
	return 0;
}

int ds_png_encode(const ds_image *img, void **buf, size_t *len, ds_error *err)
{
	png_ctx ctx;
	int rc = 0;

	memset(&ctx, 0, sizeof ctx);
	ctx.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
	if (ctx.png)
		ctx.info = png_create_info_struct(ctx.png);
	if (!ctx.png || !ctx.info) {
		rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "PNG: out of memory");
		goto out;
	}
	if (encode_jmp(&ctx, img) != 0) {
		rc = ctx.nomem ? ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "PNG: out of memory")
			       : ds_error_set(err, DS_ERR_RUN, "encode_failed", "PNG: %s", ctx.message);
		goto out;
	}
	*buf = ctx.out;
	*len = ctx.out_len;
	ctx.out = NULL;
out:
	if (ctx.png)
		png_destroy_write_struct(&ctx.png, ctx.info ? &ctx.info : NULL);
	free(ctx.out);
	return rc;
}
