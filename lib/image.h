/* image.h - what the image files of libds (image.c, image_png.c,
 * image_jpeg.c, exif.c, resize.c) share and nothing else sees. */
#ifndef DS_IMAGE_H
#define DS_IMAGE_H

#include "internal.h"

/* Decoded images larger than this are refused (status 3 "too_large") before
 * any pixel buffer is allocated: a 60-byte header may claim 65535 x 65535,
 * and decoding runs on every thread at once. */
#define DS_IMAGE_MAX_PIXELS ((uint64_t)1 << 28)

/* Channels a decoder should produce: 1 or 3, or 0 to keep gray as gray. */
int ds_image_want_channels(int asked, int source_is_gray);

/* Allocate img->pixels for width x height x channels, checking the limit. */
int ds_image_alloc(ds_image *img, int width, int height, int channels, ds_error *err);

/* BT.601 luma of an 8-bit RGB triple, rounded. */
static inline uint8_t ds_luma(unsigned r, unsigned g, unsigned b)
{
	return (uint8_t)((299 * r + 587 * g + 114 * b + 500) / 1000);
}

int ds_png_probe(const uint8_t *buf, size_t len, ds_image_info *info, ds_error *err);
int ds_png_decode(const uint8_t *buf, size_t len, int channels, ds_image *out, ds_image_info *info,
		  ds_error *err);
int ds_png_encode(const ds_image *img, void **buf, size_t *len, ds_error *err);

int ds_jpeg_probe(const uint8_t *buf, size_t len, ds_image_info *info, ds_error *err);
int ds_jpeg_decode(const uint8_t *buf, size_t len, int channels, int min_width, int min_height,
		   ds_image *out, ds_image_info *info, ds_error *err);
int ds_jpeg_encode(const ds_image *img, int quality, void **buf, size_t *len, ds_error *err);

/* The orientation (1..8) in a TIFF-structured EXIF block (the APP1 payload
 * after "Exif\0\0"); 1 when absent or unreadable: a broken EXIF block is not
 * a reason to lose the image. */
int ds_exif_orientation(const uint8_t *tiff, size_t len);
/* Turn decoded pixels as stored into pixels as displayed.  Orientations 5..8
 * swap width and height. */
int ds_image_orient(ds_image *img, int orientation, ds_error *err);

#endif
