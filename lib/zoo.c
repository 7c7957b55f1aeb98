/* zoo.c - the built-in architectures and JSON architecture files, made into
 * model containers ready to train.
 *
 * A builder appends nodes to the graph JSON and parameters to the container
 * as it walks an architecture, tracking the shape of the current value so
 * that every layer knows its fan-in.  Parameters are initialised as
 * PyTorch's layers are by default, so that a model trained here starts where
 * the same model in PyTorch would: conv2d and linear weights and biases
 * U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5)),
 * batchnorm gamma 1, beta 0, running mean 0, running variance 1; the
 * text-bag embedding U(-1/D, 1/D) as fastText initialises its input matrix.
 * Parameter names follow PyTorch's state_dict ("conv1.weight", "bn1.bias",
 * "bn1.running_mean") so that weights move between the two by name. */
#include "train.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

/* The value a layer reads: its name and shape ([C, H, W] or [F]). */
struct val {
	char name[128];
	int ndim;               /* 3: C, H, W; 1: F */
	int64_t c, h, w;        /* image values */
	int64_t f;              /* flat values */
};

struct zb {
	json_t *nodes;
	ds_container *params;
	ds_rng rng;
	ds_error *err;
	int rc;                 /* the first failure; later calls do nothing */
};

enum init_kind { INIT_UNIFORM, INIT_ZEROS, INIT_ONES, INIT_NORMAL };

static int zb_fail(struct zb *b, int status, const char *code, const char *what)
{
	if (!b->rc)
		b->rc = ds_error_set(b->err, status, code, "%s", what);
	return b->rc;
}

static void zb_param(struct zb *b, const char *name, int ndim, const int64_t *shape,
		     enum init_kind kind, double scale)
{
	ds_tensor *t;
	float *p;
	int64_t n;

	if (b->rc)
		return;
	t = ds_tensor_new(DS_F32, ndim, shape, DS_CPU, b->err);
	if (!t) {
		b->rc = b->err ? b->err->status : DS_ERR_NOMEM;
		return;
	}
	p = t->data;
	n = ds_tensor_numel(t);
	for (int64_t i = 0; i < n; i++) {
		switch (kind) {
		case INIT_UNIFORM: p[i] = (float)((2.0 * ds_rng_uniform(&b->rng) - 1.0) * scale); break;
		case INIT_NORMAL: p[i] = (float)(ds_rng_normal(&b->rng) * scale); break;
		case INIT_ONES: p[i] = 1.0f; break;
		case INIT_ZEROS: p[i] = 0.0f; break;
		}
	}
	b->rc = ds_container_add(b->params, name, t, b->err);
	ds_tensor_unref(t);
}

/* Append {"op", "name", "inputs", "outputs": [name], "attrs"}; attrs stolen. */
static void zb_node(struct zb *b, const char *op, const char *name, const char *const *inputs,
		    json_t *attrs)
{
	json_t *node, *ins = json_array();

	for (size_t i = 0; ins && inputs[i]; i++)
		json_array_append_new(ins, json_string(inputs[i]));
	node = json_pack("{s:s, s:s, s:o, s:[s]}", "op", op, "name", name, "inputs", ins, "outputs", name);
	if (node && attrs)
		json_object_set(node, "attrs", attrs);
	json_decref(attrs);
	if (!node || json_array_append_new(b->nodes, node))
		zb_fail(b, DS_ERR_NOMEM, "out_of_memory", "out of memory");
}

static struct val out_like(const struct val *x, const char *name)
{
	struct val v = *x;

	snprintf(v.name, sizeof v.name, "%s", name);
	return v;
}

static struct val conv(struct zb *b, const struct val *x, const char *name, int64_t cout, int64_t k,
		       int64_t stride, int64_t pad, int64_t groups, int bias)
{
	char wn[128], bn[128];
	int64_t cin_g = x->c / groups, fan_in = cin_g * k * k;
	double bound = 1.0 / sqrt((double)fan_in);
	struct val v = out_like(x, name);

	snprintf(wn, sizeof wn, "%s.weight", name);
	snprintf(bn, sizeof bn, "%s.bias", name);
	zb_param(b, wn, 4, (int64_t[]){ cout, cin_g, k, k }, INIT_UNIFORM, bound);
	if (bias)
		zb_param(b, bn, 1, &cout, INIT_UNIFORM, bound);
	zb_node(b, "conv2d", name, (const char *[]){ x->name, wn, bias ? bn : NULL, NULL },
		json_pack("{s:I, s:I, s:I}", "stride", (json_int_t)stride, "padding", (json_int_t)pad,
			  "groups", (json_int_t)groups));
	v.c = cout;
	v.h = (x->h + 2 * pad - k) / stride + 1;
	v.w = (x->w + 2 * pad - k) / stride + 1;
	if (!b->rc && (v.h < 1 || v.w < 1))
		zb_fail(b, DS_ERR_DATA, "shape_mismatch", "the input is too small for this architecture");
	return v;
}

static struct val batchnorm(struct zb *b, const struct val *x, const char *name)
{
	char g[128], be[128], m[128], var[128];

	snprintf(g, sizeof g, "%s.weight", name);
	snprintf(be, sizeof be, "%s.bias", name);
	snprintf(m, sizeof m, "%s.running_mean", name);
	snprintf(var, sizeof var, "%s.running_var", name);
	zb_param(b, g, 1, &x->c, INIT_ONES, 0);
	zb_param(b, be, 1, &x->c, INIT_ZEROS, 0);
	zb_param(b, m, 1, &x->c, INIT_ZEROS, 0);
	zb_param(b, var, 1, &x->c, INIT_ONES, 0);
	zb_node(b, "batchnorm", name, (const char *[]){ x->name, g, be, m, var, NULL },
		json_pack("{s:f, s:f}", "eps", 1e-5, "momentum", 0.1));
	return out_like(x, name);
}

static struct val act(struct zb *b, const struct val *x, const char *op, const char *name)
{
	zb_node(b, op, name, (const char *[]){ x->name, NULL }, NULL);
	return out_like(x, name);
}

static struct val max_pool(struct zb *b, const struct val *x, const char *name, int64_t k,
			   int64_t stride, int64_t pad)
{
	struct val v = out_like(x, name);

	zb_node(b, "max_pool", name, (const char *[]){ x->name, NULL },
		json_pack("{s:I, s:I, s:I}", "kernel", (json_int_t)k, "stride", (json_int_t)stride,
			  "padding", (json_int_t)pad));
	v.h = (x->h + 2 * pad - k) / stride + 1;
	v.w = (x->w + 2 * pad - k) / stride + 1;
	if (!b->rc && (v.h < 1 || v.w < 1))
		zb_fail(b, DS_ERR_DATA, "shape_mismatch", "the input is too small for this architecture");
	return v;
}

static struct val flatten(struct zb *b, const struct val *x, const char *name)
{
	struct val v = out_like(x, name);

	zb_node(b, "flatten", name, (const char *[]){ x->name, NULL }, json_pack("{s:i}", "axis", 1));
	v.ndim = 1;
	v.f = x->ndim == 3 ? x->c * x->h * x->w : x->f;
	return v;
}

/* Global average pooling straight to [N, C]. */
static struct val pool_flat(struct zb *b, const struct val *x, const char *name)
{
	char pn[128];
	struct val v;

	snprintf(pn, sizeof pn, "%s.pool", name);
	zb_node(b, "global_avg_pool", pn, (const char *[]){ x->name, NULL }, NULL);
	v = out_like(x, pn);
	v.h = v.w = 1;
	return flatten(b, &v, name);
}

static struct val linear(struct zb *b, const struct val *x, const char *name, int64_t out,
			 const char *output)
{
	char wn[128], bn[128];
	double bound = 1.0 / sqrt((double)x->f);
	struct val v = out_like(x, output ? output : name);

	snprintf(wn, sizeof wn, "%s.weight", name);
	snprintf(bn, sizeof bn, "%s.bias", name);
	zb_param(b, wn, 2, (int64_t[]){ out, x->f }, INIT_UNIFORM, bound);
	zb_param(b, bn, 1, &out, INIT_UNIFORM, bound);
	if (!b->rc) {
		json_t *node = json_pack("{s:s, s:s, s:[s, s, s], s:[s]}", "op", "linear", "name", name,
					 "inputs", x->name, wn, bn, "outputs", v.name);

		if (!node || json_array_append_new(b->nodes, node))
			zb_fail(b, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	}
	v.f = out;
	return v;
}

static struct val dropout(struct zb *b, const struct val *x, const char *name, double p)
{
	zb_node(b, "dropout", name, (const char *[]){ x->name, NULL }, json_pack("{s:f}", "p", p));
	return out_like(x, name);
}

static struct val add(struct zb *b, const struct val *x, const struct val *y, const char *name)
{
	zb_node(b, "add", name, (const char *[]){ x->name, y->name, NULL }, NULL);
	return out_like(x, name);
}

/* conv, batchnorm, then an activation (NULL: none). */
static struct val conv_bn(struct zb *b, const struct val *x, const char *conv_name,
			  const char *bn_name, int64_t cout, int64_t k, int64_t stride, int64_t groups,
			  const char *op)
{
	char an[128];
	struct val v = conv(b, x, conv_name, cout, k, stride, k / 2, groups, 0);

	v = batchnorm(b, &v, bn_name);
	if (!op)
		return v;
	snprintf(an, sizeof an, "%s.%s", bn_name, op);
	return act(b, &v, op, an);
}

/* ------------------------------------------------------------ the zoo */

static int input_image(struct zb *b, struct val *x, int64_t *shape)
{
	*x = (struct val){ .ndim = 3, .c = shape[1], .h = shape[2], .w = shape[3] };
	snprintf(x->name, sizeof x->name, "x");
	(void)b;
	return 0;
}

static void build_mlp(struct zb *b, struct val x, int64_t k)
{
	struct val v = flatten(b, &x, "flatten");

	v = linear(b, &v, "fc1", 256, NULL);
	v = act(b, &v, "relu", "relu1");
	v = linear(b, &v, "fc2", 128, NULL);
	v = act(b, &v, "relu", "relu2");
	linear(b, &v, "fc3", k, "logits");
}

/* The reference CNN of issue 4, with batchnorm after each conv for cnn-bn
 * (then without conv biases, which batchnorm would cancel). */
static void build_cnn(struct zb *b, struct val x, int64_t k, int bn)
{
	struct val v = conv(b, &x, "conv1", 32, 3, 1, 1, 1, !bn);

	if (bn)
		v = batchnorm(b, &v, "bn1");
	v = act(b, &v, "relu", "relu1");
	v = max_pool(b, &v, "pool1", 2, 2, 0);
	v = conv(b, &v, "conv2", 64, 3, 1, 1, 1, !bn);
	if (bn)
		v = batchnorm(b, &v, "bn2");
	v = act(b, &v, "relu", "relu2");
	v = max_pool(b, &v, "pool2", 2, 2, 0);
	v = flatten(b, &v, "flatten");
	v = linear(b, &v, "fc1", 128, NULL);
	v = act(b, &v, "relu", "relu3");
	v = dropout(b, &v, "dropout", 0.25);
	linear(b, &v, "fc2", k, "logits");
}

/* torchvision's BasicBlock: 3x3, 3x3, with a 1x1 projection when the shape
 * changes. */
static struct val basic_block(struct zb *b, const struct val *x, const char *p, int64_t planes,
			      int64_t stride)
{
	char n1[128], n2[128], n3[128], n4[128], dn[128], dbn[128], an[128], on[128];
	struct val v, sc = *x;

	snprintf(n1, sizeof n1, "%s.conv1", p);
	snprintf(n2, sizeof n2, "%s.bn1", p);
	snprintf(n3, sizeof n3, "%s.conv2", p);
	snprintf(n4, sizeof n4, "%s.bn2", p);
	snprintf(dn, sizeof dn, "%s.downsample.0", p);
	snprintf(dbn, sizeof dbn, "%s.downsample.1", p);
	snprintf(an, sizeof an, "%s.add", p);
	snprintf(on, sizeof on, "%s.relu", p);
	v = conv_bn(b, x, n1, n2, planes, 3, stride, 1, "relu");
	v = conv_bn(b, &v, n3, n4, planes, 3, 1, 1, NULL);
	if (stride != 1 || x->c != planes) {
		sc = conv(b, x, dn, planes, 1, stride, 0, 1, 0);
		sc = batchnorm(b, &sc, dbn);
	}
	v = add(b, &v, &sc, an);
	return act(b, &v, "relu", on);
}

/* torchvision's Bottleneck (v1.5: the stride on the 3x3). */
static struct val bottleneck(struct zb *b, const struct val *x, const char *p, int64_t planes,
			     int64_t stride)
{
	char c[3][128], n[3][128], dn[128], dbn[128], an[128], on[128];
	struct val v, sc = *x;

	for (int i = 0; i < 3; i++) {
		snprintf(c[i], sizeof c[i], "%s.conv%d", p, i + 1);
		snprintf(n[i], sizeof n[i], "%s.bn%d", p, i + 1);
	}
	snprintf(dn, sizeof dn, "%s.downsample.0", p);
	snprintf(dbn, sizeof dbn, "%s.downsample.1", p);
	snprintf(an, sizeof an, "%s.add", p);
	snprintf(on, sizeof on, "%s.relu", p);
	v = conv_bn(b, x, c[0], n[0], planes, 1, 1, 1, "relu");
	v = conv_bn(b, &v, c[1], n[1], planes, 3, stride, 1, "relu");
	v = conv_bn(b, &v, c[2], n[2], planes * 4, 1, 1, 1, NULL);
	if (stride != 1 || x->c != planes * 4) {
		sc = conv(b, x, dn, planes * 4, 1, stride, 0, 1, 0);
		sc = batchnorm(b, &sc, dbn);
	}
	v = add(b, &v, &sc, an);
	return act(b, &v, "relu", on);
}

static void build_resnet_s(struct zb *b, struct val x, int64_t k)
{
	static const int64_t planes[3] = { 16, 32, 64 };
	struct val v = conv_bn(b, &x, "conv1", "bn1", 16, 3, 1, 1, "relu");

	for (int s = 0; s < 3; s++) {
		for (int i = 0; i < 2; i++) {
			char p[32];

			snprintf(p, sizeof p, "layer%d.%d", s + 1, i);
			v = basic_block(b, &v, p, planes[s], s > 0 && i == 0 ? 2 : 1);
		}
	}
	v = pool_flat(b, &v, "avgpool");
	linear(b, &v, "fc", k, "logits");
}

static void build_resnet(struct zb *b, struct val x, int64_t k, int deep)
{
	static const int blocks18[4] = { 2, 2, 2, 2 }, blocks50[4] = { 3, 4, 6, 3 };
	const int *blocks = deep ? blocks50 : blocks18;
	struct val v = conv(b, &x, "conv1", 64, 7, 2, 3, 1, 0);

	v = batchnorm(b, &v, "bn1");
	v = act(b, &v, "relu", "relu");
	v = max_pool(b, &v, "maxpool", 3, 2, 1);
	for (int s = 0; s < 4; s++) {
		for (int i = 0; i < blocks[s]; i++) {
			char p[32];
			int64_t stride = s > 0 && i == 0 ? 2 : 1;

			snprintf(p, sizeof p, "layer%d.%d", s + 1, i);
			v = deep ? bottleneck(b, &v, p, (int64_t)64 << s, stride)
				 : basic_block(b, &v, p, (int64_t)64 << s, stride);
		}
	}
	v = pool_flat(b, &v, "avgpool");
	linear(b, &v, "fc", k, "logits");
}

/* MobileNetV2's inverted residual: 1x1 expand (skipped at t = 1), 3x3
 * depthwise, 1x1 linear projection; a residual when shapes match. */
static struct val inverted_residual(struct zb *b, const struct val *x, const char *p, int64_t t,
				    int64_t cout, int64_t stride)
{
	char n[6][128], an[128];
	struct val v = *x;
	int64_t hidden = x->c * t;
	int i = 0;

	for (int j = 0; j < 6; j++)
		snprintf(n[j], sizeof n[j], "%s.conv.%d", p, j);
	if (t != 1) {
		v = conv_bn(b, &v, n[0], n[1], hidden, 1, 1, 1, "relu6");
		i = 2;
	}
	v = conv_bn(b, &v, n[i], n[i + 1], hidden, 3, stride, hidden, "relu6");
	v = conv_bn(b, &v, n[i + 2], n[i + 3], cout, 1, 1, 1, NULL);
	if (stride == 1 && x->c == cout) {
		snprintf(an, sizeof an, "%s.add", p);
		v = add(b, &v, x, an);
	}
	return v;
}

struct ir_setting {
	int64_t t, c, n, s;
};

static void build_mobilenet(struct zb *b, struct val x, int64_t k, const struct ir_setting *set,
			    size_t n_set, int64_t stem, int64_t stem_stride, int64_t last, double drop)
{
	struct val v = conv_bn(b, &x, "features.0.0", "features.0.1", stem, 3, stem_stride, 1, "relu6");
	int f = 1;

	for (size_t s = 0; s < n_set; s++) {
		for (int64_t i = 0; i < set[s].n; i++) {
			char p[32];

			snprintf(p, sizeof p, "features.%d", f++);
			v = inverted_residual(b, &v, p, set[s].t, set[s].c, i == 0 ? set[s].s : 1);
		}
	}
	{
		char c[32], nb[32];

		snprintf(c, sizeof c, "features.%d.0", f);
		snprintf(nb, sizeof nb, "features.%d.1", f);
		v = conv_bn(b, &v, c, nb, last, 1, 1, 1, "relu6");
	}
	v = pool_flat(b, &v, "avgpool");
	if (drop > 0)
		v = dropout(b, &v, "classifier.0", drop);
	linear(b, &v, "classifier.1", k, "logits");
}

static void build_mobilenet_s(struct zb *b, struct val x, int64_t k)
{
	static const struct ir_setting set[] = {
		{ 1, 16, 1, 1 }, { 4, 24, 2, 2 }, { 4, 32, 2, 2 }, { 4, 64, 2, 2 },
	};

	build_mobilenet(b, x, k, set, DS_ARRAY_LEN(set), 16, 1, 128, 0.0);
}

static void build_mobilenet_v2(struct zb *b, struct val x, int64_t k)
{
	static const struct ir_setting set[] = {
		{ 1, 16, 1, 1 }, { 6, 24, 2, 2 }, { 6, 32, 3, 2 }, { 6, 64, 4, 2 },
		{ 6, 96, 3, 1 }, { 6, 160, 3, 2 }, { 6, 320, 1, 1 },
	};

	build_mobilenet(b, x, k, set, DS_ARRAY_LEN(set), 32, 2, 1280, 0.2);
}

/* fastText: the mean of the embeddings of a row's ids (word and character
 * n-gram buckets; -1 pads) into a linear classifier.  The table's gradient
 * is row-sparse: a step touches a few thousand of its million rows. */
static void build_text_bag(struct zb *b, int64_t vocab, int64_t k)
{
	const int64_t dim = 64;
	struct val v = { .ndim = 1, .f = dim };

	zb_param(b, "embedding.weight", 2, (int64_t[]){ vocab, dim }, INIT_UNIFORM, 1.0 / (double)dim);
	zb_node(b, "embedding_bag", "embedding", (const char *[]){ "x", "embedding.weight", NULL },
		json_pack("{s:s, s:b}", "mode", "mean", "sparse", 1));
	snprintf(v.name, sizeof v.name, "embedding");
	linear(b, &v, "fc", k, "logits");
}

struct arch {
	const char *name;
	int text;                /* takes token ids */
	int imagenet;            /* default input 3x224x224 rather than 1x28x28 */
	const char *about;
};

static const struct arch archs[] = {
	{ "mlp", 0, 0, "flatten, linear 256, relu, linear 128, relu, linear K" },
	{ "cnn-small", 0, 0, "2 x (conv3x3 32/64, relu, maxpool 2), linear 128, relu, dropout 0.25, linear K" },
	{ "cnn-bn", 0, 0, "cnn-small with batchnorm after each convolution" },
	{ "resnet-s", 0, 0, "ResNet for 28-32 px: 3 stages of 2 basic blocks, 16/32/64 channels" },
	{ "mobilenet-s", 0, 0, "small MobileNetV2: inverted residuals with depthwise convolutions, relu6" },
	{ "resnet18", 0, 1, "ResNet-18 (torchvision layout)" },
	{ "resnet50", 0, 1, "ResNet-50 with bottleneck blocks (torchvision layout)" },
	{ "mobilenet-v2", 0, 1, "MobileNetV2 (torchvision layout)" },
	{ "text-bag", 1, 0, "fastText-style mean of token embeddings (dim 64), linear K" },
};

const char *const *ds_zoo_names(void)
{
	static const char *names[DS_ARRAY_LEN(archs) + 1];

	for (size_t i = 0; i < DS_ARRAY_LEN(archs); i++)
		names[i] = archs[i].name;
	names[DS_ARRAY_LEN(archs)] = NULL;
	return names;
}

const char *ds_zoo_describe(const char *name)
{
	for (size_t i = 0; i < DS_ARRAY_LEN(archs); i++)
		if (!strcmp(archs[i].name, name))
			return archs[i].about;
	return NULL;
}

static int pre_int(const json_t *pre, const char *key, int64_t *out)
{
	const json_t *v = pre ? json_object_get(pre, key) : NULL;

	if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > ((int64_t)1 << 24))
		return -1;
	*out = json_integer_value(v);
	return 0;
}

static const char *pre_kind(const json_t *pre)
{
	const json_t *k = pre ? json_object_get(pre, "kind") : NULL;

	return json_is_string(k) ? json_string_value(k) : NULL;
}

/* The vocabulary and row length of text data, from its tokenizer. */
static int text_shape(const json_t *pre, int64_t *vocab, int64_t *len, ds_error *err)
{
	ds_tokenizer *tok = NULL;
	json_t *spec = pre ? json_object_get(pre, "tokenizer") : NULL;
	json_t *bytes = NULL;
	int rc;

	if (!spec)
		spec = bytes = json_pack("{s:s}", "kind", "bytes");
	rc = ds_tokenizer_new(spec, &tok, err);
	json_decref(bytes);
	if (rc)
		return rc;
	*vocab = ds_tokenizer_vocab(tok);
	ds_tokenizer_free(tok);
	if (pre_int(pre, "max_tokens", len))
		*len = 1024;
	return 0;
}

static int build_builtin(const struct arch *a, const ds_zoo_options *o, int64_t k, struct zb *b,
			 json_t **inputs, ds_error *err)
{
	const char *kind = pre_kind(o->preprocess);
	int64_t shape[4] = { -1, 1, 28, 28 };
	struct val x;

	if (a->imagenet) {
		shape[1] = 3;
		shape[2] = shape[3] = 224;
	}
	if (a->text) {
		int64_t vocab, len;
		int rc;

		if (kind && strcmp(kind, "text"))
			return ds_error_set(err, DS_ERR_DATA, "arch_mismatch",
					    "architecture '%s' takes text, the data are '%s'", a->name, kind);
		if ((rc = text_shape(o->preprocess, &vocab, &len, err)))
			return rc;
		*inputs = json_pack("[{s:s, s:s, s:[I, I]}]", "name", "x", "dtype", "I32", "shape",
				    (json_int_t)-1, (json_int_t)len);
		build_text_bag(b, vocab, k);
		return b->rc;
	}
	if (kind && strcmp(kind, "image"))
		return ds_error_set(err, DS_ERR_DATA, "arch_mismatch",
				    "architecture '%s' takes images, the data are '%s'", a->name, kind);
	if (o->preprocess && (pre_int(o->preprocess, "channels", &shape[1]) ||
			      pre_int(o->preprocess, "height", &shape[2]) ||
			      pre_int(o->preprocess, "width", &shape[3])))
		return ds_error_set(err, DS_ERR_DATA, "bad_metadata",
				    "ds.preprocess: an image needs channels, height and width");
	*inputs = json_pack("[{s:s, s:s, s:[I, I, I, I]}]", "name", "x", "dtype", "F32", "shape",
			    (json_int_t)-1, (json_int_t)shape[1], (json_int_t)shape[2], (json_int_t)shape[3]);
	input_image(b, &x, shape);
	if (!strcmp(a->name, "mlp"))
		build_mlp(b, x, k);
	else if (!strcmp(a->name, "cnn-small"))
		build_cnn(b, x, k, 0);
	else if (!strcmp(a->name, "cnn-bn"))
		build_cnn(b, x, k, 1);
	else if (!strcmp(a->name, "resnet-s"))
		build_resnet_s(b, x, k);
	else if (!strcmp(a->name, "mobilenet-s"))
		build_mobilenet_s(b, x, k);
	else if (!strcmp(a->name, "resnet18"))
		build_resnet(b, x, k, 0);
	else if (!strcmp(a->name, "resnet50"))
		build_resnet(b, x, k, 1);
	else
		build_mobilenet_v2(b, x, k);
	if (b->rc && !strcmp(err ? err->code : "", "shape_mismatch"))
		ds_error_prefix(err, "architecture '%s': input [%" PRId64 ", %" PRId64 ", %" PRId64 "]: ",
				a->name, shape[1], shape[2], shape[3]);
	return b->rc;
}

/* ------------------------------------------------- architecture files */

/* One "params" entry: {"shape": [...], "init": kind, "fan_in", "bound", "std"}. */
static int file_param(struct zb *b, const char *path, const char *name, const json_t *spec,
		      ds_error *err)
{
	static const char *const kinds[] = { "kaiming_uniform", "uniform", "normal", "zeros", "ones", NULL };
	const json_t *shape = json_object_get(spec, "shape");
	const json_t *init = json_object_get(spec, "init");
	int64_t dims[DS_MAX_DIMS], fan_in = 1;
	const char *kind = json_is_string(init) ? json_string_value(init) : init ? "" : "kaiming_uniform";
	size_t ndim, k;

	if (!json_is_object(spec) || !json_is_array(shape) || (ndim = json_array_size(shape)) > DS_MAX_DIMS)
		return ds_error_set(err, DS_ERR_DATA, "bad_arch",
				    "%s: params: '%s': expected {\"shape\": [dims], \"init\": ...}", path, name);
	for (size_t d = 0; d < ndim; d++) {
		const json_t *v = json_array_get(shape, d);

		if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > ((int64_t)1 << 32))
			return ds_error_set(err, DS_ERR_DATA, "bad_arch",
					    "%s: params: '%s': shape entry %zu is not a positive integer", path, name, d);
		dims[d] = json_integer_value(v);
		if (d > 0)
			fan_in *= dims[d];
	}
	for (k = 0; kinds[k] && strcmp(kinds[k], kind); k++)
		;
	if (!kinds[k])
		return ds_error_set(err, DS_ERR_DATA, "bad_arch",
				    "%s: params: '%s': init is not kaiming_uniform, uniform, normal, zeros or ones",
				    path, name);
	if (json_is_integer(json_object_get(spec, "fan_in")))
		fan_in = json_integer_value(json_object_get(spec, "fan_in"));
	if (fan_in < 1)
		return ds_error_set(err, DS_ERR_DATA, "bad_arch", "%s: params: '%s': fan_in must be positive",
				    path, name);
	switch (k) {
	case 0: zb_param(b, name, (int)ndim, dims, INIT_UNIFORM, 1.0 / sqrt((double)fan_in)); break;
	case 1: zb_param(b, name, (int)ndim, dims, INIT_UNIFORM,
			 json_number_value(json_object_get(spec, "bound"))); break;
	case 2: {
		const json_t *std = json_object_get(spec, "std");

		zb_param(b, name, (int)ndim, dims, INIT_NORMAL, std ? json_number_value(std) : 1.0);
		break;
	}
	case 3: zb_param(b, name, (int)ndim, dims, INIT_ZEROS, 0); break;
	default: zb_param(b, name, (int)ndim, dims, INIT_ONES, 0); break;
	}
	return b->rc;
}

static int build_file(const char *path, struct zb *b, json_t **graph, ds_error *err)
{
	json_error_t jerr;
	json_t *root = NULL, *params;
	const char *name;
	json_t *spec;
	void *buf = NULL;
	size_t len;
	int rc;

	if ((rc = ds_file_read(path, 64u << 20, &buf, &len, err)))
		return rc;
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	free(buf);
	if (!json_is_object(root) || !json_is_object(json_object_get(root, "graph"))) {
		rc = ds_error_set(err, DS_ERR_DATA, "bad_arch",
				  root ? "%s: expected an object with \"graph\" and \"params\""
				       : "%s: line %d: %s", path, jerr.line, jerr.text);
		goto out;
	}
	json_object_foreach(root, name, spec) {
		if (strcmp(name, "graph") && strcmp(name, "params")) {
			rc = ds_error_set(err, DS_ERR_DATA, "bad_arch", "%s: unknown key '%s'", path, name);
			goto out;
		}
	}
	params = json_object_get(root, "params");
	if (params && !json_is_object(params)) {
		rc = ds_error_set(err, DS_ERR_DATA, "bad_arch", "%s: params: expected an object", path);
		goto out;
	}
	json_object_foreach(params, name, spec)
		if ((rc = file_param(b, path, name, spec, err)))
			goto out;
	*graph = json_incref(json_object_get(root, "graph"));
out:
	json_decref(root);
	return rc;
}

/* ------------------------------------------------------------ build */

int ds_zoo_build(const ds_zoo_options *o, ds_container **out, ds_error *err)
{
	struct zb b = { .err = err };
	const struct arch *a = NULL;
	json_t *graph = NULL, *inputs = NULL, *labels = NULL;
	ds_graph *g = NULL;
	const ds_shape *ls;
	char *text = NULL;
	int64_t k = o->labels ? (int64_t)json_array_size(o->labels) : o->classes;
	size_t alen = o->arch ? strlen(o->arch) : 0;
	int rc = 0;

	*out = NULL;
	for (size_t i = 0; o->arch && i < DS_ARRAY_LEN(archs); i++)
		if (!strcmp(archs[i].name, o->arch))
			a = &archs[i];
	if (!a && (alen < 5 || strcmp(o->arch + alen - 5, ".json")))
		return ds_error_set(err, DS_ERR_USAGE, "usage",
				    "--arch: '%s' is neither a built-in architecture nor a .json file",
				    o->arch ? o->arch : "");
	if (k < 1 || k > ((int64_t)1 << 24))
		return ds_error_set(err, DS_ERR_DATA, "no_labels",
				    "the data name no classes (ds.labels), so there is nothing to classify");
	b.params = ds_container_new();
	b.nodes = json_array();
	if (!b.params || !b.nodes) {
		rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		goto out;
	}
	ds_rng_seed(&b.rng, o->seed);
	if (a) {
		if ((rc = build_builtin(a, o, k, &b, &inputs, err)))
			goto out;
		graph = json_pack("{s:O, s:O, s:[s]}", "inputs", inputs, "nodes", b.nodes, "outputs", "logits");
	} else if ((rc = build_file(o->arch, &b, &graph, err))) {
		goto out;
	}
	if (!graph || !(text = json_dumps(graph, JSON_COMPACT))) {
		rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		goto out;
	}
	if ((rc = ds_graph_parse(text, b.params, &g, err))) {
		if (!a)
			ds_error_prefix(err, "%s: ", o->arch);
		goto out;
	}
	/* The trainer reads the first output as the logits. */
	ls = ds_graph_shape(g, ds_graph_output_name(g, 0));
	if (!ls || ls->ndim != 2 || ls->dim[1] != k) {
		rc = ds_error_set(err, DS_ERR_DATA, "arch_mismatch",
				  "%s: the first output '%s' is not [N, %" PRId64 "] logits for the %" PRId64 " classes",
				  o->arch, ds_graph_output_name(g, 0), k, k);
		goto out;
	}
	if (!o->labels) {
		labels = json_array();
		for (int64_t i = 0; labels && i < k; i++) {
			char num[24];

			snprintf(num, sizeof num, "%" PRId64, i);
			json_array_append_new(labels, json_string(num));
		}
	}
	if ((rc = ds_container_meta_set(b.params, "ds.format", DS_FORMAT_MODEL, err)) ||
	    (rc = ds_container_meta_set(b.params, "ds.graph", text, err)) ||
	    (rc = ds_container_meta_set_json(b.params, "ds.labels", o->labels ? o->labels : labels, err)))
		goto out;
	if (o->preprocess && (rc = ds_container_meta_set_json(b.params, "ds.preprocess", o->preprocess, err)))
		goto out;
	*out = b.params;
	b.params = NULL;
out:
	ds_graph_free(g);
	free(text);
	json_decref(labels);
	json_decref(graph);
	json_decref(inputs);
	json_decref(b.nodes);
	ds_container_free(b.params);
	return rc;
}
