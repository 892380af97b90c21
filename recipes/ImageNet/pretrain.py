#!/usr/bin/env python3
"""Position-prediction pretraining of a ViT on an ImageFolder: MP3, with DropPos options.

Each image is cut into patches with no position embedding; one random context of patches
supplies the keys/values of every layer; a linear head classifies every patch's position on
the patch grid. The step is the shared :class:`~speechpos.position.PositionPretext` (the
speech recipes' too), so its variants are switches here as well: DropPos anchors
(``anchor_ratio``), only a sample of the targets through the encoder (``target_ratio``),
relative targets (``position_target: relative``, offsets in raster order). DropPos' 2-D
position smoothing (``sigma_start``/``sigma_end``) and attentive reconstruction
(``attentive``) are switches too. Validation reports position accuracy and error (with their
chance levels) on the val split, with a fixed context per image.

Usage::

    python recipes/ImageNet/pretrain.py recipes/ImageNet/hparams/pretrain.yaml \
        --data_folder=/path/to/imagenet [--sigma_start=1.0] [--attentive=True]

Outputs in ``<output_folder>``: ``train_log.txt``, ``save/CKPT+*/vit.ckpt`` (the encoder that
``finetune.py`` loads), ``results.json`` (the last validation's position metrics).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import speechbrain as sb
import torch

from speechpos.position import PositionStats
from speechpos.recipes import start_experiment
from speechpos.vision.data import imagefolder_datasets
from speechpos.vision.schedule import attach_scheduler
from speechpos.vision.vit import attentive_weights

VALID_SEED = 0


class PositionPretrainBrain(sb.core.Brain):
    """MP3 position prediction on image patches."""

    def on_fit_start(self):
        """Refuse a layout or context grid that is not the ViT's real patch grid, a position
        embedding in the pretrained ViT, and smoothing of relative targets."""
        vit = self.hparams.vit
        coarse = self.hparams.pretext.coarse
        squares = tuple(-(-g // coarse) for g in vit.grid)  # the layout counts coarse classes
        for what, grid, expected in (
            ("position layout", self.hparams.layout.grid, squares),
            ("context sampler", self.hparams.pretext.sampler.grid, vit.grid),
        ):
            if tuple(grid) != expected:
                raise ValueError(f"{what} grid {tuple(grid)} differs from the ViT patch grid {vit.grid} "
                                 f"(expected {expected} with coarse: {coarse})")
        if vit.position_embedding is not None:
            raise ValueError("position-prediction pretraining needs a ViT without position embedding")
        if self.relative and (self.hparams.sigma_start > 0 or self.hparams.sigma_end > 0):
            raise ValueError("position smoothing works on grid positions, not on relative offsets: "
                             "set sigma_start and sigma_end to 0 with position_target: relative")
        super().on_fit_start()

    @property
    def relative(self) -> bool:
        return self.hparams.position_target == "relative"

    def on_fit_batch_start(self, batch, should_step):
        """Advance the warm-up/decay schedule once per optimiser step."""
        if should_step:
            self.hparams.scheduler(self.optimizer)

    def compute_forward(self, batch, stage):
        """The pretext's output on the image patches; attentive weights of its slots if on."""
        images = batch[0].to(self.device)
        generator = None if stage == sb.Stage.TRAIN else self.eval_generator
        weights = None
        if self.hparams.attentive and stage == sb.Stage.TRAIN:
            start = self._clock()
            weights = attentive_weights(self.hparams.vit, images, self.hparams.attentive_temperature)
            self.seconds["attentive_pass"] += self._clock() - start
        start = self._clock()
        tokens = self.modules.patches(images)
        lengths = torch.full((tokens.shape[0],), tokens.shape[1], device=self.device)
        output = self.modules.pretext(tokens, lengths, generator)
        self.seconds["masked_forward"] += self._clock() - start
        if weights is not None:
            weights = torch.gather(weights, 1, output.positions)
        return output, weights

    def compute_objectives(self, predictions, batch, stage):
        """Position cross-entropy (smoothed and weighted as configured)."""
        output, weights = predictions
        loss = self.hparams.position_loss.of_output(output, progress=self.progress, weights=weights)
        if stage != sb.Stage.TRAIN:
            self.position_stats.append_output(output)
        return loss

    def on_stage_start(self, stage, epoch=None):
        """Set the smoothing progress; fresh metrics and fixed contexts for evaluation."""
        if epoch is not None:
            self.progress = (epoch - 1) / self.hparams.number_of_epochs
        elif not hasattr(self, "progress"):
            self.progress = 1.0
        self.seconds = {"attentive_pass": 0.0, "masked_forward": 0.0}
        if stage != sb.Stage.TRAIN:
            # Relative targets are offsets: their chance is a guess from the offsets' own prior.
            self.position_stats = PositionStats(chance="prior") if self.relative else self.hparams.position_stats()
            self.eval_generator = torch.Generator().manual_seed(VALID_SEED)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log, checkpoint the latest epoch, write ``results.json``."""
        if stage == sb.Stage.TRAIN:
            seconds = {f"{k}_s": round(v, 2) for k, v in self.seconds.items() if v > 0}
            self.train_stats = {"loss": stage_loss, **seconds}
            return
        summary = self.position_stats.summarize()
        stats = {
            "loss": stage_loss,
            "position_accuracy": summary["accuracy"],
            "position_error": summary["position_error"],
            "chance_accuracy": summary["chance_accuracy"],
            "chance_position_error": summary["chance_position_error"],
        }
        if stage == sb.Stage.VALID:
            meta = {
                "epoch": epoch,
                "lr": self.optimizer.param_groups[0]["lr"],
                "sigma": self.hparams.position_loss.sigma(self.progress),
            }
            self.hparams.train_logger.log_stats(
                meta, train_stats=self.train_stats, valid_stats=stats
            )
            self.checkpointer.save_and_keep_only(meta=stats, num_to_keep=1)
        else:
            self.hparams.train_logger.log_stats(
                {"Epoch loaded": self.hparams.epoch_counter.current}, test_stats=stats
            )
        Path(self.hparams.output_folder, "results.json").write_text(json.dumps(stats, indent=1))

    def _clock(self) -> float:
        if self.device != "cpu" and torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()


def main(argv: list[str] | None = None) -> PositionPretrainBrain:
    """Run the recipe with command-line style arguments; returns the trained Brain."""
    run_opts, hparams = start_experiment(sys.argv[1:] if argv is None else argv, __file__, "hparams/pretrain.yaml")
    datasets = imagefolder_datasets(hparams)
    batch = hparams["train_loader_kwargs"]["batch_size"]
    attach_scheduler(hparams, len(datasets["train"]) // batch)
    brain = PositionPretrainBrain(
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
    return brain


if __name__ == "__main__":
    main()
