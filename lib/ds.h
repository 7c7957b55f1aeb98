/* ds.h - the public interface of libds.
 *
 * libds is the library behind the ds programs: tensors, the model container
 * (.dsm) and tensor stream (.dst) formats, the graph and its op registry, and
 * the command-line layer every program shares.  Functions that can fail return
 * an int status (0, or one of ds_status) and fill a ds_error; nothing in libds
 * prints or exits on its own.
 */
#ifndef DS_H
#define DS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ errors */

/* Status codes double as the programs' exit statuses (ds.7). */
typedef enum ds_status {
	DS_OK = 0,
	DS_ERR_RUN = 1,         /* failure while running */
	DS_ERR_USAGE = 2,       /* bad command line */
	DS_ERR_DATA = 3,        /* bad input data */
	DS_ERR_NOMEM = 4,       /* out of host or device memory */
	DS_ERR_IO = 5,          /* cannot read or write a file */
	DS_ERR_INTERRUPTED = 130
} ds_status;

typedef struct ds_error {
	int status;             /* a ds_status */
	char code[48];          /* stable lower_snake reason, e.g. "truncated" */
	char message[1024];     /* "train.dst: frame 3: tensor 'x': data runs past end of file" */
} ds_error;

/* Fill err (which may be NULL) and return status.  A second call on an error
 * that is already set keeps the first: the deepest cause wins. */
int ds_error_set(ds_error *err, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Put a location in front of the message: "frame 3: " + message. */
void ds_error_prefix(ds_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ds_error_clear(ds_error *err);
/* The status for an errno value: ENOMEM is 4, anything else 5. */
int ds_error_errno(ds_error *err, int errnum, const char *what);

/* ----------------------------------------------------------------- dtypes */

typedef enum ds_dtype {
	DS_F32, DS_F16, DS_BF16, DS_I8, DS_U8, DS_I32, DS_I64,
	DS_DTYPE_COUNT
} ds_dtype;

const char *ds_dtype_name(ds_dtype dtype);            /* safetensors spelling: "F32" */
int ds_dtype_parse(const char *name, ds_dtype *out);  /* 0, or -1 if unknown */
size_t ds_dtype_size(ds_dtype dtype);

/* ---------------------------------------------------------------- devices */

typedef enum ds_device_kind { DS_DEVICE_CPU = 0, DS_DEVICE_CUDA = 1 } ds_device_kind;

typedef struct ds_device {
	ds_device_kind kind;
	int index;
} ds_device;

#define DS_CPU ((ds_device){ DS_DEVICE_CPU, 0 })

/* "auto", "cpu", "cuda" or "cuda:N".  *is_auto tells auto apart from cpu. */
int ds_device_parse(const char *text, ds_device *out, int *is_auto, ds_error *err);
/* Pick the device to run on: auto falls back to the CPU without a GPU; an
 * explicit cuda without one (or without CUDA support built in) is status 1. */
int ds_device_resolve(const char *text, ds_device *out, ds_error *err);
int ds_cuda_device_count(void);       /* 0 when built without CUDA or no GPU */
int ds_cuda_built(void);              /* 1 when libds has CUDA kernels */
const char *ds_device_name(ds_device dev, char *buf, size_t len); /* "cpu", "cuda:0" */

/* The kernels OpenBLAS runs ("SkylakeX", "Haswell"). */
const char *ds_blas_core(void);

/* Thread count of libds's compute (OpenMP); OpenBLAS always runs on the
 * calling thread, inside libds's own parallel loops.  n <= 0 keeps OpenMP's
 * default (all cores, or OMP_NUM_THREADS). */
void ds_threads_set(int n);
int ds_threads_get(void);

/* ---------------------------------------------------------------- tensors */

#define DS_MAX_DIMS 8

typedef struct ds_storage ds_storage;   /* reference-counted bytes */

typedef struct ds_tensor {
	ds_dtype dtype;
	int ndim;
	int64_t shape[DS_MAX_DIMS];
	void *data;             /* host pointer, or device pointer on CUDA */
	ds_device device;
	ds_storage *storage;    /* owns data; shared by views */
	int refs;
} ds_tensor;

/* A new contiguous tensor, zero-filled, 64-byte aligned on the host. */
ds_tensor *ds_tensor_new(ds_dtype dtype, int ndim, const int64_t *shape, ds_device dev, ds_error *err);
/* A tensor over bytes owned by storage (taken a reference on). */
ds_tensor *ds_tensor_view(ds_dtype dtype, int ndim, const int64_t *shape, void *data,
			  ds_device dev, ds_storage *storage, ds_error *err);
ds_tensor *ds_tensor_ref(ds_tensor *t);
void ds_tensor_unref(ds_tensor *t);
/* Copy to another device (or to fresh host memory when dev is the CPU). */
ds_tensor *ds_tensor_to(const ds_tensor *t, ds_device dev, ds_error *err);
int64_t ds_tensor_numel(const ds_tensor *t);
size_t ds_tensor_nbytes(const ds_tensor *t);
/* numel and bytes of a shape, 0 and -1 on overflow past SIZE_MAX/INT64_MAX. */
int ds_shape_numel(int ndim, const int64_t *shape, int64_t *numel);
int ds_shape_bytes(ds_dtype dtype, int ndim, const int64_t *shape, uint64_t *bytes);
/* "[64, 1, 28, 28]" */
const char *ds_shape_format(int ndim, const int64_t *shape, char *buf, size_t len);

/* Storage with a release callback, for memory libds did not allocate. */
ds_storage *ds_storage_wrap(void *data, size_t bytes, void (*release)(void *ctx), void *ctx);
ds_storage *ds_storage_ref(ds_storage *s);
void ds_storage_unref(ds_storage *s);

/* -------------------------------------------------------------- checksums */

uint32_t ds_crc32c(uint32_t crc, const void *data, size_t len);

/* -------------------------------------------------------------- containers */

/* A container is one safetensors document: named tensors and string
 * metadata.  A model (.dsm) is one container with ds.format = model/1; a
 * stream (.dst) is a sequence of containers, its frames, with frame/1. */
typedef struct ds_container ds_container;

#define DS_FORMAT_MODEL "model/1"
#define DS_FORMAT_FRAME "frame/1"
#define DS_HEADER_MAX (100u << 20)   /* header bytes a reader accepts */

typedef enum ds_checksum_state {
	DS_CHECKSUM_UNCHECKED = 0,   /* loaded with DS_LOAD_NO_VERIFY */
	DS_CHECKSUM_OK,
	DS_CHECKSUM_MISMATCH,
	DS_CHECKSUM_ABSENT           /* the file carries no checksum for it */
} ds_checksum_state;

ds_container *ds_container_new(void);
void ds_container_free(ds_container *c);
/* Add a tensor under name, taking a reference; names are unique. */
int ds_container_add(ds_container *c, const char *name, ds_tensor *t, ds_error *err);
int ds_container_remove(ds_container *c, const char *name);
ds_tensor *ds_container_get(const ds_container *c, const char *name);
size_t ds_container_count(const ds_container *c);
const char *ds_container_name(const ds_container *c, size_t i);
ds_tensor *ds_container_tensor(const ds_container *c, size_t i);
ds_checksum_state ds_container_checksum(const ds_container *c, size_t i);

/* String metadata (the safetensors __metadata__ map).  ds.checksums is kept by
 * libds itself: it is computed on write and checked on read. */
int ds_container_meta_set(ds_container *c, const char *key, const char *value, ds_error *err);
const char *ds_container_meta_get(const ds_container *c, const char *key);
size_t ds_container_meta_count(const ds_container *c);
const char *ds_container_meta_key(const ds_container *c, size_t i);
/* Metadata whose value is JSON text, parsed (new reference, NULL if absent);
 * invalid JSON is status 3. */
int ds_container_meta_json(const ds_container *c, const char *key, json_t **out, ds_error *err);
int ds_container_meta_set_json(ds_container *c, const char *key, const json_t *value, ds_error *err);

/* Append one entry to ds.history: tool, version, arguments, UTC date, and
 * figures (an object, may be NULL; not stolen). */
int ds_container_history_append(ds_container *c, const char *tool, int argc, char **argv,
				const json_t *figures, ds_error *err);

/* Loading flags. */
#define DS_LOAD_NO_VERIFY 1u     /* skip CRC-32C checks (--no-verify) */
#define DS_LOAD_REPORT    2u     /* check CRCs, record mismatches, do not fail */

/* Parse one container held in memory; where names it in errors.  The bytes
 * are copied.  For fuzzing and for tests. */
int ds_container_parse(const void *buf, size_t len, const char *where, unsigned flags,
		       ds_container **out, ds_error *err);
/* Load a single-container file (a model); "-" reads stdin. */
int ds_container_load(const char *path, unsigned flags, ds_container **out, ds_error *err);

/* ---------------------------------------------------------------- streams */

/* Reads containers one after another: a regular file is memory-mapped and
 * tensors point into the mapping; a pipe is read one frame at a time. */
typedef struct ds_stream ds_stream;

int ds_stream_open(const char *path, unsigned flags, ds_stream **out, ds_error *err);
/* Next frame in *out, or *out = NULL at a clean end of input. */
int ds_stream_read(ds_stream *s, ds_container **out, ds_error *err);
/* Frames read so far; the next frame's number is this value. */
size_t ds_stream_frames(const ds_stream *s);
/* Bytes consumed so far. */
uint64_t ds_stream_offset(const ds_stream *s);
const char *ds_stream_path(const ds_stream *s);
void ds_stream_close(ds_stream *s);

/* ---------------------------------------------------------------- writers */

/* Writes containers to a file, atomically (a temporary file in the same
 * folder, renamed on commit), or to stdout for "-".  Binary output to a
 * terminal is refused (status 2). */
typedef struct ds_writer ds_writer;

int ds_writer_open(const char *path, ds_writer **out, ds_error *err);
/* The same for text (reports, JSON): a terminal is fine. */
int ds_writer_open_text(const char *path, ds_writer **out, ds_error *err);
/* The stream under the writer, for text printed straight into it; write
 * errors surface at commit. */
FILE *ds_writer_file(ds_writer *w);
/* Serialize c (checksums filled in); may be called many times for a stream. */
int ds_writer_put(ds_writer *w, ds_container *c, ds_error *err);
/* Flush, fsync and rename into place; frees w. */
int ds_writer_commit(ds_writer *w, ds_error *err);
/* Remove the temporary file; frees w.  Safe on NULL. */
void ds_writer_abort(ds_writer *w);
/* Serialize to memory (malloc'd buffer); for tests and the fuzz corpus. */
int ds_container_serialize(ds_container *c, void **buf, size_t *len, ds_error *err);
/* Remove every temporary output still open; async-signal-safe. */
void ds_writer_cleanup_all(void);

/* ------------------------------------------------------------------ graph */

/* A shape during inference: dims are concrete (the batch is fixed by the
 * caller). */
typedef struct ds_shape {
	ds_dtype dtype;
	int ndim;
	int64_t dim[DS_MAX_DIMS];
} ds_shape;

typedef struct ds_graph ds_graph;
typedef struct ds_node ds_node;

/* Parse the graph JSON (ds-formats.5) and resolve its references against the
 * container's tensors (parameters); validates names, ops, attributes and
 * cycles, and infers every shape at batch 1.  Failures are status 3 naming the
 * node and tensor. */
int ds_graph_parse(const char *json_text, const ds_container *params, ds_graph **out, ds_error *err);
/* The graph of a model: its ds.graph metadata (status 3 if absent). */
int ds_graph_from_model(const ds_container *model, ds_graph **out, ds_error *err);
void ds_graph_free(ds_graph *g);
/* Re-run shape inference with a batch size; inputs with -1 take it. */
int ds_graph_infer(ds_graph *g, int64_t batch, ds_error *err);

size_t ds_graph_node_count(const ds_graph *g);
/* Nodes in topological order. */
const ds_node *ds_graph_node(const ds_graph *g, size_t i);
size_t ds_graph_input_count(const ds_graph *g);
const char *ds_graph_input_name(const ds_graph *g, size_t i);
/* The shape an input was declared with (dim 0 may be -1, the batch). */
const ds_shape *ds_graph_input_shape(const ds_graph *g, size_t i);
size_t ds_graph_output_count(const ds_graph *g);
const char *ds_graph_output_name(const ds_graph *g, size_t i);
/* The inferred shape of any value (input, parameter or node output). */
const ds_shape *ds_graph_shape(const ds_graph *g, const char *value);
/* Elements in the parameters the graph uses. */
int64_t ds_graph_param_count(const ds_graph *g);
/* FLOPs for one item (multiply-add counts 2), from the op registry; -1 if an
 * op does not know its count. */
int64_t ds_graph_flops(const ds_graph *g);

const char *ds_node_name(const ds_node *n);
const char *ds_node_op(const ds_node *n);
size_t ds_node_input_count(const ds_node *n);
const char *ds_node_input(const ds_node *n, size_t i);
size_t ds_node_output_count(const ds_node *n);
const char *ds_node_output(const ds_node *n, size_t i);
/* Attributes as JSON (borrowed; may be NULL when a node has none). */
const json_t *ds_node_attrs(const ds_node *n);
int64_t ds_node_attr_int(const ds_node *n, const char *name, int64_t fallback);
double ds_node_attr_float(const ds_node *n, const char *name, double fallback);
/* An int list attribute such as stride: fills up to n_vals values and
 * returns the list's length; 0 when absent; a scalar fills every slot and
 * returns n_vals; -1 for a value of the wrong type. */
int ds_node_attr_ints(const ds_node *n, const char *name, int64_t *vals, int n_vals);

/* ------------------------------------------------------------ op registry */

/* Compute backends; an op fills the slots it has kernels for. */
typedef enum ds_backend { DS_BACKEND_CPU = 0, DS_BACKEND_CUDA = 1, DS_BACKEND_COUNT } ds_backend;

/* What a kernel call gets.  Tensors are views into the plan's arena with the
 * shapes of this run (the batch may be smaller than planned). */
typedef struct ds_op_args {
	const ds_node *node;
	ds_tensor *const *in;
	int n_in;
	ds_tensor *const *out;
	int n_out;
	/* backward only: dL/d out[j], and dL/d in[i] to ADD into (+=); a
	 * grad_in entry is NULL when that input needs no gradient. */
	ds_tensor *const *grad_out;
	ds_tensor *const *grad_in;
	void *saved;            /* op->saved bytes, kept from forward to backward */
	void *workspace;        /* op->workspace bytes of scratch for this call */
	int training;           /* dropout drops, batchnorm uses batch statistics */
	uint64_t seed;          /* random stream of this node and step (dropout) */
} ds_op_args;

/* The bits of ds_op.backward_needs: what backward reads besides grad_out. */
#define DS_NEEDS_IN(i) (1u << (i))
#define DS_NEEDS_OUT(j) (1u << (16 + (j)))

/* One op: its name, the inputs it takes, attributes it knows, shape
 * inference, FLOP count and compute per backend; ops are found by name
 * only. */
typedef struct ds_op {
	const char *name;
	int min_inputs, max_inputs;   /* max -1: any number */
	int num_outputs;
	const char *const *attrs;     /* attribute names it accepts, NULL-terminated */
	/* out[0..num_outputs) from in[0..n_in).  Status 3 with a message on a
	 * shape mismatch; the caller prefixes the node. */
	int (*infer)(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out, ds_error *err);
	/* FLOPs of one call with these shapes. */
	int64_t (*flops)(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out);
	/* Kernels per backend (NULL: not available there).  Status 3 for data a
	 * kernel cannot take (a label out of range), with the tensor named. */
	int (*forward[DS_BACKEND_COUNT])(const ds_op_args *a, ds_error *err);
	int (*backward[DS_BACKEND_COUNT])(const ds_op_args *a, ds_error *err);
	/* Bytes of scratch per call and of state kept from forward to
	 * backward, for these shapes (NULL: none). */
	size_t (*workspace)(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out);
	size_t (*saved)(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out);
	unsigned backward_needs;      /* DS_NEEDS_IN / DS_NEEDS_OUT bits */
	unsigned no_grad;             /* inputs that never take a gradient (ids, labels): bit i */
	/* 1: the forward keeps state in its workspace from one call to the
	 * next (packed filters, checked before reuse), so a plan gives the
	 * node a workspace of its own for the plan's life rather than one
	 * other nodes write over. */
	unsigned keeps_workspace;
} ds_op;

const ds_op *ds_op_find(const char *name);
size_t ds_op_count(void);
const ds_op *ds_op_at(size_t i);   /* the registry in name order */

/* ------------------------------------------------------ command-line layer */

typedef enum ds_opt_kind {
	DS_OPT_FLAG,      /* no argument */
	DS_OPT_INT,
	DS_OPT_FLOAT,
	DS_OPT_STRING,
	DS_OPT_LIST       /* repeatable string: each use appends */
} ds_opt_kind;

/* One row of a program's option table; --help, --config keys, DS_*
 * variables and the man-page test all come from it. */
typedef struct ds_option {
	const char *name;        /* long name without dashes: "output" */
	char short_name;         /* 'o', or 0 */
	ds_opt_kind kind;
	const char *arg;         /* metavariable in --help: "FILE" */
	const char *help;
	const char *env;         /* environment variable, or NULL */
	const char *fallback;    /* default value as text, or NULL */
} ds_option;

typedef enum ds_format {
	DS_FORMAT_TEXT, DS_FORMAT_MD, DS_FORMAT_CSV, DS_FORMAT_JSON, DS_FORMAT_JSONL
} ds_format;

typedef struct ds_program {
	const char *name;        /* "ds-info" */
	const char *usage;       /* "[OPTIONS] FILE|-" */
	const char *summary;     /* one line */
	const ds_option *options;/* the program's own, ended by a row with name NULL */
	const char *formats;     /* formats --format accepts, "text,json", or NULL for none */
	int min_args, max_args;  /* operands; max -1: any */
} ds_program;

typedef struct ds_cli ds_cli;

/* Parse argv against the shared options and the program's table, with
 * --config FILE.json and environment variables below the command line.
 * Returns 0 to go on, or an exit status; --help and --version print and set
 * *done so the caller returns 0.  Call it first in main: on an AVX-512 CPU
 * it may execute the program again with OPENBLAS_CORETYPE set (ds.7,
 * DS_BLAS_KEEP).  Installs signal handling: SIGPIPE kills
 * quietly as for any Unix filter, SIGINT/SIGTERM remove temporary outputs
 * and end with status 130. */
int ds_cli_start(ds_cli **out, const ds_program *prog, int argc, char **argv, int *done);
/* Check stdout (flush, ferror, close): a failed write is status 5 with the
 * reason; an EPIPE ends quietly.  Prints err when status is not 0, and frees
 * cli.  The return value is the exit status. */
int ds_cli_finish(ds_cli *cli, int status, ds_error *err);

const char *ds_cli_get(const ds_cli *cli, const char *name);   /* NULL if unset */
int ds_cli_flag(const ds_cli *cli, const char *name);
int64_t ds_cli_int(const ds_cli *cli, const char *name);
double ds_cli_float(const ds_cli *cli, const char *name);
size_t ds_cli_list_count(const ds_cli *cli, const char *name);
const char *ds_cli_list_at(const ds_cli *cli, const char *name, size_t i);
int ds_cli_argc(const ds_cli *cli);
const char *ds_cli_arg(const ds_cli *cli, int i);
ds_format ds_cli_format(const ds_cli *cli);
int ds_cli_verbosity(const ds_cli *cli);    /* -1 quiet, 0 normal, 1+ verbose */
const ds_program *ds_cli_program(const ds_cli *cli);
/* Append this run to a container's ds.history. */
int ds_cli_history(const ds_cli *cli, ds_container *c, const json_t *figures, ds_error *err);
/* Status 130 once SIGINT/SIGTERM arrived while ds_cli_catch_interrupts(1). */
void ds_cli_catch_interrupts(int catch_them);
int ds_cli_interrupted(void);
/* Parse only, for tests and embedders: no --help or --version output, no
 * signal handlers, no device probing, nothing printed.  Status 2 (usage) with
 * the reason in err, and *out NULL, on failure. */
int ds_cli_parse(ds_cli **out, const ds_program *prog, int argc, char **argv, ds_error *err);
/* Free a cli without touching stdout; safe on NULL. */
void ds_cli_free(ds_cli *cli);
/* The device --device resolved to by ds_cli_start (the CPU until then). */
ds_device ds_cli_device(const ds_cli *cli);
/* The program's name; with NULL, the one last parsed ("ds" before any). */
const char *ds_cli_name(const ds_cli *cli);
/* Append one line {"event", "time", "elapsed", fields...} to the --log file;
 * 0 and nothing written without --log, status 5 when the write fails. */
int ds_cli_event(const ds_cli *cli, const char *event, const json_t *fields);

/* The model a model-to-model program reads and where it writes: --model or
 * the one operand (not both; "-" when neither), and -o, required unless the
 * program has a --dry-run that is set.  Status 2 with the reason. */
int ds_cli_model_io(const ds_cli *cli, const char **model, const char **output, ds_error *err);

/* --shard K/N (1 <= K <= N) into *k and *n; 0/0 when the option is unset.
 * Status 2 naming the value otherwise. */
int ds_cli_shard(const ds_cli *cli, int *k, int *n, ds_error *err);
/* A byte count such as 512M, 2G or 4096 (K, M, G are powers of 1024) from
 * option's value; status 2 naming the option otherwise. */
int ds_cli_bytes(const ds_cli *cli, const char *option, uint64_t *out, ds_error *err);

/* Read a --config file: a JSON object whose keys are long option names.  Bad
 * JSON or a non-object is status 2 naming the file; an unreadable file 5. */
int ds_config_load(const char *path, json_t **out, ds_error *err);
/* The same from memory (for the fuzz target); where names it in errors. */
int ds_config_parse(const char *text, size_t len, const char *where, json_t **out, ds_error *err);

/* Messages on stderr that respect -q/-v and DS_LOG=json. */
void ds_log_info(const ds_cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ds_log_verbose(const ds_cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ds_log_warn(const ds_cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The one error line of a failed run: "<prog>: error: <message>" (and a
 * "Try '<prog> --help'." hint for status 2), or with DS_LOG=json one object
 * {"program", "level", "status", "code", "message"}.  cli may be NULL. */
void ds_log_error(const ds_cli *cli, int status, const ds_error *err);

/* A progress line on stderr, drawn only when stderr is a terminal and not -q. */
typedef struct ds_progress ds_progress;
ds_progress *ds_progress_start(const ds_cli *cli, const char *what, uint64_t total, const char *unit);
void ds_progress_update(ds_progress *p, uint64_t done);
void ds_progress_end(ds_progress *p);

/* ---------------------------------------------------------------- printer */

/* One printer renders every summary: a document is a JSON object whose
 * members are scalars, objects (shown as key/value sections) or arrays of
 * objects (shown as tables).  text and md draw sections and tables; csv draws
 * the tables; json writes the object; jsonl writes each table row, tagged with
 * its table. */
int ds_format_parse(const char *text, ds_format *out);
const char *ds_format_name(ds_format fmt);
int ds_print(FILE *out, ds_format fmt, const json_t *doc, ds_error *err);
/* One record per input item (JSON Lines, or a CSV row with the header printed
 * first); for programs that stream results. */
typedef struct ds_printer ds_printer;
ds_printer *ds_printer_new(FILE *out, ds_format fmt);
int ds_printer_record(ds_printer *p, const json_t *record, ds_error *err);
int ds_printer_free(ds_printer *p, ds_error *err);

/* ------------------------------------------------------- plans and training */

/* A plan is a graph compiled for one batch size: a schedule, one arena for
 * every intermediate value (buffers reused by lifetime), views over it, and
 * for training the backward pass, keeping only the activations backward
 * reads.  Running a plan allocates nothing. */
typedef struct ds_plan ds_plan;

/* Parameters are the container's tensors (shared, updated in place by the
 * optimizer).  loss names the scalar output to differentiate; NULL plans
 * inference only. */
int ds_plan_new(const ds_graph *g, ds_container *params, int64_t batch, const char *loss, ds_device dev,
		ds_plan **out, ds_error *err);
void ds_plan_free(ds_plan *p);
/* Run with a batch no larger than planned (the last, short batch). */
int ds_plan_set_batch(ds_plan *p, int64_t batch, ds_error *err);
int64_t ds_plan_batch(const ds_plan *p);
/* A value of the graph: an input to fill before forward, or an output or
 * intermediate to read after it.  NULL when the name is unknown or the
 * value's buffer is reused before the end (ask with ds_plan_keep). */
ds_tensor *ds_plan_tensor(ds_plan *p, const char *value);
/* Keep a value readable after forward (an embedding, a teacher's logits);
 * call before the first run. */
int ds_plan_keep(ds_plan *p, const char *value, ds_error *err);
/* training (dropout, batch statistics) only on training plans; step seeds
 * each node's random stream, so a step replays exactly. */
int ds_plan_forward(ds_plan *p, int training, uint64_t step, ds_error *err);
/* Gradients of the loss, ADDED into the parameter gradients (so several
 * calls accumulate, as --accum needs).  Each call needs its own forward
 * before it (status 2 otherwise): backward reuses activations' memory.
 * Graph outputs and the loss stay readable until the next forward. */
int ds_plan_backward(ds_plan *p, ds_error *err);
/* Scale the incoming gradient of the loss (1 by default; 1/accum). */
void ds_plan_set_loss_scale(ds_plan *p, float scale);
void ds_plan_zero_grad(ds_plan *p);
size_t ds_plan_param_count(const ds_plan *p);
const char *ds_plan_param_name(const ds_plan *p, size_t i);
ds_tensor *ds_plan_param(ds_plan *p, size_t i);
ds_tensor *ds_plan_grad(ds_plan *p, size_t i);      /* NULL for inference plans */
/* Parameters that are state, not trained (batchnorm running statistics). */
int ds_plan_param_trainable(const ds_plan *p, size_t i);
size_t ds_plan_arena_bytes(const ds_plan *p);
/* What the same buffers would take without reuse (for logs and tests). */
size_t ds_plan_arena_naive_bytes(const ds_plan *p);
/* Global L2 norm of the gradients; scaled down to max_norm when above it
 * (max_norm <= 0: measure only). */
double ds_plan_clip_grad_norm(ds_plan *p, double max_norm);

/* Per-node timing (ds-bench --profile, ds-train --profile, ds-optimize
 * --tune).  While on, each forward and backward adds every node's wall time
 * to its counters; a node run in item chunks on several threads counts the
 * mean of its threads' times, so the counters still add up to the run.
 * Off by default: a clock read around every node call is not free. */
typedef struct ds_node_profile {
	const char *name, *op;       /* borrowed from the graph */
	double forward_s, backward_s;
	int64_t forward_calls, backward_calls;
	int64_t flops;               /* forward FLOPs at the current batch */
} ds_node_profile;

void ds_plan_profile(ds_plan *p, int on);
void ds_plan_profile_reset(ds_plan *p);
/* Nodes in schedule order. */
size_t ds_plan_node_count(const ds_plan *p);
void ds_plan_node_profile(ds_plan *p, size_t k, ds_node_profile *out);

typedef struct ds_optim_options {
	const char *kind;            /* "sgd" or "adamw" */
	double momentum;             /* sgd: 0.9 */
	int nesterov;
	double weight_decay;         /* decoupled for adamw, L2 for sgd */
	double beta1, beta2, eps;    /* adamw: 0.9, 0.999, 1e-8 (0 takes these) */
} ds_optim_options;

typedef struct ds_optim ds_optim;
int ds_optim_new(const ds_optim_options *o, ds_plan *plan, ds_optim **out, ds_error *err);
/* One update of every trainable parameter from its gradient at rate lr. */
int ds_optim_step(ds_optim *opt, double lr, ds_error *err);
/* The optimizer's state as tensors (opt.m.<param>, opt.v.<param>) and its
 * step count, for checkpoints; load checks names and shapes (status 3). */
int ds_optim_save(const ds_optim *opt, ds_container *c, ds_error *err);
int ds_optim_load(ds_optim *opt, const ds_container *c, ds_error *err);
void ds_optim_free(ds_optim *opt);

/* Learning rate at a step: linear warmup, then cosine to 0 or steps of
 * gamma every step_size steps, or constant. */
typedef struct ds_schedule {
	const char *kind;            /* "cosine", "step" or "constant" */
	double lr;
	int64_t warmup;              /* steps */
	int64_t total;               /* steps of the whole run (cosine) */
	int64_t step_size;           /* step decay */
	double gamma;
} ds_schedule;
double ds_schedule_lr(const ds_schedule *s, int64_t step);

/* ------------------------------------------------------------------ models */

/* A model ready to run: its container, its graph, and what ds-infer needs
 * beside them.  The first graph input takes the data and the first graph
 * output is the prediction ([N, K] logits for classifiers). */
typedef struct ds_model {
	char *path;                  /* as given ("-" for stdin) */
	ds_container *c;
	ds_graph *g;
	json_t *preprocess;          /* ds.preprocess, or NULL */
	json_t *labels;              /* ds.labels (array), or NULL */
	const char *input;           /* first graph input */
	const char *output;          /* first graph output */
	int64_t classes;             /* K of an [N, K] output; 0 otherwise */
} ds_model;

/* Load and check a model file ("-": stdin): a readable container (5), with
 * ds.format model/1 when present and a valid graph with at least one input
 * and one output (3, naming the file).  flags: DS_LOAD_*. */
int ds_model_load(const char *path, unsigned flags, ds_model **out, ds_error *err);
void ds_model_free(ds_model *m);
/* Size in bytes of the model's tensors (what ds-bench reports as size). */
uint64_t ds_model_bytes(const ds_model *m);

/* ----------------------------------------------------------- benchmarking */

/* What ds-bench measures (ds-bench.1): every model at every (device,
 * threads, batch) of the sweep, on random inputs of the model's shape or on
 * a labelled stream.  The lists are text as the command line gives them:
 * "1,8,64", or ranges "1-64*2" and "1-8+1"; NULL takes the default. */
typedef struct ds_bench_options {
	const char *const *models;   /* model files ("-": stdin, once) */
	size_t model_count;
	const char *data;            /* labelled .dst: inputs, and top-1/top-5/loss; NULL: random inputs */
	const char *batch;           /* batch sizes ("1,64") */
	const char *threads;         /* thread counts, 0 the default ("0") */
	const char *device;          /* devices: auto, cpu, cuda, cuda:N ("auto") */
	const char *warmup;          /* "N" runs or "Ts"/"Tms" of time ("0.2s") */
	int64_t repeat;              /* timed iterations at least (0 counts as 1) */
	double min_time;             /* and seconds at least */
	double max_cv;               /* percent: a higher coefficient of variation is flagged */
	int compare;                 /* add ratios to the first model */
	int continue_after_failure;  /* a failed configuration is a row with an error */
	int keep_samples;            /* the raw timings in the report's "samples" */
	int profile;                 /* per-node times in the report's "profile" */
	uint64_t seed;               /* random inputs */
	unsigned load_flags;         /* DS_LOAD_* for the models */
	const ds_cli *cli;           /* warnings, progress, --log events; may be NULL */
} ds_bench_options;

/* Run the sweep.  The report is a printer document: scalars (version, BLAS
 * kernels, data, settings, configurations, failed, error_rate) and the
 * tables "models" (size, parameters, FLOPs, accuracy), "results" (one row
 * per configuration: throughput mean and sd, CV, latency min/p50/p90/p99/max,
 * input, h2d, compute and d2h time, GFLOP/s, memory), "comparison" with
 * compare, "samples" with keep_samples, and "profile" (one row per node and
 * configuration: ms per batch, share of the run, GFLOP/s), measured in runs
 * of their own after the timed ones so that the clock reads around every
 * node never touch the figures above.  Usage errors are status 2; a
 * failure stops the run with its status unless continue_after_failure, when
 * the report is still returned and the status is 1. */
int ds_bench_run(const ds_bench_options *o, json_t **report, ds_error *err);
/* Write the report's samples, one row per timed iteration (model, device,
 * threads, batch, iteration, ms, compute_ms): CSV when path ends in .csv,
 * else JSON Lines; atomically, or to stdout for "-". */
int ds_bench_write_times(const json_t *report, const char *path, ds_error *err);

/* ----------------------------------------------------------- preprocessing */

/* A model's ds.preprocess applied to raw inputs, exactly as training saw
 * them: images are decoded (ds_image_decode, with the DCT-scaled JPEG decode
 * ds-clean uses), resized with ds_image_resize to the model's width, height,
 * channels and resize mode, and normalised to F32 CHW as
 * (pixel * scale - mean[c]) / std[c]; text is normalised
 * (ds_text_normalize, invalid UTF-8 replaced), cut to max_chars code points,
 * tokenized (ds_tokenizer) and padded with -1 to the model's length. */
struct ds_image;
struct ds_item;

/* The per-channel affine map from U8 to F32 that ds-train's loader and
 * ds-infer share.  mean and std hold up to 4 channels; a one-element array
 * applies to every channel.  Defaults: scale 1/255, mean 0, std 1. */
typedef struct ds_normalize {
	float scale;
	float mean[4];
	float inv_std[4];            /* 1 / std, as float */
} ds_normalize;

/* From a ds.preprocess object (may be NULL); status 3 for a std of 0 or a
 * value that is not a number. */
int ds_normalize_from_json(const json_t *preprocess, ds_normalize *out, ds_error *err);
/* HWC U8 pixels into CHW F32: dst[c][y][x] = (src[y][x][c] * scale - mean[c]) * inv_std[c]. */
void ds_normalize_apply(const ds_normalize *n, const uint8_t *src, int height, int width, int channels, float *dst);

typedef struct ds_preprocess ds_preprocess;

typedef enum ds_preprocess_kind { DS_PREPROCESS_IMAGE, DS_PREPROCESS_TEXT } ds_preprocess_kind;

/* The preprocess of a graph input: spec is the model's ds.preprocess (NULL
 * when absent: images then use the input's shape, scale 1/255 and resize
 * fill; text has no tokenizer and takes only packed ids); input is that
 * input's shape, F32 [N, C, H, W] or integer [N, L].  A spec that
 * disagrees with the input (another size, channels or kind) is status 3. */
int ds_preprocess_new(const json_t *spec, const ds_shape *input, ds_preprocess **out, ds_error *err);
void ds_preprocess_free(ds_preprocess *pp);
ds_preprocess_kind ds_preprocess_kind_of(const ds_preprocess *pp);
/* Elements of one item of the input tensor (C*H*W or L) and their dtype. */
int64_t ds_preprocess_item_elems(const ds_preprocess *pp);
ds_dtype ds_preprocess_dtype(const ds_preprocess *pp);
/* Images: the model's size and channels. */
void ds_preprocess_image_size(const ds_preprocess *pp, int *width, int *height, int *channels);
/* Text: the row length L; 0 for images.  1 when a tokenizer is known. */
int64_t ds_preprocess_length(const ds_preprocess *pp);
int ds_preprocess_has_tokenizer(const ds_preprocess *pp);

/* Encoded image bytes (PNG or JPEG of any kind) into one item of F32 CHW
 * (item_elems floats); status 3 with the decoder's code for bad bytes. */
int ds_preprocess_image(const ds_preprocess *pp, const void *buf, size_t len, float *out, ds_error *err);
/* Pixels already decoded (1 or 3 channels, any size): resized when their
 * size or channels differ from the model's, normalised as they are when
 * not. */
int ds_preprocess_pixels(const ds_preprocess *pp, const struct ds_image *img, float *out, ds_error *err);
/* Text bytes into L ids padded with -1 (status 3 "empty" for a text with
 * nothing left after normalisation, 2 without a tokenizer). */
int ds_preprocess_text(const ds_preprocess *pp, const char *text, size_t len, int32_t *out, ds_error *err);
/* Packed ids into L ids: cut, or padded with -1. */
void ds_preprocess_tokens(const ds_preprocess *pp, const int32_t *ids, size_t n, int32_t *out);
/* Any listed item (ds_source_list) into its row, reading files of at most
 * max_bytes (0: no limit); out holds item_elems of the dtype.  Status 3 or
 * 5 for that item alone, with a lower_snake code. */
int ds_preprocess_item(const ds_preprocess *pp, const struct ds_item *item, uint64_t max_bytes, void *out,
		       ds_error *err);

/* --------------------------------------------------------------- inference */

/* What ds-infer does, as options; the program fills it from its option
 * table.  Zero values take the documented defaults (ds-infer.1). */
typedef struct ds_infer_options {
	const char *model;            /* .dsm, "-" for stdin (then no input may be "-") */
	unsigned load_flags;          /* DS_LOAD_NO_VERIFY */
	const char *const *inputs;    /* images, folders, text, .jsonl, fortune, IDX, .dst, "-" */
	size_t input_count;
	const char *files_from;       /* paths, one per line ("-": stdin) */
	const struct ds_source_options *source;   /* NULL: the defaults */
	const char *output;           /* records or frames; NULL or "-": stdout */
	const char *output_format;    /* "jsonl" (default), "csv" or "dst" */
	const char *output_tensor;    /* dst: the model's output (default), "probs", or any value */
	int64_t batch;                /* 64 */
	int topk;                     /* 5, capped at the class count */
	int workers;                  /* decoding threads; 0: as many as compute threads */
	int shard_index, shard_count; /* --shard K/N: every N-th item from the K-th; 0/0 off */
	uint64_t buffer_bytes;        /* items of packed streams held at once (64 MiB when 0) */
	ds_device device;
	const ds_cli *cli;            /* progress, log, history; may be NULL */
} ds_infer_options;

/* Run the model over every item, in input order, writing one record (or
 * one row of a frame) per item; an item that cannot be read or decoded is
 * an error record and the run goes on.  The summary (items, errors,
 * images/s, and with labelled inputs top-1 and top-5 accuracy, per-class
 * accuracy and a confusion matrix) is a printer document, set whenever the
 * run got as far as the items.  Status 3 with code "item_errors" when any
 * item failed; 3 or 5 when the model or an input as a whole cannot be used,
 * naming the file and the shapes; 2 for options that do not fit. */
int ds_infer_run(const ds_infer_options *o, json_t **summary, ds_error *err);

/* ------------------------------------------------------ training programs */

/* The built-in architectures (ds-train.1) and JSON architecture files
 * (ds-formats.5), made into a model container: ds.graph with input "x" and
 * output "logits" [N, K], parameters initialised as PyTorch's layers do by
 * default from a seeded generator, and ds.format, ds.preprocess, ds.labels. */
typedef struct ds_zoo_options {
	const char *arch;            /* a built-in name, or a path ending in .json */
	const json_t *preprocess;    /* the data's ds.preprocess: input shape or vocabulary; may be NULL */
	const json_t *labels;        /* JSON array of class names; its length is K */
	int64_t classes;             /* K when labels is NULL */
	uint64_t seed;
} ds_zoo_options;

/* Unknown names are status 2; a bad architecture file status 3 (5 unreadable). */
int ds_zoo_build(const ds_zoo_options *o, ds_container **out, ds_error *err);
/* The built-in names, NULL-terminated, and one line about each. */
const char *const *ds_zoo_names(void);
const char *ds_zoo_describe(const char *name);

/* A whole labelled stream in memory: U8 NHWC images or I32 token ids (padded
 * with -1 to the longest row), I32 labels, and the stream's ds.preprocess and
 * ds.labels.  Frames must agree with the first in dtype and shape (status 3
 * naming the file, frame and tensor). */
typedef struct ds_dataset ds_dataset;
int ds_dataset_load(const char *path, ds_dataset **out, ds_error *err);
void ds_dataset_free(ds_dataset *d);
int64_t ds_dataset_count(const ds_dataset *d);
/* The shape of one item: [H, W, C] for images, [L] for tokens. */
int ds_dataset_item_shape(const ds_dataset *d, int64_t *shape, int *ndim, ds_dtype *dtype);
const json_t *ds_dataset_preprocess(const ds_dataset *d);   /* borrowed; may be NULL */
const json_t *ds_dataset_labels(const ds_dataset *d);       /* borrowed; may be NULL */
/* Move a seeded random fraction of the items into a new dataset (--val-split). */
int ds_dataset_split(ds_dataset *d, double fraction, uint64_t seed, ds_dataset **val, ds_error *err);
/* Status 3 unless the items fit input "x" of the graph (an NCHW F32 image
 * input or an [N, L] integer one; a longer token row than L is cut) and every
 * label is in [0, classes). */
int ds_dataset_check(const ds_dataset *d, const ds_graph *g, int64_t classes, ds_error *err);

/* Batches of a dataset for a graph input: F32 NCHW scaled by the
 * preprocess scale, or I32 ids; augmented on a worker thread that prepares
 * the next batch while the caller computes.  The order and the augmentation
 * depend only on the seed, the epoch and the position, never on threads. */
#define DS_AUGMENT_CROP 1u   /* random crop of the image padded by 4 */
#define DS_AUGMENT_FLIP 2u   /* horizontal flip with probability 1/2 */
int ds_augment_parse(const char *text, unsigned *out);   /* "none", "crop", "flip", "crop,flip" */

typedef struct ds_loader_options {
	int64_t batch;
	int shuffle;
	unsigned augment;
	uint64_t seed;
	int64_t length;              /* token rows: ids per row (the graph's L); 0 keeps the data's */
} ds_loader_options;

typedef struct ds_loader ds_loader;
/* The loader reads the dataset from its own thread: free it before the
 * dataset, and do not split a dataset a loader is reading. */
int ds_loader_new(const ds_dataset *d, const ds_loader_options *o, ds_loader **out, ds_error *err);
void ds_loader_free(ds_loader *l);
int64_t ds_loader_batches(const ds_loader *l);   /* per epoch; the last may be short */
/* Start at batch index of epoch (0-based): the next call returns that batch. */
int ds_loader_seek(ds_loader *l, int64_t epoch, int64_t batch, ds_error *err);
/* The next batch of the epoch into x and y (owned by the loader, valid until
 * the next call) with *n items; *n = 0 at the end of the epoch, after which
 * the loader moves to the next epoch. */
int ds_loader_next(ds_loader *l, ds_tensor **x, ds_tensor **y, int64_t *n, ds_error *err);

/* The whole of ds-train (ds-train.1), as options.  Zero values take the
 * documented defaults. */
typedef struct ds_train_options {
	const char *arch;            /* built-in name or FILE.json (not with finetune/resume) */
	const char *data;            /* training stream */
	const char *val;             /* validation stream, or NULL */
	double val_split;            /* or a fraction of data held out */
	const char *finetune;        /* start from this model's weights */
	const char *resume;          /* continue this checkpoint exactly */
	const char *output;          /* the model (the best by validation accuracy) */
	const char *checkpoint;      /* checkpoint file, or NULL */
	int64_t checkpoint_every;    /* steps; 0: only at the end and on interrupt */
	int64_t epochs;              /* 0 writes the initial model */
	int64_t max_steps;           /* stop after this many steps (0: no limit) */
	int64_t batch;               /* 64 */
	ds_optim_options optim;
	ds_schedule schedule;        /* kind, lr, warmup, step_size, gamma; total is computed */
	int64_t accum;               /* batches per step (1) */
	double clip;                 /* global gradient norm limit (0: off) */
	double label_smoothing;
	double dropout;              /* < 0 keeps the architecture's; else every dropout's p */
	unsigned augment;
	int no_shuffle;
	const char *teacher;         /* distil from this model (its logits, softened by temperature) */
	double temperature, distill_weight;
	double sparsity;             /* L1 penalty on batch-norm scales (network slimming); 0: off */
	int qat;                     /* quantization-aware: ds_quantize_prepare_qat before training */
	int profile;                 /* per-node milliseconds a step in the summary's "profile" */
	uint64_t seed;
	ds_device device;
	const ds_cli *cli;           /* progress, --log events, history; may be NULL */
} ds_train_options;

/* Train and write the model; the summary (epochs, losses, accuracies,
 * images/s) is a printer document.  A NaN or infinite loss is status 1
 * naming the step (the last checkpoint is kept); an interrupt saves a
 * checkpoint and returns 130. */
int ds_train_run(const ds_train_options *o, json_t **summary, ds_error *err);

/* ---------------------------------------------------------------- pruning */

/* What ds-prune does (ds-prune.1), as options.  Zero values take the
 * documented defaults. */
typedef struct ds_prune_options {
	const char *criterion;       /* "l1" (default), "bn-gamma" or "taylor" */
	double ratio;                /* fraction of each group's channels removed, [0, 1] */
	const char *const *layer_ratios;   /* "PATTERN=R": groups with a layer whose name matches */
	size_t layer_ratio_count;
	int64_t min_channels;        /* a group keeps at least this many (1) */
	int64_t round;               /* kept channels rounded up to a multiple of this (1) */
	int prune_first;             /* also prune the layers that read the graph input */
	int prune_last;              /* and the channels the last layer reads */
	const char *data;            /* taylor: a labelled .dst */
	int64_t batch;               /* taylor: items per batch (32) */
	int64_t data_count;          /* taylor: items at most (0: the whole stream) */
	const ds_cli *cli;           /* warnings and -v notes; may be NULL */
} ds_prune_options;

/* Remove output channels of convolutions and linear layers and the matching
 * input channels of every reader, in place: a smaller dense model.
 * Channels tied by add, mul, concat or depthwise convolutions go together;
 * ops the analysis does not follow stop it (their channels stay, and the
 * report's "notes" say so).  The report holds "figures" (channels,
 * parameters and FLOPs before and after), "layers" (one row per
 * convolution and linear layer), "groups" (channels kept per group and
 * why) and "notes".  Status 2 for a bad option or a ratio that removes
 * every channel of a group, 3 for a model that does not parse or has
 * non-float, NaN or infinite weights. */
int ds_prune_model(ds_container *model, const ds_prune_options *o, json_t **report, ds_error *err);

/* ----------------------------------------------------------- optimization */

/* What ds-optimize does (ds-optimize.1), as options. */
typedef struct ds_optimize_options {
	const char *target;          /* "cpu" (default) or "cuda" */
	int level;                   /* -O0 to -O3; -1 takes 2 */
	const char *disable;         /* comma-separated pass names, or NULL */
	int64_t batch;               /* batch of the memory-plan figures (64) */
	const ds_cli *cli;           /* -v logs each rewrite; may be NULL */
} ds_optimize_options;

/* Rewrite the model's graph and parameters in place, pass by pass; the
 * report holds "figures" (nodes, parameters, FLOPs and arena bytes before
 * and after) and "passes" (one row per pass: state, rewrites, log).  Unknown
 * ops pass through untouched.  Status 2 for a bad option, 3 for a model
 * whose graph does not parse, 1 when a pass breaks the graph (a bug). */
int ds_optimize_model(ds_container *model, const ds_optimize_options *o, json_t **report, ds_error *err);
/* The passes, their levels and what each does, as a printer document. */
json_t *ds_optimize_pass_table(void);
/* ds-optimize --tune: time each convolution's candidate kernels on this
 * machine at batch (64 when 0), with the current thread count, and record
 * the fastest in the graph (node attributes "kernel" and "chunk"), keeping
 * the records only when the whole model gets faster.  The report holds
 * "figures" (tune_* counts and whole-model milliseconds before and after)
 * and "tune" (one row per convolution with a choice). */
int ds_tune_model(ds_container *model, int64_t batch, const ds_cli *cli, json_t **report, ds_error *err);

/* Run two models on the same count seeded random inputs (batches of 64)
 * and compare their first outputs: figures inputs, max_abs_diff,
 * max_rel_diff (max |a - b| over max |a|), top1_agreement. */
int ds_model_compare(ds_container *a, ds_container *b, int64_t count, uint64_t seed, json_t **figures,
		     ds_error *err);

/* ----------------------------------------------------------- quantization */

/* What ds-quantize does (ds-quantize.1), as options.  Zero values take the
 * documented defaults. */
typedef struct ds_quantize_options {
	const char *mode;            /* "static" (default): U8 activations calibrated on calib;
				      * "dynamic": I8 weights, activations quantized per call */
	const char *method;          /* "minmax", "percentile" (default) or "entropy" */
	double percentile;           /* of |values| kept by "percentile" (99.99) */
	const char *calib;           /* a .dst stream of inputs (static mode; a QAT model's ranges need none) */
	int64_t calib_count;         /* items of it at most (1000) */
	int64_t batch;               /* calibration batch (64) */
	const char *const *skip;     /* fnmatch patterns of node names kept in float */
	size_t skip_count;
	int skip_first_last;         /* keep the first and last convolution or linear layer in float */
	int no_bias_correction;      /* keep the float biases (static mode corrects them by default) */
	const ds_cli *cli;           /* -v logs each rewrite; may be NULL */
} ds_quantize_options;

/* Fold batch norm (ds_optimize_model at -O2), calibrate, and rewrite the
 * model in place: convolutions and linear layers become qconv2d and
 * qlinear with I8 weights symmetric per output channel ("<w>" I8 and
 * "<w>_scale" F32 [O]), activations U8 through chains of INT8 ops, with
 * quantize and dequantize at the edges (ds-formats.5).  The report holds
 * "figures" (nodes, bytes before and after), "layers" (one row per node:
 * what it became), "tensors" (bytes before and after) and "activations"
 * (range, scale and zero point of each).  Status 2 for a bad option, 3 for
 * calibration data that does not fit the model (both shapes named), NaN or
 * infinite weights, or a model that is already quantized. */
int ds_quantize_model(ds_container *model, const ds_quantize_options *o, json_t **report, ds_error *err);

/* Prepare a float model for quantization-aware training, in place: fold
 * batch norm (nothing fused), then put a fake_quant node (ds-formats.5) on
 * each value ds_quantize_model would make U8, with a range parameter
 * "<value>.qat_range" that training learns, and on the weights of each
 * layer it would make INT8.  A model that already has fake_quant nodes is
 * left as it is.  ds_quantize_model takes the learned ranges from such a
 * model instead of calibrating.  The report holds "prepared" and the counts
 * of nodes added.  Status 3 for a quantized model, one whose activations
 * are fused (ds-optimize's output), or one with nothing to quantize. */
int ds_quantize_prepare_qat(ds_container *model, const ds_cli *cli, json_t **report, ds_error *err);

/* Run a float model and its quantized form on the first count items of a
 * labelled stream (count <= 0: all) and compare their first outputs:
 * figures items, top1_agreement, kl_divergence (mean KL of the softmax of
 * the INT8 outputs from the float ones), max_abs_error, accuracy_float and
 * accuracy_int8. */
int ds_quantize_compare(ds_container *float_model, ds_container *int8_model, const char *data, int64_t count,
			int64_t batch, json_t **figures, ds_error *err);

/* ----------------------------------------------------------------- images */

typedef enum ds_image_format {
	DS_IMAGE_UNKNOWN = 0, DS_IMAGE_PNG, DS_IMAGE_JPEG
} ds_image_format;

/* What a file holds, read from its header without decoding the pixels. */
typedef struct ds_image_info {
	ds_image_format format;
	int width, height;          /* as displayed: EXIF orientation applied */
	int channels;               /* channels in the file: 1 gray, 2 gray+alpha, 3, 4 (RGBA or CMYK) */
	int bit_depth;              /* 8 or 16 (PNG may say 1, 2, 4) */
	int has_alpha, is_palette, is_cmyk, is_progressive;
	int orientation;            /* EXIF orientation 1..8; 1 when absent */
} ds_image_info;

/* Decoded pixels: 8-bit, HWC, rows top to bottom. */
typedef struct ds_image {
	int width, height, channels;   /* channels 1 (gray) or 3 (RGB) */
	uint8_t *pixels;               /* malloc'd; ds_image_free */
} ds_image;

const char *ds_image_format_name(ds_image_format fmt);   /* "png", "jpeg", "unknown" */
/* The format from the first bytes (magic numbers), whatever the name says. */
ds_image_format ds_image_sniff(const void *buf, size_t len);
/* Header only.  Not an image: status 3 code "not_image". */
int ds_image_probe(const void *buf, size_t len, ds_image_info *info, ds_error *err);
/* Decode to channels 1 or 3 (0: gray stays gray, anything else RGB).  Alpha
 * is composited over white, 16-bit reduced to 8, palette expanded, CMYK
 * converted, EXIF orientation applied.  min_width/min_height > 0 let a JPEG
 * decode at a DCT-scaled size no smaller than that (the cheap downscale).
 * Any decoder warning (libjpeg's "premature end of data", a PNG CRC error)
 * is corruption: status 3 with code "truncated" or "corrupt". */
int ds_image_decode(const void *buf, size_t len, int channels, int min_width, int min_height,
		    ds_image *out, ds_image_info *info, ds_error *err);
void ds_image_free(ds_image *img);

typedef enum ds_resize_mode {
	DS_RESIZE_FIT,       /* whole image inside, letterboxed with black */
	DS_RESIZE_FILL,      /* cover the target, centre crop the excess */
	DS_RESIZE_STRETCH    /* both axes to the target, aspect ignored */
} ds_resize_mode;

int ds_resize_mode_parse(const char *text, ds_resize_mode *out);
/* Resample (area averaging when shrinking, bilinear when growing) into out,
 * width*height*channels bytes, converting channels (1 <-> 3) as asked. */
int ds_image_resize(const ds_image *in, int width, int height, int channels, ds_resize_mode mode,
		    uint8_t *out, ds_error *err);
/* Encode as PNG or JPEG (quality 1-100) into a malloc'd buffer. */
int ds_image_encode(const ds_image *img, ds_image_format fmt, int quality, void **buf, size_t *len,
		    ds_error *err);

/* ----------------------------------------------------------------- hashes */

/* A 128-bit content hash of bytes, for exact duplicates. */
typedef struct ds_hash128 { uint64_t lo, hi; } ds_hash128;
ds_hash128 ds_hash_bytes(const void *data, size_t len);
/* "32 lowercase hex digits" into buf[33]. */
const char *ds_hash128_hex(ds_hash128 h, char *buf);

/* A 64-bit perceptual hash (DCT of a 32x32 gray copy, 8x8 low frequencies
 * against their median): near-identical images differ in few bits. */
uint64_t ds_image_phash(const ds_image *img);
int ds_hamming(uint64_t a, uint64_t b);

/* An index of 64-bit hashes that finds an earlier hash within a Hamming
 * distance without comparing against every entry (multi-index hashing). */
typedef struct ds_hamming_index ds_hamming_index;
ds_hamming_index *ds_hamming_index_new(int max_distance);
/* Add hash under id; return the id of the nearest earlier hash within the
 * distance (ties: the earliest), or -1; *distance gets its distance.
 * max_distance is 0..64 (above 15 the index scans); -2: out of memory. */
int64_t ds_hamming_index_add(ds_hamming_index *ix, uint64_t hash, int64_t id, int *distance);
void ds_hamming_index_free(ds_hamming_index *ix);

/* MinHash over character shingles (Unicode code points) with LSH banding. */
#define DS_MINHASH_SIZE 128
void ds_minhash(const char *text, size_t len, int shingle, uint32_t sig[DS_MINHASH_SIZE]);
double ds_minhash_similarity(const uint32_t *a, const uint32_t *b);   /* estimated Jaccard */
typedef struct ds_lsh_index ds_lsh_index;
/* Bands and rows are chosen for the Jaccard threshold (0..1]. */
ds_lsh_index *ds_lsh_index_new(double threshold);
/* Add sig under id; return the id of the most similar earlier text whose
 * estimated Jaccard reaches the threshold (ties: the earliest), or -1;
 * -2: out of memory.  NULL from _new: threshold outside (0, 1]. */
int64_t ds_lsh_index_add(ds_lsh_index *ix, const uint32_t sig[DS_MINHASH_SIZE], int64_t id, double *similarity);
void ds_lsh_index_free(ds_lsh_index *ix);

/* ------------------------------------------------------------------- text */

/* Bytes of invalid UTF-8 (overlong forms, surrogates, > U+10FFFF, cut
 * sequences); 0 when valid.  *first_bad gets the offset of the first. */
size_t ds_utf8_invalid(const char *s, size_t len, size_t *first_bad);
/* Number of code points of valid UTF-8 (each maximal invalid subpart of
 * invalid UTF-8 counts as one, as the U+FFFD replacing it would). */
size_t ds_utf8_length(const char *s, size_t len);
/* Decode the code point at s (len > 0) into *cp: returns the bytes it takes,
 * or, where the UTF-8 is invalid, minus the length of the maximal invalid
 * subpart there (Unicode's U+FFFD substitution practice), *cp = U+FFFD. */
int ds_utf8_decode(const char *s, size_t len, uint32_t *cp);

/* What normalisation changed, for the report. */
typedef struct ds_text_fixes {
	int bom;             /* a leading byte-order mark was removed */
	size_t invalid;      /* invalid bytes replaced by U+FFFD (repair) */
	size_t control;      /* control characters removed (tab and newline become spaces) */
	int whitespace;      /* runs of white space collapsed, ends trimmed */
} ds_text_fixes;

/* Normalise into a malloc'd NUL-terminated copy: drop a BOM, replace invalid
 * UTF-8 with U+FFFD, remove control characters, collapse white space (Unicode
 * spaces included) to single spaces and trim.  The caller decides whether
 * invalid input is dropped (check ds_utf8_invalid first) or repaired. */
char *ds_text_normalize(const char *s, size_t len, size_t *out_len, ds_text_fixes *fixes);

/* Text to token ids.  Kinds: "bytes" (UTF-8 bytes, ids 0-255) and "ngrams"
 * (hashed word unigrams and bigrams and character n-grams into buckets, as
 * fastText does).  The spec travels with streams and models as JSON. */
typedef struct ds_tokenizer ds_tokenizer;
int ds_tokenizer_new(const json_t *spec, ds_tokenizer **out, ds_error *err);
json_t *ds_tokenizer_spec(const ds_tokenizer *tok);     /* new reference */
int64_t ds_tokenizer_vocab(const ds_tokenizer *tok);    /* ids are < this */
/* Up to max_ids ids into ids; returns how many. */
size_t ds_tokenizer_encode(const ds_tokenizer *tok, const char *text, size_t len, int32_t *ids, size_t max_ids);
void ds_tokenizer_free(ds_tokenizer *tok);

/* ------------------------------------------------------------ data sources */

/* One input item before any check: a file to read, or bytes already in
 * memory (a record of an IDX set, a frame row, a text entry). */
typedef enum ds_item_kind {
	DS_ITEM_FILE,        /* path: an image or text file, read later */
	DS_ITEM_PIXELS,      /* data: U8 HWC pixels, width x height x channels */
	DS_ITEM_TEXT,        /* data: text bytes (not yet validated) */
	DS_ITEM_TOKENS,      /* data: int32 token ids from a packed stream */
	DS_ITEM_ERROR        /* could not be listed or read: code and message say why */
} ds_item_kind;

typedef struct ds_item {
	ds_item_kind kind;
	char *id;            /* path, "train-images-idx3-ubyte.gz#41", "fortunes/art#3" */
	char *path;          /* the file for DS_ITEM_FILE (may be non-UTF-8) */
	char *label;         /* class name, or NULL when unlabelled */
	void *data;          /* DS_ITEM_PIXELS/TEXT/TOKENS: malloc'd bytes */
	size_t len;          /* bytes of data; for TOKENS, ids */
	int width, height, channels;
	uint64_t file_bytes; /* size on disk for DS_ITEM_FILE */
	char code[32];       /* DS_ITEM_ERROR: reason code ("unreadable", "symlink_loop") */
	char message[256];
} ds_item;

void ds_item_free(ds_item *item);   /* frees fields and the item */

/* How inputs are listed (ds_source_list). */
typedef struct ds_source_options {
	const char *text_field;      /* JSON Lines field of the text ("text") */
	const char *label_field;     /* and of the label ("label") */
	int labels_from_dirs;        /* class sub-folders give labels (1) */
	uint64_t max_bytes;          /* files larger are DS_ITEM_ERROR "too_large"; 0: no limit */
} ds_source_options;

/* A growing list of items, in input order. */
typedef struct ds_item_list {
	ds_item **items;
	size_t count, cap;
	char **classes;              /* class names seen (sorted by ds_item_list_classes) */
	size_t class_count;
} ds_item_list;

/* List one input into list: a directory (recursive, sorted, symlink loops
 * detected, unreadable entries become DS_ITEM_ERROR items), an image or text
 * file, an IDX image file (its label file found beside it: -labels-idx1-ubyte
 * for -images-idx3-ubyte, gzipped or not) or a folder holding such a pair,
 * a JSON Lines file, a fortune file (entries between '%' lines; the label is
 * the file name), a .dst stream, or "-" (a stream on stdin).  Status 3 or 5
 * only when the input as a whole cannot be read. */
int ds_source_list(const char *input, const ds_source_options *opts, ds_item_list *list, ds_error *err);
/* Read paths, one per line, from a file or "-" (--files-from). */
int ds_source_list_files_from(const char *from, const ds_source_options *opts, ds_item_list *list,
			      ds_error *err);
int ds_item_list_push(ds_item_list *list, ds_item *item, ds_error *err);   /* takes item */
/* Sorted, unique class names of the labelled items. */
int ds_item_list_classes(ds_item_list *list, ds_error *err);
void ds_item_list_free(ds_item_list *list);

/* The kind of file by name and first bytes: image, text, jsonl, fortune, idx, dst. */
typedef enum ds_file_kind {
	DS_FILE_OTHER, DS_FILE_IMAGE, DS_FILE_TEXT, DS_FILE_JSONL, DS_FILE_FORTUNE, DS_FILE_IDX, DS_FILE_DST
} ds_file_kind;
ds_file_kind ds_file_kind_of(const char *path);

/* Read a whole file (at most max_bytes; 0: no limit) into a malloc'd buffer;
 * gzip is not undone.  Status 5 naming the path, or 3 "too_large". */
int ds_file_read(const char *path, uint64_t max_bytes, void **buf, size_t *len, ds_error *err);

/* Class names for the labels of an IDX set, by index: Fashion-MNIST's ten
 * when path (or where it resolves to) contains "fashion", else NULL (labels
 * are then the decimal index). */
const char *const *ds_idx_class_names(const char *path, size_t *count);

/* --------------------------------------------------------------- cleaning */

/* What ds-clean does, as options; the program fills it from its option
 * table.  Zero values take the documented defaults (ds-clean.1). */
typedef struct ds_clean_options {
	const char *const *inputs;   /* files, folders, IDX, .jsonl, fortune, .dst, "-" */
	size_t input_count;
	const char *files_from;      /* a list of paths, one per line ("-": stdin) */
	ds_source_options source;
	const char *kind;            /* "auto" (default), "image" or "text" */

	const char *output;          /* the packed .dst, "-" for stdout, or NULL */
	const char *output_dir;      /* a cleaned copy of the tree, or NULL */
	const char *report;          /* JSON Lines, one record per item, or NULL */
	const char *encode;          /* NULL (copy files), "png" or "jpeg" */
	int jpeg_quality;            /* 95 */
	const char *split;           /* "0.9,0.1" or "train=0.8,val=0.1,test=0.1"; NULL: one stream */
	uint64_t seed;
	int shard_index, shard_count;  /* --shard K/N: K in 1..N; 0/0 off */
	int frame_items;             /* items per frame, 1024 */

	int width, height;           /* --size; 0: the first image's */
	int channels;                /* 1 or 3; 0: the first image's */
	ds_resize_mode resize;       /* fill */
	int min_width, min_height;   /* 8x8 */
	double max_aspect;           /* 10 */
	double blank_stddev;         /* 2.0 (luma standard deviation) */
	int near_distance;           /* 4 (pHash bits); -1 turns the check off */

	int repair;                  /* replace invalid UTF-8 instead of dropping */
	int min_chars, max_chars;    /* 1, 2048 (code points after normalisation) */
	double near_jaccard;         /* 0.8; 0 turns the check off */
	int shingle;                 /* 5 code points */
	const char *tokenizer;       /* "bytes" (default) or "ngrams" */
	int ngram_buckets;           /* 1048576 */
	int max_tokens;              /* 1024 */

	const char *drop;            /* reason codes to drop rather than warn */
	const char *keep;            /* reason codes to keep (as warnings) rather than drop */
	int strict;                  /* every warning drops */
	const char *fail_on;         /* reason codes that make the run fail (status 1) */
	double max_imbalance;        /* 10: largest class over smallest */

	const ds_cli *cli;           /* progress and log messages; may be NULL */
	int argc;                    /* for ds.history */
	char **argv;
} ds_clean_options;

/* Run the whole cleaning: list, check, de-duplicate, split, write.  The
 * summary (counts per reason, class and split) is returned as a printer
 * document.  Status 0 when the run completed, even with items dropped; 1 when
 * a --fail-on reason occurred (outputs are still written); 3 or 5 only when an
 * input as a whole cannot be read or an output cannot be written; 2 for
 * options that do not fit the data. */
int ds_clean_run(const ds_clean_options *opts, json_t **summary, ds_error *err);
/* The reason codes with their default actions, as a printer document. */
json_t *ds_clean_reason_table(void);

/* ---------------------------------------------------------------- version */

const char *ds_version(void);

#ifdef __cplusplus
}
#endif
#endif
