"""Use a trained keyword-spotting run: which keyword does a WAV file hold?

A *run* is the output folder of ``recipes/SpeechCommands/train.py`` (``hyperparams.yaml``,
``labels.txt`` and ``save/`` with the checkpoint of the best validation accuracy). Audio of
any sample rate and channel count is downmixed to mono and resampled to 16 kHz
(:func:`speechpos.speech.data.audio.read_audio_converted`); a clip shorter than 1 s is
zero-padded, a longer one is cut to its loudest second (:func:`loudest_window`).

Example (with a trained run)::

    from speechpos.inference import KeywordSpotter
    spotter = KeywordSpotter.from_run("results/SpeechCommands/kwt/1986")
    spotter.classify_file("yes_44k_stereo.wav")        # [('yes', 0.93), ('_unknown_', 0.03), ...]

or ``speechpos keyword results/SpeechCommands/kwt/1986 a.wav b.wav``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.checkpoints import Checkpointer

from speechpos.inference.asr import RunError
from speechpos.speech.data.audio import read_audio_converted
from speechpos.speech.data.keyword_data import fix_length
from speechpos.speech.keyword_model import class_scores


def loudest_window(wav: torch.Tensor, size: int, hop: int = 1600) -> torch.Tensor:
    """The ``size``-sample window of highest energy (stepping ``hop`` samples); shorter
    signals are zero-padded to ``size``.

    >>> x = torch.zeros(40000); x[30000:31000] = 1.0
    >>> w = loudest_window(x, 16000)
    >>> w.shape, float(w.sum())
    (torch.Size([16000]), 1000.0)
    """
    if wav.shape[0] <= size:
        return fix_length(wav, size)
    starts = list(range(0, wav.shape[0] - size + 1, hop))
    if starts[-1] != wav.shape[0] - size:
        starts.append(wav.shape[0] - size)
    cumulative = torch.cat([torch.zeros(1), torch.cumsum(wav.double() ** 2, 0)])
    energy = torch.stack([cumulative[s + size] - cumulative[s] for s in starts])
    best = starts[int(energy.argmax())]
    return wav[best : best + size]


class KeywordSpotter:
    """Features, normalisation, encoder and classifier of a trained keyword run."""

    def __init__(self, hparams: dict, labels: list[str], device: str = "cpu"):
        self.device = device
        self.labels = labels
        self.sample_rate = hparams["sample_rate"]
        self.clip_samples = hparams["clip_samples"]
        self.compute_features = hparams["compute_features"].to(device).eval()
        self.normalize = hparams["normalize"].to(device).eval()
        self.encoder = hparams["encoder"].to(device).eval()
        self.classifier = hparams["classifier"].to(device).eval()

    @classmethod
    def from_run(cls, run: str | Path, device: str = "cpu") -> KeywordSpotter:
        """Load an output folder of ``recipes/SpeechCommands/train.py``."""
        run = Path(run)
        yaml_path, labels_path = run / "hyperparams.yaml", run / "labels.txt"
        if not yaml_path.is_file():
            raise RunError(f"{run}: no hyperparams.yaml; not an output folder of a speechpos recipe")
        if not labels_path.is_file():
            raise RunError(f"{run}: no labels.txt; not a keyword-spotting run (train.py)")
        with open(yaml_path, encoding="utf-8") as f:
            hparams = load_hyperpyyaml(f)
        if "classifier" not in hparams:
            raise RunError(f"{run}: not a keyword-spotting run (no classifier in hyperparams.yaml)")
        checkpointer = Checkpointer(
            str(run / "save"),
            recoverables={k: hparams[k] for k in ("encoder", "classifier", "normalize")},
        )
        if checkpointer.recover_if_possible(min_key="error") is None:
            raise RunError(f"{run / 'save'}: no checkpoint to load")
        return cls(hparams, labels_path.read_text().split(), device)

    def load_clip(self, path: str | Path) -> torch.Tensor:
        """1-s mono clip at the model's rate: converted, then padded or cut to its loudest second."""
        wav = read_audio_converted(str(path), self.sample_rate)
        return loudest_window(wav, self.clip_samples)

    @torch.no_grad()
    def probabilities(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, clip_samples) -> (B, classes) class probabilities."""
        clips = clips.to(self.device)
        feats = self.compute_features(clips)
        feats = self.normalize(feats, torch.ones(clips.shape[0], device=self.device))
        return torch.softmax(class_scores(self.classifier(self.encoder(feats))), dim=-1).cpu()

    def classify_file(self, path: str | Path, top: int = 3) -> list[tuple[str, float]]:
        """The ``top`` most probable classes of one file, as (label, probability)."""
        probs = self.probabilities(self.load_clip(path)[None])[0]
        values, index = probs.topk(min(top, len(self.labels)))
        return [(self.labels[i], float(v)) for v, i in zip(values, index.tolist(), strict=True)]
