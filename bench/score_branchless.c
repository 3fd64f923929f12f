/*
 * Experimental model library for bench/score.py: branch-free tree walking, with the ABI of
 * workers/ml/batch.c (ml_abi_version, get_num_feature, ..., ml_predict_row, ml_predict_batch)
 * so app/scoring/library.py's CompiledLibrary loads it unchanged. Not part of the product.
 *
 * Why: on distinct rows, TL2cgen's if/else code spends most of its time in mispredicted
 * branches (a single row repeated scores ~6x faster than distinct rows on 500 trees: the
 * predictor learns that one path). Here the forest is data (score_forest.h, written by the
 * bench from LightGBM's own model dump) and each step of a walk is arithmetic:
 *
 *     next = node.left + ((x > node.threshold) | (isnan(x) & node.nan_right))
 *
 * Children are adjacent, and a leaf is its own left child with a +inf threshold, so a walk
 * may take more steps than its path and stay on its leaf. A fixed number of steps (the
 * deepest leaf of the group) replaces the unpredictable exits; BL_LANES walks run side by
 * side (trees for one row, rows for one tree in a batch) so their load latencies overlap.
 *
 * Same bits as LightGBM: leaves are added in tree order from 0.0, then the sigmoid, as in the
 * generated `predict`. NaN handling: a split's "missing goes right" flag is `!default_left`
 * when LightGBM's missing type is NaN, and `!(0 <= threshold)` when it is None (LightGBM
 * reads NaN as 0 there); |x| <= ML_ZERO_THRESHOLD is read as 0, as batch.c does. The bench
 * only writes forests of binary LightGBM models with numerical splits.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

struct bl_node {
  double threshold;
  int32_t left;
  int16_t feature;
  uint8_t nan_right;
  uint8_t pad;
};

/* BL_NUM_FEATURE, BL_NUM_TREES, BL_NUM_GROUPS (trees padded with -0.0 leaves to whole
 * groups of BL_LANES), bl_nodes[], bl_values[], bl_roots[], bl_depths[] (per tree),
 * bl_group_depths[] (per group) */
#include "score_forest.h"

#define BL_BLOCK_ROWS 64
#define ML_ZERO_THRESHOLD 1.0000000180025095e-35

int32_t ml_abi_version(void) { return 1; }
int32_t ml_num_output(void) { return 1; }
int32_t get_num_feature(void) { return BL_NUM_FEATURE; }
int32_t get_num_target(void) { return 1; }
void get_num_class(int32_t* out) { out[0] = 1; }

static inline void bl_fill(double* x, const double* row) {
  for (int j = 0; j < BL_NUM_FEATURE; ++j) {
    double value = row[j];
    x[j] = (value <= ML_ZERO_THRESHOLD && value >= -ML_ZERO_THRESHOLD) ? 0.0 : value;
  }
}

static inline int32_t bl_step(int32_t at, const double* x) {
  const struct bl_node* node = bl_nodes + at;
  double value = x[node->feature];
  return node->left + ((value > node->threshold) | ((value != value) & node->nan_right));
}

static inline double bl_sigmoid(double margin) { return 1.0 / (1.0 + exp(-margin)); }

static double bl_margin(const double* x) {
  double sum = 0.0;
  for (int group = 0; group < BL_NUM_GROUPS; ++group) {
    int32_t at[BL_LANES];
#pragma GCC unroll 16
    for (int k = 0; k < BL_LANES; ++k) at[k] = bl_roots[group * BL_LANES + k];
    for (int step = 0; step < bl_group_depths[group]; ++step) {
#pragma GCC unroll 16
      for (int k = 0; k < BL_LANES; ++k) at[k] = bl_step(at[k], x);
    }
    for (int k = 0; k < BL_LANES; ++k) sum += bl_values[at[k]];
  }
  return sum;
}

double ml_predict_row(const double* row, double* out) {
  double x[BL_NUM_FEATURE];
  bl_fill(x, row);
  double score = bl_sigmoid(bl_margin(x));
  if (out) out[0] = score;
  return score;
}

/* Rows in blocks; within a block one tree at a time (its nodes stay in L1), BL_LANES rows
 * walking it side by side. Each row still adds its leaves in tree order. */
void ml_predict_batch(const double* rows, int64_t n, double* out) {
  double x[BL_BLOCK_ROWS][BL_NUM_FEATURE];
  double sums[BL_BLOCK_ROWS];
  for (int64_t start = 0; start < n; start += BL_BLOCK_ROWS) {
    int count = (int)(n - start < BL_BLOCK_ROWS ? n - start : BL_BLOCK_ROWS);
    for (int r = 0; r < BL_BLOCK_ROWS; ++r) {
      /* rows past the end repeat the last one; their sums are never written out */
      bl_fill(x[r], rows + (start + (r < count ? r : count - 1)) * BL_NUM_FEATURE);
      sums[r] = 0.0;
    }
    for (int tree = 0; tree < BL_NUM_TREES; ++tree) {
      int32_t root = bl_roots[tree], depth = bl_depths[tree];
      for (int r = 0; r < count; r += BL_LANES) {
        int32_t at[BL_LANES];
#pragma GCC unroll 16
        for (int k = 0; k < BL_LANES; ++k) at[k] = root;
        for (int step = 0; step < depth; ++step) {
#pragma GCC unroll 16
          for (int k = 0; k < BL_LANES; ++k) at[k] = bl_step(at[k], x[r + k]);
        }
        for (int k = 0; k < BL_LANES; ++k) sums[r + k] += bl_values[at[k]];
      }
    }
    for (int r = 0; r < count; ++r) out[start + r] = bl_sigmoid(sums[r]);
  }
}
