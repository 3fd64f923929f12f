/*
 * The C-loop floor of bench/score.py: dlopens a model library built by workers/ml/compile.py and
 * times its entry points over distinct rows, one call at a time, as a C caller would.
 *
 *   score_floor LIBRARY ROWS_FILE ROWS ROUNDS
 *
 * A library without `predict` (bench/score_branchless.c) is timed through its entry points only.
 *
 * ROWS_FILE holds ROWS x ML_NUM_FEATURE float64 values, row-major (NaN = missing). Each round
 * walks all rows once through `ml_predict_row` and once through the generated `predict` (on
 * entries filled beforehand, so only the trees are timed), in alternating blocks of rows so
 * drift hits both alike. Prints one JSON object: per-call p50/p99/mean in ns, the mean of
 * `ml_predict_batch` per row over all rows, and the largest difference between the two paths.
 *
 * Built by the bench with the library's own -D flags and -I of its generated header.h, so
 * `struct Entry` and the value reading are the library's.
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <time.h>

#include "header.h"

#define BLOCK 500

typedef double (*row_fn)(const double*, double*);
typedef void (*predict_fn)(struct Entry*, int, ML_RESULT_T*);
typedef void (*batch_fn)(const double*, int64_t, double*);

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int by_value(const void* a, const void* b) {
  int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
  return (x > y) - (x < y);
}

static void summary(const char* name, int64_t* ns, int64_t n) {
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += (double)ns[i];
  qsort(ns, (size_t)n, sizeof *ns, by_value);
  int64_t p50 = ns[(n - 1) / 2], p99 = ns[(int64_t)((double)(n - 1) * 0.99)];
  printf("\"%s_p50_ns\": %lld, \"%s_p99_ns\": %lld, \"%s_mean_ns\": %.1f, ", name, (long long)p50,
         name, (long long)p99, name, total / (double)n);
}

/* The reading of workers/ml/batch.c (ml_fill), for the `predict` path only. */
static void fill(struct Entry* entries, const double* row) {
  for (int j = 0; j < ML_NUM_FEATURE; ++j) {
    double value = row[j];
    entries[j].missing = value != value ? -1 : 0;
#ifdef ML_ZERO_THRESHOLD
    if (value <= ML_ZERO_THRESHOLD && value >= -ML_ZERO_THRESHOLD) value = 0.0;
#endif
#ifdef ML_ROUND_TO_FLOAT32
    value = (double)(float)value;
#endif
    entries[j].fvalue = (ML_VALUE_T)value;
  }
}

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s LIBRARY ROWS_FILE ROWS ROUNDS\n", argv[0]);
    return 2;
  }
  int64_t rows = atoll(argv[3]), rounds = atoll(argv[4]), calls = rows * rounds;
  void* library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 1;
  }
  row_fn row = (row_fn)dlsym(library, "ml_predict_row");
  predict_fn predict = (predict_fn)dlsym(library, "predict");
  batch_fn batch = (batch_fn)dlsym(library, "ml_predict_batch");
  if (!row || !batch) {
    fprintf(stderr, "missing entry points\n");
    return 1;
  }
  size_t width = (size_t)ML_NUM_FEATURE;
  double* data = malloc(sizeof(double) * width * (size_t)rows);
  struct Entry* entries = malloc(sizeof(struct Entry) * width * (size_t)rows);
  double* out = malloc(sizeof(double) * (size_t)rows * N_TARGET * MAX_N_CLASS);
  int64_t* row_ns = malloc(sizeof(int64_t) * (size_t)calls);
  int64_t* predict_ns = malloc(sizeof(int64_t) * (size_t)calls);
  FILE* file = fopen(argv[2], "rb");
  if (!file || fread(data, sizeof(double) * width, (size_t)rows, file) != (size_t)rows) {
    fprintf(stderr, "cannot read %lld rows from %s\n", (long long)rows, argv[2]);
    return 1;
  }
  fclose(file);
  for (int64_t i = 0; i < rows; ++i) fill(entries + i * ML_NUM_FEATURE, data + i * ML_NUM_FEATURE);

  volatile double sink = 0;
  double max_diff = 0;
  for (int64_t i = 0; i < rows; ++i) { /* warm-up, and the two paths compared */
    ML_RESULT_T result[N_TARGET * MAX_N_CLASS] = {0};
    double scored = row(data + i * ML_NUM_FEATURE, NULL);
    if (predict) {
      predict(entries + i * ML_NUM_FEATURE, 0, result);
      double diff = fabs((double)result[0] - scored);
      max_diff = diff > max_diff ? diff : max_diff;
    }
  }
  int64_t done_row = 0, done_predict = 0;
  for (int64_t start = 0; start < calls; start += BLOCK) {
    int64_t stop = start + BLOCK < calls ? start + BLOCK : calls;
    for (int turn = 0; turn < 2; ++turn) {
      int row_first = ((start / BLOCK) % 2 == 0) == (turn == 0);
      for (int64_t k = start; k < stop; ++k) {
        int64_t i = k % rows;
        if (row_first) {
          int64_t t0 = now_ns();
          sink += row(data + i * ML_NUM_FEATURE, NULL);
          row_ns[done_row++] = now_ns() - t0;
        } else if (predict) {
          ML_RESULT_T result[N_TARGET * MAX_N_CLASS] = {0};
          int64_t t0 = now_ns();
          predict(entries + i * ML_NUM_FEATURE, 0, result);
          predict_ns[done_predict++] = now_ns() - t0;
          sink += (double)result[0];
        }
      }
    }
  }
  int64_t batch_best = INT64_MAX;
  for (int64_t r = 0; r < rounds; ++r) {
    int64_t t0 = now_ns();
    batch(data, rows, out);
    int64_t spent = now_ns() - t0;
    batch_best = spent < batch_best ? spent : batch_best;
  }
  printf("{");
  summary("row", row_ns, done_row);
  if (done_predict) summary("predict", predict_ns, done_predict);
  printf("\"batch_best_ns_per_row\": %.1f, \"calls\": %lld, \"max_diff_predict_vs_row\": %.17g}\n",
         (double)batch_best / (double)rows, (long long)done_row, max_diff);
  return sink == 12345.678 ? 3 : 0;
}
