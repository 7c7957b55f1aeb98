/* container.c - the in-memory container: named tensors in order, string
 * metadata in order, and what the reader found about each tensor's checksum. */
#include "container.h"

#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

struct entry {
	char *name;
	ds_tensor *tensor;
	ds_checksum_state checksum;
};

struct meta {
	char *key;
	char *value;
};

struct ds_container {
	struct entry *entries;
	size_t count, cap;
	struct meta *meta;
	size_t meta_count, meta_cap;
};

ds_container *ds_container_new(void)
{
	return calloc(1, sizeof(ds_container));
}

void ds_container_free(ds_container *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->count; i++) {
		free(c->entries[i].name);
		ds_tensor_unref(c->entries[i].tensor);
	}
	for (size_t i = 0; i < c->meta_count; i++) {
		free(c->meta[i].key);
		free(c->meta[i].value);
	}
	free(c->entries);
	free(c->meta);
	free(c);
}

/* Names and metadata end up as JSON strings, so they must be UTF-8. */
static int check_utf8(const char *what, const char *s, ds_error *err)
{
	json_t *j = json_string(s);

	if (!j)
		return ds_error_set(err, DS_ERR_DATA, "bad_utf8", "%s is not valid UTF-8", what);
	json_decref(j);
	return 0;
}

static ssize_t find_entry(const ds_container *c, const char *name)
{
	for (size_t i = 0; i < c->count; i++)
		if (strcmp(c->entries[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

int ds_container_add_owned(ds_container *c, const char *name, ds_tensor *t, ds_error *err)
{
	char *copy;

	if (c->count == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 16;
		struct entry *e = ds_realloc(c->entries, cap * sizeof *e, err);

		if (!e)
			return DS_ERR_NOMEM;
		c->entries = e;
		c->cap = cap;
	}
	copy = ds_strdup(name, err);
	if (!copy)
		return DS_ERR_NOMEM;
	c->entries[c->count].name = copy;
	c->entries[c->count].tensor = t;
	c->entries[c->count].checksum = DS_CHECKSUM_ABSENT;
	c->count++;
	return 0;
}

int ds_container_add(ds_container *c, const char *name, ds_tensor *t, ds_error *err)
{
	int rc;

	if (!name || !t)
		return ds_error_set(err, DS_ERR_RUN, "bad_argument", "container: tensor or name missing");
	if (strcmp(name, "__metadata__") == 0)
		return ds_error_set(err, DS_ERR_DATA, "bad_name", "'__metadata__' cannot name a tensor");
	if (find_entry(c, name) >= 0)
		return ds_error_set(err, DS_ERR_DATA, "duplicate_tensor", "tensor '%s' is already in the container", name);
	rc = check_utf8("tensor name", name, err);
	if (rc)
		return rc;
	rc = ds_container_add_owned(c, name, ds_tensor_ref(t), err);
	if (rc)
		ds_tensor_unref(t);
	return rc;
}

int ds_container_remove(ds_container *c, const char *name)
{
	ssize_t i = find_entry(c, name);

	if (i < 0)
		return -1;
	free(c->entries[i].name);
	ds_tensor_unref(c->entries[i].tensor);
	memmove(&c->entries[i], &c->entries[i + 1], (c->count - (size_t)i - 1) * sizeof *c->entries);
	c->count--;
	return 0;
}

ds_tensor *ds_container_get(const ds_container *c, const char *name)
{
	ssize_t i = find_entry(c, name);

	return i < 0 ? NULL : c->entries[i].tensor;
}

size_t ds_container_count(const ds_container *c)
{
	return c->count;
}

const char *ds_container_name(const ds_container *c, size_t i)
{
	return i < c->count ? c->entries[i].name : NULL;
}

ds_tensor *ds_container_tensor(const ds_container *c, size_t i)
{
	return i < c->count ? c->entries[i].tensor : NULL;
}

ds_checksum_state ds_container_checksum(const ds_container *c, size_t i)
{
	return i < c->count ? c->entries[i].checksum : DS_CHECKSUM_ABSENT;
}

void ds_container_set_checksum(ds_container *c, size_t i, ds_checksum_state state)
{
	if (i < c->count)
		c->entries[i].checksum = state;
}

/* ---------------------------------------------------------------- metadata */

static ssize_t find_meta(const ds_container *c, const char *key)
{
	for (size_t i = 0; i < c->meta_count; i++)
		if (strcmp(c->meta[i].key, key) == 0)
			return (ssize_t)i;
	return -1;
}

int ds_container_meta_set(ds_container *c, const char *key, const char *value, ds_error *err)
{
	ssize_t i = find_meta(c, key);
	char *v, *k = NULL;

	if (check_utf8("metadata key", key, err) || check_utf8("metadata value", value, err)) {
		ds_error_prefix(err, "metadata '%s'", key);
		return DS_ERR_DATA;
	}
	v = ds_strdup(value, err);
	if (!v)
		return DS_ERR_NOMEM;
	if (i >= 0) {
		free(c->meta[i].value);
		c->meta[i].value = v;
		return 0;
	}
	if (c->meta_count == c->meta_cap) {
		size_t cap = c->meta_cap ? 2 * c->meta_cap : 8;
		struct meta *m = ds_realloc(c->meta, cap * sizeof *m, err);

		if (!m)
			goto fail;
		c->meta = m;
		c->meta_cap = cap;
	}
	k = ds_strdup(key, err);
	if (!k)
		goto fail;
	c->meta[c->meta_count].key = k;
	c->meta[c->meta_count].value = v;
	c->meta_count++;
	return 0;
fail:
	free(v);
	return DS_ERR_NOMEM;
}

const char *ds_container_meta_get(const ds_container *c, const char *key)
{
	ssize_t i = find_meta(c, key);

	return i < 0 ? NULL : c->meta[i].value;
}

size_t ds_container_meta_count(const ds_container *c)
{
	return c->meta_count;
}

const char *ds_container_meta_key(const ds_container *c, size_t i)
{
	return i < c->meta_count ? c->meta[i].key : NULL;
}

int ds_container_meta_json(const ds_container *c, const char *key, json_t **out, ds_error *err)
{
	const char *text = ds_container_meta_get(c, key);
	json_error_t jerr;

	*out = NULL;
	if (!text)
		return 0;
	*out = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
	if (!*out)
		return ds_error_set(err, DS_ERR_DATA, "bad_metadata", "metadata '%s' is not valid JSON: %s (column %d)",
				    key, jerr.text, jerr.column);
	return 0;
}

int ds_container_meta_set_json(ds_container *c, const char *key, const json_t *value, ds_error *err)
{
	char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
	int rc;

	if (!text)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "metadata '%s': cannot encode JSON", key);
	rc = ds_container_meta_set(c, key, text, err);
	free(text);
	return rc;
}

/* ----------------------------------------------------------------- history */

/* The date of an entry; SOURCE_DATE_EPOCH pins it for reproducible files. */
static void history_date(char *buf, size_t len)
{
	const char *epoch = getenv("SOURCE_DATE_EPOCH");
	time_t now = time(NULL);
	struct tm tm;

	if (epoch && *epoch) {
		char *end;
		long long v = strtoll(epoch, &end, 10);

		if (!*end && v >= 0)
			now = (time_t)v;
	}
	gmtime_r(&now, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int ds_container_history_append(ds_container *c, const char *tool, int argc, char **argv,
				const json_t *figures, ds_error *err)
{
	json_t *history = NULL, *entry = NULL, *args = NULL, *figs = NULL;
	char date[32];
	int rc;

	rc = ds_container_meta_json(c, "ds.history", &history, err);
	if (rc)
		goto out;
	if (!history) {
		history = json_array();
	} else if (!json_is_array(history)) {
		rc = ds_error_set(err, DS_ERR_DATA, "bad_metadata", "metadata 'ds.history' is not a JSON array");
		goto out;
	}
	args = json_array();
	for (int i = 0; args && i < argc; i++) {
		/* Arguments that are not UTF-8 (odd file names) are kept readable. */
		json_t *a = json_string(argv[i]);

		if (!a)
			a = json_string("?");
		json_array_append_new(args, a);
	}
	figs = figures ? json_deep_copy(figures) : json_object();
	history_date(date, sizeof date);
	entry = json_pack("{s:s?, s:s, s:O, s:s, s:O}", "tool", tool, "version", ds_version(),
			  "args", args, "date", date, "figures", figs);
	if (!history || !args || !figs || !entry || json_array_append(history, entry) != 0) {
		rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory appending to ds.history");
		goto out;
	}
	rc = ds_container_meta_set_json(c, "ds.history", history, err);
out:
	json_decref(entry);
	json_decref(figs);
	json_decref(args);
	json_decref(history);
	return rc;
}
