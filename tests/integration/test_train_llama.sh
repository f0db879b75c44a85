# Every training test of test_train.sh (learning, rank-count independence, --deterministic,
# stop/resume bitwise, foreign checkpoints, a failing rank) on a Llama model with grouped-query
# attention instead of GPT-2.
SP_TRAIN_ARCH=llama exec bash "$(dirname "$0")/test_train.sh"
