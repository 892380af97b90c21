"""What an exported CTC model's ``EncoderASR`` runs: waveforms to log-probabilities that do not
depend on the batch, and a greedy decoding that returns single-spaced text.

SpeechBrain's ``LengthsCapableSequential`` hands every module the waveforms' relative lengths;
a file's filterbank frames then count one fewer in some batches than alone, and its decoder reads
as many output frames as the waveform's share of the batch, a padded frame more or a valid one
less. :class:`CTCPipeline` gives the encoder the frames a file has alone
(:func:`~speechpos.speech.patches.feature_lengths`) and makes every padded output frame a sure
blank, so :func:`greedy_decode_ids` may read the whole batch. Its character decoding merges
repeated spaces and trims the ends (a space, a blank, a space gave two).

Example
-------
>>> probs = torch.log(torch.tensor([[[.1, .9, 0], [.1, 0, .9], [.9, .1, 0], [.1, 0, .9], [.1, .9, 0]]]))
>>> greedy_decode_ids(probs, torch.tensor([1.0]), blank_id=0, space_id=2)
[[1, 2, 1]]
"""

from __future__ import annotations

import torch
from speechbrain.decoders import ctc_greedy_decode
from torch import nn

from speechpos.speech.patches import feature_lengths


class CTCPipeline(nn.Module):
    """(B, samples) waveforms and relative lengths -> (B, T, units) CTC log-probabilities; the
    frames past each file's tokens give the blank probability one."""

    def __init__(self, compute_features, normalize, encoder_model, ctc_lin, blank_index: int = 0):
        super().__init__()
        self.compute_features = compute_features
        self.normalize = normalize
        self.encoder_model = encoder_model
        self.ctc_lin = ctc_lin
        self.blank_index = blank_index

    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> torch.Tensor:
        feats = self.compute_features(wavs)
        feat_lens = feature_lengths(wav_lens, wavs.shape[1], feats.shape[1],
                                    self.compute_features.compute_STFT.hop_length)
        out, lengths = self.encoder_model(self.normalize(feats, feat_lens), feat_lens)
        log_probs = torch.log_softmax(self.ctc_lin(out), dim=-1)
        pad = torch.arange(log_probs.shape[1], device=log_probs.device)[None, :] >= lengths[:, None]
        blank = torch.full_like(log_probs[0, 0], float("-inf"))
        blank[self.blank_index] = 0.0
        return torch.where(pad[..., None], blank, log_probs)


def greedy_decode_ids(probabilities: torch.Tensor, seq_lens: torch.Tensor, blank_id: int = 0,
                      space_id: int | None = None) -> list[list[int]]:
    """SpeechBrain's greedy CTC decoding of every frame of the batch (a :class:`CTCPipeline`
    makes padding blank; ``seq_lens``, relative to the waveforms, would cut or add a frame), with
    the unit ``space_id`` (characters) never repeated, first or last."""
    hyps = ctc_greedy_decode(probabilities, torch.ones_like(seq_lens, dtype=torch.float), blank_id=blank_id)
    if space_id is None:
        return hyps
    out = []
    for hyp in hyps:
        kept = [u for i, u in enumerate(hyp) if u != space_id or (i > 0 and hyp[i - 1] != space_id)]
        while kept and kept[0] == space_id:
            kept.pop(0)
        while kept and kept[-1] == space_id:
            kept.pop()
        out.append(kept)
    return out
