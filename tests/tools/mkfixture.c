/* mkfixture - small containers for the tests, made through libds's writer.
 *
 *   mkfixture model OUT              a model: a linear layer and its graph
 *   mkfixture stream OUT N [BATCH]   N frames of BATCH 28x28 U8 images
 *
 * OUT may be "-" for standard output.  The bytes depend only on the
 * arguments (and SOURCE_DATE_EPOCH for the history date). */
#include "config.h"
#include "ds.h"

#include <stdlib.h>
#include <string.h>

static const char graph[] =
	"{\"inputs\":[{\"name\":\"x\",\"dtype\":\"F32\",\"shape\":[-1,4]}],"
	"\"nodes\":[{\"op\":\"linear\",\"name\":\"fc\",\"inputs\":[\"x\",\"fc.weight\",\"fc.bias\"],"
	"\"outputs\":[\"y\"]}],\"outputs\":[\"y\"]}";

static uint32_t rng = 12345;

static uint32_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return rng;
}

static int add(ds_container *c, const char *name, ds_dtype dtype, int ndim, const int64_t *shape, ds_error *err)
{
	ds_tensor *t = ds_tensor_new(dtype, ndim, shape, DS_CPU, err);
	int64_t n;
	int rc;

	if (!t)
		return err->status;
	n = ds_tensor_numel(t);
	for (int64_t i = 0; i < n; i++) {
		switch (dtype) {
		case DS_F32: ((float *)t->data)[i] = (float)((int)(next() % 2001) - 1000) / 1000.0f; break;
		case DS_I8: ((int8_t *)t->data)[i] = (int8_t)(next() % 255 - 127); break;
		case DS_U8: ((uint8_t *)t->data)[i] = (uint8_t)next(); break;
		case DS_I32: ((int32_t *)t->data)[i] = (int32_t)(next() % 10); break;
		default: break;
		}
	}
	rc = ds_container_add(c, name, t, err);
	ds_tensor_unref(t);
	return rc;
}

static int make_model(const char *out, int argc, char **argv, ds_error *err)
{
	int64_t w[] = { 3, 4 }, b[] = { 3 }, q[] = { 2, 3 }, m[] = { 5 };
	ds_container *c = ds_container_new();
	json_t *figs = json_pack("{s:i}", "params", 15);
	ds_writer *wr = NULL;
	int rc;

	rc = add(c, "fc.weight", DS_F32, 2, w, err);
	if (!rc)
		rc = add(c, "fc.bias", DS_F32, 1, b, err);
	if (!rc)
		rc = add(c, "extra.int8", DS_I8, 2, q, err);
	if (!rc)
		rc = add(c, "extra.mask", DS_U8, 1, m, err);
	if (!rc)
		rc = add(c, "extra.step", DS_I32, 0, NULL, err);
	if (!rc)
		rc = ds_container_meta_set(c, "ds.format", DS_FORMAT_MODEL, err);
	if (!rc)
		rc = ds_container_meta_set(c, "ds.graph", graph, err);
	if (!rc)
		rc = ds_container_meta_set(c, "ds.labels", "[\"red\",\"green\",\"blue\"]", err);
	if (!rc)
		rc = ds_container_meta_set(c, "ds.preprocess", "{\"kind\":\"features\",\"size\":4}", err);
	if (!rc)
		rc = ds_container_history_append(c, "mkfixture", argc, argv, figs, err);
	if (!rc)
		rc = ds_writer_open(out, &wr, err);
	if (!rc)
		rc = ds_writer_put(wr, c, err);
	if (!rc) {
		rc = ds_writer_commit(wr, err);
		wr = NULL;
	}
	ds_writer_abort(wr);
	json_decref(figs);
	ds_container_free(c);
	return rc;
}

static int make_stream(const char *out, long frames, long batch, ds_error *err)
{
	int64_t xs[] = { batch, 28, 28, 1 }, ys[] = { batch };
	ds_writer *wr = NULL;
	int rc;

	rc = ds_writer_open(out, &wr, err);
	for (long k = 0; !rc && k < frames; k++) {
		ds_container *c = ds_container_new();
		json_t *items = json_array();

		for (long i = 0; i < batch; i++)
			json_array_append_new(items, json_sprintf("item-%ld-%ld.png", k, i));
		rc = add(c, "x", DS_U8, 4, xs, err);
		if (!rc)
			rc = add(c, "y", DS_I32, 1, ys, err);
		if (!rc)
			rc = ds_container_meta_set(c, "ds.format", DS_FORMAT_FRAME, err);
		if (!rc)
			rc = ds_container_meta_set_json(c, "ds.items", items, err);
		if (!rc)
			rc = ds_container_meta_set(c, "ds.labels",
						   "[\"0\",\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]", err);
		if (!rc)
			rc = ds_writer_put(wr, c, err);
		json_decref(items);
		ds_container_free(c);
	}
	if (!rc) {
		rc = ds_writer_commit(wr, err);
		wr = NULL;
	}
	ds_writer_abort(wr);
	return rc;
}

int main(int argc, char **argv)
{
	ds_error err = { 0 };
	int rc;

	if (argc == 3 && strcmp(argv[1], "model") == 0) {
		rc = make_model(argv[2], argc, argv, &err);
	} else if ((argc == 4 || argc == 5) && strcmp(argv[1], "stream") == 0) {
		long frames = strtol(argv[3], NULL, 10), batch = argc == 5 ? strtol(argv[4], NULL, 10) : 4;

		if (frames < 0 || batch < 0) {
			fprintf(stderr, "mkfixture: error: bad frame count or batch\n");
			return DS_ERR_USAGE;
		}
		rc = make_stream(argv[2], frames, batch, &err);
	} else {
		fprintf(stderr, "usage: mkfixture model OUT | mkfixture stream OUT NFRAMES [BATCH]\n");
		return DS_ERR_USAGE;
	}
	if (rc)
		fprintf(stderr, "mkfixture: error: %s\n", err.message);
	else if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "mkfixture: error: standard output: write failed\n");
		rc = DS_ERR_IO;
	}
	return rc;
}
