"""Measurements of the speech encoders: the position-leak probe and pretraining-step throughput.

:func:`measure_leak` -- does an encoder leak position? A *randomly initialised*, frozen
encoder (eval mode) reads inputs that carry no position information (i.i.d. Gaussian tokens,
or one constant token repeated, of variable lengths); only a linear :class:`PositionHead`
is trained on its outputs, on fresh inputs every step, and then scored on fresh inputs. An
unpositioned encoder cannot tell a token's position from these inputs, so its accuracy must
sit at chance (a guess uniform over the utterance's positions). Its position *error* may
still go below the uniform-guess chance, down to the ``blind`` baseline (always predicting
the utterance's median position), when the outputs tell the length (e.g. with a null key).
Anything clearly better than these baselines is a leak (e.g. a conformer convolution that
zero-pads at the utterance edges).

:func:`bench_pretrain_step` -- audio-seconds per second of one MP3 pretraining step
(forward + backward of patch embedding, encoder, head and loss, then an AdamW step) for
several context ratios, gathered vs masked keys/values, encoder kinds and precisions, with
the FLOPs of the step (``torch.utils.flop_counter``) read against :func:`matmul_ceiling`.

Example
-------
>>> r = measure_leak("transformer", steps=3, d_model=16, nhead=2, num_layers=1, batch=4,
...                  eval_batches=1, min_len=4, max_len=8)
>>> sorted(k for k in r if "accuracy" in k)
['accuracy', 'chance_accuracy']
>>> rows = bench_pretrain_step(kinds=("transformer",), ratios=(1.0, 0.5), gathers=(True,),
...                            dtypes=("fp32",), num_layers=1, d_model=16, nhead=2, d_ffn=32,
...                            seconds=0.4, batch=2, repeats=1, warmup=1)
>>> [(row["ratio"], row["audio_s_per_s"] > 0) for row in rows]
[(1.0, True), (0.5, True)]
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from speechpos.position.context import ContextSampler, sample_context, valid_mask
from speechpos.position.head import PositionHead
from speechpos.position.loss import PositionLoss
from speechpos.position.metrics import PositionStats

INPUTS = ("gaussian", "constant")

# (name, kind, conv_mode, null_key, frontend) of the encoder variants the leak probe compares;
# with a front-end the inputs are position-free filterbank frames (4 per token) instead of tokens.
LEAK_VARIANTS = (
    ("transformer", "transformer", "off", False, None),
    ("transformer + null key", "transformer", "off", True, None),
    ("conformer conv on", "conformer", "on", False, None),
    ("conformer conv shuffled", "conformer", "shuffled", False, None),
    ("conformer conv off", "conformer", "off", False, None),
    ("patch front-end + transformer", "transformer", "off", False, "patch"),
    ("conv front-end + transformer", "transformer", "off", False, "conv"),
)
LEAK_FRAMES_PER_TOKEN = 4
LEAK_N_MELS = 80


def blind_position_error(lengths: torch.Tensor) -> float:
    """Mean |t - m| over all tokens, m the median position of each utterance: the best
    position error of a predictor that knows each utterance's length and nothing else.

    >>> blind_position_error(torch.tensor([4]))  # positions 0..3 against 1
    1.0
    """
    lengths = torch.as_tensor(lengths)
    t = torch.arange(int(lengths.max()))[None, :].float()
    median = ((lengths - 1) // 2).float()[:, None]
    valid = valid_mask(lengths)
    return float(((t - median).abs() * valid).sum() / valid.sum())


def leak_inputs(
    kind: str, batch: int, d_model: int, min_len: int, max_len: int, generator: torch.Generator,
    constant: torch.Tensor | None = None, multiple: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) tokens without position information and their (B,) lengths.

    ``"gaussian"``: i.i.d. N(0, 1) tokens; ``"constant"``: the vector ``constant`` at every
    valid token. Padding is zero. Lengths are uniform in [min_len, max_len], multiples of
    ``multiple`` (frames that make whole tokens).
    """
    if kind not in INPUTS:
        raise ValueError(f"inputs must be one of {INPUTS}, got {kind!r}")
    lengths = torch.randint(min_len // multiple, max_len // multiple + 1, (batch,), generator=generator)
    lengths = lengths * multiple
    length = int(lengths.max())
    if kind == "gaussian":
        x = torch.randn(batch, length, d_model, generator=generator)
    else:
        x = constant.expand(batch, length, d_model).clone()
    x = x * valid_mask(lengths, length).unsqueeze(-1)
    return x, lengths


def measure_leak(
    kind: str = "transformer",
    conv_mode: str = "off",
    null_key: bool = False,
    inputs: str = "gaussian",
    context_ratio: float | None = None,
    steps: int = 300,
    d_model: int = 64,
    nhead: int = 4,
    d_ffn: int | None = None,
    num_layers: int = 4,
    kernel_size: int = 31,
    min_len: int = 20,
    max_len: int = 60,
    batch: int = 32,
    lr: float = 1e-2,
    eval_batches: int = 8,
    seed: int = 0,
    frontend: str | None = None,
) -> dict:
    """Train a linear position head on a frozen random encoder's outputs; score it.

    Arguments
    ---------
    kind, conv_mode, null_key : str, str, bool
        The encoder, as :func:`speechpos.speech.encoder.build_encoder` builds it
        (``conv_mode`` only matters for a conformer).
    inputs : str
        ``"gaussian"`` (i.i.d. tokens) or ``"constant"`` (one token repeated).
    context_ratio : float, optional
        Fraction of tokens kept as keys/values (sampled per batch); None: full context.
    frontend : str, optional
        ``"patch"`` or ``"conv"``: a random front-end (as ``build_speech_encoder`` makes it) in
        front of the encoder, fed 80-channel frames, 4 per token (lengths in tokens as given).
    steps : int
        Adam steps of the head, each on a fresh batch.
    eval_batches : int
        Fresh batches scored after training.

    The global torch RNG is seeded with ``seed`` inside and restored on return.

    Returns
    -------
    dict
        ``accuracy``, ``position_error``, ``chance_accuracy``, ``chance_position_error``
        (from :class:`PositionStats`), ``blind_position_error``, ``tokens``, ``final_loss``.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _measure_leak(
            kind, conv_mode, null_key, inputs, context_ratio, steps, d_model, nhead, d_ffn,
            num_layers, kernel_size, min_len, max_len, batch, lr, eval_batches, seed, frontend,
        )


def _measure_leak(
    kind, conv_mode, null_key, inputs, context_ratio, steps, d_model, nhead, d_ffn, num_layers,
    kernel_size, min_len, max_len, batch, lr, eval_batches, seed, frontend,
) -> dict:
    from speechpos.speech.encoder import build_encoder
    from speechpos.speech.model import build_speech_encoder

    g = torch.Generator().manual_seed(seed)
    encoder = build_encoder(
        kind, num_layers, d_model, nhead, d_ffn or 4 * d_model, dropout=0.0,
        kernel_size=kernel_size, conv_mode=conv_mode, null_key=null_key,
    ).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    head = PositionHead(d_model, max_len)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    loss_fn = PositionLoss(loss_on="all")
    step = LEAK_FRAMES_PER_TOKEN if frontend else 1
    width = LEAK_N_MELS if frontend else d_model
    embed = None
    if frontend:
        embed = build_speech_encoder(
            n_mels=width, patch_frames=step, num_layers=1, d_model=d_model, nhead=nhead,
            d_ffn=d_model, dropout=0.0, frontend=frontend,
        ).patch_embedding.eval()
    constant = torch.randn(width, generator=g)

    def batch_features():
        x, lengths = leak_inputs(
            inputs, batch, width, min_len * step, max_len * step, g, constant, multiple=step
        )
        if embed is not None:
            with torch.no_grad():
                x, lengths = embed(x, lengths / x.shape[1])
        ctx = None
        if context_ratio is not None and context_ratio < 1.0:
            ctx = sample_context(lengths, context_ratio, generator=g)
        with torch.no_grad():
            return encoder(x, lengths, ctx), lengths

    losses = []
    for _ in range(steps):
        feats, lengths = batch_features()
        loss = loss_fn(head(feats, lengths), lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))

    stats = PositionStats()
    all_lengths = []
    with torch.no_grad():
        for _ in range(eval_batches):
            feats, lengths = batch_features()
            stats.append(head(feats, lengths), lengths)
            all_lengths.append(lengths)
    out = stats.summarize()
    lengths = torch.cat(all_lengths)
    out["blind_position_error"] = blind_position_error(lengths)
    tail = losses[-max(1, len(losses) // 10):]
    out["final_loss"] = sum(tail) / len(tail) if tail else float("nan")
    return out


# ------------------------------------------------------------------------ pretraining step


class SavedTensorBytes:
    """Bytes of the distinct tensors autograd saves for backward during a forward pass,
    parameters excluded: the activation memory a training step holds at its peak (between
    forward and backward). Deterministic, unlike RSS or allocator statistics on CPU.

    >>> lin = torch.nn.Linear(4, 4)
    >>> with SavedTensorBytes(lin.parameters()) as saved:
    ...     _ = lin(torch.randn(2, 4, requires_grad=True)).sum()
    >>> saved.bytes  # the (2, 4) float input, saved for the weight gradient
    32
    """

    def __init__(self, parameters=()):
        self.exclude = {p.untyped_storage().data_ptr() for p in parameters}
        self.storages: dict[int, int] = {}
        self._hooks = None

    def _pack(self, t: torch.Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.exclude:
            self.storages[ptr] = storage.nbytes()
        return t

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        return False


def describe_machine() -> str:
    """What the machine is, for a report: CPU model, cores, load and torch's CPU capability.

    >>> "cores" in describe_machine()
    True
    """
    import os

    from speechpos.experiments.runs import cpu_name

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu_name()}, {os.cpu_count()} cores, load average {load:.2f} at the start, "
            f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}")


def _precision_context(dtype: str):
    if dtype == "fp32":
        return contextlib.nullcontext()
    if dtype == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    raise ValueError(f"dtype must be 'fp32' or 'bf16', got {dtype!r}")


def bench_pretrain_step(
    kinds: tuple[str, ...] = ("transformer", "conformer"),
    ratios: tuple[float, ...] = (1.0, 0.5, 0.25, 0.1),
    target_ratios: tuple[float | None, ...] = (None,),
    gathers: tuple[bool, ...] = (True, False),
    dtypes: tuple[str, ...] = ("fp32", "bf16"),
    num_layers: int = 6,
    d_model: int = 144,
    nhead: int = 4,
    d_ffn: int = 576,
    seconds: float = 10.0,
    batch: int = 8,
    repeats: int = 5,
    warmup: int = 2,
    patch_frames: int = 4,
    n_mels: int = 80,
    null_key: bool = True,
    seed: int = 0,
    attention_calls: tuple[str, ...] = ("fused",),
) -> list[dict]:
    """Time one pretraining step per configuration; one row per (kind, gather, dtype, ratio).

    The conformer runs with its convolution off (the pretraining setting). For each
    (kind, gather, dtype) one model and one AdamW optimiser are built; after ``warmup`` steps
    per ratio, ``repeats`` rounds each time one step of every ratio in turn (interleaved, so a
    change of machine load hits all ratios alike), and the median is kept. Ratio 1.0 is full
    attention (no context sampled), so gathered and masked are the same computation there.

    ``attention_calls`` holds ``"fused"`` (speechpos's batch-first SDPA, the default) and/or
    ``"speechbrain"`` (SpeechBrain's own attention call, the step before it), timed interleaved
    with the ratios on the same model.

    Each row: ``kind``, ``attention`` (gathered/masked), ``call``, ``dtype``, ``ratio``, ``targets``
    (the target ratio, None for all tokens), ``step_ms``
    (median), ``step_ms_min``, ``audio_s_per_s`` (audio seconds per wall-clock second, all threads), ``saved_mb`` (see :class:`SavedTensorBytes`), ``speedup`` over ratio
    1.0 of the same (kind, gather, dtype), ``tokens`` per example. The global torch RNG is
    seeded with ``seed`` inside and restored on return.
    """
    frames = int(round(seconds * 100))
    tokens = frames // patch_frames
    if tokens < 1:
        raise ValueError(f"{seconds} s is shorter than one patch of {patch_frames} frames")
    audio_s = batch * frames / 100
    with torch.random.fork_rng():
        return _bench_rows(
            kinds, ratios, target_ratios, gathers, dtypes, num_layers, d_model, nhead, d_ffn,
            frames, tokens, audio_s, batch, repeats, warmup, patch_frames, n_mels, null_key, seed,
            attention_calls,
        )


def _bench_rows(
    kinds, ratios, target_ratios, gathers, dtypes, num_layers, d_model, nhead, d_ffn, frames, tokens, audio_s,
    batch, repeats, warmup, patch_frames, n_mels, null_key, seed, attention_calls=("fused",),
) -> list[dict]:
    from speechpos.speech.model import build_speech_encoder
    from speechpos.speech.position_model import SpeechPositionModel

    rows = []
    for kind in kinds:
        for gather in gathers:
            for dtype in dtypes:
                torch.manual_seed(seed)
                encoder = build_speech_encoder(
                    n_mels, patch_frames, kind, num_layers, d_model, nhead, d_ffn,
                    conv_mode="off", gather=gather, null_key=null_key,
                )
                model = SpeechPositionModel(
                    encoder, PositionHead(d_model, max(tokens, 1)), ContextSampler(1.0)
                ).train()
                opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98))
                loss_fn = PositionLoss(loss_on="all")
                feats = torch.randn(batch, frames, n_mels)
                rel = torch.ones(batch)

                def step(setting, saved=None, model=model, opt=opt, loss_fn=loss_fn, feats=feats,
                         rel=rel, dtype=dtype):
                    model.pretext.sampler = ContextSampler(setting[0])
                    model.pretext.target_ratio = setting[1]
                    for att in model.encoder.encoder.attentions:  # SpeechEncoder -> ContextEncoder
                        att.fused = setting[2] == "fused"
                    opt.zero_grad(set_to_none=True)
                    hooks = saved if saved is not None else contextlib.nullcontext()
                    with hooks, _precision_context(dtype):
                        loss = loss_fn.of_output(model(feats, rel))
                    loss.backward()
                    opt.step()

                settings = [(r, t, c) for r in ratios for t in (target_ratios if r < 1.0 else (None,))
                            for c in attention_calls]
                saved_mb, flops = {}, {}
                for ratio in settings:
                    for i in range(warmup):
                        if i == 0:
                            meter = SavedTensorBytes(model.parameters())
                            with FlopCounterMode(display=False) as counter:
                                step(ratio, meter)
                            saved_mb[ratio] = meter.bytes / 2**20
                            flops[ratio] = counter.get_total_flops()
                        else:
                            step(ratio)
                    if warmup == 0:
                        saved_mb[ratio] = flops[ratio] = float("nan")
                times = {ratio: [] for ratio in settings}
                for _ in range(repeats):
                    for ratio in settings:
                        start = time.perf_counter()
                        step(ratio)
                        times[ratio].append(time.perf_counter() - start)
                for ratio in settings:
                    full = (1.0, None, ratio[2])
                    base = statistics.median(times[full if full in times else settings[0]])
                    med = statistics.median(times[ratio])
                    rows.append({
                        "kind": kind,
                        "attention": "gathered" if gather else "masked",
                        "call": ratio[2],
                        "dtype": dtype,
                        "ratio": ratio[0],
                        "targets": ratio[1],
                        "step_ms": 1000 * med,
                        "step_ms_min": 1000 * min(times[ratio]),
                        "audio_s_per_s": audio_s / med,
                        "saved_mb": saved_mb[ratio],
                        "gflop_per_s": flops[ratio] / med / 1e9,
                        "speedup": base / med,
                        "tokens": tokens,
                    })
    return rows


BENCH_HEADERS = (
    "kind", "attention", "attention call", "dtype", "context ratio", "target ratio", "step ms (median)", "step ms (min)",
    "audio s / s", "speed-up vs ratio 1.0", "saved activations MB", "GFLOP/s",
    "% of matmul ceiling",
)


def bench_table_rows(rows: list[dict], ceilings: dict[str, float] | None = None) -> list[list]:
    """Rows of :func:`bench_pretrain_step` as cells under :data:`BENCH_HEADERS`; ``ceilings``
    maps a dtype to the machine's :func:`matmul_ceiling` in GFLOP/s."""
    ceilings = ceilings or {}
    return [
        [r["kind"], r["attention"], r["call"], r["dtype"], r["ratio"],
         "all" if r.get("targets") is None else r["targets"], round(r["step_ms"], 1),
         round(r["step_ms_min"], 1), round(r["audio_s_per_s"], 1), f"{r['speedup']:.2f}x",
         round(r["saved_mb"], 1), round(r["gflop_per_s"], 2),
         round(100 * r["gflop_per_s"] / ceilings[r["dtype"]], 1) if r["dtype"] in ceilings else ""]
        for r in rows
    ]


def matmul_ceiling(size: int = 1024, dtype: str = "fp32", repeats: int = 20, warmup: int = 3,
                   device: str = "cpu") -> float:
    """Best GFLOP/s of a (size x size) @ (size x size) matmul: the machine's dense-compute
    ceiling at the current torch thread count, against which training throughput is read.

    >>> matmul_ceiling(size=64, repeats=2, warmup=1) > 0
    True
    """
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a = torch.randn(size, size, device=device, dtype=torch_dtype)
    b = torch.randn(size, size, device=device, dtype=torch_dtype)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    best = float("inf")
    for i in range(warmup + repeats):
        sync()
        start = time.perf_counter()
        a @ b
        sync()
        if i >= warmup:
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9
