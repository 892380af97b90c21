"""A trained keyword-spotting run as a SpeechBrain model folder: ``EncoderClassifier`` loads it.

:func:`export_keyword_run` writes, from the run's best checkpoint (highest validation
accuracy), a folder in the layout of SpeechBrain's own Speech Commands model:

- ``hyperparams.yaml``: the run's own definitions of ``compute_features``, ``normalize``,
  ``encoder`` and ``classifier`` (copied from the run's resolved ``hyperparams.yaml``, so every
  model the recipe builds, Keyword Transformer or x-vector, is exported the same way), then the
  modules ``EncoderClassifier`` calls: ``compute_features`` (:class:`ClipFeatures`: the loudest
  second of the audio, as :class:`~speechpos.inference.keyword.KeywordSpotter` takes it),
  ``mean_var_norm``, ``embedding_model`` (:class:`KeywordEmbedding`) and ``classifier``
  (:class:`LogProbabilities`), a ``label_encoder`` and the ``pretrainer`` that loads them;
- ``embedding_model.ckpt``, ``classifier.ckpt``, ``mean_var_norm.ckpt`` (SpeechBrain's
  ``InputNormalization`` statistics) and ``label_encoder.ckpt`` (SpeechBrain's
  ``CategoricalEncoder`` file, the run's class order);
- ``README.md``, a short model card.

Example (with a trained run)::

    speechpos export results/SpeechCommands/kwt/1986 models/kwt
    from speechbrain.inference.classifiers import EncoderClassifier
    clf = EncoderClassifier.from_hparams(source="models/kwt", savedir="pretrained/kwt")
    log_probs, score, index, label = clf.classify_file("yes.wav")
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from speechpos.inference.keyword import KeywordSpotter, loudest_window
from speechpos.speech.data.keyword_data import label_encoder
from speechpos.speech.keyword_model import class_scores

# The run's modules the exported folder needs, with what EncoderClassifier calls them.
MODEL_KEYS = ("compute_features", "normalize", "encoder", "classifier")

_INFERENCE_YAML = """\

# ---- EncoderClassifier's modules (written by `speechpos export` from {run}) ----
#   from speechbrain.inference.classifiers import EncoderClassifier
#   clf = EncoderClassifier.from_hparams(source=<this folder>, savedir=<a cache folder>)
#   log_probs, score, index, label = clf.classify_file("yes.wav")
sample_rate: {sample_rate}
clip_samples: {clip_samples}

clip_features: !new:speechpos.inference.keyword_export.ClipFeatures
    features: !ref <compute_features>
    clip_samples: !ref <clip_samples>

embedding_model: !new:speechpos.inference.keyword_export.KeywordEmbedding
    encoder: !ref <encoder>

log_probabilities: !new:speechpos.inference.keyword_export.LogProbabilities
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

audio_normalizer: !new:speechbrain.dataio.preprocess.AudioNormalizer
    sample_rate: !ref <sample_rate>

modules:
    compute_features: !ref <clip_features>
    mean_var_norm: !ref <normalize>
    embedding_model: !ref <embedding_model>
    classifier: !ref <log_probabilities>

# Each loadable is read from <source>/<name>.ckpt (SpeechBrain's default_source layout).
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <encoder>
        classifier: !ref <classifier>
        mean_var_norm: !ref <normalize>
        label_encoder: !ref <label_encoder>
"""


class ClipFeatures(torch.nn.Module):
    """Features of the loudest ``clip_samples`` of each waveform (zero-padded if shorter): the
    recipe's models see 1-s clips.

    >>> feats = ClipFeatures(torch.nn.Identity(), 4)
    >>> feats(torch.tensor([[0., 1., 3., 0., 0., 0.]])).tolist()
    [[0.0, 1.0, 3.0, 0.0]]
    """

    def __init__(self, features: torch.nn.Module, clip_samples: int = 16000):
        super().__init__()
        self.features, self.clip_samples = features, clip_samples

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        clips = torch.stack([loudest_window(w.cpu(), self.clip_samples) for w in wavs]).to(wavs.device)
        return self.features(clips)


class KeywordEmbedding(torch.nn.Module):
    """The recipe's encoder called as ``EncoderClassifier`` calls an embedding model,
    ``(feats, lengths)``; the clips are whole seconds, so the lengths are not needed."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(feats)


class LogProbabilities(torch.nn.Module):
    """The recipe's classifier with log-probabilities out, ``(batch, classes)``, as
    ``EncoderClassifier.classify_batch`` returns them."""

    def __init__(self, classifier: torch.nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(class_scores(self.classifier(embeddings)), dim=-1)


def model_blocks(yaml_text: str, keys=MODEL_KEYS) -> str:
    """The top-level blocks of a resolved ``hyperparams.yaml`` that define ``keys``, with the
    blocks their YAML aliases (``*idN``) point at, in file order.

    >>> text = "a: 1\\nx: &id001 !new:torch.nn.Identity\\nencoder: *id001\\nlr: 2\\n"
    >>> print(model_blocks(text, ["encoder"]).strip())
    x: &id001 !new:torch.nn.Identity
    encoder: *id001
    """
    blocks = re.split(r"\n(?=[^\s#])", yaml_text)
    name = [b.split(":", 1)[0] for b in blocks]
    anchor = {m.group(1): i for i, b in enumerate(blocks) for m in [re.match(r"[^:]+:\s*&(\w+)", b)] if m}
    wanted, todo = set(), [i for i, n in enumerate(name) if n in keys]
    while todo:
        i = todo.pop()
        if i in wanted:
            continue
        wanted.add(i)
        todo += [anchor[a] for a in re.findall(r"\*(\w+)", blocks[i]) if a in anchor]
    missing = [k for k in keys if k not in name]
    if missing:
        raise ValueError(f"hyperparams.yaml defines no {missing[0]!r}")
    return "\n".join(blocks[i].rstrip() + "\n" for i in sorted(wanted))


def export_keyword_run(run: str | Path, out: str | Path, command: str | None = None) -> Path:
    """Write a ``recipes/SpeechCommands/train.py`` run's best checkpoint as a folder that
    SpeechBrain's ``EncoderClassifier.from_hparams`` loads (see the module docstring)."""
    run, out = Path(run), Path(out)
    spotter = KeywordSpotter.from_run(run)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(spotter.encoder.state_dict(), out / "embedding_model.ckpt")
    torch.save(spotter.classifier.state_dict(), out / "classifier.ckpt")
    spotter.normalize._save(out / "mean_var_norm.ckpt")
    label_encoder(run / "labels.txt").save(out / "label_encoder.ckpt")
    text = (run / "hyperparams.yaml").read_text(encoding="utf-8")
    (out / "hyperparams.yaml").write_text(
        f"# A speechpos keyword spotter (the model part of {run / 'hyperparams.yaml'})\n\n"
        + model_blocks(text)
        + _INFERENCE_YAML.format(run=run, sample_rate=spotter.sample_rate, clip_samples=spotter.clip_samples),
        encoding="utf-8")
    results = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else {}
    card = ["# speechpos keyword spotter", "",
            f"Classes ({len(spotter.labels)}): {' '.join(spotter.labels)}", "",
            f"- encoder parameters: {sum(p.numel() for p in spotter.encoder.parameters())}",
            f"- source run: `{run}`"]
    for key in ("valid_accuracy", "test_accuracy", "test_other_accuracy"):
        if key in results:
            card.append(f"- {key.replace('_', ' ')}: {results[key]:.2f} %")
    card += ["", "```python", "from speechbrain.inference.classifiers import EncoderClassifier",
             'clf = EncoderClassifier.from_hparams(source="<this folder>", savedir="<a cache folder>")',
             'log_probs, score, index, label = clf.classify_file("yes.wav")', "```", "",
             "(`speechpos` must be installed: the model classes are its own.)", "",
             f"Made by: `{command or 'speechpos export ' + str(run)}`", ""]
    (out / "README.md").write_text("\n".join(card), encoding="utf-8")
    return out


__all__ = ["ClipFeatures", "KeywordEmbedding", "LogProbabilities", "export_keyword_run", "model_blocks"]
