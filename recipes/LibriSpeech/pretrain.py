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
``train_log.txt``, ``valid_confusion.npy`` and the checkpoints to resume from.
"""

import logging
import os
import sys
import time

import numpy as np
import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process, run_on_main

from speechpos.position import PositionStats
from speechpos.recipes import die, prepare_speech_data, start_experiment, user_errors
from speechpos.speech.audio import min_samples_for_patch
from speechpos.speech.dataio import audio_dataset

logger = logging.getLogger(__name__)


class PositionPretrain(sb.Brain):
    """MP3 pretraining: loss, position accuracy and position error per epoch."""

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        feats = self.hparams.compute_features(wavs)
        feats = self.modules.normalize(feats, wav_lens)
        generator = self.valid_generator if stage != sb.Stage.TRAIN else None
        logits, lengths, context = self.modules.model(feats, wav_lens, generator)
        self.audio_seconds += float((wav_lens * wavs.shape[1]).sum()) / self.hparams.sample_rate
        return logits, lengths, context

    def compute_objectives(self, predictions, batch, stage):
        logits, lengths, context = predictions
        loss = self.hparams.position_loss(logits, lengths, context, progress=self.progress)
        mask = self.hparams.position_loss.token_mask(lengths, logits.shape[1], context)
        self.position_stats.append(logits.detach(), lengths, mask)
        return loss

    @property
    def progress(self) -> float:
        """Fraction of training done, per epoch (sets the smoothing width)."""
        total = self.hparams.number_of_epochs
        return (self.hparams.epoch_counter.current - 1) / max(total - 1, 1)

    def on_stage_start(self, stage, epoch=None):
        self.position_stats = PositionStats(keep_pairs=self.hparams.confusion_pairs)
        self.valid_generator = torch.Generator().manual_seed(self.hparams.seed)
        self.audio_seconds = 0.0
        self.stage_start = time.time()

    def on_stage_end(self, stage, stage_loss, epoch=None):
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
            elapsed = max(time.time() - self.stage_start, 1e-9)
            stats["audio_s_per_s"] = round(self.audio_seconds / elapsed, 1)
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
            if if_main_process():
                self.export(epoch)

    def export(self, epoch):
        """Write the encoder for asr_ctc.py, and the validation confusion for the plots."""
        out = self.hparams.output_folder
        encoder = self.hparams.model.encoder
        torch.save(encoder.state_dict(), os.path.join(out, "encoder.ckpt"))
        torch.save(self.modules.normalize.state_dict(), os.path.join(out, "normalize.ckpt"))
        np.save(
            os.path.join(out, "valid_confusion.npy"),
            self.position_stats.confusion(self.hparams.confusion_positions),
        )

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        if should_step and hasattr(self.hparams, "lr_annealing"):
            self.hparams.lr_annealing(self.optimizer)


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
    run_opts, hparams = start_experiment(argv, __file__)
    run_on_main(prepare_speech_data, kwargs={"hparams": hparams})
    train, valid = dataio_prepare(hparams)

    brain = PositionPretrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    train_loader_kwargs = hparams["train_dataloader_opts"]
    if hparams["dynamic_batching"]:
        sampler = sb.dataio.sampler.DynamicBatchSampler(
            train,
            max_batch_length=hparams["max_batch_length_train"],
            num_buckets=hparams["num_buckets"],
            length_func=lambda x: x["duration"],
            shuffle=True,
            batch_ordering="random",
            max_batch_ex=hparams["max_batch_ex"],
        )
        train_loader_kwargs = {"batch_sampler": sampler, "num_workers": hparams["num_workers"]}
    brain.fit(
        brain.hparams.epoch_counter,
        train,
        valid,
        train_loader_kwargs=train_loader_kwargs,
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except user_errors() as err:
        die(str(err))
