# Learning, evaluation, rank-count independence and bitwise --deterministic runs of test_train.sh
# on a GPT-NeoX model of Pythia's block: attention and MLP in parallel off the same input, the
# rotary embedding over a quarter of each head (2 of 8 columns), q/k/v interleaved per head in the
# fused projection, the erf GELU, LayerNorms with biases and an untied embed_out.
SP_TRAIN_ARCH=gpt_neox SP_TRAIN_QUICK=1 exec bash "$(dirname "$0")/test_train.sh"
