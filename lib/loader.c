/* loader.c - training data: a labelled stream read whole into memory, and
 * batches drawn from it on a worker thread.
 *
 * Datasets for training here fit in memory (Fashion-MNIST is 47 MB of
 * pixels), so the stream is read once, mapped or piped, into one array of
 * items; shuffling is then an index permutation and a batch is a gather.
 * Randomness is keyed, not sequential: the order of epoch e is a shuffle
 * seeded by (seed, e), the augmentation of an item by (seed, e, item), so
 * the worker thread, a resumed run and any thread count draw the same
 * numbers. */
#include "train.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct ds_dataset {
	char *path;
	ds_dtype dtype;              /* U8 images or I32 ids */
	int ndim;                    /* 3: H, W, C; 1: L */
	int64_t shape[3];
	size_t item_bytes;
	int64_t count;
	uint8_t *x;
	int32_t *y;
	int64_t *frame_start;        /* first item of each frame, for messages */
	size_t frames;
	json_t *preprocess, *labels;
};

void ds_dataset_free(ds_dataset *d)
{
	if (!d)
		return;
	free(d->path);
	free(d->x);
	free(d->y);
	free(d->frame_start);
	json_decref(d->preprocess);
	json_decref(d->labels);
	free(d);
}

int64_t ds_dataset_count(const ds_dataset *d)
{
	return d->count;
}

int ds_dataset_item_shape(const ds_dataset *d, int64_t *shape, int *ndim, ds_dtype *dtype)
{
	memcpy(shape, d->shape, sizeof d->shape);
	*ndim = d->ndim;
	*dtype = d->dtype;
	return 0;
}

const json_t *ds_dataset_preprocess(const ds_dataset *d)
{
	return d->preprocess;
}

const json_t *ds_dataset_labels(const ds_dataset *d)
{
	return d->labels;
}

static size_t frame_of(const ds_dataset *d, int64_t item)
{
	size_t f = 0;

	while (f + 1 < d->frames && d->frame_start[f + 1] <= item)
		f++;
	return f;
}

/* Check one frame's x and y and return its row count and token length. */
static int frame_shape(const ds_dataset *d, const ds_container *c, size_t f, int64_t *rows,
		       int64_t *len, ds_error *err)
{
	const ds_tensor *x = ds_container_get(c, "x"), *y = ds_container_get(c, "y");
	char s[96];

	if (!x)
		return ds_error_set(err, DS_ERR_DATA, "missing_tensor", "%s: frame %zu: no tensor 'x'", d->path, f);
	if (!y)
		return ds_error_set(err, DS_ERR_DATA, "no_labels",
				    "%s: frame %zu: no tensor 'y': training needs labelled data", d->path, f);
	if (!((x->dtype == DS_U8 && x->ndim == 4) || (x->dtype == DS_I32 && x->ndim == 2)))
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "%s: frame %zu: tensor 'x': %s %s is neither U8 [N, H, W, C] images nor I32 [N, L] ids",
				    d->path, f, ds_dtype_name(x->dtype), ds_shape_format(x->ndim, x->shape, s, sizeof s));
	if (y->dtype != DS_I32 || y->ndim != 1 || y->shape[0] != x->shape[0])
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "%s: frame %zu: tensor 'y': %s %s is not I32 [%" PRId64 "] labels",
				    d->path, f, ds_dtype_name(y->dtype), ds_shape_format(y->ndim, y->shape, s, sizeof s),
				    x->shape[0]);
	if (f > 0 && (x->dtype != d->dtype ||
		      (x->dtype == DS_U8 && memcmp(&x->shape[1], d->shape, 3 * sizeof(int64_t)))))
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "%s: frame %zu: tensor 'x': %s %s differs from frame 0", d->path, f,
				    ds_dtype_name(x->dtype), ds_shape_format(x->ndim, x->shape, s, sizeof s));
	*rows = x->shape[0];
	*len = x->ndim == 2 ? x->shape[1] : 0;
	return 0;
}

static int keep_meta(ds_dataset *d, const ds_container *c, ds_error *err)
{
	int rc = 0;

	if (!d->preprocess && (rc = ds_container_meta_json(c, "ds.preprocess", &d->preprocess, err)))
		return rc;
	if (!d->labels && (rc = ds_container_meta_json(c, "ds.labels", &d->labels, err)))
		return rc;
	if (d->labels && !json_is_array(d->labels))
		return ds_error_set(err, DS_ERR_DATA, "bad_metadata", "%s: ds.labels: not a JSON array", d->path);
	return 0;
}

/* A stream without ds.labels: classes "0" to the largest label. */
static int number_labels(ds_dataset *d, ds_container **frames, size_t n, ds_error *err)
{
	int32_t top = -1;

	for (size_t f = 0; f < n; f++) {
		const ds_tensor *y = ds_container_get(frames[f], "y");

		for (int64_t i = 0; i < y->shape[0]; i++)
			if (((const int32_t *)y->data)[i] > top)
				top = ((const int32_t *)y->data)[i];
	}
	if (!(d->labels = json_array()))
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	for (int32_t k = 0; k <= top && k < (1 << 24); k++) {
		char num[16];

		snprintf(num, sizeof num, "%" PRId32, k);
		if (json_array_append_new(d->labels, json_string(num)))
			return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	}
	return 0;
}

/* Frames are kept until all are read, because token rows are padded to the
 * longest row of the whole stream. */
int ds_dataset_load(const char *path, ds_dataset **out, ds_error *err)
{
	ds_stream *s = NULL;
	ds_container **frames = NULL, *c = NULL;
	size_t n = 0, cap = 0;
	int64_t total = 0, maxlen = 0;
	ds_dataset *d;
	int rc;

	*out = NULL;
	d = ds_calloc(1, sizeof *d, err);
	if (!d)
		return DS_ERR_NOMEM;
	if (!(d->path = ds_strdup(path, err))) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	if ((rc = ds_stream_open(path, 0, &s, err)))
		goto out;
	for (;;) {
		int64_t rows = 0, len = 0;

		if ((rc = ds_stream_read(s, &c, err)) || !c)
			break;
		if (n == cap) {
			ds_container **grown = ds_realloc(frames, (cap = cap * 2 + 16) * sizeof *grown, err);

			if (!grown) {
				rc = DS_ERR_NOMEM;
				break;
			}
			frames = grown;
		}
		/* frames[] owns c from here: a bad frame must not be freed twice. */
		frames[n++] = c;
		c = NULL;
		if ((rc = frame_shape(d, frames[n - 1], n - 1, &rows, &len, err)) ||
		    (rc = keep_meta(d, frames[n - 1], err)))
			break;
		if (n == 1) {
			const ds_tensor *x = ds_container_get(frames[0], "x");

			d->dtype = x->dtype;
			d->ndim = x->ndim - 1;
			for (int i = 0; i < d->ndim; i++)
				d->shape[i] = x->shape[i + 1];
		}
		total += rows;
		if (len > maxlen)
			maxlen = len;
	}
	if (rc)
		goto out;
	if (total == 0) {
		rc = ds_error_set(err, DS_ERR_DATA, "empty", "%s: no items to train on", path);
		goto out;
	}
	if (d->dtype == DS_I32)
		d->shape[0] = maxlen > 0 ? maxlen : 1;
	if (!d->labels && (rc = number_labels(d, frames, n, err)))
		goto out;
	d->item_bytes = ds_dtype_size(d->dtype);
	for (int i = 0; i < d->ndim; i++)
		d->item_bytes *= (size_t)d->shape[i];
	d->x = ds_malloc((size_t)total * d->item_bytes, err);
	d->y = ds_malloc((size_t)total * sizeof *d->y, err);
	d->frame_start = ds_malloc(n * sizeof *d->frame_start, err);
	if (!d->x || !d->y || !d->frame_start) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	d->frames = n;
	for (size_t f = 0; f < n; f++) {
		const ds_tensor *x = ds_container_get(frames[f], "x"), *y = ds_container_get(frames[f], "y");
		int64_t rows = x->shape[0];

		d->frame_start[f] = d->count;
		memcpy(d->y + d->count, y->data, (size_t)rows * sizeof *d->y);
		if (d->dtype == DS_U8) {
			memcpy(d->x + (size_t)d->count * d->item_bytes, x->data, (size_t)rows * d->item_bytes);
		} else {
			for (int64_t r = 0; r < rows; r++) {
				int32_t *dst = (int32_t *)(d->x + (size_t)(d->count + r) * d->item_bytes);
				const int32_t *src = (const int32_t *)x->data + r * x->shape[1];

				for (int64_t i = 0; i < d->shape[0]; i++)
					dst[i] = i < x->shape[1] ? src[i] : -1;
			}
		}
		d->count += rows;
	}
out:
	ds_container_free(c);
	for (size_t f = 0; f < n; f++)
		ds_container_free(frames[f]);
	free(frames);
	ds_stream_close(s);
	if (rc)
		ds_dataset_free(d);
	else
		*out = d;
	return rc;
}

int ds_dataset_split(ds_dataset *d, double fraction, uint64_t seed, ds_dataset **val, ds_error *err)
{
	ds_dataset *v = NULL;
	int64_t n_val = (int64_t)floor(fraction * (double)d->count + 0.5), *perm = NULL, kept = 0;
	uint8_t *is_val = NULL;
	ds_rng rng;
	int rc = 0;

	*val = NULL;
	if (!(fraction > 0 && fraction < 1) || n_val < 1 || n_val >= d->count)
		return ds_error_set(err, DS_ERR_USAGE, "usage",
				    "--val-split %g leaves no items on one side of the %" PRId64 " items",
				    fraction, d->count);
	perm = ds_malloc((size_t)d->count * sizeof *perm, err);
	is_val = ds_calloc((size_t)d->count, 1, err);
	v = ds_calloc(1, sizeof *v, err);
	if (!perm || !is_val || !v) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	*v = *d;
	v->path = NULL;
	v->x = NULL;
	v->y = NULL;
	v->frame_start = NULL;
	v->preprocess = json_incref(d->preprocess);
	v->labels = json_incref(d->labels);
	v->count = n_val;
	v->frames = 1;
	if (!(v->path = ds_strdup(d->path, err)) || !(v->x = ds_malloc((size_t)n_val * d->item_bytes, err)) ||
	    !(v->y = ds_malloc((size_t)n_val * sizeof *v->y, err)) ||
	    !(v->frame_start = ds_calloc(1, sizeof *v->frame_start, err))) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	ds_rng_seed(&rng, ds_mix64(seed, 0x76616c, 0));
	for (int64_t i = 0; i < d->count; i++)
		perm[i] = i;
	for (int64_t i = d->count - 1; i > 0; i--) {
		int64_t j = (int64_t)ds_rng_below(&rng, (uint64_t)i + 1), t = perm[i];

		perm[i] = perm[j];
		perm[j] = t;
	}
	for (int64_t i = 0; i < n_val; i++)
		is_val[perm[i]] = 1;
	/* Both sides keep the stream's order. */
	for (int64_t i = 0, vi = 0; i < d->count; i++) {
		uint8_t *src = d->x + (size_t)i * d->item_bytes;

		if (is_val[i]) {
			memcpy(v->x + (size_t)vi * d->item_bytes, src, d->item_bytes);
			v->y[vi++] = d->y[i];
		} else {
			memmove(d->x + (size_t)kept * d->item_bytes, src, d->item_bytes);
			d->y[kept++] = d->y[i];
		}
	}
	d->count = kept;
	/* Frame numbers no longer match the file after the split. */
	d->frames = 1;
out:
	free(perm);
	free(is_val);
	if (rc)
		ds_dataset_free(v);
	else
		*val = v;
	return rc;
}

int ds_dataset_check(const ds_dataset *d, const ds_graph *g, int64_t classes, ds_error *err)
{
	const char *input = ds_graph_input_count(g) ? ds_graph_input_name(g, 0) : NULL;
	const ds_shape *in = input ? ds_graph_shape(g, input) : NULL;
	char ds_[96], gs[96];
	int ok;

	if (!in)
		return ds_error_set(err, DS_ERR_DATA, "bad_graph", "the model's graph has no input");
	if (d->dtype == DS_U8)
		ok = in->dtype == DS_F32 && in->ndim == 4 && in->dim[1] == d->shape[2] &&
		     in->dim[2] == d->shape[0] && in->dim[3] == d->shape[1];
	else
		ok = (in->dtype == DS_I32 || in->dtype == DS_I64) && in->ndim == 2;
	if (!ok) {
		int64_t shape[4] = { -1 };

		memcpy(&shape[1], d->shape, (size_t)d->ndim * sizeof *shape);
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "%s: frame 0: tensor 'x': %s %s (%s) does not fit the model's input '%s' %s %s",
				    d->path, ds_dtype_name(d->dtype), ds_shape_format(d->ndim + 1, shape, ds_, sizeof ds_),
				    d->dtype == DS_U8 ? "NHWC" : "ids", input, ds_dtype_name(in->dtype),
				    ds_shape_format(in->ndim, in->dim, gs, sizeof gs));
	}
	for (int64_t i = 0; i < d->count; i++) {
		if (d->y[i] < 0 || d->y[i] >= classes) {
			size_t f = frame_of(d, i);

			return ds_error_set(err, DS_ERR_DATA, "bad_label",
					    "%s: frame %zu: tensor 'y': label %" PRId32 " of row %" PRId64
					    " is outside the model's %" PRId64 " classes",
					    d->path, f, d->y[i], i - d->frame_start[f], classes);
		}
	}
	return 0;
}

/* ------------------------------------------------------------ augment */

int ds_augment_parse(const char *text, unsigned *out)
{
	const char *p = text;

	*out = 0;
	if (!text || !strcmp(text, "none"))
		return 0;
	while (*p) {
		size_t n = strcspn(p, ",");

		if (n == 4 && !strncmp(p, "crop", 4))
			*out |= DS_AUGMENT_CROP;
		else if (n == 4 && !strncmp(p, "flip", 4))
			*out |= DS_AUGMENT_FLIP;
		else
			return -1;
		p += n;
		if (*p == ',' && *++p == '\0')
			return -1;
	}
	return 0;
}

/* ------------------------------------------------------------- loader */

#define CROP_PAD 4

struct slot {
	ds_tensor *x, *y;
	int64_t epoch, batch, n;
};

struct ds_loader {
	const ds_dataset *d;
	ds_loader_options o;
	int64_t batches, epoch, pos;
	ds_normalize norm;           /* shared with ds-infer (preprocess.c) */
	int64_t *perm, perm_epoch;
	struct slot slot[2];
	int cur;                     /* the slot handed out last */

	pthread_t thread;
	int have_thread, have_sync;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int want, busy, quit;        /* a request is queued; the worker runs it */
	int req_slot;
	int64_t req_epoch, req_batch;
	int ready[2];                /* slot holds (epoch, batch) */
};

static void make_perm(ds_loader *l, int64_t epoch)
{
	int64_t n = l->d->count;

	for (int64_t i = 0; i < n; i++)
		l->perm[i] = i;
	if (l->o.shuffle) {
		ds_rng rng;

		ds_rng_seed(&rng, ds_mix64(l->o.seed, (uint64_t)epoch, 0x73687566));
		for (int64_t i = n - 1; i > 0; i--) {
			int64_t j = (int64_t)ds_rng_below(&rng, (uint64_t)i + 1), t = l->perm[i];

			l->perm[i] = l->perm[j];
			l->perm[j] = t;
		}
	}
	l->perm_epoch = epoch;
}

/* One image, HWC U8 to CHW F32, cropped and flipped as its key says. */
static void fill_image(const ds_loader *l, float *dst, const uint8_t *src, uint64_t key)
{
	int64_t h = l->d->shape[0], w = l->d->shape[1], c = l->d->shape[2];
	int64_t oy = 0, ox = 0;
	int flip = 0;

	if (l->o.augment & DS_AUGMENT_CROP) {
		oy = (int64_t)(key % (2 * CROP_PAD + 1)) - CROP_PAD;
		ox = (int64_t)((key >> 8) % (2 * CROP_PAD + 1)) - CROP_PAD;
	}
	if (l->o.augment & DS_AUGMENT_FLIP)
		flip = (int)((key >> 16) & 1);
	if (!oy && !ox && !flip) {
		ds_normalize_apply(&l->norm, src, (int)h, (int)w, (int)c, dst);
		return;
	}
	for (int64_t ch = 0; ch < c; ch++) {
		float m = ch < 4 ? l->norm.mean[ch] : 0, is = ch < 4 ? l->norm.inv_std[ch] : 1;
		float zero = (0.0f - m) * is;

		for (int64_t y = 0; y < h; y++) {
			int64_t sy = y + oy;
			float *row = dst + (ch * h + y) * w;

			for (int64_t x = 0; x < w; x++) {
				int64_t sx = (flip ? w - 1 - x : x) + ox;

				if (sy < 0 || sy >= h || sx < 0 || sx >= w)
					row[x] = zero;
				else
					row[x] = ((float)src[(sy * w + sx) * c + ch] * l->norm.scale - m) * is;
			}
		}
	}
}

static void fill(ds_loader *l, int s, int64_t epoch, int64_t batch)
{
	struct slot *sl = &l->slot[s];
	const ds_dataset *d = l->d;
	int64_t first = batch * l->o.batch, n = d->count - first;
	int64_t item = ds_tensor_numel(sl->x) / sl->x->shape[0];

	if (n > l->o.batch)
		n = l->o.batch;
	if (l->perm_epoch != epoch)
		make_perm(l, epoch);
	for (int64_t i = 0; i < n; i++) {
		int64_t idx = l->perm[first + i];
		const uint8_t *src = d->x + (size_t)idx * d->item_bytes;

		((int32_t *)sl->y->data)[i] = d->y[idx];
		if (d->dtype == DS_U8) {
			uint64_t key = l->o.augment ? ds_mix64(l->o.seed ^ 0x61756720, (uint64_t)epoch, (uint64_t)idx) : 0;

			fill_image(l, (float *)sl->x->data + i * item, src, key);
		} else {
			int32_t *dst = (int32_t *)sl->x->data + i * item;
			const int32_t *ids = (const int32_t *)src;

			for (int64_t k = 0; k < item; k++)
				dst[k] = k < d->shape[0] ? ids[k] : -1;
		}
	}
	sl->x->shape[0] = sl->y->shape[0] = n;
	sl->epoch = epoch;
	sl->batch = batch;
	sl->n = n;
}

static void *worker(void *arg)
{
	ds_loader *l = arg;

	pthread_mutex_lock(&l->lock);
	for (;;) {
		while (!l->want && !l->quit)
			pthread_cond_wait(&l->cond, &l->lock);
		if (l->quit)
			break;
		l->want = 0;
		l->busy = 1;
		pthread_mutex_unlock(&l->lock);
		fill(l, l->req_slot, l->req_epoch, l->req_batch);
		pthread_mutex_lock(&l->lock);
		l->busy = 0;
		l->ready[l->req_slot] = 1;
		pthread_cond_broadcast(&l->cond);
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

/* Wait until the worker is idle (called with the lock held). */
static void wait_idle(ds_loader *l)
{
	while (l->want || l->busy)
		pthread_cond_wait(&l->cond, &l->lock);
}

static void request(ds_loader *l, int s, int64_t epoch, int64_t batch)
{
	if (!l->have_thread) {
		fill(l, s, epoch, batch);
		l->ready[s] = 1;
		return;
	}
	l->ready[s] = 0;
	l->req_slot = s;
	l->req_epoch = epoch;
	l->req_batch = batch;
	l->want = 1;
	pthread_cond_broadcast(&l->cond);
}

int ds_loader_new(const ds_dataset *d, const ds_loader_options *o, ds_loader **out, ds_error *err)
{
	ds_loader *l;
	int64_t len = o->length > 0 ? o->length : d->shape[0];
	int rc = 0;

	*out = NULL;
	if (o->batch < 1)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "the batch size must be at least 1");
	l = ds_calloc(1, sizeof *l, err);
	if (!l)
		return DS_ERR_NOMEM;
	l->d = d;
	l->o = *o;
	l->batches = (d->count + o->batch - 1) / o->batch;
	l->perm_epoch = -1;
	if ((rc = ds_normalize_from_json(d->preprocess, &l->norm, err))) {
		ds_error_prefix(err, "%s", d->path);
		goto out;
	}
	if (!(l->perm = ds_malloc((size_t)d->count * sizeof *l->perm, err))) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	for (int s = 0; s < 2; s++) {
		if (d->dtype == DS_U8)
			l->slot[s].x = ds_tensor_new(DS_F32, 4, (int64_t[]){ o->batch, d->shape[2], d->shape[0], d->shape[1] },
						     DS_CPU, err);
		else
			l->slot[s].x = ds_tensor_new(DS_I32, 2, (int64_t[]){ o->batch, len }, DS_CPU, err);
		l->slot[s].y = ds_tensor_new(DS_I32, 1, &o->batch, DS_CPU, err);
		if (!l->slot[s].x || !l->slot[s].y) {
			rc = err ? err->status : DS_ERR_NOMEM;
			goto out;
		}
		l->slot[s].epoch = -1;
	}
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->cond, NULL);
	l->have_sync = 1;
	/* Without a thread the loader still works, one batch at a time. */
	l->have_thread = pthread_create(&l->thread, NULL, worker, l) == 0;
	l->cur = 1;
out:
	if (rc)
		ds_loader_free(l);
	else
		*out = l;
	return rc;
}

void ds_loader_free(ds_loader *l)
{
	if (!l)
		return;
	if (l->have_thread) {
		pthread_mutex_lock(&l->lock);
		l->quit = 1;
		pthread_cond_broadcast(&l->cond);
		pthread_mutex_unlock(&l->lock);
		pthread_join(l->thread, NULL);
	}
	if (l->have_sync) {
		pthread_mutex_destroy(&l->lock);
		pthread_cond_destroy(&l->cond);
	}
	for (int s = 0; s < 2; s++) {
		ds_tensor_unref(l->slot[s].x);
		ds_tensor_unref(l->slot[s].y);
	}
	free(l->perm);
	free(l);
}

int64_t ds_loader_batches(const ds_loader *l)
{
	return l->batches;
}

int ds_loader_seek(ds_loader *l, int64_t epoch, int64_t batch, ds_error *err)
{
	if (epoch < 0 || batch < 0 || batch > l->batches)
		return ds_error_set(err, DS_ERR_DATA, "bad_position",
				    "batch %" PRId64 " of epoch %" PRId64 " is outside the %" PRId64 " batches of an epoch",
				    batch, epoch, l->batches);
	pthread_mutex_lock(&l->lock);
	if (l->have_thread)
		wait_idle(l);
	l->epoch = epoch;
	l->pos = batch;
	pthread_mutex_unlock(&l->lock);
	return 0;
}

int ds_loader_next(ds_loader *l, ds_tensor **x, ds_tensor **y, int64_t *n, ds_error *err)
{
	int s = -1;

	(void)err;
	pthread_mutex_lock(&l->lock);
	if (l->pos >= l->batches) {
		l->epoch++;
		l->pos = 0;
		*x = *y = NULL;
		*n = 0;
		pthread_mutex_unlock(&l->lock);
		return 0;
	}
	if (l->have_thread)
		wait_idle(l);
	for (int i = 0; i < 2; i++)
		if (l->ready[i] && l->slot[i].epoch == l->epoch && l->slot[i].batch == l->pos)
			s = i;
	if (s < 0) {
		s = l->cur ^ 1;
		request(l, s, l->epoch, l->pos);
		while (!l->ready[s])
			pthread_cond_wait(&l->cond, &l->lock);
	}
	l->cur = s;
	l->pos++;
	/* Prepare the following batch in the other slot while this one is used. */
	if (l->pos < l->batches)
		request(l, s ^ 1, l->epoch, l->pos);
	else
		request(l, s ^ 1, l->epoch + 1, 0);
	*x = l->slot[s].x;
	*y = l->slot[s].y;
	*n = l->slot[s].n;
	pthread_mutex_unlock(&l->lock);
	return 0;
}
