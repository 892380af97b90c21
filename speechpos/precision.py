"""``precision: auto``: bf16 autocast only where the device computes bf16 natively, fp32 elsewhere.

bf16 autocast pays only where the matrix units take bf16: a CUDA GPU with bf16 support, or a
CPU with AMX (``amx_bf16``) or AVX512-BF16 (``avx512_bf16``). On a CPU without them (an
AVX2-only EPYC, measured) oneDNN emulates bf16 and a conformer CTC step ran 6.8x *slower* than
fp32, so ``auto`` picks fp32 there. An explicit ``fp32``, ``bf16`` or ``fp16`` is kept as asked.

Example
-------
>>> choose_precision("auto", "cpu", cpu_flags={"avx2", "fma"})
('fp32', 'CPU without native bf16 (no amx_bf16 or avx512_bf16 flag)')
>>> choose_precision("auto", "cpu", cpu_flags={"avx2", "avx512_bf16"})[0]
'bf16'
>>> choose_precision("bf16", "cpu", cpu_flags=set())
('bf16', 'asked for explicitly')
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def read_cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "cpuinfo")
    >>> _ = open(p, "w").write("processor : 0\\nflags\\t\\t: fpu avx2 amx_bf16\\n")
    >>> sorted(read_cpu_flags(p))
    ['amx_bf16', 'avx2', 'fpu']
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def choose_precision(
    requested: str,
    device: str,
    cpu_flags: set[str] | None = None,
    cuda_bf16: bool | None = None,
) -> tuple[str, str]:
    """(precision, reason) for a run on ``device``.

    Arguments
    ---------
    requested : str
        ``auto``, ``fp32``, ``bf16`` or ``fp16``.
    device : str
        ``cpu``, ``cuda``, ``cuda:0``, ...
    cpu_flags : set of str, optional
        The CPU's feature flags; read from /proc/cpuinfo when not given.
    cuda_bf16 : bool, optional
        Whether the GPU supports bf16; asked of torch when not given.

    >>> choose_precision("auto", "cuda:0", cuda_bf16=True)
    ('bf16', 'CUDA device with bf16 support')
    >>> choose_precision("fp8", "cpu")
    Traceback (most recent call last):
    ...
    ValueError: precision must be one of ('auto', 'fp32', 'bf16', 'fp16'), got 'fp8'
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested != "auto":
        return requested, "asked for explicitly"
    if str(device).startswith("cuda"):
        if cuda_bf16 is None:
            import torch

            cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if cuda_bf16:
            return "bf16", "CUDA device with bf16 support"
        return "fp32", "CUDA device without bf16 support"
    flags = read_cpu_flags() if cpu_flags is None else cpu_flags
    native = [f for f in NATIVE_BF16_CPU_FLAGS if f in flags]
    if native:
        return "bf16", f"CPU with native bf16 ({', '.join(native)})"
    return "fp32", "CPU without native bf16 (no amx_bf16 or avx512_bf16 flag)"


def resolve_precision(run_opts, hparams: dict) -> str:
    """Decide ``auto`` for a recipe before the Brain reads it, log the choice and its reason.

    The command line's ``--precision`` wins over the hparams file's, as in SpeechBrain; the
    decision is written back to ``hparams["precision"]`` so the Brain gets a concrete one.
    """
    overridden = "precision" in getattr(run_opts, "overridden_args", ())
    requested = run_opts["precision"] if overridden else hparams.get("precision", "fp32")
    device = run_opts["device"] if "device" in getattr(run_opts, "overridden_args", ()) else (
        hparams.get("device", "cpu")
    )
    precision, reason = choose_precision(requested, device)
    logger.info("precision %s on %s (%s: %s)", precision, device, requested, reason)
    hparams["precision"] = precision
    return precision
