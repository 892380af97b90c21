#!/usr/bin/env python3
"""Keyword spotting on Speech Commands: a Keyword Transformer (or SpeechBrain's x-vector peer).

The model is whatever the hparams file builds: ``hparams/kwt.yaml`` a Keyword Transformer on
MFCC frame tokens (position signal ``learned`` zero-initialised, ``sinusoidal`` or ``none``;
``--pretrained_path`` loads an encoder from ``pretrain.py`` strictly), ``hparams/xvector.yaml``
SpeechBrain's x-vector classifier. Training keeps the checkpoint of the best validation
accuracy; it is scored on the validation and testing lists.

Usage::

    python recipes/SpeechCommands/train.py recipes/SpeechCommands/hparams/kwt.yaml \
        --data_folder=data/speech_commands [--position_embedding=none] \
        [--pretrained_path=results/SpeechCommands/pretrain/mp3/1986]
    python recipes/SpeechCommands/train.py recipes/SpeechCommands/hparams/xvector.yaml \
        --data_folder=data/speech_commands

Outputs in ``<output_folder>``: ``train_log.txt``, ``save/``, ``labels.txt`` (class order),
``results.json`` (``test_accuracy``, ``valid_accuracy`` in %, the test confusion matrix and its
keyword accuracy / non-keyword rejection; with a ``testing_other_list.txt`` in the data folder
also ``test_other_accuracy``, its confusion and scores).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import speechbrain as sb
import torch

from speechpos.position.checkpoint import load_encoder_state
from speechpos.recipes import ConfigError, die, prepare_keyword_data, start_experiment, user_errors
from speechpos.speech.data.keyword_data import keyword_datasets, keyword_scores
from speechpos.speech.keyword_augment import fixed_length, mixup
from speechpos.speech.keyword_model import class_scores
from speechpos.vision.schedule import attach_scheduler


class KeywordBrain(sb.core.Brain):
    """Classifies 1-s clips: features -> normalisation -> encoder -> classifier."""

    def on_fit_batch_start(self, batch, should_step):
        """Advance the warm-up/decay schedule once per optimiser step."""
        if should_step:
            self.hparams.scheduler(self.optimizer)

    def compute_forward(self, batch, stage):
        """Class logits of a batch; in training the hparams' augmentations first (speed, time
        shift, background noise, mixup on the waveform; time/frequency masks and warping on the
        features)."""
        wavs, lens = batch.sig
        wavs, lens = wavs.to(self.device), lens.to(self.device)
        self.mixed = None
        if stage == sb.Stage.TRAIN:
            wavs, lens = self.augment_waveforms(wavs, lens, batch)
        feats = self.modules.compute_features(wavs)
        feats = self.modules.normalize(feats, lens, epoch=self.hparams.epoch_counter.current)
        if stage == sb.Stage.TRAIN:
            if self.hparams.spec_drop is not None:
                feats = self.hparams.spec_drop(feats)
            if self.hparams.spec_augment:
                feats = self.hparams.time_warp(self.hparams.freq_drop(feats))
        return class_scores(self.modules.classifier(self.modules.encoder(feats)))

    def augment_waveforms(self, wavs, lens, batch):
        """Speed change, time shift, background noise on a random share of the clips, mixup."""
        hp = self.hparams
        if hp.speed_perturb:
            wavs = fixed_length(hp.speed_change(wavs), hp.clip_samples)
        if hp.time_shift is not None:
            wavs, lens = hp.time_shift(wavs, lens)
        if hp.noise_probability > 0:
            chosen = torch.rand(wavs.shape[0], device=wavs.device) < hp.noise_probability
            if chosen.any():
                wavs = torch.where(chosen[:, None], hp.add_noise(wavs, lens), wavs)
        if hp.mixup_alpha > 0:
            labels = batch.label_encoded[0].to(self.device).view(-1)
            wavs, other_labels, lam = mixup(wavs, labels, hp.mixup_alpha)
            self.mixed = (other_labels, lam)
        return wavs, lens

    def compute_objectives(self, predictions, batch, stage):
        """Cross-entropy (mixed as the clips were under mixup); counts hits (and the confusion
        matrix) outside training."""
        labels = batch.label_encoded[0].to(self.device).view(-1)
        if stage != sb.Stage.TRAIN:
            pred = predictions.argmax(-1)
            self.hits += int((pred == labels).sum())
            self.count += labels.numel()
            for t, p in zip(labels.tolist(), pred.tolist(), strict=True):
                self.confusion[t][p] += 1
        loss = self.hparams.classification_loss(predictions, labels)
        if stage == sb.Stage.TRAIN and self.mixed is not None:
            other_labels, lam = self.mixed
            loss = lam * loss + (1.0 - lam) * self.hparams.classification_loss(predictions, other_labels)
        return loss

    def on_stage_start(self, stage, epoch=None):
        """Reset the counters."""
        self.hits, self.count = 0, 0
        n = self.hparams.num_classes
        self.confusion = [[0] * n for _ in range(n)]

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log; keep the checkpoint of the best validation accuracy."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss}
            return
        accuracy = 100.0 * self.hits / max(self.count, 1)
        stats = {"loss": stage_loss, "accuracy": accuracy}
        if stage == sb.Stage.VALID:
            meta = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
            self.hparams.train_logger.log_stats(meta, train_stats=self.train_stats, valid_stats=stats)
            self.checkpointer.save_and_keep_only(
                meta={"error": 100.0 - accuracy}, min_keys=["error"], num_to_keep=1
            )
        else:
            self.hparams.train_logger.log_stats(
                {"split": self.eval_split, "Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )
            self.scores[self.eval_split] = {**stats, "confusion": self.confusion}


def check_augmentation(hparams):
    """The augmentation switches hold what they switch (a bare ``--speed_perturb`` on the command
    line reaches the yaml as null, which would silently train without it)."""
    for key in ("speed_perturb", "spec_augment"):
        if not isinstance(hparams[key], bool):
            raise ConfigError(f"{key} must be True or False, got {hparams[key]!r} (write --{key}=True)")
    if not isinstance(hparams["noise_probability"], (int, float)) or not 0 <= hparams["noise_probability"] <= 1:
        raise ConfigError(f"noise_probability must be a number in [0, 1], got {hparams['noise_probability']!r}")
    if not isinstance(hparams["mixup_alpha"], (int, float)) or hparams["mixup_alpha"] < 0:
        raise ConfigError(f"mixup_alpha must be a number >= 0 (0: off), got {hparams['mixup_alpha']!r}")


def dataio_prepare(hparams):
    """Prepare the CSVs (main process only) and build the datasets."""
    prepare_keyword_data(hparams)
    datasets, encoder = keyword_datasets(hparams)
    if len(encoder) != hparams["num_classes"]:
        raise ConfigError(
            f"{hparams['prep_folder']}/labels.txt has {len(encoder)} classes but num_classes is "
            f"{hparams['num_classes']} (12 for task 12; 30 or 35 for task all)"
        )
    shutil.copy(Path(hparams["prep_folder"]) / "labels.txt", Path(hparams["output_folder"]) / "labels.txt")
    return datasets, encoder


def main(argv: list[str] | None = None) -> KeywordBrain:
    """Run the recipe with command-line style arguments; returns the trained Brain."""
    run_opts, hparams = start_experiment(sys.argv[1:] if argv is None else argv, __file__, "hparams/kwt.yaml")
    check_augmentation(hparams)
    datasets, encoder = dataio_prepare(hparams)
    if hparams.get("pretrained_path"):
        load_encoder_state(hparams["encoder"], hparams["pretrained_path"], name="encoder")
    batch = hparams["train_loader_kwargs"]["batch_size"]
    attach_scheduler(hparams, len(datasets["train"]) // batch)
    brain = KeywordBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        hparams["epoch_counter"],
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=dict(hparams["train_loader_kwargs"]),
        valid_loader_kwargs=dict(hparams["valid_loader_kwargs"]),
    )
    brain.scores = {}
    for split in ("valid", "test", "test_other"):
        if split in datasets:
            brain.eval_split = split
            brain.evaluate(datasets[split], min_key="error", test_loader_kwargs=dict(hparams["valid_loader_kwargs"]))
    results = {
        "test_accuracy": brain.scores["test"]["accuracy"],
        "valid_accuracy": brain.scores["valid"]["accuracy"],
        "test_loss": brain.scores["test"]["loss"],
        "labels": [encoder.decode_ndim(i) for i in range(len(encoder))],
        "confusion": brain.scores["test"]["confusion"],
        "parameters": sum(p.numel() for p in hparams["modules"]["encoder"].parameters()),
    }
    results["test_keyword_scores"] = keyword_scores(results["confusion"], results["labels"])
    if "test_other" in brain.scores:
        results.update(test_other_accuracy=brain.scores["test_other"]["accuracy"],
                       test_other_confusion=brain.scores["test_other"]["confusion"],
                       test_other_keyword_scores=keyword_scores(brain.scores["test_other"]["confusion"],
                                                                results["labels"]))
    Path(hparams["output_folder"], "results.json").write_text(json.dumps(results, indent=1))
    return brain


if __name__ == "__main__":
    try:
        main()
    except user_errors() as err:
        die(str(err))
