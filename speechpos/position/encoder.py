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
    """

    def __init__(self, attention: MultiheadAttention, gather: bool = True, null_key: bool = False):
        super().__init__()
        self.attention = attention
        self.gather = gather
        self.null_key = null_key
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
        output = self.attention(
            query,
            key,
            value,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            return_attn_weights=False,
        )
        return output, None


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
