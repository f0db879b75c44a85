/* tokenizer_config.json: loaded beside a fixed, tiny Llama 2-style tokenizer.json (BOS "<s>" by
 * the post-processor; small so that loading it costs little), with the input as the config
 * (bos_token, eos_token, add_bos_token, ...). */
#include "fuzz_util.h"
#include "softprompt/tokenizer.h"

/* U+2581 (the SentencePiece space) is written \u2581 in the JSON. */
static const char tokenizer_json[] =
    "{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true,\n"
    " \"byte_fallback\": true, \"ignore_merges\": false, \"dropout\": null,\n"
    " \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"\\u2581\": 3, \"a\": 4, \"b\": 5,\n"
    "           \"\\u2581a\": 6, \"ab\": 7, \"<0x41>\": 8, \"<0x0A>\": 9},\n"
    " \"merges\": [\"\\u2581 a\", \"a b\"]},\n"
    "\"added_tokens\": [\n"
    " {\"id\": 1, \"content\": \"<s>\", \"special\": true, \"lstrip\": false, \"rstrip\": false,\n"
    "  \"normalized\": false, \"single_word\": false},\n"
    " {\"id\": 2, \"content\": \"</s>\", \"special\": true, \"lstrip\": false, \"rstrip\": false,\n"
    "  \"normalized\": false, \"single_word\": false}],\n"
    "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [\n"
    " {\"type\": \"Prepend\", \"prepend\": \"\\u2581\"},\n"
    " {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]},\n"
    "\"pre_tokenizer\": null,\n"
    "\"post_processor\": {\"type\": \"TemplateProcessing\",\n"
    " \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}},\n"
    "            {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}],\n"
    " \"pair\": [],\n"
    " \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [1], \"tokens\": [\"<s>\"]}}},\n"
    "\"decoder\": {\"type\": \"Sequence\", \"decoders\": [\n"
    " {\"type\": \"Replace\", \"pattern\": {\"String\": \"\\u2581\"}, \"content\": \" \"},\n"
    " {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"},\n"
    " {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]}}\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *dir;
    if (!dir) {
        dir = fz_subdir("tokcfg");
        fz_write(fz_path(0, "tokcfg/tokenizer.json"), tokenizer_json, sizeof tokenizer_json - 1);
    }
    fz_write(fz_path(0, "tokcfg/tokenizer_config.json"), data, size);
    sp_error err;
    sp_tokenizer *tok = sp_tokenizer_load(dir, &err);
    if (!tok) return 0;
    volatile int32_t x = sp_tokenizer_bos_id(tok) + sp_tokenizer_eos_id(tok) +
                         sp_tokenizer_adds_bos(tok) + sp_tokenizer_adds_eos(tok);
    (void)x;
    sp_tokenizer_free(tok);
    return 0;
}
