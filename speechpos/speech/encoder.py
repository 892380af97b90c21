"""Unpositioned speech encoders: SpeechBrain Transformer or Conformer, regular attention only.

A conformer's depthwise convolution zero-pads at the sequence edges, so even a random
conformer knows how far each token is from the edges: a position leak that would let
position prediction succeed without modelling content. :class:`ConvolutionGate` wraps each
layer's convolution module and decides what it sees:

- ``"on"``: SpeechBrain's convolution in token order (for fine-tuning; it leaks position);
- ``"off"``: the convolution is skipped (adds zero); switched on at fine-tune time with its
  output projection zero-initialised, so the pretrained function is unchanged at step 0;
- ``"shuffled"``: the valid tokens of each example are randomly permuted before the
  convolution and put back after it, so its kernel sees random neighbours and no edges.

In every mode padded tokens are zeroed right before the depthwise convolution (SpeechBrain
masks only the module's output, and its pointwise layer before the depthwise one has a bias, so
padding reached the last valid tokens), so a file's encodings are the same alone and in a batch.

Example
-------
>>> import torch
>>> enc = build_encoder("conformer", num_layers=2, d_model=32, nhead=4, d_ffn=64, conv_mode="off")
>>> enc(torch.randn(2, 9, 32), torch.tensor([9, 5])).shape
torch.Size([2, 9, 32])
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from speechbrain.lobes.models.transformer.Conformer import ConformerEncoder
from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
from torch import nn

from speechpos.position.encoder import ContextEncoder

CONV_MODES = ("on", "off", "shuffled")


class ConvolutionGate(nn.Module):
    """Wraps a conformer layer's ``ConvolutionModule``; see the module docstring for modes."""

    def __init__(self, conv: nn.Module, mode: str = "on"):
        super().__init__()
        self.conv = conv
        self.mode = mode

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in CONV_MODES:
            raise ValueError(f"conv_mode must be one of {CONV_MODES}, got {value!r}")
        self._mode = value

    def forward(self, x, mask=None, dynchunktrain_config=None):
        """Same call as SpeechBrain's ConvolutionModule; ``mask`` (B, T, 1) is True on padding."""
        if self.mode == "off":
            return torch.zeros_like(x)
        if mask is not None:
            x = x.masked_fill(mask, 0.0)
        if self.mode == "on":
            return self._convolve(x, mask, dynchunktrain_config)
        perm = _shuffle_valid(x.shape[0], x.shape[1], mask, x.device)
        shuffled = torch.gather(x, 1, perm.unsqueeze(-1).expand_as(x))
        out = self._convolve(shuffled, mask, dynchunktrain_config)
        inverse = torch.argsort(perm, dim=1)
        return torch.gather(out, 1, inverse.unsqueeze(-1).expand_as(out))


    def _convolve(self, x, mask, dynchunktrain_config):
        """SpeechBrain's ``ConvolutionModule.forward`` with padding zeroed before the depthwise
        convolution too (its chunked streaming path is SpeechBrain's own)."""
        conv = self.conv
        if mask is None or dynchunktrain_config is not None:
            return conv(x, mask, dynchunktrain_config=dynchunktrain_config)
        out = conv.bottleneck(conv.layer_norm(x).transpose(1, 2))
        out = conv.conv(out.masked_fill(mask.transpose(1, 2), 0.0))
        if conv.causal:
            out = out[..., : -conv.padding]
        return conv.after_conv(out.transpose(1, 2)).masked_fill(mask, 0.0)


def _shuffle_valid(batch: int, length: int, mask, device) -> torch.Tensor:
    """(B, T) permutations that shuffle each example's valid tokens and keep padding in place."""
    score = torch.rand(batch, length, device=device)
    if mask is not None:
        pad = mask.squeeze(-1)
        # Padding sorts after every valid token, in its own order.
        score = torch.where(pad, 2.0 + torch.arange(length, device=device).float(), score)
    return torch.argsort(score, dim=1)


def build_encoder(
    kind: str,
    num_layers: int,
    d_model: int,
    nhead: int,
    d_ffn: int,
    dropout: float = 0.1,
    kernel_size: int = 31,
    conv_mode: str = "off",
    normalize_before: bool = True,
    gather: bool = True,
    null_key: bool = False,
) -> ContextEncoder:
    """A context-gathering encoder without position signal.

    Arguments
    ---------
    kind : str
        ``"transformer"`` or ``"conformer"``.
    conv_mode : str
        For a conformer: ``"on"``, ``"off"`` or ``"shuffled"`` (see :class:`ConvolutionGate`).
    gather : bool
        Gather keys/values to the context tokens (True) or mask the others (False).
    null_key : bool
        A null key/value in every attention, so the encoder can tell the sequence length.
    """
    if kind == "transformer":
        sb_encoder = TransformerEncoder(
            num_layers, nhead, d_ffn, d_model=d_model, dropout=dropout,
            normalize_before=normalize_before, activation=nn.GELU, attention_type="regularMHA",
        )
    elif kind == "conformer":
        sb_encoder = ConformerEncoder(
            num_layers, d_model, d_ffn, nhead, kernel_size=kernel_size, dropout=dropout,
            attention_type="regularMHA",
        )
        for layer in sb_encoder.layers:
            layer.convolution_module = ConvolutionGate(layer.convolution_module, conv_mode)
    else:
        raise ValueError(f"encoder kind must be 'transformer' or 'conformer', got {kind!r}")
    return ContextEncoder(sb_encoder, gather=gather, null_key=null_key)


def convolution_gates(encoder: nn.Module) -> list[ConvolutionGate]:
    """The convolution gates of an encoder (empty for a transformer)."""
    return [m for m in encoder.modules() if isinstance(m, ConvolutionGate)]


@contextmanager
def convolution_mode(encoder: nn.Module, mode: str):
    """Run a block with every conformer convolution of ``encoder`` in ``mode``, then restore
    each gate's own mode (a no-op for a transformer).

    >>> enc = build_encoder("conformer", 1, 16, 2, 32, conv_mode="on")
    >>> with convolution_mode(enc, "off"):
    ...     inside = convolution_gates(enc)[0].mode
    >>> inside, convolution_gates(enc)[0].mode
    ('off', 'on')
    """
    gates = convolution_gates(encoder)
    before = [gate.mode for gate in gates]
    for gate in gates:
        gate.mode = mode
    try:
        yield
    finally:
        for gate, old in zip(gates, before, strict=True):
            gate.mode = old


def set_convolution_mode(encoder: nn.Module, mode: str, zero_init: bool = False) -> None:
    """Switch every conformer convolution of ``encoder`` to ``mode``.

    With ``zero_init`` the last pointwise projection of each convolution module is zeroed, so
    a convolution that was off in pretraining starts as a no-op when switched on.
    """
    for gate in convolution_gates(encoder):
        gate.mode = mode
        if zero_init:
            last = [m for m in gate.conv.after_conv.modules() if isinstance(m, nn.Linear)][-1]
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)
