"""SpeechBrain datasets over the LibriSpeech CSV manifests (``ID, duration, wav, spk_id, wrd``).

The audio item checks every file as it is read (see :mod:`speechpos.speech.data.audio`); an
optional random crop gives fixed-length training segments.

Example
-------
>>> import os, tempfile, numpy as np, soundfile as sf
>>> d = tempfile.mkdtemp()
>>> sf.write(os.path.join(d, "u1.flac"), np.zeros(16000, dtype="float32"), 16000)
>>> with open(os.path.join(d, "train.csv"), "w") as f:
...     _ = f.write("ID,duration,wav,spk_id,wrd\\nu1,1.0," + os.path.join(d, "u1.flac") + ",s1,HELLO\\n")
>>> ds = audio_dataset(os.path.join(d, "train.csv"), min_samples=640)
>>> ds[0]["sig"].shape
torch.Size([16000])
"""

from __future__ import annotations

import os

import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset

from speechpos.speech.data.audio import read_audio_checked


def load_manifest(csv_path: str, data_root: str | None = None) -> DynamicItemDataset:
    """A ``DynamicItemDataset`` from a manifest, failing clearly if the file is missing."""
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"manifest not found: {csv_path} (run data preparation first)")
    replacements = {"data_root": data_root} if data_root else {}
    return DynamicItemDataset.from_csv(csv_path, replacements=replacements)


def audio_dataset(
    csv_path: str,
    sample_rate: int = 16000,
    min_samples: int = 1,
    crop_samples: int | None = None,
    sort: str | None = None,
    generator: torch.Generator | None = None,
) -> DynamicItemDataset:
    """Dataset providing ``sig`` (checked audio), optionally cropped at random.

    Arguments
    ---------
    csv_path : str
        Manifest in SpeechBrain's LibriSpeech format.
    sample_rate : int
        Expected sample rate; files at another rate are refused.
    min_samples : int
        Shortest acceptable file (one patch); shorter files are refused.
    crop_samples : int, optional
        Random crop of this many samples from longer files (training with fixed lengths).
    sort : str, optional
        ``"ascending"`` or ``"descending"`` duration order (SpeechBrain's habit for eval).
    """
    ds = load_manifest(csv_path)

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        sig = read_audio_checked(wav, sample_rate, min_samples)
        if crop_samples is not None and len(sig) > crop_samples:
            start = int(torch.randint(0, len(sig) - crop_samples + 1, (1,), generator=generator))
            sig = sig[start : start + crop_samples]
        return sig

    sb.dataio.dataset.add_dynamic_item([ds], audio_pipeline)
    sb.dataio.dataset.set_output_keys([ds], ["id", "sig"])
    if sort is not None:
        ds = ds.filtered_sorted(sort_key="duration", reverse=sort == "descending")
    return ds
