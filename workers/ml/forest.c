/*
 * A model library without generated if/else code: the forest is data (forest.h, node tables
 * written by workers/ml/forest.py from LightGBM's model text) walked without branches. Same
 * entry points as batch.c, so app/scoring/library.py loads it unchanged; compile.py builds it
 * instead of TL2cgen's code for the LightGBM models forest.py accepts.
 *
 * Why: on distinct rows, if/else trees spend most of their time in mispredicted branches (one
 * row repeated scores ~6x faster than distinct rows on 500 trees). Here each step of a walk is
 * arithmetic:
 *
 *     next = node.left + ((x > node.threshold) | (isnan(x) & node.nan_right))
 *
 * Children are adjacent, and a leaf is its own left child with a +inf threshold, so a walk may
 * take more steps than its path and stay on its leaf. A fixed number of steps (the deepest leaf
 * of the group) replaces the unpredictable exits; ML_FOREST_LANES walks run side by side (trees
 * for one row, rows for one tree in a batch) so their load latencies overlap. Measured in
 * bench/score.py: 2.2-2.4x faster per distinct row than TL2cgen's code.
 *
 * Same bits as LightGBM: leaves are added in tree order from 0.0, then the sigmoid for binary
 * models. A split's "NaN goes right" flag is `!default_left` when LightGBM's missing type is
 * NaN, and `!(0 <= threshold)` when it is None (LightGBM reads NaN as 0 there); |x| at most
 * ML_ZERO_THRESHOLD is read as 0, as LightGBM (and batch.c) do.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define ML_ABI_VERSION 1

struct ml_node {
  double threshold;
  int32_t left;
  int16_t feature;
  uint8_t nan_right;
  uint8_t pad;
};

/* ML_FOREST_NUM_FEATURE, ML_FOREST_NUM_TREES, ML_FOREST_NUM_GROUPS (trees padded with -0.0
 * leaves to whole groups of ML_FOREST_LANES), ML_FOREST_SIGMOID, ml_nodes[], ml_values[],
 * ml_roots[], ml_depths[] (per tree), ml_group_depths[] (per group) */
#include "forest.h"

#if !defined(ML_NUM_FEATURE) || ML_NUM_FEATURE != ML_FOREST_NUM_FEATURE
#error "ML_NUM_FEATURE must be defined and match the tables"
#endif

/* Rows per batch block: a tree's nodes stay in L1 while the block's rows walk it */
#define ML_BLOCK_ROWS 64
#if ML_BLOCK_ROWS % ML_FOREST_LANES != 0
#error "a block must hold whole groups of lanes"
#endif

int32_t ml_abi_version(void) { return ML_ABI_VERSION; }
int32_t ml_num_output(void) { return 1; }
int32_t get_num_feature(void) { return ML_NUM_FEATURE; }
int32_t get_num_target(void) { return 1; }
void get_num_class(int32_t* out) { out[0] = 1; }

static inline void ml_fill(double* x, const double* row) {
  for (int j = 0; j < ML_NUM_FEATURE; ++j) {
    double value = row[j];
#ifdef ML_ZERO_THRESHOLD
    if (value <= ML_ZERO_THRESHOLD && value >= -ML_ZERO_THRESHOLD) value = 0.0;
#endif
    x[j] = value;
  }
}

static inline int32_t ml_step(int32_t at, const double* x) {
  const struct ml_node* node = ml_nodes + at;
  double value = x[node->feature];
  return node->left + ((value > node->threshold) | ((value != value) & node->nan_right));
}

static inline double ml_output(double margin) {
#if ML_FOREST_SIGMOID
  return 1.0 / (1.0 + exp(-margin));
#else
  return margin;
#endif
}

static double ml_margin(const double* x) {
  double sum = 0.0;
  for (int group = 0; group < ML_FOREST_NUM_GROUPS; ++group) {
    int32_t at[ML_FOREST_LANES];
#pragma GCC unroll 16
    for (int k = 0; k < ML_FOREST_LANES; ++k) at[k] = ml_roots[group * ML_FOREST_LANES + k];
    for (int step = 0; step < ml_group_depths[group]; ++step) {
#pragma GCC unroll 16
      for (int k = 0; k < ML_FOREST_LANES; ++k) at[k] = ml_step(at[k], x);
    }
    for (int k = 0; k < ML_FOREST_LANES; ++k) sum += ml_values[at[k]];
  }
  return sum;
}

/* One row; returns its score, and writes it to `out` unless it is NULL. */
double ml_predict_row(const double* row, double* out) {
  double x[ML_NUM_FEATURE];
  ml_fill(x, row);
  double score = ml_output(ml_margin(x));
  if (out) out[0] = score;
  return score;
}

/* `n` rows of ML_NUM_FEATURE doubles, row-major; `out` holds n scores. Rows go in blocks;
 * within a block one tree at a time, ML_FOREST_LANES rows walking it side by side. Each row
 * still adds its leaves in tree order, so the bits are those of ml_predict_row. */
void ml_predict_batch(const double* rows, int64_t n, double* out) {
  /* on the heap: a block of wide rows would take a thread's stack */
  double(*x)[ML_NUM_FEATURE] = malloc(sizeof(double) * ML_NUM_FEATURE * ML_BLOCK_ROWS);
  if (x == NULL) {
    for (int64_t i = 0; i < n; ++i) out[i] = ml_predict_row(rows + i * ML_NUM_FEATURE, NULL);
    return;
  }
  double sums[ML_BLOCK_ROWS];
  for (int64_t start = 0; start < n; start += ML_BLOCK_ROWS) {
    int count = (int)(n - start < ML_BLOCK_ROWS ? n - start : ML_BLOCK_ROWS);
    for (int r = 0; r < ML_BLOCK_ROWS; ++r) {
      /* rows past the end repeat the last one; their sums are never written out */
      ml_fill(x[r], rows + (start + (r < count ? r : count - 1)) * ML_NUM_FEATURE);
      sums[r] = 0.0;
    }
    for (int tree = 0; tree < ML_FOREST_NUM_TREES; ++tree) {
      int32_t root = ml_roots[tree], depth = ml_depths[tree];
      for (int r = 0; r < count; r += ML_FOREST_LANES) {
        int32_t at[ML_FOREST_LANES];
#pragma GCC unroll 16
        for (int k = 0; k < ML_FOREST_LANES; ++k) at[k] = root;
        for (int step = 0; step < depth; ++step) {
#pragma GCC unroll 16
          for (int k = 0; k < ML_FOREST_LANES; ++k) at[k] = ml_step(at[k], x[r + k]);
        }
        for (int k = 0; k < ML_FOREST_LANES; ++k) sums[r + k] += ml_values[at[k]];
      }
    }
    for (int r = 0; r < count; ++r) out[start + r] = ml_output(sums[r]);
  }
  free(x);
}
