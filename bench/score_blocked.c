/*
 * Experimental entry point for bench/score.py (not part of the served library): the library's
 * block-wise `ml_predict_batch` (workers/ml/batch.c, ML_UNIT_BLOCKS) with the rows per block
 * as an argument instead of the fixed ML_BLOCK_ROWS, so the bench can sweep it.
 *
 * A block of rows goes through one TL2cgen translation unit (a group of trees) after the
 * other, as lleaves walks its tree blocks over the rows: the group's code stays in the
 * instruction cache and its branches stay trained for the whole block. Bigger blocks reuse
 * the code more but their entries (16 bytes a feature) spill out of L1d sooner.
 *
 * The bench builds it with the library's own flags and -D defines next to the generated
 * object files (minus batch.o: batch.c is included to reuse `ml_fill`, `ml_units`, `ml_finish`).
 */
#include "batch.c"

#ifndef ML_UNIT_BLOCKS
#error "built only for libraries whose trees TL2cgen split into units"
#endif

void ml_predict_batch_chunked(const double* rows, int64_t n, double* out, int64_t chunk) {
  struct Entry* entries = malloc(sizeof(struct Entry) * ML_NUM_FEATURE * (size_t)chunk);
  ML_RESULT_T* acc = malloc(sizeof(ML_RESULT_T) * ML_NUM_OUTPUT * (size_t)chunk);
  if (!entries || !acc) {
    abort();
  }
  for (int64_t start = 0; start < n; start += chunk) {
    int64_t count = n - start < chunk ? n - start : chunk;
    for (int64_t r = 0; r < count; ++r) {
      ml_fill(entries + r * ML_NUM_FEATURE, rows + (start + r) * ML_NUM_FEATURE);
    }
    memset(acc, 0, sizeof(ML_RESULT_T) * ML_NUM_OUTPUT * (size_t)count);
    for (int u = 0; u < ML_NUM_UNITS; ++u) {
      for (int64_t r = 0; r < count; ++r) {
        ml_units[u](entries + r * ML_NUM_FEATURE, acc + r * ML_NUM_OUTPUT);
      }
    }
    for (int64_t r = 0; r < count; ++r) {
      ML_RESULT_T* result = acc + r * ML_NUM_OUTPUT;
      ml_finish(0, result);
      for (int k = 0; k < ML_NUM_OUTPUT; ++k) {
        out[(start + r) * ML_NUM_OUTPUT + k] = (double)result[k];
      }
    }
  }
  free(entries);
  free(acc);
}
