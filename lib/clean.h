/* clean.h - what the cleaning pipeline's files share. */
#ifndef DS_CLEAN_H
#define DS_CLEAN_H

#include "internal.h"

/* Every reason an item can carry; the order is the bit number in a mask. */
enum clean_reason {
	R_UNREADABLE, R_EMPTY, R_TOO_LARGE, R_NOT_IMAGE, R_TRUNCATED, R_CORRUPT,
	R_EXTENSION_MISMATCH, R_TOO_SMALL, R_ASPECT_RATIO, R_BLANK,
	R_INVALID_UTF8, R_REPAIRED_UTF8, R_BOM, R_CONTROL_CHARS, R_WHITESPACE,
	R_TOO_SHORT, R_TOO_LONG, R_BAD_RECORD, R_SYMLINK_LOOP,
	R_DUPLICATE, R_NEAR_DUPLICATE, R_LABEL_CONFLICT,
	R_COUNT
};

enum clean_action { ACT_FIX, ACT_WARN, ACT_DROP };

struct clean_reason_info {
	const char *code;
	enum clean_action action;    /* the default */
	const char *applies;         /* "image", "text" or "any" */
	const char *what;
};

extern const struct clean_reason_info clean_reasons[R_COUNT];

/* The action of each reason after --drop, --keep and --strict. */
struct clean_policy {
	enum clean_action action[R_COUNT];
	uint32_t fail_on;            /* mask of reasons that fail the run */
};

int clean_policy_init(struct clean_policy *p, const ds_clean_options *o, ds_error *err);
/* A comma-separated list of reason codes to a mask; status 2 on an unknown one. */
int clean_reason_mask(const char *list, const char *option, uint32_t *mask, ds_error *err);
/* Text for JSON: bytes that are not UTF-8 become \xNN, so any file name can
 * be reported and the report stays valid JSON. */
json_t *clean_json_string(const char *s);

#endif
