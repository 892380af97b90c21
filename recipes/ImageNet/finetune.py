#!/usr/bin/env python3
"""Fine-tune (or linearly probe) a ViT on an ImageFolder and report top-1 accuracy.

The encoder comes from ``pretrain.py`` (``--pretrained_path``), loaded strictly: a checkpoint
of another architecture fails with the keys and shapes that differ. Without
``pretrained_path`` the same ViT trains from scratch. Position information is a switch:
zero-initialised learnable position embeddings (``--position_embedding=True``) or none.
``--linear_probe=True`` freezes the encoder and trains only the classifier.

Usage::

    python recipes/ImageNet/finetune.py recipes/ImageNet/hparams/finetune.yaml \
        --data_folder=/path/to/imagenet --pretrained_path=results/ImageNet/pretrain/mp3/1986

Outputs in ``<output_folder>``: ``train_log.txt``, ``save/``, ``results.json`` (top-1 and
loss on the val split, from the last epoch's model: no checkpoint is selected on val).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import speechbrain as sb
import torch

from speechpos.recipes import start_experiment
from speechpos.vision.checkpoint import load_encoder_state
from speechpos.vision.data import imagefolder_datasets
from speechpos.vision.schedule import attach_scheduler


class ClassifierBrain(sb.core.Brain):
    """Image classification with a ViT and a mean-pooling classifier."""

    def on_fit_batch_start(self, batch, should_step):
        """Advance the warm-up/decay schedule once per optimiser step."""
        if should_step:
            self.hparams.scheduler(self.optimizer)

    def compute_forward(self, batch, stage):
        """Class logits; the frozen encoder of a linear probe runs without grad, in eval mode."""
        images = batch[0].to(self.device)
        if self.hparams.linear_probe:
            self.modules.vit.eval()
            with torch.no_grad():
                tokens = self.modules.vit(images)
        else:
            tokens = self.modules.vit(images)
        return self.modules.classifier(tokens)

    def compute_objectives(self, predictions, batch, stage):
        """Cross-entropy (label smoothing as configured); counts top-1 hits outside training."""
        labels = batch[1].to(self.device)
        if stage != sb.Stage.TRAIN:
            self.hits += int((predictions.argmax(-1) == labels).sum())
            self.count += labels.numel()
        return self.hparams.classification_loss(predictions, labels)

    def on_stage_start(self, stage, epoch=None):
        """Reset the top-1 counters."""
        self.hits, self.count = 0, 0

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log, checkpoint the latest epoch, write ``results.json`` after the final evaluation."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss}
            return
        stats = {"loss": stage_loss, "top1": self.hits / max(self.count, 1)}
        if stage == sb.Stage.VALID:
            meta = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
            self.hparams.train_logger.log_stats(
                meta, train_stats=self.train_stats, valid_stats=stats
            )
            self.checkpointer.save_and_keep_only(meta=stats, num_to_keep=1)
        else:
            self.hparams.train_logger.log_stats(
                {"Epoch loaded": self.hparams.epoch_counter.current}, test_stats=stats
            )
            Path(self.hparams.output_folder, "results.json").write_text(json.dumps(stats, indent=1))


def main(argv: list[str] | None = None) -> ClassifierBrain:
    """Run the recipe with command-line style arguments; returns the trained Brain."""
    run_opts, hparams = start_experiment(sys.argv[1:] if argv is None else argv, __file__, "hparams/finetune.yaml")
    datasets = imagefolder_datasets(hparams)
    if len(datasets["train"].classes) != hparams["num_classes"]:
        raise ValueError(
            f"{hparams['data_folder']} has {len(datasets['train'].classes)} classes "
            f"but num_classes is {hparams['num_classes']}"
        )
    if hparams["pretrained_path"]:
        load_encoder_state(hparams["vit"], hparams["pretrained_path"])
    if hparams["linear_probe"]:
        hparams["vit"].requires_grad_(False)
    batch = hparams["train_loader_kwargs"]["batch_size"]
    attach_scheduler(hparams, len(datasets["train"]) // batch)
    brain = ClassifierBrain(
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
    brain.evaluate(datasets["valid"], test_loader_kwargs=dict(hparams["valid_loader_kwargs"]))
    return brain


if __name__ == "__main__":
    main()
