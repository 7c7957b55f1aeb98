/* image_jpeg.c - JPEG through the TurboJPEG API of libjpeg-turbo.
 *
 * Each call makes its own tjhandle: decoding runs on all threads at once and
 * a handle holds per-image state.  TurboJPEG does not say whether a file is
 * progressive or carries EXIF, so the markers before the first scan are
 * walked here too; the walk also tells a file cut in its headers (truncated)
 * from one whose headers are wrong (corrupt). */
#include "image.h"

#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

typedef struct jpeg_header {
	int width, height, components, precision;
	int sof;                /* the SOFn marker, 0 when none was seen */
	int orientation;
	int adobe_transform;    /* APP14 "Adobe" transform flag, -1 when absent */
	int ended;              /* the data ends inside the headers */
	int bad;                /* the marker structure is broken */
} jpeg_header;

static unsigned be16(const uint8_t *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static int is_sof(int m)
{
	return m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc;
}

static int is_progressive(int m)
{
	return m == 0xc2 || m == 0xc6 || m == 0xca || m == 0xce;
}

/* Lossless and hierarchical processes, which libjpeg-turbo 2.1 cannot decode. */
static int is_unsupported(int m)
{
	return m == 0xc3 || m == 0xc5 || m == 0xc6 || m == 0xc7 || m == 0xcb || m == 0xcd || m == 0xce ||
	       m == 0xcf;
}

/* Walk the marker segments from SOI to the first SOS. */
static void walk(const uint8_t *buf, size_t len, jpeg_header *hd)
{
	size_t pos = 2;
	int exif_seen = 0;

	memset(hd, 0, sizeof *hd);
	hd->orientation = 1;
	hd->adobe_transform = -1;
	for (;;) {
		const uint8_t *seg;
		size_t seglen;
		int m;

		if (pos >= len) {
			hd->ended = 1;
			return;
		}
		if (buf[pos] != 0xff) {
			hd->bad = 1;
			return;
		}
		while (pos < len && buf[pos] == 0xff)   /* fill bytes */
			pos++;
		if (pos >= len) {
			hd->ended = 1;
			return;
		}
		m = buf[pos++];
		if (m == 0x01 || (m >= 0xd0 && m <= 0xd7))
			continue;
		if (m == 0xd8 || m == 0xd9 || m == 0x00) {   /* SOI again, EOI before any scan */
			hd->bad = 1;
			return;
		}
		if (len - pos < 2) {
			hd->ended = 1;
			return;
		}
		seglen = be16(buf + pos);
		if (seglen < 2) {
			hd->bad = 1;
			return;
		}
		if (seglen > len - pos) {
			hd->ended = 1;
			return;
		}
		seg = buf + pos + 2;
		seglen -= 2;
		if (is_sof(m) && !hd->sof) {
			if (seglen < 6) {
				hd->bad = 1;
				return;
			}
			hd->sof = m;
			hd->precision = seg[0];
			hd->height = (int)be16(seg + 1);
			hd->width = (int)be16(seg + 3);
			hd->components = seg[5];
		} else if (m == 0xe1 && !exif_seen && seglen >= 6 && memcmp(seg, "Exif\0\0", 6) == 0) {
			exif_seen = 1;
			hd->orientation = ds_exif_orientation(seg + 6, seglen - 6);
		} else if (m == 0xee && seglen >= 12 && memcmp(seg, "Adobe", 5) == 0) {
			hd->adobe_transform = seg[11];
		} else if (m == 0xda) {
			return;
		}
		pos += seglen + 2;
	}
}

/* The header problems the walk can name without libjpeg. */
static int check_header(const jpeg_header *hd, ds_error *err)
{
	if (hd->ended)
		return ds_error_set(err, DS_ERR_DATA, "truncated", "JPEG: file ends inside its headers");
	if (hd->bad || !hd->sof)
		return ds_error_set(err, DS_ERR_DATA, "corrupt", "JPEG: broken marker structure");
	if (is_unsupported(hd->sof) || hd->precision != 8)
		return ds_error_set(err, DS_ERR_DATA, "unsupported",
				    "JPEG: %d-bit %s coding is not supported", hd->precision,
				    is_unsupported(hd->sof) ? "lossless or hierarchical" : "sample");
	if (hd->width < 1 || hd->height < 1 || (hd->components != 1 && hd->components != 3 && hd->components != 4))
		return ds_error_set(err, DS_ERR_DATA, "corrupt", "JPEG: bad frame header (%d x %d, %d components)",
				    hd->width, hd->height, hd->components);
	return 0;
}

static void fill_info(const jpeg_header *hd, ds_image_info *info)
{
	int swap = hd->orientation >= 5;

	info->format = DS_IMAGE_JPEG;
	info->width = swap ? hd->height : hd->width;
	info->height = swap ? hd->width : hd->height;
	info->channels = hd->components;
	info->bit_depth = hd->precision;
	info->has_alpha = 0;
	info->is_palette = 0;
	info->is_cmyk = hd->components == 4;
	info->is_progressive = is_progressive(hd->sof);
	info->orientation = hd->orientation;
}

int ds_jpeg_probe(const uint8_t *buf, size_t len, ds_image_info *info, ds_error *err)
{
	jpeg_header hd;
	int rc;

	walk(buf, len, &hd);
	if ((rc = check_header(&hd, err)) != 0)
		return rc;
	fill_info(&hd, info);
	return 0;
}

static int tj_fail(tjhandle tj, ds_error *err)
{
	const char *msg = tjGetErrorStr2(tj);

	if (!msg)
		msg = "unknown error";
	if (strstr(msg, "Premature end"))
		return ds_error_set(err, DS_ERR_DATA, "truncated", "JPEG: %s", msg);
	if (strstr(msg, "Insufficient memory") || strstr(msg, "Memory allocation"))
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "JPEG: %s", msg);
	if (strstr(msg, "subsampling"))
		return ds_error_set(err, DS_ERR_DATA, "unsupported", "JPEG: %s", msg);
	return ds_error_set(err, DS_ERR_DATA, "corrupt", "JPEG: %s", msg);
}

/* The smallest DCT scaling (at most 1/1) that keeps the stored image at
 * least need_w x need_h; 1/1 when nothing smaller does. */
static tjscalingfactor pick_scale(int w, int h, int need_w, int need_h)
{
	tjscalingfactor best = { 1, 1 };
	tjscalingfactor *sf;
	int n = 0;

	if (need_w <= 0 && need_h <= 0)
		return best;
	sf = tjGetScalingFactors(&n);
	for (int i = 0; sf && i < n; i++) {
		if (sf[i].num > sf[i].denom)
			continue;
		if (TJSCALED(w, sf[i]) < need_w || TJSCALED(h, sf[i]) < need_h)
			continue;
		if ((long)sf[i].num * best.denom < (long)best.num * sf[i].denom)
			best = sf[i];
	}
	return best;
}

/* Photoshop and libjpeg-turbo store CMYK inverted (255 is no ink), which
 * is what TJPF_CMYK hands back: red = C * K / 255 in those terms. */
static void cmyk_to(const uint8_t *src, uint8_t *dst, int dc, size_t n)
{
	for (size_t i = 0; i < n; i++, src += 4, dst += dc) {
		unsigned k = src[3];
		unsigned r = (src[0] * k + 127) / 255, g = (src[1] * k + 127) / 255, b = (src[2] * k + 127) / 255;

		if (dc == 1) {
			dst[0] = ds_luma(r, g, b);
		} else {
			dst[0] = (uint8_t)r;
			dst[1] = (uint8_t)g;
			dst[2] = (uint8_t)b;
		}
	}
}

int ds_jpeg_decode(const uint8_t *buf, size_t len, int channels, int min_width, int min_height,
		   ds_image *out, ds_image_info *info, ds_error *err)
{
	tjhandle tj = NULL;
	jpeg_header hd;
	tjscalingfactor sf;
	uint8_t *cmyk = NULL;
	int rc, w, h, subsamp, cs, dc, sw, sh, pf, is_cmyk;

	walk(buf, len, &hd);
	if ((rc = check_header(&hd, err)) != 0)
		return rc;
	fill_info(&hd, info);
	tj = tjInitDecompress();
	if (!tj)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "JPEG: cannot create a decoder");
	if (tjDecompressHeader3(tj, buf, (unsigned long)len, &w, &h, &subsamp, &cs) != 0) {
		rc = tj_fail(tj, err);
		goto out;
	}
	is_cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
	dc = ds_image_want_channels(channels, cs == TJCS_GRAY);
	pf = is_cmyk ? TJPF_CMYK : dc == 1 ? TJPF_GRAY : TJPF_RGB;
	if (hd.orientation >= 5)
		sf = pick_scale(w, h, min_height, min_width);
	else
		sf = pick_scale(w, h, min_width, min_height);
	sw = TJSCALED(w, sf);
	sh = TJSCALED(h, sf);
	if ((rc = ds_image_alloc(out, sw, sh, dc, err)) != 0)
		goto out;
	if (is_cmyk && !(cmyk = ds_malloc((size_t)sw * (size_t)sh * 4, err))) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	if (tjDecompress2(tj, buf, (unsigned long)len, cmyk ? cmyk : out->pixels, sw, 0, sh, pf,
			  TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS) != 0) {
		rc = tj_fail(tj, err);
		goto out;
	}
	if (cmyk)
		cmyk_to(cmyk, out->pixels, dc, (size_t)sw * (size_t)sh);
	rc = ds_image_orient(out, hd.orientation, err);
out:
	free(cmyk);
	tjDestroy(tj);
	if (rc)
		ds_image_free(out);
	return rc;
}

int ds_jpeg_encode(const ds_image *img, int quality, void **buf, size_t *len, ds_error *err)
{
	int subsamp = img->channels == 1 ? TJSAMP_GRAY : TJSAMP_420;
	int pf = img->channels == 1 ? TJPF_GRAY : TJPF_RGB;
	unsigned long cap, size;
	unsigned char *jpeg = NULL;
	tjhandle tj;
	int rc = 0;

	if (quality < 1)
		quality = 1;
	if (quality > 100)
		quality = 100;
	tj = tjInitCompress();
	if (!tj)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "JPEG: cannot create an encoder");
	cap = tjBufSize(img->width, img->height, subsamp);
	if (cap == (unsigned long)-1) {
		rc = ds_error_set(err, DS_ERR_RUN, "encode_failed", "JPEG: %s", tjGetErrorStr2(tj));
		goto out;
	}
	/* our own malloc'd buffer, so that the caller can free() it */
	if (!(jpeg = ds_malloc(cap, err))) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	size = cap;
	if (tjCompress2(tj, img->pixels, img->width, 0, img->height, pf, &jpeg, &size, subsamp, quality,
			TJFLAG_NOREALLOC) != 0) {
		rc = ds_error_set(err, DS_ERR_RUN, "encode_failed", "JPEG: %s", tjGetErrorStr2(tj));
		goto out;
	}
	*buf = jpeg;
	*len = size;
	jpeg = NULL;
out:
	free(jpeg);
	tjDestroy(tj);
	return rc;
}
