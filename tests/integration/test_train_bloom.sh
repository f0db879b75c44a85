# Learning, evaluation, rank-count independence and bitwise --deterministic runs of test_train.sh
# on a BLOOM model: the embedding LayerNorm (prompt rows included), ALiBi (4 heads: slopes 1/4 ..
# 1/256) instead of positions, q/k/v interleaved per head in query_key_value, the tanh GELU,
# biases everywhere, a tied head, and the residuals taken from the norms' outputs
# (apply_residual_connection_post_layernorm true).
SP_TRAIN_ARCH=bloom SP_TRAIN_INIT=--norm-residual SP_TRAIN_QUICK=1 exec bash "$(dirname "$0")/test_train.sh"
