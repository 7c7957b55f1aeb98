/* tokenizer.c - text to token ids, described by a JSON spec that travels
 * with streams and models so that inference tokenizes as training did. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef enum tok_kind { TOK_BYTES, TOK_NGRAMS } tok_kind;

struct ds_tokenizer {
	tok_kind kind;
	int64_t buckets;
	int word_ngrams;          /* 1: words only, 2: and word bigrams, ... */
	int char_min, char_max;   /* 0, 0: no character n-grams */
	int lowercase;
};

#define DEFAULT_BUCKETS 1048576
#define MAX_WORD_NGRAMS 5
#define MAX_CHAR_NGRAM 16

static int bad(ds_error *err, const char *fmt, const char *what)
{
	return ds_error_set(err, DS_ERR_DATA, "bad_tokenizer", fmt, what);
}

static int get_int(const json_t *v, const char *key, int64_t lo, int64_t hi, int64_t *out, ds_error *err)
{
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return ds_error_set(err, DS_ERR_DATA, "bad_tokenizer",
				    "tokenizer: \"%s\" must be an integer from %lld to %lld",
				    key, (long long)lo, (long long)hi);
	*out = json_integer_value(v);
	return 0;
}

static int parse_ngrams(const json_t *spec, ds_tokenizer *tok, ds_error *err)
{
	const char *key;
	json_t *v;
	int64_t n;

	json_object_foreach((json_t *)spec, key, v) {
		if (strcmp(key, "kind") == 0)
			continue;
		if (strcmp(key, "buckets") == 0) {
			if (get_int(v, key, 1, INT32_MAX, &n, err))
				return DS_ERR_DATA;
			tok->buckets = n;
		} else if (strcmp(key, "word_ngrams") == 0) {
			if (get_int(v, key, 1, MAX_WORD_NGRAMS, &n, err))
				return DS_ERR_DATA;
			tok->word_ngrams = (int)n;
		} else if (strcmp(key, "char_ngrams") == 0) {
			int64_t lo, hi;

			if (!json_is_array(v) || json_array_size(v) != 2 ||
			    get_int(json_array_get(v, 0), "char_ngrams[0]", 0, MAX_CHAR_NGRAM, &lo, err) ||
			    get_int(json_array_get(v, 1), "char_ngrams[1]", 0, MAX_CHAR_NGRAM, &hi, err) ||
			    lo > hi || (lo == 0 && hi != 0))
				return ds_error_set(err, DS_ERR_DATA, "bad_tokenizer",
						    "tokenizer: \"char_ngrams\" must be [min, max] with "
						    "1 <= min <= max <= %d, or [0, 0] for none", MAX_CHAR_NGRAM);
			tok->char_min = (int)lo;
			tok->char_max = (int)hi;
		} else if (strcmp(key, "lowercase") == 0) {
			if (!json_is_boolean(v))
				return bad(err, "tokenizer: \"%s\" must be true or false", key);
			tok->lowercase = json_is_true(v);
		} else {
			return bad(err, "tokenizer: unknown key \"%s\" for kind \"ngrams\"", key);
		}
	}
	return 0;
}

/* NULL means the default, {"kind": "bytes"}. */
int ds_tokenizer_new(const json_t *spec, ds_tokenizer **out, ds_error *err)
{
	ds_tokenizer *tok;
	const char *kind = "bytes";
	int rc = 0;

	*out = NULL;
	if (spec) {
		const json_t *k = json_object_get(spec, "kind");

		if (!json_is_object(spec))
			return bad(err, "tokenizer: %s", "the spec must be a JSON object");
		if (!json_is_string(k))
			return bad(err, "tokenizer: %s", "\"kind\" must be \"bytes\" or \"ngrams\"");
		kind = json_string_value(k);
	}
	tok = ds_calloc(1, sizeof *tok, err);
	if (!tok)
		return DS_ERR_NOMEM;
	if (strcmp(kind, "bytes") == 0) {
		tok->kind = TOK_BYTES;
		if (spec && json_object_size(spec) != 1) {
			const char *key;
			json_t *v;

			json_object_foreach((json_t *)spec, key, v) {
				if (strcmp(key, "kind") != 0) {
					rc = bad(err, "tokenizer: unknown key \"%s\" for kind \"bytes\"", key);
					goto out;
				}
			}
		}
	} else if (strcmp(kind, "ngrams") == 0) {
		tok->kind = TOK_NGRAMS;
		tok->buckets = DEFAULT_BUCKETS;
		tok->word_ngrams = 2;
		tok->char_min = 3;
		tok->char_max = 5;
		tok->lowercase = 1;
		rc = parse_ngrams(spec, tok, err);
	} else {
		rc = bad(err, "tokenizer: unknown kind \"%s\" (bytes, ngrams)", kind);
	}
out:
	if (rc) {
		free(tok);
		return rc;
	}
	*out = tok;
	return 0;
}

json_t *ds_tokenizer_spec(const ds_tokenizer *tok)
{
	if (tok->kind == TOK_BYTES)
		return json_pack("{s:s}", "kind", "bytes");
	return json_pack("{s:s, s:I, s:i, s:[i,i], s:b}", "kind", "ngrams", "buckets", (json_int_t)tok->buckets,
			 "word_ngrams", tok->word_ngrams, "char_ngrams", tok->char_min, tok->char_max,
			 "lowercase", tok->lowercase);
}

int64_t ds_tokenizer_vocab(const ds_tokenizer *tok)
{
	return tok->kind == TOK_BYTES ? 256 : tok->buckets;
}

void ds_tokenizer_free(ds_tokenizer *tok)
{
	free(tok);
}

/* ----------------------------------------------------------------- ngrams */

/* Simple one-to-one case mappings: ASCII, Latin-1, Latin Extended-A (the
 * letters of Polish, Czech, Esperanto...), Greek and basic Cyrillic.  No
 * locale: Turkish dotted I and German sharp s map as elsewhere. */
static uint32_t to_lower(uint32_t c)
{
	if (c < 0x80)
		return c >= 'A' && c <= 'Z' ? c + 32 : c;
	if (c >= 0xc0 && c <= 0xde && c != 0xd7)
		return c + 32;
	if ((c >= 0x100 && c <= 0x137) || (c >= 0x14a && c <= 0x177))
		return c | 1;
	if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e))
		return c & 1 ? c + 1 : c;
	if (c == 0x178)
		return 0xff;
	if (c >= 0x391 && c <= 0x3ab && c != 0x3a2)
		return c + 32;
	if (c >= 0x410 && c <= 0x42f)
		return c + 32;
	if (c >= 0x400 && c <= 0x40f)
		return c + 80;
	return c;
}

/* Words end at white space, controls and ASCII punctuation; other scripts'
 * punctuation stays inside words. */
static int is_separator(uint32_t c)
{
	if (c < 0x80)
		return c <= ' ' || c == 0x7f || (c >= '!' && c <= '/') || (c >= ':' && c <= '@') ||
		       (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
	switch (c) {
	case 0x00a0: case 0x1680: case 0x2028: case 0x2029: case 0x202f: case 0x205f: case 0x3000: case 0xfeff:
		return 1;
	default:
		return (c >= 0x80 && c <= 0x9f) || (c >= 0x2000 && c <= 0x200b);
	}
}

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static uint64_t fnv_byte(uint64_t h, unsigned char b)
{
	return (h ^ b) * FNV_PRIME;
}

/* FNV-1a over the UTF-8 form of a code point. */
static uint64_t fnv_cp(uint64_t h, uint32_t c)
{
	if (c < 0x80)
		return fnv_byte(h, (unsigned char)c);
	if (c < 0x800) {
		h = fnv_byte(h, (unsigned char)(0xc0 | (c >> 6)));
	} else if (c < 0x10000) {
		h = fnv_byte(h, (unsigned char)(0xe0 | (c >> 12)));
		h = fnv_byte(h, (unsigned char)(0x80 | ((c >> 6) & 0x3f)));
	} else {
		h = fnv_byte(h, (unsigned char)(0xf0 | (c >> 18)));
		h = fnv_byte(h, (unsigned char)(0x80 | ((c >> 12) & 0x3f)));
		h = fnv_byte(h, (unsigned char)(0x80 | ((c >> 6) & 0x3f)));
	}
	return fnv_byte(h, (unsigned char)(0x80 | (c & 0x3f)));
}

static uint64_t fnv_cps(uint64_t h, const uint32_t *cps, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = fnv_cp(h, cps[i]);
	return h;
}

struct word {
	size_t start, end;    /* code points [start, end) */
};

/* For each word in order: the word, the word n-grams that end with it
 * (2..word_ngrams, words joined by a space), then the character n-grams of
 * "<word>" from the shortest.  A type byte in front ('w', 'n', 'c') keeps
 * the word "ab" apart from the character n-gram "ab".  As in fastText, the
 * single characters '<' and '>' are not n-grams. */
static size_t encode_ngrams(const ds_tokenizer *tok, const uint32_t *cps, const struct word *words,
			    size_t nwords, int32_t *ids, size_t max_ids)
{
	size_t count = 0;
	uint64_t buckets = (uint64_t)tok->buckets;

#define EMIT(h) do { \
		if (count == max_ids) \
			return count; \
		ids[count++] = (int32_t)((h) % buckets); \
	} while (0)

	for (size_t w = 0; w < nwords; w++) {
		const uint32_t *word = cps + words[w].start;
		size_t len = words[w].end - words[w].start;

		EMIT(fnv_cps(fnv_byte(FNV_OFFSET, 'w'), word, len));
		for (int n = 2; n <= tok->word_ngrams && (size_t)n <= w + 1; n++) {
			uint64_t h = fnv_byte(FNV_OFFSET, 'n');

			for (size_t k = w + 1 - (size_t)n; k <= w; k++) {
				if (k > w + 1 - (size_t)n)
					h = fnv_byte(h, ' ');
				h = fnv_cps(h, cps + words[k].start, words[k].end - words[k].start);
			}
			EMIT(h);
		}
		for (int n = tok->char_min; n >= 1 && n <= tok->char_max; n++) {
			/* Positions -1 and len are the '<' and '>' padding. */
			for (long s = -1; s + n <= (long)len + 1; s++) {
				uint64_t h = fnv_byte(FNV_OFFSET, 'c');

				if (n == 1 && (s == -1 || s == (long)len))
					continue;
				for (long p = s; p < s + n; p++)
					h = p < 0 ? fnv_byte(h, '<') : p == (long)len ? fnv_byte(h, '>') : fnv_cp(h, word[p]);
				EMIT(h);
			}
		}
	}
#undef EMIT
	return count;
}

/* Code points and word spans go to scratch memory: on the stack for texts
 * up to 1 KiB, else the heap (if that fails, no ids: the function has no
 * way to report it, and callers see an empty encoding). */
size_t ds_tokenizer_encode(const ds_tokenizer *tok, const char *text, size_t len, int32_t *ids, size_t max_ids)
{
	uint32_t stack_cps[1024];
	struct word stack_words[512], *words = stack_words;
	uint32_t *cps = stack_cps;
	size_t ncps = 0, nwords = 0, count = 0;
	int in_word = 0;

	if (tok->kind == TOK_BYTES) {
		size_t n = len < max_ids ? len : max_ids;

		for (size_t i = 0; i < n; i++)
			ids[i] = (unsigned char)text[i];
		return n;
	}
	if (len > DS_ARRAY_LEN(stack_cps)) {
		if (len > SIZE_MAX / sizeof(struct word))
			return 0;
		cps = malloc(len * sizeof *cps);
		words = malloc((len / 2 + 1) * sizeof *words);
		if (!cps || !words)
			goto out;
	}
	for (size_t i = 0; i < len;) {
		uint32_t c;
		int n = ds_utf8_decode(text + i, len - i, &c);

		i += (size_t)(n < 0 ? -n : n);
		if (is_separator(c)) {
			if (in_word)
				words[nwords++].end = ncps;
			in_word = 0;
			continue;
		}
		if (!in_word) {
			words[nwords].start = ncps;
			in_word = 1;
		}
		cps[ncps++] = tok->lowercase ? to_lower(c) : c;
	}
	if (in_word)
		words[nwords++].end = ncps;
	count = encode_ngrams(tok, cps, words, nwords, ids, max_ids);
out:
	if (cps != stack_cps) {
		free(cps);
		free(words);
	}
	return count;
}
