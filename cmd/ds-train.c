/* ds-train - train a model, or fine-tune one, on a tensor stream. */
#include <stdio.h>
#include <string.h>

#include "ds.h"

static const ds_option options[] = {
	{ "arch", 0, DS_OPT_STRING, "NAME|FILE", "architecture: a built-in name (--list-archs) or a JSON file", NULL, "cnn-small" },
	{ "list-archs", 0, DS_OPT_FLAG, NULL, "list the built-in architectures and exit", NULL, NULL },
	{ "data", 0, DS_OPT_STRING, "FILE", "training stream (.dst, - for stdin)", NULL, NULL },
	{ "val", 0, DS_OPT_STRING, "FILE", "validation stream: loss and accuracy each epoch, the best model kept", NULL, NULL },
	{ "val-split", 0, DS_OPT_FLOAT, "F", "hold out this fraction of --data for validation", NULL, "0" },
	{ "finetune", 0, DS_OPT_STRING, "MODEL", "start from MODEL's weights, keeping its preprocess and labels", NULL, NULL },
	{ "resume", 0, DS_OPT_STRING, "CKPT", "continue a checkpoint exactly", NULL, NULL },
	{ "epochs", 0, DS_OPT_INT, "N", "passes over the data (0 writes the initial model)", NULL, "5" },
	{ "max-steps", 0, DS_OPT_INT, "N", "stop after N optimizer steps (0: no limit)", NULL, "0" },
	{ "batch", 0, DS_OPT_INT, "N", "items per batch", NULL, "64" },
	{ "optimizer", 0, DS_OPT_STRING, "NAME", "sgd or adamw", NULL, "adamw" },
	{ "lr", 0, DS_OPT_FLOAT, "F", "learning rate", NULL, "0.001" },
	{ "momentum", 0, DS_OPT_FLOAT, "F", "sgd momentum", NULL, "0.9" },
	{ "nesterov", 0, DS_OPT_FLAG, NULL, "sgd with Nesterov momentum", NULL, NULL },
	{ "weight-decay", 0, DS_OPT_FLOAT, "F", "weight decay (decoupled for adamw, L2 for sgd)", NULL, "0.0001" },
	{ "schedule", 0, DS_OPT_STRING, "KIND", "learning rate schedule: constant, cosine or step", NULL, "constant" },
	{ "warmup", 0, DS_OPT_INT, "N", "steps of linear warmup", NULL, "0" },
	{ "step-size", 0, DS_OPT_INT, "N", "step schedule: steps between decays", NULL, "1000" },
	{ "gamma", 0, DS_OPT_FLOAT, "F", "step schedule: factor of each decay", NULL, "0.1" },
	{ "accum", 0, DS_OPT_INT, "N", "batches accumulated into one step", NULL, "1" },
	{ "clip", 0, DS_OPT_FLOAT, "NORM", "clip the global gradient norm to NORM (0: off)", NULL, "0" },
	{ "label-smoothing", 0, DS_OPT_FLOAT, "F", "label smoothing of the cross-entropy", NULL, "0" },
	{ "dropout", 0, DS_OPT_FLOAT, "P", "set every dropout's probability while training (0 turns dropout off)", NULL, NULL },
	{ "augment", 0, DS_OPT_STRING, "LIST", "image augmentation: none, crop, flip or crop,flip", NULL, "none" },
	{ "no-shuffle", 0, DS_OPT_FLAG, NULL, "keep the stream's order in every epoch", NULL, NULL },
	{ "checkpoint", 0, DS_OPT_STRING, "FILE", "checkpoint file (default: the output with .ckpt added)", NULL, NULL },
	{ "checkpoint-every", 0, DS_OPT_INT, "N", "write the checkpoint every N steps (0: at epoch ends)", NULL, "0" },
	{ "teacher", 0, DS_OPT_STRING, "MODEL", "distil from MODEL: (1-W) cross-entropy + W T^2 KL(teacher || student)", NULL, NULL },
	{ "temperature", 0, DS_OPT_FLOAT, "T", "distillation temperature", NULL, "4" },
	{ "distill-weight", 0, DS_OPT_FLOAT, "W", "weight of the distillation loss", NULL, "0.5" },
	{ "sparsity", 0, DS_OPT_FLOAT, "L", "L1 penalty on batch-norm scales, to prepare for ds-prune (0: off)", NULL, "0" },
	{ "qat", 0, DS_OPT_FLAG, NULL, "quantization-aware training: fold batch norm, fake-quantize what ds-quantize will quantize", NULL, NULL },
	{ "profile", 0, DS_OPT_FLAG, NULL, "time every node's forward and backward pass and print a table of where a step goes", NULL, NULL },
	{ NULL, 0, 0, NULL, NULL, NULL, NULL }
};

static const ds_program program = {
	.name = "ds-train",
	.usage = "[OPTIONS] --data FILE -o MODEL",
	.summary = "Train a model, or fine-tune one, on a tensor stream.",
	.options = options,
	.formats = "text,md,json",
	.min_args = 0,
	.max_args = 0,
};

static int list_archs(void)
{
	const char *const *names = ds_zoo_names();

	for (size_t i = 0; names[i]; i++)
		printf("%-14s %s\n", names[i], ds_zoo_describe(names[i]));
	return 0;
}

int main(int argc, char **argv)
{
	ds_error err = { 0 };
	ds_train_options o = { 0 };
	json_t *summary = NULL;
	ds_cli *cli;
	int done, rc;

	rc = ds_cli_start(&cli, &program, argc, argv, &done);
	if (rc || done)
		return rc;
	if (ds_cli_flag(cli, "list-archs")) {
		rc = list_archs();
		goto out;
	}
	o.arch = ds_cli_get(cli, "arch");
	o.data = ds_cli_get(cli, "data");
	o.val = ds_cli_get(cli, "val");
	o.val_split = ds_cli_float(cli, "val-split");
	o.finetune = ds_cli_get(cli, "finetune");
	o.resume = ds_cli_get(cli, "resume");
	o.output = ds_cli_get(cli, "output");
	o.checkpoint = ds_cli_get(cli, "checkpoint");
	o.checkpoint_every = ds_cli_int(cli, "checkpoint-every");
	o.epochs = ds_cli_int(cli, "epochs");
	o.max_steps = ds_cli_int(cli, "max-steps");
	o.batch = ds_cli_int(cli, "batch");
	o.optim.kind = ds_cli_get(cli, "optimizer");
	o.optim.momentum = ds_cli_float(cli, "momentum");
	o.optim.nesterov = ds_cli_flag(cli, "nesterov");
	o.optim.weight_decay = ds_cli_float(cli, "weight-decay");
	o.optim.beta1 = 0.9;
	o.optim.beta2 = 0.999;
	o.optim.eps = 1e-8;
	o.schedule.kind = ds_cli_get(cli, "schedule");
	o.schedule.lr = ds_cli_float(cli, "lr");
	o.schedule.warmup = ds_cli_int(cli, "warmup");
	o.schedule.step_size = ds_cli_int(cli, "step-size");
	o.schedule.gamma = ds_cli_float(cli, "gamma");
	o.accum = ds_cli_int(cli, "accum");
	o.clip = ds_cli_float(cli, "clip");
	o.label_smoothing = ds_cli_float(cli, "label-smoothing");
	o.dropout = ds_cli_get(cli, "dropout") ? ds_cli_float(cli, "dropout") : -1.0;
	o.no_shuffle = ds_cli_flag(cli, "no-shuffle");
	o.teacher = ds_cli_get(cli, "teacher");
	o.temperature = ds_cli_float(cli, "temperature");
	o.distill_weight = ds_cli_float(cli, "distill-weight");
	o.sparsity = ds_cli_float(cli, "sparsity");
	o.qat = ds_cli_flag(cli, "qat");
	o.profile = ds_cli_flag(cli, "profile");
	o.seed = (uint64_t)ds_cli_int(cli, "seed");
	o.device = ds_cli_device(cli);
	o.cli = cli;
	/* --arch has a default; it only counts against --finetune and --resume
	 * when given. */
	if (o.finetune || o.resume)
		o.arch = NULL;
	if (ds_augment_parse(ds_cli_get(cli, "augment"), &o.augment) != 0) {
		rc = ds_error_set(&err, DS_ERR_USAGE, "usage", "--augment: '%s' is not none, crop, flip or crop,flip",
				  ds_cli_get(cli, "augment"));
		goto out;
	}
	if (strcmp(o.optim.kind, "sgd") && strcmp(o.optim.kind, "adamw")) {
		rc = ds_error_set(&err, DS_ERR_USAGE, "usage", "--optimizer: '%s' is not sgd or adamw", o.optim.kind);
		goto out;
	}
	if (strcmp(o.schedule.kind, "constant") && strcmp(o.schedule.kind, "cosine") &&
	    strcmp(o.schedule.kind, "step")) {
		rc = ds_error_set(&err, DS_ERR_USAGE, "usage", "--schedule: '%s' is not constant, cosine or step",
				  o.schedule.kind);
		goto out;
	}
	/* Finish the step and save a checkpoint rather than die at once. */
	ds_cli_catch_interrupts(1);
	rc = ds_train_run(&o, &summary, &err);
	ds_cli_catch_interrupts(0);
	/* The summary goes to stderr: stdout may carry the model. */
	if (summary && ds_cli_verbosity(cli) >= 0) {
		ds_error print_err = { 0 };

		ds_print(stderr, ds_cli_format(cli), summary, &print_err);
	}
out:
	json_decref(summary);
	return ds_cli_finish(cli, rc, &err);
}
