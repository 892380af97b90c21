"""Keyword-spotting data for the Speech Commands recipes: CSV manifests to padded 1-s batches.

:func:`read_clip` reads the ``start:stop`` samples of a manifest row and zero-pads a clip
shorter than ``clip_samples`` (longer ones are cut); :func:`keyword_datasets` builds
SpeechBrain ``DynamicItemDataset`` objects (``sig``, ``label_encoded``) from the CSVs that
:func:`speechpos.speech.data.speech_commands.prepare_speech_commands` writes, with the class
order of its ``labels.txt``. :func:`speech_crops` turns a speech manifest (``ID, duration,
wav``, as the LibriSpeech preparation writes it) into unlabelled 1-s crops for pretraining, a
fresh random crop of every utterance at each pass; :func:`keyword_scores` splits a confusion
matrix into keyword accuracy and the share of non-keywords rejected.

Example
-------
>>> import tempfile, os, numpy as np, soundfile as sf
>>> path = os.path.join(tempfile.mkdtemp(), "short.wav")
>>> sf.write(path, np.ones(8000, dtype="float32") * 0.5, 16000)
>>> clip = read_clip(path, 0, 8000)
>>> clip.shape, float(clip[:8000].mean()), float(clip[8000:].abs().sum())
(torch.Size([16000]), 0.5, 0.0)
"""

from __future__ import annotations

from pathlib import Path

import soundfile as sf
import speechbrain as sb
import torch
from speechbrain.dataio.encoder import CategoricalEncoder

from speechpos.speech.data.audio import AudioError
from speechpos.speech.data.speech_commands import SILENCE, UNKNOWN

CLIP_SAMPLES = 16000


def fix_length(wav: torch.Tensor, clip_samples: int = CLIP_SAMPLES) -> torch.Tensor:
    """Zero-pad at the end, or cut, to exactly ``clip_samples``.

    >>> fix_length(torch.ones(3), 5).tolist(), fix_length(torch.ones(7), 5).shape
    ([1.0, 1.0, 1.0, 0.0, 0.0], torch.Size([5]))
    """
    if wav.shape[0] >= clip_samples:
        return wav[:clip_samples]
    return torch.nn.functional.pad(wav, (0, clip_samples - wav.shape[0]))


def read_clip(path: str, start: int, stop: int, clip_samples: int = CLIP_SAMPLES) -> torch.Tensor:
    """Samples ``start:stop`` of a mono file as a float32 tensor of ``clip_samples``."""
    try:
        data, _ = sf.read(path, start=int(start), stop=int(stop), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: cannot decode audio ({err})") from err
    return fix_length(torch.from_numpy(data[:, 0].copy()), clip_samples)


def label_encoder(labels_file: str | Path) -> CategoricalEncoder:
    """SpeechBrain's ``CategoricalEncoder`` with the classes of ``labels.txt``, in its order."""
    encoder = CategoricalEncoder()
    labels = Path(labels_file).read_text().split()
    encoder.update_from_iterable(labels)
    return encoder


def keyword_datasets(hparams: dict, splits=("train", "valid", "test")) -> tuple[dict, CategoricalEncoder]:
    """({split: DynamicItemDataset}, label encoder) from ``<prep_folder>/<split>.csv``; the
    optional ``test_other`` split (a second test list) joins the test split when prepared."""
    if "test" in splits and (Path(hparams["prep_folder"]) / "test_other.csv").is_file():
        splits = (*splits, "test_other")
    encoder = label_encoder(Path(hparams["prep_folder"]) / "labels.txt")
    clip_samples = hparams.get("clip_samples", CLIP_SAMPLES)

    @sb.utils.data_pipeline.takes("wav", "start", "stop")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav, start, stop):
        return read_clip(wav, start, stop, clip_samples)

    @sb.utils.data_pipeline.takes("label")
    @sb.utils.data_pipeline.provides("label_encoded")
    def label_pipeline(label):
        return torch.LongTensor([encoder.encode_label(label)])

    datasets = {}
    for split in splits:
        datasets[split] = sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=str(Path(hparams["prep_folder"]) / f"{split}.csv"),
            dynamic_items=[audio_pipeline, label_pipeline],
            output_keys=["id", "sig", "label_encoded"],
        )
    return datasets, encoder


def speech_crops(csv_path: str | Path, clip_samples: int = CLIP_SAMPLES,
                 sample_rate: int = 16000) -> sb.dataio.dataset.DynamicItemDataset:
    """Unlabelled ``clip_samples`` crops of the utterances of a speech manifest (``ID``,
    ``duration`` in seconds, ``wav``): item ``i`` is a crop of utterance ``i`` starting at a random
    sample (torch's generator: a new crop at every pass; shorter files are zero-padded). Items
    hold ``id`` and ``sig``, as the keyword datasets with their output keys set to those two.

    A file at another rate is refused with an :class:`AudioError` naming it (a crop of 1 s would
    silently hold another length of speech).
    """
    @sb.utils.data_pipeline.takes("wav", "duration")
    @sb.utils.data_pipeline.provides("sig")
    def crop_pipeline(wav, duration):
        try:
            rate = sf.info(wav).samplerate
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            raise AudioError(f"{wav}: cannot decode audio ({err})") from err
        if rate != sample_rate:
            raise AudioError(f"{wav}: sample rate {rate} Hz, expected {sample_rate} Hz for unlabelled crops")
        room = max(int(float(duration) * sample_rate) - clip_samples, 0)
        start = int(torch.randint(0, room + 1, (1,)))
        return read_clip(wav, start, start + clip_samples, clip_samples)

    return sb.dataio.dataset.DynamicItemDataset.from_csv(
        csv_path=str(csv_path), dynamic_items=[crop_pipeline], output_keys=["id", "sig"])


def keyword_scores(confusion, labels) -> dict:
    """Keyword accuracy (% of keyword clips given their keyword) and non-keyword rejection (% of
    ``_unknown_`` clips not taken for a keyword, i.e. called ``_unknown_`` or ``_silence_``) of a
    test confusion matrix (rows: true class, columns: predicted, in ``labels`` order).

    >>> labels = ["_silence_", "_unknown_", "yes", "no"]
    >>> confusion = [[5, 0, 0, 0], [1, 6, 3, 0], [0, 1, 8, 1], [0, 0, 0, 10]]
    >>> keyword_scores(confusion, labels)
    {'keyword_accuracy': 90.0, 'non_keyword_rejection': 70.0, 'keyword_clips': 20, 'non_keyword_clips': 10}
    """
    quiet = {labels.index(x) for x in (SILENCE, UNKNOWN) if x in labels}
    keywords = [i for i in range(len(labels)) if i not in quiet]
    hits = sum(confusion[i][i] for i in keywords)
    clips = sum(sum(confusion[i]) for i in keywords)
    unknown = labels.index(UNKNOWN) if UNKNOWN in labels else None
    others = sum(confusion[unknown]) if unknown is not None else 0
    rejected = sum(confusion[unknown][j] for j in quiet) if unknown is not None else 0
    return {"keyword_accuracy": round(100.0 * hits / clips, 2) if clips else None,
            "non_keyword_rejection": round(100.0 * rejected / others, 2) if others else None,
            "keyword_clips": clips, "non_keyword_clips": others}
