#!/usr/bin/env python3
"""Transcription at scale, measured: export a CTC run, check that SpeechBrain's EncoderASR
gives the run's transcripts, then transcribe >= 1,000 files with two corrupt ones among them.

1. ``speechpos export`` of ``--run`` into ``<out>/model``, with the run's own n-gram LM (built
   as ``asr_ctc.py --lm_decoding=True`` builds it: from the corpus's LM text where there is one,
   else the training transcripts; ``--no-lm``: none);
2. parity on test-clean: greedy transcripts of every file through ``SpeechModel`` (the run
   folder) and through ``EncoderASR.from_hparams`` (the exported folder), and the WER of each;
   the LM WER of the recipe's decoder on its own test batches against ``speechpos transcribe
   --lm`` on the exported folder, each LM's out-of-lexicon rate on test words and, with
   ``--big-lm-text``, the LM WER of a 3-gram of a bigger text (``make_corpus.py --lm-text``);
   word times checked by a 1-s shift (silence put in front);
3. load: ``--files`` training files of the corpus plus two corrupt files (at 10 % and 60 % of
   the list), transcribed by ``speechpos.inference.transcribe.transcribe_files`` into JSONL,
   greedy and with the LM, once per ``--threads`` value, each in a fresh process: files/s, real-time factor, peak RSS,
   RSS at 10 %, 50 % and 100 % of the files, and the files reported as failed; each decoding once
   more with the memory freed by each batch left to glibc (``release_memory=False``).

Writes ``<docs>/transcribe_load.{md,json,png}`` (the PNG: RSS against progress).

Usage::

    .venv/bin/python tools/bench/transcribe_load.py --run results/pretraining_study/ctc_scratch_sinusoidal_pe_1h_0
    .venv/bin/python tools/bench/transcribe_load.py --run RUN --files 40 --threads 1 --no-lm --docs /tmp/docs
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def rss_mib() -> float:
    """Resident set size of this process now (Linux /proc), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(args) -> int:
    """One load run in this process; prints its measurements as JSON."""
    import torch

    from speechpos.inference import SpeechModel
    from speechpos.inference.transcribe import transcribe_files

    torch.set_num_threads(args.worker_threads)
    files = Path(args.worker_list).read_text().split("\n")[:-1]
    t0 = time.perf_counter()
    model = SpeechModel.from_run(args.worker_model)
    if args.worker_lm:
        model.use_lm()
    load_s = time.perf_counter() - t0
    trace = []

    def on_batch(summary):
        trace.append([summary.done + len(summary.failed), round(rss_mib(), 1)])

    out = Path(args.worker_output)
    out.unlink(missing_ok=True)
    errors = []
    summary = transcribe_files(model, files, out, fmt="jsonl", batch_seconds=args.batch_seconds,
                               progress=False, on_error=errors.append, on_batch=on_batch,
                               release_memory=not args.worker_keep_freed)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"files": len(files), "done": summary.done, "failed": errors,
                      "audio_seconds": round(summary.audio_seconds, 1),
                      "wall_seconds": round(summary.wall_seconds, 2), "load_seconds": round(load_s, 2),
                      "rtf": round(summary.real_time_factor, 5), "peak_rss_mib": round(peak, 1),
                      "trace": trace}))
    return 0


def freed(release: bool) -> str:
    """How a load row treats heap memory freed after each batch."""
    return "returned" if release else "kept (glibc default)"


def rss_at(trace: list, total: int, fraction: float) -> float:
    """RSS when ``fraction`` of the files were done (the first batch reaching it)."""
    for done, rss in trace:
        if done >= fraction * total:
            return rss
    return trace[-1][1]


def parity(run: Path, model_dir: Path, corpus: Path, savedir: Path, lm: bool, big_lm_text: Path | None = None) -> dict:
    """Every test-clean file through the run (SpeechModel) and the export (EncoderASR): greedy
    transcripts and WER; with ``lm``, the recipe's LM WER (its decoder on its batches) against
    ``speechpos transcribe --lm``'s on the exported folder; word times under a 1-s shift."""
    import jiwer
    import torch
    from speechbrain.inference.ASR import EncoderASR
    from tune_lm import dev_log_probs, wer

    from speechpos.inference import SpeechModel
    from speechpos.inference.transcribe import transcribe_files
    from speechpos.speech.data.librispeech import split_references

    refs = split_references(corpus / "test-clean")
    ours_model = SpeechModel.from_run(run)
    asr = EncoderASR.from_hparams(source=str(model_dir), savedir=str(savedir))
    files = sorted(refs)
    ref = [refs[f] for f in files]
    ours = [ours_model.transcribe_file(f) for f in files]
    theirs = [" ".join(asr.transcribe_file(f).split()) for f in files]
    result = {"files": len(files), "identical": sum(a == b for a, b in zip(ours, theirs, strict=True)),
              "wer_speechpos": round(100 * jiwer.wer(ref, ours), 2),
              "wer_encoder_asr": round(100 * jiwer.wer(ref, theirs), 2),
              "differing": [[f, a, b] for f, a, b in zip(files, ours, theirs, strict=True) if a != b][:5]}

    # Word times: one second of silence in front of each file should move its words by 1 s.
    errors, matched, total = [], 0, 0
    for f in files:
        wav = ours_model.load_audio(f)
        shifted = torch.cat([torch.zeros(ours_model.sample_rate), wav])
        _, (w0,) = ours_model.transcribe_batch_with_times(wav[None], torch.ones(1))
        _, (w1,) = ours_model.transcribe_batch_with_times(shifted[None], torch.ones(1))
        total += len(w0)
        sm = difflib.SequenceMatcher(None, [w for w, _, _ in w0], [w for w, _, _ in w1], autojunk=False)
        for block in sm.get_matching_blocks():
            for k in range(block.size):
                a, b = w0[block.a + k], w1[block.b + k]
                errors.append(abs(b[1] - a[1] - 1.0))
                matched += 1
    errors.sort()
    result["timing"] = {"words": total, "matched_after_shift": matched,
                        "mean_abs_error_s": round(sum(errors) / max(len(errors), 1), 4),
                        "p95_abs_error_s": round(errors[int(0.95 * (len(errors) - 1))], 4) if errors else None,
                        "frame_s": ours_model.frame_seconds}
    if lm:
        csv = ours_model.hparams["test_csvs"]["test-clean"]
        lm_model = SpeechModel.from_run(run)
        lm_model.use_lm()
        batches = dev_log_probs(lm_model, csv)
        result["wer_lm_recipe"] = round(wer(batches, lm_model.lm_decoder), 2)
        exported = SpeechModel.from_run(model_dir)
        exported.use_lm()
        out = savedir / "lm_parity.jsonl"
        out.unlink(missing_ok=True)
        transcribe_files(exported, files, out, fmt="jsonl", progress=False)
        hyps = {r["path"]: r["text"] for r in map(json.loads, out.read_text().splitlines())}
        result["wer_lm_transcribe"] = round(100 * jiwer.wer(ref, [hyps[f] for f in files]), 2)
        result["lm"] = {k: v for k, v in exported.saved_lm.items() if k not in ("arpa", "lexicon")}
        test_words = [w for r in ref for w in r.split()]
        lexicon = {line.split("\t", 1)[0] for line in open(exported.saved_lm["lexicon"], encoding="utf-8")}
        result["oov_pct"] = round(100 * sum(w not in lexicon for w in test_words) / len(test_words), 2)
        if big_lm_text:
            from speechpos.speech.lm_decoding import LMDecoder, build_lm_files, read_lm_text

            t0 = time.perf_counter()
            sentences = read_lm_text(str(big_lm_text))
            arpa, lexicon_path = build_lm_files(str(savedir / "big_lm"), sentences, lm_model.tokenizer,
                                                3, f"lm_text {big_lm_text}")
            big = {line.split("\t", 1)[0] for line in open(lexicon_path, encoding="utf-8")}
            lm = result["lm"]
            decoder = LMDecoder(lm_model.tokenizer, arpa, lexicon_path, lm_weight=lm["lm_weight"],
                                word_score=lm["word_score"], beam_size=lm["beam_size"])
            result["big_lm"] = {"text": str(big_lm_text), "sentences": len(sentences),
                                "words": sum(len(x.split()) for x in sentences), "lexicon_words": len(big),
                                "oov_pct": round(100 * sum(w not in big for w in test_words) / len(test_words), 2),
                                "wer_lm_recipe": round(wer(batches, decoder), 2),
                                "seconds": round(time.perf_counter() - t0, 1)}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a CTC run (output folder of asr_ctc.py)")
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "LibriSpeech-bench")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-seconds", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "transcribe_load")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    for name in ("worker-model", "worker-list", "worker-output"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-lm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-keep-freed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-lm", action="store_true", help="greedy only (no n-gram LM rows)")
    parser.add_argument("--note", default="", help="a sentence on the conditions, added to the report")
    parser.add_argument("--big-lm-text", type=Path,
                        help="also score test-clean with a 3-gram of this text (e.g. make_corpus.py --lm-text)")
    args = parser.parse_args(argv)
    if args.worker_model:
        return worker(args)
    if args.run is None:
        parser.error("--run is required")
    import torch

    from speechpos.experiments.plots import (
        _pyplot,
        _save,
        markdown_table,
        tool_command,
        write_report,
    )
    from speechpos.inference.export import export_run

    command = tool_command(__file__, sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.docs.mkdir(parents=True, exist_ok=True)
    lm = not args.no_lm
    if lm:  # the run's own LM, as asr_ctc.py --lm_decoding=True builds it (the export takes it)
        from tune_lm import run_lm

        from speechpos.inference import SpeechModel

        run_lm(SpeechModel.from_run(args.run), args.run)
    model_dir = export_run(args.run, args.out / "model", command=f"speechpos export {args.run} {args.out / 'model'}")
    par = parity(args.run, model_dir, args.corpus, args.out / "sb_cache", lm, args.big_lm_text)
    print(f"parity: {par['identical']}/{par['files']} identical", flush=True)

    files = sorted(str(p) for p in (args.corpus / "train-clean-100").rglob("*.flac"))[: args.files]
    if len(files) < args.files:
        raise SystemExit(f"{args.corpus}: only {len(files)} training files, asked for {args.files}")
    corrupt = [args.out / "corrupt_header.flac", args.out / "truncated.flac"]
    corrupt[0].write_bytes(b"fLaC" + b"\x00" * 100)
    corrupt[1].write_bytes(Path(files[0]).read_bytes()[:60])
    files.insert(len(files) // 10, str(corrupt[0]))
    files.insert(6 * len(files) // 10, str(corrupt[1]))
    listing = args.out / "files.txt"
    listing.write_text("\n".join(files) + "\n")

    runs = []
    decodings = ("greedy", "lm") if lm else ("greedy",)
    # Every setting as transcribe_files runs it, then each decoding once more on the first thread
    # count with freed memory kept by the C library (glibc's default), to show what the trim does.
    configs = [(d, t, True) for d in decodings for t in args.threads]
    configs += [(d, args.threads[0], False) for d in decodings]
    for decoding, threads, release in configs:
        output = args.out / f"out_{decoding}_{threads}{'' if release else '_kept'}.jsonl"
        proc = subprocess.run(
            [sys.executable, __file__, f"--worker-model={model_dir}", f"--worker-list={listing}",
             f"--worker-output={output}", f"--worker-threads={threads}",
             f"--batch-seconds={args.batch_seconds}", *(["--worker-lm"] if decoding == "lm" else []),
             *([] if release else ["--worker-keep-freed"])],
            capture_output=True, text=True, check=True,
        )
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r["threads"], r["decoding"], r["release_memory"] = threads, decoding, release
        r["files_per_s"] = round(r["done"] / r["wall_seconds"], 2)
        r["rss_10"], r["rss_50"], r["rss_100"] = (rss_at(r["trace"], len(files), f) for f in (0.1, 0.5, 1.0))
        r["rss_growth_pct"] = round(100 * (r["rss_100"] - r["rss_10"]) / r["rss_10"], 1)
        runs.append(r)
        print(f"{decoding}, {threads} thread(s), freed memory {freed(release)}: {r['done']} files, "
              f"rtf {r['rtf']}, RSS growth {r['rss_growth_pct']} %, failed {len(r['failed'])}", flush=True)

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in runs:
        ax.plot([100 * d / len(files) for d, _ in r["trace"]], [m for _, m in r["trace"]],
                label=f"{r['decoding']}, {r['threads']} thread(s), freed memory {freed(r['release_memory'])}",
                linestyle="-" if r["release_memory"] else ":")
    ax.set_xlabel("files done (%)")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, args.docs / "transcribe_load.png", "Transcribing many files: memory against progress")

    load = os.getloadavg()[1]
    machine = (f"{platform.machine()}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}, "
               f"{os.cpu_count()} cores, fp32 inference; load average over the last 5 min at the end: {load:.1f}"
               + (f" ({args.note})" if args.note else ""))
    setup = (f"`{command}` on `{args.corpus.name}`: the run `{args.run}` exported with `speechpos export`"
             + (" (with the run's own n-gram LM, built from its training transcripts as "
                "`asr_ctc.py --lm_decoding=True` builds it)" if lm else "")
             + f", then {len(files)} files ({args.files} training utterances and 2 corrupt files) transcribed "
             f"into JSONL by `speechpos.inference.transcribe.transcribe_files` (as `speechpos transcribe`), "
             f"batches of at most {args.batch_seconds:g} s of padded audio, the heap memory freed by each batch "
             f"returned to the system (`release_freed_memory`, glibc's `malloc_trim`), each decoding and thread "
             f"count in a fresh process; each decoding once more on {args.threads[0]} thread(s) with freed "
             f"memory kept, as glibc does by default. Machine: {machine}.")
    parity_rows = [["greedy: SpeechModel (run folder)", par["wer_speechpos"]],
                   ["greedy: EncoderASR (exported folder)", par["wer_encoder_asr"]]]
    if lm:
        parity_rows += [[f"LM (3-gram of the run's training transcripts, {par['oov_pct']} % of test words out "
                         "of its lexicon): the recipe's decoder on its test batches", par["wer_lm_recipe"]],
                        ["LM: `speechpos transcribe --lm` on the exported folder", par["wer_lm_transcribe"]]]
    if "big_lm" in par:
        b = par["big_lm"]
        parity_rows.append([f"LM from `{Path(b['text']).name}` ({b['words']} words): {b['oov_pct']} % of test "
                            "words out of its lexicon (the recipe's decoder, same weights)", b["wer_lm_recipe"]])
    t = par["timing"]
    parts = [
        f"### The exported model against the run ({par['files']} test-clean files)",
        f"Identical greedy transcripts, EncoderASR vs SpeechModel: **{par['identical']} of {par['files']}**.",
        markdown_table(["decoding path", "test-clean WER %"], parity_rows),
        "### Word times (greedy CTC path)",
        f"One second of silence put in front of each test-clean file: {t['matched_after_shift']} of "
        f"{t['words']} words found again; their start moved by 1 s with a mean error of "
        f"{t['mean_abs_error_s']} s (95th percentile {t['p95_abs_error_s']} s; one output frame is "
        f"{t['frame_s']:g} s).",
        "### Load",
        markdown_table(
            ["decoding", "threads", "freed memory", "files done", "failed (reported)", "audio h", "wall s",
             "files/s",
             "real-time factor", "model load s", "peak RSS MiB", "RSS at 10 / 50 / 100 % MiB",
             "RSS growth 10→100 %"],
            [[r["decoding"], r["threads"], freed(r["release_memory"]), r["done"], len(r["failed"]), round(r["audio_seconds"] / 3600, 2),
              r["wall_seconds"], r["files_per_s"], r["rtf"], r["load_seconds"], r["peak_rss_mib"],
              f"{r['rss_10']} / {r['rss_50']} / {r['rss_100']}", f"{r['rss_growth_pct']} %"] for r in runs]),
        "Reported and skipped (every run):\n\n" + "\n".join(f"- `{m}`" for m in runs[0]["failed"]),
        "![RSS against progress](transcribe_load.png)",
    ]
    write_report(setup, "\n\n".join(parts), args.docs / "transcribe_load.md",
                 title="Transcribing many files: parity, word times, load", command=command)
    (args.docs / "transcribe_load.json").write_text(json.dumps(
        {"command": command, "machine": machine, "parity": par, "load": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
