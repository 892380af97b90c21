#!/usr/bin/env python3
"""The downstream study that decides it: does position-prediction pretraining lower WER?

On the bench corpus (``make_corpus --size bench``: 10 h of unlabelled training audio, dev and
test with unseen voices and texts) every row uses the CTC baseline's encoder body (6-layer
conformer, d 144, 40-ms patches, null key; the convolution off during position prediction and
switched on, zero-initialised, for fine-tuning) and the same fine-tuning recipe. Two protocols:

- ``--preset converged`` (the default): ``hparams/ctc.yaml``'s own recipe (40-s duration
  batches, warm-up and decay), ``--ctc-steps`` steps at 10 h of labels (4,000: where scratch is
  clearly off the WER ceiling) and the same number of epochs at smaller budgets (at least 300
  steps), checkpoint on dev WER; writes ``pretraining_study.*``;
- ``--preset cpu`` (the previous study, "at the ceiling"): 1,000 steps of 4 random utterances
  at every budget; writes ``pretraining_study_ceiling.*``, which the converged report quotes.

Steps:

1. pretraining, each run given the same training wall time (``--pretrain-minutes``,
   validation excluded) on the 10 h: MP3 as built before (whole utterances), the variants
   chosen by ``tools/studies/pretext_sweep.py`` and BEST-RQ;
2. fine-tuning at each label budget (``--labels``: Libri-light-style subsets drawn by speaker)
   and seed: from scratch (sinusoidal positions), from each pretrainer (zero-initialised
   learned positions), the paper's headline row (the best variant fine-tuned with no position
   signal at all) and, with ``--scratch-no-pe``, from scratch with none;
3. frozen-encoder probes at the largest budget (or ``--probe-labels``): a linear CTC layer on the frozen pretrained
   encoder against the same on a frozen random one (no position signal, convolution off);
4. the pretraining step's speed: context + a third of the targets through the encoder against
   the same encoder unmasked, equal batch, fp32 and bf16
   (:func:`speechpos.experiments.bench.bench_pretrain_step`).

5. with ``--scaling-minutes 10 90``: the ``--best`` position row and BEST-RQ pretrained for the
   longest of those times, with encoder snapshots at the others, each fine-tuned at
   ``--scaling-labels``: gain over scratch against pretraining minutes
   (``<docs>/pretraining_scaling.png``).

Writes ``<docs>/<name>.md``, ``<docs>/<name>.json`` (``rows``: one object per row, label budget
and seed; ``scaling``; ``step_speedup_fp32`` / ``step_speedup_bf16``) and ``<docs>/<name>.png``
(test WER against labelled data per row), ``<name>`` as the preset says. Finished runs are
kept: rerunning resumes, and adding a seed or a budget runs only what is new.

Usage::

    .venv/bin/python tools/studies/pretraining_study.py --jobs 2 --seeds 0 1 --labels 1h 10h --limit 10h=0 \
        --pretrainers "MP3 + anchors" "MP3 + anchors, min gap 2" BEST-RQ "joint λ=0.3" \
        --best "MP3 + anchors, min gap 2" --scaling-minutes 10 90     # the converged study
    .venv/bin/python tools/studies/pretraining_study.py --preset cpu --jobs 2 --pretrain-minutes 20 --ctc-steps 1000
    .venv/bin/python tools/studies/pretraining_study.py --seeds 0 1          # adds seed 1, keeps seed 0
    .venv/bin/python tools/studies/pretraining_study.py --seeds 0 1 --labels 10min 1h 10h --limit 10h=0
    .venv/bin/python tools/studies/pretraining_study.py --pretrain-minutes 30 --device cuda:0 --jobs 1
    .venv/bin/python tools/studies/pretraining_study.py --preset quick --out /tmp/study --docs /tmp/docs
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

from speechpos.experiments.plots import (  # noqa: E402
    _pyplot,
    _save,
    last_valid,
    markdown_table,
    tool_command,
    write_report,
)
from speechpos.experiments.runs import (  # noqa: E402
    CONFORMER_BODY,
    MASKED,
    PRETRAIN_COMMON,
    PRETRAINERS,
    Run,
    as_args,
    made_corpus,
    run_all,
    seed_limits,
)

LOW_LABEL_SECONDS = {"10s": 10.0, "30s": 30.0, "10min": 600.0, "1h": 3600.0, "10h": 36000.0}

DEFAULT_PRETRAINERS = ["MP3 (as built)", "MP3 + anchors", "BEST-RQ"]

PRESETS = {
    # ctc.yaml's own recipe: 40-s duration batches, warm-up and decay; ctc_steps at 10 h of labels,
    # the same epochs at smaller budgets (validation every epoch).
    "converged": dict(size="bench", corpus="LibriSpeech-bench", model=[], batch_every=None, ctc_batch=None,
                      pretrain_minutes=30.0, ctc_steps=4000, steps_at="10h", min_steps=300,
                      labels=["1h", "10h"], report="pretraining_study"),
    # The previous study, at the WER ceiling: ~28 s of audio per CTC step (4 random
    # utterances), 1000 steps at every budget, validation every 500 steps.
    "cpu": dict(size="bench", corpus="LibriSpeech-bench", model=[], batch_every=2000, ctc_batch=4,
                pretrain_minutes=20.0, ctc_steps=1000, steps_at=None, min_steps=1,
                labels=["10min", "1h"], report="pretraining_study_ceiling"),
    # Plumbing check (tests): tiny corpus and model, seconds per run.
    "quick": dict(size="tiny", corpus="LibriSpeech-tiny", batch_every=16, ctc_batch=4, pretrain_minutes=0.05,
                  ctc_steps=6, steps_at=None, min_steps=1, labels=["10s", "30s"], report="pretraining_study",
                  model=["--num_layers=2", "--d_model=32", "--nhead=4", "--d_ffn=64"]),
}


def ctc_steps_for(labels: str, steps: int, steps_at: str | None, min_steps: int) -> int:
    """Fine-tuning steps at a label budget: ``steps`` at ``steps_at`` and the same number of
    epochs elsewhere (at least ``min_steps``); ``steps`` everywhere without ``steps_at``.

    >>> ctc_steps_for("1h", 4000, "10h", 300), ctc_steps_for("10min", 4000, "10h", 300)
    (400, 300)
    >>> ctc_steps_for("1h", 1000, None, 1)
    1000
    """
    if steps_at is None:
        return steps
    return max(round(steps * LOW_LABEL_SECONDS[labels] / LOW_LABEL_SECONDS[steps_at]), min_steps)


def slug(name: str) -> str:
    """A folder name for a row: ``"MP3 + anchors, no PE"`` -> ``mp3_anchors_no_pe``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


TARGET_GAIN_PCT = {"1h": 15.0, "10h": 5.0}


def target_lines(rows: list[dict], labels: list[str]) -> str:
    """The study's targets, as bullet lines: the best position or joint row's relative gain over
    scratch (WER and CER) at each label budget, every joint row against BEST-RQ, and the gain of
    dropped BEST-RQ and of scratch without PE (the control for fine-tuning with none)."""

    def stats(name, labels, key="test_clean_wer"):
        v = [r[key] for r in rows if r["name"] == name and r["labels"] == labels]
        if not v:
            return None
        sd = statistics.stdev(v) if len(v) > 1 else None
        return statistics.mean(v), sd, len(v)

    def fmt(st):
        m, sd, n = st
        return f"{m:.1f}" + (f" ± {sd:.1f}" if sd is not None else "") + f" ({n} seed{'s' if n > 1 else ''})"

    lines = []
    for b in labels:
        scratch = stats("scratch, sinusoidal PE", b)
        candidates = {r["name"] for r in rows if r["labels"] == b and r["name"].startswith(("MP3", "joint"))
                      and not r["name"].startswith("probe")}
        if not scratch:
            continue
        sc = stats("scratch, sinusoidal PE", b, "test_clean_cer")
        for name in sorted({r["name"] for r in rows if r["labels"] == b
                            and r["name"].startswith(("BEST-RQ, dropped", "scratch, no PE"))}):
            w, c = stats(name, b), stats(name, b, "test_clean_cer")
            lines.append(f"- {b}: `{name}` test WER {fmt(w)} against scratch with sinusoidal PE {fmt(scratch)}: "
                         f"{100 * (scratch[0] - w[0]) / scratch[0]:.1f} % relative WER, "
                         f"{100 * (sc[0] - c[0]) / sc[0]:.1f} % CER ({c[0]:.1f} against {sc[0]:.1f}).")
        lines += dropped_against_bestrq(rows, b)
        if not candidates:
            continue
        best = min(candidates, key=lambda n: stats(n, b, "dev_clean_wer")[0])  # chosen on dev, reported on test
        w, c = stats(best, b), stats(best, b, "test_clean_cer")
        gain = 100 * (scratch[0] - w[0]) / scratch[0]
        cgain = 100 * (sc[0] - c[0]) / sc[0]
        target = TARGET_GAIN_PCT.get(b)
        verdict = "" if target is None else (f" (target {target:g} %: **{'met' if gain >= target else 'not met'}**)")
        lines.append(f"- {b} of labels: best position-prediction row on dev WER, `{best}`: test WER {fmt(w)} against "
                     f"scratch {fmt(scratch)}: **{gain:.1f} % relative**{verdict}; CER {c[0]:.1f} against "
                     f"{sc[0]:.1f} ({cgain:.1f} %).")
        bestrq = stats("BEST-RQ, zero-init PE", b)
        if bestrq:
            lines.append(f"- {b}: BEST-RQ {fmt(bestrq)}, {100 * (scratch[0] - bestrq[0]) / scratch[0]:.1f} % "
                         "relative over scratch.")
            masked_no_pe = stats("BEST-RQ, no PE", b)
            if masked_no_pe:
                lines.append(f"- {b}: BEST-RQ with no PE {fmt(masked_no_pe)}, "
                             f"{100 * (scratch[0] - masked_no_pe[0]) / scratch[0]:.1f} % relative over scratch.")
                # Masked prediction's better fine-tuning (chosen on dev) against the best position row.
                masked = min(("BEST-RQ, zero-init PE", "BEST-RQ, no PE"), key=lambda n: stats(n, b, "dev_clean_wer")[0])
                m = stats(masked, b)
                lines.append(f"- {b}: best position row `{best}` {fmt(w)} against masked prediction's better "
                             f"row on dev, `{masked}` {fmt(m)}: **{'beats' if w[0] < m[0] else 'does not beat'} "
                             f"BEST-RQ** on the mean.")
            for name in sorted(n for n in candidates if n.startswith("joint")):
                j = stats(name, b)
                better = j[0] < bestrq[0]
                lines.append(f"- {b}: `{name}` {fmt(j)} against BEST-RQ {fmt(bestrq)}: "
                             f"**{'beats' if better else 'does not beat'} BEST-RQ** on the mean"
                             + ("" if j[2] > 1 and bestrq[2] > 1 else " (one seed: not the target's 2-seed mean)")
                             + ".")
    return "\n".join(lines) if lines else "(no row to compare)"


DROPPED_GAIN_TARGET = 1.5  # dropped BEST-RQ's gain over scratch against BEST-RQ's, equal pretraining time


def dropped_against_bestrq(rows: list[dict], labels: str) -> list[str]:
    """Dropped BEST-RQ's gain over scratch against BEST-RQ's (relative WER and CER, means over
    the seeds both have), as a ratio set against :data:`DROPPED_GAIN_TARGET`; no line unless
    both rows are there.

    >>> rows = [{"name": n, "labels": "1h", "seed": 0, "test_clean_wer": w, "test_clean_cer": c}
    ...         for n, w, c in [("scratch, sinusoidal PE", 80.0, 40.0), ("BEST-RQ, zero-init PE", 78.0, 38.0),
    ...                         ("BEST-RQ, dropped, zero-init PE", 76.0, 37.0)]]
    >>> print(dropped_against_bestrq(rows, "1h")[0])
    - 1h: dropped BEST-RQ gains 5.0 % WER / 7.5 % CER over scratch, BEST-RQ 2.5 % / 5.0 %: 2.00x / 1.50x BEST-RQ's gain (target >= 1.5x on both: **met**; 1 seed).
    """
    gains = {g["row"]: g for g in gains_over_scratch(rows, labels)}
    masked, dropped = gains.get("BEST-RQ, zero-init PE"), gains.get("BEST-RQ, dropped, zero-init PE")
    if not masked or not dropped:
        return []

    def ratio(metric):
        base = masked[f"{metric}_gain_pct"]
        return dropped[f"{metric}_gain_pct"] / base if base > 0 else float("nan")

    wer, cer = ratio("wer"), ratio("cer")
    met = wer >= DROPPED_GAIN_TARGET and cer >= DROPPED_GAIN_TARGET
    seeds = min(masked["seeds"], dropped["seeds"])
    return [f"- {labels}: dropped BEST-RQ gains {dropped['wer_gain_pct']:.1f} % WER / {dropped['cer_gain_pct']:.1f} % CER "
            f"over scratch, BEST-RQ {masked['wer_gain_pct']:.1f} % / {masked['cer_gain_pct']:.1f} %: "
            f"{wer:.2f}x / {cer:.2f}x BEST-RQ's gain (target >= {DROPPED_GAIN_TARGET:g}x on both: "
            f"**{'met' if met else 'not met'}**; {seeds} seed{'s' if seeds > 1 else ''})."]


def kept_rows(report: Path, wanted: list[dict]) -> list[dict]:
    """The rows ``wanted`` (``name``, ``labels``, ``seed``) read from an earlier report's JSON,
    each marked with the report it came from; a row the report lacks is an error.

    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "r.json"
    >>> _ = f.write_text(json.dumps({"rows": [{"name": "scratch", "labels": "1h", "seed": 0, "test_clean_wer": 87.4}]}))
    >>> kept_rows(f, [{"name": "scratch", "labels": "1h", "seed": 0}])[0]["kept_from"]
    'r.json'
    >>> kept_rows(f, [{"name": "scratch", "labels": "1h", "seed": 1}])
    Traceback (most recent call last):
    ...
    SystemExit: --kept-rows: r.json has no row 'scratch' at 1h, seed 1
    """
    have = {(r["name"], r["labels"], r["seed"]): r for r in json.loads(report.read_text())["rows"]}
    out = []
    for w in wanted:
        key = (w["name"], w["labels"], w["seed"])
        if key not in have:
            raise SystemExit(f"--kept-rows: {report.name} has no row {w['name']!r} at {w['labels']}, seed {w['seed']}")
        out.append({**have[key], "kept_from": report.name})
    return out


def steps_read(rows: list[dict]) -> str:
    """The optimizer steps the fine-tunings of each label budget really trained (a budget run
    with another ``--ctc-steps`` than the report's invocation shows here as it ran).

    >>> steps_read([{"labels": "1h", "steps_trained": 2000}, {"labels": "10h", "steps_trained": 2000},
    ...             {"labels": "1h", "steps_trained": 2000}])
    '1h 2000, 10h 2000'
    """
    seen = {}
    for r in rows:
        seen.setdefault(r["labels"], set()).add(r.get("steps_trained"))
    return ", ".join(f"{b} {'/'.join(str(x) for x in sorted(v, key=str))}" for b, v in seen.items())


def step_speedups(out: Path, model: list[str]) -> dict:
    """Median step time of the pretraining step, unmasked vs context 0.25 + 1/3 of the targets."""
    cache = out / "step_speed.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    import torch

    from speechpos.experiments.bench import bench_pretrain_step

    torch.set_num_threads(1)
    quick = bool(model)
    rows = bench_pretrain_step(
        kinds=("conformer",), ratios=(1.0, 0.25), target_ratios=(None, 0.33), gathers=(True,),
        dtypes=("fp32", "bf16"), seconds=2.0 if quick else 10.0, batch=2 if quick else 8,
        repeats=2 if quick else 5, warmup=1 if quick else 2,
        **({"num_layers": 2, "d_model": 32, "nhead": 4, "d_ffn": 64} if quick else {}),
    )
    result = {"rows": rows}
    for dtype in ("fp32", "bf16"):
        fast = [r for r in rows if r["dtype"] == dtype and r["targets"] == 0.33]
        result[f"step_speedup_{dtype}"] = round(fast[0]["speedup"], 2)
    cache.write_text(json.dumps(result, indent=1))
    return result


def plot(rows: list[dict], labels: list[str], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    names = list(dict.fromkeys(r["name"] for r in rows if not r["name"].startswith("probe")))
    xs = [LOW_LABEL_SECONDS[b] / 60 for b in labels]
    for name in names:
        ys, es = [], []
        for b in labels:
            w = [r["test_clean_wer"] for r in rows if r["name"] == name and r["labels"] == b]
            ys.append(statistics.mean(w) if w else float("nan"))
            es.append(statistics.stdev(w) if len(w) > 1 else 0.0)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=name,
                    ls="--" if "scratch" in name else "-")
    ax.set_xscale("log")
    ax.set_xticks(xs, labels)
    ax.minorticks_off()
    ax.set_xlabel("labelled training data")
    ax.set_ylabel("test-clean WER (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, "Fine-tuned CTC: test WER against labelled data")


def scaling_verdicts(scaling: list[dict]) -> str:
    """One line per pretrainer: does its gain over scratch grow from its shortest to its longest
    pretraining (the issue's target for the best position row)?

    >>> print(scaling_verdicts([
    ...     {"pretrainer": "A", "minutes": 10, "relative_gain_pct": 0.5, "relative_cer_gain_pct": 2.0},
    ...     {"pretrainer": "A", "minutes": 90, "relative_gain_pct": 1.5, "relative_cer_gain_pct": 1.0}]))
    - A: WER gain over scratch 0.5 % at 10 min, 1.5 % at 90 min: **grows** (CER gain 2.0 % -> 1.0 %).
    """
    lines = []
    for name in dict.fromkeys(r["pretrainer"] for r in scaling):
        sel = sorted((r for r in scaling if r["pretrainer"] == name), key=lambda r: r["minutes"])
        if len(sel) < 2:
            continue
        lo, hi = sel[0], sel[-1]
        grows = hi["relative_gain_pct"] > lo["relative_gain_pct"]
        peak = max(sel, key=lambda r: r["relative_gain_pct"])
        between = (f"; the largest WER gain is in between: {peak['relative_gain_pct']} % at {peak['minutes']:g} min"
                   if peak is not lo and peak is not hi and peak["relative_gain_pct"] > hi["relative_gain_pct"] else "")
        lines.append(f"- {name}: WER gain over scratch {lo['relative_gain_pct']} % at {lo['minutes']:g} min, "
                     f"{hi['relative_gain_pct']} % at {hi['minutes']:g} min: **{'grows' if grows else 'does not grow'}**"
                     f" (CER gain {lo['relative_cer_gain_pct']} % -> {hi['relative_cer_gain_pct']} %){between}.")
    return "\n".join(lines)


def gains_over_scratch(rows: list[dict], labels: str) -> list[dict]:
    """Each pretrained row's mean gain over scratch on the same seeds (relative %, WER and CER).

    >>> rows = [{"name": "scratch, sinusoidal PE", "labels": "1h", "seed": s, "test_clean_wer": 80.0,
    ...          "test_clean_cer": 40.0} for s in (0, 1)]
    >>> rows += [{"name": "X, zero-init PE", "labels": "1h", "seed": 0, "test_clean_wer": 76.0, "test_clean_cer": 36.0}]
    >>> gains_over_scratch(rows, "1h")
    [{'row': 'X, zero-init PE', 'seeds': 1, 'wer_gain_pct': 5.0, 'cer_gain_pct': 10.0}]
    """
    scratch = {r["seed"]: r for r in rows if r["name"] == "scratch, sinusoidal PE" and r["labels"] == labels}
    out = []
    for name in dict.fromkeys(r["name"] for r in rows if r["labels"] == labels):
        mine = [r for r in rows if r["name"] == name and r["labels"] == labels and r["seed"] in scratch]
        if name.startswith(("scratch", "probe")) or not mine:
            continue
        point = {"row": name, "seeds": len(mine)}
        for metric in ("wer", "cer"):
            ours = statistics.mean(m[f"test_clean_{metric}"] for m in mine)
            base = statistics.mean(scratch[m["seed"]][f"test_clean_{metric}"] for m in mine)
            point[f"{metric}_gain_pct"] = round(100 * (base - ours) / base, 1)
        out.append(point)
    return out


def reference_comparison(rows: list[dict], pre: dict, labels: str, reference: Path) -> tuple[str, list[dict]]:
    """This invocation's gains over its own scratch rows beside an earlier report's scaling
    points (gain over that report's scratch, same label budget), with the audio each pretraining
    saw: the fair axis when the two ran on different machines. Returns (markdown, table rows)."""
    earlier = json.loads(reference.read_text())
    table = []
    for g in gains_over_scratch(rows, labels):
        pretrainer = g["row"].split(", zero-init PE")[0].split(", no PE")[0]
        p = pre.get(pretrainer, {})
        table.append({"source": "this report", "row": g["row"], "pretrain_minutes": p.get("pretrain_minutes"),
                      "audio_hours": p.get("audio_hours"), "wer_gain_pct": g["wer_gain_pct"],
                      "cer_gain_pct": g["cer_gain_pct"], "seeds": g["seeds"]})
    for point in earlier.get("scaling", []):
        if point["labels"] != labels:
            continue
        minutes = point["minutes"]
        key = next((k for k, v in earlier.get("pretraining", {}).items()
                    if k.split(" @ ")[0] == point["pretrainer"] and abs(v["pretrain_minutes"] - minutes) < 1), None)
        table.append({"source": reference.name, "row": f"{point['pretrainer']}, {minutes:g} min pretraining",
                      "pretrain_minutes": minutes,
                      "audio_hours": earlier["pretraining"][key]["audio_hours"] if key else None,
                      "wer_gain_pct": point["relative_gain_pct"], "cer_gain_pct": point["relative_cer_gain_pct"],
                      "seeds": point["seeds"]})
    text = markdown_table(
        ["report", "row", "pretraining min", "audio h seen", "WER gain over scratch %", "CER gain over scratch %",
         "seeds"],
        [[t["source"], t["row"], t["pretrain_minutes"], t["audio_hours"], t["wer_gain_pct"], t["cer_gain_pct"],
          t["seeds"]] for t in table])
    return text, table


def per_seed(mean_gain: float, gains: dict) -> str:
    """A gain cell: the mean, and each seed's gain when there are several.

    >>> per_seed(3.2, {0: 4.1, 1: 2.2}), per_seed(0.8, {0: 0.8})
    ('3.2 (4.1 / 2.2)', '0.8')
    """
    if len(gains) < 2:
        return f"{mean_gain:g}"
    return f"{mean_gain:g} ({' / '.join(f'{g:g}' for g in gains.values())})"


def plot_scaling(scaling: list[dict], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, name in enumerate(dict.fromkeys(r["pretrainer"] for r in scaling)):
        sel = [r for r in scaling if r["pretrainer"] == name]
        minutes = [r["minutes"] for r in sel]
        ax.plot(minutes, [r["relative_gain_pct"] for r in sel], marker="o", color=f"C{i}", label=f"{name}: WER")
        ax.plot(minutes, [r["relative_cer_gain_pct"] for r in sel], marker="s", ls="--", color=f"C{i}",
                label=f"{name}: CER")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("pretraining minutes (one CPU core each)")
    ax.set_ylabel(f"test gain over scratch, % relative ({scaling[0]['labels']} labels)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, "Does more pretraining pay more?")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=list(PRESETS), default="converged")
    parser.add_argument("--pretrainers", nargs="+", default=DEFAULT_PRETRAINERS, choices=list(PRETRAINERS))
    parser.add_argument("--best", default="MP3 + anchors", choices=[p for p in PRETRAINERS if p.startswith("MP3")],
                        help="the variant that gets the no-PE row, the probe and the scaling rows")
    parser.add_argument("--labels", nargs="+", choices=list(LOW_LABEL_SECONDS), help="default: the preset's")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--pretrain-minutes", type=float, help="training time per pretraining (default: the preset's)")
    parser.add_argument("--ctc-steps", type=int, help="optimizer steps per fine-tuning (default: the preset's)")
    parser.add_argument("--corpus", type=Path, help="LibriSpeech-layout corpus (default data/<the preset's>; made if absent)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="e.g. cuda:0 (passed to every recipe)")
    parser.add_argument("--limit", action="append", default=[], metavar="LABELS=SEED[,SEED]",
                        help="run this label budget with these seeds only, e.g. '10h=0'")
    parser.add_argument("--probe-labels", choices=list(LOW_LABEL_SECONDS),
                        help="label budget of the frozen-encoder probes (default: the largest)")
    parser.add_argument("--no-probe", action="store_true")
    parser.add_argument("--scratch-no-pe", action="store_true", help="also from scratch with no position signal")
    parser.add_argument("--no-headline", action="store_true",
                        help="leave out the paper's headline row (--best fine-tuned with no position signal)")
    parser.add_argument("--no-pe-also", nargs="*", default=[], choices=list(PRETRAINERS), metavar="PRETRAINER",
                        help="also fine-tune these pretrainers with no position signal (e.g. BEST-RQ, "
                             "beside --best's headline row)")
    parser.add_argument("--scaling-minutes", type=float, nargs="*", default=[],
                        help="also pretrain --best and BEST-RQ for these minutes (e.g. 10 90)")
    parser.add_argument("--scaling-labels", choices=list(LOW_LABEL_SECONDS), default="1h",
                        help="label budget of the scaling rows")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: write the report from the runs already finished (the others are "
                             "listed as not run)")
    parser.add_argument("--note", default="", help="a sentence on the conditions, added to the report's setup")
    parser.add_argument("--reference", type=Path,
                        help="an earlier report's JSON whose scaling points (gain over its own scratch) are set "
                             "beside this invocation's gains, with the audio each pretraining saw")
    parser.add_argument("--report", default=None,
                        help="name of the docs/<report>.{md,json,png} files (default: the preset's); a separate "
                             "invocation (e.g. one budget at more steps) keeps the main report")
    parser.add_argument("--kept-rows", nargs="+", metavar=("REPORT.json", "ROW"),
                        help="take these rows (e.g. 'scratch, sinusoidal PE') from an earlier report of this "
                             "study on the same machine and corpus instead of training them again; the report "
                             "says which rows came from where")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "pretraining_study")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    try:
        limits = seed_limits(args.limit, args.labels or PRESETS[args.preset]["labels"])
    except ValueError as err:
        parser.error(str(err))
    command = tool_command(__file__, sys.argv[1:] if argv is None else argv)
    preset = PRESETS[args.preset]
    for key in ("pretrain_minutes", "ctc_steps", "labels"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    t0 = time.time()

    out = args.out.resolve()  # the recipes run from their own folder
    (out / "logs").mkdir(parents=True, exist_ok=True)
    corpus = (args.corpus or ROOT / "data" / preset["corpus"]).resolve()
    budgets = sorted({*args.labels, args.scaling_labels}, key=LOW_LABEL_SECONDS.get)
    prep = made_corpus(corpus, preset["size"], 1234, args.jobs, out / "prep",
                       low_label={b: LOW_LABEL_SECONDS[b] for b in budgets})
    data = [f"--data_folder={corpus}", f"--prep_folder={prep}", "--skip_prep=True",
            f"--device={args.device}"]

    def pretraining(name, minutes):
        script, hparams, extra = PRETRAINERS[name]
        values = {**PRETRAIN_COMMON, **extra, "max_train_seconds": minutes * 60}
        folder = f"pretrain_{slug(name)}" + ("" if minutes == args.pretrain_minutes else f"_{minutes:g}min")
        return Run(folder, script, hparams, data + CONFORMER_BODY[:3] + as_args(values) + preset["model"],
                   out / folder, "pretrain_done.json")

    pretrains = {name: pretraining(name, args.pretrain_minutes) for name in args.pretrainers}
    scaled = [n for n in dict.fromkeys([args.best, "BEST-RQ"]) if args.scaling_minutes]
    # Shortest first: two side by side finish together, and their fine-tunings can start early.
    for minutes in sorted(args.scaling_minutes):
        for name in scaled:
            if minutes != args.pretrain_minutes:
                pretrains[f"{name} @ {minutes:g} min"] = pretraining(name, minutes)
    ctc_common = data + CONFORMER_BODY + preset["model"] + ["--ckpt_interval_minutes=0"]
    if preset["batch_every"]:
        ctc_common += [f"--train_samples_per_epoch={preset['batch_every']}", "--dynamic_batching=False",
                       f"--batch_size={preset['ctc_batch']}"]

    def ctc(row, labels, seed, pretrainer=None, pe="learned", frozen=False):
        steps = ctc_steps_for(labels, args.ctc_steps, preset["steps_at"], preset["min_steps"])
        warmup = max(steps // 6, 1) if preset["batch_every"] else min(300, max(steps // 6, 1))
        extra = [f"--position_embedding={pe}", f"--seed={seed}", f"--number_of_steps={steps}",
                 f"--warmup_steps={warmup}", f"--train_csv={prep / f'train-{labels}.csv'}"]
        needs = []
        if pretrainer:
            extra.append(f"--pretrained_encoder={pretrains[pretrainer].out / 'encoder.ckpt'}")
            needs = [pretrains[pretrainer]]
            if pretrainer.split(" @ ")[0] in MASKED:
                extra.append("--pretrained_conv_mode=on")
        if frozen:
            extra += ["--freeze_encoder=True", "--conv_mode=off"]
        run = Run(f"ctc_{slug(row)}_{labels}_{seed}", "asr_ctc.py", "hparams/ctc.yaml",
                  ctc_common + extra, out / f"ctc_{slug(row)}_{labels}_{seed}", "results.json",
                  needs=needs)
        run.info = {"name": row, "labels": labels, "seed": seed, "pretrainer": pretrainer, "steps": steps}
        return run

    kept_from, kept_names = (Path(args.kept_rows[0]), args.kept_rows[1:]) if args.kept_rows else (None, [])
    if kept_from is not None and not kept_names:
        parser.error("--kept-rows: name the rows to take after the report, e.g. 'scratch, sinusoidal PE'")
    ctcs = []
    probe_labels = args.probe_labels or max(args.labels, key=LOW_LABEL_SECONDS.get)
    for seed in args.seeds:
        for labels in args.labels:
            if seed not in limits.get(labels, [seed]):
                continue
            ctcs.append(ctc("scratch, sinusoidal PE", labels, seed, pe="sinusoidal"))
            for name in args.pretrainers:
                ctcs.append(ctc(f"{name}, zero-init PE", labels, seed, name))
            if args.best in pretrains and not args.no_headline:
                ctcs.append(ctc(f"{args.best}, no PE", labels, seed, args.best, pe="none"))
            for name in args.no_pe_also:
                if name not in pretrains:
                    raise SystemExit(f"--no-pe-also {name!r}: pass it in --pretrainers too")
                if name != args.best or args.no_headline:
                    ctcs.append(ctc(f"{name}, no PE", labels, seed, name, pe="none"))
            if args.scratch_no_pe:
                ctcs.append(ctc("scratch, no PE", labels, seed, pe="none"))
        if seed in limits.get(args.scaling_labels, [seed]):
            if args.scaling_labels not in args.labels and scaled:
                ctcs.append(ctc("scratch, sinusoidal PE", args.scaling_labels, seed, pe="sinusoidal"))
            for name in scaled:
                for minutes in args.scaling_minutes:
                    if minutes != args.pretrain_minutes:
                        ctcs.append(ctc(f"{name}, zero-init PE, {minutes:g} min pretraining", args.scaling_labels,
                                        seed, f"{name} @ {minutes:g} min"))
                    elif args.scaling_labels not in args.labels or name not in args.pretrainers:
                        raise SystemExit(f"the scaling rows at {minutes:g} min reuse the main rows: run "
                                         f"{name!r} with --labels {args.scaling_labels}")
        if not args.no_probe and args.best in pretrains and seed in limits.get(probe_labels, [seed]):
            ctcs.append(ctc(f"probe: frozen {args.best}", probe_labels, seed, args.best, pe="none", frozen=True))
            ctcs.append(ctc("probe: frozen random encoder", probe_labels, seed, pe="none", frozen=True))
    kept = kept_rows(kept_from, [r.info for r in ctcs if r.info["name"] in kept_names]) if kept_from else []
    ctcs = [r for r in ctcs if r.info["name"] not in kept_names]
    # Pretrainings first; fine-tunings from scratch fill the slots while the last ones run.
    ctcs.sort(key=lambda r: r.info["pretrainer"] is not None)
    print(f"[1/2] {len(pretrains)} pretrainings of {args.pretrain_minutes:g} min, then "
          f"{len(ctcs)} CTC fine-tunings of {args.ctc_steps} steps", flush=True)
    not_run = []
    if args.report_only:
        not_run = [r.name for r in [*pretrains.values(), *ctcs] if not r.done]
        ctcs = [r for r in ctcs if r.done]
        pretrains = {n: r for n, r in pretrains.items() if r.done}
    else:
        run_all(list(pretrains.values()) + ctcs, args.jobs, args.threads, out / "logs")

    print("[2/2] step speed, table and plot", flush=True)
    speed = step_speedups(out, preset["model"])
    pre = {}
    for name, run in pretrains.items():
        summary = json.loads((run.out / "pretrain_done.json").read_text())
        v = last_valid(run.out / "train_log.txt")
        pre[name] = {
            "pretrain_minutes": round(summary["train_seconds"] / 60, 2),
            "audio_s_per_s": summary["audio_s_per_s"],
            "audio_hours": summary["audio_hours"],
            "dev_position_accuracy": round(100 * v["pos_acc"], 2) if "pos_acc" in v else None,
            "chance_position_accuracy": round(100 * v["chance_acc"], 2) if "chance_acc" in v else None,
            "dev_position_error": v.get("pos_err"), "chance_position_error": v.get("chance_err"),
            "dev_code_accuracy": round(100 * v["code_acc"], 2) if "code_acc" in v else None,
        }
    rows, ctc_seconds = [], 0.0
    for run in ctcs:
        res = json.loads((run.out / "results.json").read_text())
        ctc_seconds += res["test-clean"].get("train_seconds", 0.0)
        p = pre.get(run.info["pretrainer"], {})
        rows.append({
            "name": run.info["name"], "labels": run.info["labels"], "seed": run.info["seed"],
            "test_clean_wer": res["test-clean"]["WER"], "test_clean_cer": res["test-clean"]["CER"],
            "test_other_wer": res.get("test-other", {}).get("WER"),
            "test_other_cer": res.get("test-other", {}).get("CER"),
            "dev_clean_wer": res["dev-clean"]["WER"], "dev_clean_cer": res["dev-clean"]["CER"],
            "pretrain_minutes": p.get("pretrain_minutes", 0.0),
            "steps_trained": res["test-clean"].get("steps_trained"),
            "dev_position_accuracy": p.get("dev_position_accuracy"),
            "chance_position_accuracy": p.get("chance_position_accuracy"),
        })

    rows = kept + rows  # taken rows (scratch) first, as the table lists them

    def mean_sd(values):
        if len(values) == 1:
            return f"{values[0]:.1f}"
        return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"

    names = list(dict.fromkeys(r["name"] for r in rows if "min pretraining" not in r["name"]))
    def split_cells(split):
        cells = []
        for name in names:
            line = [name]
            for labels in args.labels:
                sel = [r for r in rows if r["name"] == name and r["labels"] == labels
                       and r[f"{split}_wer"] is not None]
                line += [mean_sd([r[f"{split}_wer"] for r in sel]) if sel else "",
                         mean_sd([r[f"{split}_cer"] for r in sel]) if sel else ""]
            line.append(len({r["seed"] for r in rows if r["name"] == name}))
            cells.append(line)
        return cells

    cells = split_cells("test_clean")
    other_cells = split_cells("test_other") if any(r["test_other_wer"] is not None for r in rows) else []
    headers = ["row"] + [f"{b} {m}" for b in args.labels for m in ("test WER", "test CER")] + ["seeds"]
    pre_table = markdown_table(
        ["pretrainer", "minutes", "audio h seen", "audio-s/s", "dev pretext acc %", "chance %",
         "dev position error", "chance error"],
        [[n, p["pretrain_minutes"], p["audio_hours"], p["audio_s_per_s"],
          p["dev_position_accuracy"] if p["dev_position_accuracy"] is not None else p["dev_code_accuracy"],
          p["chance_position_accuracy"], p["dev_position_error"], p["chance_position_error"]]
         for n, p in pre.items()])
    speed_table = markdown_table(
        ["dtype", "context ratio", "target ratio", "step ms", "speed-up vs unmasked"],
        [[r["dtype"], r["ratio"], "all" if r["targets"] is None else r["targets"],
          round(r["step_ms"], 1), f"{r['speedup']:.2f}x"] for r in speed["rows"]])

    def rel(a, b):
        return None if not b else round(100 * (b - a) / b, 1)

    verdicts = {}
    for labels in args.labels:
        def mean_wer(name, labels=labels):
            w = [r["test_clean_wer"] for r in rows if r["name"] == name and r["labels"] == labels]
            return round(statistics.mean(w), 2) if w else None
        scratch = mean_wer("scratch, sinusoidal PE")
        pp = {n: mean_wer(n) for n in names if n.startswith(("MP3", "joint")) and mean_wer(n) is not None}
        best = min(pp, key=pp.get) if pp else None
        joint = {n: mean_wer(n) for n in names if n.startswith("joint") and mean_wer(n) is not None}
        best_joint = min(joint, key=joint.get) if joint else None
        verdicts[labels] = {
            "scratch_wer": scratch, "best_position_row": best,
            "best_position_wer": pp.get(best), "relative_reduction_pct": rel(pp[best], scratch) if best else None,
            "bestrq_wer": mean_wer("BEST-RQ, zero-init PE"),
            "best_joint_row": best_joint, "best_joint_wer": joint.get(best_joint),
        }

    scaling = []
    for name in scaled:
        main_rows = args.scaling_labels in args.labels and name in args.pretrainers
        for minutes in sorted({*args.scaling_minutes, *([args.pretrain_minutes] if main_rows else [])}):
            row = (f"{name}, zero-init PE" if minutes == args.pretrain_minutes
                   else f"{name}, zero-init PE, {minutes:g} min pretraining")
            mine = [r for r in rows if r["name"] == row and r["labels"] == args.scaling_labels]
            # Scratch on the same seeds: a point with one seed is not set against a two-seed mean.
            base = [r for r in rows if r["name"] == "scratch, sinusoidal PE"
                    and r["labels"] == args.scaling_labels and r["seed"] in {m["seed"] for m in mine}]
            if mine and base:
                point = {"pretrainer": name, "minutes": minutes, "labels": args.scaling_labels, "seeds": len(mine)}
                for metric in ("wer", "cer"):
                    ours = statistics.mean(m[f"test_clean_{metric}"] for m in mine)
                    theirs = statistics.mean(m[f"test_clean_{metric}"] for m in base)
                    point |= {f"test_clean_{metric}": round(ours, 2), f"scratch_{metric}": round(theirs, 2),
                              f"relative_{'' if metric == 'wer' else 'cer_'}gain_pct": rel(ours, theirs)}
                    scratch_of = {b["seed"]: b[f"test_clean_{metric}"] for b in base}
                    point[f"{metric}_gain_pct_per_seed"] = {
                        m["seed"]: rel(m[f"test_clean_{metric}"], scratch_of[m["seed"]])
                        for m in sorted(mine, key=lambda m: m["seed"])}
                scaling.append(point)
    if preset["batch_every"]:
        recipe = f"{args.ctc_steps} steps of {preset['ctc_batch']} random utterances"
    else:
        recipe = (f"ctc.yaml's own recipe (40-s duration batches, warm-up then decay), {args.ctc_steps} steps at "
                  f"{preset['steps_at']} of labels and as many epochs at the other budgets ("
                  + ", ".join(f"{b}: {ctc_steps_for(b, args.ctc_steps, preset['steps_at'], preset['min_steps'])}"
                              for b in budgets) + " steps)")
    setup = (
        f"{args.pretrain_minutes:g} min of pretraining on "
        f"`{corpus.name}`; {args.jobs} run(s) at a time x {args.threads} torch thread(s), {args.device}, "
        f"precision auto; every row the CTC baseline's conformer body with a null key; fine-tuning "
        f"{recipe}, lr 2e-3, checkpoint on dev WER, greedy decoding; "
        f"training time of the {len(ctcs)} fine-tunings {ctc_seconds / 3600:.1f} h in all "
        f"(this invocation's wall time {time.time() - t0:.0f} s; finished runs are kept)."
        + f" Steps trained, read from the runs: {steps_read(rows)}."
        + (f" {args.note}" if args.note else "")
        + (f" Taken from `{kept_from.name}` (not trained again): "
           + ", ".join(f"{n} ({', '.join(str(r['seed']) for r in kept if r['name'] == n)})" for n in kept_names)
           + "; seeds in brackets." if kept else "")
        + (f" Not run (no result): {', '.join(not_run)}." if not_run else "")
    )
    parts = [
        setup, "### Test-clean WER / CER (%), mean ± sample std over seeds",
        "A cell without ± is one seed; `seeds` counts a row's seeds over all budgets.",
        markdown_table(headers, cells),
    ]
    if other_cells:
        parts += ["### Test-other WER / CER (%): engines and voices no training split uses",
                  markdown_table(headers, other_cells)]
    parts += [
        "### Pretraining (equal training wall time)", pre_table,
    ]
    parts += ["### Against the study's goals", target_lines(rows, args.labels)]
    if scaling:
        parts += [f"### Scaling: gain over scratch against pretraining time ({args.scaling_labels} of labels)",
                  "Each point against scratch on the same seeds (means over seeds; the gain of each seed "
                  "against scratch of that seed in brackets, seed 0 first).",
                  markdown_table(["pretrainer", "pretraining min", "test WER", "scratch WER", "WER gain %",
                                  "test CER", "scratch CER", "CER gain %", "seeds"],
                                 [[r["pretrainer"], r["minutes"], r["test_clean_wer"], r["scratch_wer"],
                                   per_seed(r["relative_gain_pct"], r["wer_gain_pct_per_seed"]),
                                   r["test_clean_cer"], r["scratch_cer"],
                                   per_seed(r["relative_cer_gain_pct"], r["cer_gain_pct_per_seed"]), r["seeds"]]
                                  for r in scaling]),
                  scaling_verdicts(scaling)]
    parts += [
        "### Pretraining step: only the context and a third of the targets through the encoder",
        "Conformer of the study, batch 8 x 10 s, 1 thread, median of 5 interleaved rounds (load on "
        "the machine hits every setting alike; absolute times depend on it, the speed-ups less).",
        speed_table,
    ]
    reference = []
    if args.reference:
        text, reference = reference_comparison(rows, pre, args.scaling_labels, args.reference)
        parts += [f"### Gain over scratch beside `{args.reference.name}` ({args.scaling_labels} of labels)",
                  "Each gain against scratch trained alike on the same seeds, in its own report (two "
                  "machines: compare the audio each pretraining saw, not its minutes).", text]
    ceiling = args.docs / "pretraining_study_ceiling.md"
    name = args.report or preset["report"]
    if name == "pretraining_study" and ceiling.is_file():
        parts += ["### Measured at the ceiling (previous study: 1,000 steps of 4 utterances)",
                  "Every recognizer there stays near WER 100; kept for the record, from "
                  "`docs/pretraining_study_ceiling.md` (`--preset cpu`):", ceiling.read_text().strip()]
    args.docs.mkdir(parents=True, exist_ok=True)
    write_report("\n\n".join(parts), "", args.docs / f"{name}.md", command=command,
                 title=("Pretraining study: position prediction against BEST-RQ and scratch, CTC fine-tuning"
                        if any(n.startswith(("MP3", "joint")) for n in names)
                        else "Pretraining study: masked prediction against scratch, CTC fine-tuning"))
    (args.docs / f"{name}.json").write_text(json.dumps({
        "setup": setup, "command": command, "rows": rows, "pretraining": pre, "verdicts": verdicts, "scaling": scaling,
        "step_speedup_fp32": speed["step_speedup_fp32"], "step_speedup_bf16": speed["step_speedup_bf16"],
        "step_speed_rows": speed["rows"], "reference_comparison": reference,
    }, indent=1))
    plot(rows, args.labels, args.docs / f"{name}.png")
    if scaling:
        plot_scaling(scaling, args.docs / "pretraining_scaling.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
