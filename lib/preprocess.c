/* preprocess.c - a model's ds.preprocess applied to raw inputs.
 *
 * Inference must see an item exactly as training did, so every step here is
 * the one ds-clean and ds-train's loader take: the same DCT-scaled JPEG
 * decode, the same resize, and the one normalisation function both share
 * (ds_normalize_apply), whose float arithmetic is written once so that a
 * .dst row and the PNG it came from give bit-identical inputs. */
#include "internal.h"
#include "source.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct ds_preprocess {
	ds_preprocess_kind kind;
	int width, height, channels;
	ds_resize_mode resize;
	ds_normalize norm;
	int64_t length;              /* text: ids per row */
	int64_t max_chars;           /* text: code points kept (0: all) */
	ds_tokenizer *tok;           /* text: NULL when the spec has none */
};

/* ------------------------------------------------------- normalisation */

/* Up to 4 values of a JSON array; one value applies to every channel. */
static int read_channels(const json_t *pre, const char *key, float *out, int inverse, ds_error *err)
{
	const json_t *a = pre ? json_object_get(pre, key) : NULL;
	size_t n;

	if (!a)
		return 0;
	if (json_is_number(a)) {
		n = 1;
	} else if (json_is_array(a) && json_array_size(a) >= 1) {
		n = json_array_size(a);
	} else {
		return ds_error_set(err, DS_ERR_DATA, "bad_metadata", "ds.preprocess: '%s' is not a number or an array of numbers",
				    key);
	}
	for (size_t i = 0; i < 4; i++) {
		const json_t *v = json_is_number(a) ? a : json_array_get(a, n == 1 ? 0 : i);
		double d;

		if (i >= n && n > 1)
			break;
		if (!json_is_number(v))
			return ds_error_set(err, DS_ERR_DATA, "bad_metadata", "ds.preprocess: '%s' holds a value that is not a number",
					    key);
		d = json_number_value(v);
		if (inverse && d == 0)
			return ds_error_set(err, DS_ERR_DATA, "bad_metadata", "ds.preprocess: a std of 0");
		out[i] = (float)(inverse ? 1.0 / d : d);
	}
	return 0;
}

int ds_normalize_from_json(const json_t *pre, ds_normalize *out, ds_error *err)
{
	const json_t *scale = pre ? json_object_get(pre, "scale") : NULL;
	int rc;

	out->scale = 1.0f / 255.0f;
	for (int i = 0; i < 4; i++) {
		out->mean[i] = 0;
		out->inv_std[i] = 1;
	}
	if (scale && !json_is_number(scale))
		return ds_error_set(err, DS_ERR_DATA, "bad_metadata", "ds.preprocess: 'scale' is not a number");
	if (scale)
		out->scale = (float)json_number_value(scale);
	if ((rc = read_channels(pre, "mean", out->mean, 0, err)) || (rc = read_channels(pre, "std", out->inv_std, 1, err)))
		return rc;
	return 0;
}

void ds_normalize_apply(const ds_normalize *n, const uint8_t *src, int height, int width, int channels, float *dst)
{
	size_t plane = (size_t)height * (size_t)width;

	for (int c = 0; c < channels; c++) {
		float m = c < 4 ? n->mean[c] : 0, is = c < 4 ? n->inv_std[c] : 1, scale = n->scale;
		float *out = dst + (size_t)c * plane;
		const uint8_t *in = src + c;

		/* The expression is the loader's, term for term: the same
		 * rounding gives the same bits. */
		for (size_t i = 0; i < plane; i++)
			out[i] = ((float)in[i * (size_t)channels] * scale - m) * is;
	}
}

/* ----------------------------------------------------------- the spec */

static int spec_int(const json_t *spec, const char *key, int64_t *out, ds_error *err)
{
	const json_t *v = spec ? json_object_get(spec, key) : NULL;

	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return ds_error_set(err, DS_ERR_DATA, "bad_metadata", "ds.preprocess: '%s' is not a non-negative integer", key);
	*out = json_integer_value(v);
	return 0;
}

static int image_spec(ds_preprocess *pp, const json_t *spec, const ds_shape *in, ds_error *err)
{
	int64_t w = in->dim[3], h = in->dim[2], c = in->dim[1];
	int64_t sw = w, sh = h, sc = c;
	const json_t *resize = spec ? json_object_get(spec, "resize") : NULL;
	char shape[96];
	int rc;

	if ((rc = spec_int(spec, "width", &sw, err)) || (rc = spec_int(spec, "height", &sh, err)) ||
	    (rc = spec_int(spec, "channels", &sc, err)))
		return rc;
	if (c != 1 && c != 3)
		return ds_error_set(err, DS_ERR_DATA, "unsupported_input",
				    "the input %s %s has %" PRId64 " channels; images have 1 or 3",
				    ds_dtype_name(in->dtype), ds_shape_format(in->ndim, in->dim, shape, sizeof shape), c);
	if (w < 1 || h < 1 || w > 65535 || h > 65535)
		return ds_error_set(err, DS_ERR_DATA, "unsupported_input", "the input %s %s is not an image size",
				    ds_dtype_name(in->dtype), ds_shape_format(in->ndim, in->dim, shape, sizeof shape));
	if (sw != w || sh != h || sc != c)
		return ds_error_set(err, DS_ERR_DATA, "bad_metadata",
				    "ds.preprocess says %" PRId64 "x%" PRId64 "x%" PRId64 " but the input is %s %s",
				    sw, sh, sc, ds_dtype_name(in->dtype), ds_shape_format(in->ndim, in->dim, shape, sizeof shape));
	pp->kind = DS_PREPROCESS_IMAGE;
	pp->width = (int)w;
	pp->height = (int)h;
	pp->channels = (int)c;
	pp->resize = DS_RESIZE_FILL;
	if (resize && (!json_is_string(resize) || ds_resize_mode_parse(json_string_value(resize), &pp->resize) != 0))
		return ds_error_set(err, DS_ERR_DATA, "bad_metadata", "ds.preprocess: 'resize' is not fit, fill or stretch");
	return ds_normalize_from_json(spec, &pp->norm, err);
}

static int text_spec(ds_preprocess *pp, const json_t *spec, const ds_shape *in, ds_error *err)
{
	const json_t *tok = spec ? json_object_get(spec, "tokenizer") : NULL;
	int rc;

	pp->kind = DS_PREPROCESS_TEXT;
	pp->length = in->dim[1];
	if (pp->length < 1)
		return ds_error_set(err, DS_ERR_DATA, "unsupported_input", "the input's rows have no ids");
	if ((rc = spec_int(spec, "max_chars", &pp->max_chars, err)))
		return rc;
	if (tok && (rc = ds_tokenizer_new(tok, &pp->tok, err))) {
		ds_error_prefix(err, "ds.preprocess");
		return rc;
	}
	return 0;
}

int ds_preprocess_new(const json_t *spec, const ds_shape *input, ds_preprocess **out, ds_error *err)
{
	const json_t *kind = spec ? json_object_get(spec, "kind") : NULL;
	const char *k = json_string_value(kind);
	ds_preprocess *pp;
	char shape[96];
	int rc;

	*out = NULL;
	if (spec && !json_is_object(spec))
		return ds_error_set(err, DS_ERR_DATA, "bad_metadata", "ds.preprocess is not a JSON object");
	if (kind && (!k || (strcmp(k, "image") && strcmp(k, "text"))))
		return ds_error_set(err, DS_ERR_DATA, "bad_metadata", "ds.preprocess: 'kind' is not image or text");
	pp = ds_calloc(1, sizeof *pp, err);
	if (!pp)
		return DS_ERR_NOMEM;
	if (input->dtype == DS_F32 && input->ndim == 4 && (!k || !strcmp(k, "image"))) {
		rc = image_spec(pp, spec, input, err);
	} else if (input->dtype == DS_I32 && input->ndim == 2 && (!k || !strcmp(k, "text"))) {
		rc = text_spec(pp, spec, input, err);
	} else {
		rc = ds_error_set(err, DS_ERR_DATA, "unsupported_input",
				  "the input %s %s does not take %s (F32 [N, C, H, W] images or I32 [N, L] ids)",
				  ds_dtype_name(input->dtype), ds_shape_format(input->ndim, input->dim, shape, sizeof shape),
				  k ? k : "images or text");
	}
	if (rc) {
		ds_preprocess_free(pp);
		return rc;
	}
	*out = pp;
	return 0;
}

void ds_preprocess_free(ds_preprocess *pp)
{
	if (!pp)
		return;
	ds_tokenizer_free(pp->tok);
	free(pp);
}

ds_preprocess_kind ds_preprocess_kind_of(const ds_preprocess *pp)
{
	return pp->kind;
}

int64_t ds_preprocess_item_elems(const ds_preprocess *pp)
{
	if (pp->kind == DS_PREPROCESS_TEXT)
		return pp->length;
	return (int64_t)pp->width * pp->height * pp->channels;
}

ds_dtype ds_preprocess_dtype(const ds_preprocess *pp)
{
	return pp->kind == DS_PREPROCESS_TEXT ? DS_I32 : DS_F32;
}

void ds_preprocess_image_size(const ds_preprocess *pp, int *width, int *height, int *channels)
{
	*width = pp->width;
	*height = pp->height;
	*channels = pp->channels;
}

int64_t ds_preprocess_length(const ds_preprocess *pp)
{
	return pp->kind == DS_PREPROCESS_TEXT ? pp->length : 0;
}

int ds_preprocess_has_tokenizer(const ds_preprocess *pp)
{
	return pp->tok != NULL;
}

/* ------------------------------------------------------------- images */

int ds_preprocess_pixels(const ds_preprocess *pp, const ds_image *img, float *out, ds_error *err)
{
	uint8_t *tmp;
	int rc;

	if (pp->kind != DS_PREPROCESS_IMAGE)
		return ds_error_set(err, DS_ERR_DATA, "kind_mismatch", "an image, but the model takes text");
	if (img->channels != 1 && img->channels != 3)
		return ds_error_set(err, DS_ERR_DATA, "unsupported_image", "%d channels: images have 1 (gray) or 3 (RGB)",
				    img->channels);
	/* Already the model's shape (a packed stream): no resampling at all. */
	if (img->width == pp->width && img->height == pp->height && img->channels == pp->channels) {
		ds_normalize_apply(&pp->norm, img->pixels, pp->height, pp->width, pp->channels, out);
		return 0;
	}
	tmp = ds_malloc((size_t)pp->width * (size_t)pp->height * (size_t)pp->channels, err);
	if (!tmp)
		return DS_ERR_NOMEM;
	rc = ds_image_resize(img, pp->width, pp->height, pp->channels, pp->resize, tmp, err);
	if (!rc)
		ds_normalize_apply(&pp->norm, tmp, pp->height, pp->width, pp->channels, out);
	free(tmp);
	return rc;
}

int ds_preprocess_image(const ds_preprocess *pp, const void *buf, size_t len, float *out, ds_error *err)
{
	ds_image img = { 0 };
	int rc;

	if (pp->kind != DS_PREPROCESS_IMAGE)
		return ds_error_set(err, DS_ERR_DATA, "kind_mismatch", "an image, but the model takes text");
	/* Decode as ds-clean does (gray stays gray, JPEG scaled down by the DCT
	 * to no less than the output): the resize then sees the same pixels. */
	rc = ds_image_decode(buf, len, 0, pp->width > 8 ? pp->width : 8, pp->height > 8 ? pp->height : 8, &img, NULL,
			     err);
	if (!rc)
		rc = ds_preprocess_pixels(pp, &img, out, err);
	ds_image_free(&img);
	return rc;
}

/* --------------------------------------------------------------- text */

void ds_preprocess_tokens(const ds_preprocess *pp, const int32_t *ids, size_t n, int32_t *out)
{
	size_t keep = n < (size_t)pp->length ? n : (size_t)pp->length;

	memcpy(out, ids, keep * sizeof *out);
	for (size_t i = keep; i < (size_t)pp->length; i++)
		out[i] = -1;
}

int ds_preprocess_text(const ds_preprocess *pp, const char *text, size_t len, int32_t *out, ds_error *err)
{
	size_t n = 0, cut, ids;
	char *norm;

	if (pp->kind != DS_PREPROCESS_TEXT)
		return ds_error_set(err, DS_ERR_DATA, "kind_mismatch", "a text, but the model takes images");
	if (!pp->tok)
		return ds_error_set(err, DS_ERR_USAGE, "no_tokenizer",
				    "the model's ds.preprocess has no tokenizer: it takes packed ids (.dst) only");
	/* Invalid UTF-8 is replaced rather than refused: a prediction for a
	 * slightly damaged text is worth more than an error. */
	norm = ds_text_normalize(text, len, &n, NULL);
	if (!norm)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	if (n == 0) {
		free(norm);
		return ds_error_set(err, DS_ERR_DATA, "empty", "no text left after normalisation");
	}
	cut = n;
	if (pp->max_chars > 0) {
		int64_t chars = 0;

		for (size_t i = 0; i < n; chars++) {
			uint32_t cp;
			int k;

			if (chars == pp->max_chars) {
				cut = i;
				break;
			}
			k = ds_utf8_decode(norm + i, n - i, &cp);
			i += (size_t)(k < 0 ? -k : k);
		}
	}
	ids = ds_tokenizer_encode(pp->tok, norm, cut, out, (size_t)pp->length);
	free(norm);
	for (size_t i = ids; i < (size_t)pp->length; i++)
		out[i] = -1;
	return 0;
}

/* -------------------------------------------------------------- items */

int ds_preprocess_item(const ds_preprocess *pp, const ds_item *item, uint64_t max_bytes, void *out, ds_error *err)
{
	void *buf = NULL;
	size_t len = 0;
	int rc;

	switch (item->kind) {
	case DS_ITEM_PIXELS: {
		ds_image img = { item->width, item->height, item->channels, item->data };

		return ds_preprocess_pixels(pp, &img, out, err);
	}
	case DS_ITEM_TEXT:
		return ds_preprocess_text(pp, item->data, item->len, out, err);
	case DS_ITEM_TOKENS:
		if (pp->kind != DS_PREPROCESS_TEXT)
			return ds_error_set(err, DS_ERR_DATA, "kind_mismatch", "token ids, but the model takes images");
		ds_preprocess_tokens(pp, item->data, item->len, out);
		return 0;
	case DS_ITEM_ERROR:
		return ds_error_set(err, DS_ERR_DATA, item->code[0] ? item->code : "unreadable", "%s", item->message);
	case DS_ITEM_FILE:
		break;
	}
	if ((rc = ds_file_read(item->path, max_bytes, &buf, &len, err)))
		return rc;
	if (pp->kind == DS_PREPROCESS_TEXT) {
		if (ds_image_sniff(buf, len) != DS_IMAGE_UNKNOWN)
			rc = ds_error_set(err, DS_ERR_DATA, "kind_mismatch", "an image, but the model takes text");
		else
			rc = ds_preprocess_text(pp, buf, len, out, err);
	} else {
		rc = ds_preprocess_image(pp, buf, len, out, err);
	}
	free(buf);
	return rc;
}
