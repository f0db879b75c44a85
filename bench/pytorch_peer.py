#!/usr/bin/env python3
"""PyTorch peer for the softprompt benchmark: one prompt-tuning training step of a frozen causal
LM, computed the way Hugging Face transformers (GPT2LMHeadModel, modeling_gpt2.py;
LlamaForCausalLM / Qwen2ForCausalLM, modeling_llama.py / modeling_qwen2.py, v4.4x) + PEFT prompt
tuning (PeftModelForCausalLM, PromptEmbedding) compute it, timed on CPU. The architecture is
chosen from config.json's model_type: "gpt2", "llama" or "qwen2" (this file), "qwen3",
"gemma3_text", "gpt_neox", "opt" or "bloom" (bench/peer_families.py, imported for them).

Only torch and numpy are needed: the model modules, the safetensors reader and the PEFT
wrapper are re-implemented here in plain torch, following HF's module structure and op order:

  GPT2Model      wte, wpe (nn.Embedding), drop (Dropout embd_pdrop), h = ModuleList of
                 GPT2Block(ln_1, attn, ln_2, mlp), ln_f
  GPT2Attention  Conv1D c_attn / c_proj (weight [in, out], y = addmm(b, x, W)), split heads,
                 matmul(q, k^T) / sqrt(head_dim), causal mask via torch.where(mask, w, finfo.min),
                 + extended attention mask ((1 - mask) * finfo.min, all zeros here), softmax,
                 attn_dropout, matmul with v, merge heads, c_proj, resid_dropout
  GPT2MLP        c_fc, NewGELU (gelu_new), c_proj, dropout (resid_pdrop)
  lm_head        Linear(d, V, bias=False), weight tied to wte

  LlamaModel     embed_tokens (nn.Embedding), layers = ModuleList of LlamaDecoderLayer(
                 input_layernorm, self_attn, post_attention_layernorm, mlp), norm, rotary_emb
                 (cos/sin computed once per forward and passed to every layer, as from v4.45)
  LlamaRMSNorm   in float32: weight * (x * rsqrt(x.pow(2).mean(-1) + eps))
  LlamaRotaryEmbedding  inv_freq = 1 / rope_theta^(arange(0, hd, 2) / hd), rope_scaling null,
                 linear or llama3 (_compute_llama3_parameters); freqs = inv_freq x position_ids,
                 emb = cat(freqs, freqs); q, k = x cos + rotate_half(x) sin
  LlamaAttention q/k/v/o_proj nn.Linear (bias: Llama attention_bias for all four; Qwen2 q/k/v
                 bias, o_proj none), repeat_kv for grouped-query attention, eager attention:
                 matmul(q, k^T) / sqrt(head_dim) + 4-d causal mask (finfo.min above the diagonal
                 and at padding), softmax in float32, dropout(attention_dropout), matmul with v,
                 o_proj
  LlamaMLP       down_proj(act_fn(gate_proj(x)) * up_proj(x)), SiLU, bias = mlp_bias (Qwen2 none)
  lm_head        Linear(d, V, bias=False), tied to embed_tokens when tie_word_embeddings;
                 logits.float() before HF's shifted loss; position_ids = arange(P + T)

Every model parameter is frozen (requires_grad=False). As PEFT prompt tuning does it, a trainable
PromptEmbedding (nn.Embedding(P, d)) is looked up with arange(P) expanded over the batch and
concatenated in front of wte(input_ids); the attention mask is all ones (no padding) with P ones
prepended; labels get P entries of -100 prepended; logits = lm_head(hidden) at every position over
the full vocabulary; HF's loss: shift (logits[..., :-1, :].contiguous(), labels[..., 1:]),
CrossEntropyLoss(ignore_index=-100), mean. One timed step = forward + loss + backward (only the
prompt gets a gradient) + torch.optim.AdamW step on the prompt + zero_grad.

The peer is deliberately not optimised: it stands for what users run. The only departure is the
loader, which reads each tensor straight into its parameter (no second copy of the weights).
"""

import argparse
import json
import math
import os
import re
import resource
import statistics
import struct
import sys
import time

import numpy as np
import torch
from torch import nn

MAGIC = b"SPBENCH1"
DEFAULT_GEN_TARGETS = 16


class PeerError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# --------------------------------------------------------------------------- config

SUPPORTED_MODEL_TYPES = ("gpt2", "llama", "qwen2", "qwen3", "gemma3_text", "gpt_neox", "opt",
                         "bloom")


def read_config_json(path):
    """config.json as a dict."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            c = json.load(f)
    except FileNotFoundError:
        raise PeerError("%s: file not found" % path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PeerError("%s: cannot read JSON config (%s)" % (path, e))
    if not isinstance(c, dict):
        raise PeerError("%s: config is not a JSON object" % path)
    return c


def _config_getters(path, c):
    def get_int(key, default=None, alt=None):
        v = c.get(key, c.get(alt) if alt else None)
        if v is None:
            v = default
        if v is None or isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise PeerError("%s: %s must be a positive integer (got %r)" % (path, key, v))
        return v

    def get_float(key, default, lo, hi):
        v = c.get(key, default)
        if v is None:
            v = default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise PeerError("%s: %s must be a number in [%g, %g] (got %r)" %
                            (path, key, lo, hi, v))
        return float(v)

    return get_int, get_float


class GPT2Config:
    """The subset of transformers' GPT2Config the forward pass uses, read from config.json."""

    def __init__(self, path, c):
        mt = c.get("model_type", "gpt2")
        if mt != "gpt2":
            raise PeerError("%s: model_type is %r, expected 'gpt2'" % (path, mt))
        self.model_type = "gpt2"
        get_int, get_float = _config_getters(path, c)

        self.vocab_size = get_int("vocab_size", 50257)
        self.n_positions = get_int("n_positions", 1024, alt="n_ctx")
        self.n_embd = get_int("n_embd", 768)
        self.n_layer = get_int("n_layer", 12)
        self.n_head = get_int("n_head", 12)
        if self.n_embd % self.n_head:
            raise PeerError("%s: n_embd %d is not divisible by n_head %d" %
                            (path, self.n_embd, self.n_head))
        self.n_inner = c.get("n_inner")
        if self.n_inner is None:
            self.n_inner = 4 * self.n_embd
        elif isinstance(self.n_inner, bool) or not isinstance(self.n_inner, int) \
                or self.n_inner <= 0:
            raise PeerError("%s: n_inner must be null or a positive integer" % path)
        self.layer_norm_epsilon = get_float("layer_norm_epsilon", 1e-5, 0.0, 1.0)
        self.attn_pdrop = get_float("attn_pdrop", 0.1, 0.0, 1.0)
        self.resid_pdrop = get_float("resid_pdrop", 0.1, 0.0, 1.0)
        self.embd_pdrop = get_float("embd_pdrop", 0.1, 0.0, 1.0)
        self.activation_function = c.get("activation_function", "gelu_new")
        if self.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
            raise PeerError("%s: activation_function %r is not supported (gelu_new only)" %
                            (path, self.activation_function))
        self.scale_attn_weights = bool(c.get("scale_attn_weights", True))
        self.scale_attn_by_inverse_layer_idx = bool(c.get("scale_attn_by_inverse_layer_idx",
                                                          False))
        if c.get("reorder_and_upcast_attn", False):
            raise PeerError("%s: reorder_and_upcast_attn is not supported" % path)
        if c.get("add_cross_attention", False):
            raise PeerError("%s: add_cross_attention is not supported" % path)
        if c.get("tie_word_embeddings", True) is False:
            raise PeerError("%s: tie_word_embeddings false is not supported" % path)
        self.hidden_size = self.n_embd
        self.max_positions = self.n_positions

    def describe(self):
        return "%d layers, d=%d, %d heads, d_ff=%d, V=%d, n_pos=%d" % (
            self.n_layer, self.n_embd, self.n_head, self.n_inner, self.vocab_size,
            self.n_positions)

    def dropout_text(self, off):
        z = 0.0 if off else None
        return "attn %g, resid %g, embd %g" % (
            self.attn_pdrop if z is None else z, self.resid_pdrop if z is None else z,
            self.embd_pdrop if z is None else z)


class LlamaConfig:
    """The subset of transformers' LlamaConfig / Qwen2Config the forward pass uses, with their
    defaults, read from config.json (model_type "llama" or "qwen2")."""

    def __init__(self, path, c):
        mt = c.get("model_type")
        if mt not in ("llama", "qwen2"):
            raise PeerError("%s: model_type is %r, expected 'llama' or 'qwen2'" % (path, mt))
        self.model_type = mt
        qwen = mt == "qwen2"
        get_int, get_float = _config_getters(path, c)

        self.vocab_size = get_int("vocab_size", 151936 if qwen else 32000)
        self.hidden_size = get_int("hidden_size", 4096)
        self.intermediate_size = get_int("intermediate_size", 22016 if qwen else 11008)
        self.num_hidden_layers = get_int("num_hidden_layers", 32)
        self.num_attention_heads = get_int("num_attention_heads", 32)
        # num_key_value_heads null means multi-head attention, as in both configs
        self.num_key_value_heads = get_int("num_key_value_heads", self.num_attention_heads)
        self.max_position_embeddings = get_int("max_position_embeddings",
                                               32768 if qwen else 2048)
        if self.num_attention_heads % self.num_key_value_heads:
            raise PeerError("%s: num_attention_heads %d is not a multiple of "
                            "num_key_value_heads %d" % (path, self.num_attention_heads,
                                                        self.num_key_value_heads))
        if c.get("head_dim") is not None:
            self.head_dim = get_int("head_dim")
        else:
            if self.hidden_size % self.num_attention_heads:
                raise PeerError("%s: hidden_size %d is not divisible by num_attention_heads %d "
                                "(and no head_dim)" % (path, self.hidden_size,
                                                       self.num_attention_heads))
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.head_dim % 2:
            raise PeerError("%s: head_dim %d must be even for rotary embeddings" %
                            (path, self.head_dim))
        self.rms_norm_eps = get_float("rms_norm_eps", 1e-6, 0.0, 1.0)
        self.rope_theta = get_float("rope_theta", 10000.0, 1e-30, float("inf"))
        self.attention_dropout = get_float("attention_dropout", 0.0, 0.0, 1.0)
        self.hidden_act = c.get("hidden_act", "silu")
        if self.hidden_act not in ("silu", "swish"):
            raise PeerError("%s: hidden_act %r is not supported (silu only)" %
                            (path, self.hidden_act))
        tie = c.get("tie_word_embeddings", False)
        if not isinstance(tie, bool):
            raise PeerError("%s: tie_word_embeddings must be true or false" % path)
        self.tie_word_embeddings = tie
        pad = c.get("pad_token_id")
        self.pad_token_id = pad if isinstance(pad, int) and not isinstance(pad, bool) and \
            0 <= pad < self.vocab_size else None
        if qwen:
            # Qwen2Attention: q/k/v with bias, o_proj without; Qwen2MLP without biases
            self.qkv_bias, self.o_bias, self.mlp_bias = True, False, False
            # sliding_window only counts with use_sliding_window (Qwen2Config sets it to None
            # otherwise); the window must then cover the whole sequence (checked in run())
            self.sliding_window = None
            if c.get("use_sliding_window", False):
                self.sliding_window = get_int("sliding_window", 4096)
        else:
            for key in ("attention_bias", "mlp_bias"):
                if not isinstance(c.get(key, False), bool):
                    raise PeerError("%s: %s must be true or false" % (path, key))
            self.qkv_bias = self.o_bias = c.get("attention_bias", False)
            self.mlp_bias = c.get("mlp_bias", False)
            self.sliding_window = None
            # pretraining_tp > 1 only splits HF's matmuls into slices (same result): computed
            # unsplit here
        self.rope_type, self.rope_scaling = self._rope_scaling(path, c.get("rope_scaling"))
        self.max_positions = self.max_position_embeddings

    @staticmethod
    def _rope_scaling(path, rs):
        """(rope_type, parameters) as transformers' rope init functions read them."""
        if rs is None:
            return "default", None
        if not isinstance(rs, dict):
            raise PeerError("%s: rope_scaling must be null or an object" % path)
        kind = rs.get("rope_type", rs.get("type"))  # "type": the legacy key, still accepted
        if kind == "default":
            return "default", None
        if kind not in ("linear", "llama3"):
            raise PeerError("%s: rope_scaling type %r is not supported (null, 'default', "
                            "'linear', 'llama3')" % (path, kind))

        def num(key, positive=True):
            v = rs.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or \
                    not math.isfinite(v) or (positive and v <= 0):
                raise PeerError("%s: rope_scaling.%s must be a positive number (got %r)" %
                                (path, key, v))
            return v

        if kind == "linear":
            return kind, {"factor": num("factor")}
        p = {k: num(k) for k in ("factor", "low_freq_factor", "high_freq_factor",
                                 "original_max_position_embeddings")}
        if p["high_freq_factor"] <= p["low_freq_factor"]:
            raise PeerError("%s: rope_scaling.high_freq_factor must exceed low_freq_factor" %
                            path)
        return kind, p

    def describe(self):
        rope = self.rope_type if self.rope_scaling is None else "%s %s" % (
            self.rope_type, ",".join("%s=%g" % kv for kv in self.rope_scaling.items()))
        return ("%s, %d layers, d=%d, %d heads (%d kv, head_dim %d), d_ff=%d, V=%d, "
                "max_pos=%d, rope_theta %g (%s), %s" % (
                    self.model_type, self.num_hidden_layers, self.hidden_size,
                    self.num_attention_heads, self.num_key_value_heads, self.head_dim,
                    self.intermediate_size, self.vocab_size, self.max_position_embeddings,
                    self.rope_theta, rope, "tied" if self.tie_word_embeddings else "untied"))

    def dropout_text(self, off):
        return "attention %g" % (0.0 if off else self.attention_dropout)


# --------------------------------------------------------------------------- model (HF structure)

class Conv1D(nn.Module):
    """transformers.pytorch_utils.Conv1D: a linear layer with the weight stored [in, out]."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        x = x.view(size_out)
        return x


class NewGELUActivation(nn.Module):
    """gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    def forward(self, input):
        return 0.5 * input * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) *
                                               (input + 0.044715 * torch.pow(input, 3.0))))


class GPT2Attention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        max_positions = config.n_positions
        self.register_buffer(
            "bias",
            torch.tril(torch.ones((max_positions, max_positions), dtype=torch.bool)).view(
                1, 1, max_positions, max_positions),
            persistent=False)
        self.embed_dim = config.n_embd
        self.num_heads = config.n_head
        self.head_dim = self.embed_dim // self.num_heads
        self.split_size = self.embed_dim
        self.scale_attn_weights = config.scale_attn_weights
        self.scale_attn_by_inverse_layer_idx = config.scale_attn_by_inverse_layer_idx
        self.layer_idx = layer_idx
        self.c_attn = Conv1D(3 * self.embed_dim, self.embed_dim)
        self.c_proj = Conv1D(self.embed_dim, self.embed_dim)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def _attn(self, query, key, value, attention_mask=None):
        attn_weights = torch.matmul(query, key.transpose(-1, -2))
        if self.scale_attn_weights:
            attn_weights = attn_weights / torch.full(
                [], value.size(-1) ** 0.5, dtype=attn_weights.dtype, device=attn_weights.device)
        if self.scale_attn_by_inverse_layer_idx:
            attn_weights = attn_weights / float(self.layer_idx + 1)
        query_length, key_length = query.size(-2), key.size(-2)
        causal_mask = self.bias[:, :, key_length - query_length:key_length, :key_length]
        mask_value = torch.finfo(attn_weights.dtype).min
        mask_value = torch.full([], mask_value, dtype=attn_weights.dtype,
                                device=attn_weights.device)
        attn_weights = torch.where(causal_mask, attn_weights.to(attn_weights.dtype), mask_value)
        if attention_mask is not None:
            attn_weights = attn_weights + attention_mask
        attn_weights = nn.functional.softmax(attn_weights, dim=-1)
        attn_weights = attn_weights.type(value.dtype)
        attn_weights = self.attn_dropout(attn_weights)
        attn_output = torch.matmul(attn_weights, value)
        return attn_output, attn_weights

    def _split_heads(self, tensor, num_heads, attn_head_size):
        new_shape = tensor.size()[:-1] + (num_heads, attn_head_size)
        tensor = tensor.view(new_shape)
        return tensor.permute(0, 2, 1, 3)  # (batch, head, seq_length, head_features)

    def _merge_heads(self, tensor, num_heads, attn_head_size):
        tensor = tensor.permute(0, 2, 1, 3).contiguous()
        new_shape = tensor.size()[:-2] + (num_heads * attn_head_size,)
        return tensor.view(new_shape)

    def forward(self, hidden_states, attention_mask=None):
        query, key, value = self.c_attn(hidden_states).split(self.split_size, dim=2)
        query = self._split_heads(query, self.num_heads, self.head_dim)
        key = self._split_heads(key, self.num_heads, self.head_dim)
        value = self._split_heads(value, self.num_heads, self.head_dim)
        attn_output, _ = self._attn(query, key, value, attention_mask)
        attn_output = self._merge_heads(attn_output, self.num_heads, self.head_dim)
        attn_output = self.c_proj(attn_output)
        attn_output = self.resid_dropout(attn_output)
        return attn_output


class GPT2MLP(nn.Module):
    def __init__(self, intermediate_size, config):
        super().__init__()
        embed_dim = config.n_embd
        self.c_fc = Conv1D(intermediate_size, embed_dim)
        self.c_proj = Conv1D(embed_dim, intermediate_size)
        self.act = NewGELUActivation()
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states):
        hidden_states = self.c_fc(hidden_states)
        hidden_states = self.act(hidden_states)
        hidden_states = self.c_proj(hidden_states)
        hidden_states = self.dropout(hidden_states)
        return hidden_states


class GPT2Block(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        hidden_size = config.n_embd
        self.ln_1 = nn.LayerNorm(hidden_size, eps=config.layer_norm_epsilon)
        self.attn = GPT2Attention(config, layer_idx=layer_idx)
        self.ln_2 = nn.LayerNorm(hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config.n_inner, config)

    def forward(self, hidden_states, attention_mask=None):
        residual = hidden_states
        hidden_states = self.ln_1(hidden_states)
        attn_output = self.attn(hidden_states, attention_mask=attention_mask)
        hidden_states = attn_output + residual
        residual = hidden_states
        hidden_states = self.ln_2(hidden_states)
        feed_forward_hidden_states = self.mlp(hidden_states)
        hidden_states = residual + feed_forward_hidden_states
        return hidden_states


class GPT2Model(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_dim = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, self.embed_dim)
        self.wpe = nn.Embedding(config.n_positions, self.embed_dim)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([GPT2Block(config, layer_idx=i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(self.embed_dim, eps=config.layer_norm_epsilon)

    def forward(self, inputs_embeds, attention_mask=None):
        input_shape = inputs_embeds.size()[:-1]
        batch_size = inputs_embeds.shape[0]
        position_ids = torch.arange(0, input_shape[-1], dtype=torch.long,
                                    device=inputs_embeds.device).unsqueeze(0)
        if attention_mask is not None:
            attention_mask = attention_mask.view(batch_size, -1)
            attention_mask = attention_mask[:, None, None, :]
            attention_mask = attention_mask.to(dtype=inputs_embeds.dtype)
            attention_mask = (1.0 - attention_mask) * torch.finfo(inputs_embeds.dtype).min
        position_embeds = self.wpe(position_ids)
        hidden_states = inputs_embeds + position_embeds
        hidden_states = self.drop(hidden_states)
        output_shape = (-1,) + input_shape[1:] + (hidden_states.size(-1),)
        for block in self.h:
            hidden_states = block(hidden_states, attention_mask=attention_mask)
        hidden_states = self.ln_f(hidden_states)
        hidden_states = hidden_states.view(output_shape)
        return hidden_states


class GPT2LMHeadModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = GPT2Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tie_weights()

    def get_input_embeddings(self):
        return self.transformer.wte

    def forward(self, inputs_embeds, attention_mask=None, labels=None):
        hidden_states = self.transformer(inputs_embeds, attention_mask=attention_mask)
        lm_logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            shift_logits = lm_logits[..., :-1, :].contiguous()
            shift_labels = labels[..., 1:].contiguous()
            loss_fct = nn.CrossEntropyLoss()
            loss = loss_fct(shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1))
        return loss, lm_logits


class LlamaRMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


def _compute_default_rope_parameters(config):
    base = config.rope_theta
    dim = config.head_dim
    attention_factor = 1.0  # unused in this type of RoPE
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    return inv_freq, attention_factor


def _compute_linear_scaling_rope_parameters(config):
    factor = config.rope_scaling["factor"]
    inv_freq, attention_factor = _compute_default_rope_parameters(config)
    inv_freq /= factor
    return inv_freq, attention_factor


def _compute_llama3_parameters(config):
    inv_freq, attention_factor = _compute_default_rope_parameters(config)
    factor = config.rope_scaling["factor"]  # `8` in the original implementation
    low_freq_factor = config.rope_scaling["low_freq_factor"]  # `1` in the original
    high_freq_factor = config.rope_scaling["high_freq_factor"]  # `4` in the original
    old_context_len = config.rope_scaling["original_max_position_embeddings"]  # `8192`
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    # wavelen < high_freq_wavelen: do nothing; wavelen > low_freq_wavelen: divide by factor
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    # otherwise: interpolate between the two, using a smooth factor
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / \
        (high_freq_factor - low_freq_factor)
    smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + \
        smooth_factor * inv_freq_llama
    is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    inv_freq_llama = torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)
    return inv_freq_llama, attention_factor


ROPE_INIT_FUNCTIONS = {
    "default": _compute_default_rope_parameters,
    "linear": _compute_linear_scaling_rope_parameters,
    "llama3": _compute_llama3_parameters,
}


class LlamaRotaryEmbedding(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.rope_type = config.rope_type
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings
        self.config = config
        self.rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        inv_freq, self.attention_scaling = self.rope_init_fn(self.config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.original_inv_freq = self.inv_freq

    @torch.no_grad()
    def forward(self, x, position_ids):
        # core RoPE block
        inv_freq_expanded = self.inv_freq[None, :, None].float().expand(
            position_ids.shape[0], -1, 1)
        position_ids_expanded = position_ids[:, None, :].float()
        freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos()
        sin = emb.sin()
        # advanced RoPE types (e.g. yarn) apply a post-processing scaling factor
        cos = cos * self.attention_scaling
        sin = sin * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rotate_half(x):
    """Rotates half the hidden dims of the input."""
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


class LlamaMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.intermediate_size = config.intermediate_size
        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=config.mlp_bias)
        self.act_fn = nn.SiLU()  # ACT2FN["silu"]

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def repeat_kv(hidden_states, n_rep):
    """torch.repeat_interleave(x, dim=1, repeats=n_rep): (batch, num_key_value_heads, seqlen,
    head_dim) -> (batch, num_attention_heads, seqlen, head_dim)."""
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep,
                                                           slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


class LlamaAttention(nn.Module):
    """Eager attention of LlamaAttention / Qwen2Attention."""

    def __init__(self, config, layer_idx):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.attention_dropout = config.attention_dropout
        self.hidden_size = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.q_proj = nn.Linear(self.hidden_size, self.num_heads * self.head_dim,
                                bias=config.qkv_bias)
        self.k_proj = nn.Linear(self.hidden_size, self.num_key_value_heads * self.head_dim,
                                bias=config.qkv_bias)
        self.v_proj = nn.Linear(self.hidden_size, self.num_key_value_heads * self.head_dim,
                                bias=config.qkv_bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, self.hidden_size,
                                bias=config.o_bias)

    def forward(self, hidden_states, attention_mask, position_embeddings):
        bsz, q_len, _ = hidden_states.size()
        query_states = self.q_proj(hidden_states)
        key_states = self.k_proj(hidden_states)
        value_states = self.v_proj(hidden_states)
        query_states = query_states.view(bsz, q_len, -1, self.head_dim).transpose(1, 2)
        key_states = key_states.view(bsz, q_len, -1, self.head_dim).transpose(1, 2)
        value_states = value_states.view(bsz, q_len, -1, self.head_dim).transpose(1, 2)
        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        key_states = repeat_kv(key_states, self.num_key_value_groups)
        value_states = repeat_kv(value_states, self.num_key_value_groups)
        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / \
            math.sqrt(self.head_dim)
        if attention_mask is not None:  # no matter the length, we just slice it
            causal_mask = attention_mask[:, :, :, : key_states.shape[-2]]
            attn_weights = attn_weights + causal_mask
        # upcast attention to fp32
        attn_weights = nn.functional.softmax(attn_weights, dim=-1,
                                             dtype=torch.float32).to(query_states.dtype)
        attn_weights = nn.functional.dropout(attn_weights, p=self.attention_dropout,
                                             training=self.training)
        attn_output = torch.matmul(attn_weights, value_states)
        attn_output = attn_output.transpose(1, 2).contiguous()
        attn_output = attn_output.reshape(bsz, q_len, -1)
        attn_output = self.o_proj(attn_output)
        return attn_output


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = LlamaAttention(config=config, layer_idx=layer_idx)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states, attention_mask, position_embeddings):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states = self.self_attn(hidden_states, attention_mask=attention_mask,
                                       position_embeddings=position_embeddings)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = residual + hidden_states
        return hidden_states


def _prepare_4d_causal_attention_mask_with_cache_position(attention_mask, sequence_length,
                                                          target_length, dtype, cache_position,
                                                          batch_size):
    """HF's 4-d float mask [B, 1, S, S]: 0 where attended, finfo.min above the diagonal and at
    padded keys."""
    min_dtype = torch.finfo(dtype).min
    causal_mask = torch.full((sequence_length, target_length), fill_value=min_dtype, dtype=dtype)
    if sequence_length != 1:
        causal_mask = torch.triu(causal_mask, diagonal=1)
    causal_mask *= torch.arange(target_length) > cache_position.reshape(-1, 1)
    causal_mask = causal_mask[None, None, :, :].expand(batch_size, 1, -1, -1)
    if attention_mask is not None:
        causal_mask = causal_mask.clone()  # copy to contiguous memory for in-place edit
        mask_length = attention_mask.shape[-1]
        padding_mask = causal_mask[:, :, :, :mask_length] + attention_mask[:, None, None, :]
        padding_mask = padding_mask == 0
        causal_mask[:, :, :, :mask_length] = causal_mask[:, :, :, :mask_length].masked_fill(
            padding_mask, min_dtype)
    return causal_mask


class LlamaModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([LlamaDecoderLayer(config, layer_idx)
                                     for layer_idx in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)

    def forward(self, inputs_embeds, attention_mask=None):
        past_seen_tokens = 0
        cache_position = torch.arange(past_seen_tokens,
                                      past_seen_tokens + inputs_embeds.shape[1])
        position_ids = cache_position.unsqueeze(0)
        # _update_causal_mask, eager attention, no cache
        sequence_length = inputs_embeds.shape[1]
        target_length = attention_mask.shape[-1] if attention_mask is not None \
            else past_seen_tokens + sequence_length + 1
        causal_mask = _prepare_4d_causal_attention_mask_with_cache_position(
            attention_mask, sequence_length=sequence_length, target_length=target_length,
            dtype=inputs_embeds.dtype, cache_position=cache_position,
            batch_size=inputs_embeds.shape[0])
        hidden_states = inputs_embeds
        # create position embeddings to be shared across the decoder layers
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for decoder_layer in self.layers:
            hidden_states = decoder_layer(hidden_states, attention_mask=causal_mask,
                                          position_embeddings=position_embeddings)
        hidden_states = self.norm(hidden_states)
        return hidden_states


class LlamaForCausalLM(nn.Module):
    """LlamaForCausalLM / Qwen2ForCausalLM (same structure)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight  # tie_weights()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, inputs_embeds, attention_mask=None, labels=None):
        hidden_states = self.model(inputs_embeds, attention_mask=attention_mask)
        logits = self.lm_head(hidden_states)  # num_logits_to_keep = 0: every position
        loss = None
        if labels is not None:
            # Upcast to float if we need to compute the loss to avoid potential precision issues
            logits = logits.float()
            shift_logits = logits[..., :-1, :].contiguous()
            shift_labels = labels[..., 1:].contiguous()
            loss_fct = nn.CrossEntropyLoss()
            shift_logits = shift_logits.view(-1, self.config.vocab_size)
            shift_labels = shift_labels.view(-1)
            loss = loss_fct(shift_logits, shift_labels)
        return loss, logits


# --------------------------------------------------------------------------- PEFT prompt tuning

class PromptEmbedding(nn.Module):
    """peft.tuners.prompt_tuning.PromptEmbedding (num_transformer_submodules = 1)."""

    def __init__(self, num_virtual_tokens, token_dim):
        super().__init__()
        self.embedding = nn.Embedding(num_virtual_tokens, token_dim)

    def forward(self, indices):
        return self.embedding(indices)


class PeftPromptTuningCausalLM(nn.Module):
    """PeftModelForCausalLM.forward for PROMPT_TUNING with input_ids, attention_mask, labels."""

    def __init__(self, base_model, num_virtual_tokens):
        super().__init__()
        self.base_model = base_model
        for p in self.base_model.parameters():
            p.requires_grad = False
        self.num_virtual_tokens = num_virtual_tokens
        self.prompt_encoder = PromptEmbedding(num_virtual_tokens, base_model.config.hidden_size)
        self.register_buffer("prompt_tokens", torch.arange(num_virtual_tokens).long(),
                             persistent=False)
        self.word_embeddings = base_model.get_input_embeddings()

    def get_prompt(self, batch_size):
        prompt_tokens = self.prompt_tokens.unsqueeze(0).expand(batch_size, -1)
        return self.prompt_encoder(prompt_tokens)

    def forward(self, input_ids, attention_mask, labels):
        batch_size = input_ids.shape[0]
        P = self.num_virtual_tokens
        prefix_attention_mask = torch.ones(batch_size, P).to(attention_mask.device)
        attention_mask = torch.cat((prefix_attention_mask, attention_mask), dim=1)
        inputs_embeds = self.word_embeddings(input_ids)
        prefix_labels = torch.full((batch_size, P), -100).to(labels.device)
        labels = torch.cat((prefix_labels, labels), dim=1)
        prompts = self.get_prompt(batch_size=batch_size)
        prompts = prompts.to(inputs_embeds.dtype)
        inputs_embeds = torch.cat((prompts, inputs_embeds), dim=1)
        return self.base_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                               labels=labels)


# --------------------------------------------------------------------------- generation

# Generation as transformers' generate() runs it with use_cache=True: the model's forward over
# the new positions only, keys and values of every layer kept in a cache that grows by
# torch.cat along the sequence (DynamicCache.update), positions continuing after the cached
# ones, the logits of the last position only (logits_to_keep=1), greedy argmax; with PEFT
# prompt tuning the prompt's embeddings are concatenated before the first step's inputs_embeds
# (PeftModelForCausalLM.prepare_inputs_for_generation) and the attention mask covers them. The
# functions below run the modules of the classes above in that way (no_grad, eval mode).

def _cache_update(cache, i, k, v):
    if len(cache) <= i:
        cache.append((k, v))
    else:
        k = torch.cat([cache[i][0], k], dim=-2)
        v = torch.cat([cache[i][1], v], dim=-2)
        cache[i] = (k, v)
    return k, v


def gpt2_cached_forward(model, inputs_embeds, attention_mask, cache):
    """GPT2LMHeadModel.forward(inputs_embeds, past_key_values, attention_mask) -> last logits."""
    tr = model.transformer
    B, S, _ = inputs_embeds.shape
    past = cache[0][0].shape[-2] if cache else 0
    position_ids = torch.arange(past, past + S, dtype=torch.long).unsqueeze(0)
    mask = attention_mask.view(B, -1)[:, None, None, :].to(inputs_embeds.dtype)
    mask = (1.0 - mask) * torch.finfo(inputs_embeds.dtype).min
    h = inputs_embeds + tr.wpe(position_ids)
    for i, block in enumerate(tr.h):
        a = block.attn
        x = block.ln_1(h)
        q, k, v = a.c_attn(x).split(a.split_size, dim=2)
        q = a._split_heads(q, a.num_heads, a.head_dim)
        k = a._split_heads(k, a.num_heads, a.head_dim)
        v = a._split_heads(v, a.num_heads, a.head_dim)
        k, v = _cache_update(cache, i, k, v)
        o, _ = a._attn(q, k, v, mask)
        h = h + a.c_proj(a._merge_heads(o, a.num_heads, a.head_dim))
        h = h + block.mlp(block.ln_2(h))
    h = tr.ln_f(h)
    return model.lm_head(h[:, -1:, :])[:, -1, :]


def llama_cached_forward(model, inputs_embeds, attention_mask, cache):
    """LlamaForCausalLM.forward(inputs_embeds, past_key_values, attention_mask), eager
    attention -> last logits."""
    lm = model.model
    B, S, _ = inputs_embeds.shape
    past = cache[0][0].shape[-2] if cache else 0
    cache_position = torch.arange(past, past + S)
    mask = _prepare_4d_causal_attention_mask_with_cache_position(
        attention_mask, sequence_length=S, target_length=attention_mask.shape[-1],
        dtype=inputs_embeds.dtype, cache_position=cache_position, batch_size=B)
    h = inputs_embeds
    cos, sin = lm.rotary_emb(h, cache_position.unsqueeze(0))
    for i, layer in enumerate(lm.layers):
        a = layer.self_attn
        x = layer.input_layernorm(h)
        q = a.q_proj(x).view(B, S, -1, a.head_dim).transpose(1, 2)
        k = a.k_proj(x).view(B, S, -1, a.head_dim).transpose(1, 2)
        v = a.v_proj(x).view(B, S, -1, a.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = _cache_update(cache, i, k, v)
        k = repeat_kv(k, a.num_key_value_groups)
        v = repeat_kv(v, a.num_key_value_groups)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(a.head_dim)
        w = w + mask[:, :, :, : k.shape[-2]]
        w = nn.functional.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(w, v).transpose(1, 2).contiguous().reshape(B, S, -1)
        h = h + a.o_proj(o)
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    h = lm.norm(h)
    return model.lm_head(h[:, -1:, :])[:, -1, :]


def peft_generate(base, prompt, input_ids, new_tokens):
    """Greedy generation of new_tokens + 1 tokens per sequence (the first from the prefill);
    returns (ids [B, new_tokens + 1], prefill seconds, decode seconds)."""
    forward = gpt2_cached_forward if base.config.model_type == "gpt2" else llama_cached_forward
    B = input_ids.shape[0]
    P = prompt.shape[0]
    wte = base.get_input_embeddings()
    cache = []
    with torch.no_grad():
        t0 = time.perf_counter()
        embeds = torch.cat((prompt.unsqueeze(0).expand(B, -1, -1), wte(input_ids)), dim=1)
        mask = torch.ones(B, P + input_ids.shape[1], dtype=torch.long)
        nxt = torch.argmax(forward(base, embeds, mask, cache), dim=-1)
        out = [nxt]
        t1 = time.perf_counter()
        for _ in range(new_tokens):
            mask = torch.cat([mask, mask.new_ones((B, 1))], dim=-1)
            nxt = torch.argmax(forward(base, wte(nxt[:, None]), mask, cache), dim=-1)
            out.append(nxt)
        t2 = time.perf_counter()
    return torch.stack(out, dim=1), t1 - t0, t2 - t1


def run_generate(a, base, cfg, tokens, prompt, new_tokens):
    """--mode generate: prefill and decode tokens/s, medians of --steps runs after --warmup."""
    base.eval()
    for m in base.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    B, T = tokens.shape
    P = prompt.shape[0]
    if P + T + new_tokens > cfg.max_positions:
        raise PeerError("P + T + N = %d exceeds the model's %d positions" %
                        (P + T + new_tokens, cfg.max_positions))
    input_ids = torch.from_numpy(tokens.astype(np.int64))
    prompt_t = torch.from_numpy(prompt)
    print("# pytorch peer: generation with a key/value cache (transformers' generate, "
          "use_cache, greedy), B=%d P=%d T=%d N=%d, threads %d, torch %s" %
          (B, P, T, new_tokens, a.threads, torch.__version__))
    pre, dec = [], []
    for i in range(a.warmup + a.steps):
        ids, tp, td = peft_generate(base, prompt_t, input_ids, new_tokens)
        print("# run %d%s: prefill %.4f s, decode %.4f s" %
              (i + 1, " (warmup)" if i < a.warmup else "", tp, td))
        sys.stdout.flush()
        if i >= a.warmup:
            pre.append(tp)
            dec.append(td)
    tp, td = statistics.median(pre), statistics.median(dec)
    print("metric pytorch_generate_prefill_tokens_per_s %.6g tokens/s" % (B * (P + T) / tp))
    print("metric pytorch_generate_decode_tokens_per_s %.6g tokens/s" % (B * new_tokens / td))
    if a.ids:
        raw = np.fromfile(a.ids, dtype="<i4")
        if raw.size != ids.numel():
            raise PeerError("%s: %d ids, expected B x (N + 1) = %d" % (a.ids, raw.size,
                                                                      ids.numel()))
        theirs = torch.from_numpy(raw.astype(np.int64)).view(B, -1)
        agree = []  # leading ids equal per sequence (they part at a near tie, then diverge)
        for s in range(B):
            diff = (theirs[s] != ids[s]).nonzero()
            agree.append(int(diff[0]) if diff.numel() else ids.shape[1])
        print("metric pytorch_generate_ids_agree %.6g fraction" %
              (sum(agree) / float(ids.numel())))
    return 0


# --------------------------------------------------------------------------- safetensors

_ESIZE = {"F32": 4, "F16": 2, "BF16": 2}


def _read_st_header(path):
    """Returns (header dict, data start offset, file size) of a safetensors file."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise PeerError("%s: truncated safetensors file (%d bytes)" % (path, size))
            (n,) = struct.unpack("<Q", head)
            if n < 2 or 8 + n > size:
                raise PeerError("%s: bad safetensors header length %d (file has %d bytes)" %
                                (path, n, size))
            raw = f.read(n)
    except FileNotFoundError:
        raise PeerError("%s: file not found" % path)
    except OSError as e:
        raise PeerError("%s: cannot read (%s)" % (path, e.strerror or e))
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PeerError("%s: safetensors header is not valid JSON (%s)" % (path, e))
    if not isinstance(header, dict):
        raise PeerError("%s: safetensors header is not a JSON object" % path)
    return header, 8 + n, size


def _load_tensor_into(path, f, info, data_start, file_size, name, dest):
    """Reads tensor `name` described by `info` from open file f into float32 tensor dest."""
    try:
        dt, shape, (b, e) = info["dtype"], list(info["shape"]), info["data_offsets"]
    except (KeyError, TypeError, ValueError):
        raise PeerError("%s: tensor %s has a malformed header entry" % (path, name))
    if dt not in _ESIZE:
        raise PeerError("%s: tensor %s has dtype %r (supported: F32, F16, BF16)" %
                        (path, name, dt))
    if shape != list(dest.shape):
        raise PeerError("%s: tensor %s has shape %s, config.json implies %s" %
                        (path, name, shape, list(dest.shape)))
    nbytes = dest.numel() * _ESIZE[dt]
    if not (isinstance(b, int) and isinstance(e, int) and 0 <= b <= e
            and data_start + e <= file_size and e - b == nbytes):
        raise PeerError("%s: tensor %s has bad data_offsets %r for %s %s (data section has %d "
                        "bytes)" % (path, name, info["data_offsets"], dt, shape,
                                    file_size - data_start))
    out = dest.detach().view(-1).numpy()  # shares memory with the parameter
    f.seek(data_start + b)
    if dt == "F32":
        got = f.readinto(memoryview(out).cast("B"))
        if got != nbytes:
            raise PeerError("%s: short read of tensor %s" % (path, name))
        if sys.byteorder != "little":
            out.byteswap(inplace=True)
        return
    chunk = 1 << 22  # elements converted per slice
    for s in range(0, out.size, chunk):
        k = min(chunk, out.size - s)
        buf = f.read(2 * k)
        if len(buf) != 2 * k:
            raise PeerError("%s: short read of tensor %s" % (path, name))
        if dt == "F16":
            out[s:s + k] = np.frombuffer(buf, dtype="<f2")
        else:  # BF16: the upper 16 bits of a float32
            out[s:s + k] = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(
                np.float32)


def _safetensors_files(model_dir):
    """File names of model.safetensors or of the shards listed by model.safetensors.index.json."""
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.isfile(single):
        return ["model.safetensors"]
    if os.path.isfile(index):
        try:
            with open(index, "r", encoding="utf-8") as f:
                wmap = json.load(f)["weight_map"]
            if not isinstance(wmap, dict):
                raise TypeError("weight_map is not an object")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise PeerError("%s: bad safetensors index (%s)" % (index, e))
        files = sorted(set(wmap.values()))
        for fn in files:
            if not isinstance(fn, str) or os.path.basename(fn) != fn:
                raise PeerError("%s: bad shard file name %r" % (index, fn))
        return files
    raise PeerError("%s: neither model.safetensors nor model.safetensors.index.json found"
                    % model_dir)


def _load_weights(model_dir, files, params, resolve):
    """Reads every tensor of the safetensors files into params (name -> parameter).
    resolve(path, raw_name) gives the parameter name, or None for a tensor to ignore (it raises
    PeerError for an unexpected one). Returns the sorted stored dtype names."""
    loaded = set()
    dtypes = set()
    for fn in files:
        path = os.path.join(model_dir, fn)
        header, data_start, size = _read_st_header(path)
        with open(path, "rb") as f:
            for raw_name, info in header.items():
                if raw_name == "__metadata__":
                    continue
                name = resolve(path, raw_name)
                if name is None:
                    continue
                if name in loaded:
                    raise PeerError("%s: tensor %s appears twice" % (path, raw_name))
                if not isinstance(info, dict):
                    raise PeerError("%s: tensor %s has a malformed header entry" % (path, raw_name))
                _load_tensor_into(path, f, info, data_start, size, raw_name, params[name])
                loaded.add(name)
                dtypes.add(info["dtype"])
    missing = sorted(set(params) - loaded)
    if missing:
        raise PeerError("%s: missing tensor(s) %s" % (model_dir, ", ".join(missing[:4]) +
                                                     (", ..." if len(missing) > 4 else "")))
    return sorted(dtypes)


def load_gpt2(model_dir, config):
    """Builds GPT2LMHeadModel and reads its weights. Returns (model, dtype names)."""
    with torch.no_grad():
        model = GPT2LMHeadModel(config)
    params = dict(model.transformer.named_parameters())

    def resolve(path, raw_name):
        name = raw_name[len("transformer."):] if raw_name.startswith("transformer.") \
            else raw_name
        if name not in params:
            # HF checkpoints may carry the causal-mask buffers (h.N.attn.bias,
            # h.N.attn.masked_bias) and lm_head.weight (tied to wte): ignored like HF.
            if name.endswith(".attn.bias") or name.endswith(".attn.masked_bias") or \
                    name == "lm_head.weight":
                return None
            raise PeerError("%s: unexpected tensor %s for a GPT-2 model" % (path, raw_name))
        return name

    return model, _load_weights(model_dir, _safetensors_files(model_dir), params, resolve)


_ROTARY_BUFFER = re.compile(r"model\.layers\.[0-9]+\.self_attn\.rotary_emb\.inv_freq")


def load_llama(model_dir, config):
    """Builds LlamaForCausalLM (Llama or Qwen2) and reads its weights. Returns (model, dtype
    names)."""
    with torch.no_grad():
        model = LlamaForCausalLM(config)
    # named_parameters() lists a tied lm_head.weight once, as model.embed_tokens.weight
    params = dict(model.named_parameters())

    def resolve(path, raw_name):
        if raw_name in params:
            return raw_name
        # older checkpoints carry the rotary inv_freq buffers; a tied model's lm_head.weight
        # is replaced by embed_tokens (tie_weights): both ignored like HF
        if _ROTARY_BUFFER.fullmatch(raw_name) or raw_name == "lm_head.weight":
            return None
        raise PeerError("%s: unexpected tensor %s for a %s model" %
                        (path, raw_name, "Qwen2" if config.model_type == "qwen2" else "Llama"))

    return model, _load_weights(model_dir, _safetensors_files(model_dir), params, resolve)


def load_model(model_dir):
    """Builds the model of a Hugging Face directory (config.json + model.safetensors or
    model.safetensors.index.json shards), chosen by model_type. Returns (model, dtype names)."""
    if not os.path.isdir(model_dir):
        raise PeerError("%s: model directory not found" % model_dir)
    path = os.path.join(model_dir, "config.json")
    c = read_config_json(path)
    mt = c.get("model_type", "gpt2")
    if mt == "gpt2":
        return load_gpt2(model_dir, GPT2Config(path, c))
    if mt in ("llama", "qwen2"):
        return load_llama(model_dir, LlamaConfig(path, c))
    if mt in SUPPORTED_MODEL_TYPES:
        return _families().load(model_dir, path, c)
    raise PeerError("%s: model_type %r is not supported (supported: %s)" %
                    (path, mt, ", ".join(SUPPORTED_MODEL_TYPES)))


def _families():
    """bench/peer_families.py, which imports this module by name: run as a script, this module
    is __main__, so it is registered under its name first (one module, one PeerError)."""
    sys.modules.setdefault("pytorch_peer", sys.modules[__name__])
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import peer_families
    return peer_families


# --------------------------------------------------------------------------- batches

def make_batch(B, T, P, K, V, d, seed, wte=None):
    """Seeded random text tokens [B, T] and an initial prompt [P, d]: rows of wte at random
    vocabulary ids (PEFT's SAMPLE_VOCAB init) when wte is given, else N(0, 0.02^2)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, size=(B, T), dtype=np.int64).astype(np.int32)
    if wte is not None:
        ids = rng.integers(0, V, size=P)
        prompt = wte.detach().numpy()[ids].astype(np.float32)
    else:
        prompt = (rng.standard_normal((P, d)) * 0.02).astype(np.float32)
    return tokens, prompt


def write_batch_file(path, tokens, prompt, K):
    B, T = tokens.shape
    P, d = prompt.shape
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<5i", B, T, P, K, d))
        f.write(np.ascontiguousarray(tokens, dtype="<i4").tobytes())
        f.write(np.ascontiguousarray(prompt, dtype="<f4").tobytes())


def read_batch_file(path):
    """Returns (tokens int32 [B, T], prompt float32 [P, d], K)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise PeerError("%s: batch file not found" % path)
    except OSError as e:
        raise PeerError("%s: cannot read batch file (%s)" % (path, e.strerror or e))
    if len(raw) < 28:
        raise PeerError("%s: batch file too short (%d bytes, header needs 28)" % (path, len(raw)))
    if raw[:8] != MAGIC:
        raise PeerError("%s: bad magic %r (expected %r)" % (path, raw[:8], MAGIC))
    B, T, P, K, d = struct.unpack("<5i", raw[8:28])
    for nm, v in (("B", B), ("T", T), ("P", P), ("K", K), ("d", d)):
        if v <= 0:
            raise PeerError("%s: header field %s = %d must be positive" % (path, nm, v))
    if K > T:
        raise PeerError("%s: K = %d targets exceed T = %d text tokens" % (path, K, T))
    want = 28 + 4 * B * T + 4 * P * d
    if len(raw) != want:
        raise PeerError("%s: size %d bytes, header B=%d T=%d P=%d d=%d implies %d" %
                        (path, len(raw), B, T, P, d, want))
    tokens = np.frombuffer(raw, dtype="<i4", count=B * T, offset=28).reshape(B, T)
    prompt = np.frombuffer(raw, dtype="<f4", count=P * d, offset=28 + 4 * B * T).reshape(P, d)
    if not np.all(np.isfinite(prompt)):
        raise PeerError("%s: prompt contains non-finite values" % path)
    return tokens.astype(np.int32), prompt.astype(np.float32), K


def make_labels(tokens, K):
    """Labels [B, T]: the last K text tokens of each sequence, -100 elsewhere."""
    labels = torch.full(tokens.shape, -100, dtype=torch.long)
    labels[:, -K:] = tokens[:, -K:]
    return labels


# --------------------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="pytorch_peer.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "PyTorch peer of the softprompt benchmark: times one prompt-tuning training step of\n"
            "a frozen causal LM computed as Hugging Face transformers + PEFT prompt tuning\n"
            "compute it, re-implemented in plain torch (no transformers/peft needed). Model\n"
            "classes by config.json's model_type: gpt2 (GPT2LMHeadModel), llama\n"
            "(LlamaForCausalLM), qwen2 (Qwen2ForCausalLM), qwen3 (Qwen3ForCausalLM),\n"
            "gemma3_text (Gemma3ForCausalLM), gpt_neox (GPTNeoXForCausalLM), opt\n"
            "(OPTForCausalLM), bloom (BloomForCausalLM; bench/peer_families.py); eager\n"
            "attention. --mode generate: gpt2, llama and qwen2 only.\n\n"
            "Step = PEFT forward (trainable prompt [P, d] concatenated before wte(input_ids),\n"
            "all-ones attention mask, labels -100 on prompt positions) + logits over the full\n"
            "vocabulary at every position + HF's shifted CrossEntropyLoss(ignore_index=-100,\n"
            "mean) + backward (all model parameters frozen: only the prompt gets a gradient) +\n"
            "torch.optim.AdamW step on the prompt + zero_grad. Labels are the last K text tokens\n"
            "of each sequence: --mode cls uses K=1, --mode gen uses K=%d (--targets overrides;\n"
            "with --batch-file, B/T/P/K come from the file and --mode only names the metrics).\n"
            "Not included: HF Trainer's gradient clipping (max_grad_norm) and LR scheduler.\n"
            "A random batch's prompt starts as wte rows of random ids (PEFT SAMPLE_VOCAB).\n\n"
            "Dropout: --dropout config (default) runs the modules in train mode with the\n"
            "config's attn_pdrop / resid_pdrop / embd_pdrop (Llama/Qwen2: attention_dropout),\n"
            "as HF Trainer does; --dropout off sets every dropout probability to 0, so the\n"
            "loss equals a dropout-free engine's.\n\n"
            "Output: one line per metric, 'metric pytorch_<mode>_<name> <value> <unit>':\n"
            "  step_s (median seconds of the timed steps), tokens_per_s (B*T text tokens /\n"
            "  median step; prompt positions not counted), peak_rss_mib (ru_maxrss of the\n"
            "  process), loss_first (loss of the first forward, before any optimizer step,\n"
            "  full precision). Lines starting with '#' are for humans.\n\n"
            "Batch file layout (little-endian): 8 bytes b'SPBENCH1', int32 B, T, P, K, d,\n"
            "int32 tokens[B*T] (text ids, no prompt), float32 prompt[P*d] (initial prompt).\n"
            "Errors (bad model directory, bad batch file, bad options) exit with status 2 and a\n"
            "one-line message." % DEFAULT_GEN_TARGETS))
    ap.add_argument("--model", required=True, metavar="DIR",
                    help="Hugging Face model directory (model_type gpt2, llama, qwen2, qwen3, "
                         "gemma3_text, gpt_neox, opt or bloom): "
                         "config.json + model.safetensors (or sharded via "
                         "model.safetensors.index.json); F32/F16/BF16 tensors (converted to "
                         "float32); GPT-2 names with or without 'transformer.'")
    ap.add_argument("--mode", choices=("cls", "gen", "generate"), default="cls",
                    help="cls: 1 labelled token per sequence; gen: last %d (default cls); "
                         "generate: greedy generation with a key/value cache (--batch-file's K "
                         "is the number of decode steps N), metrics "
                         "pytorch_generate_{prefill,decode}_tokens_per_s"
                         % DEFAULT_GEN_TARGETS)
    ap.add_argument("--ids", metavar="FILE",
                    help="generate: int32 greedy ids [B, N + 1] of another implementation; "
                         "prints the fraction of leading ids that agree")
    ap.add_argument("--targets", type=int, metavar="K",
                    help="labelled (last) text tokens per sequence; default 1 for cls, %d for "
                         "gen" % DEFAULT_GEN_TARGETS)
    ap.add_argument("--batch", type=int, default=8, metavar="B", help="sequences (default 8)")
    ap.add_argument("--seq", type=int, default=128, metavar="T",
                    help="text tokens per sequence, prompt excluded (default 128)")
    ap.add_argument("--prompt", type=int, default=20, metavar="P",
                    help="prompt (virtual) tokens (default 20)")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of the random batch and prompt, and of dropout (default 0)")
    ap.add_argument("--batch-file", metavar="FILE",
                    help="read tokens, prompt and B/T/P/K from FILE instead of a random batch")
    ap.add_argument("--write-batch-file", metavar="FILE",
                    help="write a random batch (--batch/--seq/--prompt/--targets/--seed; d and "
                         "the prompt from --model) to FILE and exit")
    ap.add_argument("--scale-prompt", action="store_true",
                    help="use the batch file's prompt times the model's embedding scale as the "
                         "PEFT prompt (gemma3_text, whose HF embedding module scales the token "
                         "rows only): what an engine scaling soft tokens like text tokens would "
                         "compute; test_bench uses it to show the family check tells them apart")
    ap.add_argument("--dropout", choices=("config", "off"), default="config",
                    help="config: train-mode dropout with the config's probabilities (HF "
                         "Trainer); off: all dropout probabilities 0 (default config)")
    ap.add_argument("--threads", type=int, default=1, metavar="N",
                    help="torch.set_num_threads(N); interop threads are set to 1 (default 1)")
    ap.add_argument("--warmup", type=int, default=1, metavar="W",
                    help="untimed steps before timing (default 1)")
    ap.add_argument("--steps", type=int, default=5, metavar="S",
                    help="timed steps; the median is reported (default 5)")
    ap.add_argument("--lr", type=float, default=3e-2,
                    help="AdamW learning rate (default 3e-2, PEFT's prompt-tuning example)")
    ap.add_argument("--weight-decay", type=float, default=0.0,
                    help="AdamW weight decay (default 0, HF Trainer's default)")
    a = ap.parse_args(argv)
    for nm in ("batch", "seq", "prompt", "threads", "steps"):
        if getattr(a, nm) <= 0:
            raise PeerError("--%s must be positive (got %d)" % (nm, getattr(a, nm)))
    if a.warmup < 0:
        raise PeerError("--warmup must be >= 0 (got %d)" % a.warmup)
    if a.targets is None:
        a.targets = 1 if a.mode == "cls" else DEFAULT_GEN_TARGETS
    if a.targets <= 0:
        raise PeerError("--targets must be positive (got %d)" % a.targets)
    if a.batch_file and a.write_batch_file:
        raise PeerError("--batch-file and --write-batch-file are exclusive")
    return a


def run(argv):
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)

    t0 = time.perf_counter()
    base, dtypes = load_model(a.model)
    cfg = base.config
    load_s = time.perf_counter() - t0

    if a.write_batch_file:
        if a.targets > a.seq:
            raise PeerError("--targets %d exceeds --seq %d" % (a.targets, a.seq))
        tokens, prompt = make_batch(a.batch, a.seq, a.prompt, a.targets, cfg.vocab_size,
                                    cfg.hidden_size, a.seed, base.get_input_embeddings().weight)
        write_batch_file(a.write_batch_file, tokens, prompt, a.targets)
        print("# wrote %s: B=%d T=%d P=%d K=%d d=%d" % (a.write_batch_file, a.batch, a.seq,
                                                       a.prompt, a.targets, cfg.hidden_size))
        return 0

    if a.batch_file:
        tokens, prompt, K = read_batch_file(a.batch_file)
        B, T = tokens.shape
        P, d = prompt.shape
        if d != cfg.hidden_size:
            raise PeerError("%s: prompt width d = %d, but the model's %s is %d" %
                            (a.batch_file, d, "n_embd" if cfg.model_type == "gpt2"
                             else "hidden_size", cfg.hidden_size))
        bad = (tokens < 0) | (tokens >= cfg.vocab_size)
        if bad.any():
            raise PeerError("%s: token id %d out of range [0, %d)" %
                            (a.batch_file, int(tokens[bad][0]), cfg.vocab_size))
        src = a.batch_file
    else:
        B, T, P, K = a.batch, a.seq, a.prompt, a.targets
        if K > T:
            raise PeerError("--targets %d exceeds --seq %d" % (K, T))
        tokens, prompt = make_batch(B, T, P, K, cfg.vocab_size, cfg.hidden_size, a.seed,
                                    base.get_input_embeddings().weight)
        src = "random (seed %d)" % a.seed
    if T + P > cfg.max_positions:
        raise PeerError("sequence length T+P = %d exceeds the model's %s %d" %
                        (T + P, "n_positions" if cfg.model_type == "gpt2"
                         else "max_position_embeddings", cfg.max_positions))
    if getattr(cfg, "sliding_window", None) is not None and T + P > cfg.sliding_window and \
            not getattr(cfg, "implements_window", False):
        raise PeerError("sequence length T+P = %d exceeds the model's sliding_window %d "
                        "(sliding-window attention is not supported)" % (T + P,
                                                                         cfg.sliding_window))

    if a.scale_prompt:
        scale = getattr(base.get_input_embeddings(), "embed_scale", None)
        if scale is None:
            raise PeerError("--scale-prompt: model_type %s has no embedding scale" %
                            cfg.model_type)
        # the engine's first-layer rows: prompt times the scale, a float32 product
        prompt = prompt * np.float32(scale.to(base.get_input_embeddings().weight.dtype).item())
    if a.mode == "generate":
        if cfg.model_type not in ("gpt2", "llama", "qwen2"):
            raise PeerError("--mode generate: model_type %s is not supported (gpt2, llama, "
                            "qwen2)" % cfg.model_type)
        return run_generate(a, base, cfg, tokens, prompt, K)
    if a.dropout == "off":
        for m in base.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
            elif isinstance(m, LlamaAttention):
                m.attention_dropout = 0.0
        if cfg.model_type not in ("gpt2", "llama", "qwen2"):
            _families().disable_dropout(base)
    model = PeftPromptTuningCausalLM(base, P)
    with torch.no_grad():
        model.prompt_encoder.embedding.weight.copy_(torch.from_numpy(prompt))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == 1 and trainable[0] is model.prompt_encoder.embedding.weight
    optimizer = torch.optim.AdamW(trainable, lr=a.lr, weight_decay=a.weight_decay)

    input_ids = torch.from_numpy(tokens.astype(np.int64))
    attention_mask = torch.ones(B, T, dtype=torch.long)
    labels = make_labels(input_ids, K)
    torch.manual_seed(a.seed)

    def step():
        # like HF Trainer.compute_loss: keep only the loss, the logits die before backward
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    mode = a.mode
    n_params = sum(p.numel() for p in base.parameters())
    hf_class = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM",
                "qwen2": "Qwen2ForCausalLM"}.get(cfg.model_type)
    if hf_class is None:
        hf_class = _families().HF_CLASS[cfg.model_type]
    print("# pytorch peer (HF %s + PEFT prompt tuning, plain torch %s)" %
          (hf_class, torch.__version__))
    print("# model %s: %s, %.1fM params (%s -> float32), loaded in %.2f s" % (
        a.model, cfg.describe(), n_params / 1e6, "/".join(dtypes), load_s))
    print("# batch %s: B=%d T=%d P=%d K=%d (mode %s), dropout %s (%s), "
          "threads %d, AdamW lr %g wd %g" % (
              src, B, T, P, K, mode, a.dropout, cfg.dropout_text(a.dropout == "off"),
              a.threads, a.lr, a.weight_decay))
    sys.stdout.flush()

    losses, times = [], []
    for i in range(a.warmup + a.steps):
        t = time.perf_counter()
        loss = step()
        dt = time.perf_counter() - t
        losses.append(loss)
        if i >= a.warmup:
            times.append(dt)
        print("# step %d%s: %.3f s, loss %.6f" % (i + 1, " (warmup)" if i < a.warmup else "",
                                                  dt, loss))
        sys.stdout.flush()
        if not math.isfinite(loss):
            raise PeerError("loss is not finite at step %d" % (i + 1))

    med = statistics.median(times)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    pre = "pytorch_%s_" % mode
    print("metric %sstep_s %.4f s" % (pre, med))
    print("metric %stokens_per_s %.1f tokens/s" % (pre, B * T / med))
    print("metric %speak_rss_mib %.1f MiB" % (pre, rss_mib))
    print("metric %sloss_first %.9g nats" % (pre, losses[0]))
    return 0


def main():
    try:
        return run(sys.argv[1:])
    except PeerError as e:
        sys.stdout.flush()
        print("pytorch_peer: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
