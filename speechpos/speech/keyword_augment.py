"""Training-time augmentation for the keyword recipes, the SpeechBrain way.

SpeechBrain does the mixing, the speed change and the masks (``AddNoise``, ``SpeedPerturb``,
``SpectrogramDrop``, ``Warping``); this module adds only what it has no class for:

* :class:`BackgroundNoise`: the noise source for ``AddNoise(noise_funct=...)``: random windows
  of the dataset's own ``_background_noise_`` files, cut from the region of each file that the
  training split's ``_silence_`` clips come from (the first 80 %), so that no audio of the
  validation or test silence clips reaches training (TensorFlow's ``input_data.py`` mixes these
  files in the same way, at a random volume);
* :func:`mixup`: mixes each clip with another clip of the batch (Zhang et al., 2018), returning
  what the loss needs;
* :func:`fixed_length`: back to 1 s after a speed change.

Example
-------
>>> import tempfile, numpy as np, soundfile as sf, torch
>>> folder = Path(tempfile.mkdtemp())
>>> sf.write(folder / "white.wav", np.random.default_rng(0).uniform(-.5, .5, 48000), 16000)
>>> noise = BackgroundNoise(folder)
>>> noise(torch.zeros(4, 16000)).shape
torch.Size([4, 16000])
>>> wavs, labels = torch.randn(4, 16000), torch.tensor([0, 1, 2, 3])
>>> mixed, labels_b, lam = mixup(wavs, labels, alpha=0.4, generator=torch.Generator().manual_seed(0))
>>> mixed.shape, sorted(labels_b.tolist()), 0.0 <= lam <= 1.0
(torch.Size([4, 16000]), [0, 1, 2, 3], True)
"""

from __future__ import annotations

from pathlib import Path

import soundfile as sf
import torch

from speechpos.speech.data.audio import AudioError
from speechpos.speech.data.speech_commands import NOISE_REGIONS


class BackgroundNoise(torch.nn.Module):
    """Random windows of the ``*.wav`` files in ``folder``, from each file's ``region`` share.

    Called with a batch of waveforms ``(batch, time)``, returns noise of the same shape (each
    row a window of a random file at a random offset). The files are read on the first call,
    so a recipe that never mixes noise never needs them.

    Arguments
    ---------
    folder : str | Path
        The ``_background_noise_`` folder (its files must be at ``sample_rate``).
    region : str
        ``train``, ``valid`` or ``test``: which part of every file to draw from
        (:data:`speechpos.speech.data.speech_commands.NOISE_REGIONS`).
    sample_rate : int
    """

    def __init__(self, folder: str | Path, region: str = "train", sample_rate: int = 16000):
        super().__init__()
        if region not in NOISE_REGIONS:
            raise ValueError(f"region must be one of {sorted(NOISE_REGIONS)}, got {region!r}")
        self.folder, self.region, self.sample_rate = Path(folder), region, sample_rate
        self._noises: list[torch.Tensor] | None = None

    def noises(self) -> list[torch.Tensor]:
        """The region of every noise file (read once)."""
        if self._noises is None:
            files = sorted(self.folder.glob("*.wav")) if self.folder.is_dir() else []
            if not files:
                raise AudioError(f"{self.folder}: no background-noise WAVs to mix into training clips "
                                 "(set noise_probability: 0 to train without them)")
            low, high = NOISE_REGIONS[self.region]
            noises = []
            for path in files:
                try:
                    data, rate = sf.read(path, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError, OSError) as err:
                    raise AudioError(f"{path}: cannot decode audio ({err})") from err
                if rate != self.sample_rate:
                    raise AudioError(f"{path}: sample rate is {rate} Hz, expected {self.sample_rate} Hz")
                noises.append(torch.from_numpy(data[int(low * len(data)):int(high * len(data)), 0].copy()))
            self._noises = noises
        return self._noises

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Noise shaped like ``waveforms`` (a file shorter than a clip is repeated)."""
        noises, length = self.noises(), waveforms.shape[1]
        rows = []
        for index in torch.randint(len(noises), (waveforms.shape[0],)).tolist():
            noise = noises[index]
            if len(noise) < length:
                noise = noise.repeat(length // max(len(noise), 1) + 1)
            start = int(torch.randint(len(noise) - length + 1, (1,)))
            rows.append(noise[start:start + length])
        return torch.stack(rows).to(waveforms.device, waveforms.dtype)


def fixed_length(waveforms: torch.Tensor, samples: int) -> torch.Tensor:
    """Cut or zero-pad ``(batch, time)`` to ``samples`` (after a speed change).

    >>> fixed_length(torch.ones(2, 5), 3).shape, fixed_length(torch.ones(2, 5), 7)[0].tolist()
    (torch.Size([2, 3]), [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    """
    if waveforms.shape[1] >= samples:
        return waveforms[:, :samples]
    return torch.nn.functional.pad(waveforms, (0, samples - waveforms.shape[1]))


def mixup(inputs: torch.Tensor, labels: torch.Tensor, alpha: float, generator: torch.Generator | None = None):
    """``(lam * inputs + (1 - lam) * inputs[perm], labels[perm], lam)``, lam ~ Beta(alpha, alpha).

    The loss is then ``lam * loss(labels) + (1 - lam) * loss(labels[perm])``.
    """
    if alpha <= 0:
        raise ValueError(f"mixup needs alpha > 0, got {alpha}")
    lam = float(torch.distributions.Beta(float(alpha), float(alpha)).sample())
    perm = torch.randperm(inputs.shape[0], generator=generator).to(inputs.device)
    return lam * inputs + (1.0 - lam) * inputs[perm], labels[perm], lam


__all__ = ["BackgroundNoise", "fixed_length", "mixup"]
