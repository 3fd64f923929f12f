/*
 * Entry points of our own, compiled into every model library next to TL2cgen's generated code
 * (workers/ml/compile.py builds it; app/scoring/library.py calls it).
 *
 * The generated `predict` takes one row of `struct Entry` and ADDS into its result, so every
 * caller must fill the entries and zero the result first. Doing both here, in C, keeps Python
 * out of the per-row loop. Inputs and outputs are always float64: the model's own value type
 * (float for XGBoost models, double otherwise) stays an internal detail of the library.
 *
 * TL2cgen declares `union Entry {int missing; double fvalue; int qvalue;}` and tests
 * `missing != -1`: a double whose low 32 bits are all ones (2.4999999999999996, one below 2.5,
 * is one) reads as missing there. compile.py rewrites the union into a struct, so the flag and
 * the value no longer share bytes.
 *
 * ML_NUM_FEATURE, ML_VALUE_T (the Entry's fvalue type) and ML_RESULT_T (the result type of
 * `predict`) come from the compiler command line; N_TARGET and MAX_N_CLASS from header.h.
 */
#include "header.h"

#if !defined(ML_NUM_FEATURE) || !defined(ML_VALUE_T) || !defined(ML_RESULT_T)
#error "ML_NUM_FEATURE, ML_VALUE_T and ML_RESULT_T must be defined"
#endif

#define ML_ABI_VERSION 1
#define ML_NUM_OUTPUT (N_TARGET * MAX_N_CLASS)

/* One row's entries per thread: concurrent callers never share a buffer, and nothing is
 * allocated per call. Large enough feature counts would overflow a stack frame. */
static _Thread_local struct Entry ml_entries[ML_NUM_FEATURE];

/* NaN is written as `missing = -1`: the generated code tests that flag, never isnan.
 * Values are read as the model's own library reads them, or thresholds would cut differently:
 * - ML_ZERO_THRESHOLD (LightGBM): |x| at most that is 0.0; LightGBM's splits at +-1e-35 tell
 *   zero from non-zero, and -1e-35 would otherwise take the other branch than in LightGBM;
 * - ML_ROUND_TO_FLOAT32 (scikit-learn's DecisionTree-based models): they cast X to float32
 *   before comparing it with float64 thresholds. */
static inline void ml_fill(struct Entry* entries, const double* row) {
  for (int j = 0; j < ML_NUM_FEATURE; ++j) {
    double value = row[j];
    if (value != value) {
      entries[j].missing = -1;
      continue;
    }
    entries[j].missing = 0;
#ifdef ML_ZERO_THRESHOLD
    if (value <= ML_ZERO_THRESHOLD && value >= -ML_ZERO_THRESHOLD) {
      value = 0.0;
    }
#endif
#ifdef ML_ROUND_TO_FLOAT32
    value = (double)(float)value;
#endif
    entries[j].fvalue = (ML_VALUE_T)value;
  }
}

static inline void ml_predict_into(const double* row, double* out) {
  ML_RESULT_T result[ML_NUM_OUTPUT] = {0};
  ml_fill(ml_entries, row);
  predict(ml_entries, 0, result);
  for (int k = 0; k < ML_NUM_OUTPUT; ++k) {
    out[k] = (double)result[k];
  }
}

int32_t ml_abi_version(void) { return ML_ABI_VERSION; }

int32_t ml_num_output(void) { return ML_NUM_OUTPUT; }

/* One row; returns the first output, and writes all outputs to `out` unless it is NULL. */
double ml_predict_row(const double* row, double* out) {
  double first[ML_NUM_OUTPUT];
  double* target = out ? out : first;
  ml_predict_into(row, target);
  return target[0];
}

static void ml_predict_rows(const double* rows, int64_t n, double* out) {
  for (int64_t i = 0; i < n; ++i) {
    ml_predict_into(rows + i * ML_NUM_FEATURE, out + i * ML_NUM_OUTPUT);
  }
}

#ifdef ML_UNIT_BLOCKS
/* compile.py writes blocks.h when TL2cgen split the trees into translation units:
 * ML_NUM_UNITS, ml_units[] (the generated predict_unitN) and ml_finish(), the rest of the
 * generated `predict` after its unit calls (base scores, postprocessor). */
#include <stdlib.h>

#include "blocks.h"

/* Rows per block: enough that a tree group's code and nodes are reused across many rows before
 * the next group is fetched. Swept in bench/score_blocked.c: 1024 is 1.5-1.6x faster than 64 on
 * 100 and 500 trees, same bits; past it the rows' entries no longer fit the L2 cache. */
#define ML_BLOCK_ROWS 1024

/* `n` rows of ML_NUM_FEATURE doubles, row-major; `out` holds n * ML_NUM_OUTPUT doubles.
 * A block of rows goes through one tree group after the other, so each group's code stays in
 * the instruction cache for the whole block instead of the whole ensemble being fetched again
 * for every row (measured 1.4-1.9x on 200 trees). Every row still adds the groups in
 * `predict`'s order, so the results are the same bits as one `predict` call per row. */
void ml_predict_batch(const double* rows, int64_t n, double* out) {
  struct Entry* entries = malloc(sizeof(struct Entry) * ML_NUM_FEATURE * ML_BLOCK_ROWS);
  /* on the heap: a block's results would take a thread's stack for wide multiclass models */
  ML_RESULT_T (*results)[ML_NUM_OUTPUT] = malloc(sizeof(ML_RESULT_T) * ML_NUM_OUTPUT * ML_BLOCK_ROWS);
  if (entries == NULL || results == NULL) {
    free(entries);
    free(results);
    ml_predict_rows(rows, n, out);
    return;
  }
  for (int64_t start = 0; start < n; start += ML_BLOCK_ROWS) {
    const int count = (int)(n - start < ML_BLOCK_ROWS ? n - start : ML_BLOCK_ROWS);
    for (int i = 0; i < count; ++i) {
      ml_fill(entries + i * ML_NUM_FEATURE, rows + (start + i) * ML_NUM_FEATURE);
      for (int k = 0; k < ML_NUM_OUTPUT; ++k) {
        results[i][k] = 0;
      }
    }
    for (int unit = 0; unit < ML_NUM_UNITS; ++unit) {
      for (int i = 0; i < count; ++i) {
        ml_units[unit](entries + i * ML_NUM_FEATURE, results[i]);
      }
    }
    for (int i = 0; i < count; ++i) {
      ml_finish(0, results[i]);
      for (int k = 0; k < ML_NUM_OUTPUT; ++k) {
        out[(start + i) * ML_NUM_OUTPUT + k] = (double)results[i][k];
      }
    }
  }
  free(results);
  free(entries);
}
#else
/* `n` rows of ML_NUM_FEATURE doubles, row-major; `out` holds n * ML_NUM_OUTPUT doubles.
 * All trees are in one function here: the loop over rows is what moves out of Python. */
void ml_predict_batch(const double* rows, int64_t n, double* out) {
  ml_predict_rows(rows, n, out);
}
#endif
