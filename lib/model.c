/* model.c - loading a model file for the programs that run one. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "internal.h"

void ds_model_free(ds_model *m)
{
	if (!m)
		return;
	ds_graph_free(m->g);
	ds_container_free(m->c);
	json_decref(m->preprocess);
	json_decref(m->labels);
	free(m->path);
	free(m);
}

int ds_model_load(const char *path, unsigned flags, ds_model **out, ds_error *err)
{
	ds_model *m;
	const char *fmt;
	const ds_shape *s;
	int rc;

	*out = NULL;
	if (!(m = ds_calloc(1, sizeof *m, err)))
		return DS_ERR_NOMEM;
	if (!(m->path = ds_strdup(path, err))) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	if ((rc = ds_container_load(path, flags, &m->c, err)))
		goto out;
	fmt = ds_container_meta_get(m->c, "ds.format");
	if (fmt && strcmp(fmt, DS_FORMAT_MODEL) != 0) {
		rc = ds_error_set(err, DS_ERR_DATA, "not_model", "%s: ds.format is '%s', not a model (%s)", path, fmt,
				  DS_FORMAT_MODEL);
		goto out;
	}
	if ((rc = ds_graph_from_model(m->c, &m->g, err)) ||
	    (rc = ds_container_meta_json(m->c, "ds.preprocess", &m->preprocess, err)) ||
	    (rc = ds_container_meta_json(m->c, "ds.labels", &m->labels, err))) {
		ds_error_prefix(err, "%s", path);
		goto out;
	}
	if (m->preprocess && !json_is_object(m->preprocess)) {
		rc = ds_error_set(err, DS_ERR_DATA, "bad_metadata", "%s: ds.preprocess is not a JSON object", path);
		goto out;
	}
	if (m->labels && !json_is_array(m->labels)) {
		rc = ds_error_set(err, DS_ERR_DATA, "bad_metadata", "%s: ds.labels is not a JSON array", path);
		goto out;
	}
	if (!ds_graph_input_count(m->g) || !ds_graph_output_count(m->g)) {
		rc = ds_error_set(err, DS_ERR_DATA, "bad_graph", "%s: the graph has no input or no output", path);
		goto out;
	}
	m->input = ds_graph_input_name(m->g, 0);
	m->output = ds_graph_output_name(m->g, 0);
	s = ds_graph_shape(m->g, m->output);
	if (s && s->ndim == 2 && s->dtype == DS_F32)
		m->classes = s->dim[1];
	if (m->labels && m->classes && (int64_t)json_array_size(m->labels) != m->classes) {
		rc = ds_error_set(err, DS_ERR_DATA, "bad_metadata", "%s: ds.labels has %zu names for %lld classes",
				  path, json_array_size(m->labels), (long long)m->classes);
		goto out;
	}
	*out = m;
	m = NULL;
out:
	ds_model_free(m);
	return rc;
}

uint64_t ds_model_bytes(const ds_model *m)
{
	uint64_t n = 0;

	for (size_t i = 0; i < ds_container_count(m->c); i++)
		n += ds_tensor_nbytes(ds_container_tensor(m->c, i));
	return n;
}
