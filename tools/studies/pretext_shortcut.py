#!/usr/bin/env python3
"""Is the pretext solved by adjacency, or by the edges? Dev accuracy by distance to the nearest
anchor and to the crop edge.

Loads a finished position-prediction pretraining (a ``pretrain.py`` output folder of the
LibriSpeech or the SpeechCommands recipe: its ``hyperparams.yaml`` and last checkpoint) and
scores it on its validation data as the recipe validates it (dev-clean crops; the keyword
validation clips), in two ways:

1. **by distance**: accuracy of every scored target by the distance (in patches) from it to its
   nearest anchor: 1, 2, 3 or >= 4;
2. **by edge**: accuracy by the distance from the target to the nearer end of its crop (0, 1,
   2, 3, >= 4), also over the targets 4 or more patches from every anchor: zero padding in a
   convolution and the crop boundary leak absolute position near the edges;
3. **with a gap**: the same model scored only on targets with no context token within ±g
   patches (g = 0, 1, 2, 3; the pretext's ``min_gap`` switch), beside two chance levels: a
   uniform guess over the crop, and a guess uniform over the positions the gap leaves possible
   (those with no context token within ±g), which a model can tell from the anchors alone.

A patch that continues the spectrum of the anchor beside it is placed by low-level edge
continuity; what is left at >= 4 patches from every anchor cannot come from it.

Writes ``<docs>/<report>.md``, ``.json`` and ``.png`` (``--report``, default ``pretext_shortcut``).

With ``--train-epochs N`` the (single) run folder is first trained, or resumed from its last
checkpoint, with the study's pretext (``pp_conformer.yaml``, 2-s crops, batch 32, every context
token an anchor) on the bench corpus up to epoch N or ``--train-minutes`` of training time,
whichever comes first: the study's 20-minute pretext on its machine took about 2,900 steps.

Usage::

    .venv/bin/python tools/studies/pretext_shortcut.py results/pretext_probe/pretrain_mp3_anchors
    .venv/bin/python tools/studies/pretext_shortcut.py results/pretext_shortcut/anchors --train-epochs 23
    .venv/bin/python tools/studies/pretext_shortcut.py RUN_A RUN_B --names "MP3 + anchors" "views" --passes 3
    .venv/bin/python tools/studies/pretext_shortcut.py results/kws_benchmark/full/pretrain/mp3___anchors/0 \
        --report pretext_shortcut_keywords          # a keyword pretraining (SpeechCommands recipe)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]

from speechpos.experiments.plots import _pyplot, _save, markdown_table, tool_command, write_report  # noqa: E402

GAPS = (0, 1, 2, 3)


def nearest(points: torch.Tensor, marks: torch.Tensor) -> torch.Tensor:
    """(B, N) distance from each of ``points`` (B, N positions) to the nearest True of
    ``marks`` (B, T); a large number where an example has none.

    >>> nearest(torch.tensor([[0, 4]]), torch.tensor([[False, False, True, False, False]])).tolist()
    [[2, 2]]
    """
    t = torch.arange(marks.shape[1], device=marks.device)
    dist = (points[:, :, None] - t[None, None, :]).abs()
    return dist.masked_fill(~marks[:, None, :], 10**6).min(-1).values


BINS = {"1": (1, 1), "2": (2, 2), "3": (3, 3), ">=4": (4, 10**6 - 1)}
DISTANCES = tuple(BINS)


def distance_bins(positions, scored, hit, anchors, lengths) -> dict:
    """Per distance bin (1, 2, 3, >= 4 patches from the nearest anchor): [hits, scored targets,
    summed chance of a content-free guess that knows where the anchors are], the guess being
    uniform over the non-anchor positions at the target's own distance from its nearest anchor.

    One anchor at 2 of 5 tokens; targets at 0 (placed) and 3 (missed). Position 0 is one of the
    two positions 2 away (chance 1/2), position 3 one of the two 1 away:

    >>> bins = distance_bins(torch.tensor([[0, 3]]), torch.tensor([[True, True]]),
    ...                      torch.tensor([[True, False]]),
    ...                      torch.tensor([[False, False, True, False, False]]), torch.tensor([5]))
    >>> bins["1"], bins["2"], bins[">=4"]
    ([0, 1, 0.5], [1, 1, 0.5], [0, 0, 0.0])
    """
    dist = nearest(positions, anchors)
    length = anchors.shape[1]
    every = torch.arange(length, device=anchors.device).expand(anchors.shape[0], length)
    candidate = (every < lengths[:, None]) & ~anchors
    dist_every = nearest(every, anchors)
    out = {}
    for name, (lo, hi) in BINS.items():
        sel = scored & (dist >= lo) & (dist <= hi)
        same = (candidate & (dist_every >= lo) & (dist_every <= hi)).sum(1, keepdim=True)
        out[name] = [int((hit & sel).sum()), int(sel.sum()), float((sel / same.clamp(min=1)).sum())]
    return out


EDGE_BINS = {"0": (0, 0), "1": (1, 1), "2": (2, 2), "3": (3, 3), ">=4": (4, 10**6)}
EDGES = tuple(EDGE_BINS)


def edge_bins(positions, scored, hit, anchors, lengths) -> dict:
    """Per bin of distance to the nearer crop edge (0 = the first or last patch, 1, 2, 3, >= 4):
    [hits, scored targets, hits among targets >= 4 patches from every anchor, such targets].
    Zero padding in a convolution, or the crop boundary itself, tells a patch how far it is from
    the edge: accuracy that rises towards the edges, where no anchor is near, is that leak.

    A crop of 6 patches, one anchor at 5; targets at 0 (placed) and 2 (missed):

    >>> bins = edge_bins(torch.tensor([[0, 2]]), torch.tensor([[True, True]]), torch.tensor([[True, False]]),
    ...                  torch.tensor([[False, False, False, False, False, True]]), torch.tensor([6]))
    >>> bins["0"], bins["2"]
    ([1, 1, 1, 1], [0, 1, 0, 0])
    """
    edge = torch.minimum(positions, lengths[:, None] - 1 - positions)
    far = nearest(positions, anchors) >= 4
    out = {}
    for name, (lo, hi) in EDGE_BINS.items():
        sel = scored & (edge >= lo) & (edge <= hi)
        out[name] = [int((hit & sel).sum()), int(sel.sum()), int((hit & sel & far).sum()), int((sel & far).sum())]
    return out


def load_run(run: Path):
    """(hparams, model, features, normalize) of a finished pretrain.py run, last checkpoint,
    in evaluation mode (the normalisation keeps its saved statistics)."""
    from hyperpyyaml import load_hyperpyyaml

    if not (run / "hyperparams.yaml").is_file():
        raise SystemExit(f"{run}: no hyperparams.yaml here; give a pretrain.py output folder")
    with open(run / "hyperparams.yaml", encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f)
    if "model" not in hparams or not hasattr(hparams["model"], "pretext"):
        raise SystemExit(f"{run}: not a position-prediction run of pretrain.py (no pretext model)")
    if hparams["checkpointer"].recover_if_possible() is None:
        raise SystemExit(f"{run}: no checkpoint under {hparams['save_folder']}")
    return hparams, hparams["model"].eval(), hparams["compute_features"], hparams["normalize"].eval()


def is_keyword_run(model) -> bool:
    from speechpos.speech.keyword_model import KeywordPositionModel

    return isinstance(model, KeywordPositionModel)


def patch_ms(hparams, model) -> float:
    """Duration of one token (10-ms feature frames in both recipes)."""
    frames = model.encoder.patch_frames if is_keyword_run(model) else hparams["patch_frames"]
    return 10.0 * frames


def token_batches(hparams, model, features, normalize, batch_size: int, seed: int, generator):
    """(tokens, lengths) of the validation data, as the run's recipe validates it: dev-clean
    crops (speech), or the 1-s validation clips (keywords)."""
    from speechbrain.dataio.dataloader import make_dataloader

    if is_keyword_run(model):
        from speechpos.speech.data.keyword_data import keyword_datasets

        data = keyword_datasets(hparams, splits=("valid",))[0]["valid"]
    else:
        from speechpos.speech.data.audio import min_samples_for_patch
        from speechpos.speech.data.dataio import audio_dataset

        crop = hparams["crop_seconds"]
        data = audio_dataset(
            hparams["valid_csv"], hparams["sample_rate"],
            min_samples_for_patch(hparams["patch_frames"], sample_rate=hparams["sample_rate"]),
            None if crop is None else int(crop * hparams["sample_rate"]), sort="ascending",
            generator=torch.Generator().manual_seed(seed),
        )
    for batch in make_dataloader(data, batch_size=batch_size):
        wavs, lens = batch.sig
        yield model.tokens(normalize(features(wavs), lens), lens, generator)


@torch.no_grad()
def diagnose(run: Path, passes: int = 2, batch_size: int = 32, seed: int = 0) -> dict:
    """Accuracy by distance to the nearest anchor, and under each gap, over ``passes`` draws
    of contexts (and crops, for speech) of the validation data."""
    hparams, model, features, normalize = load_run(run)
    pretext = model.pretext
    if pretext.coarse != 1 or hparams.get("position_target", "absolute") != "absolute":
        raise SystemExit(f"{run}: the diagnosis scores absolute one-patch targets (coarse 1, absolute)")
    if pretext.anchor_ratio == 0:
        raise SystemExit(f"{run}: the pretext has no anchors to measure distances to")
    crop = hparams.get("crop_seconds")
    by_dist = {d: [0, 0, 0.0] for d in DISTANCES}  # hits, targets, summed chance given the anchors
    by_edge = {e: [0, 0, 0, 0] for e in EDGES}  # hits, targets; the same >= 4 patches from every anchor
    by_gap = {g: {"hits": 0, "n": 0, "uniform": 0.0, "gap_chance": 0.0} for g in GAPS}
    trained_gap = pretext.min_gap
    for p in range(passes):
        generator = torch.Generator().manual_seed(seed + p)
        for tokens, lengths in token_batches(hparams, model, features, normalize, batch_size,
                                             seed + 1000 * p, generator):
            length = tokens.shape[1]
            for g in GAPS:
                pretext.min_gap = g
                plan = pretext.plan(lengths, length, generator)
                out = pretext(tokens, lengths, plan=plan)
                hit = (out.logits.argmax(-1) == out.true) & out.mask
                stats = by_gap[g]
                stats["hits"] += int(hit.sum())
                stats["n"] += int(out.mask.sum())
                stats["uniform"] += float((out.mask.sum(1) / lengths).sum())
                if plan.context is not None:
                    possible = ~pretext.sampler.near(plan.context.mask, g) & (
                        torch.arange(length)[None, :] < lengths[:, None])
                    stats["gap_chance"] += float((out.mask.sum(1) / possible.sum(1).clamp(min=1)).sum())
                if g == 0:
                    for name, counts in distance_bins(out.positions, out.mask, hit, plan.anchors, lengths).items():
                        by_dist[name] = [a + b for a, b in zip(by_dist[name], counts, strict=True)]
                    for name, counts in edge_bins(out.positions, out.mask, hit, plan.anchors, lengths).items():
                        by_edge[name] = [a + b for a, b in zip(by_edge[name], counts, strict=True)]
    pretext.min_gap = trained_gap
    chance = by_gap[0]["uniform"] / max(by_gap[0]["n"], 1)
    return {
        "run": str(run),
        "data": "keyword validation clips" if is_keyword_run(model) else "dev-clean crops",
        "patch_ms": patch_ms(hparams, model),
        "crop_seconds": crop,
        "context_ratio": pretext.sampler.context_ratio,
        "anchor_ratio": pretext.anchor_ratio,
        "trained_min_gap": trained_gap,
        "chance_accuracy": round(100 * chance, 2),
        "by_distance": {d: {"accuracy": round(100 * h / max(n, 1), 2), "targets": n,
                            "share": round(100 * n / max(sum(v[1] for v in by_dist.values()), 1), 1),
                            "chance_given_anchors": round(100 * c / max(n, 1), 2)}
                        for d, (h, n, c) in by_dist.items()},
        "by_edge": {e: {"accuracy": round(100 * h / max(n, 1), 2), "targets": n,
                        "accuracy_far_from_anchors": round(100 * hf / max(nf, 1), 2), "targets_far_from_anchors": nf}
                    for e, (h, n, hf, nf) in by_edge.items()},
        "by_gap": {str(g): {"accuracy": round(100 * s["hits"] / max(s["n"], 1), 2), "targets": s["n"],
                            "chance_uniform": round(100 * s["uniform"] / max(s["n"], 1), 2),
                            "chance_given_gap": round(100 * s["gap_chance"] / max(s["n"], 1), 2)}
                   for g, s in by_gap.items()},
    }


def conclusion(name: str, r: dict) -> str:
    """One sentence per run, from the numbers."""
    d = r["by_distance"]
    gap3 = r["by_gap"]["3"]
    return (
        f"{name}: accuracy {d['1']['accuracy']} % on targets next to an anchor, {d['2']['accuracy']} % at 2 patches, "
        f"{d['3']['accuracy']} % at 3 and {d['>=4']['accuracy']} % at 4 or more (chance {r['chance_accuracy']} %"
        + (f"; a guess that knows the anchors: {d['1']['chance_given_anchors']} / {d['2']['chance_given_anchors']} / "
           f"{d['3']['chance_given_anchors']} / {d['>=4']['chance_given_anchors']} %" if "chance_given_anchors" in d['1'] else "")
        + "); "
        f"scored with no context within ±3 patches it places {gap3['accuracy']} % against "
        f"{gap3['chance_given_gap']} % for a guess among the positions that gap leaves possible."
        + (f" Far from every anchor (4+ patches), it places {r['by_edge']['0']['accuracy_far_from_anchors']} % "
           f"of the crops' first and last patches and {r['by_edge']['>=4']['accuracy_far_from_anchors']} % of "
           "those 4+ patches from the edges: the edge itself tells position." if "by_edge" in r else "")
    )


def plot(results: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(len(results), 1)
    for i, (name, r) in enumerate(results.items()):
        xs = [j + i * width for j in range(len(DISTANCES))]
        axes[0].bar(xs, [r["by_distance"][d]["accuracy"] for d in DISTANCES], width, label=name)
        if all("chance_given_anchors" in r["by_distance"][d] for d in DISTANCES):
            axes[0].plot(xs, [r["by_distance"][d]["chance_given_anchors"] for d in DISTANCES], "k_", ms=14)
        xs = [j + i * width for j in range(len(GAPS))]
        axes[1].bar(xs, [r["by_gap"][str(g)]["accuracy"] for g in GAPS], width, label=name)
        axes[1].plot(xs, [r["by_gap"][str(g)]["chance_given_gap"] for g in GAPS], "k_", ms=14)
    first = next(iter(results.values()))
    axes[0].axhline(first["chance_accuracy"], color="k", lw=0.8, label="chance (uniform)")
    axes[0].set_xticks([j + 0.4 - width / 2 for j in range(len(DISTANCES))], DISTANCES)
    axes[0].set_xlabel(f"distance to the nearest anchor ({first['patch_ms']:g}-ms patches)\n"
                       "black: a guess that knows the anchors")
    axes[0].set_ylabel("dev position accuracy %")
    axes[0].legend(fontsize=8)
    axes[1].set_xticks([j + 0.4 - width / 2 for j in range(len(GAPS))], [f"±{g}" for g in GAPS])
    axes[1].set_xlabel("scored only with no context token within\nblack: a guess that knows the gap")
    axes[1].set_ylabel("dev position accuracy %")
    return _save(fig, path, f"Position prediction on {first['data']}: placed by the neighbouring anchor?")


def train(run: Path, epochs: int, minutes: float | None, corpus: Path, size: str, threads: int,
          model: list[str]) -> None:
    """The study's MP3 + anchors pretext into ``run`` (resumed from its checkpoints)."""
    run, corpus = run.resolve(), corpus.resolve()  # the recipe runs from its own folder
    from speechpos.experiments.runs import (
        ANCHORS_PRETEXT,
        CONFORMER_BODY,
        Run,
        as_args,
        made_corpus,
        run_all,
    )

    prep = made_corpus(corpus, size, 1234, 2, run.parent / "prep")
    values = {**ANCHORS_PRETEXT, "dropout": 0.0, "lr": 0.001, "warmup_steps": 300, "seed": 0,
              "ckpt_interval_minutes": 0, "number_of_epochs": epochs,
              "max_train_seconds": None if minutes is None else minutes * 60}
    args = [f"--data_folder={corpus}", f"--prep_folder={prep}", "--skip_prep=True", *CONFORMER_BODY[:3],
            *as_args(values), *model]
    (run.parent / "logs").mkdir(parents=True, exist_ok=True)
    marker = "pretrain_done.json"
    if (run / marker).is_file():  # a finished run of another length resumes from its checkpoint
        (run / marker).rename(run / "pretrain_done.previous.json")
    run_all([Run(run.name, "pretrain.py", "hparams/pp_conformer.yaml", args, run, marker)], 1, threads,
            run.parent / "logs")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="pretrain.py output folders")
    parser.add_argument("--names", nargs="+", help="a row name per run (default: folder names)")
    parser.add_argument("--passes", type=int, default=2, help="draws of crops and contexts over dev")
    parser.add_argument("--note", default="", help="a sentence on the conditions, added to the report")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--report", default="pretext_shortcut", help="name of the <docs>/<report>.{md,json,png}")
    parser.add_argument("--train-epochs", type=int, help="first train (or resume) the run up to this epoch")
    parser.add_argument("--train-minutes", type=float, help="with --train-epochs: stop at this training time")
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "LibriSpeech-bench")
    parser.add_argument("--corpus-size", default="bench", help="make_corpus size if the corpus is missing")
    parser.add_argument("--model", default="", help="extra overrides for --train-epochs, in one argument: "
                        "--model='--num_layers=2 --d_model=32'")
    args = parser.parse_args(argv)
    if args.train_epochs is not None:
        if len(args.runs) != 1:
            parser.error("--train-epochs trains one run folder")
        train(args.runs[0], args.train_epochs, args.train_minutes, args.corpus, args.corpus_size, args.threads,
              args.model.split())
    names = args.names or [r.name for r in args.runs]
    if len(names) != len(args.runs):
        parser.error(f"{len(args.runs)} runs but {len(names)} names")
    torch.set_num_threads(args.threads)
    results = {n: diagnose(r, args.passes) for n, r in zip(names, args.runs, strict=True)}

    dist_table = markdown_table(
        ["run", *[f"acc % at {d} (chance given the anchors)" for d in DISTANCES],
         *[f"share % at {d}" for d in DISTANCES], "chance % (uniform)"],
        [[n, *[f"{r['by_distance'][d]['accuracy']} ({r['by_distance'][d]['chance_given_anchors']})" for d in DISTANCES],
          *[r["by_distance"][d]["share"] for d in DISTANCES], r["chance_accuracy"]] for n, r in results.items()])
    edge_table = markdown_table(
        ["run", *[f"acc % at {e} (>= 4 from every anchor)" for e in EDGES], "chance % (uniform)"],
        [[n, *[f"{r['by_edge'][e]['accuracy']} ({r['by_edge'][e]['accuracy_far_from_anchors']})" for e in EDGES],
          r["chance_accuracy"]] for n, r in results.items() if "by_edge" in r])
    gap_table = markdown_table(
        ["run", "gap", "dev acc %", "chance % (uniform)", "chance % (given the gap)", "acc / chance given gap",
         "targets"],
        [[n, f"±{g}", r["by_gap"][str(g)]["accuracy"], r["by_gap"][str(g)]["chance_uniform"],
          r["by_gap"][str(g)]["chance_given_gap"],
          round(r["by_gap"][str(g)]["accuracy"] / max(r["by_gap"][str(g)]["chance_given_gap"], 1e-9), 2),
          r["by_gap"][str(g)]["targets"]] for n, r in results.items() for g in GAPS])
    command = tool_command(__file__, [str(a) for a in argv or sys.argv[1:]])
    data = sorted({r["data"] for r in results.values()})
    patches = sorted({r["patch_ms"] for r in results.values()})
    setup = (
        f"Each run's last checkpoint scored on {' and '.join(data)} ({args.passes} draws of "
        "contexts and anchors (and of crops, for speech), as the recipe validates); distance in "
        f"{'/'.join(f'{p:g}' for p in patches)}-ms patches from each scored target to its nearest anchor; "
        "a gap ±g scores only targets with no context token within g patches."
        + (f" {args.note}" if args.note else "")
    )
    report = "\n\n".join([
        setup, "### Accuracy by distance to the nearest anchor", dist_table,
        "### Accuracy by distance to the crop edge",
        "Distance in patches from each scored target to the nearer end of its crop (0: the first or last "
        "patch); in brackets the same over targets 4 or more patches from every anchor, where adjacency "
        "cannot place them. Accuracy rising towards the edges there is position leaking from the edge "
        "(convolution padding, the crop boundary).", edge_table,
        "### Scored with a gap", gap_table,
        "### What it says", "\n".join(f"- {conclusion(n, r)}" for n, r in results.items()),
    ])
    args.docs.mkdir(parents=True, exist_ok=True)
    write_report(report, "", args.docs / f"{args.report}.md", title="Position pretext: accuracy against the "
                 "distance to the nearest anchor and to the crop edge", command=command)
    (args.docs / f"{args.report}.json").write_text(json.dumps({"setup": setup, "command": command, "runs": results}, indent=1))
    plot(results, args.docs / f"{args.report}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
