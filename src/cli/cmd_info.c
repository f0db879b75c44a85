/* `softprompt info PATH`: what a model directory holds and what it will cost in memory. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/info_dataset.h"
#include "model/family.h"
#include "softprompt/model.h"
#include "util/path.h"

typedef struct info_args {
    sp_weights weights;
} info_args;

static const sp__flag FLAGS[] = {
    SP_OPT_WEIGHTS(offsetof(info_args, weights)),
    {0},
};

static const sp__flag_spec SPEC = {
    .cmd = "info",
    .usage = "usage: softprompt info PATH [--weights auto|f32|bf16]\n",
    .about =
        "Describes PATH without changing it. For a model directory (config.json plus\n"
        "model.safetensors or sharded model-*-of-*.safetensors with an index): architecture,\n"
        "shapes, parameter count, dtypes, files, and memory: bytes mapped, weights used in\n"
        "place (shared by the ranks of a node through the page cache), private converted\n"
        "copies, the storage of the blocks' matrices (--weights, as train would load them) and\n"
        "activation memory per token at full context.\n"
        "For a dataset (.h5 made by `softprompt prepare`): task, counts, length histogram,\n"
        "label balance, template, tokenizer. For a checkpoint (.h5 written by `softprompt\n"
        "train`): step, data position, prompt, optimizer state, metrics, fingerprints.\n\n"
        "Every file is fully validated; a problem is reported with the file and tensor or key\n"
        "at fault, with exit status 1.\n",
    .flags = FLAGS,
    .positional = "PATH",
    .min_positional = 1,
    .max_positional = 1,
};

static void usage(FILE *out) {
    sp__flags_usage(&SPEC, out);
}

/* 124439808 -> "124,439,808" */
static const char *with_commas(char *buf, size_t cap, uint64_t v) {
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%" PRIu64, v);
    size_t k = 0;
    for (int i = 0; i < n && k + 2 < cap; i++) {
        if (i > 0 && (n - i) % 3 == 0) buf[k++] = ',';
        buf[k++] = digits[i];
    }
    buf[k] = '\0';
    return buf;
}

/* 124439808 -> "124.4M (124,439,808)" */
static const char *count_str(char *buf, size_t cap, uint64_t v) {
    char c[32];
    if (v >= 1000000000)
        snprintf(buf, cap, "%.2fB (%s)", v / 1e9, with_commas(c, sizeof c, v));
    else if (v >= 1000000)
        snprintf(buf, cap, "%.1fM (%s)", v / 1e6, with_commas(c, sizeof c, v));
    else if (v >= 1000)
        snprintf(buf, cap, "%.1fK (%s)", v / 1e3, with_commas(c, sizeof c, v));
    else
        snprintf(buf, cap, "%" PRIu64, v);
    return buf;
}

/* Binary units: "474.7 MiB (497,759,232 bytes)" */
static const char *bytes_str(char *buf, size_t cap, uint64_t v) {
    static const char *const unit[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    double x = (double)v;
    int u = 0;
    while (x >= 1024 && u < 4) x /= 1024, u++;
    char c[32];
    if (u == 0)
        snprintf(buf, cap, "%" PRIu64 " bytes", v);
    else
        snprintf(buf, cap, "%.1f %s (%s bytes)", x, unit[u], with_commas(c, sizeof c, v));
    return buf;
}

static void print_dtypes(const sp_model *m) {
    char buf[64];
    const char *sep = "";
    printf("%-14s", "dtypes");
    for (int d = 0; d < SP_DTYPE_COUNT; d++) {
        if (m->params_by_dtype[d] == 0) continue;
        printf("%s%s %s params", sep, sp_dtype_name((sp_dtype)d),
               with_commas(buf, sizeof buf, (uint64_t)m->params_by_dtype[d]));
        sep = ", ";
    }
    printf("\n");
}

static void print_files(const sp_model *m) {
    if (sp_model_n_files(m) == 1) {
        const char *path = sp_model_file_path(m, 0), *base = strrchr(path, '/');
        printf("%-14s1 (%s, not sharded)\n", "files", base ? base + 1 : path);
    } else {
        printf("%-14s%d shards listed in model.safetensors.index.json\n", "files",
               sp_model_n_files(m));
    }
}

static void print_memory(const sp_model *m) {
    char buf[96];
    int T = m->cfg.n_ctx;
    size_t per_tok = sp_model_activation_bytes_per_token(m, T);
    printf("memory\n");
    printf("  %-20s%s\n", "mapped", bytes_str(buf, sizeof buf, m->bytes_mapped));
    printf("  %-20s%s, shared between ranks on a node through the page cache\n", "used in place",
           bytes_str(buf, sizeof buf, m->bytes_in_place));
    printf("  %-20s%s, %s\n", "converted copies", bytes_str(buf, sizeof buf, m->bytes_converted),
           m->copies_shared ? "one per node, shared between its ranks" : "private to each process");
    printf("  %-20s%s in %s (--weights %s%s)\n", "matrices",
           bytes_str(buf, sizeof buf, m->bytes_matrices),
           m->weights == SP_WEIGHTS_BF16 ? "BF16" : "float32", sp_weights_name(m->weights),
           m->weights == SP_WEIGHTS_BF16 ? "" : "; bf16 would halve them");
    if (m->weights == SP_WEIGHTS_BF16) printf("  %-20s%s\n", "bf16 compute", sp_bf16_compute());
    printf("  %-20s%s per token at full context (%d tokens)\n", "activations",
           bytes_str(buf, sizeof buf, per_tok), T);
    printf("  %-20s%s per full-context sequence\n", "",
           bytes_str(buf, sizeof buf, (uint64_t)per_tok * (uint64_t)T));
}

static const char *norm_name(sp__norm_kind k) {
    switch (k) {
    case SP_NORM_LAYERNORM:
        return "LayerNorm";
    case SP_NORM_RMSNORM:
        return "RMSNorm";
    case SP_NORM_RMSNORM_PLUS1:
        return "RMSNorm (1 + w)";
    }
    return "?";
}

static const char *mlp_name(sp__mlp_kind k) {
    switch (k) {
    case SP_MLP_GELU:
        return "GELU (tanh) MLP";
    case SP_MLP_SWIGLU:
        return "SwiGLU MLP";
    case SP_MLP_GEGLU:
        return "GeGLU (tanh) MLP";
    case SP_MLP_GELU_ERF:
        return "GELU (erf) MLP";
    case SP_MLP_RELU:
        return "ReLU MLP";
    }
    return "?";
}

static const char *rope_scaling_name(sp_rope_scaling s) {
    switch (s) {
    case SP_ROPE_NONE:
        return "";
    case SP_ROPE_LINEAR:
        return " (linear scaling)";
    case SP_ROPE_LLAMA3:
        return " (llama3 scaling)";
    }
    return "";
}

static const char *qk_norm_name(sp__qknorm_kind k) {
    switch (k) {
    case SP_QKNORM_NONE:
        return "";
    case SP_QKNORM_PER_HEAD:
        return ", per-head q/k norms";
    }
    return "";
}

/* The attention window: ", sliding window 4096" (every layer) or ", sliding window 512 in 5 of
 * every 6 layers". */
static void window_desc(const sp_model_config *c, char *buf, size_t cap) {
    buf[0] = '\0';
    if (c->sliding_window <= 0) return;
    if (c->window_pattern > 1)
        snprintf(buf, cap, ", sliding window %d in %d of every %d layers", c->sliding_window,
                 c->window_pattern - 1, c->window_pattern);
    else
        snprintf(buf, cap, ", sliding window %d", c->sliding_window);
}

/* Which biases a block has, from the family's tensor table and the configuration. */
static void biases(const sp_model_config *c, int *qkv, int *o, int *mlp) {
    const sp__family *f = sp__family_for(c);
    *qkv = *o = *mlp = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const sp__tensor_desc *row = &f->tensors[i];
        if (!sp__tensor_present(row, c)) continue;
        *qkv |= row->role == SP_ROLE_QKV_B || row->role == SP_ROLE_Q_B;
        *o |= row->role == SP_ROLE_O_B;
        *mlp |= row->role == SP_ROLE_MLP_IN_B || row->role == SP_ROLE_MLP_OUT_B;
    }
}

/* The family's block as its description says: norm, positions, MLP, biases. */
static void print_block(const sp_model *m) {
    const sp_model_config *c = &m->cfg;
    const sp__family *f = sp__family_for(c);
    char pos[128] = "learned positions", part[48] = "";
    if (sp_config_rotary_dim(c) != sp_config_head_dim(c))
        snprintf(part, sizeof part, " on %d of %d columns per head", sp_config_rotary_dim(c),
                 sp_config_head_dim(c));
    switch (f->pos) {
    case SP_POS_LEARNED:
        break;
    case SP_POS_ROTARY:
        snprintf(pos, sizeof pos, "rotary theta %g%s%s", c->rope_theta,
                 rope_scaling_name(c->rope_scaling), part);
        break;
    case SP_POS_RELATIVE:
        snprintf(pos, sizeof pos, "relative position bias (%d buckets, max distance %d)",
                 c->rel_buckets, c->rel_max_distance);
        break;
    case SP_POS_ALIBI:
        snprintf(pos, sizeof pos, "ALiBi (slopes %.9g .. %.9g)", (double)m->alibi_slopes[0],
                 (double)m->alibi_slopes[c->n_head - 1]);
        break;
    }
    int qkv, o, mlp;
    char window[96];
    biases(c, &qkv, &o, &mlp);
    window_desc(c, window, sizeof window);
    if (c->rope_local_theta > 0)
        printf("%-14swindowed layers rotate with theta %g, the others with %g\n", "local rotary",
               c->rope_local_theta, c->rope_theta);
    if (f->block == SP_BLOCK_SANDWICH)
        printf("%-14snorms before and after attention and the MLP\n", "sandwich");
    if (f->block == SP_BLOCK_POST_NORM && f->mask == SP_MASK_FULL)
        printf("%-14sbidirectional attention, norms after each residual add, embedding "
               "LayerNorm, %d token types, MLM head (dense, GELU, LayerNorm, decoder + bias)\n",
               "encoder", c->type_vocab_size);
    if (f->block == SP_BLOCK_POST_NORM && f->mask == SP_MASK_CAUSAL)
        printf("%-14snorms after each residual add, none before the LM head\n", "post-norm");
    if (f->embed == SP_EMBED_PROJECT)
        printf("%-14s%d wide (the prompt's too), project_in to %d, project_out before the "
               "head\n",
               "embeddings", sp_config_embed_dim(c), c->d_model);
    if (c->pos_offset > 0)
        printf("%-14sposition 0 is row %d of the position table\n", "positions", c->pos_offset);
    if (c->arch == SP_ARCH_T5)
        printf("%-14sencoder (bidirectional) and decoder (causal, cross-attention), %d blocks "
               "each; unscaled q.k; decoder input starts with token %d; %s head%s\n",
               "seq2seq", c->n_layer, c->decoder_start, c->tied ? "tied" : "untied",
               c->tied ? " (output x d_model^-0.5)" : "");
    if (f->block == SP_BLOCK_PARALLEL)
        printf("%-14sx + attention(norm1(x)) + MLP(norm2(x))\n", "parallel");
    if (f->block == SP_BLOCK_NORM_RESIDUAL)
        printf("%-14snorm1(x) + attention(norm1(x)), then norm2(.) + MLP(norm2(.))\n", "residual");
    if (f->embed == SP_EMBED_NORM)
        printf("%-14sLayerNorm of the inputs (prompt included)\n", "embeddings");
    if (c->attn_softcap > 0 || c->logit_softcap > 0)
        printf("%-14sattention scores %g, logits %g (cap tanh(x / cap))\n", "soft-capping",
               (double)c->attn_softcap, (double)c->logit_softcap);
    if (m->embed_scale != 1.0f && m->embed_scale != 0.0f)
        printf("%-14s%s x %.9g\n", "embeddings",
               f->embed == SP_EMBED_SQRT_D_TOKENS ? "token rows (not the prompt's)"
                                                  : "inputs (prompt included)",
               (double)m->embed_scale);
    printf("%-14s%s (eps %g), %s%s%s, %s%s%s%s\n", "blocks", norm_name(f->norm), c->ln_eps, pos,
           qk_norm_name(f->qk_norm), window, mlp_name(f->mlp), qkv ? ", q/k/v biases" : "",
           o ? ", output projection bias" : "", mlp ? ", MLP biases" : "");
}

static void print_architecture(const sp_model *m) {
    const sp_model_config *c = &m->cfg;
    int kv = sp_config_kv_heads(c), hd = sp_config_head_dim(c);
    const sp__family *f = sp__family_for(c);
    printf("%-14s%s (model_type %s)\n", "architecture", f->hf_class, f->model_type);
    printf("%-14s%d\n", "layers", c->n_layer);
    printf("%-14s%d\n", "d_model", c->d_model);
    if (kv == c->n_head)
        printf("%-14s%d (head dim %d)\n", "heads", c->n_head, hd);
    else
        printf("%-14s%d query, %d key/value (grouped, head dim %d)\n", "heads", c->n_head, kv, hd);
    print_block(m);
}

/* Every weight value checked (a full scan, not a sample). Returns 1 when one is not finite,
 * with the first one named on stderr. */
static int print_weights_check(const sp_model *m) {
    sp_nonfinite r;
    char n_bad[32], n_all[32], at[128];
    sp_model_scan_nonfinite(m, &r);
    with_commas(n_all, sizeof n_all, (uint64_t)r.checked);
    if (r.count == 0) {
        printf("%-14sall %s values finite (full check)\n", "weights", n_all);
        return 0;
    }
    size_t len = 0;
    at[0] = '\0';
    for (int k = 0; k < r.ndim && len < sizeof at; k++)
        len += (size_t)snprintf(at + len, sizeof at - len, "%s%lld", k ? ", " : "",
                                (long long)r.index[k]);
    printf("%-14s%s of %s values NOT FINITE, in %d tensor%s (full check)\n", "weights",
           with_commas(n_bad, sizeof n_bad, (uint64_t)r.count), n_all, r.n_tensors,
           r.n_tensors == 1 ? "" : "s");
    fprintf(stderr,
            "softprompt info: %s: tensor '%s' element [%s] is %g (the first of %s non-finite "
            "values): the model's outputs would not be numbers, so training, eval and generation "
            "would be meaningless\n",
            r.file, r.tensor, at, r.value, n_bad);
    return 1;
}

static int info_model(const char *dir, sp_weights weights) {
    sp_model m;
    sp_error err;
    if (sp_model_load_weights(&m, dir, weights, &err) != 0) {
        fprintf(stderr, "softprompt info: %s\n", err.msg);
        return 1;
    }
    const sp_model_config *c = &m.cfg;
    char buf[64];
    printf("%-14s%s\n", "model", dir);
    print_architecture(&m);
    printf("%-14s%d\n", "d_ff", c->d_ff);
    printf("%-14s%d\n", "vocab", c->vocab_size);
    printf("%-14s%d\n", "context", c->n_ctx);
    printf("%-14s%s%s\n", "parameters", count_str(buf, sizeof buf, (uint64_t)m.n_params),
           m.lm_head.w == m.wte ? ", LM head tied to wte" : ", separate LM head");
    print_dtypes(&m);
    print_files(&m);
    int bad = print_weights_check(&m);
    print_memory(&m);
    sp_model_free(&m);
    return bad;
}

static int run(int argc, char **argv) {
    char *pos[argc > 0 ? argc : 1];
    info_args a = {SP_WEIGHTS_AUTO};
    int n_pos, rc = sp__flags_parse(&SPEC, argc, argv, &a, pos, &n_pos);
    if (rc) return rc;
    const char *path = pos[0];
    /* HDF5 files (datasets, checkpoints) are told apart by their root "format" attribute;
     * everything else is a model directory. */
    if (sp__ends_with(path, ".h5") || sp__info_is_hdf5(path)) return sp__info_h5(path);
    return info_model(path, a.weights);
}

const sp__command SP_CMD_INFO = {
    .name = "info",
    .summary = "describe a model directory, a dataset or a checkpoint",
    .run = run,
    .usage = usage,
};
