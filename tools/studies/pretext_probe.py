#!/usr/bin/env python3
"""Which pretext carries phonetic content? Equal-time pretrainings, each screened by a frozen
linear CTC probe.

Every pretrainer trains the study's conformer body (6 layers, d 144, 40-ms patches, null key)
for the same training wall time (``--minutes``, validation excluded, one thread each) on the
bench corpus's 10 h. Then a linear CTC layer is trained on each *frozen* encoder with 1 h of
labels (``asr_ctc.py --freeze_encoder=True``, ``--ctc-steps`` steps of 4 random utterances,
the checkpoint chosen on **dev CER**: near WER 100, choosing on WER is noise) and scored on
test-clean. A frozen random encoder is the floor every pretext must beat. Rows:

* ``MP3 + anchors``: the study's pretext (2-s crops, every context token an anchor);
* shortcut-free variants on it: ``min_gap`` (no scored patch has a context patch within ±g),
  per-patch ``views`` (gain, tilt, noise, frequency mask, patch normalisation), ``coarse``
  targets (160-ms spans), and views + gap together;
* BEST-RQ alone, BEST-RQ with the masked patches dropped, the joint objective (BEST-RQ + λ x
  position, λ swept) and dropped BEST-RQ + position prediction in one pass;
* the random encoder (no pretraining).

Writes ``<docs>/<report>.md``, ``.json`` and ``.png`` (``--report``, default ``pretext_probe``): probe
CER per row beside the pretext's accuracy over chance. Finished runs are kept: rerunning resumes.

Usage::

    .venv/bin/python tools/studies/pretext_probe.py --jobs 2 --minutes 12
    .venv/bin/python tools/studies/pretext_probe.py --rows "MP3 + anchors" "min gap 2" random
    .venv/bin/python tools/studies/pretext_probe.py --preset quick --out /tmp/probe --docs /tmp/docs
    .venv/bin/python tools/studies/pretext_probe.py --minutes 90 --rows random BEST-RQ "BEST-RQ, dropped" \
        --out results/pretraining_study_90 --report pretext_probe_90   # the study's 90-min encoders
"""

from __future__ import annotations

import argparse
import json
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
    POSITIONED_CONV_OFF,
    PRETRAIN_COMMON,
    PRETRAINERS,
    Run,
    as_args,
    made_corpus,
    run_all,
)

# Row -> the pretrainer it screens (speechpos.experiments.runs.PRETRAINERS; None: no
# pretraining). Each encoder is probed as it was pretrained: BEST-RQ and the joint rows with their
# learned PE and the convolution on, dropped BEST-RQ with its PE and the convolution off, the
# position rows and the one-pass joint row with no position signal and the convolution off.
ROWS = {
    "MP3 + anchors": "MP3 + anchors",
    "min gap 2": "MP3 + anchors, min gap 2",
    "views": "MP3 + anchors, views",
    "coarse 4": "MP3 + anchors, coarse 4",
    "views + min gap 2": "MP3 + anchors, views, min gap 2",
    "BEST-RQ": "BEST-RQ",
    "joint λ=0.05": "joint λ=0.05",
    "joint λ=0.3": "joint λ=0.3",
    "joint λ=1": "joint λ=1",
    "BEST-RQ, dropped": "BEST-RQ, dropped",
    "dropped + position": "BEST-RQ, dropped + position",
    "random": None,
}
# Most informative first: the runs start in this order, two at a time.
DEFAULT_ROWS = ["random", "MP3 + anchors", "BEST-RQ", "min gap 2", "views", "joint λ=0.3", "coarse 4",
                "joint λ=1", "views + min gap 2", "joint λ=0.05"]
PRESETS = {
    "cpu": dict(size="bench", corpus="LibriSpeech-bench", labels="1h", seconds=3600.0, minutes=12.0,
                ctc_steps=1000, every=1000, model=[]),
    # Plumbing check (tests): tiny corpus and model, seconds per run.
    "quick": dict(size="tiny", corpus="LibriSpeech-tiny", labels="30s", seconds=30.0, minutes=0.05,
                  ctc_steps=6, every=8, model=["--num_layers=2", "--d_model=32", "--nhead=4", "--d_ffn=64"]),
}


def slug(name: str) -> str:
    """A folder name: ``"joint λ=0.3"`` -> ``joint_l0_3``."""
    out = name.lower().replace("λ=", "l").replace("+", "")
    return "_".join("".join(c if c.isalnum() else " " for c in out).split())


def pretext_score(folder: Path) -> dict:
    """The pretraining's last validation: position accuracy / chance, or masked-code accuracy."""
    v = last_valid(folder / "train_log.txt")
    summary = json.loads((folder / "pretrain_done.json").read_text())
    row = {"pretrain_minutes": round(summary["train_seconds"] / 60, 2), "audio_s_per_s": summary["audio_s_per_s"],
           "audio_hours": summary["audio_hours"]}
    if "pos_acc" in v:
        row.update(dev_position_accuracy=round(100 * v["pos_acc"], 2),
                   chance_position_accuracy=round(100 * v["chance_acc"], 2),
                   accuracy_over_chance=round(v["pos_acc"] / max(v["chance_acc"], 1e-9), 2),
                   position_error=v["pos_err"], chance_position_error=v["chance_err"])
    if "code_acc" in v:
        row["dev_code_accuracy"] = round(100 * v["code_acc"], 2)
    return row


def plot(rows: list[dict], random_cer: float | None, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.5))
    names = [r["row"] for r in rows]
    colours = ["tab:gray" if r["kind"] == "random" else "tab:orange" if r["kind"] == "masked" else "tab:blue"
               for r in rows]
    ax.barh(names, [r["test_clean_cer"] for r in rows], color=colours)
    if random_cer is not None:
        ax.axvline(random_cer, color="k", lw=0.8, label="frozen random encoder")
        ax.axvline(0.85 * random_cer, color="tab:red", ls="--", lw=0.8, label="target: 0.85 x random")
    for i, r in enumerate(rows):
        note = f"{r['accuracy_over_chance']:.1f}x chance" if r.get("accuracy_over_chance") else ""
        ax.text(r["test_clean_cer"] + 0.3, i, note, va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("frozen linear CTC probe: test-clean CER % (lower: more phonetic content)")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path, "Which pretext carries phonetic content?")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=list(PRESETS), default="cpu")
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(ROWS))
    parser.add_argument("--minutes", type=float, help="training time per pretraining (default: the preset's)")
    parser.add_argument("--ctc-steps", type=int, help="probe steps (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0, help="probe seed")
    parser.add_argument("--corpus", type=Path, help="LibriSpeech-layout corpus (default data/<the preset's>)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "pretext_probe")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--report", default="pretext_probe", help="name of the <docs>/<report>.{md,json,png}")
    parser.add_argument("--note", default="", help="a sentence on the conditions, added to the report's setup")
    args = parser.parse_args(argv)
    command = tool_command(__file__, sys.argv[1:] if argv is None else argv)
    preset = PRESETS[args.preset]
    minutes = args.minutes if args.minutes is not None else preset["minutes"]
    steps = args.ctc_steps or preset["ctc_steps"]
    t0 = time.time()

    out = args.out.resolve()  # the recipes run from their own folder
    (out / "logs").mkdir(parents=True, exist_ok=True)
    corpus = (args.corpus or ROOT / "data" / preset["corpus"]).resolve()
    labels = preset["labels"]
    prep = made_corpus(corpus, preset["size"], 1234, args.jobs, out / "prep",
                       low_label={labels: preset["seconds"]})
    data = [f"--data_folder={corpus}", f"--prep_folder={prep}", "--skip_prep=True", f"--device={args.device}"]

    pretrains, probes = {}, []
    for name in args.rows:
        pretrainer = ROWS[name]
        kind = "position" if pretrainer is not None and pretrainer.startswith("MP3") else "masked"
        pre = None
        if pretrainer is not None:
            script, hparams, extra = PRETRAINERS[pretrainer]
            values = {**PRETRAIN_COMMON, **extra, "max_train_seconds": minutes * 60}
            pre = Run(f"pretrain_{slug(name)}", script, hparams,
                      data + CONFORMER_BODY[:3] + as_args(values) + preset["model"],
                      out / f"pretrain_{slug(name)}", "pretrain_done.json")
            pretrains[name] = pre
        probe_args = data + CONFORMER_BODY + preset["model"] + [
            f"--number_of_steps={steps}", f"--warmup_steps={max(steps // 6, 1)}",
            f"--train_samples_per_epoch={preset['every']}", "--dynamic_batching=False", "--batch_size=4",
            "--ckpt_interval_minutes=0", f"--seed={args.seed}", f"--train_csv={prep / f'train-{labels}.csv'}",
            "--freeze_encoder=True", "--select_on=CER",
        ]
        if pretrainer in MASKED:
            probe_args += ["--position_embedding=learned", "--pretrained_conv_mode=on", "--conv_mode=on"]
        elif pretrainer in POSITIONED_CONV_OFF:
            probe_args += ["--position_embedding=learned", "--conv_mode=off"]
        else:
            probe_args += ["--position_embedding=none", "--conv_mode=off"]
        if pre is not None:
            probe_args.append(f"--pretrained_encoder={pre.out / 'encoder.ckpt'}")
        run = Run(f"probe_{slug(name)}_{args.seed}", "asr_ctc.py", "hparams/ctc.yaml", probe_args,
                  out / f"probe_{slug(name)}_{args.seed}", "results.json", needs=[pre] if pre else [])
        run.info = {"row": name, "kind": "random" if pre is None else kind}
        probes.append(run)
    # Row by row (each probe right after its pretraining), so rows finish in order; a probe
    # waits for its pretraining while the next row's pretraining takes the free slot.
    order = [run for p in probes for run in (p.needs + [p])]
    print(f"[1/2] {len(pretrains)} pretrainings of {minutes:g} min, {len(probes)} probes of {steps} steps",
          flush=True)
    run_all(order, args.jobs, args.threads, out / "logs")

    print("[2/2] table and plot", flush=True)
    rows = []
    for run in probes:
        res = json.loads((run.out / "results.json").read_text())
        name = run.info["row"]
        row = {"row": name, "kind": run.info["kind"],
               "test_clean_cer": res["test-clean"]["CER"], "test_clean_wer": res["test-clean"]["WER"],
               "dev_clean_cer": res["dev-clean"]["CER"], "dev_clean_wer": res["dev-clean"]["WER"],
               "overrides": PRETRAINERS[ROWS[name]][2] if ROWS[name] else {}}
        if name in pretrains:
            row.update(pretext_score(pretrains[name].out))
        rows.append(row)
    random_cer = next((r["test_clean_cer"] for r in rows if r["kind"] == "random"), None)
    bestrq_cer = next((r["test_clean_cer"] for r in rows if r["row"] == "BEST-RQ"), None)
    for r in rows:
        r["cer_over_random"] = round(r["test_clean_cer"] / random_cer, 3) if random_cer else None

    def cell(v):
        return "-" if v is None else v

    table = markdown_table(
        ["row", "probe test CER %", "x random", "probe test WER %", "dev CER %", "pretext dev acc %",
         "chance %", "acc / chance", "position error (chance)", "masked-code acc %", "audio-s/s"],
        [[r["row"], r["test_clean_cer"], r["cer_over_random"], r["test_clean_wer"], r["dev_clean_cer"],
          cell(r.get("dev_position_accuracy")), cell(r.get("chance_position_accuracy")),
          cell(r.get("accuracy_over_chance")),
          f"{r['position_error']} ({r['chance_position_error']})" if "position_error" in r else "-",
          cell(r.get("dev_code_accuracy")), cell(r.get("audio_s_per_s"))] for r in rows])
    position_rows = [r for r in rows if r["kind"] == "position" and r["row"] != "random"]
    best = min(position_rows, key=lambda r: r["test_clean_cer"]) if position_rows else None
    verdict = {
        "random_cer": random_cer, "bestrq_cer": bestrq_cer,
        "best_position_row": best["row"] if best else None,
        "best_position_cer": best["test_clean_cer"] if best else None,
        "best_position_over_random": best["cer_over_random"] if best else None,
        "target_over_random": 0.85,
        "met_random": bool(best and random_cer and best["test_clean_cer"] <= 0.85 * random_cer),
        "met_bestrq": bool(best and bestrq_cer is not None and best["test_clean_cer"] <= bestrq_cer),
        "cer_over_random": {r["row"]: r["cer_over_random"] for r in rows if r["kind"] != "random"},
    }
    setup = (
        f"Every pretrainer {minutes:g} min of training time (validation excluded) on "
        f"`{corpus.name}` train, {args.jobs} run(s) at a time x {args.threads} torch thread(s), {args.device}, "
        f"precision auto; the study's conformer body (6 layers, d 144, 40-ms patches, null key). "
        f"Probe: a linear CTC layer on the frozen encoder, {labels} of labels, {steps} steps of 4 random "
        f"utterances, lr 2e-3, checkpoint chosen on dev CER, greedy decoding, seed {args.seed}; position "
        "rows (and dropped BEST-RQ + position) with no position signal and the convolution off (as "
        "pretrained), BEST-RQ and joint rows with their learned position embedding and the convolution "
        "on, dropped BEST-RQ with its learned position embedding and the convolution off. Pretext accuracy: the "
        f"pretraining's last validation on dev-clean crops. Wall time of this invocation {time.time() - t0:.0f} s "
        "(finished runs are kept)."
        + (f" {args.note}" if args.note else "")
    )
    args.docs.mkdir(parents=True, exist_ok=True)
    over_random = "; ".join(f"{row} {ratio}x" for row, ratio in verdict["cer_over_random"].items())
    write_report(setup, table + f"\n\nProbe CER against the frozen random encoder's (target <= 0.85x): {over_random}.",
                 args.docs / f"{args.report}.md", title="Linear probe of pretrained encoders", command=command)
    (args.docs / f"{args.report}.json").write_text(json.dumps(
        {"setup": setup, "command": command, "rows": rows, "verdict": verdict}, indent=1))
    plot(rows, random_cer, args.docs / f"{args.report}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
