/* image.c - which decoder a buffer goes to, and what all formats share. */
#include "image.h"

#include <stdlib.h>
#include <string.h>

static const uint8_t png_magic[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };

const char *ds_image_format_name(ds_image_format fmt)
{
	switch (fmt) {
	case DS_IMAGE_PNG: return "png";
	case DS_IMAGE_JPEG: return "jpeg";
	default: return "unknown";
	}
}

/* A prefix of a signature still counts, so that a file cut after a few
 * bytes is reported as truncated rather than as not an image. */
ds_image_format ds_image_sniff(const void *buf, size_t len)
{
	const uint8_t *p = buf;

	if (!p || len < 2)
		return DS_IMAGE_UNKNOWN;
	if (len >= 4 && memcmp(p, png_magic, len < sizeof png_magic ? len : sizeof png_magic) == 0)
		return DS_IMAGE_PNG;
	if (p[0] == 0xff && p[1] == 0xd8 && (len == 2 || p[2] == 0xff))
		return DS_IMAGE_JPEG;
	return DS_IMAGE_UNKNOWN;
}

static int not_decodable(const void *buf, size_t len, ds_error *err)
{
	if (!buf || len == 0)
		return ds_error_set(err, DS_ERR_DATA, "empty", "empty file");
	return ds_error_set(err, DS_ERR_DATA, "not_image", "not a PNG or JPEG image");
}

int ds_image_probe(const void *buf, size_t len, ds_image_info *info, ds_error *err)
{
	ds_image_info tmp;

	if (!info)
		info = &tmp;
	memset(info, 0, sizeof *info);
	info->orientation = 1;
	switch (ds_image_sniff(buf, len)) {
	case DS_IMAGE_PNG: return ds_png_probe(buf, len, info, err);
	case DS_IMAGE_JPEG: return ds_jpeg_probe(buf, len, info, err);
	default: return not_decodable(buf, len, err);
	}
}

int ds_image_decode(const void *buf, size_t len, int channels, int min_width, int min_height,
		    ds_image *out, ds_image_info *info, ds_error *err)
{
	ds_image_info tmp;

	memset(out, 0, sizeof *out);
	if (!info)
		info = &tmp;
	memset(info, 0, sizeof *info);
	info->orientation = 1;
	switch (ds_image_sniff(buf, len)) {
	case DS_IMAGE_PNG: return ds_png_decode(buf, len, channels, out, info, err);
	case DS_IMAGE_JPEG: return ds_jpeg_decode(buf, len, channels, min_width, min_height, out, info, err);
	default: return not_decodable(buf, len, err);
	}
}

void ds_image_free(ds_image *img)
{
	if (!img)
		return;
	free(img->pixels);
	memset(img, 0, sizeof *img);
}

int ds_image_encode(const ds_image *img, ds_image_format fmt, int quality, void **buf, size_t *len,
		    ds_error *err)
{
	*buf = NULL;
	*len = 0;
	if (!img || !img->pixels || img->width < 1 || img->height < 1 ||
	    (img->channels != 1 && img->channels != 3))
		return ds_error_set(err, DS_ERR_RUN, "bad_image", "cannot encode: not a gray or RGB image");
	switch (fmt) {
	case DS_IMAGE_PNG: return ds_png_encode(img, buf, len, err);
	case DS_IMAGE_JPEG: return ds_jpeg_encode(img, quality, buf, len, err);
	default: return ds_error_set(err, DS_ERR_RUN, "bad_format", "cannot encode: unknown image format");
	}
}

int ds_resize_mode_parse(const char *text, ds_resize_mode *out)
{
	static const struct { const char *name; ds_resize_mode mode; } modes[] = {
		{ "fit", DS_RESIZE_FIT }, { "fill", DS_RESIZE_FILL }, { "stretch", DS_RESIZE_STRETCH },
	};

	for (size_t i = 0; text && i < DS_ARRAY_LEN(modes); i++) {
		if (strcmp(text, modes[i].name) == 0) {
			*out = modes[i].mode;
			return 0;
		}
	}
	return -1;
}

int ds_image_want_channels(int asked, int source_is_gray)
{
	if (asked == 0)
		return source_is_gray ? 1 : 3;
	return asked == 1 ? 1 : 3;
}

int ds_image_alloc(ds_image *img, int width, int height, int channels, ds_error *err)
{
	uint64_t pixels = (uint64_t)width * (uint64_t)height;

	if (width < 1 || height < 1)
		return ds_error_set(err, DS_ERR_DATA, "corrupt", "image has no pixels (%d x %d)", width, height);
	if (pixels > DS_IMAGE_MAX_PIXELS)
		return ds_error_set(err, DS_ERR_DATA, "too_large", "image of %d x %d pixels is too large to decode",
				    width, height);
	img->pixels = ds_malloc((size_t)pixels * (size_t)channels, err);
	if (!img->pixels)
		return DS_ERR_NOMEM;
	img->width = width;
	img->height = height;
	img->channels = channels;
	return 0;
}
