/* clean.c - the ds-clean pipeline: list the inputs, check and hash every item
 * on all threads, then in input order de-duplicate, decide, split and write.
 *
 * Items go through in chunks: the parallel phase decodes, checks, hashes and
 * resizes one chunk; the sequential phase keeps the first of duplicates (so
 * the result does not depend on the thread count), assigns splits and writes
 * frames.  Memory is bounded by the chunk, not the data set. */
#include "clean.h"
#include "source.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define MAX_SPLITS 8
#define SPLIT_BLOCK_MAX 1000

/* What the parallel phase learns about one item. */
struct result {
	uint32_t reasons;            /* mask of enum clean_reason */
	char detail[160];            /* the decoder's or reader's words */
	ds_image_format format;
	int width, height;           /* as stored (after orientation) */
	uint64_t bytes;
	int hashed;                  /* hash is valid */
	ds_hash128 hash;
	int has_phash;
	uint64_t phash;
	uint32_t *minhash;           /* text: DS_MINHASH_SIZE values */
	uint8_t *pixels;             /* image: the packed pixels */
	int32_t *tokens;             /* text: token ids */
	size_t token_count;
	size_t chars;                /* text: code points after normalisation */
	char *text;                  /* text: normalised, for --output-dir */
	size_t text_len;
	void *raw;                   /* file bytes, kept for --output-dir copies */
	size_t raw_len;
	ds_image full;               /* decoded image, kept for --encode */
	/* sequential phase */
	int64_t duplicate_of;
	int distance;
	double similarity;
	int split;
};

/* One output stream (a split) being filled frame by frame. */
struct split_out {
	char name[32];
	double ratio;
	char *path;
	ds_writer *writer;
	size_t count;                /* items in the frame being filled */
	uint64_t total;
	uint8_t *pixels;             /* frame_items rows */
	int32_t **tokens;            /* frame_items rows of token ids */
	size_t *token_counts;
	int32_t *labels;
	json_t *ids;
	int frames;
};

/* Per-class state of the stratified split: a shuffled block of slots. */
struct split_state {
	int pos;
	int slot[SPLIT_BLOCK_MAX];
	uint64_t rng;
};

struct clean {
	const ds_clean_options *o;
	struct clean_policy policy;
	ds_item_list list;
	size_t *input_of;            /* for each item, the input it came from */
	int text;                    /* the data is text, not images */
	int width, height, channels;
	ds_resize_mode resize;
	ds_tokenizer *tokenizer;
	json_t *preprocess;
	int32_t *class_index;        /* per item; -1 unlabelled */
	size_t class_count;
	char **classes;
	json_t *labels_json;

	/* de-duplication */
	struct hash_slot { ds_hash128 hash; int64_t item; } *seen;
	size_t seen_cap, seen_count;
	ds_hamming_index *near_images;
	ds_lsh_index *near_texts;
	struct result *results;      /* the current chunk */
	size_t chunk_start;
	uint32_t **kept_minhash;     /* minhash of kept items, to compare in the report */

	/* splits */
	struct split_out splits[MAX_SPLITS];
	int split_count;
	int block;
	struct split_state *states;  /* class_count + 1 (unlabelled last) */

	/* reporting */
	ds_writer *report_writer;
	ds_printer *report;
	char *dir_tmp;               /* --output-dir under construction */
	uint64_t reason_count[R_COUNT];
	uint64_t *class_kept, *class_dropped;
	uint64_t kept, warned, dropped, fixed;
	int failed;
};

/* ------------------------------------------------------------- utilities */

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static const char *ext_of(const char *path)
{
	const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');

	return dot && (!slash || dot > slash) ? dot + 1 : "";
}

static ds_image_format format_of_extension(const char *path)
{
	const char *e = ext_of(path);

	if (!strcasecmp(e, "png"))
		return DS_IMAGE_PNG;
	if (!strcasecmp(e, "jpg") || !strcasecmp(e, "jpeg") || !strcasecmp(e, "jpe") || !strcasecmp(e, "jfif"))
		return DS_IMAGE_JPEG;
	return DS_IMAGE_UNKNOWN;
}

static int reason_of_code(const char *code)
{
	for (int r = 0; r < R_COUNT; r++)
		if (strcmp(clean_reasons[r].code, code) == 0)
			return r;
	return R_UNREADABLE;
}

static void note(struct result *r, int reason, const char *detail)
{
	r->reasons |= 1u << reason;
	if (detail && !r->detail[0])
		snprintf(r->detail, sizeof r->detail, "%.*s", (int)sizeof r->detail - 1, detail);
}

/* ---------------------------------------------------------------- options */

static int parse_split(struct clean *c, ds_error *err)
{
	static const char *default_names[] = { "train", "val", "test" };
	const char *p = c->o->split;
	double sum = 0;

	c->split_count = 0;
	if (!p) {
		c->split_count = 1;
		snprintf(c->splits[0].name, sizeof c->splits[0].name, "all");
		c->splits[0].ratio = 1;
		c->block = 1;
		return 0;
	}
	while (*p) {
		struct split_out *s;
		const char *eq = NULL, *end = p + strcspn(p, ",");
		char *num_end;

		if (c->split_count == MAX_SPLITS)
			return ds_error_set(err, DS_ERR_USAGE, "bad_split", "--split: at most %d parts", MAX_SPLITS);
		s = &c->splits[c->split_count];
		for (const char *q = p; q < end; q++)
			if (*q == '=')
				eq = q;
		if (eq) {
			if (eq == p || (size_t)(eq - p) >= sizeof s->name)
				return ds_error_set(err, DS_ERR_USAGE, "bad_split", "--split: bad name in '%s'", c->o->split);
			memcpy(s->name, p, (size_t)(eq - p));
			s->name[eq - p] = 0;
			p = eq + 1;
		} else if (c->split_count < 3) {
			snprintf(s->name, sizeof s->name, "%s", default_names[c->split_count]);
		} else {
			snprintf(s->name, sizeof s->name, "part%d", c->split_count + 1);
		}
		s->ratio = strtod(p, &num_end);
		if (num_end != end || !(s->ratio > 0) || s->ratio > 1)
			return ds_error_set(err, DS_ERR_USAGE, "bad_split",
					    "--split: '%s' is not a list of fractions such as 0.9,0.1", c->o->split);
		sum += s->ratio;
		c->split_count++;
		p = *end ? end + 1 : end;
	}
	if (c->split_count == 0 || fabs(sum - 1) > 1e-6)
		return ds_error_set(err, DS_ERR_USAGE, "bad_split", "--split: the fractions add up to %g, not 1", sum);
	for (int i = 0; i < c->split_count; i++)
		for (int j = 0; j < i; j++)
			if (!strcmp(c->splits[i].name, c->splits[j].name))
				return ds_error_set(err, DS_ERR_USAGE, "bad_split", "--split: '%s' named twice",
						    c->splits[i].name);
	/* The smallest block in which every part is a whole number of items,
	 * so each class splits in exact proportion block by block. */
	c->block = SPLIT_BLOCK_MAX;
	for (int n = 1; n <= SPLIT_BLOCK_MAX; n++) {
		int whole = 1;

		for (int i = 0; i < c->split_count && whole; i++)
			whole = fabs(c->splits[i].ratio * n - floor(c->splits[i].ratio * n + 0.5)) < 1e-6;
		if (whole) {
			c->block = n;
			break;
		}
	}
	return 0;
}

/* Refill a class's block: slots in proportion, then shuffled. */
static void split_block_fill(struct clean *c, struct split_state *st)
{
	int n = 0;

	for (int i = 0; i < c->split_count; i++) {
		int want = (int)floor(c->splits[i].ratio * c->block + 0.5);

		for (int k = 0; k < want && n < c->block; k++)
			st->slot[n++] = i;
	}
	while (n < c->block)   /* rounding: the rest goes to the first part */
		st->slot[n++] = 0;
	for (int i = c->block - 1; i > 0; i--) {
		int j = (int)(splitmix64(&st->rng) % (uint64_t)(i + 1)), t = st->slot[i];

		st->slot[i] = st->slot[j];
		st->slot[j] = t;
	}
	st->pos = 0;
}

static int assign_split(struct clean *c, int32_t cls)
{
	struct split_state *st = &c->states[cls < 0 ? c->class_count : (size_t)cls];

	if (c->split_count == 1)
		return 0;
	if (st->pos == 0 || st->pos >= c->block)
		split_block_fill(c, st);
	return st->slot[st->pos++];
}

/* ------------------------------------------------------------- the classes */

static int numeric_name(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return 0;
	return 1;
}

static int compare_numeric(const void *a, const void *b)
{
	const char *x = *(char *const *)a, *y = *(char *const *)b;
	size_t lx = strlen(x), ly = strlen(y);

	return lx != ly ? (lx < ly ? -1 : 1) : strcmp(x, y);
}

/* Class order: an IDX set's own order (Fashion-MNIST's names), numbers in
 * numeric order, otherwise sorted by bytes as ImageFolder does. */
static int order_classes(struct clean *c, ds_error *err)
{
	int all_numeric = 1, rc;

	if ((rc = ds_item_list_classes(&c->list, err)) != 0)
		return rc;
	c->classes = c->list.classes;
	c->class_count = c->list.class_count;
	for (size_t i = 0; i < c->class_count; i++)
		all_numeric &= numeric_name(c->classes[i]);
	if (all_numeric)
		qsort(c->classes, c->class_count, sizeof *c->classes, compare_numeric);
	for (size_t in = 0; in < c->o->input_count; in++) {
		size_t n = 0;
		const char *const *names = ds_idx_class_names(c->o->inputs[in], &n);
		size_t found = 0;

		if (!names || n != c->class_count)
			continue;
		for (size_t i = 0; i < n; i++)
			for (size_t k = 0; k < c->class_count; k++)
				found += strcmp(names[i], c->classes[k]) == 0;
		if (found == n) {
			for (size_t i = 0; i < n; i++)
				for (size_t k = i; k < c->class_count; k++)
					if (!strcmp(names[i], c->classes[k])) {
						char *t = c->classes[i];

						c->classes[i] = c->classes[k];
						c->classes[k] = t;
					}
			break;
		}
	}
	c->labels_json = json_array();
	for (size_t i = 0; i < c->class_count; i++)
		json_array_append_new(c->labels_json, clean_json_string(c->classes[i]));
	c->class_index = ds_calloc(c->list.count ? c->list.count : 1, sizeof *c->class_index, err);
	if (!c->class_index)
		return DS_ERR_NOMEM;
	for (size_t i = 0; i < c->list.count; i++) {
		const char *label = c->list.items[i]->label;

		c->class_index[i] = -1;
		for (size_t k = 0; label && k < c->class_count; k++)
			if (!strcmp(label, c->classes[k]))
				c->class_index[i] = (int32_t)k;
	}
	c->class_kept = ds_calloc(c->class_count + 1, sizeof *c->class_kept, err);
	c->class_dropped = ds_calloc(c->class_count + 1, sizeof *c->class_dropped, err);
	c->states = ds_calloc(c->class_count + 1, sizeof *c->states, err);
	if (!c->class_kept || !c->class_dropped || !c->states)
		return DS_ERR_NOMEM;
	for (size_t k = 0; k <= c->class_count; k++)
		c->states[k].rng = c->o->seed * 0x9e3779b97f4a7c15ull + k + 1;
	return 0;
}

/* ------------------------------------------------------------ the listing */

static int list_inputs(struct clean *c, ds_error *err)
{
	size_t *from = NULL;
	int rc = 0;

	for (size_t i = 0; i < c->o->input_count && !rc; i++) {
		size_t before = c->list.count;

		rc = ds_source_list(c->o->inputs[i], &c->o->source, &c->list, err);
		from = realloc(c->input_of, (c->list.count + 1) * sizeof *from);
		if (!from)
			return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		c->input_of = from;
		for (size_t k = before; k < c->list.count; k++)
			c->input_of[k] = i;
	}
	if (!rc && c->o->files_from) {
		size_t before = c->list.count;

		rc = ds_source_list_files_from(c->o->files_from, &c->o->source, &c->list, err);
		from = realloc(c->input_of, (c->list.count + 1) * sizeof *from);
		if (!from)
			return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		c->input_of = from;
		for (size_t k = before; k < c->list.count; k++)
			c->input_of[k] = SIZE_MAX;
	}
	if (rc)
		return rc;
	/* --shard K/N keeps every N-th item from the K-th: workers that share
	 * one listing split it without talking to each other. */
	if (c->o->shard_count > 1) {
		size_t kept = 0;

		for (size_t i = 0; i < c->list.count; i++) {
			if ((int)(i % (size_t)c->o->shard_count) == c->o->shard_index - 1) {
				c->input_of[kept] = c->input_of[i];
				c->list.items[kept++] = c->list.items[i];
			} else {
				ds_item_free(c->list.items[i]);
			}
		}
		c->list.count = kept;
	}
	return 0;
}

static int is_text_item(const ds_item *it)
{
	ds_file_kind k;

	if (it->kind == DS_ITEM_TEXT || it->kind == DS_ITEM_TOKENS)
		return 1;
	if (it->kind != DS_ITEM_FILE)
		return 0;
	k = ds_file_kind_of(it->path);
	return k == DS_FILE_TEXT;
}

/* Images or text: --kind, else what the items are. */
static int decide_kind(struct clean *c, ds_error *err)
{
	size_t text = 0, image = 0;

	for (size_t i = 0; i < c->list.count; i++) {
		const ds_item *it = c->list.items[i];

		if (it->kind == DS_ITEM_ERROR)
			continue;
		if (is_text_item(it))
			text++;
		else
			image++;
	}
	if (c->o->kind && !strcmp(c->o->kind, "text"))
		c->text = 1;
	else if (c->o->kind && !strcmp(c->o->kind, "image"))
		c->text = 0;
	else if (c->o->kind && strcmp(c->o->kind, "auto"))
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--kind: '%s' is not auto, image or text", c->o->kind);
	else if (text && image)
		return ds_error_set(err, DS_ERR_USAGE, "mixed_inputs",
				    "the inputs mix %zu images and %zu texts; clean them apart or give --kind",
				    image, text);
	else
		c->text = text > 0;
	return 0;
}

/* The output image size and channels: the options, else the first image
 * that reads. */
static int decide_image_shape(struct clean *c, ds_error *err)
{
	c->width = c->o->width;
	c->height = c->o->height;
	c->channels = c->o->channels;
	c->resize = c->o->resize;
	for (size_t i = 0; i < c->list.count && (!c->width || !c->channels); i++) {
		const ds_item *it = c->list.items[i];
		ds_image_info info;
		ds_error ignored = { 0 };
		void *buf = NULL;
		size_t len = 0;
		int w = 0, h = 0, ch = 0;

		if (it->kind == DS_ITEM_PIXELS) {
			w = it->width, h = it->height, ch = it->channels;
		} else if (it->kind == DS_ITEM_FILE &&
			   ds_file_read(it->path, c->o->source.max_bytes, &buf, &len, &ignored) == 0 &&
			   ds_image_probe(buf, len, &info, &ignored) == 0) {
			w = info.width, h = info.height;
			ch = info.channels <= 2 && !info.is_palette ? 1 : 3;
		}
		free(buf);
		if (w <= 0 || h <= 0)
			continue;
		if (!c->width) {
			c->width = w;
			c->height = h;
		}
		if (!c->channels)
			c->channels = ch == 1 ? 1 : 3;
	}
	if (!c->width) {
		c->width = c->height = 28;
		if (!c->channels)
			c->channels = 1;
	}
	if ((uint64_t)c->width * (uint64_t)c->height > (uint64_t)1 << 26)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--size %dx%d is too large", c->width, c->height);
	c->preprocess = json_pack("{s:s, s:i, s:i, s:i, s:s, s:s, s:s, s:f}", "kind", "image",
				  "width", c->width, "height", c->height, "channels", c->channels,
				  "resize", c->resize == DS_RESIZE_FIT ? "fit" : c->resize == DS_RESIZE_FILL ? "fill" : "stretch",
				  "layout", "NHWC", "dtype", "U8", "scale", 1.0 / 255.0);
	return 0;
}

static int make_tokenizer(struct clean *c, ds_error *err)
{
	const char *kind = c->o->tokenizer ? c->o->tokenizer : "bytes";
	json_t *spec;
	int rc;

	if (!strcmp(kind, "ngrams"))
		spec = json_pack("{s:s, s:i}", "kind", "ngrams", "buckets",
				 c->o->ngram_buckets > 0 ? c->o->ngram_buckets : 1048576);
	else if (!strcmp(kind, "bytes"))
		spec = json_pack("{s:s}", "kind", "bytes");
	else
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--tokenizer: '%s' is not bytes or ngrams", kind);
	rc = ds_tokenizer_new(spec, &c->tokenizer, err);
	json_decref(spec);
	if (rc)
		return rc;
	spec = ds_tokenizer_spec(c->tokenizer);
	c->preprocess = json_pack("{s:s, s:o, s:i, s:i, s:s}", "kind", "text", "tokenizer", spec,
				  "max_tokens", c->o->max_tokens > 0 ? c->o->max_tokens : 1024,
				  "max_chars", c->o->max_chars > 0 ? c->o->max_chars : 2048,
				  "padding", "-1");
	return 0;
}

/* ---------------------------------------------------- the parallel checks */

static void check_image(struct clean *c, const ds_item *it, struct result *r)
{
	const ds_clean_options *o = c->o;
	int want_full = o->output_dir && (o->encode || it->kind == DS_ITEM_PIXELS);
	ds_error err = { 0 };
	ds_image img = { 0 };
	ds_image_info info;
	double sum = 0, sum2 = 0, sd;
	size_t n;

	if (it->kind == DS_ITEM_PIXELS) {
		img.width = it->width, img.height = it->height, img.channels = it->channels;
		img.pixels = it->data;   /* borrowed: not freed below */
		r->format = DS_IMAGE_UNKNOWN;
		r->width = img.width, r->height = img.height;
		r->bytes = it->len;
	} else {
		if (ds_file_read(it->path, o->source.max_bytes, &r->raw, &r->raw_len, &err) != 0) {
			note(r, !strcmp(err.code, "too_large") ? R_TOO_LARGE : R_UNREADABLE, err.message);
			return;
		}
		r->bytes = r->raw_len;
		if (r->raw_len == 0) {
			note(r, R_EMPTY, NULL);
			return;
		}
		r->format = ds_image_sniff(r->raw, r->raw_len);
		if (r->format == DS_IMAGE_UNKNOWN) {
			note(r, R_NOT_IMAGE, NULL);
			return;
		}
		if (format_of_extension(it->path) != DS_IMAGE_UNKNOWN && format_of_extension(it->path) != r->format)
			note(r, R_EXTENSION_MISMATCH, ds_image_format_name(r->format));
		if (ds_image_probe(r->raw, r->raw_len, &info, &err) != 0) {
			note(r, reason_of_code(err.code) == R_TRUNCATED ? R_TRUNCATED : R_CORRUPT, err.message);
			return;
		}
		r->width = info.width, r->height = info.height;
	}
	if (r->width < o->min_width || r->height < o->min_height) {
		note(r, R_TOO_SMALL, NULL);
		goto out;
	}
	if ((double)(r->width > r->height ? r->width : r->height) >
	    o->max_aspect * (r->width < r->height ? r->width : r->height)) {
		note(r, R_ASPECT_RATIO, NULL);
		goto out;
	}
	if (it->kind != DS_ITEM_PIXELS) {
		/* Decode only as large as the output needs (JPEG's DCT scaling):
		 * the checks and the perceptual hash work as well on that copy,
		 * and a 4x smaller decode is most of a JPEG's cost. */
		int mw = want_full ? 0 : (c->width > 8 ? c->width : 8);
		int mh = want_full ? 0 : (c->height > 8 ? c->height : 8);

		if (ds_image_decode(r->raw, r->raw_len, 0, mw, mh, &img, NULL, &err) != 0) {
			int reason = reason_of_code(err.code);

			note(r, reason == R_TRUNCATED || reason == R_NOT_IMAGE ? reason : R_CORRUPT, err.message);
			goto out;
		}
		if (!o->output_dir || o->encode) {
			free(r->raw);
			r->raw = NULL;
		}
	}
	/* Blank: the luma hardly varies. */
	n = (size_t)img.width * (size_t)img.height;
	for (size_t i = 0; i < n; i++) {
		const uint8_t *p = img.pixels + i * (size_t)img.channels;
		double y = img.channels >= 3 ? 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2] : p[0];

		sum += y;
		sum2 += y * y;
	}
	sd = n ? sqrt(fmax(0, sum2 / (double)n - (sum / (double)n) * (sum / (double)n))) : 0;
	if (sd < o->blank_stddev) {
		note(r, R_BLANK, NULL);
		goto out;
	}
	r->hash = ds_hash_bytes(img.pixels, n * (size_t)img.channels);
	/* The size goes into the hash too: same bytes, other shape, other image. */
	r->hash.lo ^= (uint64_t)img.width * 0x9e3779b97f4a7c15ull ^ (uint64_t)img.channels;
	r->hash.hi ^= (uint64_t)img.height * 0xc2b2ae3d27d4eb4full;
	r->hashed = 1;
	r->phash = ds_image_phash(&img);
	r->has_phash = 1;
	r->pixels = malloc((size_t)c->width * (size_t)c->height * (size_t)c->channels);
	if (!r->pixels || ds_image_resize(&img, c->width, c->height, c->channels, c->resize, r->pixels, &err) != 0) {
		note(r, R_CORRUPT, err.message[0] ? err.message : "out of memory");
		goto out;
	}
	if (want_full) {
		if (it->kind == DS_ITEM_PIXELS) {
			r->full.pixels = malloc(n * (size_t)img.channels);
			if (r->full.pixels) {
				memcpy(r->full.pixels, img.pixels, n * (size_t)img.channels);
				r->full.width = img.width, r->full.height = img.height, r->full.channels = img.channels;
			}
		} else {
			r->full = img;
			img.pixels = NULL;
		}
	}
out:
	if (it->kind != DS_ITEM_PIXELS)
		ds_image_free(&img);
}

static void check_text(struct clean *c, const ds_item *it, struct result *r)
{
	const ds_clean_options *o = c->o;
	ds_error err = { 0 };
	const char *bytes;
	size_t len, bad;
	ds_text_fixes fixes = { 0 };
	size_t max_tokens = (size_t)(o->max_tokens > 0 ? o->max_tokens : 1024);

	if (it->kind == DS_ITEM_TOKENS) {
		/* Packed already: only duplicates can be checked again. */
		r->token_count = it->len;
		r->tokens = malloc((it->len ? it->len : 1) * sizeof *r->tokens);
		if (r->tokens)
			memcpy(r->tokens, it->data, it->len * sizeof *r->tokens);
		r->hash = ds_hash_bytes(it->data, it->len * sizeof(int32_t));
		r->hashed = 1;
		r->bytes = it->len * sizeof(int32_t);
		return;
	}
	if (it->kind == DS_ITEM_FILE) {
		if (ds_file_read(it->path, o->source.max_bytes, &r->raw, &r->raw_len, &err) != 0) {
			note(r, !strcmp(err.code, "too_large") ? R_TOO_LARGE : R_UNREADABLE, err.message);
			return;
		}
		bytes = r->raw, len = r->raw_len;
	} else {
		bytes = it->data, len = it->len;
	}
	r->bytes = len;
	if (len == 0) {
		note(r, R_EMPTY, NULL);
		return;
	}
	if (ds_utf8_invalid(bytes, len, &bad)) {
		char where[64];

		snprintf(where, sizeof where, "first invalid byte at offset %zu", bad);
		if (!o->repair) {
			note(r, R_INVALID_UTF8, where);
			return;
		}
		note(r, R_REPAIRED_UTF8, where);
	}
	r->text = ds_text_normalize(bytes, len, &r->text_len, &fixes);
	if (!r->text) {
		note(r, R_UNREADABLE, "out of memory");
		return;
	}
	if (fixes.bom)
		note(r, R_BOM, NULL);
	if (fixes.control)
		note(r, R_CONTROL_CHARS, NULL);
	if (fixes.whitespace)
		note(r, R_WHITESPACE, NULL);
	r->chars = ds_utf8_length(r->text, r->text_len);
	if (r->chars == 0) {
		note(r, R_EMPTY, NULL);
		return;
	}
	if (r->chars < (size_t)o->min_chars) {
		note(r, R_TOO_SHORT, NULL);
		return;
	}
	if (r->chars > (size_t)o->max_chars) {
		note(r, R_TOO_LONG, NULL);
		return;
	}
	r->hash = ds_hash_bytes(r->text, r->text_len);
	r->hashed = 1;
	if (o->near_jaccard > 0) {
		r->minhash = malloc(DS_MINHASH_SIZE * sizeof *r->minhash);
		if (r->minhash)
			ds_minhash(r->text, r->text_len, o->shingle, r->minhash);
	}
	r->tokens = malloc(max_tokens * sizeof *r->tokens);
	if (r->tokens)
		r->token_count = ds_tokenizer_encode(c->tokenizer, r->text, r->text_len, r->tokens, max_tokens);
	if (r->raw && !o->output_dir) {
		free(r->raw);
		r->raw = NULL;
	}
}

static void check_item(struct clean *c, const ds_item *it, struct result *r)
{
	memset(r, 0, sizeof *r);
	r->duplicate_of = -1;
	if (it->kind == DS_ITEM_ERROR) {
		note(r, reason_of_code(it->code), it->message);
		r->bytes = it->file_bytes;
		return;
	}
	if (c->text)
		check_text(c, it, r);
	else
		check_image(c, it, r);
}

static void result_free(struct result *r)
{
	free(r->minhash);
	free(r->pixels);
	free(r->tokens);
	free(r->text);
	free(r->raw);
	ds_image_free(&r->full);
	memset(r, 0, sizeof *r);
}

/* ------------------------------------------------- the sequential decisions */

/* The first kept item with this content hash, or -1 after adding it;
 * open addressing, kept at most half full. */
static int64_t seen_find_or_add(struct clean *c, ds_hash128 h, int64_t item, ds_error *err)
{
	size_t mask, i;

	if (c->seen_count * 2 >= c->seen_cap) {
		size_t cap = c->seen_cap ? c->seen_cap * 2 : 1024;
		struct hash_slot *grown = ds_malloc(cap * sizeof *grown, err);

		if (!grown)
			return -2;
		for (size_t k = 0; k < cap; k++)
			grown[k].item = -1;
		for (size_t k = 0; k < c->seen_cap; k++) {
			if (c->seen[k].item < 0)
				continue;
			for (i = c->seen[k].hash.lo & (cap - 1); grown[i].item >= 0; i = (i + 1) & (cap - 1))
				;
			grown[i] = c->seen[k];
		}
		free(c->seen);
		c->seen = grown;
		c->seen_cap = cap;
	}
	mask = c->seen_cap - 1;
	for (i = h.lo & mask; c->seen[i].item >= 0; i = (i + 1) & mask)
		if (c->seen[i].hash.lo == h.lo && c->seen[i].hash.hi == h.hi)
			return c->seen[i].item;
	c->seen[i].hash = h;
	c->seen[i].item = item;
	c->seen_count++;
	return -1;
}

static int decide(struct clean *c, size_t index, struct result *r, ds_error *err)
{
	int32_t cls = c->class_index[index];
	int drop = 0;

	for (int k = 0; k < R_COUNT; k++)
		if ((r->reasons & (1u << k)) && c->policy.action[k] == ACT_DROP)
			drop = 1;
	/* Duplicates are judged only against items that are kept. */
	if (!drop && r->hashed) {
		int64_t first = seen_find_or_add(c, r->hash, (int64_t)index, err);

		if (first == -2)
			return DS_ERR_NOMEM;
		if (first >= 0) {
			r->duplicate_of = first;
			r->distance = 0;
			r->similarity = 1;
			note(r, c->class_index[first] != cls ? R_LABEL_CONFLICT : R_DUPLICATE, NULL);
		} else if (r->has_phash && c->o->near_distance >= 0) {
			int d = 0;
			int64_t near = ds_hamming_index_add(c->near_images, r->phash, (int64_t)index, &d);

			if (near == -2)
				return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
			if (near >= 0) {
				r->duplicate_of = near;
				r->distance = d;
				note(r, R_NEAR_DUPLICATE, NULL);
			}
		} else if (r->minhash && c->near_texts) {
			double sim = 0;
			int64_t near = ds_lsh_index_add(c->near_texts, r->minhash, (int64_t)index, &sim);

			if (near == -2)
				return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
			if (near >= 0) {
				r->duplicate_of = near;
				r->similarity = sim;
				note(r, R_NEAR_DUPLICATE, NULL);
			}
		}
		for (int k = 0; k < R_COUNT; k++)
			if ((r->reasons & (1u << k)) && c->policy.action[k] == ACT_DROP)
				drop = 1;
	}
	for (int k = 0; k < R_COUNT; k++)
		if (r->reasons & (1u << k)) {
			c->reason_count[k]++;
			if (c->policy.fail_on & (1u << k))
				c->failed = 1;
		}
	r->split = -1;
	if (drop) {
		c->dropped++;
		c->class_dropped[cls < 0 ? c->class_count : (size_t)cls]++;
		return 0;
	}
	c->kept++;
	c->class_kept[cls < 0 ? c->class_count : (size_t)cls]++;
	for (int k = 0; k < R_COUNT; k++)
		if (r->reasons & (1u << k)) {
			if (c->policy.action[k] == ACT_WARN) {
				c->warned++;
				break;
			}
		}
	r->split = assign_split(c, cls);
	return 0;
}

/* ---------------------------------------------------------------- writing */

static char *split_path(const char *output, const char *name, int many)
{
	const char *dot = strrchr(output, '.'), *slash = strrchr(output, '/');
	size_t stem = dot && (!slash || dot > slash) ? (size_t)(dot - output) : strlen(output);
	char *p = malloc(strlen(output) + strlen(name) + 3);

	if (!p)
		return NULL;
	if (!many)
		strcpy(p, output);
	else
		sprintf(p, "%.*s.%s%s", (int)stem, output, name, output + stem);
	return p;
}

static int open_outputs(struct clean *c, ds_error *err)
{
	size_t frame = (size_t)c->o->frame_items;
	int rc;

	for (int i = 0; i < c->split_count; i++) {
		struct split_out *s = &c->splits[i];

		s->ids = json_array();
		s->labels = ds_calloc(frame, sizeof *s->labels, err);
		if (c->text) {
			s->tokens = ds_calloc(frame, sizeof *s->tokens, err);
			s->token_counts = ds_calloc(frame, sizeof *s->token_counts, err);
		} else {
			s->pixels = ds_malloc(frame * (size_t)c->width * (size_t)c->height * (size_t)c->channels, err);
		}
		if (!s->labels || (c->text ? !s->tokens || !s->token_counts : !s->pixels))
			return DS_ERR_NOMEM;
		if (!c->o->output)
			continue;
		if (!strcmp(c->o->output, "-") && c->split_count > 1)
			return ds_error_set(err, DS_ERR_USAGE, "usage",
					    "--split writes one stream per part: give -o FILE, not -o -");
		s->path = split_path(c->o->output, s->name, c->split_count > 1);
		if (!s->path)
			return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		if ((rc = ds_writer_open(s->path, &s->writer, err)) != 0)
			return rc;
	}
	return 0;
}

static int flush_frame(struct clean *c, struct split_out *s, ds_error *err)
{
	ds_container *frame = NULL;
	ds_tensor *x = NULL, *y = NULL;
	int64_t n = (int64_t)s->count;
	int rc = 0;

	if (!s->count || !s->writer)
		goto out;
	if (c->text) {
		int64_t len = 1;

		for (size_t i = 0; i < s->count; i++)
			if ((int64_t)s->token_counts[i] > len)
				len = (int64_t)s->token_counts[i];
		x = ds_tensor_new(DS_I32, 2, (int64_t[]){ n, len }, DS_CPU, err);
		if (!x)
			return err->status;
		for (size_t i = 0; i < s->count; i++) {
			int32_t *row = (int32_t *)x->data + (size_t)len * i;

			memcpy(row, s->tokens[i], s->token_counts[i] * sizeof *row);
			for (int64_t k = (int64_t)s->token_counts[i]; k < len; k++)
				row[k] = -1;
		}
	} else {
		x = ds_tensor_new(DS_U8, 4, (int64_t[]){ n, c->height, c->width, c->channels }, DS_CPU, err);
		if (!x)
			return err->status;
		memcpy(x->data, s->pixels, ds_tensor_nbytes(x));
	}
	frame = ds_container_new();
	if (!frame) {
		rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		goto out;
	}
	if ((rc = ds_container_add(frame, "x", x, err)) != 0)
		goto out;
	if (c->class_count) {
		y = ds_tensor_new(DS_I32, 1, &n, DS_CPU, err);
		if (!y) {
			rc = err->status;
			goto out;
		}
		memcpy(y->data, s->labels, (size_t)n * sizeof *s->labels);
		if ((rc = ds_container_add(frame, "y", y, err)) != 0)
			goto out;
		if ((rc = ds_container_meta_set_json(frame, "ds.labels", c->labels_json, err)) != 0)
			goto out;
	}
	if ((rc = ds_container_meta_set(frame, "ds.format", DS_FORMAT_FRAME, err)) ||
	    (rc = ds_container_meta_set_json(frame, "ds.items", s->ids, err)) ||
	    (rc = ds_container_meta_set_json(frame, "ds.preprocess", c->preprocess, err)))
		goto out;
	if (s->frames == 0 && c->o->cli && (rc = ds_cli_history(c->o->cli, frame, NULL, err)) != 0)
		goto out;
	rc = ds_writer_put(s->writer, frame, err);
	s->frames++;
out:
	ds_container_free(frame);
	ds_tensor_unref(x);
	ds_tensor_unref(y);
	for (size_t i = 0; c->text && i < s->count; i++) {
		free(s->tokens[i]);
		s->tokens[i] = NULL;
	}
	json_array_clear(s->ids);
	s->count = 0;
	return rc;
}

static int emit_kept(struct clean *c, size_t index, struct result *r, ds_error *err)
{
	struct split_out *s = &c->splits[r->split];
	const ds_item *it = c->list.items[index];
	size_t row = (size_t)c->width * (size_t)c->height * (size_t)c->channels;

	if (c->text) {
		s->tokens[s->count] = r->tokens;
		s->token_counts[s->count] = r->token_count;
		r->tokens = NULL;
	} else {
		memcpy(s->pixels + row * s->count, r->pixels, row);
	}
	s->labels[s->count] = c->class_index[index];
	json_array_append_new(s->ids, clean_json_string(it->id));
	s->count++;
	s->total++;
	if (s->count == (size_t)c->o->frame_items)
		return flush_frame(c, s, err);
	return 0;
}

/* --output-dir: the kept files, copied or re-encoded, under their path
 * relative to their input, inside a temporary folder renamed at the end. */
static int make_parents(char *path)
{
	for (char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
		*p = 0;
		if (mkdir(path, 0777) != 0 && errno != EEXIST) {
			*p = '/';
			return -1;
		}
		*p = '/';
	}
	return 0;
}

static int write_file(const char *path, const void *data, size_t len, ds_error *err)
{
	FILE *f = fopen(path, "wb");
	int bad;

	if (!f)
		return ds_error_errno(err, errno, path);
	bad = len && fwrite(data, 1, len, f) != len;
	bad |= fclose(f) != 0;
	if (bad)
		return ds_error_errno(err, errno ? errno : EIO, path);
	return 0;
}

static int emit_copy(struct clean *c, size_t index, struct result *r, ds_error *err)
{
	const ds_item *it = c->list.items[index];
	const char *rel, *ext;
	char *path = NULL, *name = NULL;
	void *enc = NULL;
	size_t enc_len = 0;
	int rc = 0;

	if (it->kind == DS_ITEM_FILE && !(r->full.pixels && c->o->encode)) {
		size_t in = c->input_of[index];
		const char *root = in == SIZE_MAX ? NULL : c->o->inputs[in];
		size_t rl = root ? strlen(root) : 0;

		while (rl > 1 && root[rl - 1] == '/')
			rl--;
		if (root && strncmp(it->path, root, rl) == 0 && it->path[rl] == '/')
			rel = it->path + rl + 1;
		else
			rel = strrchr(it->path, '/') ? strrchr(it->path, '/') + 1 : it->path;
		path = malloc(strlen(c->dir_tmp) + strlen(rel) + 2);
		if (!path)
			return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		sprintf(path, "%s/%s", c->dir_tmp, rel);
		if (make_parents(path) != 0)
			rc = ds_error_errno(err, errno, path);
		else
			rc = write_file(path, r->raw, r->raw_len, err);
		free(path);
		return rc;
	}
	/* Records without a file of their own (IDX, streams, text entries)
	 * and re-encoded images get a name from their id. */
	name = strdup(it->id);
	if (!name)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	if (it->kind == DS_ITEM_FILE) {
		char *slash = strrchr(name, '/'), *dot;

		memmove(name, slash ? slash + 1 : name, strlen(slash ? slash + 1 : name) + 1);
		if ((dot = strrchr(name, '.')) != NULL)
			*dot = 0;
	}
	ds_file_safe_name(name);
	if (c->text) {
		ext = "txt";
		enc = r->text;
		enc_len = r->text_len;
	} else {
		ds_image_format fmt = c->o->encode && !strcmp(c->o->encode, "jpeg") ? DS_IMAGE_JPEG : DS_IMAGE_PNG;

		ext = fmt == DS_IMAGE_JPEG ? "jpg" : "png";
		if (!r->full.pixels) {
			free(name);
			return 0;
		}
		if ((rc = ds_image_encode(&r->full, fmt, c->o->jpeg_quality, &enc, &enc_len, err)) != 0) {
			free(name);
			return rc;
		}
	}
	path = malloc(strlen(c->dir_tmp) + strlen(name) + (it->label ? strlen(it->label) : 12) + 8);
	if (!path) {
		rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		goto out;
	}
	{
		char *label = strdup(it->label ? it->label : "unlabelled");

		if (!label) {
			rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
			goto out;
		}
		ds_file_safe_name(label);
		sprintf(path, "%s/%s/%s.%s", c->dir_tmp, label, name, ext);
		free(label);
	}
	if (make_parents(path) != 0)
		rc = ds_error_errno(err, errno, path);
	else
		rc = write_file(path, enc, enc_len, err);
out:
	if (!c->text)
		free(enc);
	free(path);
	free(name);
	return rc;
}

static int open_output_dir(struct clean *c, ds_error *err)
{
	const char *dir = c->o->output_dir;
	const char *slash;
	struct stat st;
	size_t len = strlen(dir);

	while (len > 1 && dir[len - 1] == '/')
		len--;
	if (stat(dir, &st) == 0) {
		if (!S_ISDIR(st.st_mode) || rmdir(dir) != 0)
			return ds_error_set(err, DS_ERR_USAGE, "output_exists",
					    "--output-dir %s: exists and is not an empty folder", dir);
		/* Empty: removed now, made again at the end by the rename. */
	}
	c->dir_tmp = malloc(len + 16);
	if (!c->dir_tmp)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	slash = memrchr(dir, '/', len);
	if (slash)
		sprintf(c->dir_tmp, "%.*s.%.*s.XXXXXX", (int)(slash - dir + 1), dir, (int)(len - (size_t)(slash - dir) - 1),
			slash + 1);
	else
		sprintf(c->dir_tmp, ".%.*s.XXXXXX", (int)len, dir);
	if (!mkdtemp(c->dir_tmp)) {
		int e = errno;

		free(c->dir_tmp);
		c->dir_tmp = NULL;
		return ds_error_errno(err, e, dir);
	}
	return 0;
}

/* Remove a folder tree we made (nothing of the user's is ever in it). */
static void remove_tree(const char *path)
{
	char *child;
	DIR *d = opendir(path);
	struct dirent *e;

	if (!d) {
		unlink(path);
		return;
	}
	while ((e = readdir(d)) != NULL) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		child = malloc(strlen(path) + strlen(e->d_name) + 2);
		if (!child)
			break;
		sprintf(child, "%s/%s", path, e->d_name);
		remove_tree(child);
		free(child);
	}
	closedir(d);
	rmdir(path);
}

/* -------------------------------------------------------------- reporting */

static int report_item(struct clean *c, size_t index, const struct result *r, ds_error *err)
{
	const ds_item *it = c->list.items[index];
	json_t *rec, *reasons = json_array(), *warnings = json_array(), *fixes = json_array();
	const char *verdict = r->split >= 0 ? "keep" : "drop";
	char hex[33];
	int rc;

	for (int k = 0; k < R_COUNT; k++) {
		if (!(r->reasons & (1u << k)))
			continue;
		if (c->policy.action[k] == ACT_DROP)
			json_array_append_new(reasons, json_string(clean_reasons[k].code));
		else if (c->policy.action[k] == ACT_WARN)
			json_array_append_new(warnings, json_string(clean_reasons[k].code));
		else
			json_array_append_new(fixes, json_string(clean_reasons[k].code));
	}
	if (r->split >= 0 && json_array_size(warnings))
		verdict = "warn";
	rec = json_pack("{s:o, s:o, s:s, s:o, s:o, s:o}", "item", clean_json_string(it->id),
			"label", it->label ? clean_json_string(it->label) : json_null(), "verdict", verdict,
			"reasons", reasons, "warnings", warnings, "fixes", fixes);
	if (r->detail[0])
		json_object_set_new(rec, "detail", clean_json_string(r->detail));
	json_object_set_new(rec, "bytes", json_integer((json_int_t)r->bytes));
	if (!c->text && r->width) {
		json_object_set_new(rec, "width", json_integer(r->width));
		json_object_set_new(rec, "height", json_integer(r->height));
		if (r->format)
			json_object_set_new(rec, "format", json_string(ds_image_format_name(r->format)));
	}
	if (c->text && r->chars)
		json_object_set_new(rec, "chars", json_integer((json_int_t)r->chars));
	if (r->hashed)
		json_object_set_new(rec, "hash", json_string(ds_hash128_hex(r->hash, hex)));
	if (r->has_phash) {
		snprintf(hex, sizeof hex, "%016llx", (unsigned long long)r->phash);
		json_object_set_new(rec, "phash", json_string(hex));
	}
	if (r->duplicate_of >= 0) {
		json_object_set_new(rec, "duplicate_of",
				    clean_json_string(c->list.items[r->duplicate_of]->id));
		if (c->text)
			json_object_set_new(rec, "similarity", json_real(r->similarity));
		else
			json_object_set_new(rec, "distance", json_integer(r->distance));
	}
	if (r->split >= 0 && c->split_count > 1)
		json_object_set_new(rec, "split", json_string(c->splits[r->split].name));
	rc = ds_printer_record(c->report, rec, err);
	json_decref(rec);
	return rc;
}

static json_t *summary(struct clean *c)
{
	json_t *doc = json_object(), *reasons = json_array(), *classes = json_array(), *splits = json_array();
	uint64_t most = 0, least = UINT64_MAX;

	json_object_set_new(doc, "items", json_integer((json_int_t)c->list.count));
	json_object_set_new(doc, "kept", json_integer((json_int_t)c->kept));
	json_object_set_new(doc, "warned", json_integer((json_int_t)c->warned));
	json_object_set_new(doc, "dropped", json_integer((json_int_t)c->dropped));
	json_object_set_new(doc, "kind", json_string(c->text ? "text" : "image"));
	if (!c->text) {
		char size[48];

		snprintf(size, sizeof size, "%dx%dx%d", c->width, c->height, c->channels);
		json_object_set_new(doc, "size", json_string(size));
	}
	for (int k = 0; k < R_COUNT; k++)
		if (c->reason_count[k])
			json_array_append_new(reasons, json_pack("{s:s, s:s, s:I}", "reason", clean_reasons[k].code,
				"action", c->policy.action[k] == ACT_DROP ? "drop" : c->policy.action[k] == ACT_WARN ? "warn" : "fix",
				"items", (json_int_t)c->reason_count[k]));
	for (size_t k = 0; k <= c->class_count; k++) {
		if (k == c->class_count && !c->class_kept[k] && !c->class_dropped[k])
			continue;
		json_array_append_new(classes, json_pack("{s:o, s:I, s:I}", "class",
			k < c->class_count ? clean_json_string(c->classes[k]) : json_string("(none)"),
			"kept", (json_int_t)c->class_kept[k], "dropped", (json_int_t)c->class_dropped[k]));
		if (k < c->class_count) {
			most = c->class_kept[k] > most ? c->class_kept[k] : most;
			least = c->class_kept[k] < least ? c->class_kept[k] : least;
		}
	}
	for (int i = 0; i < c->split_count; i++)
		json_array_append_new(splits, json_pack("{s:s, s:o, s:I, s:i}", "split", c->splits[i].name,
			"file", c->splits[i].path ? clean_json_string(c->splits[i].path) : json_null(),
			"items", (json_int_t)c->splits[i].total, "frames", c->splits[i].frames));
	if (c->class_count > 1) {
		double ratio = least ? (double)most / (double)least : INFINITY;

		json_object_set_new(doc, "class_imbalance", isinf(ratio) ? json_null() : json_real(ratio));
		if (ratio > c->o->max_imbalance)
			json_object_set_new(doc, "warning", json_string("class_imbalance"));
	}
	json_object_set_new(doc, "reasons", reasons);
	json_object_set_new(doc, "classes", classes);
	json_object_set_new(doc, "splits", splits);
	return doc;
}

/* ------------------------------------------------------------------- run */

static void clean_free(struct clean *c)
{
	for (int i = 0; i < c->split_count; i++) {
		struct split_out *s = &c->splits[i];

		ds_writer_abort(s->writer);
		free(s->path);
		free(s->pixels);
		for (size_t k = 0; s->tokens && k < (size_t)c->o->frame_items; k++)
			free(s->tokens[k]);
		free(s->tokens);
		free(s->token_counts);
		free(s->labels);
		json_decref(s->ids);
	}
	if (c->report) {
		ds_error ignored = { 0 };

		ds_printer_free(c->report, &ignored);
	}
	ds_writer_abort(c->report_writer);
	if (c->dir_tmp) {
		remove_tree(c->dir_tmp);
		free(c->dir_tmp);
	}
	ds_hamming_index_free(c->near_images);
	ds_lsh_index_free(c->near_texts);
	ds_tokenizer_free(c->tokenizer);
	json_decref(c->preprocess);
	json_decref(c->labels_json);
	free(c->seen);
	free(c->class_index);
	free(c->class_kept);
	free(c->class_dropped);
	free(c->states);
	free(c->input_of);
	ds_item_list_free(&c->list);
}

static int finish_outputs(struct clean *c, ds_error *err)
{
	int rc = 0;

	for (int i = 0; i < c->split_count && !rc; i++) {
		struct split_out *s = &c->splits[i];

		if ((rc = flush_frame(c, s, err)) != 0)
			break;
		if (s->writer) {
			rc = ds_writer_commit(s->writer, err);
			s->writer = NULL;
		}
	}
	if (!rc && c->report) {
		rc = ds_printer_free(c->report, err);
		c->report = NULL;
		if (!rc) {
			rc = ds_writer_commit(c->report_writer, err);
			c->report_writer = NULL;
		}
	}
	if (!rc && c->dir_tmp) {
		if (rename(c->dir_tmp, c->o->output_dir) != 0)
			rc = ds_error_errno(err, errno, c->o->output_dir);
		else {
			free(c->dir_tmp);
			c->dir_tmp = NULL;
		}
	}
	return rc;
}

int ds_clean_run(const ds_clean_options *opts, json_t **out, ds_error *err)
{
	struct clean c = { .o = opts };
	ds_progress *progress = NULL;
	size_t chunk;
	int rc;

	*out = NULL;
	if (opts->input_count == 0 && !opts->files_from)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "no input: name files or folders, or give --files-from");
	if ((rc = clean_policy_init(&c.policy, opts, err)) || (rc = parse_split(&c, err)))
		return rc;
	if ((rc = list_inputs(&c, err)) || (rc = decide_kind(&c, err)) || (rc = order_classes(&c, err)))
		goto out;
	if ((rc = c.text ? make_tokenizer(&c, err) : decide_image_shape(&c, err)) != 0)
		goto out;
	if (c.text && opts->near_jaccard > 0)
		c.near_texts = ds_lsh_index_new(opts->near_jaccard);
	if (!c.text && opts->near_distance >= 0)
		c.near_images = ds_hamming_index_new(opts->near_distance);
	if ((c.text && opts->near_jaccard > 0 && !c.near_texts) ||
	    (!c.text && opts->near_distance >= 0 && !c.near_images)) {
		rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		goto out;
	}
	if ((rc = open_outputs(&c, err)) != 0)
		goto out;
	if (opts->report) {
		if ((rc = ds_writer_open_text(opts->report, &c.report_writer, err)) != 0)
			goto out;
		c.report = ds_printer_new(ds_writer_file(c.report_writer), DS_FORMAT_JSONL);
	}
	if (opts->output_dir && (rc = open_output_dir(&c, err)) != 0)
		goto out;

	chunk = (size_t)(ds_threads_get() > 0 ? ds_threads_get() : 1) * 256;
	c.results = ds_calloc(2 * chunk, sizeof *c.results, err);
	if (!c.results) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	progress = opts->cli ? ds_progress_start(opts->cli, "cleaning", c.list.count, "items") : NULL;
	/* A pipeline of two chunks: while one thread decides and writes chunk
	 * k in input order, the others (and then it too) check chunk k + 1.
	 * Deciding alone left the other cores idle for a fifth of the run. */
#pragma omp parallel for schedule(dynamic, 4)
	for (size_t i = 0; i < (c.list.count < chunk ? c.list.count : chunk); i++)
		check_item(&c, c.list.items[i], &c.results[i]);
	for (size_t start = 0, half = 0; start < c.list.count && !rc; start += chunk, half ^= 1) {
		size_t n = c.list.count - start < chunk ? c.list.count - start : chunk;
		size_t next = start + n, n_next = c.list.count - next < chunk ? c.list.count - next : chunk;
		struct result *now = c.results + half * chunk, *later = c.results + (half ^ 1) * chunk;

#pragma omp parallel
		{
#pragma omp master
			for (size_t i = 0; i < n && !rc; i++) {
				struct result *r = &now[i];

				rc = decide(&c, start + i, r, err);
				if (!rc && c.report)
					rc = report_item(&c, start + i, r, err);
				if (!rc && r->split >= 0)
					rc = emit_kept(&c, start + i, r, err);
				if (!rc && r->split >= 0 && c.dir_tmp)
					rc = emit_copy(&c, start + i, r, err);
			}
#pragma omp for schedule(dynamic, 4)
			for (size_t i = 0; i < n_next; i++)
				check_item(&c, c.list.items[next + i], &later[i]);
		}
		for (size_t i = 0; i < n; i++)
			result_free(&now[i]);
		/* Items are done with: give their memory back as we go. */
		for (size_t i = 0; i < n; i++) {
			ds_item *it = c.list.items[start + i];

			free(it->data);
			it->data = NULL;
		}
		ds_progress_update(progress, start + n);
		/* SIGINT/SIGTERM (caught by the program): stop between chunks;
		 * the clean-up below removes every output under way. */
		if (!rc && ds_cli_interrupted())
			rc = ds_error_set(err, DS_ERR_INTERRUPTED, "interrupted", "interrupted: no output written");
	}
	/* After a failure the chunk checked ahead still holds results. */
	for (size_t i = 0; i < 2 * chunk; i++)
		result_free(&c.results[i]);
	ds_progress_end(progress);
	if (!rc)
		rc = finish_outputs(&c, err);
	if (!rc) {
		*out = summary(&c);
		if (c.failed)
			rc = ds_error_set(err, DS_ERR_RUN, "fail_on", "items with a --fail-on reason were found");
	}
out:
	free(c.results);
	clean_free(&c);
	return rc;
}
