"""More model families for the PyTorch peer (bench/pytorch_peer.py imports this module): plain-torch
re-implementations of Hugging Face transformers' modules, in their structure and op order, for

  qwen3        Qwen3ForCausalLM (modeling_qwen3.py, v4.5x): Llama's layout with a per-head
               Qwen3RMSNorm of q and k (q_norm, k_norm) after the projections' view to heads and
               before the rotation, head_dim from the config (default 128), no q/k/v bias unless
               attention_bias; eager_attention_forward (scaling head_dim^-1/2, softmax in float32);
               the loss through ForCausalLMLoss (logits.float(), labels padded with -100 and
               shifted, cross_entropy mean).
  gemma3_text  Gemma3ForCausalLM (modeling_gemma3.py, v4.5x): Gemma3TextScaledWordEmbedding (the
               token embeddings times sqrt(hidden_size), inside the embedding module: PEFT's
               prompt rows, concatenated after it, are NOT scaled), Gemma3RMSNorm
               x * rsqrt(mean(x^2) + eps) * (1 + w) in float32, q_norm / k_norm of every head
               before the rotation, scores times query_pre_attn_scalar^-1/2 and soft-capped when
               attn_logit_softcapping is set, sliding-window layers (all but every
               sliding_window_pattern-th, or layer_types) with their own rotary base
               (rope_local_base_freq, no scaling) and a window mask (key j visible to query i iff
               i - j < sliding_window), global layers with rope_theta (+ rope_scaling), the
               sandwich block (post_attention_layernorm on the attention output,
               pre_/post_feedforward_layernorm around the MLP), GeGLU with the tanh GELU
               (gelu_pytorch_tanh), final_logit_softcapping, ForCausalLMLoss.
  gpt_neox     GPTNeoXForCausalLM (modeling_gpt_neox.py, v4.4x): embed_in, emb_dropout,
               GPTNeoXLayer(input_layernorm, post_attention_layernorm, attention, mlp,
               post_attention_dropout, post_mlp_dropout) with use_parallel_residual
               (h = mlp(ln2(h)) + attn(ln1(h)) + h) or the sequential form; query_key_value fused
               per head ([B, S, H, 3 hd]: q, k, v = [..., :hd], [hd:2hd], [2hd:]); the first
               rotary_ndims = int(head_size * rotary_pct) columns of q and k rotated
               (rotate_half, base rotary_emb_base), the rest passed; _attn: baddbmm into zeros
               with alpha = head_size^-1/2, torch.where(causal bias buffer, scores, finfo.min),
               + the extended attention mask, softmax, attention_dropout, matmul; dense;
               GPTNeoXMLP(dense_h_to_4h, act (gelu: erf), dense_4h_to_h); final_layer_norm;
               untied embed_out; the explicitly shifted CrossEntropyLoss.
  opt          OPTForCausalLM (modeling_opt.py, v4.4x): OPTDecoder(embed_tokens,
               OPTLearnedPositionalEmbedding (positions = cumsum(attention_mask) * mask - 1, plus
               the offset 2), layers, final_layer_norm); OPTDecoderLayer with do_layer_norm_before
               (pre-LN; post-LN otherwise), OPTAttention (q_proj(h) * head_dim^-1/2, bmm, + the 4-d
               causal mask, max with finfo.min, softmax, dropout, bmm, out_proj), dropout after
               attention and fc2, fc1 -> ReLU -> fc2 on the flattened rows; layerdrop (a draw per
               layer in training); lm_head tied to embed_tokens; CrossEntropyLoss on shifted
               logits. word_embed_proj_dim != hidden_size (project_in/out) is refused.
  bloom        BloomForCausalLM (modeling_bloom.py, v4.4x): word_embeddings,
               word_embeddings_layernorm (on inputs_embeds, the prompt included), build_alibi_tensor
               (slopes in float32, positions = (cumsum(attention_mask) - 1) * mask), BloomBlock
               (input_layernorm, BloomAttention: query_key_value viewed [B, S, H, 3, hd], scores =
               alibi.baddbmm(q, k^T, beta 1, alpha hd^-1/2) + the 4-d causal mask, softmax in
               float32, attention_dropout, bmm, dense, dropout_add with the residual;
               post_attention_layernorm; BloomMLP: dense_h_to_4h, BloomGelu (training:
               GeLUFunction with bloom_gelu_forward / bloom_gelu_back, tanh with 0.79788456),
               dense_4h_to_h, dropout_add), ln_f, lm_head tied; CrossEntropyLoss on shifted logits.

Every class keeps HF's names for modules and parameters, so the safetensors names map 1:1 (a
checkpoint saved from the base model, without the "model." / "transformer." prefix, is accepted
as transformers accepts it). Dropout probabilities that HF keeps as floats (OPT's dropout, BLOOM's
hidden_dropout, attention_dropout) are attributes listed in DROPOUT_ATTRS, zeroed by
disable_dropout() for --dropout off.
"""

import math
import re

import torch
from torch import nn

import pytorch_peer as pp

MODEL_TYPES = ("qwen3", "gemma3_text", "gpt_neox", "opt", "bloom")
HF_CLASS = {"qwen3": "Qwen3ForCausalLM", "gemma3_text": "Gemma3ForCausalLM",
            "gpt_neox": "GPTNeoXForCausalLM", "opt": "OPTForCausalLM",
            "bloom": "BloomForCausalLM"}
DROPOUT_ATTRS = ("attention_dropout", "dropout", "hidden_dropout")


def disable_dropout(model):
    """--dropout off for the float probabilities of these families' modules (nn.Dropout modules
    are zeroed by the caller)."""
    for m in model.modules():
        if type(m).__module__ != __name__:
            continue
        for a in DROPOUT_ATTRS:
            if isinstance(getattr(m, a, None), float):
                setattr(m, a, 0.0)


# --------------------------------------------------------------------------- configs

def _get_bool(path, c, key, default):
    v = c.get(key, default)
    if v is None:
        v = default
    if not isinstance(v, bool):
        raise pp.PeerError("%s: %s must be true or false (got %r)" % (path, key, v))
    return v


def _get_opt_float(path, c, key, default):
    """A positive number or null (soft-capping values)."""
    v = c.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise pp.PeerError("%s: %s must be null or a positive number (got %r)" % (path, key, v))
    return float(v)


def _first(c, *keys):
    for k in keys:
        if c.get(k) is not None:
            return k
    return keys[0]


class _Config:
    """Common attributes the peer's run() reads: model_type, vocab_size, hidden_size,
    max_positions, describe(), dropout_text()."""

    def dropout_text(self, off):
        return ", ".join("%s %g" % (k, 0.0 if off else getattr(self, k))
                         for k in self.DROPOUTS)


class Qwen3Config(_Config):
    DROPOUTS = ("attention_dropout",)

    def __init__(self, path, c):
        self.model_type = "qwen3"
        get_int, get_float = pp._config_getters(path, c)
        self.vocab_size = get_int("vocab_size", 151936)
        self.hidden_size = get_int("hidden_size", 4096)
        self.intermediate_size = get_int("intermediate_size", 22016)
        self.num_hidden_layers = get_int("num_hidden_layers", 32)
        self.num_attention_heads = get_int("num_attention_heads", 32)
        self.num_key_value_heads = get_int("num_key_value_heads", self.num_attention_heads)
        if self.num_attention_heads % self.num_key_value_heads:
            raise pp.PeerError("%s: num_attention_heads %d is not a multiple of "
                               "num_key_value_heads %d" % (path, self.num_attention_heads,
                                                           self.num_key_value_heads))
        self.head_dim = get_int("head_dim", 128)  # Qwen3Config's default, not hidden / heads
        if self.head_dim % 2:
            raise pp.PeerError("%s: head_dim %d must be even" % (path, self.head_dim))
        self.max_position_embeddings = get_int("max_position_embeddings", 32768)
        self.rms_norm_eps = get_float("rms_norm_eps", 1e-6, 0.0, 1.0)
        self.rope_theta = get_float("rope_theta", 10000.0, 1e-30, float("inf"))
        self.attention_dropout = get_float("attention_dropout", 0.0, 0.0, 1.0)
        if c.get("hidden_act", "silu") not in ("silu", "swish"):
            raise pp.PeerError("%s: hidden_act %r is not supported (silu only)" %
                               (path, c.get("hidden_act")))
        self.tie_word_embeddings = _get_bool(path, c, "tie_word_embeddings", False)
        self.qkv_bias = self.o_bias = _get_bool(path, c, "attention_bias", False)
        self.mlp_bias = False
        self.sliding_window = None  # use_sliding_window: refused (no window layers here)
        if _get_bool(path, c, "use_sliding_window", False):
            raise pp.PeerError("%s: use_sliding_window true is not supported" % path)
        pad = c.get("pad_token_id")
        self.pad_token_id = pad if isinstance(pad, int) and not isinstance(pad, bool) and \
            0 <= pad < self.vocab_size else None
        self.rope_type, self.rope_scaling = pp.LlamaConfig._rope_scaling(path,
                                                                        c.get("rope_scaling"))
        self.max_positions = self.max_position_embeddings

    def describe(self):
        return ("qwen3, %d layers, d=%d, %d heads (%d kv, head_dim %d), d_ff=%d, V=%d, "
                "rope_theta %g, %s" % (self.num_hidden_layers, self.hidden_size,
                                       self.num_attention_heads, self.num_key_value_heads,
                                       self.head_dim, self.intermediate_size, self.vocab_size,
                                       self.rope_theta,
                                       "tied" if self.tie_word_embeddings else "untied"))


class Gemma3TextConfig(_Config):
    DROPOUTS = ("attention_dropout",)
    implements_window = True  # sliding_window layers: masked here, any sequence length

    def __init__(self, path, c):
        self.model_type = "gemma3_text"
        get_int, get_float = pp._config_getters(path, c)
        self.vocab_size = get_int("vocab_size", 262208)
        self.hidden_size = get_int("hidden_size", 2304)
        self.intermediate_size = get_int("intermediate_size", 9216)
        self.num_hidden_layers = get_int("num_hidden_layers", 26)
        self.num_attention_heads = get_int("num_attention_heads", 8)
        self.num_key_value_heads = get_int("num_key_value_heads", 4)
        if self.num_attention_heads % self.num_key_value_heads:
            raise pp.PeerError("%s: num_attention_heads %d is not a multiple of "
                               "num_key_value_heads %d" % (path, self.num_attention_heads,
                                                           self.num_key_value_heads))
        self.head_dim = get_int("head_dim", 256)
        if self.head_dim % 2:
            raise pp.PeerError("%s: head_dim %d must be even" % (path, self.head_dim))
        self.max_position_embeddings = get_int("max_position_embeddings", 131072)
        self.rms_norm_eps = get_float("rms_norm_eps", 1e-6, 0.0, 1.0)
        self.rope_theta = get_float("rope_theta", 1000000.0, 1e-30, float("inf"))
        self.rope_local_base_freq = get_float("rope_local_base_freq", 10000.0, 1e-30,
                                              float("inf"))
        self.attention_dropout = get_float("attention_dropout", 0.0, 0.0, 1.0)
        self.query_pre_attn_scalar = get_float("query_pre_attn_scalar", 256, 1e-30,
                                               float("inf"))
        self.sliding_window = get_int("sliding_window", 4096)
        self.attn_logit_softcapping = _get_opt_float(path, c, "attn_logit_softcapping", None)
        self.final_logit_softcapping = _get_opt_float(path, c, "final_logit_softcapping", None)
        self.attention_bias = _get_bool(path, c, "attention_bias", False)
        self.tie_word_embeddings = _get_bool(path, c, "tie_word_embeddings", True)
        if _get_bool(path, c, "use_bidirectional_attention", False):
            raise pp.PeerError("%s: use_bidirectional_attention true is not supported" % path)
        act = c.get("hidden_activation", "gelu_pytorch_tanh")
        if act not in ("gelu_pytorch_tanh", "gelu_new"):
            raise pp.PeerError("%s: hidden_activation %r is not supported (gelu_pytorch_tanh)" %
                               (path, act))
        L = self.num_hidden_layers
        pattern = get_int("sliding_window_pattern", 6, alt="_sliding_window_pattern")
        types = c.get("layer_types")
        if types is None:  # Gemma3TextConfig: sliding unless (i + 1) % pattern == 0
            types = ["sliding_attention" if (i + 1) % pattern else "full_attention"
                     for i in range(L)]
        if not isinstance(types, list) or len(types) != L or \
                any(t not in ("sliding_attention", "full_attention") for t in types):
            raise pp.PeerError("%s: layer_types must list %d of 'sliding_attention' / "
                               "'full_attention'" % (path, L))
        self.layer_types = types
        pad = c.get("pad_token_id", 0)
        self.pad_token_id = pad if isinstance(pad, int) and not isinstance(pad, bool) and \
            0 <= pad < self.vocab_size else None
        self.rope_type, self.rope_scaling = pp.LlamaConfig._rope_scaling(path,
                                                                        c.get("rope_scaling"))
        self.max_positions = self.max_position_embeddings

    def local_rope(self):
        """Gemma3TextModel's rotary_emb_local config: rope_local_base_freq, no scaling."""
        return _RopeConfig(self.rope_local_base_freq, self.head_dim, "default", None,
                           self.max_position_embeddings)

    def describe(self):
        return ("gemma3_text, %d layers (%d sliding, window %d), d=%d, %d heads (%d kv, "
                "head_dim %d), d_ff=%d, V=%d, rope %g / local %g, softcap %s / %s, %s" % (
                    self.num_hidden_layers, self.layer_types.count("sliding_attention"),
                    self.sliding_window, self.hidden_size, self.num_attention_heads,
                    self.num_key_value_heads, self.head_dim, self.intermediate_size,
                    self.vocab_size, self.rope_theta, self.rope_local_base_freq,
                    self.attn_logit_softcapping, self.final_logit_softcapping,
                    "tied" if self.tie_word_embeddings else "untied"))


class _RopeConfig:
    """What pp.LlamaRotaryEmbedding reads from a config."""

    def __init__(self, theta, dim, rope_type, rope_scaling, max_pos):
        self.rope_theta, self.head_dim = theta, dim
        self.rope_type, self.rope_scaling = rope_type, rope_scaling
        self.max_position_embeddings = max_pos


class GPTNeoXConfig(_Config):
    DROPOUTS = ("attention_dropout", "hidden_dropout")

    def __init__(self, path, c):
        self.model_type = "gpt_neox"
        get_int, get_float = pp._config_getters(path, c)
        self.vocab_size = get_int("vocab_size", 50432)
        self.hidden_size = get_int("hidden_size", 6144)
        self.num_hidden_layers = get_int("num_hidden_layers", 44)
        self.num_attention_heads = get_int("num_attention_heads", 64)
        self.intermediate_size = get_int("intermediate_size", 24576)
        if self.hidden_size % self.num_attention_heads:
            raise pp.PeerError("%s: hidden_size %d is not divisible by num_attention_heads %d" %
                               (path, self.hidden_size, self.num_attention_heads))
        self.head_size = self.hidden_size // self.num_attention_heads
        self.rotary_pct = get_float(_first(c, "rotary_pct", "partial_rotary_factor"), 0.25,
                                    0.0, 1.0)
        self.rotary_ndims = int(self.head_size * self.rotary_pct)
        if self.rotary_ndims % 2:
            raise pp.PeerError("%s: rotary dimensions %d must be even" % (path,
                                                                          self.rotary_ndims))
        self.rotary_emb_base = get_float(_first(c, "rotary_emb_base", "rope_theta"), 10000.0,
                                         1e-30, float("inf"))
        self.max_position_embeddings = get_int("max_position_embeddings", 2048)
        self.layer_norm_eps = get_float("layer_norm_eps", 1e-5, 0.0, 1.0)
        self.attention_dropout = get_float("attention_dropout", 0.0, 0.0, 1.0)
        self.hidden_dropout = get_float("hidden_dropout", 0.0, 0.0, 1.0)
        self.use_parallel_residual = _get_bool(path, c, "use_parallel_residual", True)
        self.attention_bias = _get_bool(path, c, "attention_bias", True)
        self.tie_word_embeddings = _get_bool(path, c, "tie_word_embeddings", False)
        self.hidden_act = c.get("hidden_act", "gelu")
        if self.hidden_act not in ACT:
            raise pp.PeerError("%s: hidden_act %r is not supported (%s)" %
                               (path, self.hidden_act, ", ".join(sorted(ACT))))
        if c.get("rope_scaling") is not None:
            raise pp.PeerError("%s: rope_scaling is not supported (null only)" % path)
        self.max_positions = self.max_position_embeddings

    def rope(self):
        return _RopeConfig(self.rotary_emb_base, self.rotary_ndims, "default", None,
                           self.max_position_embeddings)

    def describe(self):
        return ("gpt_neox, %d layers, d=%d, %d heads, rotary %d of %d, d_ff=%d, V=%d, %s, %s, "
                "%s" % (self.num_hidden_layers, self.hidden_size, self.num_attention_heads,
                        self.rotary_ndims, self.head_size, self.intermediate_size,
                        self.vocab_size, self.hidden_act,
                        "parallel" if self.use_parallel_residual else "sequential",
                        "tied" if self.tie_word_embeddings else "untied"))


class OPTConfig(_Config):
    DROPOUTS = ("dropout", "attention_dropout")

    def __init__(self, path, c):
        self.model_type = "opt"
        get_int, get_float = pp._config_getters(path, c)
        self.vocab_size = get_int("vocab_size", 50272)
        self.hidden_size = get_int("hidden_size", 768)
        self.num_hidden_layers = get_int("num_hidden_layers", 12)
        self.ffn_dim = get_int("ffn_dim", 3072)
        self.num_attention_heads = get_int("num_attention_heads", 12)
        if self.hidden_size % self.num_attention_heads:
            raise pp.PeerError("%s: hidden_size %d is not divisible by num_attention_heads %d" %
                               (path, self.hidden_size, self.num_attention_heads))
        self.max_position_embeddings = get_int("max_position_embeddings", 2048)
        self.word_embed_proj_dim = get_int("word_embed_proj_dim", self.hidden_size)
        if self.word_embed_proj_dim != self.hidden_size:
            raise pp.PeerError("%s: word_embed_proj_dim %d != hidden_size %d (project_in/out) "
                               "is not supported" % (path, self.word_embed_proj_dim,
                                                     self.hidden_size))
        self.do_layer_norm_before = _get_bool(path, c, "do_layer_norm_before", True)
        self.remove_final_layer_norm = _get_bool(path, c, "_remove_final_layer_norm", False)
        self.enable_bias = _get_bool(path, c, "enable_bias", True)
        if not _get_bool(path, c, "layer_norm_elementwise_affine", True):
            raise pp.PeerError("%s: layer_norm_elementwise_affine false is not supported" % path)
        self.dropout = get_float("dropout", 0.1, 0.0, 1.0)
        self.attention_dropout = get_float("attention_dropout", 0.0, 0.0, 1.0)
        self.layerdrop = get_float("layerdrop", 0.0, 0.0, 1.0)
        act = c.get("activation_function", "relu")
        if act != "relu":
            raise pp.PeerError("%s: activation_function %r is not supported (relu)" % (path, act))
        self.tie_word_embeddings = _get_bool(path, c, "tie_word_embeddings", True)
        pad = c.get("pad_token_id", 1)
        self.pad_token_id = pad if isinstance(pad, int) and not isinstance(pad, bool) and \
            0 <= pad < self.vocab_size else None
        self.max_positions = self.max_position_embeddings

    def describe(self):
        return "opt, %d layers, d=%d, %d heads, d_ff=%d, V=%d, %s, %s" % (
            self.num_hidden_layers, self.hidden_size, self.num_attention_heads, self.ffn_dim,
            self.vocab_size, "pre-LN" if self.do_layer_norm_before else "post-LN",
            "tied" if self.tie_word_embeddings else "untied")


class BloomConfig(_Config):
    DROPOUTS = ("attention_dropout", "hidden_dropout")

    def __init__(self, path, c):
        self.model_type = "bloom"
        get_int, get_float = pp._config_getters(path, c)
        self.vocab_size = get_int("vocab_size", 250880)
        self.hidden_size = get_int(_first(c, "hidden_size", "n_embed"), 64)
        self.n_layer = get_int(_first(c, "n_layer", "num_hidden_layers"), 2)
        self.n_head = get_int(_first(c, "n_head", "num_attention_heads"), 8)
        if self.hidden_size % self.n_head:
            raise pp.PeerError("%s: hidden_size %d is not divisible by n_head %d" %
                               (path, self.hidden_size, self.n_head))
        self.layer_norm_epsilon = get_float("layer_norm_epsilon", 1e-5, 0.0, 1.0)
        self.apply_residual_connection_post_layernorm = _get_bool(
            path, c, "apply_residual_connection_post_layernorm", False)
        self.hidden_dropout = get_float("hidden_dropout", 0.0, 0.0, 1.0)
        self.attention_dropout = get_float("attention_dropout", 0.0, 0.0, 1.0)
        self.pretraining_tp = get_int("pretraining_tp", 1)
        if _get_bool(path, c, "slow_but_exact", False):
            raise pp.PeerError("%s: slow_but_exact true is not supported" % path)
        self.tie_word_embeddings = _get_bool(path, c, "tie_word_embeddings", True)
        # ALiBi has no position limit; seq_length is the training length (not enforced by HF)
        self.max_positions = 1 << 30

    def describe(self):
        return "bloom, %d layers, d=%d, %d heads, V=%d, ALiBi, %s" % (
            self.n_layer, self.hidden_size, self.n_head, self.vocab_size,
            "tied" if self.tie_word_embeddings else "untied")


CONFIGS = {"qwen3": Qwen3Config, "gemma3_text": Gemma3TextConfig, "gpt_neox": GPTNeoXConfig,
           "opt": OPTConfig, "bloom": BloomConfig}


# --------------------------------------------------------------------------- shared pieces

class GELUActivation(nn.Module):
    """transformers' "gelu": nn.functional.gelu (erf)."""

    def forward(self, input):
        return nn.functional.gelu(input)


class PytorchGELUTanh(nn.Module):
    """transformers' "gelu_pytorch_tanh": nn.functional.gelu(approximate="tanh")."""

    def forward(self, input):
        return nn.functional.gelu(input, approximate="tanh")


ACT = {"gelu": GELUActivation, "gelu_new": pp.NewGELUActivation,
       "gelu_pytorch_tanh": PytorchGELUTanh}


def eager_attention_forward(module, query, key, value, attention_mask, dropout=0.0,
                            scaling=None, softcap=None):
    """transformers' eager_attention_forward (Qwen3 / Gemma 3)."""
    if scaling is None:
        scaling = module.head_dim ** -0.5
    key_states = pp.repeat_kv(key, module.num_key_value_groups)
    value_states = pp.repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if softcap is not None:
        attn_weights = attn_weights / softcap
        attn_weights = torch.tanh(attn_weights)
        attn_weights = attn_weights * softcap
    if attention_mask is not None:
        causal_mask = attention_mask[:, :, :, : key_states.shape[-2]]
        attn_weights = attn_weights + causal_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)
    attn_output = attn_output.transpose(1, 2).contiguous()
    return attn_output, attn_weights


def causal_mask_4d(attention_mask, dtype, sliding_window=None):
    """masking_utils' create_causal_mask / create_sliding_window_causal_mask for eager attention
    without a cache: [B, 1, S, S], 0 where key j is visible to query i (j <= i, key not padding,
    and with a window i - j < sliding_window), finfo.min elsewhere."""
    B, S = attention_mask.shape
    q = torch.arange(S)[:, None]
    k = torch.arange(S)[None, :]
    ok = k <= q
    if sliding_window is not None:
        ok = ok & (k > q - sliding_window)
    ok = ok[None, None, :, :] & attention_mask.bool()[:, None, None, :]
    zero = torch.tensor(0.0, dtype=dtype)
    return torch.where(ok, zero, torch.finfo(dtype).min)


def for_causal_lm_loss(logits, labels, vocab_size, ignore_index=-100):
    """transformers' ForCausalLMLoss without num_items_in_batch (mean over labelled tokens)."""
    logits = logits.float()
    labels = nn.functional.pad(labels, (0, 1), value=ignore_index)
    shift_labels = labels[..., 1:].contiguous()
    logits = logits.view(-1, vocab_size)
    shift_labels = shift_labels.view(-1)
    return nn.functional.cross_entropy(logits, shift_labels, ignore_index=ignore_index,
                                       reduction="mean")


def shifted_loss(lm_logits, labels):
    """The 4.4x CausalLM heads' explicit loss: shift, CrossEntropyLoss (mean, ignore -100)."""
    shift_logits = lm_logits[..., :-1, :].contiguous()
    shift_labels = labels[..., 1:].contiguous()
    loss_fct = nn.CrossEntropyLoss()
    return loss_fct(shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1))


# --------------------------------------------------------------------------- Qwen3

class Qwen3Attention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        self.attention_dropout = config.attention_dropout
        self.q_proj = nn.Linear(config.hidden_size, config.num_attention_heads * self.head_dim,
                                bias=config.qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim,
                                bias=config.qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim,
                                bias=config.qkv_bias)
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, config.hidden_size,
                                bias=config.o_bias)
        self.q_norm = pp.LlamaRMSNorm(self.head_dim, eps=config.rms_norm_eps)  # Qwen3RMSNorm
        self.k_norm = pp.LlamaRMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.sliding_window = None

    def forward(self, hidden_states, position_embeddings, attention_mask):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_norm(self.q_proj(hidden_states).view(hidden_shape)).transpose(1, 2)
        key_states = self.k_norm(self.k_proj(hidden_states).view(hidden_shape)).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query_states, key_states = pp.apply_rotary_pos_emb(query_states, key_states, cos, sin)
        attn_output, _ = eager_attention_forward(
            self, query_states, key_states, value_states, attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout, scaling=self.scaling)
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output)


class Qwen3DecoderLayer(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.self_attn = Qwen3Attention(config=config, layer_idx=layer_idx)
        self.mlp = pp.LlamaMLP(config)  # Qwen3MLP: the same, no biases
        self.input_layernorm = pp.LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = pp.LlamaRMSNorm(config.hidden_size,
                                                        eps=config.rms_norm_eps)

    def forward(self, hidden_states, attention_mask, position_embeddings):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states = self.self_attn(hidden_states, position_embeddings=position_embeddings,
                                       attention_mask=attention_mask)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        return residual + hidden_states


class Qwen3Model(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size,
                                         config.pad_token_id)
        self.layers = nn.ModuleList([Qwen3DecoderLayer(config, i)
                                     for i in range(config.num_hidden_layers)])
        self.norm = pp.LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = pp.LlamaRotaryEmbedding(config=config)

    def forward(self, inputs_embeds, attention_mask):
        position_ids = torch.arange(inputs_embeds.shape[1]).unsqueeze(0)
        causal_mask = causal_mask_4d(attention_mask, inputs_embeds.dtype)
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for decoder_layer in self.layers:
            hidden_states = decoder_layer(hidden_states, attention_mask=causal_mask,
                                          position_embeddings=position_embeddings)
        return self.norm(hidden_states)


class Qwen3ForCausalLM(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = Qwen3Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, inputs_embeds, attention_mask, labels):
        hidden_states = self.model(inputs_embeds, attention_mask)
        logits = self.lm_head(hidden_states)  # logits_to_keep = 0: every position
        return for_causal_lm_loss(logits, labels, self.config.vocab_size), logits


# --------------------------------------------------------------------------- Gemma 3

class Gemma3TextScaledWordEmbedding(nn.Embedding):
    def __init__(self, num_embeddings, embedding_dim, padding_idx, embed_scale=1.0):
        super().__init__(num_embeddings, embedding_dim, padding_idx)
        self.register_buffer("embed_scale", torch.tensor(embed_scale), persistent=False)

    def forward(self, input_ids):
        return super().forward(input_ids) * self.embed_scale.to(self.weight.dtype)


class Gemma3RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def _norm(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x):
        output = self._norm(x.float())
        output = output * (1.0 + self.weight.float())
        return output.type_as(x)


class Gemma3MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = PytorchGELUTanh()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class Gemma3Attention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.is_sliding = config.layer_types[layer_idx] == "sliding_attention"
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = config.query_pre_attn_scalar ** -0.5
        self.attention_dropout = config.attention_dropout
        H, Hkv, hd, d = (config.num_attention_heads, config.num_key_value_heads, self.head_dim,
                         config.hidden_size)
        self.q_proj = nn.Linear(d, H * hd, bias=config.attention_bias)
        self.k_proj = nn.Linear(d, Hkv * hd, bias=config.attention_bias)
        self.v_proj = nn.Linear(d, Hkv * hd, bias=config.attention_bias)
        self.o_proj = nn.Linear(H * hd, d, bias=config.attention_bias)
        self.attn_logit_softcapping = config.attn_logit_softcapping
        self.sliding_window = config.sliding_window if self.is_sliding else None
        self.q_norm = Gemma3RMSNorm(dim=hd, eps=config.rms_norm_eps)
        self.k_norm = Gemma3RMSNorm(dim=hd, eps=config.rms_norm_eps)

    def forward(self, hidden_states, position_embeddings, attention_mask):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        query_states = self.q_norm(query_states)
        key_states = self.k_norm(key_states)
        cos, sin = position_embeddings
        query_states, key_states = pp.apply_rotary_pos_emb(query_states, key_states, cos, sin)
        attn_output, _ = eager_attention_forward(
            self, query_states, key_states, value_states, attention_mask,
            dropout=self.attention_dropout if self.training else 0.0, scaling=self.scaling,
            softcap=self.attn_logit_softcapping)
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output)


class Gemma3DecoderLayer(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.attention_type = config.layer_types[layer_idx]
        self.self_attn = Gemma3Attention(config=config, layer_idx=layer_idx)
        self.mlp = Gemma3MLP(config)
        d, eps = config.hidden_size, config.rms_norm_eps
        self.input_layernorm = Gemma3RMSNorm(d, eps=eps)
        self.post_attention_layernorm = Gemma3RMSNorm(d, eps=eps)
        self.pre_feedforward_layernorm = Gemma3RMSNorm(d, eps=eps)
        self.post_feedforward_layernorm = Gemma3RMSNorm(d, eps=eps)

    def forward(self, hidden_states, position_embeddings_global, position_embeddings_local,
                attention_mask):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        # apply global RoPE to non-sliding layer only
        if self.self_attn.is_sliding:
            position_embeddings = position_embeddings_local
        else:
            position_embeddings = position_embeddings_global
        hidden_states = self.self_attn(hidden_states, position_embeddings=position_embeddings,
                                       attention_mask=attention_mask)
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.pre_feedforward_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = self.post_feedforward_layernorm(hidden_states)
        return residual + hidden_states


class Gemma3TextModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed_tokens = Gemma3TextScaledWordEmbedding(
            config.vocab_size, config.hidden_size, config.pad_token_id,
            embed_scale=config.hidden_size ** 0.5)
        self.layers = nn.ModuleList([Gemma3DecoderLayer(config, i)
                                     for i in range(config.num_hidden_layers)])
        self.norm = Gemma3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = pp.LlamaRotaryEmbedding(config=config)
        self.rotary_emb_local = pp.LlamaRotaryEmbedding(config=config.local_rope())

    def forward(self, inputs_embeds, attention_mask):
        position_ids = torch.arange(inputs_embeds.shape[1]).unsqueeze(0)
        causal_mask_mapping = {
            "full_attention": causal_mask_4d(attention_mask, inputs_embeds.dtype),
            "sliding_attention": causal_mask_4d(attention_mask, inputs_embeds.dtype,
                                                self.config.sliding_window),
        }
        hidden_states = inputs_embeds
        position_embeddings_global = self.rotary_emb(hidden_states, position_ids)
        position_embeddings_local = self.rotary_emb_local(hidden_states, position_ids)
        for decoder_layer in self.layers:
            hidden_states = decoder_layer(
                hidden_states, position_embeddings_global=position_embeddings_global,
                position_embeddings_local=position_embeddings_local,
                attention_mask=causal_mask_mapping[decoder_layer.attention_type])
        return self.norm(hidden_states)


class Gemma3ForCausalLM(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = Gemma3TextModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, inputs_embeds, attention_mask, labels):
        hidden_states = self.model(inputs_embeds, attention_mask)
        logits = self.lm_head(hidden_states)
        if self.config.final_logit_softcapping is not None:
            logits = logits / self.config.final_logit_softcapping
            logits = torch.tanh(logits)
            logits = logits * self.config.final_logit_softcapping
        return for_causal_lm_loss(logits, labels, self.config.vocab_size), logits


# --------------------------------------------------------------------------- GPT-NeoX

class GPTNeoXAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.hidden_size = config.hidden_size
        self.head_size = config.head_size
        self.rotary_ndims = config.rotary_ndims
        max_positions = config.max_position_embeddings
        self.register_buffer("bias", torch.tril(torch.ones((max_positions, max_positions),
                                                           dtype=torch.bool)).view(
            1, 1, max_positions, max_positions), persistent=False)
        self.norm_factor = self.head_size ** -0.5
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size,
                                         bias=config.attention_bias)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size,
                               bias=config.attention_bias)
        self.attention_dropout = nn.Dropout(config.attention_dropout)

    def forward(self, hidden_states, attention_mask, position_embeddings):
        qkv = self.query_key_value(hidden_states)
        new_qkv_shape = qkv.size()[:-1] + (self.num_attention_heads, 3 * self.head_size)
        qkv = qkv.view(*new_qkv_shape)
        query = qkv[..., : self.head_size].permute(0, 2, 1, 3)
        key = qkv[..., self.head_size: 2 * self.head_size].permute(0, 2, 1, 3)
        value = qkv[..., 2 * self.head_size:].permute(0, 2, 1, 3)
        query_rot = query[..., : self.rotary_ndims]
        query_pass = query[..., self.rotary_ndims:]
        key_rot = key[..., : self.rotary_ndims]
        key_pass = key[..., self.rotary_ndims:]
        cos, sin = position_embeddings
        query, key = pp.apply_rotary_pos_emb(query_rot, key_rot, cos, sin)
        query = torch.cat((query, query_pass), dim=-1)
        key = torch.cat((key, key_pass), dim=-1)
        attn_output, _ = self._attn(query, key, value, attention_mask)
        attn_output = self._merge_heads(attn_output, self.num_attention_heads, self.head_size)
        return self.dense(attn_output)

    @classmethod
    def _merge_heads(cls, tensor, num_attention_heads, attn_head_size):
        tensor = tensor.permute(0, 2, 1, 3).contiguous()
        return tensor.view(tensor.size(0), tensor.size(1), num_attention_heads * attn_head_size)

    def _attn(self, query, key, value, attention_mask=None):
        batch_size, num_attention_heads, query_length, attn_head_size = query.size()
        key_length = key.size(-2)
        causal_mask = self.bias[:, :, key_length - query_length: key_length, :key_length]
        query = query.reshape(batch_size * num_attention_heads, query_length, attn_head_size)
        key = key.reshape(batch_size * num_attention_heads, key_length, attn_head_size)
        attn_scores = torch.zeros(batch_size * num_attention_heads, query_length, key_length,
                                  dtype=query.dtype, device=key.device)
        attn_scores = torch.baddbmm(attn_scores, query, key.transpose(1, 2), beta=1.0,
                                    alpha=self.norm_factor)
        attn_scores = attn_scores.view(batch_size, num_attention_heads, query_length, key_length)
        mask_value = torch.finfo(attn_scores.dtype).min
        mask_value = torch.tensor(mask_value, dtype=attn_scores.dtype).to(attn_scores.device)
        attn_scores = torch.where(causal_mask, attn_scores, mask_value)
        if attention_mask is not None:
            attn_scores = attn_scores + attention_mask
        attn_weights = nn.functional.softmax(attn_scores, dim=-1)
        attn_weights = attn_weights.to(value.dtype)
        attn_weights = self.attention_dropout(attn_weights)
        attn_output = torch.matmul(attn_weights, value)
        return attn_output, attn_weights


class GPTNeoXMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.intermediate_size)
        self.dense_4h_to_h = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = ACT[config.hidden_act]()

    def forward(self, hidden_states):
        return self.dense_4h_to_h(self.act(self.dense_h_to_4h(hidden_states)))


class GPTNeoXLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.use_parallel_residual = config.use_parallel_residual
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size,
                                                     eps=config.layer_norm_eps)
        self.post_attention_dropout = nn.Dropout(config.hidden_dropout)
        self.post_mlp_dropout = nn.Dropout(config.hidden_dropout)
        self.attention = GPTNeoXAttention(config)
        self.mlp = GPTNeoXMLP(config)

    def forward(self, hidden_states, attention_mask, position_embeddings):
        attn_output = self.attention(self.input_layernorm(hidden_states),
                                     attention_mask=attention_mask,
                                     position_embeddings=position_embeddings)
        attn_output = self.post_attention_dropout(attn_output)
        if self.use_parallel_residual:
            # x = x + attn(ln1(x)) + mlp(ln2(x))
            mlp_output = self.mlp(self.post_attention_layernorm(hidden_states))
            mlp_output = self.post_mlp_dropout(mlp_output)
            return mlp_output + attn_output + hidden_states
        # x = x + attn(ln1(x)); x = x + mlp(ln2(x))
        attn_output = attn_output + hidden_states
        mlp_output = self.mlp(self.post_attention_layernorm(attn_output))
        mlp_output = self.post_mlp_dropout(mlp_output)
        return mlp_output + attn_output


class GPTNeoXModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_in = nn.Embedding(config.vocab_size, config.hidden_size)
        self.emb_dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList([GPTNeoXLayer(config)
                                     for _ in range(config.num_hidden_layers)])
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.rotary_emb = pp.LlamaRotaryEmbedding(config=config.rope())  # GPTNeoXRotaryEmbedding

    def forward(self, inputs_embeds, attention_mask):
        batch_size, seq_length = inputs_embeds.shape[:2]
        position_ids = torch.arange(seq_length, dtype=torch.long).unsqueeze(0)
        # the extended attention mask: (1 - mask) * finfo.min, [B, 1, 1, S]
        attention_mask = attention_mask.view(batch_size, -1)[:, None, None, :]
        attention_mask = attention_mask.to(dtype=inputs_embeds.dtype)
        attention_mask = (1.0 - attention_mask) * torch.finfo(inputs_embeds.dtype).min
        hidden_states = self.emb_dropout(inputs_embeds)
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask=attention_mask,
                                  position_embeddings=position_embeddings)
        return self.final_layer_norm(hidden_states)


class GPTNeoXForCausalLM(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.gpt_neox = GPTNeoXModel(config)
        self.embed_out = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.embed_out.weight = self.gpt_neox.embed_in.weight

    def get_input_embeddings(self):
        return self.gpt_neox.embed_in

    def forward(self, inputs_embeds, attention_mask, labels):
        hidden_states = self.gpt_neox(inputs_embeds, attention_mask)
        lm_logits = self.embed_out(hidden_states)
        return shifted_loss(lm_logits, labels), lm_logits


# --------------------------------------------------------------------------- OPT

class OPTLearnedPositionalEmbedding(nn.Embedding):
    def __init__(self, num_embeddings, embedding_dim):
        # OPT is set up so that if padding_idx is specified then offset the embedding ids by 2
        self.offset = 2
        super().__init__(num_embeddings + self.offset, embedding_dim)

    def forward(self, attention_mask, past_key_values_length=0):
        attention_mask = attention_mask.long()
        positions = (torch.cumsum(attention_mask, dim=1).type_as(attention_mask) *
                     attention_mask).long() - 1
        positions = positions[:, past_key_values_length:]
        return super().forward(positions + self.offset)


class OPTAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.dropout = config.attention_dropout
        self.head_dim = self.embed_dim // self.num_heads
        self.scaling = self.head_dim ** -0.5
        bias = config.enable_bias
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=bias)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=bias)
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=bias)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=bias)

    def _shape(self, tensor, seq_len, bsz):
        return tensor.view(bsz, seq_len, self.num_heads, self.head_dim).transpose(1, 2)\
            .contiguous()

    def forward(self, hidden_states, attention_mask):
        bsz, tgt_len, _ = hidden_states.size()
        query_states = self.q_proj(hidden_states) * self.scaling
        key_states = self._shape(self.k_proj(hidden_states), -1, bsz)
        value_states = self._shape(self.v_proj(hidden_states), -1, bsz)
        proj_shape = (bsz * self.num_heads, -1, self.head_dim)
        query_states = self._shape(query_states, tgt_len, bsz).view(*proj_shape)
        key_states = key_states.view(*proj_shape)
        value_states = value_states.view(*proj_shape)
        src_len = key_states.size(1)
        attn_weights = torch.bmm(query_states, key_states.transpose(1, 2))
        attn_weights = attn_weights.view(bsz, self.num_heads, tgt_len, src_len) + attention_mask
        attn_weights = torch.max(attn_weights,
                                 torch.tensor(torch.finfo(attn_weights.dtype).min))
        attn_weights = attn_weights.view(bsz * self.num_heads, tgt_len, src_len)
        attn_weights = nn.functional.softmax(attn_weights, dim=-1)
        attn_probs = nn.functional.dropout(attn_weights, p=self.dropout, training=self.training)
        attn_output = torch.bmm(attn_probs, value_states)
        attn_output = attn_output.view(bsz, self.num_heads, tgt_len, self.head_dim)
        attn_output = attn_output.transpose(1, 2)
        attn_output = attn_output.reshape(bsz, tgt_len, self.embed_dim)
        return self.out_proj(attn_output)


class OPTDecoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.self_attn = OPTAttention(config)
        self.do_layer_norm_before = config.do_layer_norm_before
        self.dropout = config.dropout
        self.activation_fn = nn.ReLU()  # ACT2FN["relu"]
        self.self_attn_layer_norm = nn.LayerNorm(self.embed_dim)
        self.fc1 = nn.Linear(self.embed_dim, config.ffn_dim, bias=config.enable_bias)
        self.fc2 = nn.Linear(config.ffn_dim, self.embed_dim, bias=config.enable_bias)
        self.final_layer_norm = nn.LayerNorm(self.embed_dim)

    def forward(self, hidden_states, attention_mask):
        residual = hidden_states
        # 125m, 1.7B, ..., 175B applies layer norm BEFORE attention
        if self.do_layer_norm_before:
            hidden_states = self.self_attn_layer_norm(hidden_states)
        hidden_states = self.self_attn(hidden_states, attention_mask=attention_mask)
        hidden_states = nn.functional.dropout(hidden_states, p=self.dropout,
                                              training=self.training)
        hidden_states = residual + hidden_states
        # 350m applies layer norm AFTER attention
        if not self.do_layer_norm_before:
            hidden_states = self.self_attn_layer_norm(hidden_states)
        # Fully Connected
        hidden_states_shape = hidden_states.shape
        hidden_states = hidden_states.reshape(-1, hidden_states.size(-1))
        residual = hidden_states
        if self.do_layer_norm_before:
            hidden_states = self.final_layer_norm(hidden_states)
        hidden_states = self.fc1(hidden_states)
        hidden_states = self.activation_fn(hidden_states)
        hidden_states = self.fc2(hidden_states)
        hidden_states = nn.functional.dropout(hidden_states, p=self.dropout,
                                              training=self.training)
        hidden_states = (residual + hidden_states).view(hidden_states_shape)
        if not self.do_layer_norm_before:
            hidden_states = self.final_layer_norm(hidden_states)
        return hidden_states


class OPTDecoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layerdrop = config.layerdrop
        self.embed_tokens = nn.Embedding(config.vocab_size, config.word_embed_proj_dim,
                                         config.pad_token_id)
        self.embed_positions = OPTLearnedPositionalEmbedding(config.max_position_embeddings,
                                                             config.hidden_size)
        if config.do_layer_norm_before and not config.remove_final_layer_norm:
            self.final_layer_norm = nn.LayerNorm(config.hidden_size)
        else:
            self.final_layer_norm = None
        self.layers = nn.ModuleList([OPTDecoderLayer(config)
                                     for _ in range(config.num_hidden_layers)])

    def forward(self, inputs_embeds, attention_mask):
        # _prepare_4d_causal_attention_mask: causal + padding, finfo.min where masked
        causal_attention_mask = causal_mask_4d(attention_mask, inputs_embeds.dtype)
        pos_embeds = self.embed_positions(attention_mask, 0)
        hidden_states = inputs_embeds + pos_embeds
        for decoder_layer in self.layers:
            if self.training:
                dropout_probability = torch.rand([])
                if dropout_probability < self.layerdrop:
                    continue
            hidden_states = decoder_layer(hidden_states, attention_mask=causal_attention_mask)
        if self.final_layer_norm is not None:
            hidden_states = self.final_layer_norm(hidden_states)
        return hidden_states


class OPTModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.decoder = OPTDecoder(config)

    def forward(self, inputs_embeds, attention_mask):
        return self.decoder(inputs_embeds, attention_mask)


class OPTForCausalLM(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = OPTModel(config)
        self.lm_head = nn.Linear(config.word_embed_proj_dim, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.decoder.embed_tokens.weight

    def get_input_embeddings(self):
        return self.model.decoder.embed_tokens

    def forward(self, inputs_embeds, attention_mask, labels):
        outputs = self.model(inputs_embeds, attention_mask)
        logits = self.lm_head(outputs).contiguous()
        return shifted_loss(logits, labels), logits


# --------------------------------------------------------------------------- BLOOM

def build_alibi_tensor(attention_mask, num_heads, dtype):
    batch_size, seq_length = attention_mask.shape
    closest_power_of_2 = 2 ** math.floor(math.log2(num_heads))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(closest_power_of_2) - 3))), dtype=torch.float32)
    powers = torch.arange(1, 1 + closest_power_of_2, dtype=torch.int32)
    slopes = torch.pow(base, powers)
    if closest_power_of_2 != num_heads:
        extra_base = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest_power_of_2) - 3))),
                                  dtype=torch.float32)
        num_remaining_heads = min(closest_power_of_2, num_heads - closest_power_of_2)
        extra_powers = torch.arange(1, 1 + 2 * num_remaining_heads, 2, dtype=torch.int32)
        slopes = torch.cat([slopes, torch.pow(extra_base, extra_powers)], dim=0)
    arange_tensor = ((attention_mask.cumsum(dim=-1) - 1) * attention_mask)[:, None, :]
    alibi = slopes[..., None] * arange_tensor
    return alibi.reshape(batch_size * num_heads, 1, seq_length).to(dtype)


def dropout_add(x, residual, prob, training):
    out = nn.functional.dropout(x, p=prob, training=training)
    return residual + out


def bloom_gelu_forward(x):
    return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


def bloom_gelu_back(g, x):
    x = x[0]  # x is a tuple of 1 element, needs to unpack it first
    tanh_out = torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x))
    # sqrt(2/pi) * 3 * 0.044715 -> 0.1070322243
    ff = 0.5 * x * ((1 - tanh_out * tanh_out) * (0.79788456 + 0.1070322243 * x * x)) + \
        0.5 * (1 + tanh_out)
    return ff * g


class GeLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return bloom_gelu_forward(input)

    @staticmethod
    def backward(ctx, grad_output):
        input = ctx.saved_tensors
        return bloom_gelu_back(grad_output, input)


class BloomGelu(nn.Module):
    def forward(self, x):
        if self.training:
            return GeLUFunction.apply(x)
        return bloom_gelu_forward(x)


class BloomAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.num_heads = config.n_head
        self.head_dim = self.hidden_size // self.num_heads
        self.hidden_dropout = config.hidden_dropout
        self.inv_norm_factor = 1.0 / math.sqrt(self.head_dim)
        self.beta = 1.0
        self.query_key_value = nn.Linear(self.hidden_size, 3 * self.hidden_size, bias=True)
        self.dense = nn.Linear(self.hidden_size, self.hidden_size)
        self.attention_dropout = nn.Dropout(config.attention_dropout)

    def _reshape(self, fused_qkv):
        batch_size, seq_length, _ = fused_qkv.shape
        fused_qkv = fused_qkv.view(batch_size, seq_length, self.num_heads, 3, self.head_dim)
        query_layer = fused_qkv[..., 0, :].transpose(1, 2)
        key_layer = fused_qkv[..., 1, :].transpose(1, 2)
        value_layer = fused_qkv[..., 2, :].transpose(1, 2)
        return query_layer, key_layer, value_layer

    def _merge_heads(self, x):
        batch_size_and_num_heads, seq_length, _ = x.shape
        batch_size = batch_size_and_num_heads // self.num_heads
        x = x.view(batch_size, self.num_heads, seq_length, self.head_dim)
        x = x.permute(0, 2, 1, 3)
        return x.reshape(batch_size, seq_length, self.num_heads * self.head_dim)

    def forward(self, hidden_states, residual, alibi, attention_mask):
        batch_size, q_length, _ = hidden_states.shape
        fused_qkv = self.query_key_value(hidden_states)
        query_layer, key_layer, value_layer = self._reshape(fused_qkv)
        query_layer = query_layer.reshape(batch_size * self.num_heads, -1, self.head_dim)
        key_layer = key_layer.reshape(batch_size * self.num_heads, -1, self.head_dim)\
            .transpose(-1, -2)
        value_layer = value_layer.reshape(batch_size * self.num_heads, -1, self.head_dim)
        attention_scores = alibi.baddbmm(batch1=query_layer, batch2=key_layer, beta=self.beta,
                                         alpha=self.inv_norm_factor)
        attn_weights = attention_scores.view(batch_size, self.num_heads, q_length, -1)
        causal_mask = attention_mask[:, :, :, : key_layer.shape[-1]]
        attn_weights = attn_weights + causal_mask
        attention_probs = nn.functional.softmax(attn_weights, dim=-1,
                                                dtype=torch.float32).to(query_layer.dtype)
        attention_probs = self.attention_dropout(attention_probs)
        attention_probs_reshaped = attention_probs.view(batch_size * self.num_heads, q_length, -1)
        context_layer = torch.bmm(attention_probs_reshaped, value_layer)
        context_layer = self._merge_heads(context_layer)
        output_tensor = self.dense(context_layer)  # pretraining_tp: exact when not slow_but_exact
        return dropout_add(output_tensor, residual, self.hidden_dropout, self.training)


class BloomMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        hidden_size = config.hidden_size
        self.dense_h_to_4h = nn.Linear(hidden_size, 4 * hidden_size)
        self.gelu_impl = BloomGelu()
        self.dense_4h_to_h = nn.Linear(4 * hidden_size, hidden_size)
        self.hidden_dropout = config.hidden_dropout

    def forward(self, hidden_states, residual):
        hidden_states = self.gelu_impl(self.dense_h_to_4h(hidden_states))
        intermediate_output = self.dense_4h_to_h(hidden_states)
        return dropout_add(intermediate_output, residual, self.hidden_dropout, self.training)


class BloomBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        hidden_size = config.hidden_size
        self.input_layernorm = nn.LayerNorm(hidden_size, eps=config.layer_norm_epsilon)
        self.self_attention = BloomAttention(config)
        self.post_attention_layernorm = nn.LayerNorm(hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = BloomMLP(config)
        self.apply_residual_connection_post_layernorm = \
            config.apply_residual_connection_post_layernorm

    def forward(self, hidden_states, alibi, attention_mask):
        layernorm_output = self.input_layernorm(hidden_states)
        if self.apply_residual_connection_post_layernorm:
            residual = layernorm_output
        else:
            residual = hidden_states
        attention_output = self.self_attention(layernorm_output, residual, alibi=alibi,
                                               attention_mask=attention_mask)
        layernorm_output = self.post_attention_layernorm(attention_output)
        if self.apply_residual_connection_post_layernorm:
            residual = layernorm_output
        else:
            residual = attention_output
        return self.mlp(layernorm_output, residual)


class BloomModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.num_heads = config.n_head
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.word_embeddings_layernorm = nn.LayerNorm(config.hidden_size,
                                                      eps=config.layer_norm_epsilon)
        self.h = nn.ModuleList([BloomBlock(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)

    def forward(self, inputs_embeds, attention_mask):
        hidden_states = self.word_embeddings_layernorm(inputs_embeds)
        alibi = build_alibi_tensor(attention_mask, self.num_heads, dtype=hidden_states.dtype)
        causal_mask = causal_mask_4d(attention_mask, inputs_embeds.dtype)
        for block in self.h:
            hidden_states = block(hidden_states, alibi=alibi, attention_mask=causal_mask)
        return self.ln_f(hidden_states)


class BloomForCausalLM(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = BloomModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.word_embeddings.weight

    def get_input_embeddings(self):
        return self.transformer.word_embeddings

    def forward(self, inputs_embeds, attention_mask, labels):
        hidden_states = self.transformer(inputs_embeds, attention_mask)
        lm_logits = self.lm_head(hidden_states)
        return shifted_loss(lm_logits, labels), lm_logits


# --------------------------------------------------------------------------- loading

MODELS = {"qwen3": Qwen3ForCausalLM, "gemma3_text": Gemma3ForCausalLM,
          "gpt_neox": GPTNeoXForCausalLM, "opt": OPTForCausalLM, "bloom": BloomForCausalLM}
# the base model's prefix in the causal-LM class (checkpoints may omit it, as transformers
# accepts), the head's parameter, buffers of older checkpoints ignored as transformers does
BASE_PREFIX = {"qwen3": "model.", "gemma3_text": "model.", "gpt_neox": "gpt_neox.",
               "opt": "model.", "bloom": "transformer."}
HEAD = {"qwen3": "lm_head.weight", "gemma3_text": "lm_head.weight",
        "gpt_neox": "embed_out.weight", "opt": "lm_head.weight", "bloom": "lm_head.weight"}
IGNORED = re.compile(r".*\.(rotary_emb\.inv_freq|attention\.bias|attention\.masked_bias)")


def load(model_dir, path, c):
    """Builds the model of model_type c["model_type"] (one of MODEL_TYPES) and reads its
    weights. Returns (model, dtype names)."""
    mt = c["model_type"]
    config = CONFIGS[mt](path, c)
    with torch.no_grad():
        model = MODELS[mt](config)
    params = dict(model.named_parameters())  # a tied head appears once, as the embedding
    prefix, head = BASE_PREFIX[mt], HEAD[mt]

    def resolve(fpath, raw_name):
        for name in (raw_name, prefix + raw_name):
            if name in params:
                return name
        if raw_name == head or IGNORED.fullmatch(raw_name):
            return None  # a tied head's copy, or an old buffer
        raise pp.PeerError("%s: unexpected tensor %s for a %s model" % (fpath, raw_name, mt))

    return model, pp._load_weights(model_dir, pp._safetensors_files(model_dir), params, resolve)
