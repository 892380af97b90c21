#!/usr/bin/env python3
"""Robustness ablation of the from-scratch CTC recipe at equal training time: today's recipe
(``hparams/ctc.yaml`` as it is) against each waveform augmentation switched on (speed
perturbation 0.9/1.0/1.1; additive coloured noise and babble of training voices at 0-20 dB SNR;
simulated room reverberation) and all of them together. Every variant trains for the same
``--minutes`` of training time (validation excluded; the step schedule is ``--steps`` long for
all) on the ``bench`` corpus and is tested on ``test-clean`` (engines and voices like training's)
and ``test-other`` (engines and voices no training split uses), greedy.

Writes ``docs/robustness_ablation.md``, ``.json`` and ``robustness_ablation.png`` (test-clean and
test-other WER per variant). Runs go ``--jobs`` at a time with one torch thread each; finished
runs are kept (a rerun only reports).

    python tools/studies/robustness_ablation.py --minutes 30 --steps 3000 --jobs 2   # ~2 h 30 on 2 cores
    python tools/studies/robustness_ablation.py --minutes 0.2 --steps 20 --corpus data/LibriSpeech-tiny \\
        --size tiny --out /tmp/robust --docs /tmp/docs --model-args --num_layers=1 --d_model=32  # plumbing
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

from speechpos.experiments.plots import markdown_table  # noqa: E402
from speechpos.experiments.runs import Run, cpu_name, made_corpus, run_all  # noqa: E402
from speechpos.speech.data.corruptions import make_corruptions  # noqa: E402

VARIANTS = {
    "baseline": ("hparams/ctc.yaml as it is (SpecAugment only)", []),
    "speed": ("+ speed perturbation 0.9/1.0/1.1", ["--speed_perturb=True"]),
    "noise": ("+ coloured noise / babble, SNR 0-20 dB, half the batches", ["--add_noise=True"]),
    "reverb": ("+ simulated room reverberation, half the batches", ["--add_reverb=True"]),
    "all": ("+ speed, reverberation and noise", ["--speed_perturb=True", "--add_noise=True",
                                                 "--add_reverb=True"]),
}


def relative(new: float, old: float) -> str:
    """Relative change in percent, signed.

    >>> relative(40.0, 50.0)
    '-20.0 %'
    """
    return f"{100 * (new - old) / old:+.1f} %" if old else ""


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["variant"] for r in records]
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for k, (split, colour) in enumerate((("test-clean", "tab:blue"), ("test-other", "tab:orange"))):
        ax.bar([i + (k - 0.5) * 0.38 for i in x], [r.get(f"{split}_WER") or 0 for r in records], 0.38,
               label=f"{split} WER (greedy)", color=colour)
    ax.set_xticks(list(x), names)
    ax.set_ylabel("WER %")
    ax.set_title("CTC at equal training time: waveform augmentations")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=str(ROOT / "data" / "LibriSpeech-bench"))
    p.add_argument("--size", default="bench", help="corpus size made (or completed with test-other) first")
    p.add_argument("--out", default=str(ROOT / "results" / "robustness_ablation"))
    p.add_argument("--docs", default=str(ROOT / "docs"))
    p.add_argument("--minutes", type=float, default=30.0, help="training time of every variant")
    p.add_argument("--steps", type=int, default=3000, help="the schedule's length (warm-up + decay)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--model-args", nargs=argparse.REMAINDER, default=[],
                   help="further asr_ctc.py overrides for every variant (last on the line)")
    args = p.parse_args(argv)

    corpus, out, docs = Path(args.corpus).resolve(), Path(args.out).resolve(), Path(args.docs)
    prep = made_corpus(corpus, args.size, args.seed, args.jobs, out / "prep")
    if not (prep / "test-other.csv").is_file():
        raise SystemExit(f"{corpus} has no test-other split: make it with tools/data/make_corpus.py --out {corpus}")
    common = [f"--data_folder={corpus}", f"--prep_folder={prep}", "--skip_prep=True", f"--seed={args.seed}",
              f"--number_of_steps={args.steps}", f"--max_train_seconds={args.minutes * 60:g}",
              f"--corruptions_folder={out / 'corruptions'}"]
    # made once here, before the runs start side by side (asr_ctc.py would make the same files)
    make_corruptions(out / "corruptions", prep / "train-clean-100.csv", seed=args.seed)
    runs = [Run(name, "asr_ctc.py", "hparams/ctc.yaml", [*common, *VARIANTS[name][1], *args.model_args],
                out / name, "results.json") for name in args.variants]
    out.mkdir(parents=True, exist_ok=True)
    run_all(runs, args.jobs, threads=1, logs=out)

    records = []
    for run in runs:
        res = json.loads((run.out / "results.json").read_text())
        test = res["test-clean"]
        rec = {"variant": run.name, "change": VARIANTS[run.name][0], "overrides": VARIANTS[run.name][1],
               "steps": test["steps_trained"], "train_minutes": round(test["train_seconds"] / 60, 1),
               "audio_s_per_s": test["train_audio_s_per_s"]}
        for split in ("dev-clean", "test-clean", "test-other"):
            rec[f"{split}_WER"] = res.get(split, {}).get("WER")
            rec[f"{split}_CER"] = res.get(split, {}).get("CER")
        records.append(rec)
    base = next((r for r in records if r["variant"] == "baseline"), None)
    rows = []
    for r in records:
        rows.append([r["variant"], r["change"], r["steps"], r["train_minutes"], r["audio_s_per_s"],
                     r["dev-clean_WER"], r["test-clean_WER"], r["test-clean_CER"],
                     relative(r["test-clean_WER"], base["test-clean_WER"]) if base else "",
                     r["test-other_WER"], r["test-other_CER"],
                     relative(r["test-other_WER"], base["test-other_WER"]) if base else ""])
    table = markdown_table(["variant", "change", "steps", "train min", "audio s/s", "dev WER",
                            "test-clean WER", "test-clean CER", "vs baseline", "test-other WER",
                            "test-other CER", "vs baseline"], rows)
    setup = (
        f"`python tools/studies/robustness_ablation.py {' '.join(argv if argv is not None else sys.argv[1:])}`: "
        f"`asr_ctc.py hparams/ctc.yaml --number_of_steps={args.steps} --max_train_seconds="
        f"{args.minutes * 60:g}` plus each variant's overrides on `{corpus.name}`, {args.jobs} run(s) at a "
        f"time with one torch thread each, on {cpu_name()}; greedy decoding, checkpoint chosen on dev-clean "
        "WER. test-other is read by engines and voices that no training split uses (festival's HMM voice, "
        "espeak-ng's en-us-nyc accent)."
    )
    docs.mkdir(parents=True, exist_ok=True)
    plot(records, docs / "robustness_ablation.png")
    (docs / "robustness_ablation.md").write_text(
        f"# Robustness at equal training time\n\n{setup}\n\n{table}\n\n"
        "![WER per variant](robustness_ablation.png)\n")
    (docs / "robustness_ablation.json").write_text(json.dumps({"setup": setup, "rows": records}, indent=1))
    print(setup + "\n\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
