"""``compile: auto``: ``torch.compile`` (inductor) the encoder where it pays, eager elsewhere;
measured so far, it pays nowhere for this project's model sizes, so ``auto`` is off.

The recipes hand the decision to SpeechBrain's own compile run options (``compile``,
``compile_module_keys``, ``compile_using_dynamic_shape_tracing``): ``Brain`` compiles the
modules named there before training. This module only decides what ``auto`` means on the
device at hand, as :mod:`speechpos.precision` does for ``precision: auto``:

- CUDA: off. Measured on an NVIDIA H200 (``tools/gpu/gpu_check.sh``, docs/gpu.md "GPU check"): the CTC
  recipe's compiled step (dynamic shapes, bf16, 40-s batches) ran at 597 audio-s/s after its
  first ten steps against 585 eager (1.02x), and those ten steps took 137 s (56 s the first)
  against 1.8 s eager: compiling and recompiling for new batch shapes costs about two hours of
  training before the 2 % pays it back, and a 150-s run trained 258 steps instead of ~1,900.
  The step is bound by Python and kernel launches at this model size (d_model 144), and
  inductor's fusions do not remove enough of them.
- CPU: off. Measured (``tools/bench/bench_ctc_step.py --compile``, ``docs/ctc_step_implementations.md``,
  an AVX-512/AMX Xeon): the compiled CTC step ran at 0.77-1.01x the eager one, after 170-200 s
  of compiling; inductor's fusions do not pay where matmuls, convolutions and attention are
  library kernels already. Ask for ``compile: True`` to have it anyway.

An explicit ``True``/``False`` (hparams or SpeechBrain's ``--compile`` flag) is kept as asked.

Example
-------
>>> choose_compile("auto", "cuda:0")
(False, 'CUDA: the compiled step measured 1.02x after 137 s of compiling (speechpos.compilation)')
>>> choose_compile("auto", "cpu")[0]
False
>>> choose_compile(True, "cpu")
(True, 'asked for explicitly')
>>> choose_compile("sometimes", "cpu")
Traceback (most recent call last):
...
ValueError: compile must be one of auto, True, False; got 'sometimes'
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

_WORDS = {"auto": "auto", "true": True, "false": False}


def _normalise(requested) -> str | bool:
    if isinstance(requested, bool):
        return requested
    word = _WORDS.get(str(requested).strip().lower())
    if word is None:
        raise ValueError(f"compile must be one of auto, True, False; got {requested!r}")
    return word


def choose_compile(requested, device: str) -> tuple[bool, str]:
    """(compile?, reason) for a run on ``device``; ``requested`` is ``auto``, True or False."""
    value = _normalise(requested)
    if value != "auto":
        return value, "asked for explicitly"
    if str(device).startswith("cuda"):
        return False, "CUDA: the compiled step measured 1.02x after 137 s of compiling (speechpos.compilation)"
    return False, "CPU: the compiled step measured no faster (docs/ctc_step_implementations.md)"


def resolve_compile(run_opts, hparams: dict) -> bool:
    """Decide ``compile: auto`` before the Brain reads it, log the choice and its reason.

    SpeechBrain's ``--compile`` on the command line wins over the hparams file's ``compile``;
    the decision is written back to ``hparams["compile"]`` so the Brain gets a boolean.
    """
    overridden = getattr(run_opts, "overridden_args", ())
    requested = run_opts["compile"] if "compile" in overridden else hparams.get("compile", False)
    device = run_opts["device"] if "device" in overridden else hparams.get("device", "cpu")
    value, reason = choose_compile(requested, device)
    logger.info("torch.compile %s on %s (%s: %s)", "on" if value else "off", device, requested, reason)
    hparams["compile"] = value
    return value
