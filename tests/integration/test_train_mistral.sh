# Learning, evaluation, rank-count independence and bitwise --deterministic runs of test_train.sh
# on a Mistral model whose sliding window (16) is shorter than the training sequences (20 to 27
# tokens, 16 of them soft), so that the first 4 to 11 soft tokens are out of the window of the
# answer position and reach it only through the first layer.
SP_TRAIN_ARCH=mistral SP_TRAIN_INIT="--sliding-window 16" SP_TRAIN_QUICK=1 \
  exec bash "$(dirname "$0")/test_train.sh"
