#!/usr/bin/env python3
"""Carry a made corpus to a machine without the text-to-speech engines (a bare GPU node).

``pack`` copies a LibriSpeech-layout corpus with every FLAC re-encoded as Opus (about 1/5 of
the bytes at the default level); ``unpack`` decodes it back to 16-bit FLAC in LibriSpeech
layout, in parallel. Transcripts, ``corpus.json`` and the speaker lists travel as they are, so
the unpacked folder is a finished corpus that ``prepare_librispeech`` (and ``tools/gpu/gpu_check.py
--corpus``) reads as made. Opus is lossy: the audio is near, not identical to, the original
(measured on the generated corpus: a few kB/s at level 0.9, energy error well under 1 %).

    python tools/data/pack_corpus.py pack data/LibriSpeech-gpu /tmp/carry/corpus
    python tools/data/pack_corpus.py unpack /tmp/carry/corpus data/LibriSpeech-gpu --jobs 16
"""

from __future__ import annotations

import argparse
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile as sf

PACKED_SUFFIX = ".opus.ogg"


def pack_file(src: Path, dst: Path, level: float) -> int:
    """Re-encode one FLAC file as Opus; returns the bytes written."""
    audio, rate = sf.read(src, dtype="float32")
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(dst, audio, rate, format="OGG", subtype="OPUS", compression_level=level)
    return dst.stat().st_size


def unpack_file(src: Path, dst: Path) -> int:
    """Decode one Opus file back to 16-bit FLAC; returns the number of samples."""
    try:
        audio, rate = sf.read(src, dtype="float32")
    except sf.LibsndfileError as err:
        raise RuntimeError(f"{src}: not a readable Opus file ({err})") from err
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(dst, audio, rate, format="FLAC", subtype="PCM_16")
    return len(audio)


def _map(fn, pairs, jobs: int):
    if jobs <= 1:
        return [fn(*p) for p in pairs]
    with ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(fn, *zip(*pairs, strict=True), chunksize=16))


def pack(src: Path, dst: Path, level: float = 0.9, jobs: int = 1) -> dict:
    """Copy corpus ``src`` to ``dst`` with its FLAC files as Opus; returns byte counts.

    >>> import tempfile, numpy as np
    >>> d = Path(tempfile.mkdtemp())
    >>> (d / "c/train/1/2").mkdir(parents=True)
    >>> sf.write(d / "c/train/1/2/1-2-0000.flac", np.zeros(16000), 16000)
    >>> _ = (d / "c/train/1/2/1-2.trans.txt").write_text("1-2-0000 HELLO\\n")
    >>> _ = (d / "c/corpus.json").write_text("{}")
    >>> pack(d / "c", d / "p")["files"]
    1
    >>> unpack(d / "p", d / "u")["files"], (d / "u/train/1/2/1-2.trans.txt").read_text()
    (1, '1-2-0000 HELLO\\n')
    """
    src, dst = Path(src), Path(dst)
    if not (src / "corpus.json").exists():
        raise FileNotFoundError(f"{src}: no corpus.json, not a finished corpus (tools/data/make_corpus.py)")
    pairs = []
    for path in sorted(src.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(src)
        if path.suffix == ".flac":
            pairs.append((path, dst / rel.with_suffix(PACKED_SUFFIX), level))
        else:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / rel)
    sizes = _map(pack_file, pairs, jobs)
    flac = sum(p[0].stat().st_size for p in pairs)
    return {"files": len(pairs), "flac_bytes": flac, "opus_bytes": sum(sizes)}


def unpack(src: Path, dst: Path, jobs: int = 1) -> dict:
    """Decode a packed corpus ``src`` into ``dst`` (LibriSpeech layout, FLAC)."""
    src, dst = Path(src), Path(dst)
    pairs = []
    for path in sorted(src.rglob("*")):
        if path.is_dir():
            continue
        rel = str(path.relative_to(src))
        if rel.endswith(PACKED_SUFFIX):
            pairs.append((path, dst / (rel[: -len(PACKED_SUFFIX)] + ".flac")))
        else:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / rel)
    if not pairs:
        raise FileNotFoundError(f"{src}: no {PACKED_SUFFIX} files, not a packed corpus")
    samples = _map(unpack_file, pairs, jobs)
    return {"files": len(pairs), "hours": sum(samples) / 16000 / 3600}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)
    pk = sub.add_parser("pack", help="FLAC corpus -> Opus copy")
    pk.add_argument("src", type=Path)
    pk.add_argument("dst", type=Path)
    pk.add_argument("--level", type=float, default=0.9,
                    help="libsndfile's Opus compression level, 0 (best quality) to 1 (smallest)")
    pk.add_argument("--jobs", type=int, default=2)
    up = sub.add_parser("unpack", help="Opus copy -> FLAC corpus")
    up.add_argument("src", type=Path)
    up.add_argument("dst", type=Path)
    up.add_argument("--jobs", type=int, default=2)
    args = p.parse_args(argv)
    if args.verb == "pack":
        r = pack(args.src, args.dst, args.level, args.jobs)
        print(f"packed {r['files']} files: {r['flac_bytes'] / 2**20:.1f} MiB FLAC -> "
              f"{r['opus_bytes'] / 2**20:.1f} MiB Opus in {args.dst}")
    else:
        r = unpack(args.src, args.dst, args.jobs)
        print(f"unpacked {r['files']} files ({r['hours']:.2f} h) into {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
