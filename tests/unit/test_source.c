/* test_source.c - data sources: folder walks (order, labels, hidden files,
 * symlink loops, odd names, size limits), IDX pairs plain and gzipped, JSON
 * Lines, fortune files, .dst streams, --files-from, kind sniffing, and the
 * Fashion-MNIST files when Debian's package is installed. */
#include "config.h"
#include "ds.h"
#include "tap.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

static char tmp[256];

static const char *at(const char *rel)
{
	static char bufs[8][1024];
	static int next;
	char *p = bufs[next++ % 8];

	snprintf(p, sizeof bufs[0], "%s/%s", tmp, rel);
	return p;
}

static void put(const char *rel, const void *data, size_t len)
{
	FILE *f = fopen(at(rel), "wb");

	if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
		printf("Bail out! cannot write %s\n", at(rel));
		exit(1);
	}
}

static void put_text(const char *rel, const char *text)
{
	put(rel, text, strlen(text));
}

static void make_dir(const char *rel)
{
	if (mkdir(at(rel), 0755) != 0) {
		printf("Bail out! cannot make %s\n", at(rel));
		exit(1);
	}
}

static const unsigned char png_magic[] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13 };
static const unsigned char jpeg_magic[] = { 0xff, 0xd8, 0xff, 0xe0, 0, 16, 'J', 'F', 'I', 'F' };

/* The id of item i relative to the temporary folder, for short checks. */
static const char *rel_id(const ds_item_list *l, size_t i)
{
	const char *id;
	size_t n = strlen(tmp);

	if (i >= l->count)
		return "(missing)";
	id = l->items[i]->id;
	return strncmp(id, tmp, n) == 0 && id[n] == '/' ? id + n + 1 : id;
}

static const char *label_of(const ds_item_list *l, size_t i)
{
	return i < l->count && l->items[i]->label ? l->items[i]->label : "(none)";
}

static int kind_of(const ds_item_list *l, size_t i)
{
	return i < l->count ? (int)l->items[i]->kind : -1;
}

static const char *code_of(const ds_item_list *l, size_t i)
{
	return i < l->count ? l->items[i]->code : "(missing)";
}

/* -------------------------------------------------------------- walks */

static void test_walk(void)
{
	ds_source_options opts = { NULL, NULL, 1, 1000 };
	ds_item_list l = { 0 };
	ds_error err = { 0 };
	char big[2000];
	int rc;

	memset(big, 7, sizeof big);
	make_dir("tree");
	make_dir("tree/cat");
	make_dir("tree/dog");
	make_dir("tree/dog/sub");
	make_dir("tree/.cache");
	put("tree/cat/a.png", png_magic, sizeof png_magic);
	put("tree/cat/b.jpg", jpeg_magic, sizeof jpeg_magic);
	put("tree/cat/new\nline.png", png_magic, sizeof png_magic);
	put("tree/cat/\xff\xfe.png", png_magic, sizeof png_magic);
	put_text("tree/cat/notes.txt", "a text file in a class folder\n");
	put("tree/cat/fortunes.dat", big, 16);
	put("tree/cat/.hidden.png", png_magic, sizeof png_magic);
	put("tree/.cache/x.png", png_magic, sizeof png_magic);
	put("tree/dog/big.png", big, sizeof big);
	put("tree/dog/c.png", png_magic, sizeof png_magic);
	put("tree/dog/sub/d.png", png_magic, sizeof png_magic);
	put("tree/top.png", png_magic, sizeof png_magic);
	if (symlink("..", at("tree/dog/sub/loop")) != 0 || symlink("self", at("tree/dog/sub/self")) != 0)
		printf("Bail out! symlink\n"), exit(1);

	rc = ds_source_list(at("tree"), &opts, &l, &err);
	is_int(rc, 0, "walk: lists the tree (%s)", err.message);
	is_int(l.count, 11, "walk: 11 items");
	is_str(rel_id(&l, 0), "tree/cat/a.png", "walk: sorted, class folders first");
	is_str(label_of(&l, 0), "cat", "walk: label from the folder");
	is_int(kind_of(&l, 0), DS_ITEM_FILE, "walk: image is a file item");
	ok(l.count > 0 && l.items[0]->path && strcmp(l.items[0]->path, l.items[0]->id) == 0, "walk: path is the id");
	is_int(l.count > 0 ? l.items[0]->file_bytes : 0, sizeof png_magic, "walk: file_bytes from stat");
	is_str(rel_id(&l, 1), "tree/cat/b.jpg", "walk: b.jpg second");
	is_str(rel_id(&l, 2), "tree/cat/new\nline.png", "walk: newline name kept as is");
	is_str(rel_id(&l, 3), "tree/cat/notes.txt", "walk: text file in a class folder");
	is_int(kind_of(&l, 3), DS_ITEM_FILE, "walk: .txt is one file item");
	is_str(label_of(&l, 3), "cat", "walk: .txt labelled by its folder");
	is_str(rel_id(&l, 4), "tree/cat/\xff\xfe.png", "walk: non-UTF-8 name kept, sorted bytewise last");
	is_str(rel_id(&l, 5), "tree/dog/big.png", "walk: big file listed");
	is_int(kind_of(&l, 5), DS_ITEM_ERROR, "walk: big file is an error item");
	is_str(code_of(&l, 5), "too_large", "walk: code too_large");
	is_str(label_of(&l, 5), "dog", "walk: error item keeps its label");
	is_str(rel_id(&l, 6), "tree/dog/c.png", "walk: dog/c.png");
	is_str(rel_id(&l, 7), "tree/dog/sub/d.png", "walk: nested file");
	is_str(label_of(&l, 7), "dog", "walk: nested file takes the first folder as label");
	is_str(rel_id(&l, 8), "tree/dog/sub/loop", "walk: loop entry reported");
	is_str(code_of(&l, 8), "symlink_loop", "walk: loop through a symlink detected");
	is_str(rel_id(&l, 9), "tree/dog/sub/self", "walk: self-referencing symlink reported");
	is_str(code_of(&l, 9), "symlink_loop", "walk: ELOOP is a symlink loop");
	is_str(rel_id(&l, 10), "tree/top.png", "walk: top-level file last");
	is_str(label_of(&l, 10), "(none)", "walk: top-level file unlabelled");

	rc = ds_item_list_classes(&l, &err);
	is_int(rc, 0, "classes: computed");
	is_int(l.class_count, 2, "classes: two");
	ok(l.class_count == 2 && !strcmp(l.classes[0], "cat") && !strcmp(l.classes[1], "dog"), "classes: cat, dog");
	ds_item_list_free(&l);
	is_int(l.count, 0, "list free resets the list");

	opts.labels_from_dirs = 0;
	opts.max_bytes = 0;
	rc = ds_source_list(at("tree/"), &opts, &l, &err);
	is_int(rc, 0, "walk without labels: ok");
	is_str(label_of(&l, 0), "(none)", "walk without labels: unlabelled");
	is_str(rel_id(&l, 0), "tree/cat/a.png", "walk: a trailing slash gives no double slash");
	is_int(kind_of(&l, 5), DS_ITEM_FILE, "walk without max_bytes: big file kept");
	ds_item_list_classes(&l, &err);
	is_int(l.class_count, 0, "walk without labels: no classes");
	ds_item_list_free(&l);

	if (geteuid() == 0) {
		ok(1, "# skip unreadable entries: running as root, chmod 000 does not deny");
		ok(1, "# skip unreadable entries: running as root");
	} else {
		make_dir("locked");
		make_dir("locked/shut");
		put("locked/secret.png", png_magic, sizeof png_magic);
		chmod(at("locked/shut"), 0);
		chmod(at("locked/secret.png"), 0);
		rc = ds_source_list(at("locked"), NULL, &l, &err);
		ok(rc == 0 && l.count == 2 && !strcmp(code_of(&l, 0), "unreadable"), "unreadable file is an error item");
		ok(l.count == 2 && !strcmp(code_of(&l, 1), "unreadable"), "unreadable folder is an error item");
		chmod(at("locked/shut"), 0755);
		ds_item_list_free(&l);
	}

	ds_error_clear(&err);
	rc = ds_source_list(at("no-such-folder"), NULL, &l, &err);
	is_int(rc, DS_ERR_IO, "missing input: status 5");
	ok(strstr(err.message, "no-such-folder") != NULL, "missing input: message names it");
	ds_item_list_free(&l);
}

/* ---------------------------------------------------------------- IDX */

static void be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

/* An IDX pair of n images of rows x cols; image i is filled with i + 1, its
 * label is (i * 3) % 10.  drop cuts bytes off the image file's end. */
static void put_idx(const char *images, const char *labels, uint32_t n, uint32_t rows, uint32_t cols,
		    int gz, size_t drop, uint32_t label_count)
{
	size_t ilen = 16 + (size_t)n * rows * cols, llen = 8 + label_count;
	unsigned char *img = calloc(1, ilen), *lab = calloc(1, llen);

	be32(img, 0x803), be32(img + 4, n), be32(img + 8, rows), be32(img + 12, cols);
	for (uint32_t i = 0; i < n; i++)
		memset(img + 16 + (size_t)i * rows * cols, (int)(i + 1), (size_t)rows * cols);
	be32(lab, 0x801), be32(lab + 4, label_count);
	for (uint32_t i = 0; i < label_count; i++)
		lab[8 + i] = (unsigned char)((i * 3) % 10);
	if (gz) {
		gzFile g = gzopen(at(images), "wb");

		gzwrite(g, img, (unsigned)(ilen - drop));
		gzclose(g);
		g = gzopen(at(labels), "wb");
		gzwrite(g, lab, (unsigned)llen);
		gzclose(g);
	} else {
		put(images, img, ilen - drop);
		put(labels, lab, llen);
	}
	free(img);
	free(lab);
}

static void test_idx(void)
{
	ds_item_list l = { 0 };
	ds_error err = { 0 };
	const char *const *names;
	size_t count;
	int rc;

	make_dir("idx");
	put_idx("idx/train-images-idx3-ubyte", "idx/train-labels-idx1-ubyte", 5, 3, 2, 0, 0, 5);
	put_idx("idx/t10k-images-idx3-ubyte.gz", "idx/t10k-labels-idx1-ubyte.gz", 4, 3, 2, 1, 0, 4);
	is_int(ds_file_kind_of(at("idx/train-images-idx3-ubyte")), DS_FILE_IDX, "idx: kind by name");
	is_int(ds_file_kind_of(at("idx/t10k-images-idx3-ubyte.gz")), DS_FILE_IDX, "idx: gz kind by name");

	rc = ds_source_list(at("idx"), NULL, &l, &err);
	is_int(rc, 0, "idx folder: listed (%s)", err.message);
	is_int(l.count, 9, "idx folder: both pairs, label files consumed");
	is_str(rel_id(&l, 0), "t10k-images-idx3-ubyte.gz#0", "idx: gz pair first, id file#index");
	is_str(rel_id(&l, 4), "train-images-idx3-ubyte#0", "idx: plain pair second");
	is_int(kind_of(&l, 1), DS_ITEM_PIXELS, "idx: pixels item");
	ok(l.count > 1 && l.items[1]->width == 2 && l.items[1]->height == 3 && l.items[1]->channels == 1,
	   "idx: width cols, height rows, one channel");
	ok(l.count > 1 && l.items[1]->len == 6 && ((unsigned char *)l.items[1]->data)[5] == 2, "idx: row copied");
	is_str(label_of(&l, 1), "3", "idx: label as a decimal index");
	is_str(label_of(&l, 8), "2", "idx: last label (4*3 %% 10)");
	ok(l.count == 9 && ((unsigned char *)l.items[8]->data)[0] == 5, "idx: last image's pixels");
	ds_item_list_free(&l);

	rc = ds_source_list(at("idx/t10k-images-idx3-ubyte.gz"), NULL, &l, &err);
	ok(rc == 0 && l.count == 4, "idx: images file named directly finds its labels");
	ds_item_list_free(&l);

	names = ds_idx_class_names("/x/fashion-mnist/train-images-idx3-ubyte.gz", &count);
	ok(names && count == 10 && !strcmp(names[0], "T-shirt/top") && !strcmp(names[9], "Ankle boot"),
	   "idx: Fashion-MNIST class names");
	ok(ds_idx_class_names(at("idx/train-images-idx3-ubyte"), &count) == NULL && count == 0,
	   "idx: no names elsewhere");
	make_dir("Fashion");
	put_idx("Fashion/train-images-idx3-ubyte", "Fashion/train-labels-idx1-ubyte", 3, 1, 1, 0, 0, 3);
	rc = ds_source_list(at("Fashion"), NULL, &l, &err);
	ok(rc == 0 && l.count == 3, "idx fashion: listed");
	is_str(label_of(&l, 1), "Dress", "idx fashion: label 3 is Dress");
	ds_item_list_free(&l);

	make_dir("bad");
	put_idx("bad/cut-images-idx3-ubyte", "bad/cut-labels-idx1-ubyte", 5, 3, 2, 0, 1, 5);
	rc = ds_source_list(at("bad/cut-images-idx3-ubyte"), NULL, &l, &err);
	is_int(rc, DS_ERR_DATA, "idx truncated: status 3");
	is_str(err.code, "truncated", "idx truncated: code");
	ok(strstr(err.message, "cut-images-idx3-ubyte") != NULL, "idx truncated: names the file");
	ds_item_list_free(&l);
	ds_error_clear(&err);

	put_idx("bad/gzcut-images-idx3-ubyte.gz", "bad/gzcut-labels-idx1-ubyte.gz", 5, 3, 2, 1, 3, 5);
	rc = ds_source_list(at("bad/gzcut-images-idx3-ubyte.gz"), NULL, &l, &err);
	is_int(rc, DS_ERR_DATA, "idx gz truncated: status 3 (%s)", err.message);
	ds_item_list_free(&l);
	ds_error_clear(&err);

	put_idx("bad/few-images-idx3-ubyte", "bad/few-labels-idx1-ubyte", 5, 3, 2, 0, 0, 4);
	rc = ds_source_list(at("bad/few-images-idx3-ubyte"), NULL, &l, &err);
	is_int(rc, DS_ERR_DATA, "idx label count mismatch: status 3");
	ok(strstr(err.message, "4 labels") != NULL, "idx label count: message says so (%s)", err.message);
	ds_item_list_free(&l);
	ds_error_clear(&err);

	/* Inside a walk, a broken file is an error item and the walk goes on. */
	rc = ds_source_list(at("bad"), NULL, &l, &err);
	is_int(rc, 0, "idx walk with broken files: ok");
	is_int(l.count, 3, "idx walk: three error items");
	is_str(code_of(&l, 0), "truncated", "idx walk: truncated file's item code");
	ds_item_list_free(&l);
}

/* --------------------------------------------------------------- text */

static void test_jsonl(void)
{
	ds_source_options opts = { NULL, NULL, 1, 0 };
	ds_item_list l = { 0 };
	ds_error err = { 0 };
	int rc;

	put_text("data.jsonl",
		 "{\"text\":\"hello\",\"label\":\"en\"}\n"
		 "{\"text\":\"bonjour\",\"label\":2}\r\n"
		 "{not json\n"
		 "{\"label\":\"x\"}\n"
		 "   \n"
		 "{\"text\":\"no label\",\"label\":null}\n"
		 "[1,2]\n"
		 "{\"text\":\"bad label\",\"label\":1.5}\n"
		 "{\"text\":\"nul\\u0000inside\"}");
	rc = ds_source_list(at("data.jsonl"), &opts, &l, &err);
	is_int(rc, 0, "jsonl: listed");
	is_int(l.count, 8, "jsonl: eight items, the blank line skipped");
	is_str(rel_id(&l, 0), "data.jsonl:1", "jsonl: id file:line");
	is_int(kind_of(&l, 0), DS_ITEM_TEXT, "jsonl: text item");
	ok(l.count && l.items[0]->len == 5 && !memcmp(l.items[0]->data, "hello", 5), "jsonl: text bytes");
	is_str(label_of(&l, 0), "en", "jsonl: string label");
	is_str(label_of(&l, 1), "2", "jsonl: integer label as text");
	ok(l.count > 1 && l.items[1]->len == 7, "jsonl: CRLF stripped");
	is_str(code_of(&l, 2), "bad_record", "jsonl: bad JSON is bad_record");
	ok(l.count > 2 && strstr(l.items[2]->message, "line 3") != NULL, "jsonl: message has the line (%s)",
	   l.count > 2 ? l.items[2]->message : "");
	is_str(code_of(&l, 3), "bad_record", "jsonl: missing text is bad_record");
	is_str(rel_id(&l, 4), "data.jsonl:6", "jsonl: line numbers count blank lines");
	is_str(label_of(&l, 4), "(none)", "jsonl: null label is no label");
	is_str(code_of(&l, 5), "bad_record", "jsonl: an array is bad_record");
	is_str(code_of(&l, 6), "bad_record", "jsonl: a float label is bad_record");
	ok(l.count > 7 && l.items[7]->len == 10 && !memcmp(l.items[7]->data, "nul\0inside", 10),
	   "jsonl: a NUL inside the text is kept");
	ds_item_list_free(&l);

	put_text("other.ndjson", "{\"body\":\"x\",\"lang\":\"de\"}\n{\"text\":\"y\"}\n");
	opts.text_field = "body";
	opts.label_field = "lang";
	rc = ds_source_list(at("other.ndjson"), &opts, &l, &err);
	ok(rc == 0 && l.count == 2, "jsonl fields: listed");
	is_str(label_of(&l, 0), "de", "jsonl fields: custom label field");
	is_int(kind_of(&l, 0), DS_ITEM_TEXT, "jsonl fields: custom text field");
	is_str(code_of(&l, 1), "bad_record", "jsonl fields: default field name no longer used");
	ds_item_list_free(&l);
}

static void test_fortune(void)
{
	ds_source_options opts = { NULL, NULL, 1, 0 };
	ds_item_list l = { 0 };
	ds_error err = { 0 };
	int rc;

	make_dir("fortunes");
	make_dir("fortunes/ru");
	put_text("fortunes/ru/poems",
		 "Мороз и солнце; день чудесный!\n"
		 "%\n"
		 "Я помню чудное мгновенье\n"
		 "Передо мной явилась ты\n"
		 "%%\n"
		 "%\n"
		 "Третья запись\n"
		 "% \r\n"
		 "Последняя\n");
	put_text("fortunes/art.u8", "one\n%\ntwo\n%\n");
	put("fortunes/art.dat", "\0\0\0\2", 4);
	is_int(ds_file_kind_of(at("fortunes/ru/poems")), DS_FILE_FORTUNE, "fortune: sniffed by '%%' lines");

	rc = ds_source_list(at("fortunes/ru/poems"), &opts, &l, &err);
	is_int(rc, 0, "fortune: listed");
	is_int(l.count, 4, "fortune: four entries, the empty one skipped");
	is_str(rel_id(&l, 0), "fortunes/ru/poems#0", "fortune: id file#k");
	is_str(label_of(&l, 0), "poems", "fortune: label is the file name");
	ok(l.count && !strcmp(l.items[0]->data, "Мороз и солнце; день чудесный!"), "fortune: first entry, newline dropped");
	ok(l.count > 1 && !strcmp(l.items[1]->data, "Я помню чудное мгновенье\nПередо мной явилась ты"),
	   "fortune: two-line entry, %%%% separator");
	is_str(rel_id(&l, 2), "fortunes/ru/poems#2", "fortune: k counts entries kept");
	ok(l.count > 3 && !strcmp(l.items[3]->data, "Последняя"), "fortune: entry after '%% \\r' separator");
	ds_item_list_free(&l);

	rc = ds_source_list(at("fortunes"), &opts, &l, &err);
	is_int(rc, 0, "fortune folder: listed");
	is_int(l.count, 6, "fortune folder: .dat skipped");
	is_str(label_of(&l, 0), "art", "fortune folder: .u8 dropped from the label");
	is_str(label_of(&l, 2), "ru", "fortune folder: class folder wins");
	ds_item_list_free(&l);
}

/* ---------------------------------------------------------------- dst */

static void add_tensor(ds_container *c, const char *name, ds_dtype dtype, int ndim, const int64_t *shape,
		       const void *data)
{
	ds_tensor *t = ds_tensor_new(dtype, ndim, shape, DS_CPU, NULL);

	memcpy(t->data, data, ds_tensor_nbytes(t));
	ds_container_add(c, name, t, NULL);
	ds_tensor_unref(t);
}

/* ds_source_list("-") with the file on standard input. */
static int list_as_stdin(const char *path, ds_item_list *l, ds_error *err)
{
	int fd = open(path, O_RDONLY), saved = dup(0), rc;

	dup2(fd, 0);
	close(fd);
	rc = ds_source_list("-", NULL, l, err);
	dup2(saved, 0);
	close(saved);
	return rc;
}

static void test_dst(void)
{
	int64_t xs[] = { 2, 2, 2, 1 }, ys[] = { 2 }, ts[] = { 3, 4 }, ys3[] = { 3 };
	uint8_t pixels[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	int32_t labels[2] = { 1, 0 }, tokens[12] = { 5, 6, -1, -1, 7, 8, 9, 10, -1, -1, -1, -1 };
	int32_t tlabels[3] = { 0, -1, 7 };
	ds_item_list l = { 0 };
	ds_error err = { 0 };
	ds_writer *w = NULL;
	ds_container *c;
	void *buf;
	size_t len;
	int rc;

	rc = ds_writer_open(at("set.dst"), &w, &err);
	c = ds_container_new();
	add_tensor(c, "x", DS_U8, 4, xs, pixels);
	add_tensor(c, "y", DS_I32, 1, ys, labels);
	ds_container_meta_set(c, "ds.format", DS_FORMAT_FRAME, NULL);
	ds_container_meta_set(c, "ds.labels", "[\"cat\",\"dog\"]", NULL);
	ds_container_meta_set(c, "ds.items", "[\"a.png\",\"b.png\"]", NULL);
	if (!rc)
		rc = ds_writer_put(w, c, &err);
	ds_container_free(c);
	c = ds_container_new();
	add_tensor(c, "x", DS_I32, 2, ts, tokens);
	add_tensor(c, "y", DS_I32, 1, ys3, tlabels);
	ds_container_meta_set(c, "ds.format", DS_FORMAT_FRAME, NULL);
	ds_container_meta_set(c, "ds.labels", "[\"en\",\"ru\"]", NULL);
	if (!rc)
		rc = ds_writer_put(w, c, &err);
	ds_container_free(c);
	if (!rc)
		rc = ds_writer_commit(w, &err);
	is_int(rc, 0, "dst: written (%s)", err.message);

	is_int(ds_file_kind_of(at("set.dst")), DS_FILE_DST, "dst: kind by name");
	rc = ds_source_list(at("set.dst"), NULL, &l, &err);
	is_int(rc, 0, "dst: listed (%s)", err.message);
	is_int(l.count, 5, "dst: one item a row");
	is_str(rel_id(&l, 0), "a.png", "dst: id from ds.items");
	is_str(label_of(&l, 0), "dog", "dst: label through ds.labels");
	is_int(kind_of(&l, 0), DS_ITEM_PIXELS, "dst: U8 rows are pixels");
	ok(l.count && l.items[0]->width == 2 && l.items[0]->height == 2 && l.items[0]->channels == 1 &&
	   l.items[0]->len == 4, "dst: pixel geometry");
	ok(l.count > 1 && ((uint8_t *)l.items[1]->data)[3] == 8, "dst: second row's pixels");
	is_str(rel_id(&l, 2), "set.dst#1:0", "dst: id file#frame:row without ds.items");
	is_int(kind_of(&l, 2), DS_ITEM_TOKENS, "dst: I32 rows are tokens");
	ok(l.count > 2 && l.items[2]->len == 2 && ((int32_t *)l.items[2]->data)[1] == 6, "dst: -1 padding trimmed");
	ok(l.count > 3 && l.items[3]->len == 4, "dst: full row kept");
	is_str(label_of(&l, 3), "(none)", "dst: label -1 is unlabelled");
	ok(l.count > 4 && l.items[4]->len == 0, "dst: all-padding row is empty");
	is_str(label_of(&l, 4), "7", "dst: label past ds.labels is its number");
	ds_item_list_free(&l);

	rc = list_as_stdin(at("set.dst"), &l, &err);
	ok(rc == 0 && l.count == 5, "dst on stdin: listed");
	is_str(rel_id(&l, 2), "stdin#1:0", "dst on stdin: ids name stdin");
	ds_item_list_free(&l);

	/* A cut copy: the stream reader's error, status 3 for the whole input. */
	rc = ds_file_read(at("set.dst"), 0, &buf, &len, &err);
	put("cut.dst", buf, len - 5);
	free(buf);
	rc = ds_source_list(at("cut.dst"), NULL, &l, &err);
	is_int(rc, DS_ERR_DATA, "dst cut: status 3");
	ok(strstr(err.message, "cut.dst") != NULL, "dst cut: names the file (%s)", err.message);
	ds_item_list_free(&l);
}

/* ------------------------------------------------------- files and kinds */

static void test_files(void)
{
	ds_item_list l = { 0 };
	ds_error err = { 0 };
	unsigned char idx_head[16] = { 0, 0, 8, 3 };
	void *buf = NULL;
	size_t len = 0;
	char list[2048];
	gzFile g;
	int rc;

	put_text("lies.png", "not an image at all");
	put("photo", png_magic, sizeof png_magic);
	put("shot", jpeg_magic, sizeof jpeg_magic);
	put("raw-idx", idx_head, sizeof idx_head);
	put_text("plain", "just some text, ünïcödé\n");
	put("binary", "\x01\x02\xff\xfe\x00", 5);
	put("frames", "\x10\0\0\0\0\0\0\0{\"a\":1}         ", 24);
	g = gzopen(at("packed"), "wb");
	gzwrite(g, idx_head, sizeof idx_head);
	gzclose(g);
	is_int(ds_file_kind_of(at("lies.png")), DS_FILE_IMAGE, "kind: extension first, content later");
	is_int(ds_file_kind_of(at("photo")), DS_FILE_IMAGE, "kind: PNG magic");
	is_int(ds_file_kind_of(at("shot")), DS_FILE_IMAGE, "kind: JPEG magic");
	is_int(ds_file_kind_of(at("raw-idx")), DS_FILE_IDX, "kind: IDX magic");
	is_int(ds_file_kind_of(at("packed")), DS_FILE_IDX, "kind: gzipped IDX");
	is_int(ds_file_kind_of(at("plain")), DS_FILE_TEXT, "kind: UTF-8 text");
	is_int(ds_file_kind_of(at("binary")), DS_FILE_OTHER, "kind: binary");
	is_int(ds_file_kind_of(at("frames")), DS_FILE_DST, "kind: safetensors length and '{'");
	is_int(ds_file_kind_of(at("data.jsonl")), DS_FILE_JSONL, "kind: .jsonl");
	is_int(ds_file_kind_of(at("tree/cat/notes.txt")), DS_FILE_TEXT, "kind: .txt");
	is_int(ds_file_kind_of(at("nothing-here")), DS_FILE_OTHER, "kind: missing file");

	rc = ds_file_read(at("plain"), 0, &buf, &len, &err);
	ok(rc == 0 && len == strlen("just some text, ünïcödé\n") && ((char *)buf)[len] == 0, "read: whole file");
	free(buf);
	rc = ds_file_read(at("plain"), 4, &buf, &len, &err);
	is_int(rc, DS_ERR_DATA, "read: over max_bytes is status 3");
	is_str(err.code, "too_large", "read: code too_large");
	ok(buf == NULL, "read: no buffer on failure");
	ds_error_clear(&err);
	rc = ds_file_read(at("nothing-here"), 0, &buf, &len, &err);
	is_int(rc, DS_ERR_IO, "read: missing file is status 5");
	ok(strstr(err.message, "nothing-here") && strstr(err.message, "No such file"), "read: path and reason");
	ds_error_clear(&err);
	rc = ds_file_read(at("tree"), 0, &buf, &len, &err);
	is_int(rc, DS_ERR_IO, "read: a folder is status 5");
	ds_error_clear(&err);

	snprintf(list, sizeof list, "%s\n%s\n\n%s\n%s\n", at("photo"), at("gone.png"), at("data.jsonl"),
		 at("bad/cut-images-idx3-ubyte"));
	put_text("list.txt", list);
	rc = ds_source_list_files_from(at("list.txt"), NULL, &l, &err);
	is_int(rc, 0, "files-from: listed (%s)", err.message);
	is_int(l.count, 1 + 1 + 8 + 1, "files-from: each path expanded");
	is_int(kind_of(&l, 0), DS_ITEM_FILE, "files-from: image file");
	is_str(rel_id(&l, 1), "gone.png", "files-from: missing path kept");
	is_str(code_of(&l, 1), "unreadable", "files-from: missing path is unreadable");
	is_str(code_of(&l, l.count - 1), "truncated", "files-from: a broken IDX is an error item");
	ds_item_list_free(&l);
	rc = ds_source_list_files_from(at("no-list"), NULL, &l, &err);
	is_int(rc, DS_ERR_IO, "files-from: missing list is status 5");
	ds_item_list_free(&l);
}

/* ------------------------------------------------------- Fashion-MNIST */

static void test_fashion(void)
{
	const char *dir = "/usr/share/datasets/fashion-mnist";
	ds_item_list l = { 0 };
	ds_error err = { 0 };
	struct timespec t0, t1;
	int rc;

	if (access(dir, R_OK) != 0) {
		ok(1, "# skip %s not installed (dataset-fashion-mnist)", dir);
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = ds_source_list(dir, NULL, &l, &err);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	is_int(rc, 0, "fashion-mnist: listed (%s)", err.message);
	is_int(l.count, 70000, "fashion-mnist: 60000 + 10000 items");
	diag("fashion-mnist: %zu items listed in %.3f s", l.count,
	     (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	is_str(rel_id(&l, 0), "t10k-images-idx3-ubyte.gz#0", "fashion-mnist: test set first");
	is_str(rel_id(&l, 10000), "train-images-idx3-ubyte.gz#0", "fashion-mnist: then the training set");
	ok(l.count && l.items[0]->width == 28 && l.items[0]->height == 28, "fashion-mnist: 28x28");
	ds_item_list_classes(&l, &err);
	is_int(l.class_count, 10, "fashion-mnist: ten classes by name");
	ok(l.class_count == 10 && !strcmp(l.classes[0], "Ankle boot"), "fashion-mnist: names sorted");
	ds_item_list_free(&l);
}

int main(void)
{
	char cmd[600];

	snprintf(tmp, sizeof tmp, "%s/ds-test-source-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmp)) {
		printf("Bail out! mkdtemp\n");
		return 1;
	}
	test_walk();
	test_idx();
	test_jsonl();
	test_fortune();
	test_dst();
	test_files();
	test_fashion();
	snprintf(cmd, sizeof cmd, "chmod -R u+rwx '%s' && rm -rf '%s'", tmp, tmp);
	if (system(cmd) != 0)
		diag("could not remove %s", tmp);
	return done_testing();
}
