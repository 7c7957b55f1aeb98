/* infer.h - private to ds-infer's pipeline (infer.c).
 *
 * The pipeline has three stages: worker threads read, decode and
 * preprocess items into one of two batch slots; the calling thread copies a
 * full slot into the plan's input, hands the slot back and runs the model
 * while the workers fill the next; records are then built for the batch
 * (in parallel) and written in input order. */
#ifndef DS_INFER_H
#define DS_INFER_H

#include "internal.h"

/* Confusion matrices are printed up to this many classes; above, only the
 * per-class accuracy (a 1000 x 1000 table helps nobody on a terminal). */
#define DS_INFER_CONFUSION_MAX 50

/* An item's label against the model's classes: its index, or one of these. */
#define DS_INFER_NO_LABEL (-1)
#define DS_INFER_UNKNOWN_LABEL (-2)

#endif
