/* test_hash.c - content hashes, perceptual hashes, the Hamming index
 * against brute force and at a million entries, MinHash and its LSH
 * index at a hundred thousand texts. */
#include "config.h"
#include "ds.h"
#include "tap.h"

#include <stdint.h>
#include <time.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t rng_state = 0x2545f4914f6cdd1dULL;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int hash_eq(ds_hash128 a, ds_hash128 b)
{
	return a.lo == b.lo && a.hi == b.hi;
}

static int cmp_hash(const void *pa, const void *pb)
{
	const ds_hash128 *a = pa, *b = pb;

	if (a->hi != b->hi)
		return a->hi < b->hi ? -1 : 1;
	return (a->lo > b->lo) - (a->lo < b->lo);
}

/* A flipped input bit should flip about half of the 128 output bits, and
 * each output bit should flip about half of the time. */
static void check_avalanche(size_t len)
{
	unsigned char buf[256];
	long total = 0, min_changed = 128, flips[128] = { 0 };
	int trials = 0, biased = 0;

	for (int rep = 0; rep < 8; rep++) {
		ds_hash128 base;

		for (size_t i = 0; i < len; i++)
			buf[i] = (unsigned char)rnd();
		base = ds_hash_bytes(buf, len);
		for (size_t bit = 0; bit < len * 8; bit++) {
			ds_hash128 h;
			long changed;

			buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
			h = ds_hash_bytes(buf, len);
			buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
			changed = ds_hamming(h.lo, base.lo) + ds_hamming(h.hi, base.hi);
			total += changed;
			if (changed < min_changed)
				min_changed = changed;
			for (int k = 0; k < 64; k++) {
				flips[k] += (h.lo ^ base.lo) >> k & 1;
				flips[64 + k] += (h.hi ^ base.hi) >> k & 1;
			}
			trials++;
		}
	}
	for (int k = 0; k < 128; k++) {
		double p = (double)flips[k] / trials;

		if (p < 0.4 || p > 0.6)
			biased++;
	}
	is_near((double)total / trials, 64, 2.0, "avalanche, %zu bytes: a flipped bit changes half the output", len);
	ok(min_changed >= 36, "avalanche, %zu bytes: every flip changes at least 36 bits (fewest %ld)", len,
	   min_changed);
	is_int(biased, 0, "avalanche, %zu bytes: no output bit flips far from half the time", len);
}

static void test_hash_bytes(void)
{
	static const unsigned char zeros[300];
	ds_hash128 all[301];
	char hex[33];
	int distinct = 1;
	unsigned char big[1000];

	ok(hash_eq(ds_hash_bytes("hello", 5), ds_hash_bytes("hello", 5)), "hash is deterministic");
	ok(!hash_eq(ds_hash_bytes("hello", 5), ds_hash_bytes("hellp", 5)), "one byte changes the hash");
	ok(!hash_eq(ds_hash_bytes("", 0), ds_hash_bytes("\0", 1)), "empty and one zero byte differ");
	/* The same value on every machine and in every run: streams and
	 * reports carry these hashes. */
	is_str(ds_hash128_hex(ds_hash_bytes("hello", 5), hex), "63e0166745117a0f4c2b3b0c26bee14a", "hash of \"hello\" is pinned");
	is_int(strlen(ds_hash128_hex(ds_hash_bytes(NULL, 0), hex)), 32, "hex is 32 digits");
	ok(strspn(hex, "0123456789abcdef") == 32, "hex is lowercase");
	{
		ds_hash128 h = { 0x0123456789abcdefULL, 0xfedcba9876543210ULL };

		is_str(ds_hash128_hex(h, hex), "fedcba98765432100123456789abcdef", "hex prints hi then lo");
	}
	for (size_t n = 0; n <= 300; n++)
		all[n] = ds_hash_bytes(zeros, n);
	qsort(all, 301, sizeof *all, cmp_hash);
	for (int i = 1; i < 301; i++)
		if (hash_eq(all[i], all[i - 1]))
			distinct = 0;
	ok(distinct, "runs of 0..300 zero bytes all hash differently");
	/* An unaligned start reads the same bytes the same way. */
	for (size_t i = 0; i < sizeof big; i++)
		big[i] = (unsigned char)rnd();
	{
		unsigned char copy[1001];

		memcpy(copy + 1, big + 100, 500);
		ok(hash_eq(ds_hash_bytes(big + 100, 500), ds_hash_bytes(copy + 1, 500)), "alignment does not matter");
	}
	check_avalanche(3);
	check_avalanche(16);
	check_avalanche(64);
	check_avalanche(77);
	is_int(ds_hamming(0, UINT64_MAX), 64, "hamming of complements");
	is_int(ds_hamming(0x5, 0x6), 2, "hamming counts differing bits");
}

/* ---------------------------------------------------------------- phash */

/* Pixels only: the image module's ds_image_free is not needed here. */
static void release(ds_image *img)
{
	free(img->pixels);
	img->pixels = NULL;
}

/* A random pattern of 8x8 blocks, w x h, gray or RGB, values below 250. */
static ds_image blocky(int w, int h, int channels, uint64_t seed)
{
	ds_image img = { w, h, channels, malloc((size_t)w * h * channels) };
	uint64_t saved = rng_state;
	uint8_t cells[8][8][3];

	rng_state = seed;
	for (int i = 0; i < 8; i++)
		for (int j = 0; j < 8; j++)
			for (int c = 0; c < 3; c++)
				cells[i][j][c] = (uint8_t)(rnd() % 250);
	rng_state = saved;
	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++)
			for (int c = 0; c < channels; c++)
				img.pixels[((size_t)y * w + x) * channels + c] = cells[y * 8 / h][x * 8 / w][c];
	return img;
}

static void test_phash(void)
{
	ds_image a = blocky(64, 64, 3, 1), b = blocky(64, 64, 3, 1), big = blocky(256, 192, 3, 1);
	ds_image bright = blocky(64, 64, 3, 1), gray = blocky(100, 80, 1, 7);
	ds_image rgb = { 100, 80, 3, malloc(100 * 80 * 3) };
	ds_image flat = { 40, 30, 1, malloc(40 * 30) }, flat2 = { 17, 5, 3, malloc(17 * 5 * 3) };
	ds_image tiny = blocky(5, 3, 1, 3);
	int far = 0, total = 0, min_far = 64;

	ok(ds_image_phash(&a) == ds_image_phash(&b), "identical pixels, identical hash");
	for (size_t i = 0; i < 64 * 64 * 3; i++)
		bright.pixels[i] += 3;
	ok(ds_hamming(ds_image_phash(&a), ds_image_phash(&bright)) <= 2, "brightness +3 moves at most 2 bits (%d)",
	   ds_hamming(ds_image_phash(&a), ds_image_phash(&bright)));
	ok(ds_hamming(ds_image_phash(&a), ds_image_phash(&big)) <= 4, "a resized copy moves at most 4 bits (%d)",
	   ds_hamming(ds_image_phash(&a), ds_image_phash(&big)));
	for (int s = 0; s < 40; s++) {
		ds_image other = blocky(64, 64, 3, 100 + s);
		int d = ds_hamming(ds_image_phash(&a), ds_image_phash(&other));

		total += d;
		far += d > 20;
		if (d < min_far)
			min_far = d;
		release(&other);
	}
	ok(far >= 36, "different patterns are more than 20 bits apart (%d of 40, mean %.1f, least %d)", far,
	   total / 40.0, min_far);
	for (size_t i = 0; i < 100 * 80; i++)
		memset(rgb.pixels + i * 3, gray.pixels[i], 3);
	ok(ds_image_phash(&gray) == ds_image_phash(&rgb), "gray and RGB with equal channels hash the same");
	memset(flat.pixels, 128, 40 * 30);
	memset(flat2.pixels, 37, 17 * 5 * 3);
	is_int(ds_image_phash(&flat), 1, "a uniform image hashes to 1 (only DC)");
	is_int(ds_image_phash(&flat2), 1, "any uniform image, any size, hashes to 1");
	ok(ds_image_phash(&tiny) == ds_image_phash(&tiny), "an image under 32x32 hashes");
	release(&a);
	release(&b);
	release(&big);
	release(&bright);
	release(&gray);
	release(&rgb);
	release(&flat);
	release(&flat2);
	release(&tiny);
}

/* --------------------------------------------------------- hamming index */

/* h with exactly k distinct bits flipped. */
static uint64_t flip_bits(uint64_t h, int k)
{
	uint64_t mask = 0;

	while (ds_hamming(mask, 0) < k)
		mask |= 1ULL << (rnd() % 64);
	return h ^ mask;
}

/* Clustered hashes (random centres, copies a few bits away) so that every
 * distance up to the limit occurs; the index must agree with a scan on
 * every single add, ties included. */
static void check_exact(int max_distance, size_t n)
{
	uint64_t *h = malloc(n * sizeof *h);
	ds_hamming_index *ix = ds_hamming_index_new(max_distance);
	size_t wrong = 0, found = 0;

	for (size_t i = 0; i < n; i++) {
		if (i < 16 || rnd() % 3 == 0)
			h[i] = rnd();
		else
			h[i] = flip_bits(h[rnd() % i], (int)(rnd() % 24));
	}
	for (size_t i = 0; i < n; i++) {
		int64_t want = -1, got;
		int want_d = max_distance + 1, got_d = -1;

		for (size_t j = 0; j < i; j++) {
			int d = ds_hamming(h[i], h[j]);

			if (d < want_d) {
				want_d = d;
				want = (int64_t)j;
			}
		}
		got = ds_hamming_index_add(ix, h[i], (int64_t)i, &got_d);
		if (got != want || (want >= 0 && got_d != want_d))
			wrong++;
		found += want >= 0;
	}
	is_int(wrong, 0, "max distance %d: the index agrees with brute force on %zu adds (%zu matches)",
	       max_distance, n, found);
	ds_hamming_index_free(ix);
	free(h);
}

static void test_hamming_index(void)
{
	ds_hamming_index *ix;
	int d = -1;
	size_t n = 1000000, planted = 0, planted_ok = 0, stray = 0;
	uint64_t *h;
	double t0;

	ok(ds_hamming_index_new(-1) == NULL, "negative distance refused");
	ok(ds_hamming_index_new(65) == NULL, "distance over 64 refused");
	ix = ds_hamming_index_new(3);
	is_int(ds_hamming_index_add(ix, 0xff, 10, &d), -1, "first hash: no match");
	is_int(ds_hamming_index_add(ix, 0xfe, 11, &d), 10, "one bit away: found");
	is_int(d, 1, "its distance");
	is_int(ds_hamming_index_add(ix, 0xff00ff, 12, &d), -1, "far away: no match");
	is_int(ds_hamming_index_add(ix, 0xfc, 13, &d), 11, "nearest wins over an earlier farther one");
	is_int(ds_hamming_index_add(ix, 0xfd, 14, &d), 10, "ties go to the earliest");
	ds_hamming_index_free(ix);

	check_exact(0, 20000);
	check_exact(3, 20000);
	check_exact(6, 20000);
	check_exact(10, 5000);
	check_exact(15, 5000);
	check_exact(16, 3000);
	check_exact(40, 3000);
	/* The same search without the POPCNT instruction. */
	setenv("DS_NO_POPCNT", "1", 1);
	check_exact(6, 5000);
	check_exact(16, 2000);
	unsetenv("DS_NO_POPCNT");

	/* A million random hashes with a near copy of an earlier one after
	 * every 1000th: each copy must find its original (or something at
	 * least as near), and random hashes almost never meet. */
	h = malloc(n * sizeof *h);
	ix = ds_hamming_index_new(6);
	t0 = now();
	for (size_t i = 0; i < n; i++) {
		int64_t got;

		if (i % 1000 == 999) {
			size_t src = rnd() % (i - 1);
			int k = (int)(rnd() % 7);

			h[i] = flip_bits(h[src], k);
			got = ds_hamming_index_add(ix, h[i], (int64_t)i, &d);
			planted++;
			if (got >= 0 && d <= k)
				planted_ok++;
		} else {
			h[i] = rnd();
			got = ds_hamming_index_add(ix, h[i], (int64_t)i, &d);
			stray += got >= 0;
		}
	}
	diag("1,000,000 adds at max distance 6: %.2f s", now() - t0);
	is_int(planted_ok, planted, "every planted near copy found (%zu)", planted);
	ok(stray < 20, "random hashes rarely meet (%zu)", stray);
	ds_hamming_index_free(ix);
	free(h);
}

/* --------------------------------------------------------------- minhash */

static const char *const vocab[] = {
	"apple", "river", "stone", "cloud", "green", "quick", "lamp", "north", "silver", "table",
	"window", "garden", "music", "paper", "ocean", "forest", "candle", "bridge", "winter", "yellow",
	"mirror", "pencil", "rocket", "violin", "desert", "island", "harbor", "meadow", "castle", "thunder",
	"кошка", "дом", "река", "猫", "火山", "ciudad", "perro", "Straße", "über", "naïve",
};

static size_t random_text(char *buf, size_t cap, int words)
{
	size_t n = 0;

	for (int w = 0; w < words; w++) {
		const char *v = vocab[rnd() % ARRAY_LEN(vocab)];
		size_t l = strlen(v);

		if (n + l + 2 >= cap)
			break;
		if (w)
			buf[n++] = ' ';
		memcpy(buf + n, v, l);
		n += l;
	}
	buf[n] = 0;
	return n;
}

/* The true Jaccard similarity of the byte 5-shingle sets of two ASCII
 * texts, by brute force. */
static double jaccard5(const char *a, const char *b)
{
	size_t la = strlen(a) - 4, lb = strlen(b) - 4, inter = 0, ua = 0, ub = 0;

	for (size_t i = 0; i < la; i++) {
		int dup = 0, in_b = 0;

		for (size_t j = 0; j < i && !dup; j++)
			dup = memcmp(a + i, a + j, 5) == 0;
		if (dup)
			continue;
		ua++;
		for (size_t j = 0; j < lb && !in_b; j++)
			in_b = memcmp(a + i, b + j, 5) == 0;
		inter += in_b;
	}
	for (size_t i = 0; i < lb; i++) {
		int dup = 0;

		for (size_t j = 0; j < i && !dup; j++)
			dup = memcmp(b + i, b + j, 5) == 0;
		ub += !dup;
	}
	return (double)inter / (double)(ua + ub - inter);
}

static void test_minhash(void)
{
	uint32_t s1[DS_MINHASH_SIZE], s2[DS_MINHASH_SIZE], s3[DS_MINHASH_SIZE];
	const char *t1 = "The quick brown fox jumps over the lazy dog near the river bank today";
	const char *t2 = "The quick brown fox jumped over the lazy dog near the river bank today";
	const char *t3 = "Completely unrelated words about thunder, castles and violins in winter";
	int all_ff = 1;

	ds_minhash(t1, strlen(t1), 5, s1);
	ds_minhash(t1, strlen(t1), 5, s2);
	ok(memcmp(s1, s2, sizeof s1) == 0, "minhash is deterministic");
	is_near(ds_minhash_similarity(s1, s2), 1.0, 0, "identical texts: similarity 1");
	ds_minhash(t2, strlen(t2), 5, s2);
	ds_minhash(t3, strlen(t3), 5, s3);
	is_near(ds_minhash_similarity(s1, s2), jaccard5(t1, t2), 0.12, "estimate near the true Jaccard (%.3f)",
		jaccard5(t1, t2));
	ok(ds_minhash_similarity(s1, s3) < 0.1, "unrelated texts: low similarity");
	ds_minhash("", 0, 5, s1);
	for (int i = 0; i < DS_MINHASH_SIZE; i++)
		all_ff &= s1[i] == UINT32_MAX;
	ok(all_ff, "empty text: every slot 0xffffffff");
	ds_minhash("abc", 3, 5, s1);
	ds_minhash("abc", 3, 5, s2);
	ds_minhash("abd", 3, 5, s3);
	ok(s1[0] != UINT32_MAX && ds_minhash_similarity(s1, s2) == 1.0, "text shorter than a shingle is one shingle");
	ok(ds_minhash_similarity(s1, s3) < 0.1, "short texts that differ do not match");
	/* Shingles count code points: 5 Cyrillic letters are one shingle. */
	ds_minhash("кошка", strlen("кошка"), 5, s1);
	ds_minhash("кошка", strlen("кошка"), 2, s2);
	ok(ds_minhash_similarity(s1, s2) < 0.2, "shingles are code points, not bytes");
	ds_minhash("a\xff" "bcdef", 7, 3, s1);
	ok(s1[0] != UINT32_MAX, "invalid UTF-8 still hashes");
}

static void test_lsh(void)
{
	ds_lsh_index *ix;
	uint32_t sig[DS_MINHASH_SIZE], other[DS_MINHASH_SIZE];
	double sim = 0;
	size_t n = 100000, planted = 0, planted_ok = 0, stray = 0;
	char (*texts)[160];
	double t0;

	ok(ds_lsh_index_new(0) == NULL, "threshold 0 refused");
	ok(ds_lsh_index_new(1.5) == NULL, "threshold over 1 refused");
	ix = ds_lsh_index_new(0.8);
	ds_minhash("the same text again", 19, 5, sig);
	is_int(ds_lsh_index_add(ix, sig, 7, &sim), -1, "first text: no match");
	is_int(ds_lsh_index_add(ix, sig, 8, &sim), 7, "same text: found");
	is_near(sim, 1.0, 0, "with similarity 1");
	is_int(ds_lsh_index_add(ix, sig, 9, &sim), 7, "ties go to the earliest");
	memcpy(other, sig, sizeof other);
	for (int i = 0; i < 40; i++)
		other[i * 3] ^= 1;
	is_int(ds_lsh_index_add(ix, other, 10, &sim), -1, "similarity under the threshold: no match");
	ds_lsh_index_free(ix);

	ix = ds_lsh_index_new(1.0);
	is_int(ds_lsh_index_add(ix, sig, 1, &sim), -1, "threshold 1: first");
	is_int(ds_lsh_index_add(ix, sig, 2, &sim), 1, "threshold 1: exact signature found");
	ds_lsh_index_free(ix);

	/* 100,000 random texts of 12 words; after every 100th, a copy of an
	 * earlier one with one word replaced (Jaccard about 0.85). */
	texts = malloc(n * sizeof *texts);
	ix = ds_lsh_index_new(0.8);
	t0 = now();
	for (size_t i = 0; i < n; i++) {
		int64_t got;

		if (i % 100 == 99) {
			size_t src = rnd() % (i - 1);
			char *sp;

			memcpy(texts[i], texts[src], sizeof texts[i]);
			sp = strrchr(texts[i], ' ');
			/* Replace the last word with one of another length. */
			snprintf(sp, sizeof texts[i] - (size_t)(sp - texts[i]), " zz");
			ds_minhash(texts[i], strlen(texts[i]), 5, sig);
			got = ds_lsh_index_add(ix, sig, (int64_t)i, &sim);
			planted++;
			planted_ok += got == (int64_t)src || (got >= 0 && sim >= 0.8);
		} else {
			random_text(texts[i], sizeof texts[i], 12);
			ds_minhash(texts[i], strlen(texts[i]), 5, sig);
			got = ds_lsh_index_add(ix, sig, (int64_t)i, &sim);
			stray += got >= 0;
		}
	}
	diag("100,000 texts through minhash and LSH: %.2f s", now() - t0);
	ok(planted_ok >= planted * 98 / 100, "planted near duplicates found (%zu of %zu)", planted_ok, planted);
	ok(stray < 10, "random texts rarely match (%zu)", stray);
	ds_lsh_index_free(ix);
	free(texts);
}

int main(void)
{
	test_hash_bytes();
	test_phash();
	test_hamming_index();
	test_minhash();
	test_lsh();
	return done_testing();
}
