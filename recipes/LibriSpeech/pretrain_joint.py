#!/usr/bin/env python3
"""The joint objective: BEST-RQ masked prediction + λ x position prediction in one step.

One conformer learns both pretexts (:mod:`speechpos.speech.joint`): BEST-RQ on whole
utterances with its position embedding, and position prediction with anchors on 2-s chunks of
the same features with no position signal; ``loss = BEST-RQ + position_weight x position``.

With ``hparams/joint_dropped.yaml`` both objectives share *one* encoder pass instead
(:class:`~speechpos.speech.joint.DroppedJointModel`): BEST-RQ's kept patches, each with the
anchors' position signal, are the attention context; a share of the masked patches enter as
position queries (never keys/values); a light decoder predicts the masked codes from the
context encodings. That encoder has no position embedding and its convolution is off: fine-tune
it as the position pretrainers' (``asr_ctc.py ... --pretrained_conv_mode=off``).

Usage (from this folder, or with the paths from the repository root)::

    python pretrain_joint.py hparams/joint.yaml --data_folder=/path/to/LibriSpeech
    python pretrain_joint.py hparams/joint.yaml --position_weight=1.0 --max_train_seconds=900
    python pretrain_joint.py hparams/joint_dropped.yaml --data_folder=/path/to/LibriSpeech

Writes what pretrain_bestrq.py writes (``encoder.ckpt`` with the position embedding: fine-tune
with ``asr_ctc.py ... --position_embedding=learned --pretrained_conv_mode=on``), and logs both
pretexts: masked-code accuracy, and position accuracy and error beside their chance levels.
"""

import logging
import sys

import speechbrain as sb
import torch
from pretrain_bestrq import dataio_prepare  # the same data as BEST-RQ alone: whole utterances
from speechbrain.utils.distributed import run_on_main

from speechpos.position import PositionStats
from speechpos.recipes import (
    die,
    prepare_speech_data,
    start_experiment,
    train_loader_options,
    user_errors,
)
from speechpos.speech.pretraining import PretrainingBrain

logger = logging.getLogger(__name__)


class JointPretrain(PretrainingBrain):
    """BEST-RQ cross-entropy + ``position_weight`` x the position loss."""

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        feats = self.hparams.compute_features(wavs)
        feats = self.modules.normalize(feats, wav_lens)
        generator = self.valid_generator if stage != sb.Stage.TRAIN else None
        return self.modules.model(feats, wav_lens, generator)

    def compute_objectives(self, output, batch, stage):
        self.correct += int((output.code_logits.detach().argmax(-1) == output.code_targets).sum())
        self.predicted += output.code_targets.numel()
        self.position_stats.append_output(output.position)
        masked = torch.nn.functional.cross_entropy(output.code_logits.float(), output.code_targets)
        position = self.hparams.position_loss.of_output(output.position)
        self.loss_parts[0] += float(masked.detach())
        self.loss_parts[1] += float(position.detach())
        self.loss_parts[2] += 1
        return masked + self.hparams.position_weight * position

    def on_stage_start(self, stage, epoch=None):
        super().on_stage_start(stage, epoch)
        self.correct = 0
        self.predicted = 0
        self.loss_parts = [0.0, 0.0, 0]
        self.position_stats = PositionStats(keep_pairs=0)
        self.valid_generator = torch.Generator().manual_seed(self.hparams.seed)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        super().on_stage_end(stage, stage_loss, epoch)
        counts = torch.tensor([self.correct, self.predicted, *self.loss_parts], dtype=torch.float64)
        if sb.utils.distributed.is_distributed_initialized():
            torch.distributed.all_reduce(counts)
        self.position_stats.all_reduce()
        s = self.position_stats.summarize()
        batches = max(float(counts[4]), 1.0)
        stats = {
            "loss": stage_loss,
            "code_loss": round(float(counts[2]) / batches, 4),
            "pos_loss": round(float(counts[3]) / batches, 4),
            "code_acc": round(float(counts[0] / counts[1].clamp(min=1)), 4),
            "pos_acc": round(s["accuracy"], 4),
            "pos_err": round(s["position_error"], 3),
            "chance_acc": round(s["chance_accuracy"], 4),
            "chance_err": round(s["chance_position_error"], 3),
        }
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


def main(argv):
    run_opts, hparams = start_experiment(argv, __file__, "hparams/joint.yaml")
    if hparams["position_weight"] < 0:
        die(f"position_weight must be >= 0, got {hparams['position_weight']}")
    run_on_main(prepare_speech_data, kwargs={"hparams": hparams})
    train, valid = dataio_prepare(hparams)
    brain = JointPretrain(
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
