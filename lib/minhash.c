/* minhash.c - MinHash signatures over character shingles, and an LSH index
 * that finds near-duplicate texts without comparing every pair. */
#include "internal.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MERSENNE61 ((1ULL << 61) - 1)

/* h_i(x) = (a_i x + b_i) mod (2^61 - 1): a_i and b_i come from a fixed seed,
 * so signatures computed by different runs and machines compare. */
static uint64_t perm_a[DS_MINHASH_SIZE], perm_b[DS_MINHASH_SIZE];
static pthread_once_t perm_once = PTHREAD_ONCE_INIT;

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void perm_init(void)
{
	uint64_t state = 0x6d696e6861736831ULL;   /* "minhash1" */

	for (int i = 0; i < DS_MINHASH_SIZE; i++) {
		do
			perm_a[i] = splitmix64(&state) & MERSENNE61;
		while (perm_a[i] == 0 || perm_a[i] == MERSENNE61);
		do
			perm_b[i] = splitmix64(&state) & MERSENNE61;
		while (perm_b[i] == MERSENNE61);
	}
}

/* a x + b mod 2^61 - 1 for a, b, x < 2^61 - 1, without a division:
 * 2^61 = 1 (mod p), so the high part folds onto the low part. */
static inline uint64_t perm_apply(uint64_t a, uint64_t b, uint64_t x)
{
	unsigned __int128 t = (unsigned __int128)a * x + b;
	uint64_t r = (uint64_t)(t & MERSENNE61) + (uint64_t)(t >> 61);

	r = (r & MERSENNE61) + (r >> 61);
	return r >= MERSENNE61 ? r - MERSENNE61 : r;
}

static void signature_add(uint64_t mins[DS_MINHASH_SIZE], const char *bytes, size_t len)
{
	ds_hash128 h = ds_hash_bytes(bytes, len);
	uint64_t x = h.lo % MERSENNE61;

	for (int i = 0; i < DS_MINHASH_SIZE; i++) {
		uint64_t v = perm_apply(perm_a[i], perm_b[i], x);

		if (v < mins[i])
			mins[i] = v;
	}
}

/* A shingle is `shingle` consecutive code points (clamped to 1..64),
 * hashed as its UTF-8 bytes; an invalid subpart counts as one code point.  A ring of the last
 * shingle + 1 code point offsets gives each shingle's byte range. */
void ds_minhash(const char *text, size_t len, int shingle, uint32_t sig[DS_MINHASH_SIZE])
{
	uint64_t mins[DS_MINHASH_SIZE];
	size_t ring[65];
	size_t count = 0, i = 0;
	int k = shingle < 1 ? 1 : shingle > 64 ? 64 : shingle;

	pthread_once(&perm_once, perm_init);
	if (len == 0) {
		for (int j = 0; j < DS_MINHASH_SIZE; j++)
			sig[j] = UINT32_MAX;
		return;
	}
	for (int j = 0; j < DS_MINHASH_SIZE; j++)
		mins[j] = UINT64_MAX;
	while (i < len) {
		uint32_t cp;
		int n = ds_utf8_decode(text + i, len - i, &cp);

		ring[count % (size_t)(k + 1)] = i;
		count++;
		i += (size_t)(n < 0 ? -n : n);
		if (count >= (size_t)k) {
			size_t start = ring[(count - (size_t)k) % (size_t)(k + 1)];

			signature_add(mins, text + start, i - start);
		}
	}
	if (count < (size_t)k)
		signature_add(mins, text, len);
	for (int j = 0; j < DS_MINHASH_SIZE; j++)
		sig[j] = (uint32_t)mins[j];
}

double ds_minhash_similarity(const uint32_t *a, const uint32_t *b)
{
	int equal = 0;

	for (int i = 0; i < DS_MINHASH_SIZE; i++)
		equal += a[i] == b[i];
	return (double)equal / DS_MINHASH_SIZE;
}

/* ----------------------------------------------------------- LSH index */

/* The signature splits into `bands` bands of `rows` values; two texts
 * become candidates when one band agrees whole, which happens with
 * probability 1 - (1 - J^rows)^bands, an S-curve whose steep part sits near
 * (1/bands)^(1/rows).  Buckets live in one open-addressing table keyed by a
 * hash of (band, values), each slot the newest entry of a chain threaded
 * through next[entry * bands + band]. */
struct ds_lsh_index {
	double threshold;
	int bands, rows;
	uint32_t *sigs;          /* n x DS_MINHASH_SIZE */
	int64_t *ids;
	uint32_t *next;          /* n x bands: the older entry of the same bucket */
	uint32_t *stamp;         /* per entry: the last query that saw it */
	uint32_t query;
	size_t n, cap;
	uint64_t *keys;
	uint32_t *heads;         /* UINT32_MAX: empty slot */
	size_t slots, used;
};

ds_lsh_index *ds_lsh_index_new(double threshold)
{
	ds_lsh_index *ix;
	double best = -1;

	if (!(threshold > 0 && threshold <= 1))
		return NULL;
	ix = calloc(1, sizeof *ix);
	if (!ix)
		return NULL;
	ix->threshold = threshold;
	/* The S-curve's midpoint closest to the threshold from below, so
	 * pairs at the threshold are found with high probability; if every
	 * midpoint lies above, the lowest. */
	ix->bands = DS_MINHASH_SIZE;
	ix->rows = 1;
	for (int b = 1; b <= DS_MINHASH_SIZE; b++) {
		double t;

		if (DS_MINHASH_SIZE % b)
			continue;
		t = pow(1.0 / b, (double)b / DS_MINHASH_SIZE);
		if (t <= threshold && t > best) {
			best = t;
			ix->bands = b;
			ix->rows = DS_MINHASH_SIZE / b;
		}
	}
	ix->slots = 1024;
	ix->keys = malloc(ix->slots * sizeof *ix->keys);
	ix->heads = malloc(ix->slots * sizeof *ix->heads);
	if (!ix->keys || !ix->heads) {
		ds_lsh_index_free(ix);
		return NULL;
	}
	memset(ix->heads, 0xff, ix->slots * sizeof *ix->heads);
	return ix;
}

static uint64_t band_key(const uint32_t *sig, int band, int rows)
{
	unsigned char buf[4 * DS_MINHASH_SIZE + 4];
	size_t n = 0;
	ds_hash128 h;

	for (int r = 0; r < rows; r++) {
		uint32_t v = sig[band * rows + r];

		for (int s = 0; s < 32; s += 8)
			buf[n++] = (unsigned char)(v >> s);
	}
	for (int s = 0; s < 32; s += 8)
		buf[n++] = (unsigned char)((uint32_t)band >> s);
	h = ds_hash_bytes(buf, n);
	return h.lo;
}

/* The slot holding key, or the empty slot where it belongs. */
static size_t slot_find(const ds_lsh_index *ix, uint64_t key)
{
	size_t mask = ix->slots - 1, s = (size_t)key & mask;

	while (ix->heads[s] != UINT32_MAX && ix->keys[s] != key)
		s = (s + 1) & mask;
	return s;
}

static int table_grow(ds_lsh_index *ix)
{
	size_t slots = ix->slots * 2;
	uint64_t *keys = malloc(slots * sizeof *keys), *old_keys = ix->keys;
	uint32_t *heads = malloc(slots * sizeof *heads), *old_heads = ix->heads;
	size_t old_slots = ix->slots;

	if (!keys || !heads) {
		free(keys);
		free(heads);
		return -1;
	}
	memset(heads, 0xff, slots * sizeof *heads);
	ix->keys = keys;
	ix->heads = heads;
	ix->slots = slots;
	for (size_t i = 0; i < old_slots; i++) {
		if (old_heads[i] != UINT32_MAX) {
			size_t s = slot_find(ix, old_keys[i]);

			keys[s] = old_keys[i];
			heads[s] = old_heads[i];
		}
	}
	free(old_keys);
	free(old_heads);
	return 0;
}

static int entries_grow(ds_lsh_index *ix)
{
	size_t cap = ix->cap ? ix->cap * 2 : 256;
	uint32_t *p;
	int64_t *ids;

	if (cap >= UINT32_MAX / 2)
		return -1;
	p = realloc(ix->sigs, cap * DS_MINHASH_SIZE * sizeof *p);
	if (!p)
		return -1;
	ix->sigs = p;
	p = realloc(ix->next, cap * (size_t)ix->bands * sizeof *p);
	if (!p)
		return -1;
	ix->next = p;
	p = realloc(ix->stamp, cap * sizeof *p);
	if (!p)
		return -1;
	ix->stamp = p;
	memset(ix->stamp + ix->cap, 0, (cap - ix->cap) * sizeof *p);
	ids = realloc(ix->ids, cap * sizeof *ids);
	if (!ids)
		return -1;
	ix->ids = ids;
	ix->cap = cap;
	return 0;
}

/* Returns the id of the most similar earlier text at or above the
 * threshold (the earliest among equals) or -1; -2 when memory ran out, and
 * then sig is not added. */
int64_t ds_lsh_index_add(ds_lsh_index *ix, const uint32_t sig[DS_MINHASH_SIZE], int64_t id, double *similarity)
{
	uint64_t keys[DS_MINHASH_SIZE];
	size_t slot[DS_MINHASH_SIZE];
	uint32_t entry = (uint32_t)ix->n, best = UINT32_MAX;
	double best_sim = -1;

	if (ix->n == ix->cap && entries_grow(ix) < 0)
		return -2;
	while ((ix->used + (size_t)ix->bands) * 2 > ix->slots) {
		if (table_grow(ix) < 0)
			return -2;
	}
	if (++ix->query == 0) {
		memset(ix->stamp, 0, ix->cap * sizeof *ix->stamp);
		ix->query = 1;
	}
	for (int b = 0; b < ix->bands; b++) {
		keys[b] = band_key(sig, b, ix->rows);
		slot[b] = slot_find(ix, keys[b]);
		for (uint32_t e = ix->heads[slot[b]]; e != UINT32_MAX; e = ix->next[(size_t)e * ix->bands + b]) {
			int equal = 0;

			if (ix->stamp[e] == ix->query)
				continue;
			ix->stamp[e] = ix->query;
			for (int i = 0; i < DS_MINHASH_SIZE; i++)
				equal += ix->sigs[(size_t)e * DS_MINHASH_SIZE + i] == sig[i];
			if ((double)equal / DS_MINHASH_SIZE > best_sim ||
			    ((double)equal / DS_MINHASH_SIZE == best_sim && e < best)) {
				best_sim = (double)equal / DS_MINHASH_SIZE;
				best = e;
			}
		}
	}
	memcpy(ix->sigs + (size_t)entry * DS_MINHASH_SIZE, sig, DS_MINHASH_SIZE * sizeof *sig);
	ix->ids[entry] = id;
	ix->stamp[entry] = ix->query;
	for (int b = 0; b < ix->bands; b++) {
		/* An empty slot found above may have been taken by an earlier
		 * band of this same text; look again. */
		if (ix->heads[slot[b]] == UINT32_MAX || ix->keys[slot[b]] != keys[b])
			slot[b] = slot_find(ix, keys[b]);
		if (ix->heads[slot[b]] == UINT32_MAX) {
			ix->keys[slot[b]] = keys[b];
			ix->used++;
		}
		ix->next[(size_t)entry * ix->bands + b] = ix->heads[slot[b]];
		ix->heads[slot[b]] = entry;
	}
	ix->n++;
	if (best == UINT32_MAX || best_sim < ix->threshold - 1e-9)
		return -1;
	if (similarity)
		*similarity = best_sim;
	return ix->ids[best];
}

void ds_lsh_index_free(ds_lsh_index *ix)
{
	if (!ix)
		return;
	free(ix->sigs);
	free(ix->ids);
	free(ix->next);
	free(ix->stamp);
	free(ix->keys);
	free(ix->heads);
	free(ix);
}
