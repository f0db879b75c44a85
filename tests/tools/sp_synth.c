/* Writes synthetic classification datasets for the training tests:
 *   sp_synth OUT.h5 N_EXAMPLES VOCAB N_SOFT SEED
 * Each example is N_SOFT soft slots, 3..10 filler tokens, and a key token last; the class is
 * which key set the key comes from (class 0: 10..13, class 1: 20..23; filler: 30..VOCAB-1),
 * and the verbalizer words are tokens 1 and 2. A frozen random model cannot tell the classes
 * apart at first (accuracy ~50%), but the prompt can learn to route the key's identity to the
 * answer through attention, so a working trainer lifts accuracy far above chance.
 *   sp_synth OUT.h5 N_EXAMPLES VOCAB N_SOFT SEED mask
 * writes the masked-LM form of the task: every token before the mask token (id 3), where the
 * answer is scored, is a key of the class (the answer position no longer holds the key itself,
 * so the evidence reaches it through attention), and the template attribute holds {mask}
 * (bert, roberta). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/dataset.h"
#include "softprompt/rng.h"

int main(int argc, char **argv) {
    int mask = argc == 7 && strcmp(argv[6], "mask") == 0;
    if (argc != 6 && !mask) {
        fprintf(stderr, "usage: %s OUT.h5 N_EXAMPLES VOCAB N_SOFT SEED [mask]\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[2]), vocab = atoi(argv[3]), n_soft = atoi(argv[4]);
    sp_rng r;
    sp_rng_seed(&r, strtoull(argv[5], NULL, 10));
    int32_t verbalizer[2] = {1, 2};
    const char *names[2] = {"first", "second"};
    sp_dataset_meta meta = {.task = SP_TASK_CLASSIFICATION,
                            .n_soft = n_soft,
                            .n_classes = 2,
                            .verbalizer = verbalizer,
                            .class_names = names,
                            .tokenizer_hash = "synthetic",
                            .template_spec = mask ? "{soft}{text}{mask}" : "{soft}{text}",
                            .target_spec = "{label}",
                            .verbalizer_spec = "0=first,1=second",
                            .source = "sp_synth",
                            .split = "train",
                            .created_by = "sp_synth"};
    sp_error err;
    sp_dataset_writer *w = sp_dataset_writer_open(argv[1], &meta, 1, &err);
    if (!w) return fprintf(stderr, "sp_synth: %s\n", err.msg), 1;
    int32_t tokens[64];
    for (int i = 0; i < n; i++) {
        int label = i % 2, len = n_soft;
        for (int k = 0; k < n_soft; k++) tokens[k] = SP_SOFT(k);
        int filler = 3 + (int)sp_rng_below(&r, 8);
        for (int k = 0; k < filler; k++)
            tokens[len++] = mask ? (label ? 20 : 10) + (int)sp_rng_below(&r, 4)
                                 : 30 + (int)sp_rng_below(&r, (uint64_t)vocab - 30);
        tokens[len++] = (label ? 20 : 10) + (int)sp_rng_below(&r, 4);
        if (mask) tokens[len++] = 3;
        int32_t pos = len - 1, id = verbalizer[label];
        if (sp_dataset_writer_add(w, tokens, len, &pos, &id, 1, label, &err)) {
            sp_dataset_writer_abort(w);
            return fprintf(stderr, "sp_synth: %s\n", err.msg), 1;
        }
    }
    if (sp_dataset_writer_close(w, &err)) return fprintf(stderr, "sp_synth: %s\n", err.msg), 1;
    return 0;
}
