"""Does a BEST-RQ pretraining use its encoder? Dev code accuracy as trained, and with the
encoder's outputs replaced by their mean.

Loads finished ``pretrain_bestrq.py`` runs (their ``hyperparams.yaml`` and last checkpoint) and
scores the masked-code accuracy on their validation data in evaluation mode, twice over the same
masks: once as trained, once with every output of the encoder body replaced by the mean output
of the batch, so that no token's content reaches the prediction. A model whose accuracy does not
fall is predicting the codes from something else (position, the codes' prior): its encoder gets
no useful gradient, and pretraining teaches it nothing.

Writes ``<docs>/<report>.md`` and ``.json`` (default ``bestrq_encoder_use``).

Usage::

    .venv/bin/python tools/studies/bestrq_encoder_use.py RUN [RUN ...] --names NAME [NAME ...] [--batches 15]
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
from pathlib import Path

import torch

from speechpos.experiments.bench import describe_machine
from speechpos.experiments.plots import markdown_table

ROOT = Path(__file__).resolve().parents[2]
MODES = ("as trained", "encoder outputs replaced by their mean")


def load_run(run: Path):
    """(hparams, model, features, normalize) of a finished pretrain_bestrq.py run, in eval mode."""
    from hyperpyyaml import load_hyperpyyaml

    if not (run / "hyperparams.yaml").is_file():
        raise SystemExit(f"{run}: no hyperparams.yaml here; give a pretrain_bestrq.py output folder")
    with open(run / "hyperparams.yaml", encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f)
    if not hasattr(hparams.get("model"), "quantizer"):
        raise SystemExit(f"{run}: not a BEST-RQ run (no quantiser in its model)")
    if hparams["checkpointer"].recover_if_possible() is None:
        raise SystemExit(f"{run}: no checkpoint under {hparams['save_folder']}")
    return hparams, hparams["model"].eval(), hparams["compute_features"], hparams["normalize"].eval()


@torch.no_grad()
def encoder_use(run: Path, batches: int = 15, batch_size: int = 8, seed: int = 0) -> dict:
    """Code accuracy (%) of each of :data:`MODES` on the first ``batches`` validation batches."""
    from speechbrain.dataio.dataloader import make_dataloader

    from speechpos.speech.data.dataio import audio_dataset

    hparams, model, features, normalize = load_run(run)
    data = audio_dataset(hparams["valid_csv"], hparams["sample_rate"], hparams["sample_rate"], sort="ascending")
    body = model.encoder.encoder
    result = {}
    for mode in MODES:
        def flatten(module, args, out):
            lengths = args[1]
            valid = torch.arange(out.shape[1])[None, :] < lengths[:, None]
            mean = out[valid].mean(0)
            return torch.where(valid[..., None], mean.expand_as(out), out)

        handle = body.register_forward_hook(flatten) if mode != MODES[0] else None
        torch.manual_seed(seed)  # the same masks in both modes (SpeechBrain's compute_mask draws
        random.seed(seed)        # its span count with Python's random)
        hits = total = 0
        try:
            for i, batch in enumerate(make_dataloader(data, batch_size=batch_size)):
                if i >= batches:
                    break
                wavs, lens = batch.sig
                logits, targets = model(normalize(features(wavs), lens), lens)
                hits += int((logits.argmax(-1) == targets).sum())
                total += targets.numel()
        finally:
            if handle is not None:
                handle.remove()
        result[mode] = round(100 * hits / max(total, 1), 2)
    result["targets"] = total
    result["drop_masked"] = bool(getattr(model, "drop_masked", False))
    decoder = getattr(model, "decoder", None)
    result["decoder"] = ("none (linear head)" if decoder is None
                         else "transformer" if decoder.position is not None else "convolution")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="pretrain_bestrq.py output folders")
    parser.add_argument("--names", nargs="+", help="a row name per run (default: folder names)")
    parser.add_argument("--batches", type=int, default=15, help="validation batches of 8 utterances")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--report", default="bestrq_encoder_use")
    args = parser.parse_args(argv)
    names = args.names or [r.name for r in args.runs]
    if len(names) != len(args.runs):
        parser.error(f"{len(args.runs)} runs but {len(names)} names")
    torch.set_num_threads(1)
    results = {n: encoder_use(r, args.batches) for n, r in zip(names, args.runs, strict=True)}
    table = markdown_table(
        ["pretraining", "masked patches dropped", "decoder", *[f"dev code acc. %, {m}" for m in MODES],
         "masked patches scored"],
        [[n, r["drop_masked"], r["decoder"], *[r[m] for m in MODES], r["targets"]] for n, r in results.items()])
    command = shlex.join(["python", "tools/studies/bestrq_encoder_use.py",
                          *[Path(a).name if Path(a).is_absolute() else a for a in (argv or sys.argv[1:])]])
    text = "\n".join([
        "# Does BEST-RQ pretraining use its encoder?", "",
        f"Each run's last checkpoint on the first {args.batches} validation batches of 8 utterances "
        "(dev-clean, shortest first), evaluation mode, the same masks in both columns. Replacing every "
        "output of the encoder body by the batch's mean output keeps no token's content: accuracy that "
        f"does not fall comes from elsewhere (position, the codes' prior). Machine: {describe_machine()}.", "",
        table, "", "Command:", "", "```bash", command, "```", ""])
    print(text)
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / f"{args.report}.md").write_text(text)
    (args.docs / f"{args.report}.json").write_text(json.dumps({"command": command, "runs": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
