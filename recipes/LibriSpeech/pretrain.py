#!/usr/bin/env python3
"""Position-prediction pretraining (MP3 for speech) of an unpositioned speech encoder.

The encoder sees non-overlapping patches of filterbank frames with no position information;
a random subset of patches is kept as attention context (the only keys/values), and a linear
head classifies each patch's position in its utterance.

Usage (from this folder, or with the paths from the repository root)::

    python pretrain.py hparams/pp.yaml --data_folder=/path/to/LibriSpeech
    python pretrain.py hparams/pp_conformer.yaml --context_ratio=0.5
    torchrun --nproc_per_node=2 pretrain.py hparams/pp.yaml    # DDP (gloo on CPU)

The output folder holds ``encoder.ckpt`` (the encoder's weights, loaded by asr_ctc.py),
``train_log.txt``, ``valid_confusion.npy``, ``pretrain_summary.json`` (training time,
throughput, peak memory, FLOPs) and the checkpoints to resume from. ``--max_train_seconds=600``
stops training after 10 min of training time (validation excluded), as the benchmark does to
compare pretrainers at equal time; ``--snapshot_seconds=[300]`` also keeps the encoder as it was
after 5 min.
"""

import logging
import os
import sys

import numpy as np
import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process, run_on_main

from speechpos.position import PositionStats
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


class PositionPretrain(PretrainingBrain):
    """MP3 pretraining: loss, position accuracy and position error per epoch."""

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        feats = self.hparams.compute_features(wavs)
        feats = self.modules.normalize(feats, wav_lens)
        generator = self.valid_generator if stage != sb.Stage.TRAIN else None
        return self.modules.model(feats, wav_lens, generator)

    def compute_objectives(self, output, batch, stage):
        loss = self.hparams.position_loss.of_output(output, progress=self.progress)
        self.position_stats.append_output(output)
        return loss

    def on_stage_start(self, stage, epoch=None):
        super().on_stage_start(stage, epoch)
        self.position_stats = PositionStats(
            keep_pairs=self.hparams.confusion_pairs,
            chance="prior" if self.hparams.position_target == "relative" else "uniform",
        )
        self.valid_generator = torch.Generator().manual_seed(self.hparams.seed)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        super().on_stage_end(stage, stage_loss, epoch)
        self.position_stats.all_reduce()
        s = self.position_stats.summarize()
        stats = {
            "loss": stage_loss,
            "pos_acc": round(s["accuracy"], 4),
            "pos_err": round(s["position_error"], 3),
            "chance_acc": round(s["chance_accuracy"], 4),
            "chance_err": round(s["chance_position_error"], 3),
        }
        if stage == sb.Stage.TRAIN:
            stats["audio_s_per_s"] = self.stage_throughput()
            self.train_stats = stats
            return
        if stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"]
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(meta={"loss": stage_loss}, min_keys=["loss"])
            self.export()
            if if_main_process():
                np.save(
                    os.path.join(self.hparams.output_folder, "valid_confusion.npy"),
                    self.position_stats.confusion(self.hparams.confusion_positions),
                )


def dataio_prepare(hparams):
    """Train and valid datasets from the prepared CSVs."""
    min_samples = min_samples_for_patch(hparams["patch_frames"], sample_rate=hparams["sample_rate"])
    crop = hparams["crop_seconds"]
    crop_samples = None if crop is None else int(crop * hparams["sample_rate"])
    train = audio_dataset(
        hparams["train_csv"], hparams["sample_rate"], min_samples, crop_samples,
        sort=hparams["sorting"] if hparams["sorting"] != "random" else None,
    )
    # With crops, validation is cropped too (from a fixed seed) so both stages score the same task.
    valid = audio_dataset(
        hparams["valid_csv"], hparams["sample_rate"], min_samples, crop_samples, sort="ascending",
        generator=torch.Generator().manual_seed(hparams["seed"]),
    )
    return train, valid


def main(argv):
    run_opts, hparams = start_experiment(argv, __file__, "hparams/pp.yaml")
    run_on_main(prepare_speech_data, kwargs={"hparams": hparams})
    train, valid = dataio_prepare(hparams)

    brain = PositionPretrain(
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
