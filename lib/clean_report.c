/* clean_report.c - the reasons ds-clean gives, what each does by default, and
 * how options change that. */
#include "clean.h"

#include <string.h>

const struct clean_reason_info clean_reasons[R_COUNT] = {
	[R_UNREADABLE] = { "unreadable", ACT_DROP, "any", "the file cannot be opened or read" },
	[R_EMPTY] = { "empty", ACT_DROP, "any", "the file or text is empty" },
	[R_TOO_LARGE] = { "too_large", ACT_DROP, "any", "the file is larger than --max-bytes" },
	[R_NOT_IMAGE] = { "not_image", ACT_DROP, "image", "the content is neither PNG nor JPEG" },
	[R_TRUNCATED] = { "truncated", ACT_DROP, "image", "the image data ends early" },
	[R_CORRUPT] = { "corrupt", ACT_DROP, "image", "the decoder reports damage (CRC, bad data)" },
	[R_EXTENSION_MISMATCH] = { "extension_mismatch", ACT_WARN, "image",
				   "the extension names another format than the content" },
	[R_TOO_SMALL] = { "too_small", ACT_DROP, "image", "smaller than --min-size" },
	[R_ASPECT_RATIO] = { "aspect_ratio", ACT_DROP, "image", "longer side over shorter above --max-aspect" },
	[R_BLANK] = { "blank", ACT_DROP, "image", "near-constant: luma deviation below --blank-threshold" },
	[R_INVALID_UTF8] = { "invalid_utf8", ACT_DROP, "text", "the text is not valid UTF-8" },
	[R_REPAIRED_UTF8] = { "repaired_utf8", ACT_WARN, "text", "invalid UTF-8 replaced by U+FFFD (--repair)" },
	[R_BOM] = { "bom", ACT_FIX, "text", "a byte-order mark was removed" },
	[R_CONTROL_CHARS] = { "control_chars", ACT_FIX, "text", "control characters were removed" },
	[R_WHITESPACE] = { "whitespace", ACT_FIX, "text", "white space was collapsed and trimmed" },
	[R_TOO_SHORT] = { "too_short", ACT_DROP, "text", "fewer code points than --min-chars" },
	[R_TOO_LONG] = { "too_long", ACT_DROP, "text", "more code points than --max-chars" },
	[R_BAD_RECORD] = { "bad_record", ACT_DROP, "text", "a JSON Lines record that does not parse" },
	[R_SYMLINK_LOOP] = { "symlink_loop", ACT_DROP, "any", "a folder that links back to itself" },
	[R_DUPLICATE] = { "duplicate", ACT_DROP, "any", "the same pixels or text as an earlier item" },
	[R_NEAR_DUPLICATE] = { "near_duplicate", ACT_WARN, "any",
			       "within --near-distance (pHash) or --near-jaccard (MinHash) of an earlier item" },
	[R_LABEL_CONFLICT] = { "label_conflict", ACT_DROP, "any",
			       "the same pixels or text as an earlier item of another class" },
};

int clean_reason_mask(const char *list, const char *option, uint32_t *mask, ds_error *err)
{
	const char *p = list;

	*mask = 0;
	while (p && *p) {
		size_t len = strcspn(p, ", ");
		int found = -1;

		for (int r = 0; r < R_COUNT && len; r++)
			if (strlen(clean_reasons[r].code) == len && strncmp(p, clean_reasons[r].code, len) == 0)
				found = r;
		if (len && found < 0)
			return ds_error_set(err, DS_ERR_USAGE, "bad_reason", "--%s: '%.*s' is not a reason code",
					    option, (int)len, p);
		if (found >= 0)
			*mask |= 1u << found;
		p += len;
		p += strspn(p, ", ");
	}
	return 0;
}

int clean_policy_init(struct clean_policy *pol, const ds_clean_options *o, ds_error *err)
{
	uint32_t drop, keep;
	int rc;

	if ((rc = clean_reason_mask(o->drop, "drop", &drop, err)) ||
	    (rc = clean_reason_mask(o->keep, "keep", &keep, err)) ||
	    (rc = clean_reason_mask(o->fail_on, "fail-on", &pol->fail_on, err)))
		return rc;
	if (drop & keep)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--drop and --keep name the same reason");
	for (int r = 0; r < R_COUNT; r++) {
		enum clean_action a = clean_reasons[r].action;

		if (o->strict && a == ACT_WARN)
			a = ACT_DROP;
		if (drop & (1u << r))
			a = ACT_DROP;
		if ((keep & (1u << r)) && a == ACT_DROP)
			a = ACT_WARN;
		pol->action[r] = a;
	}
	return 0;
}

json_t *clean_json_string(const char *s)
{
	size_t len = strlen(s), bad;
	char *out, *q;
	json_t *j;

	if (ds_utf8_invalid(s, len, &bad) == 0)
		return json_stringn(s, len);
	out = malloc(4 * len + 1);
	if (!out)
		return NULL;
	q = out;
	while (len) {
		size_t n = ds_utf8_invalid(s, len, &bad) ? bad : len;

		memcpy(q, s, n);
		q += n;
		s += n;
		len -= n;
		if (len) {
			/* One invalid byte at s: escape it and go on. */
			q += sprintf(q, "\\x%02x", (unsigned char)*s);
			s++;
			len--;
		}
	}
	*q = 0;
	j = json_string(out);
	free(out);
	return j;
}

static const char *action_name(enum clean_action a)
{
	return a == ACT_DROP ? "drop" : a == ACT_WARN ? "warn" : "fix";
}

json_t *ds_clean_reason_table(void)
{
	json_t *rows = json_array();

	for (int r = 0; r < R_COUNT; r++)
		json_array_append_new(rows, json_pack("{s:s, s:s, s:s, s:s}", "reason", clean_reasons[r].code,
						      "action", action_name(clean_reasons[r].action),
						      "applies", clean_reasons[r].applies,
						      "meaning", clean_reasons[r].what));
	return json_pack("{s:o}", "reasons", rows);
}
