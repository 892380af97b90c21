#!/usr/bin/env python3
"""The main job end to end on the default generated corpus, on CPU:

1. make the default corpus (LibriSpeech layout, text-to-speech: 2 h train, 6 min dev and test,
   and 6 min of test-other read by engines and voices no training split uses; every split with
   its own speakers and texts; and the LM text of every document not read in dev or test);
2. pretrain the CTC baseline's conformer body, unpositioned, by position prediction
   (recipes/LibriSpeech/pretrain.py with hparams/pp_conformer.yaml and the pretext the study
   found to learn: 2-s crops, the context keeping its sinusoidal positions as anchors), while
   the from-scratch CTC baseline trains beside it (asr_ctc.py with hparams/ctc.yaml);
3. fine-tune the pretrained encoder with CTC (the same number of steps; zero-initialised
   position embeddings, the convolution switched on);
4. print (and write to <out>/results.md) a WER/CER table of test-clean and test-other, greedy and
   with the n-gram LM built from the corpus's LM text (``librispeech-lm-norm.txt``), and a few
   reference/hypothesis pairs of test-clean.

    python tools/run_demo.py                 # 18 min on 2 CPU cores (docs/demo.md)
    python tools/run_demo.py --no-pe         # also the MP3 row fine-tuned without position embedding
    python tools/run_demo.py --quick         # tiny corpus and model, ~2 min: checks the plumbing
    python tools/run_demo.py --docs docs     # also docs/demo.md and .json: the table, each phase's
                                             # wall time and the machine that measured it

Finished runs are kept: a rerun resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from speechpos.experiments.plots import (  # noqa: E402
    example_pairs,
    last_valid,
    markdown_table,
    repo_relative,
    tool_command,
)
from speechpos.experiments.runs import (  # noqa: E402
    ANCHORS_PRETEXT,
    CONFORMER_BODY,
    Run,
    as_args,
    cpu_name,
    run_all,
)

QUICK_MODEL = ["--num_layers=2", "--d_model=64", "--nhead=4", "--d_ffn=128"]


TEST_SPLITS = ("test-clean", "test-other")


def table(rows: list[dict]) -> str:
    """One row per run: dev, and greedy and LM WER/CER of test-clean and test-other (engines and
    voices that no training split uses), where the run has them.

    >>> r = {"WER": 50.0, "CER": 20.0, "WER_lm": 40.0, "CER_lm": 19.0, "steps_trained": 10, "train_seconds": 60}
    >>> print(table([{"name": "s", "encoder": "e", "pretraining": "none", "pe": "sin",
    ...               "results": {"dev-clean": r, "test-clean": r}}]).splitlines()[2])
    | s | e | none | sin | 10 | 50 | 20 | 50 | 20 | 40 | 19 |  |  |  |  | 1 |
    """
    headers = ["run", "encoder", "pretraining", "PE at fine-tune", "steps", "dev WER", "dev CER"]
    for split in TEST_SPLITS:
        headers += [f"{split} WER", f"{split} CER", f"{split} WER + LM", f"{split} CER + LM"]
    headers.append("train min")
    body = []
    for r in rows:
        dev, test = r["results"]["dev-clean"], r["results"]["test-clean"]
        row = [r["name"], r["encoder"], r["pretraining"], r["pe"], test["steps_trained"], dev["WER"], dev["CER"]]
        for split in TEST_SPLITS:
            t = r["results"].get(split, {})
            row += [t.get("WER", ""), t.get("CER", ""), t.get("WER_lm", ""), t.get("CER_lm", "")]
        body.append([*row, round(test.get("train_seconds", 0) / 60, 1)])
    return markdown_table(headers, body)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/demo")
    p.add_argument("--corpus", default="data/LibriSpeech")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--quick", action="store_true", help="tiny corpus and model (plumbing check)")
    p.add_argument("--no-pe", action="store_true", help="also fine-tune MP3 without position embedding")
    p.add_argument("--pretrain-minutes", type=float, default=None)
    p.add_argument("--ctc-steps", type=int, default=None, help="optimizer steps of every CTC run")
    p.add_argument("--examples", type=int, default=4, help="reference/hypothesis pairs printed")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    p.add_argument("--docs", help="also write demo.md and demo.json here (phase wall times, CPU model)")
    args = p.parse_args(argv)

    from speechpos.experiments.runs import make_or_use_corpus

    out = (ROOT / args.out).resolve()
    corpus = (ROOT / args.corpus).resolve()
    if args.quick:
        corpus = corpus.with_name(corpus.name + "-tiny")
    out.mkdir(parents=True, exist_ok=True)
    size = "tiny" if args.quick else "default"
    minutes = args.pretrain_minutes or (0.1 if args.quick else 5.0)
    steps = args.ctc_steps or (12 if args.quick else 1500)
    model = QUICK_MODEL if args.quick else []
    common = [f"--data_folder={corpus}", f"--seed={args.seed}", *model]

    t0 = time.time()
    load_at_start = os.getloadavg()[0]
    corpus_made_here = not (corpus / "corpus.json").is_file()
    print(f"[1/3] corpus ({size}) -> {corpus}", flush=True)
    make_or_use_corpus(corpus, size, args.seed, 2)
    corpus_seconds = time.time() - t0
    print(f"      {corpus_seconds:.0f} s", flush=True)

    pp_out = out / "pretrain"
    ctc_common = [*common, f"--number_of_steps={steps}", "--lm_decoding=True"]
    if args.quick:
        ctc_common += ["--max_batch_length_train=10", "--warmup_steps=4"]
    rows = [
        ("scratch", "6-layer conformer (ctc.yaml)", "none", "sinusoidal", None, []),
        ("mp3", "same, null key (pp_conformer.yaml)", "MP3 + anchors", "zero-init", pp_out,
         ["--position_embedding=learned"]),
    ]
    if args.no_pe:
        rows.append(("mp3-noPE", "same, null key (pp_conformer.yaml)", "MP3 + anchors", "none", pp_out,
                     ["--position_embedding=none"]))
    pretrain = Run(
        "pretrain", "pretrain.py", "hparams/pp_conformer.yaml",
        # The pretraining study's "MP3 + anchors" (pp_conformer.yaml is the CTC baseline's body).
        [*common, *as_args({**ANCHORS_PRETEXT, **({"batch_size": 4} if args.quick else {})}),
         "--dropout=0.0", "--lr=0.001", "--warmup_steps=300", "--number_of_epochs=100000",
         f"--max_train_seconds={minutes * 60:g}", "--ckpt_interval_minutes=0"],
        pp_out, "pretrain_done.json",
    )
    runs = [pretrain]
    for name, _, _, _, encoder, extra in rows:
        arch = []
        if encoder is not None:
            arch = [*CONFORMER_BODY, f"--pretrained_encoder={encoder / 'encoder.ckpt'}"]
        runs.append(Run(f"ctc_{name}", "asr_ctc.py", "hparams/ctc.yaml",
                        [*ctc_common, *arch, *extra], out / f"ctc_{name}", "results.json",
                        needs=[pretrain] if encoder is not None else []))
    # Two at a time, one thread each: pretraining beside the scratch baseline, then the
    # fine-tuning of the pretrained encoder(s) as soon as pretraining is done.
    print(f"[2/3] position-prediction pretraining ({minutes:g} min) beside CTC from scratch "
          f"({steps} steps); then CTC from the pretrained encoder ({steps} steps)", flush=True)
    t_runs = time.time()
    run_all(runs, jobs=args.jobs, threads=1, logs=out)
    runs_seconds = time.time() - t_runs

    results = []
    for name, encoder_desc, pretraining, pe, _, _ in rows:
        res = json.loads((out / f"ctc_{name}" / "results.json").read_text())
        results.append({"name": name, "encoder": encoder_desc, "pretraining": pretraining,
                        "pe": pe, "results": res})
    best = min(results, key=lambda r: r["results"]["test-clean"]["WER"])
    pairs = example_pairs(out / f"ctc_{best['name']}" / "wer_test-clean.txt", args.examples)
    examples = "\n".join(f"  REF: {ref}\n  HYP: {hyp}\n" for _, ref, hyp in pairs)
    done, valid = json.loads((pp_out / "pretrain_done.json").read_text()), last_valid(pp_out / "train_log.txt")
    pretext = (
        f"pretraining: {done['train_seconds'] / 60:.1f} min, {done['audio_hours']:.1f} h of audio seen; "
        f"dev position accuracy {100 * valid['pos_acc']:.2f} % (chance {100 * valid['chance_acc']:.2f} %), "
        f"position error {valid['pos_err']:.2f} patches (chance {valid['chance_err']:.2f})"
    )
    text = (
        table(results)
        + f"\n\n{pretext}"
        + f"\n\ntest-clean examples ({best['name']}, greedy):\n\n{examples}"
        + f"\ntotal wall time {time.time() - t0:.0f} s\n"
    )
    (out / "results.md").write_text(text)
    print("[3/3] results\n\n" + text + f"written to {out / 'results.md'}")
    if args.docs:
        phases = {"corpus_seconds": round(corpus_seconds), "corpus_made_here": corpus_made_here,
                  "training_and_evaluation_seconds": round(runs_seconds),
                  "total_seconds": round(time.time() - t0)}
        write_docs(Path(args.docs), text, phases, load_at_start, tool_command(__file__, sys.argv[1:] if argv is None else argv),
                   results)
    return 0


def write_docs(docs: Path, text: str, phases: dict, load_at_start: float, command: str, results: list) -> None:
    """demo.md and demo.json: the demo's table and examples, each phase's wall time, the machine."""
    machine = (f"{cpu_name()}, {os.cpu_count()} cores, load average {load_at_start:.2f} at the start; "
               "`make setup` (the install) not counted")
    made = "made here" if phases["corpus_made_here"] else "already there, reused"
    timing = markdown_table(
        ["phase", "wall s", "wall min"],
        [[f"corpus ({made})", phases["corpus_seconds"], round(phases["corpus_seconds"] / 60, 1)],
         ["pretraining, CTC runs, evaluation", phases["training_and_evaluation_seconds"],
          round(phases["training_and_evaluation_seconds"] / 60, 1)],
         ["total", phases["total_seconds"], round(phases["total_seconds"] / 60, 1)]])
    body = (f"# The demo (`make demo`) on one machine\n\n{machine}.\n\n## Wall time\n\n{timing}\n\n"
            f"## Results\n\n{text}\n## Command\n\n```bash\n{command}\n```\n")
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "demo.md").write_text(repo_relative(body))
    (docs / "demo.json").write_text(repo_relative(json.dumps(
        {"machine": machine, "command": command, "phases": phases, "rows": results}, indent=1)))


if __name__ == "__main__":
    sys.exit(main())
