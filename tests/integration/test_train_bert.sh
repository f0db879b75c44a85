# Learning, evaluation, rank-count independence and bitwise --deterministic runs of test_train.sh
# on a BERT masked LM: bidirectional attention, the answer scored through the MLM head at a mask
# token after the text (sp_synth's mask form, whose template holds {mask}).
SP_TRAIN_ARCH=bert SP_TRAIN_SYNTH=mask SP_TRAIN_QUICK=1 exec bash "$(dirname "$0")/test_train.sh"
