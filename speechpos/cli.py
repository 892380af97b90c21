"""``speechpos`` command line: transcribe audio, export a model, extract features, or spot keywords.

    speechpos transcribe results/ctc/transformer/1234 a.flac b.wav recordings/
    speechpos transcribe models/ctc-bench --list files.txt --output out.jsonl --format jsonl
    speechpos export results/ctc/transformer/1234 models/ctc-bench   # EncoderASR loads it
    speechpos export results/SpeechCommands/kwt/1986 models/kwt      # EncoderClassifier loads it
    speechpos features results/ctc/transformer/1234 a.flac --layer 3 --out a.npy
    speechpos keyword results/SpeechCommands/kwt/1986 a.wav     # prints a.wav<TAB>yes<TAB>0.93

Audio of any sample rate and channel count (FLAC, WAV, OGG, MP3, ...) is downmixed to mono
and resampled to the run's rate (16 kHz); each converted file is reported on stderr, e.g.
``INFO: a.wav: converted from 44100 Hz, 2 channel(s) to 16000 Hz mono``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

import numpy as np

from speechpos.inference import RunError, SpeechModel, list_audio
from speechpos.inference.transcribe import FORMATS
from speechpos.speech.data.audio import AudioError
from speechpos.speech.model import CheckpointMismatchError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="speechpos", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcribe", help="write '<file>\\t<transcript>' (or JSONL) for each audio file")
    t.add_argument("run", help="output folder of asr_ctc.py, or a folder written by `speechpos export`")
    t.add_argument(
        "audio",
        nargs="*",
        help="audio files or folders (any rate/channels: resampled to 16 kHz mono)",
    )
    t.add_argument("--list", action="append", default=[], metavar="FILE",
                   help="a text file naming one audio file or folder per line (repeatable)")
    t.add_argument("--output", help="append the records to this file (default: stdout); "
                                    "files it already holds are skipped, so a re-run resumes")
    t.add_argument("--format", choices=FORMATS, default="text")
    t.add_argument("--batch-seconds", type=float, default=120.0,
                   help="padded audio per batch (default 120 s)")
    t.add_argument("--times", action="store_true", help="JSONL: add word start/end times (CTM has them)")
    t.add_argument("--lm", action="store_true",
                   help="decode with the model's n-gram LM (see `speechpos export --lm-text/--lm-arpa`)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    e = sub.add_parser("export", help="write a CTC run as a SpeechBrain model folder (EncoderASR loads it), "
                                      "a keyword run as one EncoderClassifier loads, or a pretraining run's "
                                      "encoder with the Pretrainer yaml that loads it")
    e.add_argument("run", help="output folder of asr_ctc.py (a model), of SpeechCommands/train.py (a keyword "
                               "model) or of a pretraining recipe (its encoder)")
    e.add_argument("out", help="the folder to write")
    e.add_argument("--lm-text", help="build the folder's word n-gram LM from this text (one sentence a line)")
    e.add_argument("--lm-arpa", help="put this ARPA LM in the folder (its unigrams make the lexicon)")
    e.add_argument("--lm-order", type=int, default=3, help="n-gram order for --lm-text (default 3)")
    e.add_argument("--no-lm", action="store_true",
                   help="no LM (by default: --lm-text/--lm-arpa, else the run's LM, else the corpus's "
                        "LM text <data_folder>/librispeech-lm-norm.txt)")
    f = sub.add_parser("features", help="save encoder features of one file as .npy")
    f.add_argument("run", help="output folder of asr_ctc.py or pretrain.py")
    f.add_argument("audio", help="an audio file (any rate/channels: resampled to 16 kHz mono)")
    f.add_argument("--layer", type=int, default=-1, help="0: patch embedding, k: layer k, -1: final")
    f.add_argument("--out", required=True, help="where to write the (tokens, d_model) array")
    f.add_argument("--device", default="cpu")
    t.add_argument("--device", default="cpu")
    k = sub.add_parser("keyword", help="print '<file>\t<keyword>\t<probability>' for each audio file")
    k.add_argument("run", help="output folder of recipes/SpeechCommands/train.py")
    k.add_argument("audio", nargs="+", help="audio files or folders (any rate/channels: 16 kHz mono)")
    k.add_argument("--top", type=int, default=1, help="print this many best classes per file")
    k.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    with _conversion_messages():
        return _dispatch(args, argv)


def _dispatch(args, argv) -> int:
    if args.command == "keyword":
        return _keyword(args)
    if args.command == "export":
        return _export(args, argv)
    if args.command == "transcribe":
        return _transcribe(args)
    try:
        model = SpeechModel.from_run(args.run, device=args.device)
        feats = model.extract_features(args.audio, args.layer).numpy()
        np.save(args.out, feats)
        print(f"{args.out}: {feats.shape[0]} tokens x {feats.shape[1]} features")
    except (RunError, AudioError, CheckpointMismatchError, ValueError) as err:
        print(f"speechpos: error: {err}", file=sys.stderr)
        return 2
    return 0


def _transcribe(args) -> int:
    """The ``transcribe`` subcommand: bad files are reported and skipped; status 1 when any
    failed, 2 when nothing could start (model, arguments)."""
    from speechpos.inference.transcribe import transcribe_files

    try:
        paths = list(args.audio)
        for list_file in args.list:
            try:
                with open(list_file, encoding="utf-8") as f:
                    paths += [line.strip() for line in f if line.strip()]
            except OSError as err:
                raise ValueError(f"{list_file}: cannot read the list ({err.strerror})") from err
        if not paths:
            raise ValueError("no audio given: name files or folders, or --list FILE")
        files = list_audio(paths)
        if args.lm and (args.times or args.format == "ctm"):
            raise ValueError("word times come from the greedy CTC path: --lm goes with --format text or jsonl")
        model = SpeechModel.from_run(args.run, device=args.device)
        if args.lm:
            model.use_lm()
        summary = transcribe_files(model, files, args.output, fmt=args.format,
                                   batch_seconds=args.batch_seconds, progress=not args.no_progress,
                                   times=args.times)
    except (RunError, CheckpointMismatchError, ValueError) as err:
        print(f"speechpos: error: {err}", file=sys.stderr)
        return 2
    print(f"speechpos: {summary.done} file(s) transcribed, {summary.skipped} already done, "
          f"{len(summary.failed)} failed; {summary.audio_seconds:.1f} s of audio, real-time factor "
          f"{summary.real_time_factor:.4f}", file=sys.stderr)
    return 1 if summary.failed else 0


def _export(args, argv=None) -> int:
    """The ``export`` subcommand (:func:`speechpos.inference.export.export_run`)."""
    import shlex

    from speechpos.inference.export import ExportError, export_run
    from speechpos.inference.keyword_export import export_keyword_run

    command = shlex.join(["speechpos", *(argv or sys.argv[1:])])
    keyword = (Path(args.run) / "labels.txt").is_file()
    try:
        if keyword:
            if args.lm_text or args.lm_arpa:
                raise ExportError(f"{args.run}: a keyword-spotting run takes no LM")
            out = export_keyword_run(args.run, args.out, command=command)
        else:
            out = export_run(args.run, args.out, command=command, lm_text=args.lm_text, lm_arpa=args.lm_arpa,
                             lm_order=args.lm_order, with_lm=not args.no_lm)
    except (RunError, ExportError, CheckpointMismatchError, ValueError, FileNotFoundError) as err:
        print(f"speechpos: error: {err}", file=sys.stderr)
        return 2
    if keyword:
        print(f"{out}: EncoderClassifier.from_hparams(source={str(out)!r}, savedir=...) loads it")
    elif (out / "speechpos_encoder.json").is_file():
        print(f"{out}: encoder.ckpt and the hyperparams.yaml whose Pretrainer loads it")
    else:
        print(f"{out}: EncoderASR.from_hparams(source={str(out)!r}, savedir=...) loads it")
    return 0


def _keyword(args) -> int:
    """The ``keyword`` subcommand (:class:`speechpos.inference.keyword.KeywordSpotter`)."""
    from speechpos.inference.keyword import KeywordSpotter

    try:
        spotter = KeywordSpotter.from_run(args.run, device=args.device)
        for path in list_audio(args.audio):
            best = spotter.classify_file(path, top=args.top)
            print(path, *(f"{label}\t{prob:.3f}" for label, prob in best), sep="\t", flush=True)
    except (RunError, AudioError, ValueError) as err:
        print(f"speechpos: error: {err}", file=sys.stderr)
        return 2
    return 0


@contextlib.contextmanager
def _conversion_messages():
    """Show speechpos INFO messages (e.g. audio conversions) on this call's stderr while the
    call runs; other libraries' logging is left as it is. SpeechBrain's logging set-up
    (``dictConfig``, run when a SpeechBrain model loads in the same process) disables loggers it
    does not name, so the logger is switched on for the call. On the way out the handler goes
    and the logger's level and switch are put back: ``main()`` called from Python (a notebook,
    a test) leaves no handler bound to a stream that may be closed by the time a later record
    comes.

    >>> before = list(logging.getLogger("speechpos").handlers)
    >>> with _conversion_messages():
    ...     len(logging.getLogger("speechpos").handlers) == len(before) + 1
    True
    >>> logging.getLogger("speechpos").handlers == before
    True
    """
    logger = logging.getLogger("speechpos")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    level, disabled = logger.level, logger.disabled
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.disabled = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = disabled


if __name__ == "__main__":
    sys.exit(main())
