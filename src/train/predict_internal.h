/* predict's rows (predict_rows.c), used by its run (predict.c). */
#ifndef SP_TRAIN_PREDICT_INTERNAL_H
#define SP_TRAIN_PREDICT_INTERNAL_H

#include <stdint.h>

#include "softprompt/predict.h"
#include "util/vec.h"

/* The scores of one example (sp_predict_score's outputs). */
typedef struct sp__scores {
    double *probs; /* [K, C] */
    int *pred;     /* [K] */
    double *mean;  /* [C] */
    int predicted, vote;
} sp__scores;

/* Appends example i's row (logits [K, C]) / the header line (CSV, TSV; nothing for JSONL). */
int sp__predict_row(sp__buf *b, sp_predict_format f, const sp_examples *ex, int64_t i,
                    const float *logits, int K, const sp__scores *s);
int sp__predict_header(sp__buf *b, sp_predict_format f, const sp_examples *ex, int K);

#endif
