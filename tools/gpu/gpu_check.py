#!/usr/bin/env python3
"""The GPU path, end to end in minutes: position-prediction pretraining, then CTC fine-tuning
of the pretrained encoder, on one device, with throughput, peak memory and WER printed.

Both recipes run as users run them (``pretrain.py hparams/pp_conformer.yaml`` with the
study's "MP3 + anchors" pretext, then ``asr_ctc.py hparams/ctc.yaml`` from its encoder), each
stopped by a training-time budget (``--max_train_seconds``), with ``precision: auto`` and
``compile: auto`` deciding for the device (bf16 on a CUDA GPU; eager, as measured in
:mod:`speechpos.compilation`). ``--compare-compile`` adds the same fine-tuning under
``torch.compile``. The table (``<out>/gpu_check.md`` and ``.json``) names the device beside
every figure, with each stage's first step and its throughput after ten steps (warm-up).

    bash tools/gpu/gpu_check.sh                       # CUDA: 3 min pretraining + 4 min CTC, bench corpus
    bash tools/gpu/gpu_check.sh --corpus DIR          # a LibriSpeech-layout corpus made elsewhere
    bash tools/gpu/gpu_check.sh --compare-compile     # + 4 min of compiled CTC
    python tools/gpu/gpu_check.py --quick             # CPU, tiny corpus and model, seconds (tests)

On a machine without the text-to-speech engines (a bare GPU node), make the corpus where they
are (``tools/data/make_corpus.py``), carry it (``tools/data/pack_corpus.py pack`` / ``unpack``: Opus, a
fifth of the bytes) and pass it with ``--corpus``: a corpus given so is used as it is.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

import torch  # noqa: E402

from speechpos.experiments.plots import last_valid, markdown_table, tool_command, write_report  # noqa: E402
from speechpos.experiments.runs import (  # noqa: E402
    ANCHORS_PRETEXT,
    CONFORMER_BODY,
    Run,
    as_args,
    made_corpus,
    run_all,
)

QUICK_MODEL = ["--num_layers=2", "--d_model=32", "--nhead=4", "--d_ffn=64"]
# The table's columns, one per key of a row (tools/gpu/gpu_report.py prints the same table).
TABLE_HEADERS = ["stage", "device", "precision", "train s", "steps", "audio s / s",
                 "audio s / s after 10 steps", "first step s", "compiled", "peak memory MiB",
                 "memory", "result"]


def device_name(device: str) -> str:
    """The device in words, for the report."""
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    return f"CPU {platform.machine()} ({torch.backends.cpu.get_cpu_capability()})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CPU-sized: tiny corpus and model, seconds")
    p.add_argument("--device", default=None, help="default: cuda:0 where there is one, else cpu")
    p.add_argument("--corpus", type=Path, default=None,
                   help="a finished LibriSpeech-layout corpus, used as it is (default: "
                        "data/LibriSpeech-bench, or -tiny with --quick, made if absent)")
    p.add_argument("--pretrain-seconds", type=float, default=None, help="default 180 (quick 8)")
    p.add_argument("--ctc-seconds", type=float, default=None, help="default 240 (quick 8)")
    p.add_argument("--ctc-steps", type=int, default=None,
                   help="the CTC schedule's length (warm-up and decay); default 4000 (quick 20)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: all cores)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="data-loading processes per run (default 4 on CUDA, 0 on CPU)")
    p.add_argument("--compare-compile", action="store_true",
                   help="also fine-tune with torch.compile (--compile), as a third row: its first steps "
                        "hold the compile time")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "gpu_check")
    args = p.parse_args(argv)

    device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    quick = args.quick
    corpus = args.corpus or ROOT / "data" / ("LibriSpeech-tiny" if quick else "LibriSpeech-bench")
    pre_s = args.pretrain_seconds or (8 if quick else 180)
    ctc_s = args.ctc_seconds or (8 if quick else 240)
    steps = args.ctc_steps or (20 if quick else 4000)
    threads = args.threads or (1 if quick else torch.get_num_threads())
    out = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    print(f"device {device}: {device_name(device)}; corpus {corpus}", flush=True)
    # A corpus given on the command line is taken as it is (a GPU node has no speech engines).
    size = None if args.corpus else ("tiny" if quick else "bench")
    prep = made_corpus(corpus, size, 1234, 2, out / "prep", low_label={"1h": 3600})
    workers = args.num_workers if args.num_workers is not None else (4 if device.startswith("cuda") else 0)
    data = [f"--data_folder={corpus}", f"--prep_folder={prep}", "--skip_prep=True", f"--device={device}",
            f"--num_workers={workers}", *(QUICK_MODEL if quick else [])]
    pretrain = Run(
        "pretrain", "pretrain.py", "hparams/pp_conformer.yaml",
        [*data, *CONFORMER_BODY[:3], *as_args({**ANCHORS_PRETEXT, **({"batch_size": 4} if quick else {})}),
         "--dropout=0.0", "--lr=0.001", "--number_of_epochs=100000", "--ckpt_interval_minutes=0",
         f"--max_train_seconds={pre_s:g}", "--warmup_steps=" + ("4" if quick else "300")],
        out / "pretrain", "pretrain_done.json",
    )
    ctc_args = [*data, *CONFORMER_BODY, "--position_embedding=learned",
                f"--pretrained_encoder={out / 'pretrain' / 'encoder.ckpt'}", f"--number_of_steps={steps}",
                f"--max_train_seconds={ctc_s:g}", "--warmup_steps=" + ("4" if quick else "300"),
                "--ckpt_interval_minutes=0", f"--train_csv={prep / 'train-1h.csv'}",
                *(["--max_batch_length_train=10"] if quick else [])]
    ctc = Run("ctc", "asr_ctc.py", "hparams/ctc.yaml", ctc_args, out / "ctc", "results.json", needs=[pretrain])
    runs = [pretrain, ctc]
    if args.compare_compile:  # the same fine-tuning with SpeechBrain's --compile (compile: auto is off)
        runs.append(Run("ctc_compiled", "asr_ctc.py", "hparams/ctc.yaml", [*ctc_args, "--compile"],
                        out / "ctc_compiled", "results.json", needs=[pretrain]))
    run_all(runs, jobs=1, threads=threads, logs=out / "logs")

    done = json.loads((out / "pretrain" / "pretrain_done.json").read_text())
    valid = last_valid(out / "pretrain" / "train_log.txt")
    rows = [
        {"stage": "pretraining (MP3 + anchors)", "device": device, "precision": done["precision"],
         "train_s": done["train_seconds"], "steps": done["optimizer_steps"],
         "audio_s_per_s": done["audio_s_per_s"], "steady_audio_s_per_s": done.get("steady_audio_s_per_s"),
         "first_step_s": done.get("first_step_s"), "compiled": done.get("compiled"),
         "peak_memory_mib": done["peak_memory_mib"],
         "memory_kind": done["peak_memory_kind"],
         "result": f"dev position accuracy {100 * valid['pos_acc']:.1f} % (chance {100 * valid['chance_acc']:.1f} %)"},
    ]
    for r in runs[1:]:
        res = json.loads((r.out / "results.json").read_text())
        test, dev = res["test-clean"], res["dev-clean"]
        rows.append(
            {"stage": "CTC fine-tuning (1 h of labels)" + (", --compile" if r.name == "ctc_compiled" else ""),
             "device": device, "precision": test["precision"],
             "train_s": test["train_seconds"], "steps": test["steps_trained"],
             "audio_s_per_s": test["train_audio_s_per_s"], "steady_audio_s_per_s": test.get("steady_audio_s_per_s"),
             "first_step_s": test.get("first_step_s"), "compiled": test.get("compiled"),
             "peak_memory_mib": test["peak_memory_mib"],
             "memory_kind": test["peak_memory_kind"],
             "result": f"WER dev {dev['WER']} / test {test['WER']}, CER test {test['CER']}"})
    command = tool_command(__file__, argv if argv is not None else sys.argv[1:])
    setup = (f"On {device_name(device)}, {threads} torch thread(s), torch {torch.__version__}; corpus `{corpus.name}`; budgets "
             f"{pre_s:g} s pretraining, {ctc_s:g} s CTC (training time, validation excluded); "
             f"wall time {time.time() - t0:.0f} s in all (finished stages are kept on a rerun).")
    table = markdown_table(TABLE_HEADERS, [list(r.values()) for r in rows])
    print(table, flush=True)
    write_report(setup, table, out / "gpu_check.md", title="GPU check", command=command)
    (out / "gpu_check.json").write_text(json.dumps({"setup": setup, "command": command, "device_name": device_name(device),
                                                    "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
