# Learning, evaluation, PEFT export, rank-count independence and bitwise --deterministic runs of
# test_train.sh on an OPT model of opt-350m's form: post-norm blocks (do_layer_norm_before
# false, no final norm) and embeddings 16 wide under d 32 (word_embed_proj_dim, project_in /
# project_out), so the prompt, its checkpoints and the adapter's token_dim are 16 wide.
SP_TRAIN_ARCH=opt SP_TRAIN_INIT="--post-norm --embed-dim 16" SP_TRAIN_TOKEN_DIM=16 SP_TRAIN_QUICK=1 \
  exec bash "$(dirname "$0")/test_train.sh"
