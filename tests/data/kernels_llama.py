"""A Llama-style modeling file laid out the way transformers 5.25 lays out its own, for the
apply-site tests: ``apply_rotary_pos_emb`` decorated with ``kernels.use_kernel_forward_from_hub``
(an ``nn.Module`` instance), the attention with ``kernels.use_kernelized_func`` (a private copy
per instance in ``_kernel_funcs``), and a second attention that calls the function through an
attribute of its own (``self.rotary_fn``). Built from transformers' own ``LlamaConfig``."""

from __future__ import annotations

import torch
from kernels import use_kernel_forward_from_hub, use_kernelized_func
from torch import nn
from transformers import LlamaConfig


class KernelsLlamaRotaryEmbedding(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        dim = config.head_dim
        base = config.rope_parameters["rope_theta"]
        self.inv_freq = nn.Buffer(1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)), persistent=False)
        self.attention_scaling = 1.0

    def forward(self, x, position_ids):
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


@use_kernel_forward_from_hub("rotary_pos_emb")
def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


@use_kernelized_func(apply_rotary_pos_emb)
class KernelsLlamaAttention(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config, self.head_dim = config, config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, config.num_attention_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=False)

    def rotate(self, q, k, cos, sin):
        return apply_rotary_pos_emb(q, k, cos, sin)

    def forward(self, hidden_states, position_embeddings):
        shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        k = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        q, k = self.rotate(q, k, *position_embeddings)
        return torch.cat((q.flatten(1, 2), k.flatten(1, 2)), dim=1)


class KernelsLlamaHeldAttention(KernelsLlamaAttention):
    """Calls the function through an attribute of its own."""

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.rotary_fn = apply_rotary_pos_emb

    def rotate(self, q, k, cos, sin):
        return self.rotary_fn(q, k, cos, sin)


class KernelsLlamaModel(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.rotary_emb = KernelsLlamaRotaryEmbedding(config)
        self.layers = nn.ModuleList([KernelsLlamaAttention(config), KernelsLlamaHeldAttention(config)])

    def forward(self, hidden_states, position_ids):
        cos_sin = self.rotary_emb(hidden_states, position_ids)
        return [layer(hidden_states, cos_sin) for layer in self.layers]
