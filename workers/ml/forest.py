"""Node tables of a LightGBM model for forest.c, the branch-free evaluator (see forest.c).

Read from LightGBM's own model text, so thresholds and leaves are the bits LightGBM compares
and adds. Only models forest.c evaluates exactly get tables: one output (binary with
`sigmoid:1`, or plain regression), numerical splits whose missing type is None or NaN, no
linear trees, no averaged output. Everything else is None here and goes through TL2cgen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LANES", "MAX_FEATURES", "forest_tables"]

LANES = 8  # walks side by side in forest.c; measured in bench/score.py
MAX_FEATURES = 4096  # int16 feature index, and a row of them on a thread's stack in forest.c
_OBJECTIVES = {"binary sigmoid:1": 1, "regression": 0}  # objective line -> ML_FOREST_SIGMOID
_CATEGORICAL, _DEFAULT_LEFT = 1, 2
_MISSING_NONE, _MISSING_NAN = 0, 2


@dataclass
class _Forest:
    """Nodes (threshold, left child, feature, NaN goes right) with a leaf value each."""

    nodes: list[tuple[float, int, int, int]]
    values: list[float]
    roots: list[int]
    depths: list[int]


def forest_tables(model_text: str, lanes: int = LANES) -> str | None:
    """forest.h for the LightGBM model `model_text`; None if forest.c cannot score it exactly."""
    head, trees = _sections(model_text)
    sigmoid = _OBJECTIVES.get(head.get("objective", "").strip())
    index = head.get("max_feature_idx", "")
    features = int(index) + 1 if index.isdigit() else 0
    if (
        sigmoid is None
        or head.get("num_class") != "1"
        or head.get("num_tree_per_iteration") != "1"
        or "average_output" in head
        or not 0 < features <= MAX_FEATURES
        or not trees
    ):
        return None
    forest = _Forest(nodes=[], values=[], roots=[], depths=[])
    try:
        if not all(_add_tree(tree, forest) for tree in trees):
            return None
    except (ValueError, IndexError):  # a tree this reader does not follow: TL2cgen's turn
        return None
    return _header(forest, features, sigmoid, lanes)


def _sections(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The model's header fields, and each tree's fields, up to `end of trees`."""
    head: dict[str, str] = {}
    trees: list[dict[str, str]] = []
    current = head
    for line in text.splitlines():
        if line.startswith("end of trees"):
            break
        if line.startswith("Tree="):
            current = {}
            trees.append(current)
            continue
        key, equals, value = line.partition("=")
        if equals:
            current.setdefault(key.strip(), value.strip())
        elif line.strip() and current is head:
            current.setdefault(line.strip(), "")  # flags such as `average_output`
    return head, trees


def _numbers(tree: dict[str, str], key: str) -> list[str]:
    return tree.get(key, "").split()


def _add_tree(tree: dict[str, str], forest: _Forest) -> bool:
    """Append one tree breadth first (children adjacent); False if it has a split we skip."""
    if tree.get("is_linear", "0") != "0" or tree.get("num_cat", "0") != "0":
        return False
    leaves = [float(v) for v in _numbers(tree, "leaf_value")]
    root = len(forest.nodes)
    forest.roots.append(root)
    forest.nodes.append((math.inf, root, 0, 0))
    forest.values.append(0.0)
    if int(tree.get("num_leaves", "0")) == 1 and len(leaves) == 1:
        forest.values[root] = leaves[0]
        forest.depths.append(0)
        return True
    threshold = [float(v) for v in _numbers(tree, "threshold")]
    decision = [int(v) for v in _numbers(tree, "decision_type")]
    feature = [int(v) for v in _numbers(tree, "split_feature")]
    left = [int(v) for v in _numbers(tree, "left_child")]
    right = [int(v) for v in _numbers(tree, "right_child")]
    if not leaves or not all(len(c) == len(threshold) for c in (decision, feature, left, right)):
        return False
    queue, deepest = [(0, root, 0)], 0
    for child, at, depth in queue:
        if child < 0:  # LightGBM writes leaf k as the child ~k
            forest.nodes[at] = (math.inf, at, 0, 0)  # a leaf is its own child: walks stay on it
            forest.values[at] = leaves[~child]
            deepest = max(deepest, depth)
            continue
        kind = decision[child]
        missing = (kind >> 2) & 3
        if kind & _CATEGORICAL or missing not in (_MISSING_NONE, _MISSING_NAN):
            return False
        # missing type None: LightGBM reads NaN as 0.0, so it goes where 0.0 goes
        nan_right = not kind & _DEFAULT_LEFT if missing == _MISSING_NAN else threshold[child] < 0
        first = len(forest.nodes)
        forest.nodes[at] = (threshold[child], first, feature[child], int(nan_right))
        forest.nodes += [(math.inf, first, 0, 0), (math.inf, first + 1, 0, 0)]
        forest.values += [0.0, 0.0]
        queue += [(left[child], first, depth + 1), (right[child], first + 1, depth + 1)]
    forest.depths.append(deepest)
    return True


def _c_double(value: float) -> str:
    if math.isinf(value):
        return "INFINITY" if value > 0 else "-INFINITY"
    return repr(value)


def _header(forest: _Forest, features: int, sigmoid: int, lanes: int) -> str:
    trees, pad = len(forest.roots), len(forest.nodes)
    forest.nodes.append((math.inf, pad, 0, 0))
    forest.values.append(-0.0)  # x + -0.0 == x for every x: padding trees change no bit
    groups = -(-trees // lanes)
    roots = forest.roots + [pad] * (groups * lanes - trees)
    group_depths = [max(forest.depths[g * lanes : (g + 1) * lanes]) for g in range(groups)]

    def array(kind: str, name: str, items: list[str]) -> str:
        return f"static const {kind} {name}[] = {{\n{', '.join(items)}\n}};\n"

    nodes = [f"{{{_c_double(t)}, {left}, {f}, {m}, 0}}" for t, left, f, m in forest.nodes]
    return (
        f"#define ML_FOREST_NUM_FEATURE {features}\n#define ML_FOREST_NUM_TREES {trees}\n"
        f"#define ML_FOREST_NUM_GROUPS {groups}\n#define ML_FOREST_LANES {lanes}\n"
        f"#define ML_FOREST_SIGMOID {sigmoid}\n"
        + array("struct ml_node", "ml_nodes", nodes)
        + array("double", "ml_values", [_c_double(v) for v in forest.values])
        + array("int32_t", "ml_roots", [str(r) for r in roots])
        + array("int32_t", "ml_depths", [str(d) for d in forest.depths])
        + array("int32_t", "ml_group_depths", [str(d) for d in group_depths])
    )
