#!/usr/bin/env python3
"""BEST-RQ pretraining of the same speech encoder as pretrain.py: the peer MP3 is compared to.

Masked spans of filterbank frames are replaced by noise, and the encoder (with a learnable
position embedding) predicts, for each masked 40 ms patch, the index that SpeechBrain's
random-projection quantiser gives the clean patch. Masking and quantiser come from
``speechbrain.lobes.models.BESTRQ`` and ``speechbrain.nnet.quantisers``; see
:mod:`speechpos.speech.bestrq`.

Usage (from this folder, or with the paths from the repository root)::

    python pretrain_bestrq.py hparams/bestrq.yaml --data_folder=/path/to/LibriSpeech
    python pretrain_bestrq.py hparams/bestrq.yaml --max_train_seconds=600   # equal-time runs
    python pretrain_bestrq.py hparams/bestrq.yaml --drop_masked=True --encoder_kind=conformer \
        --conv_mode=off     # masked patches dropped from the encoder: over twice the audio per second

With ``drop_masked`` the encoder runs on the kept patches only (MP3's gathered path) and a light
decoder predicts the masked codes; ``encoder.ckpt`` holds the encoder alone, loaded by
``asr_ctc.py`` as BEST-RQ's (with ``--pretrained_conv_mode=off`` for a conformer, whose
convolution is then switched on, zero-initialised).

Writes the same files as pretrain.py: ``encoder.ckpt`` (position embedding included; load it
with ``asr_ctc.py --pretrained_encoder=...``), ``train_log.txt`` (loss and masked-code accuracy)
and ``pretrain_summary.json``.
"""

import logging
import sys

import speechbrain as sb
import torch
from speechbrain.utils.distributed import run_on_main

from speechpos.recipes import (
    die,
    prepare_speech_data,
    start_experiment,
    train_loader_options,
    user_errors,
)
from speechpos.speech.data.audio import min_samples_for_patch
from speechpos.speech.data.dataio import audio_dataset
from speechpos.speech.pretraining import PretrainingBrain

logger = logging.getLogger(__name__)


class BestRQPretrain(PretrainingBrain):
    """Cross-entropy on the codes of the masked patches; accuracy of the predicted codes."""

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        feats = self.hparams.compute_features(wavs)
        feats = self.modules.normalize(feats, wav_lens)
        return self.modules.model(feats, wav_lens)

    def compute_objectives(self, predictions, batch, stage):
        logits, targets = predictions
        self.correct += int((logits.detach().argmax(-1) == targets).sum())
        self.predicted += targets.numel()
        return torch.nn.functional.cross_entropy(logits.float(), targets)

    def on_stage_start(self, stage, epoch=None):
        super().on_stage_start(stage, epoch)
        self.correct = 0
        self.predicted = 0

    def on_stage_end(self, stage, stage_loss, epoch=None):
        super().on_stage_end(stage, stage_loss, epoch)
        counts = torch.tensor([self.correct, self.predicted], dtype=torch.float64)
        if sb.utils.distributed.is_distributed_initialized():
            torch.distributed.all_reduce(counts)
        stats = {"loss": stage_loss, "code_acc": round(float(counts[0] / counts[1].clamp(min=1)), 4)}
        if stage == sb.Stage.TRAIN:
            stats["audio_s_per_s"] = self.stage_throughput()
            self.train_stats = stats
        elif stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(meta={"loss": stage_loss}, min_keys=["loss"])
            self.export()


def dataio_prepare(hparams):
    """Whole utterances, each at least one masked span long."""
    span_frames = hparams["patch_frames"] * hparams["mask_patches"]
    min_samples = min_samples_for_patch(span_frames, sample_rate=hparams["sample_rate"])
    sort = hparams["sorting"] if hparams["sorting"] != "random" else None
    train = audio_dataset(hparams["train_csv"], hparams["sample_rate"], min_samples, sort=sort)
    valid = audio_dataset(hparams["valid_csv"], hparams["sample_rate"], min_samples, sort="ascending")
    return train, valid


def main(argv):
    run_opts, hparams = start_experiment(argv, __file__, "hparams/bestrq.yaml")
    run_on_main(prepare_speech_data, kwargs={"hparams": hparams})
    train, valid = dataio_prepare(hparams)
    brain = BestRQPretrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        brain.hparams.epoch_counter,
        train,
        valid,
        train_loader_kwargs=train_loader_options(hparams, train),
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    brain.finish()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except user_errors() as err:
        die(str(err))
