# test_train_bert.sh on RoBERTa: positions from padding_idx + 1, one token type.
SP_TRAIN_ARCH=roberta SP_TRAIN_SYNTH=mask SP_TRAIN_QUICK=1 exec bash "$(dirname "$0")/test_train.sh"
