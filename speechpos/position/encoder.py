"""An unpositioned Transformer encoder whose keys/values come from the context tokens only.

SpeechBrain's encoder layers (``TransformerEncoderLayer``, ``ConformerEncoderLayer``) call
their attention as ``att(x, x, x, ...)``. :class:`ContextAttention` wraps SpeechBrain's
``MultiheadAttention`` in place and, while a :class:`~speechpos.position.context.Context` is
set, *gathers* keys and values to the context tokens before attending: the attention matrix is
(T x C) instead of (T x T), so the saving is real. Every token is still a query, and the
layers' own forward code (norms, residuals, feed-forward) is SpeechBrain's, unchanged. The
context is the same in every layer and the keys/values are each layer's current states.

``gather=False`` runs the reference instead: full keys/values with the excluded tokens masked
out. Both give the same outputs to float tolerance (tested).

Example
-------
>>> import torch
>>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
>>> from speechpos.position.context import sample_context
>>> enc = ContextEncoder(TransformerEncoder(2, 4, 64, d_model=32))
>>> x, lengths = torch.randn(2, 10, 32), torch.tensor([10, 7])
>>> ctx = sample_context(lengths, 0.3)
>>> enc(x, lengths, ctx).shape
torch.Size([2, 10, 32])
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from speechbrain.nnet.attention import MultiheadAttention
from torch import nn

from speechpos.position.context import Context, valid_mask


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select tokens per example: (B, T, D) and (B, C) indices -> (B, C, D).

    >>> x = torch.arange(6.).view(1, 3, 2)
    >>> gather_tokens(x, torch.tensor([[2, 0]])).tolist()
    [[[4.0, 5.0], [0.0, 1.0]]]
    """
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter_tokens(values: torch.Tensor, context: Context, fill: torch.Tensor) -> torch.Tensor:
    """The inverse of gathering a context: (B, C, D) values of the context tokens back at
    their positions of a (B, T, D) sequence whose other tokens hold ``fill`` (D,).

    >>> from speechpos.position.context import context_from_mask
    >>> ctx = context_from_mask(torch.tensor([[True, False, True], [False, True, False]]))
    >>> kept = torch.tensor([[[1.0], [2.0]], [[3.0], [9.0]]])  # 9.0 sits on a padding slot
    >>> scatter_tokens(kept, ctx, torch.tensor([0.0]))[..., 0].tolist()
    [[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]
    """
    batch, length = context.mask.shape
    # Padding slots go to an extra last column, dropped after the scatter.
    index = context.index.masked_fill(context.padding, length)
    out = values.new_zeros(batch, length + 1, values.shape[-1])
    out = out.scatter(1, index.unsqueeze(-1).expand_as(values), values)[:, :length]
    return torch.where(context.mask.unsqueeze(-1), out, fill.to(out.dtype))


class ContextAttention(nn.Module):
    """SpeechBrain ``MultiheadAttention`` whose keys/values are restricted to a context.

    It keeps the wrapped module's call signature, so SpeechBrain's encoder layers use it as
    they use their own attention. With no context set it is plain self-attention with the
    layer's key padding mask.

    Arguments
    ---------
    attention : speechbrain.nnet.attention.MultiheadAttention
        The attention to wrap (its weights are used as they are).
    gather : bool
        True: gather keys/values to the context tokens (fast path). False: keep all tokens
        as keys/values and mask the excluded ones (reference path).
    null_key : bool
        Append one all-zero token to the keys/values (as torch's ``add_zero_attn``). Softmax
        attention averages and so cannot count its keys; the weight a query gives the null
        token shrinks with the number of keys, which tells the encoder the sequence length
        (and nothing about any token's position) -- needed to place a token at "L - 1".
    fused : bool
        True: one batch-first projection and ``scaled_dot_product_attention`` on the wrapped
        module's weights (:func:`fused_attention`). False: SpeechBrain's own call (time-first
        permutes, torch's ``MultiheadAttention``); the same outputs to float tolerance (tested).
    """

    def __init__(
        self,
        attention: MultiheadAttention,
        gather: bool = True,
        null_key: bool = False,
        fused: bool = True,
    ):
        super().__init__()
        self.attention = attention
        self.gather = gather
        self.null_key = null_key
        self.fused = fused
        self.context: Context | None = None

    def forward(
        self,
        query,
        key,
        value,
        attn_mask=None,
        key_padding_mask=None,
        return_attn_weights=True,
        pos_embs=None,
    ):
        """Attend from every query to the context tokens of ``key``/``value``."""
        if pos_embs is not None:
            raise ValueError("ContextAttention is unpositioned: it does not take pos_embs")
        ctx = self.context
        if ctx is not None:
            if attn_mask is not None:
                raise ValueError("an attention mask cannot be combined with a context")
            if self.gather:
                same = key is value
                key = gather_tokens(key, ctx.index)
                value = key if same else gather_tokens(value, ctx.index)
                key_padding_mask = ctx.padding
            else:
                key_padding_mask = ~ctx.mask
        if self.null_key:
            key, value, key_padding_mask = _append_null_token(key, value, key_padding_mask)
        if self.fused and attn_mask is None:
            return fused_attention(self.attention.att, query, key, value, key_padding_mask), None
        output = self.attention(
            query,
            key,
            value,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            return_attn_weights=False,
        )
        return output, None


def fused_attention(
    mha: nn.MultiheadAttention, query, key, value, key_padding_mask=None
) -> torch.Tensor:
    """torch ``MultiheadAttention``'s maths, batch-first, in one ``scaled_dot_product_attention``.

    The projections run on (B, T, D) as they come (one matmul for q/k/v when they are one
    tensor, one for k/v when those are), and the key padding mask is broadcast over heads and
    queries instead of being expanded per head. Needs a module without ``bias_k``/``add_zero_attn``.

    >>> mha = nn.MultiheadAttention(8, 2)
    >>> x = torch.randn(3, 5, 8)
    >>> ref = mha(x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), need_weights=False)[0]
    >>> torch.allclose(fused_attention(mha, x, x, x), ref.transpose(0, 1), atol=1e-6)
    True
    """
    if mha.bias_k is not None or mha.add_zero_attn or not mha._qkv_same_embed_dim:
        raise ValueError("fused_attention needs a MultiheadAttention without bias_k/add_zero_attn/kdim")
    batch, n_query, dim = query.shape
    heads = mha.num_heads
    weight, bias = mha.in_proj_weight, mha.in_proj_bias
    if query is key and key is value:
        q, k, v = F.linear(query, weight, bias).chunk(3, dim=-1)
    else:
        w_q, w_kv = weight.split([dim, 2 * dim])
        b_q, b_kv = (None, None) if bias is None else bias.split([dim, 2 * dim])
        q = F.linear(query, w_q, b_q)
        if key is value:
            k, v = F.linear(key, w_kv, b_kv).chunk(2, dim=-1)
        else:
            w_k, w_v = w_kv.chunk(2)
            b_k, b_v = (None, None) if b_kv is None else b_kv.chunk(2)
            k, v = F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)

    def split_heads(t):
        return t.view(batch, t.shape[1], heads, dim // heads).transpose(1, 2)

    mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
    dropout = mha.dropout if mha.training else 0.0
    q, k, v = split_heads(q), split_heads(k), split_heads(v)
    if torch.compiler.is_compiling():
        out = _attention_math(q, k, v, mask, dropout)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    return mha.out_proj(out.transpose(1, 2).reshape(batch, n_query, dim))


def _attention_math(q, k, v, mask, dropout: float) -> torch.Tensor:
    # Under torch.compile with dynamic shapes, torch 2.11's CPU flash-attention backward fixes
    # the mask's strides from the first shape and fails on the next; written out, inductor
    # fuses the scaling, mask and softmax itself.
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.dropout(scores.softmax(dim=-1), dropout)
    return weights @ v


def _append_null_token(key, value, key_padding_mask):
    null = key.new_zeros(key.shape[0], 1, key.shape[2])
    same = key is value
    key = torch.cat([key, null], 1)
    value = key if same else torch.cat([value, null], 1)
    if key_padding_mask is not None:
        keep = key_padding_mask.new_zeros(key_padding_mask.shape[0], 1)
        key_padding_mask = torch.cat([key_padding_mask, keep], 1)
    return key, value, key_padding_mask


_ATTENTION_ATTRIBUTES = ("self_att", "mha_layer")


def attach_context_attention(
    encoder: nn.Module, gather: bool = True, null_key: bool = False
) -> list[ContextAttention]:
    """Wrap the self-attention of every layer of a SpeechBrain encoder in :class:`ContextAttention`.

    Works on ``TransformerEncoder`` (``layer.self_att``) and ``ConformerEncoder``
    (``layer.mha_layer``). Refuses attention types that carry position (RelPosMHAXL, RoPE,
    hypermixing): position-prediction pretraining needs an encoder without position signal.
    """
    wrapped = []
    for i, layer in enumerate(encoder.layers):
        for name in _ATTENTION_ATTRIBUTES:
            att = getattr(layer, name, None)
            if att is None:
                continue
            if isinstance(att, ContextAttention):
                wrapped.append(att)
                break
            if type(att) is not MultiheadAttention:
                raise ValueError(
                    f"layer {i} uses {type(att).__name__} attention, which carries position "
                    "information; build the encoder with attention_type='regularMHA'"
                )
            wrapper = ContextAttention(att, gather=gather, null_key=null_key)
            setattr(layer, name, wrapper)
            wrapped.append(wrapper)
            break
        else:
            raise ValueError(f"layer {i} ({type(layer).__name__}) has no self-attention to wrap")
    return wrapped


class ContextEncoder(nn.Module):
    """A SpeechBrain Transformer/Conformer encoder run with context-only keys/values.

    Arguments
    ---------
    encoder : nn.Module
        A ``TransformerEncoder`` or ``ConformerEncoder`` built with
        ``attention_type="regularMHA"`` and no positional encoding.
    gather : bool
        Gather keys/values to the context (True) or mask the excluded tokens (False).
    null_key : bool
        Give every attention a null key/value (see :class:`ContextAttention`).
    """

    def __init__(self, encoder: nn.Module, gather: bool = True, null_key: bool = False):
        super().__init__()
        self.encoder = encoder
        self.attentions = attach_context_attention(encoder, gather, null_key)

    @property
    def gather(self) -> bool:
        """Whether keys/values are gathered (True) or masked (False)."""
        return self.attentions[0].gather

    @gather.setter
    def gather(self, value: bool) -> None:
        for att in self.attentions:
            att.gather = value

    @contextmanager
    def using_context(self, context: Context | None):
        """Within the block, every attention layer attends to ``context`` only."""
        for att in self.attentions:
            att.context = context
        try:
            yield
        finally:
            for att in self.attentions:
                att.context = None

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        context: Context | None = None,
        return_hidden: bool = False,
    ):
        """Encode ``x`` (B, T, D).

        Arguments
        ---------
        x : torch.Tensor
            (B, T, D) token embeddings, with no position information added.
        lengths : torch.Tensor, optional
            (B,) number of valid tokens per example (default: all T).
        context : Context, optional
            Context tokens for keys/values; None for full attention over the valid tokens.
        return_hidden : bool
            Also return the list of every layer's output (input embeddings first).

        Returns
        -------
        torch.Tensor, or (torch.Tensor, list of torch.Tensor) if ``return_hidden``.
        """
        padding = None
        if lengths is not None:
            padding = ~valid_mask(lengths.to(x.device), x.shape[1])
        saved = getattr(self.encoder, "output_hidden_states", False)
        self.encoder.output_hidden_states = return_hidden
        try:
            with self.using_context(context):
                out = self.encoder(x, src_key_padding_mask=padding)
        finally:
            self.encoder.output_hidden_states = saved
        if return_hidden:
            return out[0], out[2]
        return out[0]
