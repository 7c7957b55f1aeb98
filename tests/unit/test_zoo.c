/* test_zoo - the built-in architectures (shapes, parameter counts against
 * torchvision's, PyTorch's default initialisation, determinism), JSON
 * architecture files, and the dataset and loader of ds-train. */
#include "config.h"
#include "ds.h"
#include "tap.h"

#include <inttypes.h>
#include <unistd.h>

/* Trainable parameters: batchnorm running statistics are buffers in PyTorch. */
static int64_t trainable(const ds_container *c)
{
	int64_t n = 0;

	for (size_t i = 0; i < ds_container_count(c); i++)
		if (!strstr(ds_container_name(c, i), "running_"))
			n += ds_tensor_numel(ds_container_tensor(c, i));
	return n;
}

static json_t *image_pre(int c, int h, int w)
{
	return json_pack("{s:s, s:i, s:i, s:i, s:f}", "kind", "image", "channels", c, "height", h,
			 "width", w, "scale", 1.0 / 255.0);
}

static ds_container *build(const char *arch, const json_t *pre, int64_t classes, uint64_t seed, ds_error *err)
{
	ds_zoo_options o = { .arch = arch, .preprocess = pre, .classes = classes, .seed = seed };
	ds_container *c = NULL;

	ds_error_clear(err);
	if (ds_zoo_build(&o, &c, err))
		diag("%s: %s", arch, err->message);
	return c;
}

static void check_logits(const ds_container *c, const char *arch, int64_t k)
{
	ds_graph *g = NULL;
	ds_error err = { 0 };
	const ds_shape *s;

	if (!ok(ds_graph_from_model(c, &g, &err) == 0, "%s: the graph parses", arch)) {
		diag("%s", err.message);
		return;
	}
	s = ds_graph_shape(g, "logits");
	ok(s && s->ndim == 2 && s->dim[0] == 1 && s->dim[1] == k, "%s: logits [1, %" PRId64 "]", arch, k);
	ds_graph_free(g);
}

static void test_builtins(void)
{
	static const struct { const char *arch; int c, h, w; int64_t k, params; } cases[] = {
		{ "mlp", 1, 28, 28, 10, 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10 },
		{ "cnn-small", 1, 28, 28, 10, 320 + 18496 + 3136 * 128 + 128 + 1290 },
		{ "cnn-bn", 1, 28, 28, 10, 288 + 64 + 18432 + 128 + 3136 * 128 + 128 + 1290 },
		{ "resnet-s", 3, 32, 32, 10, -1 },
		{ "mobilenet-s", 1, 28, 28, 10, -1 },
		/* torchvision's counts for these at 1000 classes */
		{ "resnet18", 3, 224, 224, 1000, 11689512 },
		{ "resnet50", 3, 224, 224, 1000, 25557032 },
		{ "mobilenet-v2", 3, 224, 224, 1000, 3504872 },
	};
	ds_error err = { 0 };

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		json_t *pre = image_pre(cases[i].c, cases[i].h, cases[i].w);
		ds_container *c = build(cases[i].arch, pre, cases[i].k, 1, &err);

		if (!ok(c != NULL, "%s builds", cases[i].arch)) {
			json_decref(pre);
			continue;
		}
		check_logits(c, cases[i].arch, cases[i].k);
		if (cases[i].params > 0)
			is_int(trainable(c), cases[i].params, "%s: %" PRId64 " trainable parameters", cases[i].arch,
			       cases[i].params);
		is_str(ds_container_meta_get(c, "ds.format"), DS_FORMAT_MODEL, "%s: ds.format", cases[i].arch);
		ok(ds_container_meta_get(c, "ds.preprocess") && ds_container_meta_get(c, "ds.labels"),
		   "%s: preprocess and labels attached", cases[i].arch);
		ds_container_free(c);
		json_decref(pre);
	}
}

static void test_init(void)
{
	ds_error err = { 0 };
	json_t *pre = image_pre(1, 28, 28);
	ds_container *a = build("cnn-bn", pre, 10, 7, &err), *b = build("cnn-bn", pre, 10, 7, &err);
	ds_container *c = build("cnn-bn", pre, 10, 8, &err);
	const ds_tensor *w, *g, *v;
	double bound = 1.0 / sqrt(3136.0), lo = 0, hi = 0, sum = 0;
	int64_t n;

	if (!ok(a && b && c, "cnn-bn builds three times")) {
		json_decref(pre);
		return;
	}
	w = ds_container_get(a, "fc1.weight");
	n = ds_tensor_numel(w);
	for (int64_t i = 0; i < n; i++) {
		float x = ((const float *)w->data)[i];

		lo = x < lo ? x : lo;
		hi = x > hi ? x : hi;
		sum += x;
	}
	ok(lo >= -bound && hi <= bound && hi > 0.99 * bound && lo < -0.99 * bound,
	   "fc1.weight is U(-1/sqrt(3136), 1/sqrt(3136)): [%g, %g]", lo, hi);
	ok(fabs(sum / (double)n) < 0.01 * bound, "fc1.weight has mean about 0");
	ok(!memcmp(w->data, ds_container_get(b, "fc1.weight")->data, ds_tensor_nbytes(w)), "the same seed gives the same weights");
	ok(memcmp(w->data, ds_container_get(c, "fc1.weight")->data, ds_tensor_nbytes(w)), "another seed gives others");
	g = ds_container_get(a, "bn1.weight");
	v = ds_container_get(a, "bn1.running_var");
	ok(g && v && ((const float *)g->data)[5] == 1.0f && ((const float *)v->data)[31] == 1.0f &&
	   ((const float *)ds_container_get(a, "bn1.bias")->data)[0] == 0.0f &&
	   ((const float *)ds_container_get(a, "bn1.running_mean")->data)[0] == 0.0f,
	   "batchnorm: gamma 1, beta 0, mean 0, var 1");
	ok(ds_container_get(a, "conv1.bias") == NULL, "no conv bias before batchnorm");
	ds_container_free(a);
	ds_container_free(b);
	ds_container_free(c);
	json_decref(pre);
}

static void test_text_and_errors(void)
{
	ds_error err = { 0 };
	json_t *text = json_pack("{s:s, s:{s:s}, s:i}", "kind", "text", "tokenizer", "kind", "bytes", "max_tokens", 100);
	json_t *img = image_pre(1, 28, 28), *tiny = image_pre(1, 2, 2);
	ds_container *c = build("text-bag", text, 5, 1, &err);
	ds_zoo_options o = { .arch = "nope", .classes = 3 };

	if (ok(c != NULL, "text-bag builds on byte tokens")) {
		const ds_tensor *e = ds_container_get(c, "embedding.weight");

		ok(e && e->shape[0] == 256 && e->shape[1] == 64, "embedding [256, 64]");
		check_logits(c, "text-bag", 5);
		ds_container_free(c);
	}
	c = NULL;
	ds_error_clear(&err);
	is_int(ds_zoo_build(&o, &c, &err), DS_ERR_USAGE, "an unknown architecture is a usage error");
	ds_error_clear(&err);
	o.arch = "text-bag";
	o.preprocess = img;
	is_int(ds_zoo_build(&o, &c, &err), DS_ERR_DATA, "text-bag on images is status 3");
	ds_error_clear(&err);
	o.arch = "cnn-small";
	o.preprocess = tiny;
	is_int(ds_zoo_build(&o, &c, &err), DS_ERR_DATA, "cnn-small on 2x2 images is status 3: %s", err.message);
	json_decref(text);
	json_decref(img);
	json_decref(tiny);
}

static int write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -1;
	fputs(text, f);
	return fclose(f);
}

static void test_arch_file(void)
{
	char path[] = "/tmp/test_zoo_XXXXXX.json";
	int fd = mkstemps(path, 5);
	ds_error err = { 0 };
	ds_container *c = NULL;
	ds_zoo_options o = { .arch = path, .classes = 3, .seed = 1 };

	if (fd < 0)
		return;
	close(fd);
	write_file(path,
		   "{\"graph\": {\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 1, 4, 4]}],"
		   " \"nodes\": [{\"op\": \"flatten\", \"name\": \"f\", \"inputs\": [\"x\"], \"outputs\": [\"h\"]},"
		   "  {\"op\": \"linear\", \"name\": \"fc\", \"inputs\": [\"h\", \"fc.weight\", \"fc.bias\"], \"outputs\": [\"logits\"]}],"
		   " \"outputs\": [\"logits\"]},"
		   " \"params\": {\"fc.weight\": {\"shape\": [3, 16], \"init\": \"kaiming_uniform\"},"
		   "  \"fc.bias\": {\"shape\": [3], \"init\": \"zeros\"}}}");
	if (ok(ds_zoo_build(&o, &c, &err) == 0, "an architecture file builds: %s", err.message)) {
		const ds_tensor *w = ds_container_get(c, "fc.weight");
		int in = 1;

		for (int i = 0; w && i < 48; i++)
			in &= fabsf(((const float *)w->data)[i]) <= 0.25f;
		ok(w && in, "kaiming_uniform bound 1/sqrt(16)");
		ok(((const float *)ds_container_get(c, "fc.bias")->data)[2] == 0.0f, "zeros");
		check_logits(c, "file", 3);
		ds_container_free(c);
	}
	c = NULL;
	o.classes = 4;
	ds_error_clear(&err);
	is_int(ds_zoo_build(&o, &c, &err), DS_ERR_DATA, "logits that do not match the classes: status 3");
	write_file(path, "{\"graph\": {\"inputs\": [], \"nodes\": [], \"outputs\": [\"y\"]}, \"params\": {\"w\": {\"shape\": [2], \"init\": \"bogus\"}}}");
	ds_error_clear(&err);
	is_int(ds_zoo_build(&o, &c, &err), DS_ERR_DATA, "an unknown init: status 3");
	write_file(path, "{not json");
	ds_error_clear(&err);
	is_int(ds_zoo_build(&o, &c, &err), DS_ERR_DATA, "bad JSON: status 3");
	unlink(path);
}

/* A stream of n 4x4 gray images in frames of 5, pixel = item index, label
 * = index % 3 (or bad_label at item 7). */
static int write_stream(const char *path, int n, int bad_label)
{
	ds_error err = { 0 };
	ds_writer *w = NULL;

	if (ds_writer_open(path, &w, &err))
		return -1;
	for (int first = 0; first < n; first += 5) {
		int64_t rows = n - first < 5 ? n - first : 5;
		ds_tensor *x = ds_tensor_new(DS_U8, 4, (int64_t[]){ rows, 4, 4, 1 }, DS_CPU, &err);
		ds_tensor *y = ds_tensor_new(DS_I32, 1, &rows, DS_CPU, &err);
		ds_container *c = ds_container_new();
		json_t *labels = json_pack("[s, s, s]", "a", "b", "c");

		for (int64_t r = 0; r < rows; r++) {
			memset((uint8_t *)x->data + r * 16, first + (int)r, 16);
			((int32_t *)y->data)[r] = first + r == 7 && bad_label ? bad_label : (int32_t)((first + r) % 3);
		}
		ds_container_add(c, "x", x, &err);
		ds_container_add(c, "y", y, &err);
		ds_container_meta_set(c, "ds.format", DS_FORMAT_FRAME, &err);
		ds_container_meta_set_json(c, "ds.labels", labels, &err);
		ds_writer_put(w, c, &err);
		ds_container_free(c);
		ds_tensor_unref(x);
		ds_tensor_unref(y);
		json_decref(labels);
	}
	return ds_writer_commit(w, &err);
}

static void order_of(ds_loader *l, int64_t epoch, int *out, int n)
{
	ds_error err = { 0 };
	ds_tensor *x, *y;
	int64_t got;
	int k = 0;

	ds_loader_seek(l, epoch, 0, &err);
	while (ds_loader_next(l, &x, &y, &got, &err) == 0 && got > 0)
		for (int64_t i = 0; i < got && k < n; i++)
			out[k++] = (int)lroundf(((const float *)x->data)[i * 16] * 255.0f);
}

static void test_loader(void)
{
	char path[] = "/tmp/test_zoo_XXXXXX.dst";
	int fd = mkstemps(path, 4);
	ds_error err = { 0 };
	ds_dataset *d = NULL, *v = NULL;
	ds_loader *l = NULL, *l2 = NULL;
	ds_loader_options lo = { .batch = 4, .shuffle = 1, .seed = 3 };
	int a[23], b[23], c[23], seen[23] = { 0 }, all = 1;
	ds_container *m = NULL;
	ds_zoo_options zo = { .arch = "mlp", .classes = 3 };
	json_t *pre = image_pre(1, 4, 4);
	ds_graph *g = NULL;

	if (fd < 0)
		return;
	close(fd);
	write_stream(path, 23, 0);
	if (!ok(ds_dataset_load(path, &d, &err) == 0, "a stream loads: %s", err.message))
		goto out;
	is_int(ds_dataset_count(d), 23, "23 items from 5 frames");
	ok(ds_loader_new(d, &lo, &l, &err) == 0 && ds_loader_new(d, &lo, &l2, &err) == 0, "two loaders");
	is_int(ds_loader_batches(l), 6, "6 batches, the last short");
	order_of(l, 0, a, 23);
	order_of(l2, 0, b, 23);
	order_of(l, 1, c, 23);
	for (int i = 0; i < 23; i++)
		seen[a[i]]++;
	for (int i = 0; i < 23; i++)
		all &= seen[i] == 1;
	ok(all, "an epoch visits every item once");
	ok(!memcmp(a, b, sizeof a), "the same seed and epoch give the same order");
	ok(memcmp(a, c, sizeof a), "the next epoch another");
	order_of(l2, 1, b, 23);
	ok(!memcmp(b, c, sizeof b), "seeking to an epoch gives its order");
	/* A loader's worker reads the data set ahead of the caller: it must
	 * go before the data set is split or freed. */
	ds_loader_free(l);
	ds_loader_free(l2);
	l = l2 = NULL;

	zo.preprocess = pre;
	ok(ds_zoo_build(&zo, &m, &err) == 0 && ds_graph_from_model(m, &g, &err) == 0, "mlp at 4x4");
	ok(g && ds_dataset_check(d, g, 3, &err) == 0, "the data fit mlp at 4x4");
	ds_error_clear(&err);
	is_int(ds_dataset_check(d, g, 2, &err), DS_ERR_DATA, "labels outside 2 classes: status 3");
	ok(strstr(err.message, "frame 0: tensor 'y'") != NULL, "the frame and tensor are named: %s", err.message);
	ds_error_clear(&err);
	ok(ds_dataset_split(d, 0.25, 1, &v, &err) == 0 && ds_dataset_count(v) == 6 && ds_dataset_count(d) == 17,
	   "--val-split 0.25 holds out 6 of 23");
	ds_dataset_free(d);
	d = NULL;
	write_stream(path, 12, 9);
	ds_error_clear(&err);
	if (ds_dataset_load(path, &d, &err) == 0 && g) {
		is_int(ds_dataset_check(d, g, 3, &err), DS_ERR_DATA, "label 9: status 3");
		ok(strstr(err.message, "frame 1: tensor 'y': label 9 of row 2") != NULL, "%s", err.message);
	}
	ds_graph_free(g);
	g = NULL;
	ds_container_free(m);
	m = NULL;
	json_decref(pre);
	pre = image_pre(1, 8, 8);
	zo.preprocess = pre;
	if (ds_zoo_build(&zo, &m, &err) == 0 && ds_graph_from_model(m, &g, &err) == 0) {
		ds_error_clear(&err);
		is_int(ds_dataset_check(d, g, 3, &err), DS_ERR_DATA, "4x4 data for an 8x8 model: status 3");
		ok(strstr(err.message, "tensor 'x'") != NULL, "the tensor is named: %s", err.message);
	}
	ds_dataset_free(d);
	d = NULL;
	write_stream(path, 0, 0);
	ds_error_clear(&err);
	is_int(ds_dataset_load(path, &d, &err), DS_ERR_DATA, "an empty stream: status 3");
out:
	ds_graph_free(g);
	ds_container_free(m);
	json_decref(pre);
	ds_loader_free(l);
	ds_loader_free(l2);
	ds_dataset_free(d);
	ds_dataset_free(v);
	unlink(path);
}

static void test_augment(void)
{
	unsigned a;

	ok(ds_augment_parse("none", &a) == 0 && a == 0, "augment none");
	ok(ds_augment_parse("crop,flip", &a) == 0 && a == (DS_AUGMENT_CROP | DS_AUGMENT_FLIP), "augment crop,flip");
	ok(ds_augment_parse("flip", &a) == 0 && a == DS_AUGMENT_FLIP, "augment flip");
	ok(ds_augment_parse("crop,", &a) != 0 && ds_augment_parse("rotate", &a) != 0, "bad augment lists");
}

int main(void)
{
	test_builtins();
	test_init();
	test_text_and_errors();
	test_arch_file();
	test_loader();
	test_augment();
	return done_testing();
}
