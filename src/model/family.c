/* The model families: one description each (family.h). The tensor tables list rows in the order
 * the fingerprint hashes them, which must never change (checkpoints record fingerprints);
 * hf_rank is the row's position in Hugging Face's state dict, the order init-model writes and
 * draws random numbers in (its output must not change either). */
#include "model/family.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

/* ---- GPT2LMHeadModel ------------------------------------------------------------------------ */

/* clang-format off */
#define VEC(d) {d, SP_DIM_NONE}
#define MAT(rows, cols) {rows, cols}
/* clang-format on */
static const sp__tensor_desc GPT2_TENSORS[] = {
    /* {HF name, shape, role, when present, init-model's init, fingerprint name, HF rank} */
    {"wte.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_WTE, SP_ALWAYS, SP_INIT_NORMAL, "wte", 0},
    {"wpe.weight", MAT(SP_DIM_CTX, SP_DIM_D), SP_ROLE_WPE, SP_ALWAYS, SP_INIT_NORMAL, "wpe", 1},
    {"h.%d.ln_1.weight", VEC(SP_DIM_D), SP_ROLE_LN1_W, SP_ALWAYS, SP_INIT_GAIN, "ln_1.weight", 2},
    {"h.%d.ln_1.bias", VEC(SP_DIM_D), SP_ROLE_LN1_B, SP_ALWAYS, SP_INIT_BIAS, "ln_1.bias", 3},
    {"h.%d.attn.c_attn.weight", MAT(SP_DIM_D, SP_DIM_QKV), SP_ROLE_QKV_W, SP_ALWAYS, SP_INIT_NORMAL,
     "attn.c_attn.weight", 4},
    {"h.%d.attn.c_attn.bias", VEC(SP_DIM_QKV), SP_ROLE_QKV_B, SP_ALWAYS, SP_INIT_BIAS,
     "attn.c_attn.bias", 5},
    {"h.%d.attn.c_proj.weight", MAT(SP_DIM_D, SP_DIM_D), SP_ROLE_O_W, SP_ALWAYS, SP_INIT_PROJ,
     "attn.c_proj.weight", 6},
    {"h.%d.attn.c_proj.bias", VEC(SP_DIM_D), SP_ROLE_O_B, SP_ALWAYS, SP_INIT_BIAS,
     "attn.c_proj.bias", 7},
    {"h.%d.ln_2.weight", VEC(SP_DIM_D), SP_ROLE_LN2_W, SP_ALWAYS, SP_INIT_GAIN, "ln_2.weight", 8},
    {"h.%d.ln_2.bias", VEC(SP_DIM_D), SP_ROLE_LN2_B, SP_ALWAYS, SP_INIT_BIAS, "ln_2.bias", 9},
    {"h.%d.mlp.c_fc.weight", MAT(SP_DIM_D, SP_DIM_FF), SP_ROLE_MLP_IN_W, SP_ALWAYS, SP_INIT_NORMAL,
     "mlp.c_fc.weight", 10},
    {"h.%d.mlp.c_fc.bias", VEC(SP_DIM_FF), SP_ROLE_MLP_IN_B, SP_ALWAYS, SP_INIT_BIAS,
     "mlp.c_fc.bias", 11},
    {"h.%d.mlp.c_proj.weight", MAT(SP_DIM_FF, SP_DIM_D), SP_ROLE_MLP_OUT_W, SP_ALWAYS, SP_INIT_PROJ,
     "mlp.c_proj.weight", 12},
    {"h.%d.mlp.c_proj.bias", VEC(SP_DIM_D), SP_ROLE_MLP_OUT_B, SP_ALWAYS, SP_INIT_BIAS,
     "mlp.c_proj.bias", 13},
    {"ln_f.weight", VEC(SP_DIM_D), SP_ROLE_LNF_W, SP_ALWAYS, SP_INIT_GAIN, "ln_f.weight", 14},
    {"ln_f.bias", VEC(SP_DIM_D), SP_ROLE_LNF_B, SP_ALWAYS, SP_INIT_BIAS, "ln_f.bias", 15},
    {"lm_head.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_LM_HEAD, SP_IF_UNTIED, SP_INIT_NORMAL,
     "lm_head", 16},
    /* attention-mask buffers older checkpoints store */
    {"h.%d.attn.bias", VEC(SP_DIM_NONE), SP_ROLE_BUFFER, SP_NEVER, SP_INIT_NONE, NULL, 17},
    {"h.%d.attn.masked_bias", VEC(SP_DIM_NONE), SP_ROLE_BUFFER, SP_NEVER, SP_INIT_NONE, NULL, 18},
};

static const sp__family GPT2 = {
    .arch = SP_ARCH_GPT2,
    .model_type = "gpt2",
    .hf_class = "GPT2LMHeadModel",
    .ctx_key = "n_positions",
    .name_prefix = "transformer.",
    .layer_prefix = "h.%d.",
    .layout = SP_W_IN_OUT,
    .norm = SP_NORM_LAYERNORM,
    .block = SP_BLOCK_PRE_NORM,
    .embed = SP_EMBED_PLAIN,
    .pos = SP_POS_LEARNED,
    .qkv = SP_QKV_FUSED,
    .qk_norm = SP_QKNORM_NONE,
    .mlp = SP_MLP_GELU,
    .gqa = 0,
    .tensors = GPT2_TENSORS,
    .n_tensors = (int)(sizeof GPT2_TENSORS / sizeof GPT2_TENSORS[0]),
};

/* ---- LlamaForCausalLM, Qwen2ForCausalLM ----------------------------------------------------- */

/* One table for both: Qwen2's q/k/v biases are Llama's attention_bias ones (its config sets
 * qkv_bias), and neither config enables the o_proj or MLP biases of the other. The fingerprint
 * order (this one) differs from HF's state dict (biases follow their weight there, and the
 * post-attention norm comes last). */
#define L_(name) "model.layers.%d." name
static const sp__tensor_desc LLAMA_TENSORS[] = {
    {"model.embed_tokens.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_WTE, SP_ALWAYS,
     SP_INIT_NORMAL, "wte", 0},
    {L_("input_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN1_W, SP_ALWAYS, SP_INIT_GAIN,
     "input_layernorm.weight", 1},
    {L_("self_attn.q_proj.weight"), MAT(SP_DIM_QD, SP_DIM_D), SP_ROLE_Q_W, SP_ALWAYS,
     SP_INIT_NORMAL, "q_proj.weight", 2},
    {L_("self_attn.k_proj.weight"), MAT(SP_DIM_KVD, SP_DIM_D), SP_ROLE_K_W, SP_ALWAYS,
     SP_INIT_NORMAL, "k_proj.weight", 4},
    {L_("self_attn.v_proj.weight"), MAT(SP_DIM_KVD, SP_DIM_D), SP_ROLE_V_W, SP_ALWAYS,
     SP_INIT_NORMAL, "v_proj.weight", 6},
    {L_("self_attn.q_proj.bias"), VEC(SP_DIM_QD), SP_ROLE_Q_B, SP_IF_QKV_BIAS, SP_INIT_BIAS,
     "q_proj.bias", 3},
    {L_("self_attn.k_proj.bias"), VEC(SP_DIM_KVD), SP_ROLE_K_B, SP_IF_QKV_BIAS, SP_INIT_BIAS,
     "k_proj.bias", 5},
    {L_("self_attn.v_proj.bias"), VEC(SP_DIM_KVD), SP_ROLE_V_B, SP_IF_QKV_BIAS, SP_INIT_BIAS,
     "v_proj.bias", 7},
    {L_("self_attn.o_proj.weight"), MAT(SP_DIM_D, SP_DIM_QD), SP_ROLE_O_W, SP_ALWAYS,
     SP_INIT_NORMAL, "o_proj.weight", 8},
    {L_("self_attn.o_proj.bias"), VEC(SP_DIM_D), SP_ROLE_O_B, SP_IF_O_BIAS, SP_INIT_BIAS,
     "o_proj.bias", 9},
    {L_("post_attention_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN2_W, SP_ALWAYS, SP_INIT_GAIN,
     "post_attention_layernorm.weight", 16},
    {L_("mlp.gate_proj.weight"), MAT(SP_DIM_FF, SP_DIM_D), SP_ROLE_MLP_IN_W, SP_ALWAYS,
     SP_INIT_NORMAL, "gate_proj.weight", 10},
    {L_("mlp.up_proj.weight"), MAT(SP_DIM_FF, SP_DIM_D), SP_ROLE_MLP_UP_W, SP_ALWAYS,
     SP_INIT_NORMAL, "up_proj.weight", 12},
    {L_("mlp.down_proj.weight"), MAT(SP_DIM_D, SP_DIM_FF), SP_ROLE_MLP_OUT_W, SP_ALWAYS,
     SP_INIT_NORMAL, "down_proj.weight", 14},
    {L_("mlp.gate_proj.bias"), VEC(SP_DIM_FF), SP_ROLE_MLP_IN_B, SP_IF_MLP_BIAS, SP_INIT_BIAS,
     "gate_proj.bias", 11},
    {L_("mlp.up_proj.bias"), VEC(SP_DIM_FF), SP_ROLE_MLP_UP_B, SP_IF_MLP_BIAS, SP_INIT_BIAS,
     "up_proj.bias", 13},
    {L_("mlp.down_proj.bias"), VEC(SP_DIM_D), SP_ROLE_MLP_OUT_B, SP_IF_MLP_BIAS, SP_INIT_BIAS,
     "down_proj.bias", 15},
    {"model.norm.weight", VEC(SP_DIM_D), SP_ROLE_LNF_W, SP_ALWAYS, SP_INIT_GAIN, "ln_f.weight", 17},
    {"lm_head.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_LM_HEAD, SP_IF_UNTIED, SP_INIT_NORMAL,
     "lm_head", 18},
    /* rotary frequencies older checkpoints store */
    {L_("self_attn.rotary_emb.inv_freq"), VEC(SP_DIM_NONE), SP_ROLE_BUFFER, SP_NEVER, SP_INIT_NONE,
     NULL, 19},
};

/* Qwen3ForCausalLM: Llama's rows (attention_bias gives q/k/v and o_proj biases) plus the per-head
 * norms of q and k; no MLP biases. */
static const sp__tensor_desc QWEN3_TENSORS[] = {
    {"model.embed_tokens.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_WTE, SP_ALWAYS,
     SP_INIT_NORMAL, "wte", 0},
    {L_("input_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN1_W, SP_ALWAYS, SP_INIT_GAIN,
     "input_layernorm.weight", 1},
    {L_("self_attn.q_proj.weight"), MAT(SP_DIM_QD, SP_DIM_D), SP_ROLE_Q_W, SP_ALWAYS,
     SP_INIT_NORMAL, "q_proj.weight", 2},
    {L_("self_attn.k_proj.weight"), MAT(SP_DIM_KVD, SP_DIM_D), SP_ROLE_K_W, SP_ALWAYS,
     SP_INIT_NORMAL, "k_proj.weight", 4},
    {L_("self_attn.v_proj.weight"), MAT(SP_DIM_KVD, SP_DIM_D), SP_ROLE_V_W, SP_ALWAYS,
     SP_INIT_NORMAL, "v_proj.weight", 6},
    {L_("self_attn.q_proj.bias"), VEC(SP_DIM_QD), SP_ROLE_Q_B, SP_IF_QKV_BIAS, SP_INIT_BIAS,
     "q_proj.bias", 3},
    {L_("self_attn.k_proj.bias"), VEC(SP_DIM_KVD), SP_ROLE_K_B, SP_IF_QKV_BIAS, SP_INIT_BIAS,
     "k_proj.bias", 5},
    {L_("self_attn.v_proj.bias"), VEC(SP_DIM_KVD), SP_ROLE_V_B, SP_IF_QKV_BIAS, SP_INIT_BIAS,
     "v_proj.bias", 7},
    {L_("self_attn.o_proj.weight"), MAT(SP_DIM_D, SP_DIM_QD), SP_ROLE_O_W, SP_ALWAYS,
     SP_INIT_NORMAL, "o_proj.weight", 8},
    {L_("self_attn.o_proj.bias"), VEC(SP_DIM_D), SP_ROLE_O_B, SP_IF_O_BIAS, SP_INIT_BIAS,
     "o_proj.bias", 9},
    {L_("self_attn.q_norm.weight"), VEC(SP_DIM_HD), SP_ROLE_Q_NORM, SP_ALWAYS, SP_INIT_GAIN,
     "q_norm.weight", 10},
    {L_("self_attn.k_norm.weight"), VEC(SP_DIM_HD), SP_ROLE_K_NORM, SP_ALWAYS, SP_INIT_GAIN,
     "k_norm.weight", 11},
    {L_("post_attention_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN2_W, SP_ALWAYS, SP_INIT_GAIN,
     "post_attention_layernorm.weight", 15},
    {L_("mlp.gate_proj.weight"), MAT(SP_DIM_FF, SP_DIM_D), SP_ROLE_MLP_IN_W, SP_ALWAYS,
     SP_INIT_NORMAL, "gate_proj.weight", 12},
    {L_("mlp.up_proj.weight"), MAT(SP_DIM_FF, SP_DIM_D), SP_ROLE_MLP_UP_W, SP_ALWAYS,
     SP_INIT_NORMAL, "up_proj.weight", 13},
    {L_("mlp.down_proj.weight"), MAT(SP_DIM_D, SP_DIM_FF), SP_ROLE_MLP_OUT_W, SP_ALWAYS,
     SP_INIT_NORMAL, "down_proj.weight", 14},
    {"model.norm.weight", VEC(SP_DIM_D), SP_ROLE_LNF_W, SP_ALWAYS, SP_INIT_GAIN, "ln_f.weight", 16},
    {"lm_head.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_LM_HEAD, SP_IF_UNTIED, SP_INIT_NORMAL,
     "lm_head", 17},
};

/* GemmaForCausalLM: Llama's layout (attention_bias: q/k/v and o_proj), norm gains stored as
 * offsets from 1, no MLP biases; the head is tied unless tie_word_embeddings is false. In the
 * order of HF's state dict (Gemma has no earlier fingerprints to keep). */
static const sp__tensor_desc GEMMA_TENSORS[] = {
    {"model.embed_tokens.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_WTE, SP_ALWAYS,
     SP_INIT_NORMAL, "wte", 0},
    {L_("self_attn.q_proj.weight"), MAT(SP_DIM_QD, SP_DIM_D), SP_ROLE_Q_W, SP_ALWAYS,
     SP_INIT_NORMAL, "q_proj.weight", 1},
    {L_("self_attn.q_proj.bias"), VEC(SP_DIM_QD), SP_ROLE_Q_B, SP_IF_QKV_BIAS, SP_INIT_BIAS,
     "q_proj.bias", 2},
    {L_("self_attn.k_proj.weight"), MAT(SP_DIM_KVD, SP_DIM_D), SP_ROLE_K_W, SP_ALWAYS,
     SP_INIT_NORMAL, "k_proj.weight", 3},
    {L_("self_attn.k_proj.bias"), VEC(SP_DIM_KVD), SP_ROLE_K_B, SP_IF_QKV_BIAS, SP_INIT_BIAS,
     "k_proj.bias", 4},
    {L_("self_attn.v_proj.weight"), MAT(SP_DIM_KVD, SP_DIM_D), SP_ROLE_V_W, SP_ALWAYS,
     SP_INIT_NORMAL, "v_proj.weight", 5},
    {L_("self_attn.v_proj.bias"), VEC(SP_DIM_KVD), SP_ROLE_V_B, SP_IF_QKV_BIAS, SP_INIT_BIAS,
     "v_proj.bias", 6},
    {L_("self_attn.o_proj.weight"), MAT(SP_DIM_D, SP_DIM_QD), SP_ROLE_O_W, SP_ALWAYS,
     SP_INIT_NORMAL, "o_proj.weight", 7},
    {L_("self_attn.o_proj.bias"), VEC(SP_DIM_D), SP_ROLE_O_B, SP_IF_O_BIAS, SP_INIT_BIAS,
     "o_proj.bias", 8},
    {L_("mlp.gate_proj.weight"), MAT(SP_DIM_FF, SP_DIM_D), SP_ROLE_MLP_IN_W, SP_ALWAYS,
     SP_INIT_NORMAL, "gate_proj.weight", 9},
    {L_("mlp.up_proj.weight"), MAT(SP_DIM_FF, SP_DIM_D), SP_ROLE_MLP_UP_W, SP_ALWAYS,
     SP_INIT_NORMAL, "up_proj.weight", 10},
    {L_("mlp.down_proj.weight"), MAT(SP_DIM_D, SP_DIM_FF), SP_ROLE_MLP_OUT_W, SP_ALWAYS,
     SP_INIT_NORMAL, "down_proj.weight", 11},
    {L_("input_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN1_W, SP_ALWAYS, SP_INIT_GAIN_OFFSET,
     "input_layernorm.weight", 12},
    {L_("post_attention_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN2_W, SP_ALWAYS,
     SP_INIT_GAIN_OFFSET, "post_attention_layernorm.weight", 13},
    {"model.norm.weight", VEC(SP_DIM_D), SP_ROLE_LNF_W, SP_ALWAYS, SP_INIT_GAIN_OFFSET,
     "ln_f.weight", 14},
    {"lm_head.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_LM_HEAD, SP_IF_UNTIED, SP_INIT_NORMAL,
     "lm_head", 15},
};

/* Gemma2ForCausalLM: Gemma's rows; post_attention_layernorm is after attention there, and the
 * MLP has a norm before (pre_feedforward_layernorm) and after it. HF's state dict order. */
static const sp__tensor_desc GEMMA2_TENSORS[] = {
    {"model.embed_tokens.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_WTE, SP_ALWAYS,
     SP_INIT_NORMAL, "wte", 0},
    {L_("self_attn.q_proj.weight"), MAT(SP_DIM_QD, SP_DIM_D), SP_ROLE_Q_W, SP_ALWAYS,
     SP_INIT_NORMAL, "q_proj.weight", 1},
    {L_("self_attn.q_proj.bias"), VEC(SP_DIM_QD), SP_ROLE_Q_B, SP_IF_QKV_BIAS, SP_INIT_BIAS,
     "q_proj.bias", 2},
    {L_("self_attn.k_proj.weight"), MAT(SP_DIM_KVD, SP_DIM_D), SP_ROLE_K_W, SP_ALWAYS,
     SP_INIT_NORMAL, "k_proj.weight", 3},
    {L_("self_attn.k_proj.bias"), VEC(SP_DIM_KVD), SP_ROLE_K_B, SP_IF_QKV_BIAS, SP_INIT_BIAS,
     "k_proj.bias", 4},
    {L_("self_attn.v_proj.weight"), MAT(SP_DIM_KVD, SP_DIM_D), SP_ROLE_V_W, SP_ALWAYS,
     SP_INIT_NORMAL, "v_proj.weight", 5},
    {L_("self_attn.v_proj.bias"), VEC(SP_DIM_KVD), SP_ROLE_V_B, SP_IF_QKV_BIAS, SP_INIT_BIAS,
     "v_proj.bias", 6},
    {L_("self_attn.o_proj.weight"), MAT(SP_DIM_D, SP_DIM_QD), SP_ROLE_O_W, SP_ALWAYS,
     SP_INIT_NORMAL, "o_proj.weight", 7},
    {L_("self_attn.o_proj.bias"), VEC(SP_DIM_D), SP_ROLE_O_B, SP_IF_O_BIAS, SP_INIT_BIAS,
     "o_proj.bias", 8},
    {L_("mlp.gate_proj.weight"), MAT(SP_DIM_FF, SP_DIM_D), SP_ROLE_MLP_IN_W, SP_ALWAYS,
     SP_INIT_NORMAL, "gate_proj.weight", 9},
    {L_("mlp.up_proj.weight"), MAT(SP_DIM_FF, SP_DIM_D), SP_ROLE_MLP_UP_W, SP_ALWAYS,
     SP_INIT_NORMAL, "up_proj.weight", 10},
    {L_("mlp.down_proj.weight"), MAT(SP_DIM_D, SP_DIM_FF), SP_ROLE_MLP_OUT_W, SP_ALWAYS,
     SP_INIT_NORMAL, "down_proj.weight", 11},
    {L_("input_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN1_W, SP_ALWAYS, SP_INIT_GAIN_OFFSET,
     "input_layernorm.weight", 12},
    {L_("post_attention_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN_POST_ATTN_W, SP_ALWAYS,
     SP_INIT_GAIN_OFFSET, "post_attention_layernorm.weight", 13},
    {L_("pre_feedforward_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN2_W, SP_ALWAYS,
     SP_INIT_GAIN_OFFSET, "pre_feedforward_layernorm.weight", 14},
    {L_("post_feedforward_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN_POST_FF_W, SP_ALWAYS,
     SP_INIT_GAIN_OFFSET, "post_feedforward_layernorm.weight", 15},
    {"model.norm.weight", VEC(SP_DIM_D), SP_ROLE_LNF_W, SP_ALWAYS, SP_INIT_GAIN_OFFSET,
     "ln_f.weight", 16},
    {"lm_head.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_LM_HEAD, SP_IF_UNTIED, SP_INIT_NORMAL,
     "lm_head", 17},
};

/* Gemma3ForCausalLM (gemma3_text): Gemma 2's rows with the q/k norms of Qwen3's kind, (1 + w). */
static const sp__tensor_desc GEMMA3_TENSORS[] = {
    {"model.embed_tokens.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_WTE, SP_ALWAYS,
     SP_INIT_NORMAL, "wte", 0},
    {L_("self_attn.q_proj.weight"), MAT(SP_DIM_QD, SP_DIM_D), SP_ROLE_Q_W, SP_ALWAYS,
     SP_INIT_NORMAL, "q_proj.weight", 1},
    {L_("self_attn.q_proj.bias"), VEC(SP_DIM_QD), SP_ROLE_Q_B, SP_IF_QKV_BIAS, SP_INIT_BIAS,
     "q_proj.bias", 2},
    {L_("self_attn.k_proj.weight"), MAT(SP_DIM_KVD, SP_DIM_D), SP_ROLE_K_W, SP_ALWAYS,
     SP_INIT_NORMAL, "k_proj.weight", 3},
    {L_("self_attn.k_proj.bias"), VEC(SP_DIM_KVD), SP_ROLE_K_B, SP_IF_QKV_BIAS, SP_INIT_BIAS,
     "k_proj.bias", 4},
    {L_("self_attn.v_proj.weight"), MAT(SP_DIM_KVD, SP_DIM_D), SP_ROLE_V_W, SP_ALWAYS,
     SP_INIT_NORMAL, "v_proj.weight", 5},
    {L_("self_attn.v_proj.bias"), VEC(SP_DIM_KVD), SP_ROLE_V_B, SP_IF_QKV_BIAS, SP_INIT_BIAS,
     "v_proj.bias", 6},
    {L_("self_attn.o_proj.weight"), MAT(SP_DIM_D, SP_DIM_QD), SP_ROLE_O_W, SP_ALWAYS,
     SP_INIT_NORMAL, "o_proj.weight", 7},
    {L_("self_attn.o_proj.bias"), VEC(SP_DIM_D), SP_ROLE_O_B, SP_IF_O_BIAS, SP_INIT_BIAS,
     "o_proj.bias", 8},
    {L_("self_attn.q_norm.weight"), VEC(SP_DIM_HD), SP_ROLE_Q_NORM, SP_ALWAYS, SP_INIT_GAIN_OFFSET,
     "q_norm.weight", 9},
    {L_("self_attn.k_norm.weight"), VEC(SP_DIM_HD), SP_ROLE_K_NORM, SP_ALWAYS, SP_INIT_GAIN_OFFSET,
     "k_norm.weight", 10},
    {L_("mlp.gate_proj.weight"), MAT(SP_DIM_FF, SP_DIM_D), SP_ROLE_MLP_IN_W, SP_ALWAYS,
     SP_INIT_NORMAL, "gate_proj.weight", 11},
    {L_("mlp.up_proj.weight"), MAT(SP_DIM_FF, SP_DIM_D), SP_ROLE_MLP_UP_W, SP_ALWAYS,
     SP_INIT_NORMAL, "up_proj.weight", 12},
    {L_("mlp.down_proj.weight"), MAT(SP_DIM_D, SP_DIM_FF), SP_ROLE_MLP_OUT_W, SP_ALWAYS,
     SP_INIT_NORMAL, "down_proj.weight", 13},
    {L_("input_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN1_W, SP_ALWAYS, SP_INIT_GAIN_OFFSET,
     "input_layernorm.weight", 14},
    {L_("post_attention_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN_POST_ATTN_W, SP_ALWAYS,
     SP_INIT_GAIN_OFFSET, "post_attention_layernorm.weight", 15},
    {L_("pre_feedforward_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN2_W, SP_ALWAYS,
     SP_INIT_GAIN_OFFSET, "pre_feedforward_layernorm.weight", 16},
    {L_("post_feedforward_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN_POST_FF_W, SP_ALWAYS,
     SP_INIT_GAIN_OFFSET, "post_feedforward_layernorm.weight", 17},
    {"model.norm.weight", VEC(SP_DIM_D), SP_ROLE_LNF_W, SP_ALWAYS, SP_INIT_GAIN_OFFSET,
     "ln_f.weight", 18},
    {"lm_head.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_LM_HEAD, SP_IF_UNTIED, SP_INIT_NORMAL,
     "lm_head", 19},
};

/* GPTNeoXForCausalLM: nn.Linear weights, LayerNorms with biases, query_key_value writing each
 * head's q, k, v side by side, biases on q/k/v and dense when attention_bias (default true), the
 * MLP's always; embed_out untied unless tie_word_embeddings. HF's state dict order. */
#define N_(name) "gpt_neox.layers.%d." name
static const sp__tensor_desc NEOX_TENSORS[] = {
    {"gpt_neox.embed_in.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_WTE, SP_ALWAYS,
     SP_INIT_NORMAL, "wte", 0},
    {N_("input_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN1_W, SP_ALWAYS, SP_INIT_GAIN,
     "input_layernorm.weight", 1},
    {N_("input_layernorm.bias"), VEC(SP_DIM_D), SP_ROLE_LN1_B, SP_ALWAYS, SP_INIT_BIAS,
     "input_layernorm.bias", 2},
    {N_("post_attention_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN2_W, SP_ALWAYS, SP_INIT_GAIN,
     "post_attention_layernorm.weight", 3},
    {N_("post_attention_layernorm.bias"), VEC(SP_DIM_D), SP_ROLE_LN2_B, SP_ALWAYS, SP_INIT_BIAS,
     "post_attention_layernorm.bias", 4},
    {N_("attention.query_key_value.weight"), MAT(SP_DIM_QKV, SP_DIM_D), SP_ROLE_QKV_W, SP_ALWAYS,
     SP_INIT_NORMAL, "query_key_value.weight", 5},
    {N_("attention.query_key_value.bias"), VEC(SP_DIM_QKV), SP_ROLE_QKV_B, SP_IF_QKV_BIAS,
     SP_INIT_BIAS, "query_key_value.bias", 6},
    {N_("attention.dense.weight"), MAT(SP_DIM_D, SP_DIM_QD), SP_ROLE_O_W, SP_ALWAYS, SP_INIT_NORMAL,
     "dense.weight", 7},
    {N_("attention.dense.bias"), VEC(SP_DIM_D), SP_ROLE_O_B, SP_IF_O_BIAS, SP_INIT_BIAS,
     "dense.bias", 8},
    {N_("mlp.dense_h_to_4h.weight"), MAT(SP_DIM_FF, SP_DIM_D), SP_ROLE_MLP_IN_W, SP_ALWAYS,
     SP_INIT_NORMAL, "dense_h_to_4h.weight", 9},
    {N_("mlp.dense_h_to_4h.bias"), VEC(SP_DIM_FF), SP_ROLE_MLP_IN_B, SP_ALWAYS, SP_INIT_BIAS,
     "dense_h_to_4h.bias", 10},
    {N_("mlp.dense_4h_to_h.weight"), MAT(SP_DIM_D, SP_DIM_FF), SP_ROLE_MLP_OUT_W, SP_ALWAYS,
     SP_INIT_NORMAL, "dense_4h_to_h.weight", 11},
    {N_("mlp.dense_4h_to_h.bias"), VEC(SP_DIM_D), SP_ROLE_MLP_OUT_B, SP_ALWAYS, SP_INIT_BIAS,
     "dense_4h_to_h.bias", 12},
    {"gpt_neox.final_layer_norm.weight", VEC(SP_DIM_D), SP_ROLE_LNF_W, SP_ALWAYS, SP_INIT_GAIN,
     "ln_f.weight", 13},
    {"gpt_neox.final_layer_norm.bias", VEC(SP_DIM_D), SP_ROLE_LNF_B, SP_ALWAYS, SP_INIT_BIAS,
     "ln_f.bias", 14},
    {"embed_out.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_LM_HEAD, SP_IF_UNTIED, SP_INIT_NORMAL,
     "lm_head", 15},
    /* the causal mask, its fill value and the rotary frequencies older checkpoints store */
    {N_("attention.bias"), VEC(SP_DIM_NONE), SP_ROLE_BUFFER, SP_NEVER, SP_INIT_NONE, NULL, 16},
    {N_("attention.masked_bias"), VEC(SP_DIM_NONE), SP_ROLE_BUFFER, SP_NEVER, SP_INIT_NONE, NULL,
     17},
    {N_("attention.rotary_emb.inv_freq"), VEC(SP_DIM_NONE), SP_ROLE_BUFFER, SP_NEVER, SP_INIT_NONE,
     NULL, 18},
};
#undef N_

/* Phi3ForCausalLM: Llama's rows with q/k/v in one qkv_proj ([q | k | v] rows) and the MLP's gate
 * and up projections in one gate_up_proj (gate rows first); no biases. HF's state dict order. */
static const sp__tensor_desc PHI3_TENSORS[] = {
    {"model.embed_tokens.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_WTE, SP_ALWAYS,
     SP_INIT_NORMAL, "wte", 0},
    {L_("self_attn.o_proj.weight"), MAT(SP_DIM_D, SP_DIM_QD), SP_ROLE_O_W, SP_ALWAYS,
     SP_INIT_NORMAL, "o_proj.weight", 1},
    {L_("self_attn.qkv_proj.weight"), MAT(SP_DIM_QKV, SP_DIM_D), SP_ROLE_QKV_W, SP_ALWAYS,
     SP_INIT_NORMAL, "qkv_proj.weight", 2},
    {L_("mlp.gate_up_proj.weight"), MAT(SP_DIM_FF2, SP_DIM_D), SP_ROLE_MLP_GATE_UP_W, SP_ALWAYS,
     SP_INIT_NORMAL, "gate_up_proj.weight", 3},
    {L_("mlp.down_proj.weight"), MAT(SP_DIM_D, SP_DIM_FF), SP_ROLE_MLP_OUT_W, SP_ALWAYS,
     SP_INIT_NORMAL, "down_proj.weight", 4},
    {L_("input_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN1_W, SP_ALWAYS, SP_INIT_GAIN,
     "input_layernorm.weight", 5},
    {L_("post_attention_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN2_W, SP_ALWAYS, SP_INIT_GAIN,
     "post_attention_layernorm.weight", 6},
    {"model.norm.weight", VEC(SP_DIM_D), SP_ROLE_LNF_W, SP_ALWAYS, SP_INIT_GAIN, "ln_f.weight", 7},
    {"lm_head.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_LM_HEAD, SP_IF_UNTIED, SP_INIT_NORMAL,
     "lm_head", 8},
};

/* OPTForCausalLM: GPT-2's block with nn.Linear q/k/v/out_proj, fc1/fc2 and ReLU; the position
 * table has 2 rows before position 0 (OPTLearnedPositionalEmbedding's offset); biases with
 * enable_bias (true); the head tied to embed_tokens. Names with or without the "model." prefix
 * (older checkpoints: "decoder.*"). HF's state dict order. With word_embed_proj_dim below
 * hidden_size, embed_tokens and the head are that narrow, and project_in / project_out (no bias)
 * go between them and the blocks. A block's norms are self_attn_layer_norm and final_layer_norm:
 * before attention and the MLP (do_layer_norm_before true, then a final norm after the last
 * block), or after each residual add (false: opt-350m, no final norm). */
#define O_(name) "decoder.layers.%d." name
/* clang-format off */
#define OPT_LAYER_ROWS(attn_w, attn_b, ff_w, ff_b, r)                                              \
    {O_("self_attn.k_proj.weight"), MAT(SP_DIM_KVD, SP_DIM_D), SP_ROLE_K_W, SP_ALWAYS,             \
     SP_INIT_NORMAL, "k_proj.weight", (r)},                                                        \
    {O_("self_attn.k_proj.bias"), VEC(SP_DIM_KVD), SP_ROLE_K_B, SP_IF_QKV_BIAS, SP_INIT_BIAS,      \
     "k_proj.bias", (r) + 1},                                                                      \
    {O_("self_attn.v_proj.weight"), MAT(SP_DIM_KVD, SP_DIM_D), SP_ROLE_V_W, SP_ALWAYS,             \
     SP_INIT_NORMAL, "v_proj.weight", (r) + 2},                                                    \
    {O_("self_attn.v_proj.bias"), VEC(SP_DIM_KVD), SP_ROLE_V_B, SP_IF_QKV_BIAS, SP_INIT_BIAS,      \
     "v_proj.bias", (r) + 3},                                                                      \
    {O_("self_attn.q_proj.weight"), MAT(SP_DIM_QD, SP_DIM_D), SP_ROLE_Q_W, SP_ALWAYS,              \
     SP_INIT_NORMAL, "q_proj.weight", (r) + 4},                                                    \
    {O_("self_attn.q_proj.bias"), VEC(SP_DIM_QD), SP_ROLE_Q_B, SP_IF_QKV_BIAS, SP_INIT_BIAS,       \
     "q_proj.bias", (r) + 5},                                                                      \
    {O_("self_attn.out_proj.weight"), MAT(SP_DIM_D, SP_DIM_QD), SP_ROLE_O_W, SP_ALWAYS,            \
     SP_INIT_NORMAL, "out_proj.weight", (r) + 6},                                                  \
    {O_("self_attn.out_proj.bias"), VEC(SP_DIM_D), SP_ROLE_O_B, SP_IF_O_BIAS, SP_INIT_BIAS,        \
     "out_proj.bias", (r) + 7},                                                                    \
    {O_("self_attn_layer_norm.weight"), VEC(SP_DIM_D), attn_w, SP_ALWAYS, SP_INIT_GAIN,            \
     "self_attn_layer_norm.weight", (r) + 8},                                                      \
    {O_("self_attn_layer_norm.bias"), VEC(SP_DIM_D), attn_b, SP_ALWAYS, SP_INIT_BIAS,              \
     "self_attn_layer_norm.bias", (r) + 9},                                                        \
    {O_("fc1.weight"), MAT(SP_DIM_FF, SP_DIM_D), SP_ROLE_MLP_IN_W, SP_ALWAYS, SP_INIT_NORMAL,      \
     "fc1.weight", (r) + 10},                                                                      \
    {O_("fc1.bias"), VEC(SP_DIM_FF), SP_ROLE_MLP_IN_B, SP_IF_MLP_BIAS, SP_INIT_BIAS, "fc1.bias",   \
     (r) + 11},                                                                                    \
    {O_("fc2.weight"), MAT(SP_DIM_D, SP_DIM_FF), SP_ROLE_MLP_OUT_W, SP_ALWAYS, SP_INIT_NORMAL,     \
     "fc2.weight", (r) + 12},                                                                      \
    {O_("fc2.bias"), VEC(SP_DIM_D), SP_ROLE_MLP_OUT_B, SP_IF_MLP_BIAS, SP_INIT_BIAS, "fc2.bias",   \
     (r) + 13},                                                                                    \
    {O_("final_layer_norm.weight"), VEC(SP_DIM_D), ff_w, SP_ALWAYS, SP_INIT_GAIN,                  \
     "final_layer_norm.weight", (r) + 14},                                                         \
    {O_("final_layer_norm.bias"), VEC(SP_DIM_D), ff_b, SP_ALWAYS, SP_INIT_BIAS,                    \
     "final_layer_norm.bias", (r) + 15}
#define OPT_EMBED_ROWS                                                                             \
    {"decoder.embed_tokens.weight", MAT(SP_DIM_VOCAB, SP_DIM_EMBED), SP_ROLE_WTE, SP_ALWAYS,       \
     SP_INIT_NORMAL, "wte", 0},                                                                    \
    {"decoder.embed_positions.weight", MAT(SP_DIM_POS, SP_DIM_D), SP_ROLE_WPE, SP_ALWAYS,          \
     SP_INIT_NORMAL, "wpe", 1},                                                                    \
    {"decoder.project_out.weight", MAT(SP_DIM_EMBED, SP_DIM_D), SP_ROLE_PROJECT_OUT_W,             \
     SP_IF_PROJECT, SP_INIT_NORMAL, "project_out.weight", 2},                                      \
    {"decoder.project_in.weight", MAT(SP_DIM_D, SP_DIM_EMBED), SP_ROLE_PROJECT_IN_W,               \
     SP_IF_PROJECT, SP_INIT_NORMAL, "project_in.weight", 3}
#define OPT_HEAD_ROW(r)                                                                            \
    {"lm_head.weight", MAT(SP_DIM_VOCAB, SP_DIM_EMBED), SP_ROLE_LM_HEAD, SP_IF_UNTIED,             \
     SP_INIT_NORMAL, "lm_head", (r)}
/* clang-format on */
static const sp__tensor_desc OPT_TENSORS[] = {
    OPT_EMBED_ROWS,
    {"decoder.final_layer_norm.weight", VEC(SP_DIM_D), SP_ROLE_LNF_W, SP_ALWAYS, SP_INIT_GAIN,
     "ln_f.weight", 4},
    {"decoder.final_layer_norm.bias", VEC(SP_DIM_D), SP_ROLE_LNF_B, SP_ALWAYS, SP_INIT_BIAS,
     "ln_f.bias", 5},
    OPT_LAYER_ROWS(SP_ROLE_LN1_W, SP_ROLE_LN1_B, SP_ROLE_LN2_W, SP_ROLE_LN2_B, 6),
    OPT_HEAD_ROW(22),
};
/* do_layer_norm_before false: the same names, the block's norms after its residual adds, no
 * final norm (OPTDecoder creates none). */
static const sp__tensor_desc OPT_POST_TENSORS[] = {
    OPT_EMBED_ROWS,
    OPT_LAYER_ROWS(SP_ROLE_LN_POST_ATTN_W, SP_ROLE_LN_POST_ATTN_B, SP_ROLE_LN_POST_FF_W,
                   SP_ROLE_LN_POST_FF_B, 4),
    OPT_HEAD_ROW(20),
};
#undef OPT_HEAD_ROW
#undef OPT_EMBED_ROWS
#undef OPT_LAYER_ROWS
#undef O_

/* PhiForCausalLM (Phi-2): one LayerNorm per block feeding attention and the MLP in parallel
 * (SP_ROLE_LN_SHARED_*: ln1 and ln2 are the same), q/k/v and dense with biases, fc1/fc2 with
 * biases, final_layernorm, lm_head with a bias. HF's state dict order. */
#define P_(name) "model.layers.%d." name
static const sp__tensor_desc PHI_TENSORS[] = {
    {"model.embed_tokens.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_WTE, SP_ALWAYS,
     SP_INIT_NORMAL, "wte", 0},
    {P_("self_attn.q_proj.weight"), MAT(SP_DIM_QD, SP_DIM_D), SP_ROLE_Q_W, SP_ALWAYS,
     SP_INIT_NORMAL, "q_proj.weight", 1},
    {P_("self_attn.q_proj.bias"), VEC(SP_DIM_QD), SP_ROLE_Q_B, SP_ALWAYS, SP_INIT_BIAS,
     "q_proj.bias", 2},
    {P_("self_attn.k_proj.weight"), MAT(SP_DIM_KVD, SP_DIM_D), SP_ROLE_K_W, SP_ALWAYS,
     SP_INIT_NORMAL, "k_proj.weight", 3},
    {P_("self_attn.k_proj.bias"), VEC(SP_DIM_KVD), SP_ROLE_K_B, SP_ALWAYS, SP_INIT_BIAS,
     "k_proj.bias", 4},
    {P_("self_attn.v_proj.weight"), MAT(SP_DIM_KVD, SP_DIM_D), SP_ROLE_V_W, SP_ALWAYS,
     SP_INIT_NORMAL, "v_proj.weight", 5},
    {P_("self_attn.v_proj.bias"), VEC(SP_DIM_KVD), SP_ROLE_V_B, SP_ALWAYS, SP_INIT_BIAS,
     "v_proj.bias", 6},
    {P_("self_attn.dense.weight"), MAT(SP_DIM_D, SP_DIM_QD), SP_ROLE_O_W, SP_ALWAYS, SP_INIT_NORMAL,
     "dense.weight", 7},
    {P_("self_attn.dense.bias"), VEC(SP_DIM_D), SP_ROLE_O_B, SP_ALWAYS, SP_INIT_BIAS, "dense.bias",
     8},
    {P_("mlp.fc1.weight"), MAT(SP_DIM_FF, SP_DIM_D), SP_ROLE_MLP_IN_W, SP_ALWAYS, SP_INIT_NORMAL,
     "fc1.weight", 9},
    {P_("mlp.fc1.bias"), VEC(SP_DIM_FF), SP_ROLE_MLP_IN_B, SP_ALWAYS, SP_INIT_BIAS, "fc1.bias", 10},
    {P_("mlp.fc2.weight"), MAT(SP_DIM_D, SP_DIM_FF), SP_ROLE_MLP_OUT_W, SP_ALWAYS, SP_INIT_NORMAL,
     "fc2.weight", 11},
    {P_("mlp.fc2.bias"), VEC(SP_DIM_D), SP_ROLE_MLP_OUT_B, SP_ALWAYS, SP_INIT_BIAS, "fc2.bias", 12},
    {P_("input_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN_SHARED_W, SP_ALWAYS, SP_INIT_GAIN,
     "input_layernorm.weight", 13},
    {P_("input_layernorm.bias"), VEC(SP_DIM_D), SP_ROLE_LN_SHARED_B, SP_ALWAYS, SP_INIT_BIAS,
     "input_layernorm.bias", 14},
    {"model.final_layernorm.weight", VEC(SP_DIM_D), SP_ROLE_LNF_W, SP_ALWAYS, SP_INIT_GAIN,
     "ln_f.weight", 15},
    {"model.final_layernorm.bias", VEC(SP_DIM_D), SP_ROLE_LNF_B, SP_ALWAYS, SP_INIT_BIAS,
     "ln_f.bias", 16},
    {"lm_head.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_LM_HEAD, SP_IF_UNTIED, SP_INIT_NORMAL,
     "lm_head", 17},
    {"lm_head.bias", VEC(SP_DIM_VOCAB), SP_ROLE_LM_HEAD_B, SP_ALWAYS, SP_INIT_BIAS, "lm_head.bias",
     18},
};
#undef P_

/* BloomForCausalLM: word_embeddings and their LayerNorm, query_key_value writing each head's q, k,
 * v side by side, dense, dense_h_to_4h / dense_4h_to_h, biases on every linear, ln_f, the head
 * tied unless tie_word_embeddings is false. Names with or without "transformer." (bloom-560m's
 * files have none). HF's state dict order. */
#define B_(name) "h.%d." name
static const sp__tensor_desc BLOOM_TENSORS[] = {
    {"word_embeddings.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_WTE, SP_ALWAYS, SP_INIT_NORMAL,
     "wte", 0},
    {"word_embeddings_layernorm.weight", VEC(SP_DIM_D), SP_ROLE_EMB_LN_W, SP_ALWAYS, SP_INIT_GAIN,
     "word_embeddings_layernorm.weight", 1},
    {"word_embeddings_layernorm.bias", VEC(SP_DIM_D), SP_ROLE_EMB_LN_B, SP_ALWAYS, SP_INIT_BIAS,
     "word_embeddings_layernorm.bias", 2},
    {B_("input_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN1_W, SP_ALWAYS, SP_INIT_GAIN,
     "input_layernorm.weight", 3},
    {B_("input_layernorm.bias"), VEC(SP_DIM_D), SP_ROLE_LN1_B, SP_ALWAYS, SP_INIT_BIAS,
     "input_layernorm.bias", 4},
    {B_("self_attention.query_key_value.weight"), MAT(SP_DIM_QKV, SP_DIM_D), SP_ROLE_QKV_W,
     SP_ALWAYS, SP_INIT_NORMAL, "query_key_value.weight", 5},
    {B_("self_attention.query_key_value.bias"), VEC(SP_DIM_QKV), SP_ROLE_QKV_B, SP_ALWAYS,
     SP_INIT_BIAS, "query_key_value.bias", 6},
    {B_("self_attention.dense.weight"), MAT(SP_DIM_D, SP_DIM_QD), SP_ROLE_O_W, SP_ALWAYS,
     SP_INIT_NORMAL, "dense.weight", 7},
    {B_("self_attention.dense.bias"), VEC(SP_DIM_D), SP_ROLE_O_B, SP_ALWAYS, SP_INIT_BIAS,
     "dense.bias", 8},
    {B_("post_attention_layernorm.weight"), VEC(SP_DIM_D), SP_ROLE_LN2_W, SP_ALWAYS, SP_INIT_GAIN,
     "post_attention_layernorm.weight", 9},
    {B_("post_attention_layernorm.bias"), VEC(SP_DIM_D), SP_ROLE_LN2_B, SP_ALWAYS, SP_INIT_BIAS,
     "post_attention_layernorm.bias", 10},
    {B_("mlp.dense_h_to_4h.weight"), MAT(SP_DIM_FF, SP_DIM_D), SP_ROLE_MLP_IN_W, SP_ALWAYS,
     SP_INIT_NORMAL, "dense_h_to_4h.weight", 11},
    {B_("mlp.dense_h_to_4h.bias"), VEC(SP_DIM_FF), SP_ROLE_MLP_IN_B, SP_ALWAYS, SP_INIT_BIAS,
     "dense_h_to_4h.bias", 12},
    {B_("mlp.dense_4h_to_h.weight"), MAT(SP_DIM_D, SP_DIM_FF), SP_ROLE_MLP_OUT_W, SP_ALWAYS,
     SP_INIT_NORMAL, "dense_4h_to_h.weight", 13},
    {B_("mlp.dense_4h_to_h.bias"), VEC(SP_DIM_D), SP_ROLE_MLP_OUT_B, SP_ALWAYS, SP_INIT_BIAS,
     "dense_4h_to_h.bias", 14},
    {"ln_f.weight", VEC(SP_DIM_D), SP_ROLE_LNF_W, SP_ALWAYS, SP_INIT_GAIN, "ln_f.weight", 15},
    {"ln_f.bias", VEC(SP_DIM_D), SP_ROLE_LNF_B, SP_ALWAYS, SP_INIT_BIAS, "ln_f.bias", 16},
    {"lm_head.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_LM_HEAD, SP_IF_UNTIED, SP_INIT_NORMAL,
     "lm_head", 17},
};
#undef B_
#undef L_

/* BertForMaskedLM, RobertaForMaskedLM: the encoder's rows (under the optional "bert." /
 * "roberta." prefix) and the MLM head outside it; the pooler (and a pre-training head's
 * next-sentence classifier) are known and ignored. HF's state dict order. */
#define E_(name) "encoder.layer.%d." name
#define ENCODER_ROWS                                                                                 \
    {"embeddings.word_embeddings.weight",                                                            \
     MAT(SP_DIM_VOCAB, SP_DIM_D),                                                                    \
     SP_ROLE_WTE,                                                                                    \
     SP_ALWAYS,                                                                                      \
     SP_INIT_NORMAL,                                                                                 \
     "wte",                                                                                          \
     0},                                                                                             \
        {"embeddings.position_embeddings.weight",                                                    \
         MAT(SP_DIM_POS, SP_DIM_D),                                                                  \
         SP_ROLE_WPE,                                                                                \
         SP_ALWAYS,                                                                                  \
         SP_INIT_NORMAL,                                                                             \
         "wpe",                                                                                      \
         1},                                                                                         \
        {"embeddings.token_type_embeddings.weight",                                                  \
         MAT(SP_DIM_TYPES, SP_DIM_D),                                                                \
         SP_ROLE_TYPE_EMB,                                                                           \
         SP_ALWAYS,                                                                                  \
         SP_INIT_NORMAL,                                                                             \
         "token_type_embeddings",                                                                    \
         2},                                                                                         \
        {"embeddings.LayerNorm.weight",                                                              \
         VEC(SP_DIM_D),                                                                              \
         SP_ROLE_EMB_LN_W,                                                                           \
         SP_ALWAYS,                                                                                  \
         SP_INIT_GAIN,                                                                               \
         "embeddings.LayerNorm.weight",                                                              \
         3},                                                                                         \
        {"embeddings.LayerNorm.bias",                                                                \
         VEC(SP_DIM_D),                                                                              \
         SP_ROLE_EMB_LN_B,                                                                           \
         SP_ALWAYS,                                                                                  \
         SP_INIT_BIAS,                                                                               \
         "embeddings.LayerNorm.bias",                                                                \
         4},                                                                                         \
        {E_("attention.self.query.weight"),                                                          \
         MAT(SP_DIM_QD, SP_DIM_D),                                                                   \
         SP_ROLE_Q_W,                                                                                \
         SP_ALWAYS,                                                                                  \
         SP_INIT_NORMAL,                                                                             \
         "query.weight",                                                                             \
         5},                                                                                         \
        {E_("attention.self.query.bias"),                                                            \
         VEC(SP_DIM_QD),                                                                             \
         SP_ROLE_Q_B,                                                                                \
         SP_ALWAYS,                                                                                  \
         SP_INIT_BIAS,                                                                               \
         "query.bias",                                                                               \
         6},                                                                                         \
        {E_("attention.self.key.weight"),                                                            \
         MAT(SP_DIM_KVD, SP_DIM_D),                                                                  \
         SP_ROLE_K_W,                                                                                \
         SP_ALWAYS,                                                                                  \
         SP_INIT_NORMAL,                                                                             \
         "key.weight",                                                                               \
         7},                                                                                         \
        {E_("attention.self.key.bias"),                                                              \
         VEC(SP_DIM_KVD),                                                                            \
         SP_ROLE_K_B,                                                                                \
         SP_ALWAYS,                                                                                  \
         SP_INIT_BIAS,                                                                               \
         "key.bias",                                                                                 \
         8},                                                                                         \
        {E_("attention.self.value.weight"),                                                          \
         MAT(SP_DIM_KVD, SP_DIM_D),                                                                  \
         SP_ROLE_V_W,                                                                                \
         SP_ALWAYS,                                                                                  \
         SP_INIT_NORMAL,                                                                             \
         "value.weight",                                                                             \
         9},                                                                                         \
        {E_("attention.self.value.bias"),                                                            \
         VEC(SP_DIM_KVD),                                                                            \
         SP_ROLE_V_B,                                                                                \
         SP_ALWAYS,                                                                                  \
         SP_INIT_BIAS,                                                                               \
         "value.bias",                                                                               \
         10},                                                                                        \
        {E_("attention.output.dense.weight"),                                                        \
         MAT(SP_DIM_D, SP_DIM_QD),                                                                   \
         SP_ROLE_O_W,                                                                                \
         SP_ALWAYS,                                                                                  \
         SP_INIT_NORMAL,                                                                             \
         "attention.output.dense.weight",                                                            \
         11},                                                                                        \
        {E_("attention.output.dense.bias"),                                                          \
         VEC(SP_DIM_D),                                                                              \
         SP_ROLE_O_B,                                                                                \
         SP_ALWAYS,                                                                                  \
         SP_INIT_BIAS,                                                                               \
         "attention.output.dense.bias",                                                              \
         12},                                                                                        \
        {E_("attention.output.LayerNorm.weight"),                                                    \
         VEC(SP_DIM_D),                                                                              \
         SP_ROLE_LN_POST_ATTN_W,                                                                     \
         SP_ALWAYS,                                                                                  \
         SP_INIT_GAIN,                                                                               \
         "attention.output.LayerNorm.weight",                                                        \
         13},                                                                                        \
        {E_("attention.output.LayerNorm.bias"),                                                      \
         VEC(SP_DIM_D),                                                                              \
         SP_ROLE_LN_POST_ATTN_B,                                                                     \
         SP_ALWAYS,                                                                                  \
         SP_INIT_BIAS,                                                                               \
         "attention.output.LayerNorm.bias",                                                          \
         14},                                                                                        \
        {E_("intermediate.dense.weight"),                                                            \
         MAT(SP_DIM_FF, SP_DIM_D),                                                                   \
         SP_ROLE_MLP_IN_W,                                                                           \
         SP_ALWAYS,                                                                                  \
         SP_INIT_NORMAL,                                                                             \
         "intermediate.dense.weight",                                                                \
         15},                                                                                        \
        {E_("intermediate.dense.bias"),                                                              \
         VEC(SP_DIM_FF),                                                                             \
         SP_ROLE_MLP_IN_B,                                                                           \
         SP_ALWAYS,                                                                                  \
         SP_INIT_BIAS,                                                                               \
         "intermediate.dense.bias",                                                                  \
         16},                                                                                        \
        {E_("output.dense.weight"),                                                                  \
         MAT(SP_DIM_D, SP_DIM_FF),                                                                   \
         SP_ROLE_MLP_OUT_W,                                                                          \
         SP_ALWAYS,                                                                                  \
         SP_INIT_NORMAL,                                                                             \
         "output.dense.weight",                                                                      \
         17},                                                                                        \
        {E_("output.dense.bias"),                                                                    \
         VEC(SP_DIM_D),                                                                              \
         SP_ROLE_MLP_OUT_B,                                                                          \
         SP_ALWAYS,                                                                                  \
         SP_INIT_BIAS,                                                                               \
         "output.dense.bias",                                                                        \
         18},                                                                                        \
        {E_("output.LayerNorm.weight"),                                                              \
         VEC(SP_DIM_D),                                                                              \
         SP_ROLE_LN_POST_FF_W,                                                                       \
         SP_ALWAYS,                                                                                  \
         SP_INIT_GAIN,                                                                               \
         "output.LayerNorm.weight",                                                                  \
         19},                                                                                        \
        {E_("output.LayerNorm.bias"),                                                                \
         VEC(SP_DIM_D),                                                                              \
         SP_ROLE_LN_POST_FF_B,                                                                       \
         SP_ALWAYS,                                                                                  \
         SP_INIT_BIAS,                                                                               \
         "output.LayerNorm.bias",                                                                    \
         20},                                                                                        \
        {"embeddings.position_ids",                                                                  \
         VEC(SP_DIM_NONE),                                                                           \
         SP_ROLE_BUFFER,                                                                             \
         SP_NEVER,                                                                                   \
         SP_INIT_NONE,                                                                               \
         NULL,                                                                                       \
         21},                                                                                        \
        {"embeddings.token_type_ids",                                                                \
         VEC(SP_DIM_NONE),                                                                           \
         SP_ROLE_BUFFER,                                                                             \
         SP_NEVER,                                                                                   \
         SP_INIT_NONE,                                                                               \
         NULL,                                                                                       \
         22},                                                                                        \
        {"pooler.dense.weight", VEC(SP_DIM_NONE), SP_ROLE_BUFFER, SP_NEVER, SP_INIT_NONE, NULL, 23}, \
    {                                                                                                \
        "pooler.dense.bias", VEC(SP_DIM_NONE), SP_ROLE_BUFFER, SP_NEVER, SP_INIT_NONE, NULL, 24      \
    }

static const sp__tensor_desc BERT_TENSORS[] = {
    ENCODER_ROWS,
    {"cls.predictions.bias", VEC(SP_DIM_VOCAB), SP_ROLE_LM_HEAD_B, SP_ALWAYS, SP_INIT_BIAS,
     "head.bias", 25},
    {"cls.predictions.transform.dense.weight", MAT(SP_DIM_D, SP_DIM_D), SP_ROLE_HEAD_DENSE_W,
     SP_ALWAYS, SP_INIT_NORMAL, "head.dense.weight", 26},
    {"cls.predictions.transform.dense.bias", VEC(SP_DIM_D), SP_ROLE_HEAD_DENSE_B, SP_ALWAYS,
     SP_INIT_BIAS, "head.dense.bias", 27},
    {"cls.predictions.transform.LayerNorm.weight", VEC(SP_DIM_D), SP_ROLE_HEAD_LN_W, SP_ALWAYS,
     SP_INIT_GAIN, "head.layer_norm.weight", 28},
    {"cls.predictions.transform.LayerNorm.bias", VEC(SP_DIM_D), SP_ROLE_HEAD_LN_B, SP_ALWAYS,
     SP_INIT_BIAS, "head.layer_norm.bias", 29},
    {"cls.predictions.decoder.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_LM_HEAD, SP_IF_UNTIED,
     SP_INIT_NORMAL, "lm_head", 30},
    /* the decoder's bias is the head's bias (tied in HF) */
    {"cls.predictions.decoder.bias", VEC(SP_DIM_NONE), SP_ROLE_BUFFER, SP_NEVER, SP_INIT_NONE, NULL,
     31},
    {"cls.seq_relationship.weight", VEC(SP_DIM_NONE), SP_ROLE_BUFFER, SP_NEVER, SP_INIT_NONE, NULL,
     32},
    {"cls.seq_relationship.bias", VEC(SP_DIM_NONE), SP_ROLE_BUFFER, SP_NEVER, SP_INIT_NONE, NULL,
     33},
};

static const sp__tensor_desc ROBERTA_TENSORS[] = {
    ENCODER_ROWS,
    {"lm_head.bias", VEC(SP_DIM_VOCAB), SP_ROLE_LM_HEAD_B, SP_ALWAYS, SP_INIT_BIAS, "head.bias",
     25},
    {"lm_head.dense.weight", MAT(SP_DIM_D, SP_DIM_D), SP_ROLE_HEAD_DENSE_W, SP_ALWAYS,
     SP_INIT_NORMAL, "head.dense.weight", 26},
    {"lm_head.dense.bias", VEC(SP_DIM_D), SP_ROLE_HEAD_DENSE_B, SP_ALWAYS, SP_INIT_BIAS,
     "head.dense.bias", 27},
    {"lm_head.layer_norm.weight", VEC(SP_DIM_D), SP_ROLE_HEAD_LN_W, SP_ALWAYS, SP_INIT_GAIN,
     "head.layer_norm.weight", 28},
    {"lm_head.layer_norm.bias", VEC(SP_DIM_D), SP_ROLE_HEAD_LN_B, SP_ALWAYS, SP_INIT_BIAS,
     "head.layer_norm.bias", 29},
    {"lm_head.decoder.weight", MAT(SP_DIM_VOCAB, SP_DIM_D), SP_ROLE_LM_HEAD, SP_IF_UNTIED,
     SP_INIT_NORMAL, "lm_head", 30},
    {"lm_head.decoder.bias", VEC(SP_DIM_NONE), SP_ROLE_BUFFER, SP_NEVER, SP_INIT_NONE, NULL, 31},
};
#undef ENCODER_ROWS
#undef E_

/* T5ForConditionalGeneration (T5 1.0, 1.1 / LM-adapted, Flan-T5): the shared embedding, the
 * encoder's blocks (self-attention, MLP), its final norm, the decoder's blocks (self-attention,
 * cross-attention, MLP; stack 1) and final norm, the LM head when untied. The relative position
 * biases are block 0's only. No biases anywhere; every norm is an RMS norm's gain. HF's order. */
#define ENC_(name) "encoder.block.%d.layer." name
#define DEC_(name) "decoder.block.%d.layer." name
#define T5_MAT(name, r, c, role, when, fp, rank, stack)                                            \
    { name, MAT(r, c), role, when, SP_INIT_NORMAL, fp, rank }
#define T5_GAIN(name, role, fp, rank, stack)                                                       \
    { name, VEC(SP_DIM_D), role, SP_ALWAYS, SP_INIT_GAIN, fp, rank }
#define T5_MLP(pre, rank, stack)                                                                   \
    T5_MAT(pre "DenseReluDense.wi.weight", SP_DIM_FF, SP_DIM_D, SP_ROLE_MLP_IN_W, SP_IF_NOT_GATED, \
           #stack ".wi", rank, stack),                                                             \
        T5_MAT(pre "DenseReluDense.wi_0.weight", SP_DIM_FF, SP_DIM_D, SP_ROLE_MLP_IN_W,            \
               SP_IF_GATED, #stack ".wi_0", rank + 1, stack),                                      \
        T5_MAT(pre "DenseReluDense.wi_1.weight", SP_DIM_FF, SP_DIM_D, SP_ROLE_MLP_UP_W,            \
               SP_IF_GATED, #stack ".wi_1", rank + 2, stack),                                      \
        T5_MAT(pre "DenseReluDense.wo.weight", SP_DIM_D, SP_DIM_FF, SP_ROLE_MLP_OUT_W, SP_ALWAYS,  \
               #stack ".wo", rank + 3, stack)
#define T5_ATTN(pre, kind, r, q, k, v, o, stack)                                                   \
    T5_MAT(pre kind ".q.weight", SP_DIM_QD, SP_DIM_D, q, SP_ALWAYS, #stack "." kind ".q", r,       \
           stack),                                                                                 \
        T5_MAT(pre kind ".k.weight", SP_DIM_KVD, SP_DIM_D, k, SP_ALWAYS, #stack "." kind ".k",     \
               r + 1, stack),                                                                      \
        T5_MAT(pre kind ".v.weight", SP_DIM_KVD, SP_DIM_D, v, SP_ALWAYS, #stack "." kind ".v",     \
               r + 2, stack),                                                                      \
        T5_MAT(pre kind ".o.weight", SP_DIM_D, SP_DIM_QD, o, SP_ALWAYS, #stack "." kind ".o",      \
               r + 3, stack)
#define T5_SELF(pre, r, stack)                                                                     \
    T5_ATTN(pre, "SelfAttention", r, SP_ROLE_Q_W, SP_ROLE_K_W, SP_ROLE_V_W, SP_ROLE_O_W, stack)
static const sp__tensor_desc T5_TENSORS[] = {
    T5_MAT("shared.weight", SP_DIM_VOCAB, SP_DIM_D, SP_ROLE_WTE, SP_ALWAYS, "shared", 0, 0),
    /* the stacks' embed_tokens are the shared embedding (tied in HF, often not saved) */
    {"encoder.embed_tokens.weight", VEC(SP_DIM_NONE), SP_ROLE_BUFFER, SP_NEVER, SP_INIT_NONE, NULL,
     1},
    {"decoder.embed_tokens.weight", VEC(SP_DIM_NONE), SP_ROLE_BUFFER, SP_NEVER, SP_INIT_NONE, NULL,
     2},
    T5_MAT("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", SP_DIM_BUCKETS,
           SP_DIM_HEADS, SP_ROLE_REL_BIAS, SP_ALWAYS, "enc.relative_attention_bias", 3, 0),
    T5_SELF(ENC_("0."), 4, 0),
    T5_GAIN(ENC_("0.layer_norm.weight"), SP_ROLE_LN1_W, "0.ln_self", 8, 0),
    T5_MLP(ENC_("1."), 9, 0),
    T5_GAIN(ENC_("1.layer_norm.weight"), SP_ROLE_LN2_W, "0.ln_ff", 13, 0),
    T5_GAIN("encoder.final_layer_norm.weight", SP_ROLE_ENC_LNF_W, "enc.final_layer_norm", 14, 0),
    T5_MAT("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", SP_DIM_BUCKETS,
           SP_DIM_HEADS, SP_ROLE_DEC_REL_BIAS, SP_ALWAYS, "dec.relative_attention_bias", 15, 0),
    T5_SELF(DEC_("0."), 16, 1),
    T5_GAIN(DEC_("0.layer_norm.weight"), SP_ROLE_LN1_W, "1.ln_self", 20, 1),
    T5_ATTN(DEC_("1."), "EncDecAttention", 21, SP_ROLE_XQ_W, SP_ROLE_XK_W, SP_ROLE_XV_W,
            SP_ROLE_XO_W, 1),
    T5_GAIN(DEC_("1.layer_norm.weight"), SP_ROLE_LN_CROSS_W, "1.ln_cross", 25, 1),
    T5_MLP(DEC_("2."), 26, 1),
    T5_GAIN(DEC_("2.layer_norm.weight"), SP_ROLE_LN2_W, "1.ln_ff", 30, 1),
    T5_GAIN("decoder.final_layer_norm.weight", SP_ROLE_LNF_W, "dec.final_layer_norm", 31, 0),
    T5_MAT("lm_head.weight", SP_DIM_VOCAB, SP_DIM_D, SP_ROLE_LM_HEAD, SP_IF_UNTIED, "lm_head", 32,
           0),
};
#undef T5_SELF
#undef T5_ATTN
#undef T5_MLP
#undef T5_GAIN
#undef T5_MAT
#undef DEC_
#undef ENC_
#undef VEC
#undef MAT

#define TABLE(t) .tensors = t, .n_tensors = (int)(sizeof t / sizeof t[0])

/* Llama's norm, embedding and MLP. */
#define LLAMA_NORM_MLP                                                                             \
    .norm = SP_NORM_RMSNORM, .block = SP_BLOCK_PRE_NORM, .embed = SP_EMBED_PLAIN,                  \
    .mlp = SP_MLP_SWIGLU

/* The block of LlamaForCausalLM and the families built on it. */
#define LLAMA_BLOCK                                                                                \
    .name_prefix = NULL, .layer_prefix = "model.layers.%d.", .layout = SP_W_OUT_IN,                \
    .pos = SP_POS_ROTARY, .qkv = SP_QKV_SEPARATE, .gqa = 1

static const sp__family LLAMA = {
    .arch = SP_ARCH_LLAMA,
    .model_type = "llama",
    .hf_class = "LlamaForCausalLM",
    .ctx_key = "max_position_embeddings",
    LLAMA_BLOCK,
    LLAMA_NORM_MLP,
    .qk_norm = SP_QKNORM_NONE,
    TABLE(LLAMA_TENSORS),
};

static const sp__family QWEN2 = {
    .arch = SP_ARCH_QWEN2,
    .model_type = "qwen2",
    .hf_class = "Qwen2ForCausalLM",
    .ctx_key = "max_position_embeddings",
    LLAMA_BLOCK,
    LLAMA_NORM_MLP,
    .qk_norm = SP_QKNORM_NONE,
    TABLE(LLAMA_TENSORS),
};

/* Llama's tensors and block; sliding_window (config) limits what attention sees. */
static const sp__family MISTRAL = {
    .arch = SP_ARCH_MISTRAL,
    .model_type = "mistral",
    .hf_class = "MistralForCausalLM",
    .ctx_key = "max_position_embeddings",
    .window_key = "sliding_window",
    LLAMA_BLOCK,
    LLAMA_NORM_MLP,
    .qk_norm = SP_QKNORM_NONE,
    TABLE(LLAMA_TENSORS),
};

static const sp__family QWEN3 = {
    .arch = SP_ARCH_QWEN3,
    .model_type = "qwen3",
    .hf_class = "Qwen3ForCausalLM",
    .ctx_key = "max_position_embeddings",
    LLAMA_BLOCK,
    LLAMA_NORM_MLP,
    .qk_norm = SP_QKNORM_PER_HEAD,
    TABLE(QWEN3_TENSORS),
};

/* Llama's attention with scaled input embeddings, (1 + w) norms and a GeGLU MLP. */
static const sp__family GEMMA = {
    .arch = SP_ARCH_GEMMA,
    .model_type = "gemma",
    .hf_class = "GemmaForCausalLM",
    .ctx_key = "max_position_embeddings",
    LLAMA_BLOCK,
    .norm = SP_NORM_RMSNORM_PLUS1,
    .block = SP_BLOCK_PRE_NORM,
    .embed = SP_EMBED_SQRT_D,
    .mlp = SP_MLP_GEGLU,
    .qk_norm = SP_QKNORM_NONE,
    TABLE(GEMMA_TENSORS),
};

/* Gemma's block with a norm after attention and one around the MLP; sliding_window in every other
 * layer, soft-capped scores and logits (config). */
static const sp__family GEMMA2 = {
    .arch = SP_ARCH_GEMMA2,
    .model_type = "gemma2",
    .hf_class = "Gemma2ForCausalLM",
    .ctx_key = "max_position_embeddings",
    .window_key = "sliding_window",
    LLAMA_BLOCK,
    .norm = SP_NORM_RMSNORM_PLUS1,
    .block = SP_BLOCK_SANDWICH,
    .embed = SP_EMBED_SQRT_D,
    .mlp = SP_MLP_GEGLU,
    .qk_norm = SP_QKNORM_NONE,
    TABLE(GEMMA2_TENSORS),
};

/* Gemma 2's block with per-head (1 + w) norms of q and k; windowed layers (sliding_window_pattern)
 * rotate with rope_local_base_freq, the others with rope_theta and rope_scaling. */
static const sp__family GEMMA3 = {
    .arch = SP_ARCH_GEMMA3,
    .model_type = "gemma3_text",
    .hf_class = "Gemma3ForCausalLM",
    .ctx_key = "max_position_embeddings",
    .window_key = "sliding_window",
    LLAMA_BLOCK,
    .norm = SP_NORM_RMSNORM_PLUS1,
    .block = SP_BLOCK_SANDWICH,
    .embed = SP_EMBED_SQRT_D_TOKENS,
    .mlp = SP_MLP_GEGLU,
    .qk_norm = SP_QKNORM_PER_HEAD,
    TABLE(GEMMA3_TENSORS),
};

/* The bidirectional encoders: post-LN blocks, learned positions (RoBERTa's from padding_idx + 1,
 * cfg.pos_offset) plus token type 0, the embedding LayerNorm, the exact GELU, the MLM head. */
#define ENCODER_BLOCK                                                                              \
    .ctx_key = "max_position_embeddings", .layer_prefix = "encoder.layer.%d.",                     \
    .layout = SP_W_OUT_IN, .norm = SP_NORM_LAYERNORM, .block = SP_BLOCK_POST_NORM,                 \
    .embed = SP_EMBED_TYPES_NORM, .pos = SP_POS_LEARNED, .qkv = SP_QKV_SEPARATE,                   \
    .qk_norm = SP_QKNORM_NONE, .mlp = SP_MLP_GELU_ERF, .mask = SP_MASK_FULL, .head = SP_HEAD_MLM,  \
    .gqa = 0

static const sp__family BERT = {
    .arch = SP_ARCH_BERT,
    .model_type = "bert",
    .hf_class = "BertForMaskedLM",
    .name_prefix = "bert.",
    ENCODER_BLOCK,
    TABLE(BERT_TENSORS),
};

static const sp__family ROBERTA = {
    .arch = SP_ARCH_ROBERTA,
    .model_type = "roberta",
    .hf_class = "RobertaForMaskedLM",
    .name_prefix = "roberta.",
    ENCODER_BLOCK,
    TABLE(ROBERTA_TENSORS),
};
#undef ENCODER_BLOCK
/* GPT-NeoX: LayerNorm, rotary over the first rotary_dim columns of each head, q/k/v interleaved
 * per head; the block and the GELU come from the config (sp__family_for), this being the default
 * (use_parallel_residual true, hidden_act "gelu"). */
#define NEOX(blk, act)                                                                             \
    {                                                                                              \
        .arch = SP_ARCH_GPT_NEOX, .model_type = "gpt_neox", .hf_class = "GPTNeoXForCausalLM",      \
        .ctx_key = "max_position_embeddings", .name_prefix = NULL,                                 \
        .layer_prefix = "gpt_neox.layers.%d.", .layout = SP_W_OUT_IN, .norm = SP_NORM_LAYERNORM,   \
        .block = blk, .embed = SP_EMBED_PLAIN, .pos = SP_POS_ROTARY, .qkv = SP_QKV_INTERLEAVED,    \
        .qk_norm = SP_QKNORM_NONE, .mlp = act, .gqa = 0, TABLE(NEOX_TENSORS)                       \
    }
static const sp__family NEOX = NEOX(SP_BLOCK_PARALLEL, SP_MLP_GELU_ERF);
static const sp__family NEOX_SEQUENTIAL = NEOX(SP_BLOCK_PRE_NORM, SP_MLP_GELU_ERF);
static const sp__family NEOX_TANH = NEOX(SP_BLOCK_PARALLEL, SP_MLP_GELU);
static const sp__family NEOX_SEQUENTIAL_TANH = NEOX(SP_BLOCK_PRE_NORM, SP_MLP_GELU);
/* Mistral's block (window: sliding_window) with q/k/v and the MLP's gate and up projections
 * fused; the rotary embedding over partial_rotary_factor of each head (config). */
static const sp__family PHI3 = {
    .arch = SP_ARCH_PHI3,
    .model_type = "phi3",
    .hf_class = "Phi3ForCausalLM",
    .ctx_key = "max_position_embeddings",
    .window_key = "sliding_window",
    .name_prefix = NULL,
    .layer_prefix = "model.layers.%d.",
    .layout = SP_W_OUT_IN,
    .pos = SP_POS_ROTARY,
    .qkv = SP_QKV_FUSED,
    .gqa = 1,
    LLAMA_NORM_MLP,
    .qk_norm = SP_QKNORM_NONE,
    TABLE(PHI3_TENSORS),
};
/* OPT: the block and head from do_layer_norm_before, the embedding from word_embed_proj_dim
 * (sp__family_for); this one is opt-125m's (pre-norm, no projections). */
#define OPT(blk, emb, hd, table)                                                                   \
    {                                                                                              \
        .arch = SP_ARCH_OPT, .model_type = "opt", .hf_class = "OPTForCausalLM",                    \
        .ctx_key = "max_position_embeddings", .name_prefix = "model.",                             \
        .layer_prefix = "decoder.layers.%d.", .layout = SP_W_OUT_IN, .norm = SP_NORM_LAYERNORM,    \
        .block = blk, .embed = emb, .pos = SP_POS_LEARNED, .qkv = SP_QKV_SEPARATE,                 \
        .qk_norm = SP_QKNORM_NONE, .mlp = SP_MLP_RELU, .head = hd, .gqa = 0, TABLE(table)          \
    }
static const sp__family OPT = OPT(SP_BLOCK_PRE_NORM, SP_EMBED_PLAIN, SP_HEAD_LM, OPT_TENSORS);
static const sp__family OPT_PROJECT =
    OPT(SP_BLOCK_PRE_NORM, SP_EMBED_PROJECT, SP_HEAD_LM, OPT_TENSORS);
static const sp__family OPT_POST =
    OPT(SP_BLOCK_POST_NORM, SP_EMBED_PLAIN, SP_HEAD_LM_NO_NORM, OPT_POST_TENSORS);
static const sp__family OPT_POST_PROJECT =
    OPT(SP_BLOCK_POST_NORM, SP_EMBED_PROJECT, SP_HEAD_LM_NO_NORM, OPT_POST_TENSORS);
#undef OPT
/* Phi-2: the parallel block with one norm (its rows set ln1 and ln2 alike), rotary over
 * partial_rotary_factor of each head (config), the tanh GELU. */
static const sp__family PHI = {
    .arch = SP_ARCH_PHI,
    .model_type = "phi",
    .hf_class = "PhiForCausalLM",
    .ctx_key = "max_position_embeddings",
    .name_prefix = NULL,
    .layer_prefix = "model.layers.%d.",
    .layout = SP_W_OUT_IN,
    .norm = SP_NORM_LAYERNORM,
    .block = SP_BLOCK_PARALLEL,
    .embed = SP_EMBED_PLAIN,
    .pos = SP_POS_ROTARY,
    .qkv = SP_QKV_SEPARATE,
    .qk_norm = SP_QKNORM_NONE,
    .mlp = SP_MLP_GELU,
    .gqa = 1,
    TABLE(PHI_TENSORS),
};

/* T5: RMS norms (T5LayerNorm) before every sub-layer, relative position buckets, no biases;
 * the MLP is ReLU or gated-GELU (feed_forward_proj, sp__family_for). The engine runs it in
 * src/model/t5.c. */
#define T5(type, cls, act)                                                                         \
    {                                                                                              \
        .arch = SP_ARCH_T5, .model_type = type, .hf_class = cls, .ctx_key = "n_positions",         \
        .name_prefix = NULL, .layer_prefix = "encoder.block.%d.", .layout = SP_W_OUT_IN,           \
        .norm = SP_NORM_RMSNORM, .block = SP_BLOCK_PRE_NORM, .embed = SP_EMBED_PLAIN,              \
        .pos = SP_POS_RELATIVE, .qkv = SP_QKV_SEPARATE, .qk_norm = SP_QKNORM_NONE, .mlp = act,     \
        .mask = SP_MASK_SEQ2SEQ, .head = SP_HEAD_LM, .gqa = 1, TABLE(T5_TENSORS)                   \
    }
static const sp__family T5_RELU = T5("t5", "T5ForConditionalGeneration", SP_MLP_RELU);
static const sp__family T5_GATED = T5("t5", "T5ForConditionalGeneration", SP_MLP_GEGLU);
/* mT5: T5 1.1's description under MT5ForConditionalGeneration's names (cfg.mt5) */
static const sp__family MT5 = T5("mt5", "MT5ForConditionalGeneration", SP_MLP_GEGLU);
#undef T5
/* BLOOM: the embedding LayerNorm, ALiBi, q/k/v interleaved per head (query_key_value viewed as
 * [heads, 3, head_dim]), the tanh GELU (bloom_gelu_forward); the block's residual is the norm's
 * input, or its output with apply_residual_connection_post_layernorm (sp__family_for). */
#define BLOOM(blk)                                                                                 \
    {                                                                                              \
        .arch = SP_ARCH_BLOOM, .model_type = "bloom", .hf_class = "BloomForCausalLM",              \
        .ctx_key = "seq_length", .name_prefix = "transformer.", .layer_prefix = "h.%d.",           \
        .layout = SP_W_OUT_IN, .norm = SP_NORM_LAYERNORM, .block = blk, .embed = SP_EMBED_NORM,    \
        .pos = SP_POS_ALIBI, .qkv = SP_QKV_INTERLEAVED, .qk_norm = SP_QKNORM_NONE,                 \
        .mlp = SP_MLP_GELU, .gqa = 0, TABLE(BLOOM_TENSORS)                                         \
    }
static const sp__family BLOOM = BLOOM(SP_BLOCK_PRE_NORM);
static const sp__family BLOOM_NORM_RESIDUAL = BLOOM(SP_BLOCK_NORM_RESIDUAL);
#undef BLOOM
#undef NEOX
#undef LLAMA_NORM_MLP
#undef LLAMA_BLOCK
#undef TABLE

/* ---- lookup ----------------------------------------------------------------------------- */

const sp__family *sp__family_of(sp_arch a) {
    switch (a) {
    case SP_ARCH_GPT2:
        return &GPT2;
    case SP_ARCH_LLAMA:
        return &LLAMA;
    case SP_ARCH_QWEN2:
        return &QWEN2;
    case SP_ARCH_MISTRAL:
        return &MISTRAL;
    case SP_ARCH_QWEN3:
        return &QWEN3;
    case SP_ARCH_GEMMA:
        return &GEMMA;
    case SP_ARCH_GEMMA2:
        return &GEMMA2;
    case SP_ARCH_GEMMA3:
        return &GEMMA3;
    case SP_ARCH_BERT:
        return &BERT;
    case SP_ARCH_ROBERTA:
        return &ROBERTA;
    case SP_ARCH_GPT_NEOX:
        return &NEOX;
    case SP_ARCH_PHI3:
        return &PHI3;
    case SP_ARCH_OPT:
        return &OPT;
    case SP_ARCH_PHI:
        return &PHI;
    case SP_ARCH_T5:
        return &T5_RELU;
    case SP_ARCH_BLOOM:
        return &BLOOM;
    }
    return &GPT2; /* not reached for a valid enum value */
}

const sp__family *sp__family_for(const sp_model_config *c) {
    int project = sp_config_embed_dim(c) != c->d_model; /* OPT's project_in / project_out */
    switch (c->arch) {
    case SP_ARCH_GPT2:
    case SP_ARCH_LLAMA:
    case SP_ARCH_QWEN2:
    case SP_ARCH_MISTRAL:
    case SP_ARCH_QWEN3:
    case SP_ARCH_GEMMA:
    case SP_ARCH_GEMMA2:
    case SP_ARCH_GEMMA3:
    case SP_ARCH_PHI3:
    case SP_ARCH_PHI:
    case SP_ARCH_BERT:
    case SP_ARCH_ROBERTA:
        return sp__family_of(c->arch);
    case SP_ARCH_OPT:
        if (c->post_norm) return project ? &OPT_POST_PROJECT : &OPT_POST;
        return project ? &OPT_PROJECT : &OPT;
    case SP_ARCH_GPT_NEOX:
        if (c->parallel_residual) return c->gelu_exact ? &NEOX : &NEOX_TANH;
        return c->gelu_exact ? &NEOX_SEQUENTIAL : &NEOX_SEQUENTIAL_TANH;
    case SP_ARCH_T5:
        return c->mt5 ? &MT5 : c->ff_gated ? &T5_GATED : &T5_RELU;
    case SP_ARCH_BLOOM:
        return c->residual_from_norm ? &BLOOM_NORM_RESIDUAL : &BLOOM;
    }
    return sp__family_of(c->arch);
}

const char *sp_arch_model_type(sp_arch a) {
    return sp__family_of(a)->model_type;
}

int sp__arch_from_model_type(const char *model_type, sp_arch *a) {
    for (int i = 0; i < SP_N_ARCH; i++)
        if (strcmp(model_type, sp__family_of((sp_arch)i)->model_type) == 0) {
            *a = (sp_arch)i;
            return 0;
        }
    return -1;
}

int sp__model_type_lookup(const char *model_type, sp_model_config *c) {
    c->mt5 = strcmp(model_type, MT5.model_type) == 0;
    if (c->mt5) c->arch = MT5.arch;
    return c->mt5 ? 0 : sp__arch_from_model_type(model_type, &c->arch);
}

/* "\"gpt2\", \"llama\", \"qwen2\"" (quoted) or "gpt2, llama or qwen2". */
static void supported_list(char *buf, size_t cap, int quoted) {
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < SP_N_ARCH && n < cap; i++) {
        const char *sep = i == 0 ? "" : (!quoted && i == SP_N_ARCH - 1) ? " or " : ", ";
        const char *q = quoted ? "\"" : "";
        n += (size_t)snprintf(buf + n, cap - n, "%s%s%s%s", sep, q,
                              sp__family_of((sp_arch)i)->model_type, q);
    }
}

const char *sp__arch_supported_quoted(void) {
    static char buf[256];
    if (!buf[0]) supported_list(buf, sizeof buf, 1);
    return buf;
}

const char *sp__arch_supported_plain(void) {
    static char buf[256];
    if (!buf[0]) supported_list(buf, sizeof buf, 0);
    return buf;
}

/* ---- the tensor table ---------------------------------------------------------------------- */

int64_t sp__dim_size(const sp_model_config *c, sp__dim d) {
    int64_t hd = sp_config_head_dim(c);
    switch (d) {
    case SP_DIM_NONE:
        return 0;
    case SP_DIM_D:
        return c->d_model;
    case SP_DIM_QKV:
        return ((int64_t)c->n_head + 2 * (int64_t)sp_config_kv_heads(c)) * hd;
    case SP_DIM_QD:
        return (int64_t)c->n_head * hd;
    case SP_DIM_KVD:
        return (int64_t)sp_config_kv_heads(c) * hd;
    case SP_DIM_FF:
        return c->d_ff;
    case SP_DIM_FF2:
        return 2 * (int64_t)c->d_ff;
    case SP_DIM_HD:
        return hd;
    case SP_DIM_VOCAB:
        return c->vocab_size;
    case SP_DIM_CTX:
        return c->n_ctx;
    case SP_DIM_POS:
        return (int64_t)c->n_ctx + c->pos_offset;
    case SP_DIM_TYPES:
        return c->type_vocab_size;
    case SP_DIM_BUCKETS:
        return c->rel_buckets;
    case SP_DIM_HEADS:
        return c->n_head;
    case SP_DIM_EMBED:
        return sp_config_embed_dim(c);
    }
    return 0;
}

int sp__tensor_present(const sp__tensor_desc *row, const sp_model_config *c) {
    switch (row->when) {
    case SP_ALWAYS:
        return 1;
    case SP_IF_QKV_BIAS:
        return c->qkv_bias != 0;
    case SP_IF_O_BIAS:
        return c->o_bias != 0;
    case SP_IF_MLP_BIAS:
        return c->mlp_bias != 0;
    case SP_IF_UNTIED:
        return !c->tied;
    case SP_IF_GATED:
        return c->ff_gated != 0;
    case SP_IF_NOT_GATED:
        return !c->ff_gated;
    case SP_IF_PROJECT:
        return sp_config_embed_dim(c) != c->d_model;
    case SP_NEVER:
        return 0;
    }
    return 0;
}

int sp__tensor_shape(const sp__tensor_desc *row, const sp_model_config *c, int64_t shape[2]) {
    shape[0] = sp__dim_size(c, row->shape[0]);
    shape[1] = sp__dim_size(c, row->shape[1]);
    return row->shape[1] == SP_DIM_NONE ? 1 : 2;
}

int sp__tensor_layer(const sp__tensor_desc *row, const sp_model_config *c, int layer) {
    int decoder = c->arch == SP_ARCH_T5 && strncmp(row->name, "decoder.", 8) == 0;
    return layer >= 0 && decoder ? c->n_layer + layer : layer;
}

int sp__tensor_per_layer(const sp__tensor_desc *row) {
    return strstr(row->name, "%d") != NULL;
}

void sp__tensor_name(const sp__tensor_desc *row, int layer, char *buf, size_t cap) {
    const char *at = strstr(row->name, "%d");
    if (!at) {
        snprintf(buf, cap, "%s", row->name);
        return;
    }
    snprintf(buf, cap, "%.*s%d%s", (int)(at - row->name), row->name, layer, at + 2);
}

/* Row indices of f in the given order (HF: by hf_rank). */
static int ordered_rows(const sp__family *f, sp__tensor_order order, int *idx) {
    int n = f->n_tensors;
    for (int i = 0; i < n; i++) idx[i] = i;
    if (order == SP_ORDER_HF)
        for (int i = 1; i < n; i++) /* insertion sort: a few dozen rows */
            for (int j = i; j > 0 && f->tensors[idx[j]].hf_rank < f->tensors[idx[j - 1]].hf_rank;
                 j--) {
                int t = idx[j];
                idx[j] = idx[j - 1], idx[j - 1] = t;
            }
    return n;
}

int sp__tensors_walk(const sp__family *f, int n_layer, sp__tensor_order order,
                     sp__tensor_visit visit, void *ctx) {
    int idx[64];
    int n = ordered_rows(f, order, idx);
    for (int i = 0; i < n;) {
        const sp__tensor_desc *row = &f->tensors[idx[i]];
        if (!sp__tensor_per_layer(row)) {
            int rc = visit(ctx, row, -1);
            if (rc) return rc;
            i++;
            continue;
        }
        int end = i; /* the run of per-layer rows starting at i */
        while (end < n && sp__tensor_per_layer(&f->tensors[idx[end]])) end++;
        for (int l = 0; l < n_layer; l++)
            for (int k = i; k < end; k++) {
                int rc = visit(ctx, &f->tensors[idx[k]], l);
                if (rc) return rc;
            }
        i = end;
    }
    return 0;
}

/* Matches name against pattern, where "%d" matches one or more decimal digits (no sign, no
 * spaces) whose value goes to *layer; the rest must be equal. */
static int match_pattern(const char *pattern, const char *name, int *layer) {
    const char *at = strstr(pattern, "%d");
    if (!at) return strcmp(pattern, name) == 0;
    size_t head = (size_t)(at - pattern);
    if (strncmp(pattern, name, head) != 0) return 0;
    const char *p = name + head;
    long v = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 9; p++, digits++) v = v * 10 + (*p - '0');
    if (digits == 0 || (*p >= '0' && *p <= '9')) return 0;
    if (strcmp(p, at + 2) != 0) return 0;
    *layer = (int)v;
    return 1;
}

/* name without the family's optional prefix. */
static const char *bare_name(const sp__family *f, const char *name) {
    size_t n = f->name_prefix ? strlen(f->name_prefix) : 0;
    return n && strncmp(name, f->name_prefix, n) == 0 ? name + n : name;
}

const sp__tensor_desc *sp__tensor_match(const sp__family *f, const char *name, int *layer) {
    const char *bare = bare_name(f, name);
    for (int i = 0; i < f->n_tensors; i++) {
        int l = -1;
        if (match_pattern(f->tensors[i].name, bare, &l)) {
            *layer = l;
            return &f->tensors[i];
        }
    }
    return NULL;
}

typedef struct count_ctx {
    const sp_model_config *c;
    int64_t n;
} count_ctx;

static int count_row(void *ctx, const sp__tensor_desc *row, int layer) {
    count_ctx *k = ctx;
    int64_t shape[2];
    (void)layer;
    if (!sp__tensor_present(row, k->c)) return 0;
    int ndim = sp__tensor_shape(row, k->c, shape);
    k->n += ndim == 1 ? shape[0] : shape[0] * shape[1];
    return 0;
}

int64_t sp__family_param_count(const sp_model_config *c) {
    count_ctx k = {c, 0};
    sp__tensors_walk(sp__family_for(c), c->n_layer, SP_ORDER_TABLE, count_row, &k);
    return k.n;
}

/* ---- roles ------------------------------------------------------------------------------- */

/* Where a role's tensor lives: a float32 vector or table (*f), a linear layer's weight (lin),
 * or the token embedding table in its store (*v, *vs). */
typedef struct slot {
    const float **f;
    sp_linear *lin;
    const void **v;
    sp_wstore *vs;
} slot;

static slot role_slot(sp_model *m, int layer, sp__role role) {
    sp_layer *y = layer >= 0 ? &m->layers[layer] : NULL;
    switch (role) {
    case SP_ROLE_WTE:
        return (slot){.v = &m->wte, .vs = &m->wte_store};
    case SP_ROLE_WPE:
        return (slot){.f = &m->wpe};
    case SP_ROLE_LN1_W:
        return (slot){.f = &y->ln1.w};
    case SP_ROLE_LN1_B:
        return (slot){.f = &y->ln1.b};
    case SP_ROLE_LN_SHARED_W: /* sp__model_set_tensor sets ln2's too */
        return (slot){.f = &y->ln1.w};
    case SP_ROLE_LN_SHARED_B:
        return (slot){.f = &y->ln1.b};
    case SP_ROLE_QKV_W:
        return (slot){.lin = &y->qkv};
    case SP_ROLE_QKV_B:
        return (slot){.f = &y->qkv.b};
    case SP_ROLE_Q_W:
        return (slot){.lin = &y->q};
    case SP_ROLE_Q_B:
        return (slot){.f = &y->q.b};
    case SP_ROLE_K_W:
        return (slot){.lin = &y->k};
    case SP_ROLE_K_B:
        return (slot){.f = &y->k.b};
    case SP_ROLE_V_W:
        return (slot){.lin = &y->v};
    case SP_ROLE_V_B:
        return (slot){.f = &y->v.b};
    case SP_ROLE_O_W:
        return (slot){.lin = &y->o};
    case SP_ROLE_O_B:
        return (slot){.f = &y->o.b};
    case SP_ROLE_Q_NORM:
        return (slot){.f = &y->q_norm.w};
    case SP_ROLE_K_NORM:
        return (slot){.f = &y->k_norm.w};
    case SP_ROLE_LN2_W:
        return (slot){.f = &y->ln2.w};
    case SP_ROLE_LN2_B:
        return (slot){.f = &y->ln2.b};
    case SP_ROLE_LN_POST_ATTN_W:
        return (slot){.f = &y->ln_post_attn.w};
    case SP_ROLE_LN_POST_FF_W:
        return (slot){.f = &y->ln_post_ff.w};
    case SP_ROLE_MLP_IN_W:
        return (slot){.lin = &y->mlp_in};
    case SP_ROLE_MLP_IN_B:
        return (slot){.f = &y->mlp_in.b};
    case SP_ROLE_MLP_UP_W:
        return (slot){.lin = &y->mlp_up};
    case SP_ROLE_MLP_UP_B:
        return (slot){.f = &y->mlp_up.b};
    case SP_ROLE_MLP_GATE_UP_W: /* the gate half; sp__model_set_tensor sets the up half too */
        return (slot){.lin = &y->mlp_in};
    case SP_ROLE_MLP_OUT_W:
        return (slot){.lin = &y->mlp_out};
    case SP_ROLE_MLP_OUT_B:
        return (slot){.f = &y->mlp_out.b};
    case SP_ROLE_LNF_W:
        return (slot){.f = &m->lnf.w};
    case SP_ROLE_LNF_B:
        return (slot){.f = &m->lnf.b};
    case SP_ROLE_LM_HEAD:
        return (slot){.lin = &m->lm_head};
    case SP_ROLE_LN_POST_ATTN_B:
        return (slot){.f = &y->ln_post_attn.b};
    case SP_ROLE_LN_POST_FF_B:
        return (slot){.f = &y->ln_post_ff.b};
    case SP_ROLE_TYPE_EMB:
        return (slot){.f = &m->wtt};
    case SP_ROLE_EMB_LN_W:
        return (slot){.f = &m->emb_ln.w};
    case SP_ROLE_EMB_LN_B:
        return (slot){.f = &m->emb_ln.b};
    case SP_ROLE_HEAD_DENSE_W:
        return (slot){.lin = &m->head_dense};
    case SP_ROLE_HEAD_DENSE_B:
        return (slot){.f = &m->head_dense.b};
    case SP_ROLE_HEAD_LN_W:
        return (slot){.f = &m->head_ln.w};
    case SP_ROLE_HEAD_LN_B:
        return (slot){.f = &m->head_ln.b};
    case SP_ROLE_LM_HEAD_B:
        return (slot){.f = &m->lm_head.b};
    case SP_ROLE_XQ_W:
        return (slot){.lin = &y->xq};
    case SP_ROLE_XK_W:
        return (slot){.lin = &y->xk};
    case SP_ROLE_XV_W:
        return (slot){.lin = &y->xv};
    case SP_ROLE_XO_W:
        return (slot){.lin = &y->xo};
    case SP_ROLE_LN_CROSS_W:
        return (slot){.f = &y->ln_cross.w};
    case SP_ROLE_REL_BIAS:
        return (slot){.f = &m->rel_bias};
    case SP_ROLE_DEC_REL_BIAS:
        return (slot){.f = &m->dec_rel_bias};
    case SP_ROLE_ENC_LNF_W:
        return (slot){.f = &m->enc_lnf.w};
    case SP_ROLE_PROJECT_IN_W:
        return (slot){.lin = &m->project_in};
    case SP_ROLE_PROJECT_OUT_W:
        return (slot){.lin = &m->project_out};
    case SP_ROLE_BUFFER:
        break;
    }
    return (slot){0};
}

/* Bytes of one element of a weight in store. */
static size_t store_bytes(sp_wstore store) {
    switch (store) {
    case SP_WSTORE_F32:
        return sizeof(float);
    case SP_WSTORE_BF16:
        return sizeof(uint16_t);
    }
    return sizeof(float);
}

void sp__model_set_tensor(sp_model *m, int layer, sp__role role, const void *data, sp_wstore store,
                          int ndim, const int64_t shape[2]) {
    slot s = role_slot(m, layer, role);
    assert(s.lin || s.v || store == SP_WSTORE_F32); /* matrices and wte may be BF16 */
    if (s.f) *s.f = data;
    if (s.v) *s.v = data, *s.vs = store;
    if (role == SP_ROLE_LN_SHARED_W) m->layers[layer].ln2.w = data; /* one norm, read twice */
    if (role == SP_ROLE_LN_SHARED_B) m->layers[layer].ln2.b = data;
    if (!s.lin || ndim != 2) return;
    sp_wlayout layout = role == SP_ROLE_LM_HEAD ? SP_W_OUT_IN : sp__family_of(m->cfg.arch)->layout;
    int rows = (int)shape[0], cols = (int)shape[1];
    s.lin->w = data;
    s.lin->store = store;
    s.lin->layout = layout;
    switch (layout) {
    case SP_W_IN_OUT:
        s.lin->in = rows, s.lin->out = cols;
        break;
    case SP_W_OUT_IN:
        s.lin->out = rows, s.lin->in = cols;
        break;
    }
    if (role == SP_ROLE_MLP_GATE_UP_W) { /* [2 F, d]: gate rows, then up rows (nn.Linear) */
        sp_linear *up = &m->layers[layer].mlp_up;
        s.lin->out = rows / 2;
        *up = *s.lin;
        up->w = (const char *)data + (size_t)(rows / 2) * (size_t)cols * store_bytes(store);
    }
}

const float *sp__model_tensor(const sp_model *m, int layer, sp__role role) {
    slot s = role_slot((sp_model *)m, layer, role);
    if (s.f) return *s.f;
    if (s.v) return *s.vs == SP_WSTORE_F32 ? *s.v : NULL;
    if (!s.lin) return NULL;
    switch (s.lin->store) {
    case SP_WSTORE_F32:
        return s.lin->w;
    case SP_WSTORE_BF16: /* not float32: sp__model_linear */
        return NULL;
    }
    return NULL;
}

sp_linear *sp__model_linear(sp_model *m, int layer, sp__role role) {
    return role_slot(m, layer, role).lin;
}
