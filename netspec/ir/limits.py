"""The caps on a build's work (README, "Limits"), in one place: the builder's stages
(`expand.py`, `shapes.py`) read them."""

# The cap on work (README, "Limits"): `check` answers any spec within 2 s and 500 MB, and a
# 100,000-layer MLP (200,003 nodes) fits. Work is counted in units of about what one plain node
# costs `check`, its table row included (`tools/bench_compile.py --large-only` measures the
# worst shapes at the cap):
# - a node (a layer, an implicit flatten or activation): 1;
# - a step that makes no node: a block call or a branch of concat/add/mul (a scope, named and
#   checked), a time round a loop whose body reads its index (evaluated afresh): 1;
# - a node whose layer and input shapes no earlier node of the build had: WORK_NEW more (its
#   layer validated, its figures computed, its row described: no sharing with another node).
# The size of the expansion (nodes and steps) is estimated before any of it is done; the
# work is metered as it is done and refused the moment it passes the cap.
# 220,000: at 250,000 the costliest shapes took `check` 2.0 s (a CONV chain with --json, a
# block call per layer with the table); the 100,000-layer MLP is 200,013 units.
MAX_WORK = 220_000
WORK_NEW = 2
MAX_DEPTH = 100  # chains nested in one another: block calls, brackets, branches (as the
# parser nests brackets: at most 100)
MAX_NAME = 256  # characters in a layer's dotted name (its scopes and its own)
