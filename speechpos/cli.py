"""``speechpos`` command line: transcribe audio, extract features, or spot keywords with a trained run.

    speechpos transcribe results/ctc/transformer/1234 a.flac b.wav recordings/
    speechpos features results/ctc/transformer/1234 a.flac --layer 3 --out a.npy
    speechpos keyword results/SpeechCommands/kwt/1986 a.wav     # prints a.wav<TAB>yes<TAB>0.93

Audio of any sample rate and channel count (FLAC, WAV, OGG, MP3, ...) is downmixed to mono
and resampled to the run's rate (16 kHz); each converted file is reported on stderr, e.g.
``INFO: a.wav: converted from 44100 Hz, 2 channel(s) to 16000 Hz mono``.
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from speechpos.inference import RunError, SpeechModel, list_audio
from speechpos.speech.data.audio import AudioError
from speechpos.speech.model import CheckpointMismatchError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="speechpos", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcribe", help="print '<file>\\t<transcript>' for each audio file")
    t.add_argument("run", help="output folder of asr_ctc.py")
    t.add_argument(
        "audio",
        nargs="+",
        help="audio files or folders (any rate/channels: resampled to 16 kHz mono)",
    )
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
    _log_conversions()
    if args.command == "keyword":
        return _keyword(args)
    try:
        model = SpeechModel.from_run(args.run, device=args.device)
        if args.command == "transcribe":
            for path in list_audio(args.audio):
                print(f"{path}\t{model.transcribe_file(path)}", flush=True)
        else:
            feats = model.extract_features(args.audio, args.layer).numpy()
            np.save(args.out, feats)
            print(f"{args.out}: {feats.shape[0]} tokens x {feats.shape[1]} features")
    except (RunError, AudioError, CheckpointMismatchError, ValueError) as err:
        print(f"speechpos: error: {err}", file=sys.stderr)
        return 2
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


def _log_conversions() -> None:
    """Show speechpos INFO messages (e.g. audio conversions) on stderr; other libraries'
    logging is left as it is."""
    logger = logging.getLogger("speechpos")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
