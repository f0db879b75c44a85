# Learning, evaluation, PEFT export (SEQ_2_SEQ_LM: the encoder's rows and the decoder's copy),
# rank-count independence and bitwise --deterministic runs of test_train.sh on a T5
# encoder-decoder: the template's tokens feed the encoder (soft tokens first), and the class word
# is scored at the decoder's first position, through cross-attention. Untied head: a tied one
# scales the decoder's output by d_model^-0.5, which leaves a tiny random model's logits within a
# few units, too flat for the loss test. BF16 bound 0.3: T5's unscaled q.k makes this random
# model's 6 AdamW steps (sign-like first steps) diverge from float32's by 24% even though a
# forward over the validation set agrees within 0.1% (eval --weights bf16 vs f32: 4.3780 vs
# 4.3756); rounding the weights alone (the float32 path) gives 8% by step 2.
# 480 learning steps, not 120: this tiny random T5 learns the task slowly and its first 120 steps
# are chaotic (Adafactor's first steps are sign-like): after 120 steps, 6 training seeds ended at
# 0.51-0.99 (RelWithDebInfo) and 0.50-0.95 (ASan build) validation accuracy, so a threshold there
# passed by the seed's luck; after 480 steps all 9 ended at 0.98-1.00 in both builds
# (--seed 1..8 and 42, the default). Zero-shot is 0.49.
SP_TRAIN_ARCH=t5 SP_TRAIN_INIT=--untied SP_TRAIN_QUICK=1 SP_TRAIN_BF16_BOUND=0.3 SP_TRAIN_STEPS=480 \
  exec bash "$(dirname "$0")/test_train.sh"
