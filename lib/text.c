/* text.c - UTF-8 validation and the normalisation ds-clean applies to text
 * before comparing and tokenizing it. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define REPLACEMENT 0xfffdu

/* Well-formed sequences are those of Unicode's table 3-7: the second byte's
 * range depends on the first (E0 and F0 exclude overlongs, ED excludes
 * surrogates, F4 stops at U+10FFFF).  A sequence that breaks off is one
 * maximal subpart, so "E0 80" is two subparts (E0 cannot start anything
 * that continues with 80) but "E1 80 41" is one ("E1 80") before the 'A'. */
int ds_utf8_decode(const char *str, size_t len, uint32_t *cp)
{
	const unsigned char *s = (const unsigned char *)str;
	unsigned char lo = 0x80, hi = 0xbf;
	uint32_t c = s[0];
	int need;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		need = 1;
		c &= 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		need = 2;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
		c &= 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 3;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
		c &= 0x07;
	} else {
		*cp = REPLACEMENT;
		return -1;
	}
	for (int i = 1; i <= need; i++) {
		if ((size_t)i >= len || s[i] < lo || s[i] > hi) {
			*cp = REPLACEMENT;
			return -i;
		}
		c = (c << 6) | (s[i] & 0x3f);
		lo = 0x80;
		hi = 0xbf;
	}
	*cp = c;
	return need + 1;
}

size_t ds_utf8_invalid(const char *s, size_t len, size_t *first_bad)
{
	size_t bad = 0, first = len;

	for (size_t i = 0; i < len;) {
		uint32_t cp;
		int n;

		/* ASCII runs dominate real text; skip them without decoding. */
		if ((unsigned char)s[i] < 0x80) {
			i++;
			continue;
		}
		n = ds_utf8_decode(s + i, len - i, &cp);
		if (n < 0) {
			if (bad == 0)
				first = i;
			bad += (size_t)-n;
			n = -n;
		}
		i += (size_t)n;
	}
	if (first_bad)
		*first_bad = first;
	return bad;
}

size_t ds_utf8_length(const char *s, size_t len)
{
	size_t count = 0;

	for (size_t i = 0; i < len; count++) {
		uint32_t cp;
		int n;

		if ((unsigned char)s[i] < 0x80) {
			i++;
			continue;
		}
		n = ds_utf8_decode(s + i, len - i, &cp);
		i += (size_t)(n < 0 ? -n : n);
	}
	return count;
}

/* The white space the normaliser collapses: ASCII's six and Unicode's
 * space separators (Zs) and line and paragraph separators. */
static int is_space(uint32_t c)
{
	switch (c) {
	case ' ': case '\t': case '\n': case '\v': case '\f': case '\r':
	case 0x00a0: case 0x1680: case 0x2028: case 0x2029: case 0x202f: case 0x205f: case 0x3000:
		return 1;
	default:
		return c >= 0x2000 && c <= 0x200a;
	}
}

static int is_control(uint32_t c)
{
	return c < 0x20 || (c >= 0x7f && c <= 0x9f);
}

static size_t put_utf8(char *out, uint32_t c)
{
	unsigned char *o = (unsigned char *)out;

	if (c < 0x80) {
		o[0] = (unsigned char)c;
		return 1;
	}
	if (c < 0x800) {
		o[0] = (unsigned char)(0xc0 | (c >> 6));
		o[1] = (unsigned char)(0x80 | (c & 0x3f));
		return 2;
	}
	if (c < 0x10000) {
		o[0] = (unsigned char)(0xe0 | (c >> 12));
		o[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
		o[2] = (unsigned char)(0x80 | (c & 0x3f));
		return 3;
	}
	o[0] = (unsigned char)(0xf0 | (c >> 18));
	o[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3f));
	o[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
	o[3] = (unsigned char)(0x80 | (c & 0x3f));
	return 4;
}

/* One pass: white space is held back as "pending" and written as a single
 * space only when a visible character follows, which both collapses runs
 * and trims the ends.  Removed controls leave a run unbroken, so "a \1 b"
 * becomes "a b".  The output never exceeds 3 bytes per input byte (a lone
 * invalid byte becomes the 3 bytes of U+FFFD). */
char *ds_text_normalize(const char *s, size_t len, size_t *out_len, ds_text_fixes *fixes)
{
	ds_text_fixes local;
	char *out;
	size_t o = 0, i = 0, run = 0;
	int run_plain = 1;     /* the pending run is exactly one ASCII space */

	if (!fixes)
		fixes = &local;
	memset(fixes, 0, sizeof *fixes);
	if (len > (SIZE_MAX - 1) / 3)
		return NULL;
	out = malloc(len * 3 + 1);
	if (!out)
		return NULL;
	if (len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) {
		fixes->bom = 1;
		i = 3;
	}
	while (i < len) {
		uint32_t c;
		int n = ds_utf8_decode(s + i, len - i, &c);

		if (n < 0) {
			fixes->invalid += (size_t)-n;
			n = -n;
		}
		i += (size_t)n;
		if (is_space(c)) {
			if (c != ' ')
				run_plain = 0;
			run++;
			continue;
		}
		if (is_control(c)) {
			fixes->control++;
			continue;
		}
		if (run > 0) {
			if (o == 0 || run > 1 || !run_plain)
				fixes->whitespace = 1;
			if (o > 0)
				out[o++] = ' ';
		}
		run = 0;
		run_plain = 1;
		o += put_utf8(out + o, c);
	}
	if (run > 0)
		fixes->whitespace = 1;
	out[o] = 0;
	if (out_len)
		*out_len = o;
	return out;
}
