# Learning, evaluation, rank-count independence and bitwise --deterministic runs of test_train.sh
# on a Gemma 2 model: sandwich norms, soft-capped scores and logits (its defaults 50 and 30) and a
# window of 16 in every other layer, shorter than the training sequences (20 to 27 tokens, 16 of
# them soft).
SP_TRAIN_ARCH=gemma2 SP_TRAIN_INIT="--sliding-window 16 --head-dim 8" SP_TRAIN_QUICK=1 \
  exec bash "$(dirname "$0")/test_train.sh"
