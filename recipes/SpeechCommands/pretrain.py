#!/usr/bin/env python3
"""MP3 position-prediction pretraining of a Keyword Transformer on Speech Commands clips.

Labels are not used: the training clips (``train.csv``, silence and unknown included) are cut
into frame-patch tokens with no position signal; one random context of ``context_ratio`` of
the tokens supplies the keys/values of every layer; a linear head classifies each token's
position among the clip's tokens (49 for 1 s with 2-frame patches). DropPos' 1-D Gaussian
position smoothing is ``--sigma_start`` (linear to ``sigma_end`` over the epochs); DropPos-style
anchors (``--anchor_ratio``: that fraction of the context keeps a sinusoidal position signal
and carries no loss) and relative targets (``--position_target=relative``) are the shared
pretext's switches (:class:`speechpos.position.PositionPretext`). ``--unlabelled_csv``: a
speech manifest (``ID, duration, wav``, e.g. a LibriSpeech preparation's ``train.csv``) whose
utterances join the clips as unlabelled 1-s crops, a fresh random crop of each at every epoch.
Validation reports position accuracy and its chance level on the validation list with a
fixed context per clip.

Usage::

    python recipes/SpeechCommands/pretrain.py recipes/SpeechCommands/hparams/pretrain.yaml \
        --data_folder=data/speech_commands [--sigma_start=1.0]

Outputs in ``<output_folder>``: ``train_log.txt``, ``save/CKPT+*/encoder.ckpt`` (what
``train.py --pretrained_path`` loads), ``results.json`` (the last validation's position
metrics and the clips and unlabelled crops of an epoch, written when training ends).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch

from speechpos.recipes import die, prepare_keyword_data, start_experiment, user_errors
from speechpos.speech.data.keyword_data import keyword_datasets, speech_crops
from speechpos.vision.schedule import attach_scheduler

VALID_SEED = 0


class KeywordPositionBrain(sb.core.Brain):
    """MP3 position prediction on MFCC frame-patch tokens of 1-s clips."""

    def on_fit_batch_start(self, batch, should_step):
        """Advance the warm-up/decay schedule once per optimiser step."""
        if should_step:
            self.hparams.scheduler(self.optimizer)

    def compute_forward(self, batch, stage):
        """The pretext's prediction for every clip (a fixed context per clip in evaluation)."""
        wavs, lens = batch.sig
        wavs, lens = wavs.to(self.device), lens.to(self.device)
        feats = self.modules.compute_features(wavs)
        feats = self.modules.normalize(feats, lens, epoch=self.hparams.epoch_counter.current)
        generator = None if stage == sb.Stage.TRAIN else self.eval_generator
        return self.modules.model(feats, generator)

    def compute_objectives(self, output, batch, stage):
        """Position cross-entropy (smoothed as configured)."""
        loss = self.hparams.position_loss.of_output(output, progress=self.progress)
        if stage != sb.Stage.TRAIN:
            self.position_stats.append_output(output)
        return loss

    def on_stage_start(self, stage, epoch=None):
        """Set the smoothing progress; fresh metrics and fixed contexts for evaluation."""
        if epoch is not None:
            self.progress = (epoch - 1) / self.hparams.number_of_epochs
        elif not hasattr(self, "progress"):
            self.progress = 1.0
        if stage != sb.Stage.TRAIN:
            chance = "prior" if self.hparams.position_target == "relative" else "uniform"
            self.position_stats = self.hparams.position_stats(chance=chance)
            self.eval_generator = torch.Generator().manual_seed(VALID_SEED)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log, checkpoint the latest epoch, write ``results.json``."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss}
            return
        summary = self.position_stats.summarize()
        stats = {
            "loss": stage_loss,
            "position_accuracy": summary["accuracy"],
            "position_error": summary["position_error"],
            "chance_accuracy": summary["chance_accuracy"],
            "chance_position_error": summary["chance_position_error"],
        }
        meta = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"],
                "sigma": self.hparams.position_loss.sigma(self.progress)}
        self.hparams.train_logger.log_stats(meta, train_stats=self.train_stats, valid_stats=stats)
        self.checkpointer.save_and_keep_only(meta=stats, num_to_keep=1)
        self.last_stats = stats


def main(argv: list[str] | None = None) -> KeywordPositionBrain:
    """Run the recipe with command-line style arguments; returns the trained Brain."""
    run_opts, hparams = start_experiment(
        sys.argv[1:] if argv is None else argv, __file__, "hparams/pretrain.yaml"
    )
    prepare_keyword_data(hparams)
    datasets, _ = keyword_datasets(hparams, splits=("train", "valid"))
    train_loader_kwargs = dict(hparams["train_loader_kwargs"])
    items = {"clips": len(datasets["train"]), "unlabelled_crops": 0}
    if hparams.get("unlabelled_csv"):
        datasets["train"].set_output_keys(["id", "sig"])
        crops = speech_crops(hparams["unlabelled_csv"], hparams["clip_samples"], hparams["sample_rate"])
        datasets["train"] = torch.utils.data.ConcatDataset([datasets["train"], crops])
        items["unlabelled_crops"] = len(crops)
        train_loader_kwargs["collate_fn"] = PaddedBatch  # SpeechBrain's, as for one DynamicItemDataset
    batch = train_loader_kwargs["batch_size"]
    attach_scheduler(hparams, len(datasets["train"]) // batch)
    brain = KeywordPositionBrain(
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
        train_loader_kwargs=train_loader_kwargs,
        valid_loader_kwargs=dict(hparams["valid_loader_kwargs"]),
    )
    # Written once training is over: its presence marks a finished run (tools/studies/kws_benchmark.py).
    results = {**brain.last_stats, "train_items_per_epoch": items}
    Path(hparams["output_folder"], "results.json").write_text(json.dumps(results, indent=1))
    return brain


if __name__ == "__main__":
    try:
        main()
    except user_errors() as err:
        die(str(err))
