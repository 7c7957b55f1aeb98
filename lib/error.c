/* error.c - errors travel up as values: a status, a stable code and a
 * message that names where the problem is. */
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

int ds_error_set(ds_error *err, int status, const char *code, const char *fmt, ...)
{
	va_list ap;

	if (!err || err->status != DS_OK)
		return status;
	err->status = status;
	snprintf(err->code, sizeof err->code, "%s", code ? code : "error");
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof err->message, fmt, ap);
	va_end(ap);
	return status;
}

void ds_error_prefix(ds_error *err, const char *fmt, ...)
{
	char prefix[512];
	size_t plen, mlen, cap = sizeof err->message - 1;
	va_list ap;

	if (!err || err->status == DS_OK)
		return;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof prefix - 2, fmt, ap);
	va_end(ap);
	strcat(prefix, ": ");
	plen = strlen(prefix);
	mlen = strlen(err->message);
	if (plen > cap)
		plen = cap;
	if (plen + mlen > cap)
		mlen = cap - plen;
	memmove(err->message + plen, err->message, mlen);
	memcpy(err->message, prefix, plen);
	err->message[plen + mlen] = 0;
}

void ds_error_clear(ds_error *err)
{
	if (err)
		memset(err, 0, sizeof *err);
}

int ds_error_errno(ds_error *err, int errnum, const char *what)
{
	if (errnum == ENOMEM)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "%s: %s", what, strerror(errnum));
	return ds_error_set(err, DS_ERR_IO, errnum == ENOSPC ? "disk_full" : "io_error",
			    "%s: %s", what, strerror(errnum));
}

void *ds_malloc(size_t bytes, ds_error *err)
{
	void *p = malloc(bytes ? bytes : 1);

	if (!p)
		ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory allocating %zu bytes", bytes);
	return p;
}

void *ds_calloc(size_t count, size_t size, ds_error *err)
{
	void *p = calloc(count ? count : 1, size ? size : 1);

	if (!p)
		ds_error_set(err, DS_ERR_NOMEM, "out_of_memory",
			     "out of memory allocating %zu x %zu bytes", count, size);
	return p;
}

void *ds_realloc(void *old, size_t bytes, ds_error *err)
{
	void *p = realloc(old, bytes ? bytes : 1);

	if (!p)
		ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory allocating %zu bytes", bytes);
	return p;
}

char *ds_strdup(const char *s, ds_error *err)
{
	size_t len = strlen(s) + 1;
	char *p = ds_malloc(len, err);

	if (p)
		memcpy(p, s, len);
	return p;
}
