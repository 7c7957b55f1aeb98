/* infer.c - ds-infer: a model run over files, folders and streams.
 *
 * Items are listed first (ds_source_list), so that sharding, label checks
 * and the shape check of packed streams happen before their output.  Packed
 * streams (.dst files and pipes) are the exception in size: their items
 * carry their pixels, so they are listed a part at a time (--buffer-size of
 * items, whole frames), each part run and written before the next is read.
 * A stream of any length then runs in bounded memory, and a pipe's first
 * records come out while its producer is still writing.  Then a
 * pipeline of two batch slots: worker threads claim items in input order
 * and preprocess each into its row of the slot that holds its batch; the
 * calling thread waits for the slot of the next batch, copies it into the
 * plan's input, gives the slot back (the workers start on the batch after
 * next) and runs the model while they work.  Records of a batch are built
 * in parallel and written in order, so the output is the same whatever the
 * thread counts. */
#include "infer.h"
#include "source.h"

#include <errno.h>
#include <sched.h>
#include <unistd.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define CODE_LEN 48
#define MESSAGE_LEN 1024
#define CHUNK_BYTES ((uint64_t)64 << 20)   /* default --buffer-size */

enum out_format { OUT_JSONL, OUT_CSV, OUT_DST };

/* One batch being prepared: rows of the input and, per row, why it failed. */
struct slot {
	int64_t batch;               /* the batch it holds or is being filled with */
	int64_t pending;             /* rows not yet done */
	uint8_t *x;                  /* B rows of item_bytes */
	uint8_t *failed;
	char (*code)[CODE_LEN];
	char (*message)[MESSAGE_LEN];
};

struct infer {
	const ds_infer_options *o;
	ds_model *model;
	ds_preprocess *pp;
	ds_plan *plan;
	ds_item_list list;           /* the part being run */
	size_t *input_of;            /* item -> index of its input; SIZE_MAX for --files-from */
	/* listing, a part at a time */
	size_t next_input;           /* o->inputs[next_input] is next, or being read */
	ds_dst_reader *reader;       /* the packed stream being read, or NULL */
	int files_from_done, listed_all;
	int64_t seen;                /* items listed so far, before sharding */
	int64_t total;               /* items of the parts already run */
	int32_t *label_of;           /* item -> class index, or DS_INFER_*_LABEL */
	char **safe_names;           /* class names as file names (ds_file_safe_name) */
	int any_label;
	uint64_t max_bytes;

	int64_t B, count, batches, classes;
	size_t item_bytes;
	char **class_names;          /* K names: ds.labels, or the index */

	/* the pipeline */
	struct slot slot[2];
	pthread_t *threads;
	int n_threads;
	int have_sync;
	pthread_mutex_t lock;
	pthread_cond_t work, done;
	int64_t next;                /* next item to claim */
	int quit;

	/* outputs of one batch (main thread) */
	uint8_t *failed;
	char (*code)[CODE_LEN];
	char (*message)[MESSAGE_LEN];
	float *probs;                /* B x K */
	int32_t *pred;
	uint8_t *top5;
	json_t **records;
	char **lines;
	int topk;

	enum out_format format;
	ds_writer *writer;
	ds_printer *printer;
	const char *tensor_name;     /* dst: the value written */
	int want_probs;
	ds_container *frame;
	ds_tensor *frame_t, *frame_y;

	/* figures */
	int64_t errors, labelled, unknown, top1_hits, top5_hits;
	int64_t *confusion;          /* K x K: actual row, predicted column */
	char *first_error;           /* item id of the first failed item */
	double compute_seconds;
};

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int nomem(ds_error *err)
{
	return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
}

/* ------------------------------------------------------------ listing */

static const char *input_name(const char *input)
{
	return strcmp(input, "-") == 0 ? "stdin" : input;
}

static int is_packed_input(const char *input)
{
	struct stat st;

	if (strcmp(input, "-") == 0)
		return 1;
	if (stat(input, &st) != 0 || !S_ISREG(st.st_mode))
		return 0;
	return ds_file_kind_of(input) == DS_FILE_DST;
}

static int note_inputs(struct infer *inf, size_t before, size_t which, ds_error *err)
{
	size_t *grown = ds_realloc(inf->input_of, (inf->list.count + 1) * sizeof *grown, err);

	if (!grown)
		return DS_ERR_NOMEM;
	inf->input_of = grown;
	for (size_t k = before; k < inf->list.count; k++)
		inf->input_of[k] = which;
	return 0;
}

/* Keep the items of [before, count) that are this shard's: every N-th item
 * of the whole listing, counted across parts. */
static void shard_filter(struct infer *inf, size_t before)
{
	const ds_infer_options *o = inf->o;
	size_t kept = before;

	for (size_t i = before; i < inf->list.count; i++, inf->seen++) {
		if (o->shard_count <= 1 || (int)(inf->seen % o->shard_count) == o->shard_index - 1) {
			inf->input_of[kept] = inf->input_of[i];
			inf->list.items[kept++] = inf->list.items[i];
		} else {
			ds_item_free(inf->list.items[i]);
		}
	}
	inf->list.count = kept;
}

/* The next frame of the open packed stream; closes it at its end.  A frame
 * that cannot be read fails the run: its items, not one, are lost. */
static int read_frame(struct infer *inf, size_t *bytes, ds_error *err)
{
	size_t before = inf->list.count;
	int done = 0, rc;

	if ((rc = ds_dst_reader_next(inf->reader, &inf->list, &done, err)))
		return rc;
	if (done) {
		ds_dst_reader_close(inf->reader);
		inf->reader = NULL;
		inf->next_input++;
	}
	for (size_t i = before; i < inf->list.count; i++)
		*bytes += inf->list.items[i]->len;
	if ((rc = note_inputs(inf, before, inf->next_input - done, err)))
		return rc;
	shard_filter(inf, before);
	return 0;
}

/* List the next part: every input up to and including packed streams'
 * frames until --buffer-size bytes of their items are held.  A path that cannot be
 * listed becomes an error record, as an unreadable file inside a folder
 * does. */
static int list_part(struct infer *inf, ds_error *err)
{
	const ds_infer_options *o = inf->o;
	uint64_t limit = o->buffer_bytes ? o->buffer_bytes : CHUNK_BYTES;
	size_t bytes = 0;
	int rc = 0;

	ds_item_list_free(&inf->list);
	memset(&inf->list, 0, sizeof inf->list);
	while (!rc) {
		if (inf->reader) {
			if (bytes >= limit) {
				inf->count = (int64_t)inf->list.count;
				return 0;
			}
			rc = read_frame(inf, &bytes, err);
		} else if (inf->next_input < o->input_count) {
			const char *in = o->inputs[inf->next_input];
			size_t before = inf->list.count;
			ds_error sub = { 0 };

			if (is_packed_input(in)) {
				rc = ds_dst_reader_open(in, &inf->reader, err);
				continue;
			}
			rc = ds_source_list(in, o->source, &inf->list, &sub);
			if (rc == DS_ERR_IO || rc == DS_ERR_DATA)
				rc = ds_item_push_error(&inf->list, err, in, in, NULL,
							sub.code[0] ? sub.code : "unreadable", "%s", sub.message);
			else if (rc)
				ds_error_set(err, sub.status, sub.code, "%s", sub.message);
			if (!rc && !(rc = note_inputs(inf, before, inf->next_input, err)))
				shard_filter(inf, before);
			inf->next_input++;
		} else if (o->files_from && !inf->files_from_done) {
			size_t before = inf->list.count;

			inf->files_from_done = 1;
			rc = ds_source_list_files_from(o->files_from, o->source, &inf->list, err);
			if (!rc && !(rc = note_inputs(inf, before, SIZE_MAX, err)))
				shard_filter(inf, before);
		} else {
			inf->listed_all = 1;
			break;
		}
	}
	inf->count = (int64_t)inf->list.count;
	return rc;
}

/* A packed stream is already preprocessed: its rows must be what the model
 * takes, not resized behind the user's back.  Checked before any output. */
static int check_packed(struct infer *inf, ds_error *err)
{
	int w = 0, h = 0, c = 0;

	if (ds_preprocess_kind_of(inf->pp) == DS_PREPROCESS_IMAGE)
		ds_preprocess_image_size(inf->pp, &w, &h, &c);
	for (size_t i = 0; i < inf->list.count; i++) {
		const ds_item *it = inf->list.items[i];
		const char *name;

		if (inf->input_of[i] == SIZE_MAX || !is_packed_input(inf->o->inputs[inf->input_of[i]]))
			continue;
		name = input_name(inf->o->inputs[inf->input_of[i]]);
		if (it->kind == DS_ITEM_PIXELS && ds_preprocess_kind_of(inf->pp) == DS_PREPROCESS_IMAGE &&
		    (it->width != w || it->height != h || it->channels != c))
			return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
					    "%s: tensor 'x': U8 [N, %d, %d, %d] (NHWC) does not fit the model's input '%s' "
					    "F32 [N, %d, %d, %d] (NCHW)",
					    name, it->height, it->width, it->channels, inf->model->input, c, h, w);
		if (it->kind == DS_ITEM_PIXELS && ds_preprocess_kind_of(inf->pp) == DS_PREPROCESS_TEXT)
			return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
					    "%s: tensor 'x': U8 [N, %d, %d, %d] images do not fit the model's input '%s' "
					    "I32 [N, %" PRId64 "] of token ids",
					    name, it->height, it->width, it->channels, inf->model->input,
					    ds_preprocess_length(inf->pp));
		if (it->kind == DS_ITEM_TOKENS && ds_preprocess_kind_of(inf->pp) == DS_PREPROCESS_IMAGE)
			return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
					    "%s: tensor 'x': I32 token ids do not fit the model's input '%s' F32 [N, %d, %d, %d] images",
					    name, inf->model->input, c, h, w);
	}
	return 0;
}

/* ------------------------------------------------------------- labels */

static int compare_names(const void *a, const void *b)
{
	return strcmp(**(char *const *const *)a, **(char *const *const *)b);
}

static int class_names(struct infer *inf, ds_error *err)
{
	int64_t K = inf->classes;

	inf->class_names = ds_calloc(K ? (size_t)K : 1, sizeof *inf->class_names, err);
	if (!inf->class_names)
		return DS_ERR_NOMEM;
	for (int64_t k = 0; k < K; k++) {
		const char *name = json_string_value(json_array_get(inf->model->labels, (size_t)k));
		char num[24];

		if (!name) {
			snprintf(num, sizeof num, "%" PRId64, k);
			name = num;
		}
		if (!(inf->class_names[k] = ds_strdup(name, err)))
			return DS_ERR_NOMEM;
	}
	return 0;
}

/* Each item's class index, found by name once before the run. */
static int map_labels(struct infer *inf, ds_error *err)
{
	char ***sorted = NULL;
	int64_t K = inf->classes;

	free(inf->label_of);
	inf->label_of = ds_malloc((inf->list.count ? inf->list.count : 1) * sizeof *inf->label_of, err);
	sorted = ds_malloc((K ? (size_t)K : 1) * sizeof *sorted, err);
	if (!inf->label_of || !sorted) {
		free(sorted);
		return DS_ERR_NOMEM;
	}
	for (int64_t k = 0; k < K; k++)
		sorted[k] = &inf->class_names[k];
	if (K && !inf->safe_names && !(inf->safe_names = ds_calloc((size_t)K, sizeof *inf->safe_names, err))) {
		free(sorted);
		return DS_ERR_NOMEM;
	}
	for (int64_t k = 0; k < K && !inf->safe_names[k]; k++) {
		if (!(inf->safe_names[k] = ds_strdup(inf->class_names[k], err))) {
			free(sorted);
			return DS_ERR_NOMEM;
		}
		ds_file_safe_name(inf->safe_names[k]);
	}
	qsort(sorted, (size_t)K, sizeof *sorted, compare_names);
	for (size_t i = 0; i < inf->list.count; i++) {
		const char *label = inf->list.items[i]->label;
		char **key = (char **)&label;
		char ***hit;

		inf->label_of[i] = DS_INFER_NO_LABEL;
		if (!label)
			continue;
		inf->any_label = 1;
		hit = K ? bsearch(&key, sorted, (size_t)K, sizeof *sorted, compare_names) : NULL;
		inf->label_of[i] = hit ? (int32_t)(*hit - inf->class_names) : DS_INFER_UNKNOWN_LABEL;
		/* A class folder written by ds-clean --output-dir carries the
		 * label's file-safe form ("T-shirt/top" -> "T-shirt_top"). */
		for (int64_t k = 0; !hit && k < K && inf->safe_names; k++)
			if (!strcmp(inf->safe_names[k], label))
				inf->label_of[i] = (int32_t)k;
	}
	free(sorted);
	return 0;
}

/* ----------------------------------------------------------- workers */

static int64_t batch_rows(const struct infer *inf, int64_t b)
{
	int64_t left = inf->count - b * inf->B;

	if (b >= inf->batches || left <= 0)
		return 0;
	return left < inf->B ? left : inf->B;
}

static void prepare(struct infer *inf, int64_t i)
{
	struct slot *s = &inf->slot[(i / inf->B) & 1];
	int64_t r = i % inf->B;
	ds_item *it = inf->list.items[i];
	uint8_t *row = s->x + (size_t)r * inf->item_bytes;
	ds_error e = { 0 };
	int rc;

	rc = ds_preprocess_item(inf->pp, it, inf->max_bytes, row, &e);
	s->failed[r] = rc != 0;
	if (rc) {
		/* A failed row still goes through the model: make it harmless. */
		if (ds_preprocess_dtype(inf->pp) == DS_I32)
			memset(row, 0xff, inf->item_bytes);
		else
			memset(row, 0, inf->item_bytes);
		snprintf(s->code[r], CODE_LEN, "%s", e.code[0] ? e.code : "unreadable");
		snprintf(s->message[r], MESSAGE_LEN, "%s", e.message);
	}
	/* The row holds the item now: give its bytes back as we go. */
	free(it->data);
	it->data = NULL;
}

/* Claim the next item whose slot is free; -1 when there is none yet. */
static int64_t claim(struct infer *inf)
{
	int64_t i = inf->next;

	if (i >= inf->count || inf->slot[(i / inf->B) & 1].batch != i / inf->B)
		return -1;
	inf->next++;
	return i;
}

static void finish_item(struct infer *inf, int64_t i)
{
	struct slot *s = &inf->slot[(i / inf->B) & 1];

	if (--s->pending == 0)
		pthread_cond_broadcast(&inf->done);
}

static void *worker(void *arg)
{
	struct infer *inf = arg;

	pthread_mutex_lock(&inf->lock);
	for (;;) {
		int64_t i;

		while (!inf->quit && (i = claim(inf)) < 0)
			pthread_cond_wait(&inf->work, &inf->lock);
		if (inf->quit)
			break;
		pthread_mutex_unlock(&inf->lock);
		prepare(inf, i);
		pthread_mutex_lock(&inf->lock);
		finish_item(inf, i);
	}
	pthread_mutex_unlock(&inf->lock);
	return NULL;
}

/* Wait until batch b is prepared (or, without workers, prepare it here on
 * the compute threads), then take its rows and hand the slot to batch
 * b + 2. */
static void take_batch(struct infer *inf, int64_t b, ds_tensor *x)
{
	struct slot *s = &inf->slot[b & 1];
	int64_t n = batch_rows(inf, b), first = b * inf->B;

	if (inf->n_threads == 0) {
#pragma omp parallel for schedule(dynamic, 4)
		for (int64_t r = 0; r < n; r++)
			prepare(inf, first + r);
	} else {
		pthread_mutex_lock(&inf->lock);
		while (s->pending > 0)
			pthread_cond_wait(&inf->done, &inf->lock);
		pthread_mutex_unlock(&inf->lock);
	}
	memcpy(x->data, s->x, (size_t)n * inf->item_bytes);
	memcpy(inf->failed, s->failed, (size_t)n);
	for (int64_t r = 0; r < n; r++) {
		if (!s->failed[r])
			continue;
		memcpy(inf->code[r], s->code[r], CODE_LEN);
		memcpy(inf->message[r], s->message[r], MESSAGE_LEN);
	}
	pthread_mutex_lock(&inf->lock);
	s->batch = b + 2;
	s->pending = batch_rows(inf, b + 2);
	pthread_cond_broadcast(&inf->work);
	pthread_mutex_unlock(&inf->lock);
}

/* Cores this process may run on. */
static int cores(void)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof set, &set) == 0)
		return CPU_COUNT(&set);
	return (int)sysconf(_SC_NPROCESSORS_ONLN);
}

/* Workers only on cores the compute threads leave free: OpenMP's barriers
 * wait for a preempted thread, and on 2 cores, 2 compute threads beside 2
 * decoding threads ran the model 4 times slower than alone.  Without a free
 * core the compute threads prepare each batch themselves, between runs. */
static int start_pipeline(struct infer *inf, ds_error *err)
{
	int want = inf->o->workers > 0 ? inf->o->workers : cores() - ds_threads_get();

	if (want < 0)
		want = 0;
	if (want > inf->count)
		want = (int)inf->count;
	/* Slots and the thread array serve every part of the run. */
	for (int s = 0; s < 2; s++) {
		struct slot *sl = &inf->slot[s];

		if (!sl->x) {
			sl->x = ds_aligned_alloc((size_t)inf->B * inf->item_bytes, err);
			sl->failed = ds_calloc((size_t)inf->B, 1, err);
			sl->code = ds_calloc((size_t)inf->B, sizeof *sl->code, err);
			sl->message = ds_calloc((size_t)inf->B, sizeof *sl->message, err);
		}
		if (!sl->x || !sl->failed || !sl->code || !sl->message)
			return DS_ERR_NOMEM;
		sl->batch = s;
		sl->pending = batch_rows(inf, s);
	}
	inf->next = 0;
	inf->quit = 0;
	inf->n_threads = 0;
	pthread_mutex_init(&inf->lock, NULL);
	pthread_cond_init(&inf->work, NULL);
	pthread_cond_init(&inf->done, NULL);
	inf->have_sync = 1;
	if (!inf->threads)
		inf->threads = ds_calloc((size_t)(cores() > 0 ? cores() : 1) + (size_t)inf->o->workers + 1,
					 sizeof *inf->threads, err);
	if (!inf->threads)
		return DS_ERR_NOMEM;
	/* Fewer threads than asked (or none) still work: take_batch prepares
	 * batches itself when no worker runs. */
	for (int t = 0; t < want; t++) {
		if (pthread_create(&inf->threads[t], NULL, worker, inf) != 0)
			break;
		inf->n_threads++;
	}
	return 0;
}

static void stop_pipeline(struct infer *inf)
{
	if (!inf->have_sync)
		return;
	pthread_mutex_lock(&inf->lock);
	inf->quit = 1;
	pthread_cond_broadcast(&inf->work);
	pthread_mutex_unlock(&inf->lock);
	for (int t = 0; t < inf->n_threads; t++)
		pthread_join(inf->threads[t], NULL);
	pthread_mutex_destroy(&inf->lock);
	pthread_cond_destroy(&inf->work);
	pthread_cond_destroy(&inf->done);
	inf->have_sync = 0;
}

/* ----------------------------------------------------------- records */

static double rounded(float p)
{
	/* Six decimals: what a reader needs, without float noise such as
	 * 0.912345671653747 in every record. */
	return round((double)p * 1e6) / 1e6;
}

/* Softmax of one row and its top k indices (ties: the lower index). */
static void rank_row(const float *logits, int64_t K, float *probs, int32_t *top, int k)
{
	float m = logits[0];
	double sum = 0;

	for (int64_t j = 1; j < K; j++)
		if (logits[j] > m)
			m = logits[j];
	for (int64_t j = 0; j < K; j++) {
		probs[j] = expf(logits[j] - m);
		sum += probs[j];
	}
	for (int64_t j = 0; j < K; j++)
		probs[j] = (float)(probs[j] / sum);
	for (int t = 0; t < k; t++) {
		int32_t best = -1;

		for (int64_t j = 0; j < K; j++) {
			int taken = 0;

			for (int u = 0; u < t && !taken; u++)
				taken = top[u] == j;
			if (!taken && (best < 0 || logits[j] > logits[best]))
				best = (int32_t)j;
		}
		top[t] = best;
	}
}

static json_t *error_object(const char *code, const char *message)
{
	return json_pack("{s:s, s:s}", "code", code, "message", message);
}

/* The record of row r of the batch starting at item first. */
static json_t *make_record(struct infer *inf, int64_t first, int64_t r, const float *out, int64_t out_elems)
{
	const ds_item *it = inf->list.items[first + r];
	json_t *rec = json_object();
	int32_t top[64] = { 0 };
	int k = inf->topk;

	if (!rec)
		return NULL;
	json_object_set_new(rec, "item", json_string(it->id));
	if (it->label)
		json_object_set_new(rec, "label", json_string(it->label));
	if (inf->failed[r]) {
		if (inf->format == OUT_CSV) {
			char text[CODE_LEN + MESSAGE_LEN + 4];

			snprintf(text, sizeof text, "%s: %s", inf->code[r], inf->message[r]);
			json_object_set_new(rec, "error", json_string(text));
		} else {
			json_object_set_new(rec, "error", error_object(inf->code[r], inf->message[r]));
		}
		inf->pred[r] = -1;
		return rec;
	}
	if (inf->classes > 0) {
		const float *logits = out + r * inf->classes;
		float *probs = inf->probs + r * inf->classes;
		json_t *list = json_array();
		int32_t actual = inf->label_of[first + r];

		rank_row(logits, inf->classes, probs, top, k);
		inf->pred[r] = top[0];
		inf->top5[r] = 0;
		if (actual >= 0) {
			/* Its rank, whatever --topk: classes ahead of it, ties
			 * going to the lower index as in the top-k list. */
			int64_t ahead = 0;

			for (int64_t j = 0; j < inf->classes; j++)
				ahead += logits[j] > logits[actual] || (logits[j] == logits[actual] && j < actual);
			inf->top5[r] = ahead < 5;
		}
		json_object_set_new(rec, "prediction", json_string(inf->class_names[top[0]]));
		json_object_set_new(rec, "probability", json_real(rounded(probs[top[0]])));
		if (inf->format == OUT_CSV) {
			char text[1024];
			size_t used = 0;

			text[0] = 0;
			for (int t = 0; t < k && used < sizeof text; t++)
				used += (size_t)snprintf(text + used, sizeof text - used, "%s%s:%.6f", t ? " " : "",
							 inf->class_names[top[t]], rounded(probs[top[t]]));
			json_object_set_new(rec, "top", json_string(text));
			json_object_set_new(rec, "error", json_null());
		} else {
			for (int t = 0; t < k; t++)
				json_array_append_new(list, json_pack("{s:s, s:f}", "label", inf->class_names[top[t]],
								      "probability", rounded(probs[top[t]])));
			json_object_set_new(rec, "top", list);
			list = NULL;
		}
		json_decref(list);
	} else {
		json_t *vals = json_array();

		inf->pred[r] = -1;
		for (int64_t j = 0; vals && j < out_elems; j++)
			json_array_append_new(vals, json_real((double)out[r * out_elems + j]));
		json_object_set_new(rec, "output", vals);
	}
	return rec;
}

/* The same columns in every CSV row, as the header comes from the first;
 * takes rec. */
static json_t *csv_columns(json_t *rec)
{
	static const char *const cols[] = { "item", "label", "prediction", "probability", "top", "error" };
	json_t *row = json_object();

	for (size_t c = 0; row && c < DS_ARRAY_LEN(cols); c++) {
		json_t *v = json_object_get(rec, cols[c]);

		json_object_set(row, cols[c], v ? v : json_null());
	}
	json_decref(rec);
	return row;
}

/* ------------------------------------------------------------ frames */

static int frame_setup(struct infer *inf, ds_error *err)
{
	const ds_tensor *src;
	int64_t shape[DS_MAX_DIMS];
	int rc;

	if (inf->want_probs)
		src = ds_plan_tensor(inf->plan, inf->model->output);
	else
		src = ds_plan_tensor(inf->plan, inf->tensor_name);
	if (!src)
		return ds_error_set(err, DS_ERR_RUN, "plan", "the plan kept no value '%s'", inf->tensor_name);
	memcpy(shape, src->shape, sizeof shape);
	shape[0] = inf->B;
	inf->frame = ds_container_new();
	if (!inf->frame)
		return nomem(err);
	inf->frame_t = ds_tensor_new(inf->want_probs ? DS_F32 : src->dtype, src->ndim, shape, DS_CPU, err);
	if (!inf->frame_t)
		return err->status;
	if ((rc = ds_container_add(inf->frame, inf->want_probs ? "probs" : inf->tensor_name, inf->frame_t, err)))
		return rc;
	if (inf->any_label) {
		inf->frame_y = ds_tensor_new(DS_I32, 1, &inf->B, DS_CPU, err);
		if (!inf->frame_y)
			return err->status;
		if ((rc = ds_container_add(inf->frame, "y", inf->frame_y, err)))
			return rc;
	}
	if ((rc = ds_container_meta_set(inf->frame, "ds.format", DS_FORMAT_FRAME, err)))
		return rc;
	if (inf->model->labels && (rc = ds_container_meta_set_json(inf->frame, "ds.labels", inf->model->labels, err)))
		return rc;
	return 0;
}

/* One frame of the batch's good rows. */
static int put_frame(struct infer *inf, int64_t first, int64_t n, const ds_tensor *src, ds_error *err)
{
	size_t row = ds_tensor_nbytes(inf->frame_t) / (size_t)inf->B;
	json_t *ids = json_array();
	int64_t kept = 0;
	int rc;

	if (!ids)
		return nomem(err);
	for (int64_t r = 0; r < n; r++) {
		if (inf->failed[r])
			continue;
		if (inf->want_probs)
			memcpy((uint8_t *)inf->frame_t->data + (size_t)kept * row, inf->probs + r * inf->classes, row);
		else
			memcpy((uint8_t *)inf->frame_t->data + (size_t)kept * row, (const uint8_t *)src->data + (size_t)r * row,
			       row);
		if (inf->frame_y)
			((int32_t *)inf->frame_y->data)[kept] = inf->label_of[first + r] >= 0 ? inf->label_of[first + r] : -1;
		json_array_append_new(ids, json_string(inf->list.items[first + r]->id));
		kept++;
	}
	rc = 0;
	if (kept > 0) {
		inf->frame_t->shape[0] = kept;
		if (inf->frame_y)
			inf->frame_y->shape[0] = kept;
		rc = ds_container_meta_set_json(inf->frame, "ds.items", ids, err);
		if (!rc)
			rc = ds_writer_put(inf->writer, inf->frame, err);
		inf->frame_t->shape[0] = inf->B;
		if (inf->frame_y)
			inf->frame_y->shape[0] = inf->B;
	}
	json_decref(ids);
	return rc;
}

/* ------------------------------------------------------------- a batch */

static int emit_batch(struct infer *inf, int64_t b, ds_error *err)
{
	int64_t first = b * inf->B, n = batch_rows(inf, b);
	ds_tensor *out = ds_plan_tensor(inf->plan, inf->model->output);
	ds_tensor *named = inf->format == OUT_DST && !inf->want_probs ? ds_plan_tensor(inf->plan, inf->tensor_name) : NULL;
	int64_t out_elems = out && n ? ds_tensor_numel(out) / n : 0;
	int rc = 0, nomem_seen = 0;

	if (!out || out->dtype != DS_F32 || (inf->format == OUT_DST && !inf->want_probs && !named))
		return ds_error_set(err, DS_ERR_RUN, "plan", "the plan kept no output to read");
	/* Building records (softmax, top-k, JSON text) is per item and
	 * independent: the compute threads share it. */
#pragma omp parallel for schedule(static)
	for (int64_t r = 0; r < n; r++) {
		json_t *rec = make_record(inf, first, r, out->data, out_elems);

		inf->lines[r] = NULL;
		inf->records[r] = NULL;
		if (!rec) {
#pragma omp atomic write
			nomem_seen = 1;
			continue;
		}
		if (inf->format == OUT_JSONL) {
			inf->lines[r] = json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
			json_decref(rec);
			if (!inf->lines[r]) {
#pragma omp atomic write
				nomem_seen = 1;
			}
		} else if (inf->format == OUT_CSV) {
			inf->records[r] = csv_columns(rec);
			if (!inf->records[r]) {
#pragma omp atomic write
				nomem_seen = 1;
			}
		} else {
			json_decref(rec);   /* dst: only the ranks and probabilities were wanted */
		}
	}
	if (nomem_seen)
		rc = nomem(err);
	for (int64_t r = 0; r < n; r++) {
		int32_t actual = inf->label_of[first + r];

		if (!rc && inf->format == OUT_JSONL) {
			FILE *f = ds_writer_file(inf->writer);

			if (fputs(inf->lines[r], f) == EOF || fputc('\n', f) == EOF)
				rc = ds_error_errno(err, errno, inf->o->output ? inf->o->output : "stdout");
		} else if (!rc && inf->format == OUT_CSV) {
			rc = ds_printer_record(inf->printer, inf->records[r], err);
		}
		free(inf->lines[r]);
		json_decref(inf->records[r]);
		inf->lines[r] = NULL;
		inf->records[r] = NULL;
		if (inf->failed[r]) {
			if (inf->errors++ == 0 && !(inf->first_error = ds_strdup(inf->list.items[first + r]->id, err)))
				rc = DS_ERR_NOMEM;
			continue;
		}
		if (actual == DS_INFER_UNKNOWN_LABEL)
			inf->unknown++;
		if (actual < 0 || inf->classes == 0)
			continue;
		inf->labelled++;
		inf->top1_hits += inf->pred[r] == actual;
		inf->top5_hits += inf->top5[r];
		inf->confusion[(size_t)actual * (size_t)inf->classes + (size_t)inf->pred[r]]++;
	}
	if (!rc && inf->format == OUT_DST) {
		/* probs are filled by make_record for classifiers. */
		rc = put_frame(inf, first, n, named, err);
	}
	return rc;
}

/* ------------------------------------------------------------- summary */

static json_t *summary(struct infer *inf, double seconds)
{
	int64_t ok = inf->total - inf->errors;
	json_t *doc = json_pack("{s:s, s:I, s:I, s:I}", "model", inf->o->model, "items", (json_int_t)inf->total,
				"classified", (json_int_t)ok, "errors", (json_int_t)inf->errors);

	if (!doc)
		return NULL;
	if (inf->any_label && inf->classes > 0) {
		json_t *classes = json_array(), *confusion = json_array();
		int64_t K = inf->classes;

		json_object_set_new(doc, "labelled", json_integer(inf->labelled));
		json_object_set_new(doc, "unknown_labels", json_integer(inf->unknown));
		json_object_set_new(doc, "top1_accuracy",
				    inf->labelled ? json_real((double)inf->top1_hits / (double)inf->labelled) : json_null());
		json_object_set_new(doc, "top5_accuracy",
				    inf->labelled ? json_real((double)inf->top5_hits / (double)inf->labelled) : json_null());
		for (int64_t a = 0; a < K; a++) {
			int64_t items = 0, correct = inf->confusion[a * K + a];

			for (int64_t p = 0; p < K; p++)
				items += inf->confusion[a * K + p];
			if (!items)
				continue;
			json_array_append_new(classes, json_pack("{s:s, s:I, s:I, s:f}", "class", inf->class_names[a],
								 "items", (json_int_t)items, "correct", (json_int_t)correct,
								 "accuracy", (double)correct / (double)items));
		}
		for (int64_t a = 0; K <= DS_INFER_CONFUSION_MAX && a < K; a++) {
			json_t *row = json_pack("{s:s}", "actual", inf->class_names[a]);

			for (int64_t p = 0; row && p < K; p++)
				json_object_set_new(row, inf->class_names[p], json_integer(inf->confusion[a * K + p]));
			json_array_append_new(confusion, row);
		}
		json_object_set_new(doc, "classes", classes);
		if (K <= DS_INFER_CONFUSION_MAX)
			json_object_set_new(doc, "confusion", confusion);
		else
			json_decref(confusion);
	}
	json_object_set_new(doc, "seconds", json_real(seconds));
	json_object_set_new(doc, "items_per_second", json_real(seconds > 0 ? (double)inf->total / seconds : 0));
	json_object_set_new(doc, "compute_items_per_second",
			    json_real(inf->compute_seconds > 0 ? (double)inf->total / inf->compute_seconds : 0));
	return doc;
}

/* --------------------------------------------------------------- setup */

static int parse_format(struct infer *inf, ds_error *err)
{
	const char *f = inf->o->output_format ? inf->o->output_format : "jsonl";

	if (!strcmp(f, "jsonl"))
		inf->format = OUT_JSONL;
	else if (!strcmp(f, "csv"))
		inf->format = OUT_CSV;
	else if (!strcmp(f, "dst"))
		inf->format = OUT_DST;
	else
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--output-format: '%s' is not jsonl, csv or dst", f);
	if (inf->o->output_tensor && inf->format != OUT_DST)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--output-tensor needs --output-format dst");
	return 0;
}

static int setup_model(struct infer *inf, ds_error *err)
{
	const ds_infer_options *o = inf->o;
	const ds_shape *in;
	int rc;

	if ((rc = ds_model_load(o->model, o->load_flags, &inf->model, err)))
		return rc;
	in = ds_graph_shape(inf->model->g, inf->model->input);
	if (!in)
		return ds_error_set(err, DS_ERR_DATA, "bad_graph", "%s: the input has no shape", o->model);
	if ((rc = ds_preprocess_new(inf->model->preprocess, in, &inf->pp, err))) {
		ds_error_prefix(err, "%s: input '%s'", o->model, inf->model->input);
		return rc;
	}
	inf->classes = inf->model->classes;
	inf->item_bytes = (size_t)ds_preprocess_item_elems(inf->pp) * ds_dtype_size(ds_preprocess_dtype(inf->pp));
	inf->topk = o->topk > 0 ? o->topk : 5;
	if (inf->topk > 64)
		inf->topk = 64;
	if (inf->classes > 0 && inf->topk > inf->classes)
		inf->topk = (int)inf->classes;
	inf->tensor_name = o->output_tensor ? o->output_tensor : inf->model->output;
	inf->want_probs = inf->format == OUT_DST && !strcmp(inf->tensor_name, "probs") &&
			  !ds_graph_shape(inf->model->g, "probs");
	if (inf->want_probs && inf->classes == 0)
		return ds_error_set(err, DS_ERR_USAGE, "usage",
				    "--output-tensor probs: the model's output '%s' is not [N, K] class scores",
				    inf->model->output);
	if (inf->format == OUT_DST && !inf->want_probs && !ds_graph_shape(inf->model->g, inf->tensor_name))
		return ds_error_set(err, DS_ERR_USAGE, "usage",
				    "--output-tensor: the model's graph has no value '%s' (ds-info %s lists them)",
				    inf->tensor_name, o->model);
	return class_names(inf, err);
}

static int setup_plan(struct infer *inf, ds_error *err)
{
	int64_t B = inf->B;
	int rc;

	if ((rc = ds_plan_new(inf->model->g, inf->model->c, B, NULL, inf->o->device, &inf->plan, err)))
		return rc;
	if (inf->format == OUT_DST && !inf->want_probs && (rc = ds_plan_keep(inf->plan, inf->tensor_name, err)))
		return rc;
	if (ds_plan_tensor(inf->plan, inf->tensor_name) == NULL && inf->format == OUT_DST && !inf->want_probs)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--output-tensor '%s' cannot be read after the run",
				    inf->tensor_name);
	inf->failed = ds_calloc((size_t)B, 1, err);
	inf->code = ds_calloc((size_t)B, sizeof *inf->code, err);
	inf->message = ds_calloc((size_t)B, sizeof *inf->message, err);
	inf->probs = ds_malloc((size_t)B * (size_t)(inf->classes ? inf->classes : 1) * sizeof *inf->probs, err);
	inf->pred = ds_calloc((size_t)B, sizeof *inf->pred, err);
	inf->top5 = ds_calloc((size_t)B, 1, err);
	inf->records = ds_calloc((size_t)B, sizeof *inf->records, err);
	inf->lines = ds_calloc((size_t)B, sizeof *inf->lines, err);
	inf->confusion = ds_calloc((size_t)(inf->classes ? inf->classes * inf->classes : 1), sizeof *inf->confusion, err);
	if (!inf->failed || !inf->code || !inf->message || !inf->probs || !inf->pred || !inf->top5 || !inf->records ||
	    !inf->lines || !inf->confusion)
		return DS_ERR_NOMEM;
	return 0;
}

static int open_output(struct infer *inf, ds_error *err)
{
	const char *path = inf->o->output ? inf->o->output : "-";
	int rc;

	if (inf->format == OUT_DST)
		return ds_writer_open(path, &inf->writer, err);
	if ((rc = ds_writer_open_text(path, &inf->writer, err)))
		return rc;
	if (inf->format == OUT_CSV && !(inf->printer = ds_printer_new(ds_writer_file(inf->writer), DS_FORMAT_CSV)))
		return nomem(err);
	return 0;
}

static void infer_free(struct infer *inf)
{
	stop_pipeline(inf);
	free(inf->threads);
	for (int s = 0; s < 2; s++) {
		ds_aligned_free(inf->slot[s].x);
		free(inf->slot[s].failed);
		free(inf->slot[s].code);
		free(inf->slot[s].message);
	}
	for (int64_t k = 0; inf->class_names && k < inf->classes; k++)
		free(inf->class_names[k]);
	free(inf->class_names);
	free(inf->failed);
	free(inf->code);
	free(inf->message);
	free(inf->probs);
	free(inf->pred);
	free(inf->top5);
	free(inf->records);
	free(inf->lines);
	free(inf->confusion);
	free(inf->input_of);
	free(inf->label_of);
	for (int64_t k = 0; inf->safe_names && k < inf->classes; k++)
		free(inf->safe_names[k]);
	free(inf->safe_names);
	ds_tensor_unref(inf->frame_t);
	ds_tensor_unref(inf->frame_y);
	ds_container_free(inf->frame);
	ds_printer_free(inf->printer, NULL);
	ds_writer_abort(inf->writer);
	ds_plan_free(inf->plan);
	ds_preprocess_free(inf->pp);
	ds_model_free(inf->model);
	ds_item_list_free(&inf->list);
	ds_dst_reader_close(inf->reader);
	free(inf->first_error);
}

static int check_options(const ds_infer_options *o, ds_error *err)
{
	int stdin_inputs = o->files_from && !strcmp(o->files_from, "-");

	if (!o->model)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "no model: give --model FILE");
	if (o->input_count == 0 && !o->files_from)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "no input: name files, folders or streams (- for stdin), or give --files-from");
	for (size_t i = 0; i < o->input_count; i++)
		stdin_inputs += !strcmp(o->inputs[i], "-");
	stdin_inputs += !strcmp(o->model, "-");
	if (stdin_inputs > 1)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "standard input can be read only once (the model, an input or --files-from)");
	if (o->batch < 0 || o->batch > (1 << 20))
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--batch %" PRId64 " is out of range", o->batch);
	if (o->shard_count < 0 || (o->shard_count > 0 && (o->shard_index < 1 || o->shard_index > o->shard_count)))
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--shard %d/%d: K must be in 1..N", o->shard_index,
				    o->shard_count);
	return 0;
}

/* One part: its batches through the pipeline, each run and written. */
static int run_part(struct infer *inf, ds_progress *progress, ds_error *err)
{
	int rc = 0;

	inf->batches = (inf->count + inf->B - 1) / inf->B;
	if (inf->count > 0 && (rc = start_pipeline(inf, err)))
		return rc;
	for (int64_t b = 0; b < inf->batches && !rc; b++) {
		int64_t n = batch_rows(inf, b);
		ds_tensor *x;
		double c0;

		if ((rc = ds_plan_set_batch(inf->plan, n, err)))
			break;
		if (!(x = ds_plan_tensor(inf->plan, inf->model->input))) {
			rc = ds_error_set(err, DS_ERR_RUN, "plan", "the plan has no input '%s'", inf->model->input);
			break;
		}
		take_batch(inf, b, x);
		c0 = now_seconds();
		if ((rc = ds_plan_forward(inf->plan, 0, (uint64_t)(inf->total / inf->B + b), err)))
			break;
		inf->compute_seconds += now_seconds() - c0;
		rc = emit_batch(inf, b, err);
		ds_progress_update(progress, (uint64_t)(inf->total + b * inf->B + n));
		if (!rc && ds_cli_interrupted())
			rc = ds_error_set(err, DS_ERR_INTERRUPTED, "interrupted", "interrupted: no output written");
	}
	stop_pipeline(inf);
	inf->total += inf->count;
	/* A part's records reach a pipe's reader now, not when a buffer fills. */
	if (!rc && inf->format != OUT_DST && !inf->listed_all && fflush(ds_writer_file(inf->writer)) == EOF)
		rc = ds_error_errno(err, errno, inf->o->output ? inf->o->output : "stdout");
	return rc;
}

int ds_infer_run(const ds_infer_options *o, json_t **out, ds_error *err)
{
	struct infer inf = { .o = o };
	ds_progress *progress = NULL;
	double t0 = now_seconds();
	int rc;

	*out = NULL;
	if ((rc = check_options(o, err)) || (rc = parse_format(&inf, err)))
		return rc;
	inf.B = o->batch > 0 ? o->batch : 64;
	inf.max_bytes = o->source ? o->source->max_bytes : 0;
	if ((rc = setup_model(&inf, err)) || (rc = list_part(&inf, err)) || (rc = check_packed(&inf, err)) ||
	    (rc = map_labels(&inf, err)))
		goto out;
	if (inf.listed_all && inf.count > 0 && inf.count < inf.B)
		inf.B = inf.count;   /* a plan no larger than the work */
	if ((rc = setup_plan(&inf, err)) || (rc = open_output(&inf, err)))
		goto out;
	if (inf.format == OUT_DST && (rc = frame_setup(&inf, err)))
		goto out;
	if (o->cli)
		ds_log_verbose(o->cli, "batches of %" PRId64 ", %zu bytes of activations%s", inf.B,
			       ds_plan_arena_bytes(inf.plan), inf.listed_all ? "" : "; packed streams read a part at a time");
	/* The total is known when everything was listed at once. */
	progress = o->cli ? ds_progress_start(o->cli, "inferring", inf.listed_all ? (uint64_t)inf.count : 0, "items")
			  : NULL;
	rc = run_part(&inf, progress, err);
	while (!rc && !inf.listed_all) {
		if ((rc = list_part(&inf, err)) || (rc = check_packed(&inf, err)) || (rc = map_labels(&inf, err)))
			break;
		rc = run_part(&inf, progress, err);
	}
	ds_progress_end(progress);
	if (!rc && inf.printer) {
		rc = ds_printer_free(inf.printer, err);
		inf.printer = NULL;
	}
	if (!rc) {
		rc = ds_writer_commit(inf.writer, err);
		inf.writer = NULL;
	}
	if (!rc) {
		*out = summary(&inf, now_seconds() - t0);
		if (!*out)
			rc = nomem(err);
	}
	if (!rc && o->cli)
		rc = ds_cli_event(o->cli, "end", *out);
	if (!rc && inf.unknown && o->cli)
		ds_log_warn(o->cli, "%" PRId64 " items have a label the model does not know: not counted in the accuracy",
			    inf.unknown);
	if (!rc && inf.errors)
		rc = ds_error_set(err, DS_ERR_DATA, "item_errors",
				  "%" PRId64 " of %" PRId64 " items could not be read or decoded (the records say why; first: %s)",
				  inf.errors, inf.total, inf.first_error);
out:
	infer_free(&inf);
	return rc;
}
