/* exif.c - the EXIF orientation tag, and turning pixels to match it.
 *
 * Only IFD0's tag 0x0112 is read.  Every offset comes from the file, so
 * each is checked against the block before it is followed. */
#include "image.h"

#include <stdlib.h>
#include <string.h>

static unsigned rd16(const uint8_t *p, int big)
{
	return big ? (unsigned)p[0] << 8 | p[1] : (unsigned)p[1] << 8 | p[0];
}

static uint32_t rd32(const uint8_t *p, int big)
{
	return big ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
		   : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

int ds_exif_orientation(const uint8_t *tiff, size_t len)
{
	uint32_t ifd;
	unsigned count;
	int big;

	if (!tiff || len < 8)
		return 1;
	if (memcmp(tiff, "II", 2) == 0)
		big = 0;
	else if (memcmp(tiff, "MM", 2) == 0)
		big = 1;
	else
		return 1;
	if (rd16(tiff + 2, big) != 42)
		return 1;
	ifd = rd32(tiff + 4, big);
	if (ifd < 8 || ifd > len || len - ifd < 2)
		return 1;
	count = rd16(tiff + ifd, big);
	for (unsigned i = 0; i < count; i++) {
		size_t at = (size_t)ifd + 2 + (size_t)i * 12;
		unsigned type, value;

		if (at > len || len - at < 12)
			return 1;
		if (rd16(tiff + at, big) != 0x0112)
			continue;
		type = rd16(tiff + at + 2, big);
		if (rd32(tiff + at + 4, big) != 1)
			return 1;
		/* SHORT as the standard says; LONG seen in the wild */
		if (type == 3)
			value = rd16(tiff + at + 8, big);
		else if (type == 4)
			value = rd32(tiff + at + 8, big);
		else
			return 1;
		return value >= 1 && value <= 8 ? (int)value : 1;
	}
	return 1;
}

int ds_image_orient(ds_image *img, int orientation, ds_error *err)
{
	int w = img->width, h = img->height, c = img->channels;
	int dw = orientation >= 5 ? h : w, dh = orientation >= 5 ? w : h;
	uint8_t *dst;

	if (orientation < 2 || orientation > 8)
		return 0;
	dst = ds_malloc((size_t)w * (size_t)h * (size_t)c, err);
	if (!dst)
		return DS_ERR_NOMEM;
	/* For each displayed pixel (dx, dy), the stored pixel (sx, sy) it shows. */
	for (int dy = 0; dy < dh; dy++) {
		for (int dx = 0; dx < dw; dx++) {
			int sx, sy;

			switch (orientation) {
			case 2: sx = w - 1 - dx; sy = dy; break;          /* mirrored */
			case 3: sx = w - 1 - dx; sy = h - 1 - dy; break;  /* rotated 180 */
			case 4: sx = dx; sy = h - 1 - dy; break;          /* flipped */
			case 5: sx = dy; sy = dx; break;                  /* transposed */
			case 6: sx = dy; sy = h - 1 - dx; break;          /* turn 90 clockwise to show */
			case 7: sx = w - 1 - dy; sy = h - 1 - dx; break;  /* transversed */
			default: sx = w - 1 - dy; sy = dx; break;         /* 8: turn 90 counter-clockwise */
			}
			memcpy(dst + ((size_t)dy * (size_t)dw + (size_t)dx) * (size_t)c,
			       img->pixels + ((size_t)sy * (size_t)w + (size_t)sx) * (size_t)c, (size_t)c);
		}
	}
	free(img->pixels);
	img->pixels = dst;
	img->width = dw;
	img->height = dh;
	return 0;
}
