/* test_printer.c - every format of one sample document, CSV quoting, jsonl
 * tagging, streamed records and write errors. */
#include "ds.h"
#include "tap.h"

/* Render with ds_print into a string (malloc'd). */
static char *render(ds_format fmt, const json_t *doc, int *status)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	ds_error err = { 0 };

	*status = ds_print(f, fmt, doc, &err);
	fclose(f);
	return buf;
}

static char *stream(ds_format fmt, json_t *const *records, int n)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	ds_printer *p = ds_printer_new(f, fmt);
	ds_error err = { 0 };
	int status = 0;

	for (int i = 0; i < n && !status; i++)
		status = ds_printer_record(p, records[i], &err);
	status |= ds_printer_free(p, &err);
	fclose(f);
	if (status) {
		free(buf);
		return NULL;
	}
	return buf;
}

static json_t *sample(void)
{
	return json_pack("{s:s, s:i, s:{s:i, s:f}, s:[{s:s, s:i, s:[i,i]}, {s:s, s:i, s:s}], s:f, "
			 "s:[{s:s}, {s:s}]}",
			 "file", "m.dsm", "tensors_total", 2,
			 "graph", "nodes", 3, "ratio", 0.5,
			 "tensors", "name", "conv.w", "bytes", 288, "shape", 8, 9,
			 "name", "fc|b, \"x\"", "bytes", 40, "dtype", "F32",
			 "loss", 0.123456789,
			 "labels", "label", "cat", "label", "dog");
}

static void check(ds_format fmt, const json_t *doc, const char *want, const char *what)
{
	int status;
	char *got = render(fmt, doc, &status);

	is_int(status, 0, "%s: status", what);
	is_str(got, want, "%s", what);
	free(got);
}

static void test_formats(void)
{
	json_t *doc = sample();
	ds_format fmt;

	check(DS_FORMAT_TEXT, doc,
	      "file:          m.dsm\n"
	      "tensors_total: 2\n"
	      "loss:          0.123457\n"
	      "\n"
	      "graph:\n"
	      "  nodes: 3\n"
	      "  ratio: 0.5\n"
	      "\n"
	      "tensors:\n"
	      "  name       bytes  shape  dtype\n"
	      "  conv.w       288  [8,9]  -\n"
	      "  fc|b, \"x\"     40  -      F32\n"
	      "\n"
	      "labels:\n"
	      "  label\n"
	      "  cat\n"
	      "  dog\n",
	      "text: scalars, a section, tables with numbers right-aligned");
	check(DS_FORMAT_MD, doc,
	      "| key           | value    |\n"
	      "| ------------- | -------- |\n"
	      "| file          | m.dsm    |\n"
	      "| tensors_total | 2        |\n"
	      "| loss          | 0.123457 |\n"
	      "\n"
	      "## graph\n"
	      "\n"
	      "| key   | value |\n"
	      "| ----- | ----- |\n"
	      "| nodes | 3     |\n"
	      "| ratio | 0.5   |\n"
	      "\n"
	      "## tensors\n"
	      "\n"
	      "| name       | bytes | shape | dtype |\n"
	      "| ---------- | ----: | ----- | ----- |\n"
	      "| conv.w     |   288 | [8,9] | -     |\n"
	      "| fc\\|b, \"x\" |    40 | -     | F32   |\n"
	      "\n"
	      "## labels\n"
	      "\n"
	      "| label |\n"
	      "| ----- |\n"
	      "| cat   |\n"
	      "| dog   |\n",
	      "md: pipe tables, escaped pipe, headings");
	check(DS_FORMAT_CSV, doc,
	      "# tensors\n"
	      "name,bytes,shape,dtype\n"
	      "conv.w,288,\"[8,9]\",\n"
	      "\"fc|b, \"\"x\"\"\",40,,F32\n"
	      "\n"
	      "# labels\n"
	      "label\n"
	      "cat\n"
	      "dog\n",
	      "csv: two tables titled, RFC 4180 quoting");
	check(DS_FORMAT_JSONL, doc,
	      "{\"file\":\"m.dsm\",\"tensors_total\":2,\"graph\":{\"nodes\":3,\"ratio\":0.5},\"loss\":0.123456789}\n"
	      "{\"table\":\"tensors\",\"name\":\"conv.w\",\"bytes\":288,\"shape\":[8,9]}\n"
	      "{\"table\":\"tensors\",\"name\":\"fc|b, \\\"x\\\"\",\"bytes\":40,\"dtype\":\"F32\"}\n"
	      "{\"table\":\"labels\",\"label\":\"cat\"}\n"
	      "{\"table\":\"labels\",\"label\":\"dog\"}\n",
	      "jsonl: the scalars, then rows tagged with their table");

	{
		int status;
		char *got = render(DS_FORMAT_JSON, doc, &status);
		json_t *back = got ? json_loads(got, 0, NULL) : NULL;

		is_int(status, 0, "json: status");
		ok(back && json_equal(back, doc), "json: reads back equal to the document");
		ok(got && strncmp(got, "{\n  \"file\": \"m.dsm\",\n", 21) == 0, "json: indented by 2, in order");
		ok(got && got[strlen(got) - 1] == '\n', "json: ends with a newline");
		json_decref(back);
		free(got);
	}
	json_decref(doc);

	doc = json_pack("{s:s, s:[{s:s}]}", "title", "one", "rows", "a", "x,y");
	check(DS_FORMAT_CSV, doc, "a\n\"x,y\"\n", "csv: one table is plain CSV");
	json_decref(doc);

	doc = json_pack("{s:s, s:{s:b}}", "name", "line\nbreak", "opts", "fast", 1);
	check(DS_FORMAT_CSV, doc, "key,value\nname,\"line\nbreak\"\nopts.fast,true\n",
	      "csv: a document without tables gives key,value rows");
	json_decref(doc);

	doc = json_pack("{s:[i,i], s:n, s:f}", "ids", 1, 2, "none", "big", 1234567.0);
	check(DS_FORMAT_TEXT, doc, "ids:  [1,2]\nnone: -\nbig:  1.23457e+06\n",
	      "text: arrays of scalars as compact JSON, null as -, reals %.6g");
	json_decref(doc);

	ok(ds_format_parse("md", &fmt) == 0 && fmt == DS_FORMAT_MD, "format md parses");
	ok(ds_format_parse("xml", &fmt) != 0, "format xml does not");
	is_str(ds_format_name(DS_FORMAT_JSONL), "jsonl", "format name");
}

static void test_records(void)
{
	json_t *r[2];
	char *got;

	r[0] = json_pack("{s:s, s:i, s:f}", "item", "a b.png", "label", 3, "p", 0.25);
	r[1] = json_pack("{s:s, s:i, s:f, s:s}", "item", "c,\"d\".png", "label", 1, "p", 0.75, "extra", "e");

	got = stream(DS_FORMAT_JSONL, r, 2);
	is_str(got, "{\"item\":\"a b.png\",\"label\":3,\"p\":0.25}\n"
		    "{\"item\":\"c,\\\"d\\\".png\",\"label\":1,\"p\":0.75,\"extra\":\"e\"}\n", "records: jsonl");
	free(got);
	got = stream(DS_FORMAT_CSV, r, 2);
	is_str(got, "item,label,p\na b.png,3,0.25\n\"c,\"\"d\"\".png\",1,0.75\n",
	       "records: csv header from the first record");
	free(got);
	got = stream(DS_FORMAT_TEXT, r, 2);
	is_str(got, "item=\"a b.png\" label=3 p=0.25\nitem=\"c,\\\"d\\\".png\" label=1 p=0.75 extra=e\n",
	       "records: text as key=value, quoted where needed");
	free(got);
	got = stream(DS_FORMAT_MD, r, 2);
	is_str(got, "| item | label | p |\n| --- | --- | --- |\n| a b.png | 3 | 0.25 |\n| c,\"d\".png | 1 | 0.75 |\n",
	       "records: md header once");
	free(got);
	got = stream(DS_FORMAT_JSON, r, 2);
	is_str(got, "[\n  {\"item\":\"a b.png\",\"label\":3,\"p\":0.25},\n"
		    "  {\"item\":\"c,\\\"d\\\".png\",\"label\":1,\"p\":0.75,\"extra\":\"e\"}\n]\n",
	       "records: json array written as it goes");
	free(got);
	got = stream(DS_FORMAT_JSON, r, 0);
	is_str(got, "[]\n", "records: no records is an empty json array");
	free(got);
	json_decref(r[0]);
	json_decref(r[1]);
}

static void test_write_errors(void)
{
	FILE *f = fopen("/dev/full", "w");
	json_t *doc = sample();
	ds_error err = { 0 };
	ds_printer *p;

	if (!f) {
		ok(1, "# SKIP no /dev/full");
		json_decref(doc);
		return;
	}
	setvbuf(f, NULL, _IONBF, 0);
	is_int(ds_print(f, DS_FORMAT_TEXT, doc, &err), DS_ERR_IO, "a full disk is status 5");
	is_str(err.code, "disk_full", "with code disk_full");
	ds_error_clear(&err);
	p = ds_printer_new(f, DS_FORMAT_JSONL);
	is_int(ds_printer_record(p, doc, &err), DS_ERR_IO, "a record on a full disk is status 5");
	ds_printer_free(p, NULL);
	fclose(f);
	json_decref(doc);
}

int main(void)
{
	test_formats();
	test_records();
	test_write_errors();
	return done_testing();
}
