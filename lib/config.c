/* config.c - the --config file: a JSON object of long option names.  The
 * file is part of the command line, so what is wrong in it is a usage error
 * (status 2); only a file that cannot be read is status 5. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A config names a few dozen options; anything this big is not one. */
#define CONFIG_MAX (1u << 20)

int ds_config_parse(const char *text, size_t len, const char *where, json_t **out, ds_error *err)
{
	json_error_t jerr;
	json_t *doc;

	*out = NULL;
	doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!doc)
		return ds_error_set(err, DS_ERR_USAGE, "bad_config", "%s: line %d column %d: %s",
				    where, jerr.line, jerr.column, jerr.text);
	if (!json_is_object(doc)) {
		json_decref(doc);
		return ds_error_set(err, DS_ERR_USAGE, "bad_config",
				    "%s: not a JSON object of option names", where);
	}
	*out = doc;
	return 0;
}

int ds_config_load(const char *path, json_t **out, ds_error *err)
{
	FILE *f = NULL;
	char *buf = NULL;
	size_t len = 0;
	int status = 0;

	*out = NULL;
	f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	if (!f) {
		status = ds_error_errno(err, errno, path);
		goto out;
	}
	buf = ds_malloc(CONFIG_MAX + 1, err);
	if (!buf) {
		status = DS_ERR_NOMEM;
		goto out;
	}
	len = fread(buf, 1, CONFIG_MAX + 1, f);
	if (ferror(f)) {
		status = ds_error_errno(err, errno, path);
		goto out;
	}
	if (len > CONFIG_MAX) {
		status = ds_error_set(err, DS_ERR_USAGE, "bad_config",
				      "%s: larger than %u bytes: not a config file", path, CONFIG_MAX);
		goto out;
	}
	status = ds_config_parse(buf, len, path, out, err);
out:
	free(buf);
	if (f && f != stdin)
		fclose(f);
	return status;
}
