/* test_text.c - UTF-8 validation against the Unicode corpus's edge cases,
 * normalisation of real-looking text in several scripts, and both
 * tokenizers. */
#include "config.h"
#include "ds.h"
#include "tap.h"

#include <pthread.h>

struct utf8_case {
	const char *name, *bytes;
	size_t len, invalid, first_bad, length;
};

static void test_utf8(void)
{
	static const struct utf8_case cases[] = {
		{ "ASCII", "hello", 5, 0, 5, 5 },
		{ "empty", "", 0, 0, 0, 0 },
		{ "2-byte e acute", "caf\xc3\xa9", 5, 0, 5, 4 },
		{ "3-byte euro", "\xe2\x82\xac", 3, 0, 3, 1 },
		{ "valid 4-byte U+1F600", "\xf0\x9f\x98\x80", 4, 0, 4, 1 },
		{ "U+10FFFF, the last code point", "\xf4\x8f\xbf\xbf", 4, 0, 4, 1 },
		{ "U+FFFF noncharacter is valid UTF-8", "\xef\xbf\xbf", 3, 0, 3, 1 },
		{ "overlong 2-byte NUL C0 80", "a\xc0\x80" "b", 4, 2, 1, 4 },
		{ "overlong 3-byte E0 80 AF", "\xe0\x80\xaf", 3, 3, 0, 3 },
		{ "overlong 4-byte F0 80 80 AF", "\xf0\x80\x80\xaf", 4, 4, 0, 4 },
		{ "surrogate ED A0 80", "x\xed\xa0\x80", 4, 3, 1, 4 },
		{ "surrogate pair in CESU form", "\xed\xa0\xbd\xed\xb8\x80", 6, 6, 0, 6 },
		{ "above U+10FFFF: F4 90 80 80", "\xf4\x90\x80\x80", 4, 4, 0, 4 },
		{ "F5 lead byte", "\xf5\x80\x80\x80", 4, 4, 0, 4 },
		{ "lone continuation byte", "ab\x80" "cd", 5, 1, 2, 5 },
		{ "FE and FF", "\xfe\xff", 2, 2, 0, 2 },
		{ "3-byte truncated at end", "ok\xe2\x82", 4, 2, 2, 3 },
		{ "4-byte truncated at end", "\xf0\x9f\x98", 3, 3, 0, 1 },
		{ "truncated then ASCII is one subpart", "\xe1\x80" "A", 3, 2, 0, 2 },
		{ "valid after invalid", "\xff\xc3\xa9", 3, 1, 0, 2 },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct utf8_case *c = &cases[i];
		size_t first = 999;

		is_int(ds_utf8_invalid(c->bytes, c->len, &first), c->invalid, "%s: invalid bytes", c->name);
		is_int(first, c->first_bad, "%s: first bad offset", c->name);
		is_int(ds_utf8_length(c->bytes, c->len), c->length, "%s: length", c->name);
	}
	{
		uint32_t cp = 0;

		is_int(ds_utf8_decode("\xf0\x9f\x98\x80", 4, &cp), 4, "decode a 4-byte sequence");
		is_int(cp, 0x1f600, "to U+1F600");
		is_int(ds_utf8_decode("\xe0\x80", 2, &cp), -1, "E0 80: E0 alone is the maximal subpart");
		is_int(cp, 0xfffd, "invalid decodes to U+FFFD");
		is_int(ds_utf8_decode("\xe1\x80\x41", 3, &cp), -2, "E1 80 41: a 2-byte subpart");
		is_int(ds_utf8_decode("\xf4\x8f\xbf", 3, &cp), -3, "truncated F4 8F BF: a 3-byte subpart");
		ok(ds_utf8_invalid("abc", 3, NULL) == 0, "first_bad may be NULL");
	}
}

static void check_norm(const char *name, const char *in, size_t len, const char *want, ds_text_fixes want_fixes)
{
	ds_text_fixes f;
	size_t out_len = 0;
	char *out = ds_text_normalize(in, len, &out_len, &f);

	is_str(out, want, "%s: text", name);
	is_int(out_len, strlen(want), "%s: length", name);
	ok(f.bom == want_fixes.bom && f.invalid == want_fixes.invalid && f.control == want_fixes.control &&
	   f.whitespace == want_fixes.whitespace, "%s: fixes bom %d invalid %zu control %zu whitespace %d", name,
	   f.bom, f.invalid, f.control, f.whitespace);
	free(out);
}

#define NORM(name, in, want, bom, inv, ctl, ws) \
	check_norm(name, in, sizeof(in) - 1, want, (ds_text_fixes){ bom, inv, ctl, ws })

static void test_normalize(void)
{
	NORM("plain text unchanged", "Hello, world.", "Hello, world.", 0, 0, 0, 0);
	NORM("empty", "", "", 0, 0, 0, 0);
	NORM("only white space", " \t\r\n ", "", 0, 0, 0, 1);
	NORM("leading BOM", "\xef\xbb\xbfHi there", "Hi there", 1, 0, 0, 0);
	NORM("BOM inside stays", "a\xef\xbb\xbf" "b", "a\xef\xbb\xbf" "b", 0, 0, 0, 0);
	NORM("invalid byte replaced", "a\xff" "b", "a\xef\xbf\xbd" "b", 0, 1, 0, 0);
	NORM("overlong C0 80: two subparts", "a\xc0\x80" "b", "a\xef\xbf\xbd\xef\xbf\xbd" "b", 0, 2, 0, 0);
	NORM("surrogate: three subparts", "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 0, 3, 0, 0);
	NORM("truncated sequence: one U+FFFD", "x\xe2\x82", "x\xef\xbf\xbd", 0, 2, 0, 0);
	NORM("C0 controls removed", "a\x01" "b\x1b[0mc", "ab[0mc", 0, 0, 2, 0);
	NORM("NUL removed", "a\0b", "ab", 0, 0, 1, 0);
	NORM("DEL and C1 removed", "a\x7f" "b\xc2\x85" "c\xc2\x9f", "abc", 0, 0, 3, 0);
	NORM("a removed control leaves one run", "a \x01 b", "a b", 0, 0, 1, 1);
	NORM("tabs and newlines become spaces", "one\ttwo\nthree\r\nfour", "one two three four", 0, 0, 0, 1);
	NORM("vertical tab and form feed are space", "a\vb\fc", "a b c", 0, 0, 0, 1);
	NORM("trim both ends", "  padded  ", "padded", 0, 0, 0, 1);
	NORM("Cyrillic with no-break space", "  Привет,\xc2\xa0мир!\n", "Привет, мир!", 0, 0, 0, 1);
	NORM("CJK with ideographic space", "你好\xe3\x80\x80世界", "你好 世界", 0, 0, 0, 1);
	NORM("Unicode spaces U+2003 U+202F U+2028", "a\xe2\x80\x83\xe2\x80\xaf" "b\xe2\x80\xa8" "c", "a b c", 0, 0, 0, 1);
	NORM("zero-width space is not white space", "a\xe2\x80\x8b" "b", "a\xe2\x80\x8b" "b", 0, 0, 0, 0);
	NORM("fortune with tabs and newlines",
	     "\tA day for firm decisions!!!!!  Or is it?\n\n\t\t-- Anonymous\n",
	     "A day for firm decisions!!!!! Or is it? -- Anonymous", 0, 0, 0, 1);
	NORM("everything at once", "\xef\xbb\xbf\t\x01" "caf\xc3\xa9\xff  \xc2\x80ok\n",
	     "caf\xc3\xa9\xef\xbf\xbd ok", 1, 1, 2, 1);
	{
		size_t n = 7;
		char *out = ds_text_normalize("  x  ", 5, NULL, NULL);

		is_str(out, "x", "fixes and length may be NULL");
		free(out);
		out = ds_text_normalize("", 0, &n, NULL);
		ok(out && out[0] == 0 && n == 0, "empty input gives an empty string");
		free(out);
	}
}

/* ------------------------------------------------------------ tokenizer */

static ds_tokenizer *tokenizer(const char *json, ds_error *err)
{
	json_t *spec = json ? json_loads(json, 0, NULL) : NULL;
	ds_tokenizer *tok = NULL;

	ds_error_clear(err);
	ds_tokenizer_new(spec, &tok, err);
	json_decref(spec);
	return tok;
}

static int spec_is(const ds_tokenizer *tok, const char *want)
{
	json_t *got = ds_tokenizer_spec(tok), *w = json_loads(want, 0, NULL);
	int same = json_equal(got, w);

	json_decref(got);
	json_decref(w);
	return same;
}

static size_t encode(const ds_tokenizer *tok, const char *text, int32_t *ids, size_t max)
{
	return ds_tokenizer_encode(tok, text, strlen(text), ids, max);
}

static int same_ids(const ds_tokenizer *tok, const char *a, const char *b)
{
	int32_t x[256], y[256];
	size_t n = encode(tok, a, x, 256), m = encode(tok, b, y, 256);

	return n == m && memcmp(x, y, n * sizeof *x) == 0;
}

struct thread_job {
	const ds_tokenizer *tok;
	const char *text;
	int32_t ids[4096];
	size_t n;
};

static void *encode_thread(void *arg)
{
	struct thread_job *job = arg;

	for (int i = 0; i < 200; i++)
		job->n = encode(job->tok, job->text, job->ids, 4096);
	return NULL;
}

static void test_tokenizer(void)
{
	ds_error err;
	ds_tokenizer *tok;
	int32_t ids[512];
	size_t n;
	int in_range = 1;
	static const char *const bad_specs[] = {
		"{\"kind\": \"words\"}",
		"{\"kind\": \"bytes\", \"buckets\": 10}",
		"{\"kind\": \"ngrams\", \"bucket\": 10}",
		"{\"kind\": \"ngrams\", \"buckets\": 0}",
		"{\"kind\": \"ngrams\", \"buckets\": 4294967296}",
		"{\"kind\": \"ngrams\", \"word_ngrams\": 0}",
		"{\"kind\": \"ngrams\", \"char_ngrams\": [5, 3]}",
		"{\"kind\": \"ngrams\", \"char_ngrams\": [3]}",
		"{\"kind\": \"ngrams\", \"char_ngrams\": [0, 3]}",
		"{\"kind\": \"ngrams\", \"lowercase\": 1}",
		"{}",
		"[\"bytes\"]",
	};

	tok = tokenizer(NULL, &err);
	ok(tok && spec_is(tok, "{\"kind\": \"bytes\"}"), "no spec: bytes");
	ds_tokenizer_free(tok);
	tok = tokenizer("{\"kind\": \"bytes\"}", &err);
	is_int(ds_tokenizer_vocab(tok), 256, "bytes: vocabulary 256");
	n = encode(tok, "h\xc3\xa9!", ids, 512);
	ok(n == 4 && ids[0] == 'h' && ids[1] == 0xc3 && ids[2] == 0xa9 && ids[3] == '!', "bytes: ids are the UTF-8 bytes");
	is_int(encode(tok, "abcdef", ids, 3), 3, "bytes: max_ids caps the count");
	ds_tokenizer_free(tok);

	for (size_t i = 0; i < sizeof bad_specs / sizeof bad_specs[0]; i++) {
		tok = tokenizer(bad_specs[i], &err);
		ok(!tok && err.status == DS_ERR_DATA && strcmp(err.code, "bad_tokenizer") == 0,
		   "refused with bad_tokenizer: %s (%s)", bad_specs[i], err.message);
		ds_tokenizer_free(tok);
	}

	tok = tokenizer("{\"kind\": \"ngrams\"}", &err);
	ok(tok && spec_is(tok, "{\"kind\": \"ngrams\", \"buckets\": 1048576, \"word_ngrams\": 2, "
			  "\"char_ngrams\": [3, 5], \"lowercase\": true}"), "ngrams: spec has the defaults");
	is_int(ds_tokenizer_vocab(tok), 1048576, "ngrams: vocabulary is the buckets");
	/* 2 words + 1 bigram + 2 x (3 + 2 + 1) n-grams of "<the>" and "<cat>". */
	is_int(encode(tok, "the cat", ids, 512), 15, "ngrams: words, bigram and character n-grams");
	ok(same_ids(tok, "the cat", "The  CAT!"), "ngrams: lowercase, punctuation and spaces do not matter");
	ok(same_ids(tok, "ПРИВЕТ мир", "привет, Мир"), "ngrams: Cyrillic lowercases");
	ok(same_ids(tok, "ÉCOLE ŁÓDŹ", "école łódź"), "ngrams: Latin-1 and Latin Extended-A lowercase");
	ok(!same_ids(tok, "the cat", "cat the"), "ngrams: word order matters through bigrams");
	ok(!same_ids(tok, "ab", "ba"), "ngrams: different words differ");
	n = encode(tok, "你好世界 and some more words, in Ελληνικά too", ids, 512);
	for (size_t i = 0; i < n; i++)
		in_range &= ids[i] >= 0 && ids[i] < 1048576;
	ok(n > 20 && in_range, "ngrams: every id below the buckets (%zu ids)", n);
	is_int(encode(tok, "the cat", ids, 4), 4, "ngrams: max_ids caps the count");
	is_int(encode(tok, " ,.;! ", ids, 512), 0, "ngrams: punctuation alone has no tokens");
	is_int(encode(tok, "", ids, 512), 0, "ngrams: empty text has no tokens");
	ds_tokenizer_free(tok);

	tok = tokenizer("{\"kind\": \"ngrams\", \"buckets\": 1000, \"word_ngrams\": 1, "
			"\"char_ngrams\": [0, 0], \"lowercase\": false}", &err);
	ok(tok && spec_is(tok, "{\"kind\": \"ngrams\", \"buckets\": 1000, \"word_ngrams\": 1, "
			  "\"char_ngrams\": [0, 0], \"lowercase\": false}"), "ngrams: spec round-trips");
	is_int(encode(tok, "one two three", ids, 512), 3, "ngrams: words only");
	ok(!same_ids(tok, "Cat", "cat"), "ngrams: case kept when lowercase is false");
	ds_tokenizer_free(tok);

	/* One tokenizer shared by threads gives each the same ids. */
	tok = tokenizer("{\"kind\": \"ngrams\"}", &err);
	{
		static struct thread_job jobs[4];
		pthread_t th[4];
		char *text = malloc(3000);
		int agree = 1;

		for (int i = 0; i < 2999; i++)
			text[i] = "lorem ipsum dolor sit amet "[i % 27];
		text[2999] = 0;
		for (int t = 0; t < 4; t++) {
			jobs[t].tok = tok;
			jobs[t].text = text;
			pthread_create(&th[t], NULL, encode_thread, &jobs[t]);
		}
		for (int t = 0; t < 4; t++)
			pthread_join(th[t], NULL);
		for (int t = 1; t < 4; t++)
			agree &= jobs[t].n == jobs[0].n && memcmp(jobs[t].ids, jobs[0].ids, jobs[0].n * 4) == 0;
		ok(agree && jobs[0].n > 1000, "ngrams: threads encoding at once agree (%zu ids)", jobs[0].n);
		free(text);
	}
	ds_tokenizer_free(tok);
}

int main(void)
{
	test_utf8();
	test_normalize();
	test_tokenizer();
	return done_testing();
}
