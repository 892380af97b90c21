"""Keyword-spotting benchmark: position-prediction pretraining vs scratch vs SpeechBrain's x-vector.

Makes (or reuses) a Speech Commands-layout corpus (``tools/data/make_kws_corpus.py``), prepares the
12-class task once, then runs every row of the table for every seed with the recipes of
``recipes/SpeechCommands`` as subprocesses (:func:`speechpos.experiments.runs.run_all`, 1 torch
thread each, ``--jobs`` at a time; a finished run, ``results.json`` present, is kept, so an
interrupted benchmark resumes):

* scratch, PE / scratch, no PE: the Keyword Transformer trained from random weights;
* MP3, zero-init PE / MP3, no PE: fine-tuned from MP3 position-prediction pretraining on the
  training clips (no labels);
* DropPos smoothing, zero-init PE: the same with DropPos' 1-D Gaussian position smoothing;
* MP3 + anchors, zero-init PE: pretrained with DropPos-style anchors (every context token
  keeps a sinusoidal position signal; the loss is on the other tokens);
* SpeechBrain x-vector: SpeechBrain's own Speech Commands model on the same data.

Writes ``<docs>/kws_results.md`` (mean ± std over seeds, the targets checked),
``<docs>/kws_results.json`` (``rows``: one object per row and seed) and
``<docs>/kws_confusion.png`` (test confusion of the best position-prediction row, summed over
seeds; with ``--held-out-engine`` also ``kws_confusion_held_out.png``). ``--report NAME`` names
the files, ``--report-only`` writes them from the finished runs.

``--held-out-engine flite`` makes the corpus without flite voices in training and scores every
row on them too; ``--rows augmentation`` runs the augmentation rows (scratch with none, each
augmentation alone and all of them; the pretrained rows and the x-vector with all of them).

Usage::

    .venv/bin/python tools/studies/kws_benchmark.py --preset full     # ~1 h on 2 cores (estimate)
    .venv/bin/python tools/studies/kws_benchmark.py --preset quick --data /tmp/kws --out /tmp/kws_bench \
        --docs /tmp/kws_docs                                   # plumbing check, about a minute
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from speechpos.corpora.speech_commands import foreign_kws_corpus, make_kws_corpus
from speechpos.experiments.plots import (
    markdown_table,
    mean_std,
    plot_class_confusion,
    plot_hits_and_rejection,
    repo_relative,
    tool_command,
)
from speechpos.experiments.runs import Run, run_all, seed_limits
from speechpos.speech.data.keyword_data import keyword_scores
from speechpos.speech.data.speech_commands import prepare_speech_commands

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes" / "SpeechCommands"

PRESETS = {
    "full": {
        "corpus": "default",
        "seeds": [0, 1, 2],
        "model": {"d_model": 64, "num_layers": 4, "nhead": 4, "d_ffn": 192, "batch_size": 64},
        "pretrain": {"number_of_epochs": 30, "lr": 0.001, "warmup_epochs": 2},
        "finetune": {"number_of_epochs": 20, "lr": 0.001, "warmup_epochs": 1},
        "xvector": {"number_of_epochs": 20, "tdnn_channels": 128, "emb_dim": 128, "batch_size": 64},
    },
    "quick": {
        "corpus": "tiny",
        "seeds": [0],
        "model": {"d_model": 32, "num_layers": 2, "nhead": 4, "d_ffn": 64, "batch_size": 16},
        "pretrain": {"number_of_epochs": 2, "lr": 0.003, "warmup_epochs": 0},
        "finetune": {"number_of_epochs": 2, "lr": 0.003, "warmup_epochs": 0},
        "xvector": {"number_of_epochs": 2, "tdnn_channels": 16, "emb_dim": 16, "batch_size": 16},
    },
}

UNLABELLED = "MP3 + anchors, clips + unlabelled speech"
PRETRAININGS = {
    "MP3": {},
    "DropPos smoothing": {"sigma_start": 1.0, "sigma_end": 0.0},
    # Every context token keeps a sinusoidal position; the loss is on the other tokens.
    "MP3 + anchors": {"anchor_ratio": 1.0},
    # The speech study's best position pretext (coarse spans, docs/pretraining_study.md): the class
    # is one of 7 spans of 7 tokens (140 ms), with anchors.
    "MP3 + anchors, coarse 7": {"anchor_ratio": 1.0, "coarse": 7},
    # The same pretext on the training clips plus 1-s crops of unlabelled speech of other voices
    # and texts (--unlabelled-speech; the manifest is filled in when the runs are planned).
    UNLABELLED: {"anchor_ratio": 1.0, "unlabelled_csv": None},
}

# Training-time augmentations of the keyword recipes (hparams switches), one ablation row each.
AUGMENTATIONS = {
    "noise": {"noise_probability": 0.8},    # _background_noise_ at 0-20 dB SNR, 80 % of the clips
    "speed": {"speed_perturb": True},       # 90 / 100 / 110 % speed
    "SpecAugment": {"spec_augment": True},  # frequency masks and time warping
    "mixup": {"mixup_alpha": 0.4},
}
ALL_AUGMENTATION = {k: v for aug in AUGMENTATIONS.values() for k, v in aug.items()}
AUGMENTED = "all augmentation"

# (row name, hparams file, pretraining or None, overrides)
ROWS = [
    ("scratch, PE", "kwt.yaml", None, {"position_embedding": "learned"}),
    ("scratch, no PE", "kwt.yaml", None, {"position_embedding": "none"}),
    ("MP3, zero-init PE", "kwt.yaml", "MP3", {"position_embedding": "learned"}),
    ("MP3, no PE", "kwt.yaml", "MP3", {"position_embedding": "none"}),
    ("DropPos smoothing, zero-init PE", "kwt.yaml", "DropPos smoothing", {"position_embedding": "learned"}),
    ("MP3 + anchors, zero-init PE", "kwt.yaml", "MP3 + anchors", {"position_embedding": "learned"}),
    ("SpeechBrain x-vector", "xvector.yaml", None, {}),
]
# --rows augmentation: what each augmentation buys (scratch), then every augmentation together
# for scratch, the position-prediction rows and the x-vector.
AUGMENTATION_ROWS = [
    ("scratch, PE", "kwt.yaml", None, {"position_embedding": "learned"}),
    *[(f"scratch, PE, + {name}", "kwt.yaml", None, {"position_embedding": "learned", **aug})
      for name, aug in AUGMENTATIONS.items()],
    (f"scratch, PE, {AUGMENTED}", "kwt.yaml", None, {"position_embedding": "learned", **ALL_AUGMENTATION}),
    (f"MP3, no PE, {AUGMENTED}", "kwt.yaml", "MP3", {"position_embedding": "none", **ALL_AUGMENTATION}),
    (f"MP3 + anchors, zero-init PE, {AUGMENTED}", "kwt.yaml", "MP3 + anchors",
     {"position_embedding": "learned", **ALL_AUGMENTATION}),
    (f"MP3 + anchors, coarse 7, zero-init PE, {AUGMENTED}", "kwt.yaml", "MP3 + anchors, coarse 7",
     {"position_embedding": "learned", **ALL_AUGMENTATION}),
    ("SpeechBrain x-vector", "xvector.yaml", None, {}),
    (f"SpeechBrain x-vector, {AUGMENTED}", "xvector.yaml", None, dict(ALL_AUGMENTATION)),
]
# --rows longer: the all-augmentation rows trained LONGER x the preset's epochs (fine-tuning and
# the x-vector's training; the pretrainings are the augmentation rows' own). Augmentation leaves
# the transformer underfitted at the preset's epochs (in distribution it loses 7.6 points).
# The report holds the augmentation rows too (their finished runs are kept, not rerun).
LONGER = 3
LONGER_ROWS = AUGMENTATION_ROWS + [
    (f"{name}, {LONGER}x epochs", hparams, pre, {**overrides, "epochs_factor": LONGER})
    for name, hparams, pre, overrides in AUGMENTATION_ROWS
    if name.endswith(AUGMENTED) and (pre is None or pre == "MP3 + anchors")
]
# --rows stronger: the longer rows and a transformer of KWT-1's shape (Berg et al. 2021: d 64,
# 12 layers, 1 head, MLP 256; the preset's is 4 layers, 4 heads, MLP 192) with all augmentation,
# at the preset's epochs (3.5x the parameters; its label smoothing, 0.1, is every KWT row's).
KWT1_SHAPE = {"num_layers": 12, "nhead": 1, "d_ffn": 256}
STRONGER_ROWS = LONGER_ROWS + [
    (f"scratch, PE, KWT-1 shape (12 layers, 1 head), {AUGMENTED}", "kwt.yaml", None,
     {"position_embedding": "learned", **ALL_AUGMENTATION, "model": KWT1_SHAPE}),
]
# --rows unlabelled: does pretraining on more unlabelled speech than labels pay (pretrained on the
# clips alone and on clips + speech crops, against scratch, all augmentation, at the preset's and
# LONGER x the epochs), and which augmentation makes the transformer take non-keywords for
# keywords (each alone, all of them, all but mixup), with keyword accuracy and non-keyword
# rejection reported apart.
NO_MIXUP = {k: v for name, aug in AUGMENTATIONS.items() if name != "mixup" for k, v in aug.items()}
_UNLABELLED_TRAINED = [
    (f"scratch, PE, {AUGMENTED}", "kwt.yaml", None, {"position_embedding": "learned", **ALL_AUGMENTATION}),
    (f"MP3 + anchors, zero-init PE, {AUGMENTED}", "kwt.yaml", "MP3 + anchors",
     {"position_embedding": "learned", **ALL_AUGMENTATION}),
    (f"{UNLABELLED}, zero-init PE, {AUGMENTED}", "kwt.yaml", UNLABELLED,
     {"position_embedding": "learned", **ALL_AUGMENTATION}),
]
UNLABELLED_ROWS = AUGMENTATION_ROWS[:5] + _UNLABELLED_TRAINED + [
    ("scratch, PE, all augmentation but mixup", "kwt.yaml", None, {"position_embedding": "learned", **NO_MIXUP}),
    *[(f"{name}, {LONGER}x epochs", hparams, pre, {**overrides, "epochs_factor": LONGER})
      for name, hparams, pre, overrides in _UNLABELLED_TRAINED],
    (f"SpeechBrain x-vector, {AUGMENTED}", "xvector.yaml", None, dict(ALL_AUGMENTATION)),
]
# --rows false_alarms: the unlabelled set's scratch rows alone (no pretraining): which augmentation
# makes the transformer take non-keywords for keywords. Same folders, so its runs are kept for it.
FALSE_ALARM_ROWS = [row for row in UNLABELLED_ROWS if row[0].startswith("scratch") and "epochs_factor" not in row[3]]
ROW_SETS = {"position": ROWS, "augmentation": AUGMENTATION_ROWS, "longer": LONGER_ROWS,
            "stronger": STRONGER_ROWS, "unlabelled": UNLABELLED_ROWS, "false_alarms": FALSE_ALARM_ROWS}
POSITION_ROWS = [name for name, _, pre, _ in ROWS if pre]


def slug(name: str) -> str:
    """A folder name for a row.

    >>> slug("MP3, zero-init PE")
    'mp3__zero_init_pe'
    """
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def plan_runs(preset: dict, seeds: list[int], data: Path, out: Path,
              limits: dict[str, list[int]] | None = None, rows=ROWS,
              unlabelled_csv: Path | None = None) -> tuple[list[Run], list[Run]]:
    """(first phase: pretrainings and rows that need none; second phase: fine-tunes);
    ``limits`` maps a pretraining to the only seeds it (and the rows from it) runs with; only
    the pretrainings that ``rows`` fine-tune from are run; ``unlabelled_csv`` is the speech
    manifest of the pretraining on unlabelled speech."""
    limits = limits or {}
    common = {"data_folder": data, "prep_folder": out / "prep", "skip_prep": True,
              "noprogressbar": True, "num_workers": 0}
    used = {pre for _, _, pre, _ in rows if pre}
    first, second = [], []
    for seed in seeds:
        for pre, overrides in PRETRAININGS.items():
            if pre not in used or seed not in limits.get(pre, [seed]):
                continue
            args = {**common, **preset["model"], **preset["pretrain"], **overrides, "seed": seed}
            if "unlabelled_csv" in args:
                if unlabelled_csv is None:
                    raise ValueError(f"{pre}: needs a speech manifest (unlabelled_csv)")
                args["unlabelled_csv"] = unlabelled_csv
            first.append(_run(f"pretrain {pre} {seed}", "pretrain.py", "pretrain.yaml", args,
                              out / "pretrain" / slug(pre) / str(seed), {"seed": seed}))
        for name, hparams, pre, overrides in rows:
            if pre and seed not in limits.get(pre, [seed]):
                continue
            overrides = dict(overrides)
            factor = overrides.pop("epochs_factor", 1)
            model = overrides.pop("model", {})  # the row's own model shape over the preset's
            args = {**common, **overrides, "seed": seed}
            if hparams == "kwt.yaml":
                args.update({**preset["model"], **preset["finetune"], **model})
            else:
                args.update(preset["xvector"])
            args["number_of_epochs"] = args["number_of_epochs"] * factor
            if pre:
                args["pretrained_path"] = out / "pretrain" / slug(pre) / str(seed)
            run = _run(f"{name} {seed}", "train.py", hparams, args, out / slug(name) / str(seed),
                       {"row": name, "seed": seed, "pretraining": pre})
            (second if pre else first).append(run)
    return first, second


def unlabelled_manifest(corpus: Path, split: str, path: Path, held_out_engine: str | None = None) -> tuple[Path, float]:
    """(manifest, hours): the utterances of ``corpus/split`` (LibriSpeech layout; transcripts not
    used) as a SpeechBrain CSV, without the speakers whose voice comes from the held-out engine
    (the ``engine/voice/...`` column of ``SPEAKERS.TXT`` that ``tools/data/make_corpus.py``
    writes; a real LibriSpeech has none, and nothing is left out)."""
    from speechpos.corpora.librispeech import read_speakers
    from speechpos.speech.data.librispeech import read_csv, read_split, write_csv

    if not path.is_file():
        rows = read_split(corpus / split, progress=False)
        excluded = {spk for spk, v in read_speakers(corpus).items() if held_out_engine and v["engine"] == held_out_engine}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_csv([r for r in rows if r.spk_id not in excluded], path)
    return path, sum(r.duration for r in read_csv(path)) / 3600


def _run(name, script, hparams, args, folder, info) -> Run:
    # Every override as --key=value (a bare --key would reach the yaml as null); noprogressbar is
    # SpeechBrain's own flag.
    flags = [f"--{k}={v}" for k, v in args.items() if k != "noprogressbar"]
    flags += ["--noprogressbar"] if args.get("noprogressbar") else []
    return Run(slug(name), str(RECIPES / script), str(RECIPES / "hparams" / hparams), flags,
               folder, "results.json", info)


def collect(runs: list[Run]) -> list[dict]:
    """One JSON row per fine-tuned model and seed."""
    rows = []
    for run in runs:
        if "row" not in run.info:
            continue
        res = json.loads((run.out / "results.json").read_text())
        row = {"name": run.info["row"], "seed": run.info["seed"],
               "test_accuracy": res["test_accuracy"], "valid_accuracy": res["valid_accuracy"],
               "wall_s": run_seconds(run.out), "parameters": res.get("parameters")}
        if "test_other_accuracy" in res:
            row["test_other_accuracy"] = res["test_other_accuracy"]
        for split, confusion in (("test", "confusion"), ("test_other", "test_other_confusion")):
            if confusion in res:
                scores = keyword_scores(res[confusion], res["labels"])
                row[f"{split}_keyword_accuracy"] = scores["keyword_accuracy"]
                row[f"{split}_non_keyword_rejection"] = scores["non_keyword_rejection"]
        if run.info["pretraining"]:
            pre = json.loads((Path(res_path(run)) / "results.json").read_text())
            row["pretraining"] = run.info["pretraining"]
            row["dev_position_accuracy"] = 100.0 * pre["position_accuracy"]
            row["chance_position_accuracy"] = 100.0 * pre["chance_accuracy"]
        row["_confusion"], row["_labels"] = res["confusion"], res["labels"]
        if "test_other_confusion" in res:
            row["_confusion_other"] = res["test_other_confusion"]
        rows.append(row)
    return rows


def run_seconds(folder: Path) -> float | None:
    """Wall time of a finished run: from SpeechBrain's ``env.log`` (written at the start) to
    ``results.json`` (since the last start, for a resumed run)."""
    start, end = folder / "env.log", folder / "results.json"
    if not (start.is_file() and end.is_file()):
        return None
    return round(end.stat().st_mtime - start.stat().st_mtime, 1)


def res_path(run: Run) -> str:
    """The pretraining folder a fine-tune run loaded."""
    return next(a.split("=", 1)[1] for a in run.args if a.startswith("--pretrained_path="))


def fmt(values: list[float]) -> str:
    """mean ± sample std (ddof 1).

    >>> fmt([90.0, 92.0]), fmt([50.0])
    ('91.00 ± 1.41', '50.00')
    """
    return mean_std(values, 2)


def mean_of(rows: list[dict], name: str, key: str = "test_accuracy") -> float | None:
    values = [r[key] for r in rows if r["name"] == name and key in r]
    return statistics.mean(values) if values else None


def targets(rows: list[dict]) -> list[str]:
    """The benchmark's goals, each checked on the means (with each row's seed count)."""
    scratch, xvec = mean_of(rows, "scratch, PE"), mean_of(rows, "SpeechBrain x-vector")
    mp3_nope = mean_of(rows, "MP3, no PE")
    present = [n for n in POSITION_ROWS if mean_of(rows, n) is not None]
    best_pp = max(present, key=lambda n: mean_of(rows, n))
    best_acc = mean_of(rows, best_pp)

    def seeds_of(name):
        return len({r["seed"] for r in rows if r["name"] == name})

    def mark(ok: bool) -> str:
        return "met" if ok else "NOT met"

    ratios = {n: mean_of(rows, n, "dev_position_accuracy") / mean_of(rows, n, "chance_position_accuracy")
              for n in present}
    best_pretext = max(ratios, key=ratios.get)
    out = ["- pretext dev position accuracy / chance: "
           + ", ".join(f"{n} {mean_of(rows, n, 'dev_position_accuracy'):.1f} % ({ratios[n]:.1f}x)"
                       for n in present)
           + f"; best {ratios[best_pretext]:.1f}x (target >= 10x): {mark(ratios[best_pretext] >= 10)}"]
    reduction = 100.0 * (1 - (100 - best_acc) / max(100 - scratch, 1e-9))
    out.append(f"- best position-prediction row ({best_pp}, {seeds_of(best_pp)} seed(s)) has {reduction:.0f} % "
               f"fewer test errors than scratch with PE (target >= 25 %): {mark(reduction >= 25)}")
    out.append(f"- MP3, no PE {mp3_nope:.2f} vs scratch, PE {scratch:.2f}: {mark(mp3_nope > scratch)}")
    out.append(f"- scratch, PE below 97 % ({scratch:.2f}): {mark(scratch < 97)}")
    out.append(f"- best position-prediction row ({best_pp}) {best_acc:.2f} >= x-vector peer {xvec:.2f}: "
               f"{mark(best_acc >= xvec)}")
    counts = {n: seeds_of(n) for n, *_ in ROWS if seeds_of(n)}
    fewest = min(counts, key=counts.get)
    out.append(f"- seeds per row: {min(counts.values())} to {max(counts.values())} (fewest: {fewest}; "
               f"target >= 3): {mark(min(counts.values()) >= 3)}")
    return out


def augmentation_targets(rows: list[dict]) -> list[str]:
    """The targets of the held-out-engine benchmark (``--rows augmentation``), on the means."""
    def stats(name, key="test_accuracy"):
        values = [r[key] for r in rows if r["name"] == name and key in r]
        if not values:
            return None
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)

    def mark(ok: bool) -> str:
        return "met" if ok else "NOT met"

    def show(st) -> str:
        return f"{st[0]:.2f} (1 seed)" if st[2] == 1 else f"{st[0]:.2f} ± {st[1]:.2f} ({st[2]} seeds)"

    names = list(dict.fromkeys(r["name"] for r in rows))
    out = []
    if any("test_other_accuracy" in r for r in rows):
        kwt = [n for n in names if not n.startswith("SpeechBrain") and stats(n, "test_other_accuracy")]
        xvec = [n for n in names if n.startswith("SpeechBrain") and stats(n, "test_other_accuracy")]
        if kwt and xvec:
            best = max(kwt, key=lambda n: stats(n, "test_other_accuracy")[0])
            peer = max(xvec, key=lambda n: stats(n, "test_other_accuracy")[0])
            b, x = stats(best, "test_other_accuracy"), stats(peer, "test_other_accuracy")
            out.append(f"- held-out engine: best transformer row ({best}) {show(b)} "
                       f">= the better x-vector ({peer}) {show(x)}: {mark(b[0] >= x[0])}")
        def scratch_peer(name):  # same augmentation and training length: "all augmentation[, 3x epochs]"
            return "scratch, PE, " + name[name.index(AUGMENTED):]

        position = [n for n in names if AUGMENTED in n and not n.startswith(("scratch", "SpeechBrain"))
                    and stats(n, "test_other_accuracy") and stats(scratch_peer(n), "test_other_accuracy")]

        def fewer_errors(name):
            acc, scratch = stats(name, "test_other_accuracy")[0], stats(scratch_peer(name), "test_other_accuracy")[0]
            return acc, scratch, 100.0 * (1 - (100 - acc) / max(100 - scratch, 1e-9))

        if position:
            best = max(position, key=lambda n: stats(n, "test_other_accuracy")[0])
            acc, scratch, fewer = fewer_errors(best)
            out.append(f"- held-out engine: best position-prediction row ({best}) {acc:.2f} against scratch with "
                       f"the same augmentation {scratch:.2f}: {fewer:.0f} % fewer errors (target >= 25 %): "
                       f"{mark(fewer >= 25)}")
            others = [n for n in position if n != best]
            if others:
                out.append("- held-out engine, the other position-prediction rows against scratch trained alike: "
                           + "; ".join("{} {:.2f} against {:.2f}: {:.0f} % fewer errors".format(n, *fewer_errors(n))
                                       for n in others))
    kwt = [n for n in names if not n.startswith("SpeechBrain")]
    if kwt:
        best = max(kwt, key=lambda n: stats(n)[0])
        out.append(f"- in distribution: best transformer row ({best}) {stats(best)[0]:.2f} (target >= 99 %): "
                   f"{mark(stats(best)[0] >= 99)}")
    for name in names:
        base = name.split(", + ")[0] if ", + " in name else name.removesuffix(f", {AUGMENTED}")
        if base == name or not stats(base) or not stats(name):
            continue
        (a, sd, n), (b, _, _) = stats(name), stats(base)
        if n == 1 and b > a:
            out.append(f"- in distribution, {name} loses {b - a:.2f} points to {base} ({a:.2f} against {b:.2f}); "
                       "one seed, so no seed std to hold it against yet")
        elif b - a > sd:
            out.append(f"- in distribution, {name} loses {b - a:.2f} points to {base} ({a:.2f} against {b:.2f}), "
                       f"more than its seed std {sd:.2f}")
    if not any("loses" in line for line in out):
        out.append("- in distribution: no augmented row loses more than its seed std to its row without augmentation")
    split = "test_other" if any("test_other_accuracy" in r for r in rows) else "test"
    rejection, where = f"{split}_non_keyword_rejection", "held-out engine" if split == "test_other" else "test"
    alone = [n for n in names if n == "scratch, PE" or n.startswith("scratch, PE, + ")
             or n in (f"scratch, PE, {AUGMENTED}", "scratch, PE, all augmentation but mixup")]
    alone = [n for n in alone if stats(n, rejection)]
    if len(alone) > 1:
        worst = min(alone, key=lambda n: stats(n, rejection)[0])
        out.append(f"- non-keywords rejected ({where}), scratch: "
                   + "; ".join(f"{n.removeprefix('scratch, PE').lstrip(', ') or 'no augmentation'} "
                               f"{stats(n, rejection)[0]:.1f} %" for n in alone)
                   + f"; fewest rejected: {worst}")
    for factor in ("", f", {LONGER}x epochs"):
        name, peer = f"{UNLABELLED}, zero-init PE, {AUGMENTED}{factor}", f"scratch, PE, {AUGMENTED}{factor}"
        key = f"{split}_accuracy" if split == "test_other" else "test_accuracy"
        a, b, rej = stats(name, key), stats(peer, key), stats(name, rejection)
        if a and b and rej:
            ok = a[0] - b[0] >= 5 and rej[0] >= 80
            out.append(f"- {where}{factor}: {name} {show(a)} against {peer} {show(b)}: "
                       f"{a[0] - b[0]:+.2f} points (target >= +5 at {LONGER}x the epochs), non-keywords rejected "
                       f"{rej[0]:.1f} % (target >= 80 %): {mark(ok)}")
    return out


def write_report(rows: list[dict], docs: Path, setup: str, preset: str, row_set=ROWS,
                 name: str = "kws_results", command: str = "", rewritten_by: str = "") -> None:
    """<name>.md / .json and kws_confusion.png (kws_results: the rows of ``row_set``)."""
    docs.mkdir(parents=True, exist_ok=True)
    other = any("test_other_accuracy" in r for r in rows)
    split = "test_other" if other else "test"
    scored = any(f"{split}_non_keyword_rejection" in r for r in rows)
    table = []
    for row, *_ in row_set:
        mine = [r for r in rows if r["name"] == row]
        pos = [r["dev_position_accuracy"] for r in mine if "dev_position_accuracy" in r]
        chance = [r["chance_position_accuracy"] for r in mine if "chance_position_accuracy" in r]
        held = [fmt([r["test_other_accuracy"] for r in mine if "test_other_accuracy" in r])] if other else []
        size = [f"{mine[0]['parameters'] / 1e3:.0f} k" if mine and mine[0].get("parameters") else "-",
                fmt([r["wall_s"] / 60 for r in mine if r.get("wall_s")])]
        apart = [fmt([r[f"{split}_{key}"] for r in mine if r.get(f"{split}_{key}") is not None])
                 for key in ("keyword_accuracy", "non_keyword_rejection")] if scored else []
        table.append([row, fmt([r["test_accuracy"] for r in mine]), *held, *apart,
                      fmt([r["valid_accuracy"] for r in mine]),
                      fmt(pos), fmt(chance), *size, len(mine)])
    # the confusion of the best position-prediction row (of the best row where none pretrains)
    position_rows = [n for n, _, pre, _ in row_set if pre]
    best = max(position_rows or [n for n, *_ in row_set], key=lambda n: mean_of(rows, n) or -1.0)
    best_rows = [r for r in rows if r["name"] == best]
    confusion_png = "kws_confusion.png" if name == "kws_results" else f"{name}_confusion.png"
    held_out_png = confusion_png.replace(".png", "_held_out.png")
    if best_rows and all("_confusion" in r for r in best_rows):  # not in a report rewritten from its json
        confusion = np.sum([np.array(r["_confusion"]) for r in best_rows], axis=0)
        plot_class_confusion(confusion, best_rows[0]["_labels"], docs / confusion_png,
                             title=f"{best}: test confusion, summed over {len(best_rows)} seed(s)")
        if all("_confusion_other" in r for r in best_rows):
            confusion = np.sum([np.array(r["_confusion_other"]) for r in best_rows], axis=0)
            plot_class_confusion(confusion, best_rows[0]["_labels"], docs / held_out_png,
                                 title=f"{best}: held-out engine, {len(best_rows)} seed(s)")
    where = "held-out engine" if other else "test"
    trade_png = f"{name}_hits_and_rejection.png"
    if scored:
        points = {}
        for row, *_ in row_set:
            mine = [r for r in rows if r["name"] == row and r.get(f"{split}_non_keyword_rejection") is not None]
            if mine:
                points[row] = tuple(statistics.mean(r[f"{split}_{k}"] for r in mine)
                                    for k in ("keyword_accuracy", "non_keyword_rejection"))
        plot_hits_and_rejection(points, docs / trade_png, title=f"{where}: keyword hits against false alarms")
    headers = ["model", "test accuracy % (mean ± sample std)", *(["held-out engine test %"] if other else []),
               *([f"{where}: keywords right %", f"{where}: non-keywords rejected %"] if scored else []),
               "valid accuracy %",
               "pretext dev position acc. %", "chance %", "encoder parameters", "training min (1 thread; pretrained rows: fine-tuning only)", "seeds"]
    checks = targets(rows) if row_set is ROWS else augmentation_targets(rows)
    text = "\n".join([
        ("# Keyword spotting: position-prediction pretraining vs scratch (Speech Commands layout)" if position_rows
         else "# Keyword spotting from scratch (Speech Commands layout)"),
        "", setup, "", markdown_table(headers, table), "",
        *([f"Keywords right: the {where} keyword clips given their keyword; non-keywords rejected: its "
           "`_unknown_` clips called `_unknown_` or `_silence_`, not taken for a keyword (the rest are false "
           f"alarms). The two against each other, a point per row: `{trade_png}`.", ""] if scored else []),
        "Checks on the means (± is the sample std over "
        "seeds):", "", *checks, "",
        f"Confusion matrix of the best {'position-prediction ' if position_rows else ''}"
        f"row: `{confusion_png}` ({best})"
        + (f"; on the held-out engine: `{held_out_png}`." if other else "."), "",
        *(["## Command", "", "```bash", command, "```", ""] if command else []),
        *([f"This page was rewritten from its json by `{rewritten_by}`.", ""] if rewritten_by else []),
    ])
    (docs / f"{name}.md").write_text(text)
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    (docs / f"{name}.json").write_text(json.dumps({"preset": preset, "setup": setup, "command": command,
                                                   "rows": public}, indent=1))
    print(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--data", help="Speech Commands folder: yours is used as it is; made if absent (default data/kws_<size>)")
    parser.add_argument("--out", help="run folders (default results/kws_benchmark/<preset>)")
    parser.add_argument("--docs", default=str(ROOT / "docs"), help="where the md/json/png go")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--limit", action="append", default=[], metavar="PRETRAINING=SEED[,SEED]",
                        help="run this pretraining and its rows with these seeds only, e.g. 'MP3 + anchors=0'")
    parser.add_argument("--corpus-seed", type=int, default=1234)
    parser.add_argument("--held-out-engine", choices=["espeak-ng", "flite", "festival"],
                        help="make the corpus without this engine's voices in training and report every row "
                             "also on them (testing_other_list.txt; default data: data/kws_<size>_<engine>)")
    parser.add_argument("--rows", choices=sorted(ROW_SETS), default="position",
                        help="position: the position-prediction rows; augmentation: what each training "
                             "augmentation buys, then all of them for scratch, the pretrained rows and the x-vector; "
                             f"longer: scratch, MP3 + anchors and the x-vector with all augmentation for {LONGER}x "
                             "the epochs; stronger: the longer rows and a transformer of KWT-1's shape; "
                             "unlabelled: pretraining on clips + unlabelled speech against clips alone and "
                             "scratch, and which augmentation causes false alarms; false_alarms: the latter alone "
                             "(scratch with each augmentation, all, all but mixup)")
    parser.add_argument("--unlabelled-speech", default=str(ROOT / "data" / "LibriSpeech-bench"),
                        help="--rows unlabelled: a LibriSpeech-layout corpus whose --unlabelled-split utterances "
                             "(voices of the held-out engine left out) are cropped to 1 s for pretraining")
    parser.add_argument("--unlabelled-split", default="train-clean-100")
    parser.add_argument("--report", default="kws_results", help="name of the <docs>/<report>.{md,json}")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: write the report from the runs already finished (the others are "
                             "listed as not run)")
    parser.add_argument("--note", default="", help="a sentence on the conditions, added to the report's setup")
    parser.add_argument("--from-json", action="store_true",
                        help="run nothing and read no run: rewrite <docs>/<report>.md from <docs>/<report>.json "
                             "(the figures as they were; the confusion PNGs are kept)")
    args = parser.parse_args(argv)
    command = tool_command(__file__, sys.argv[1:] if argv is None else argv)
    if args.from_json:
        rewrite_from_json(Path(args.docs), args.report, ROW_SETS[args.rows], command)
        return
    try:
        limits = seed_limits(args.limit, PRETRAININGS)
    except ValueError as err:
        parser.error(str(err))
    preset = PRESETS[args.preset]
    seeds = args.seeds or preset["seeds"]
    suffix = f"_{args.held_out_engine}" if args.held_out_engine else ""
    data = Path(args.data or ROOT / "data" / f"kws_{preset['corpus']}{suffix}").resolve()
    out = Path(args.out or ROOT / "results" / "kws_benchmark" / args.preset).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    if foreign_kws_corpus(data):
        print(f"{data}: a Speech Commands folder not made here, used as it is", flush=True)
    else:
        make_kws_corpus(data, preset["corpus"], args.corpus_seed, jobs=args.jobs, held_out_engine=args.held_out_engine)
    prepare_speech_commands(data, out / "prep", task="12")
    row_set = ROW_SETS[args.rows]
    speech = None
    if any(pre == UNLABELLED for _, _, pre, _ in row_set):
        corpus = Path(args.unlabelled_speech).resolve()
        if not (corpus / args.unlabelled_split).is_dir():
            parser.error(f"{corpus / args.unlabelled_split}: no such split folder (make one with "
                         "tools/data/make_corpus.py --size bench, or name a LibriSpeech root with --unlabelled-speech)")
        speech, hours = unlabelled_manifest(corpus, args.unlabelled_split, out / "prep" / "unlabelled_speech.csv",
                                            args.held_out_engine)
    first, second = plan_runs(preset, seeds, data, out, limits, row_set, speech)
    not_run = []
    if args.report_only:
        not_run = [r.name for r in first + second if not r.done]
        first, second = [r for r in first if r.done], [r for r in second if r.done]
    else:
        print(f"phase 1: {len(first)} runs (pretrainings, scratch, x-vector)", flush=True)
        run_all(first, args.jobs, 1, out / "logs")
        print(f"phase 2: {len(second)} fine-tunes of pretrained encoders", flush=True)
        run_all(second, args.jobs, 1, out / "logs")
    rows = sorted(collect(first + second), key=lambda r: ([n for n, *_ in row_set].index(r["name"]), r["seed"]))
    held = f" --held-out-engine {args.held_out_engine}" if args.held_out_engine else ""
    setup = (f"Preset `{args.preset}`: corpus {data.name} (`tools/data/make_kws_corpus.py --size {preset['corpus']}{held}`), "
             f"12 classes; KWT {preset['model']}; pretraining {preset['pretrain']}; fine-tuning "
             f"{preset['finetune']}; x-vector {preset['xvector']}; seeds {seeds}"
             + "".join(f" ({name}: seeds {v} only)" for name, v in limits.items())
             + "; 1 CPU thread per run, "
             f"{args.jobs} at a time.")
    if args.rows in ("augmentation", "longer", "stronger", "unlabelled", "false_alarms"):
        setup += (f" Augmentations (hparams overrides): {AUGMENTATIONS}; `{AUGMENTED}` is all of them; every row also "
                  "has the recipe's ±100 ms time shift (and the KWT its time masks).")
    if speech is not None:
        setup += (f" `{UNLABELLED}`: pretrained on the training clips and one random 1-s crop per epoch of each of "
                  f"the {args.unlabelled_split} utterances of {Path(args.unlabelled_speech).name} ({hours:.1f} h"
                  + (f", {args.held_out_engine} voices left out" if args.held_out_engine else "") + "), no labels.")
    if args.held_out_engine:
        setup += (f" Held-out engine: every {args.held_out_engine} voice is kept out of training, validation and "
                  "the in-distribution test list; `held-out engine test` scores them.")
    if args.note:
        setup += f" {args.note}"
    if not_run:
        setup += f" Not run (no result): {', '.join(not_run)}."
    write_report(rows, Path(args.docs), setup, args.preset, row_set, args.report, command)


def rewrite_from_json(docs: Path, report: str, row_set, command: str) -> None:
    """Write ``<docs>/<report>.md`` again from its json (rows, setup, the command that ran)."""
    saved = json.loads((docs / f"{report}.json").read_text())
    setup, ran = saved["setup"], saved.get("command", "")
    if not ran and setup.startswith("`"):  # reports written before the command had its own field
        ran, setup = setup[1:].split("`", 1)
        setup = setup.lstrip(".: ")
    setup = repo_relative(setup)
    write_report(saved["rows"], docs, setup, saved["preset"], row_set, report, repo_relative(ran), command)


if __name__ == "__main__":
    sys.exit(main())
