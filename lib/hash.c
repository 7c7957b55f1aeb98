/* hash.c - content hashes for exact duplicates, and an index of 64-bit
 * perceptual hashes that finds near duplicates by multi-index hashing. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define K0 0x9e3779b97f4a7c15ULL
#define K1 0xc2b2ae3d27d4eb4fULL
#define K2 0x165667b19e3779f9ULL
#define K3 0xd6e8feb86659fd93ULL

static inline uint64_t rotl64(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

/* Little-endian whatever the machine, so a hash is the same everywhere. */
static inline uint64_t read_le64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

/* One word into one lane: multiply spreads a bit upwards, the rotation
 * brings the well-mixed high bits down for the next multiply. */
static inline uint64_t lane_step(uint64_t acc, uint64_t w)
{
	return rotl64(acc + w * K1, 31) * K0;
}

/* A bijective 64-bit finalizer (xor-shift-multiply): every input bit
 * reaches every output bit with probability near one half. */
static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* Four independent lanes take 32 bytes per iteration so the multiplies of
 * one iteration overlap in the pipeline; the length seeds the lanes and the
 * finalizer, so runs of zero bytes of different lengths differ. */
ds_hash128 ds_hash_bytes(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t v[4] = { K0 ^ len, K1 + len, K2 ^ rotl64(len, 32), K3 - len };
	size_t n = len;
	ds_hash128 h;
	uint64_t h1, h2;
	int lane = 0;

	while (n >= 32) {
		v[0] = lane_step(v[0], read_le64(p));
		v[1] = lane_step(v[1], read_le64(p + 8));
		v[2] = lane_step(v[2], read_le64(p + 16));
		v[3] = lane_step(v[3], read_le64(p + 24));
		p += 32;
		n -= 32;
	}
	while (n >= 8) {
		v[lane] = lane_step(v[lane], read_le64(p));
		lane++;
		p += 8;
		n -= 8;
	}
	if (n > 0) {
		unsigned char last[8] = { 0 };

		memcpy(last, p, n);
		v[lane] = lane_step(v[lane], read_le64(last) ^ ((uint64_t)n << 59));
	}
	h1 = v[0] ^ rotl64(v[1], 27);
	h2 = v[2] ^ rotl64(v[3], 33);
	h1 ^= len;
	h2 += len * K2;
	h1 += h2;
	h2 += h1;
	h1 = mix64(h1);
	h2 = mix64(h2 ^ K3);
	h1 += h2;
	h2 += h1;
	h.lo = h1;
	h.hi = h2;
	return h;
}

/* Most significant half first, as one 128-bit number would print. */
const char *ds_hash128_hex(ds_hash128 h, char *buf)
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 0; i < 16; i++) {
		buf[i] = digits[(h.hi >> (60 - 4 * i)) & 15];
		buf[16 + i] = digits[(h.lo >> (60 - 4 * i)) & 15];
	}
	buf[32] = 0;
	return buf;
}

int ds_hamming(uint64_t a, uint64_t b)
{
	return __builtin_popcountll(a ^ b);
}

/* ------------------------------------------------------ hamming index */

/* Multi-index hashing (Norouzi, Punjani and Fleet): the 64 bits split into
 * four 16-bit chunks, each with a direct table of 65536 buckets.  With
 * d = 4q + a (0 <= a < 4), chunks 0..a are searched within radius q and the
 * rest within q - 1 (-1: not searched nor stored); a pair at distance <= d
 * must then agree within the radius on some chunk, since otherwise the
 * chunk distances would add up to at least 4q + a + 1.  At d = 6 that is
 * 17 + 17 + 17 + 1 buckets per query.
 *
 * The cost is memory latency: every probe is a bucket somewhere in a large
 * table.  So a bucket keeps the full hashes (its entries' numbers after
 * them, read only on a match) and the probes are prefetched a few buckets
 * ahead, which halved the time of a million adds.  A candidate met through
 * two chunks is simply checked twice, cheaper than a stamp lookup.  Above
 * distance 15 the probes (over 2,500 per chunk) cost more than a scan, so
 * the index scans every entry. */
#define CHUNKS 4
#define CHUNK_BITS 16
#define CHUNK_VALUES (1u << CHUNK_BITS)
#define MIH_MAX_DISTANCE 15
#define PREFETCH_AHEAD 8

/* data: cap hashes, then cap uint32 entry numbers. */
struct hbucket {
	uint64_t *data;
	uint32_t len, cap;
};

struct best {
	int d;
	uint32_t entry;
};

struct ds_hamming_index {
	int max_distance;
	int radius[CHUNKS];
	uint16_t *masks;                   /* 16-bit masks by popcount */
	size_t masks_within[CHUNK_BITS + 1];   /* masks with popcount <= r */
	struct hbucket *buckets;           /* CHUNKS x CHUNK_VALUES, NULL when scanning */
	uint64_t *hashes;                  /* by entry, for the scan */
	int64_t *ids;
	size_t n, cap;
	void (*search)(const ds_hamming_index *ix, uint64_t hash, struct best *best);
};

static inline uint32_t *bucket_entries(const struct hbucket *b)
{
	return (uint32_t *)(b->data + b->cap);
}

/* The search, written once and compiled twice: plainly, and where the CPU
 * has it with the POPCNT instruction (without it, popcount is a libgcc
 * call and the index runs 2.4 times slower).  DS_NO_POPCNT in the
 * environment picks the plain one, so the tests can compare the two. */
static inline __attribute__((always_inline)) void search_body(const ds_hamming_index *ix, uint64_t hash,
							       struct best *best)
{
	int max = ix->max_distance;

	if (!ix->buckets) {
		for (size_t i = 0; i < ix->n; i++) {
			int d = __builtin_popcountll(ix->hashes[i] ^ hash);

			if (d < best->d) {
				best->d = d;
				best->entry = (uint32_t)i;
			}
		}
		return;
	}
	int best_d = best->d;
	uint32_t best_e = best->entry;

	for (int c = 0; c < CHUNKS; c++) {
		uint32_t v = (uint32_t)(hash >> (CHUNK_BITS * c)) & (CHUNK_VALUES - 1);
		const struct hbucket *table = ix->buckets + (size_t)c * CHUNK_VALUES;
		const uint16_t *masks = ix->masks;
		size_t probes;

		if (ix->radius[c] < 0)
			continue;
		probes = ix->masks_within[ix->radius[c]];
		for (size_t m = 0; m < probes && m < PREFETCH_AHEAD; m++)
			__builtin_prefetch(table[v ^ masks[m]].data);
		for (size_t m = 0; m < probes; m++) {
			const struct hbucket *b = &table[v ^ masks[m]];
			const uint64_t *h = b->data;
			uint32_t len = b->len;

			if (m + PREFETCH_AHEAD < probes)
				__builtin_prefetch(table[v ^ masks[m + PREFETCH_AHEAD]].data);
			for (uint32_t k = 0; k < len; k++) {
				int d = __builtin_popcountll(h[k] ^ hash);
				uint32_t e;

				if (d > max || d > best_d)
					continue;
				e = bucket_entries(b)[k];
				if (d < best_d || e < best_e) {
					best_d = d;
					best_e = e;
				}
			}
		}
	}
	best->d = best_d;
	best->entry = best_e;
}

static void search_portable(const ds_hamming_index *ix, uint64_t hash, struct best *best)
{
	search_body(ix, hash, best);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("popcnt")))
static void search_popcnt(const ds_hamming_index *ix, uint64_t hash, struct best *best)
{
	search_body(ix, hash, best);
}
#endif

ds_hamming_index *ds_hamming_index_new(int max_distance)
{
	ds_hamming_index *ix;
	size_t count[CHUNK_BITS + 2] = { 0 };

	if (max_distance < 0 || max_distance > 64)
		return NULL;
	ix = calloc(1, sizeof *ix);
	if (!ix)
		return NULL;
	ix->max_distance = max_distance;
	ix->search = search_portable;
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("popcnt") && !getenv("DS_NO_POPCNT"))
		ix->search = search_popcnt;
#endif
	if (max_distance > MIH_MAX_DISTANCE)
		return ix;
	for (int c = 0; c < CHUNKS; c++)
		ix->radius[c] = max_distance / CHUNKS - (c > max_distance % CHUNKS);
	ix->masks = malloc(CHUNK_VALUES * sizeof *ix->masks);
	ix->buckets = calloc((size_t)CHUNKS * CHUNK_VALUES, sizeof *ix->buckets);
	if (!ix->masks || !ix->buckets) {
		ds_hamming_index_free(ix);
		return NULL;
	}
	/* A counting sort of all 16-bit values by popcount. */
	for (uint32_t m = 0; m < CHUNK_VALUES; m++)
		count[__builtin_popcount(m) + 1]++;
	for (int k = 1; k <= CHUNK_BITS + 1; k++)
		count[k] += count[k - 1];
	for (int k = 0; k <= CHUNK_BITS; k++)
		ix->masks_within[k] = count[k + 1];
	for (uint32_t m = 0; m < CHUNK_VALUES; m++)
		ix->masks[count[__builtin_popcount(m)]++] = (uint16_t)m;
	return ix;
}

static int bucket_push(struct hbucket *b, uint64_t hash, uint32_t entry)
{
	if (b->len == b->cap) {
		uint32_t cap = b->cap ? b->cap * 2 : 2;
		uint64_t *data = realloc(b->data, cap * (sizeof(uint64_t) + sizeof(uint32_t)));

		if (!data)
			return -1;
		/* The entry numbers move up behind the larger hash array. */
		memmove(data + cap, data + b->cap, b->len * sizeof(uint32_t));
		b->data = data;
		b->cap = cap;
	}
	b->data[b->len] = hash;
	bucket_entries(b)[b->len] = entry;
	b->len++;
	return 0;
}

/* Returns the id of the nearest earlier hash within the distance (the
 * earliest among equals) or -1; -2 when memory ran out, and then the hash
 * is not added. */
int64_t ds_hamming_index_add(ds_hamming_index *ix, uint64_t hash, int64_t id, int *distance)
{
	struct best best = { ix->max_distance + 1, UINT32_MAX };

	if (ix->n >= UINT32_MAX - 1)
		return -2;
	if (ix->n == ix->cap) {
		size_t cap = ix->cap ? ix->cap * 2 : 1024;
		uint64_t *hashes = realloc(ix->hashes, cap * sizeof *hashes);
		int64_t *ids;

		if (!hashes)
			return -2;
		ix->hashes = hashes;
		ids = realloc(ix->ids, cap * sizeof *ids);
		if (!ids)
			return -2;
		ix->ids = ids;
		ix->cap = cap;
	}
	ix->search(ix, hash, &best);
	for (int c = 0; ix->buckets && c < CHUNKS; c++) {
		uint32_t v = (uint32_t)(hash >> (CHUNK_BITS * c)) & (CHUNK_VALUES - 1);

		if (ix->radius[c] < 0)
			continue;
		if (bucket_push(&ix->buckets[(size_t)c * CHUNK_VALUES + v], hash, (uint32_t)ix->n) < 0) {
			/* Undo the chunks already stored so the index stays consistent. */
			while (--c >= 0) {
				if (ix->radius[c] >= 0)
					ix->buckets[(size_t)c * CHUNK_VALUES +
						    ((uint32_t)(hash >> (CHUNK_BITS * c)) & (CHUNK_VALUES - 1))].len--;
			}
			return -2;
		}
	}
	ix->hashes[ix->n] = hash;
	ix->ids[ix->n] = id;
	ix->n++;
	if (best.entry == UINT32_MAX)
		return -1;
	if (distance)
		*distance = best.d;
	return ix->ids[best.entry];
}

void ds_hamming_index_free(ds_hamming_index *ix)
{
	if (!ix)
		return;
	if (ix->buckets) {
		for (size_t i = 0; i < (size_t)CHUNKS * CHUNK_VALUES; i++)
			free(ix->buckets[i].data);
		free(ix->buckets);
	}
	free(ix->masks);
	free(ix->hashes);
	free(ix->ids);
	free(ix);
}
