"""Throughput of the pretraining objectives as the study trains them, one step each, interleaved.

Each pretrainer's model is built from its own recipe hparams with the study's overrides
(:data:`speechpos.experiments.runs.PRETRAINERS`, on :data:`~speechpos.experiments.runs.CONFORMER_BODY`),
so "the same model" is literally what ``tools/studies/pretraining_study.py`` trains. A step is the
forward pass from normalised filterbank features, the recipe's loss, backward and an AdamW
step, on random features shaped as the recipe's batches: whole utterances for BEST-RQ
(``batch`` of ``seconds`` s each), crops for the position pretexts that train on crops
(``crop_seconds`` and ``batch_size`` of their overrides). After warm-up, every round times one
step of every pretrainer in turn, so a change of load hits all alike; the median is kept.

Example
-------
>>> rows = bench_objectives(["BEST-RQ", "BEST-RQ, dropped"], threads=(1,), repeats=1, warmup=1,
...                         seconds=1.0, batch=2, model=dict(num_layers=1, d_model=16, nhead=2, d_ffn=32))
>>> [(r["pretrainer"], r["audio_s_per_s"] > 0, 0 < r["encoder_tokens"] <= 1) for r in rows]
[('BEST-RQ', True, True), ('BEST-RQ, dropped', True, True)]
"""

from __future__ import annotations

import statistics
import time

import torch
from hyperpyyaml import load_hyperpyyaml

from speechpos.experiments.bench import SavedTensorBytes, _precision_context
from speechpos.experiments.runs import CONFORMER_BODY, PRETRAIN_COMMON, PRETRAINERS, RECIPES

FRAMES_PER_SECOND = 100


def build_pretrainer(name: str, model: dict | None = None):
    """(model, loss function of the model's output, crop seconds or None) of a study pretrainer."""
    script, hparams_file, overrides = PRETRAINERS[name]
    values = {k.lstrip("-").split("=")[0]: k.split("=", 1)[1] for k in CONFORMER_BODY}
    values.pop("frontend", None)
    values.update({k: v for k, v in PRETRAIN_COMMON.items() if k in ("dropout", "seed")})
    values.update(overrides)
    values.update(model or {})
    text = "\n".join(f"{k}: {'null' if v is None else v}" for k, v in values.items())
    with open(RECIPES / hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, text)
    net = hparams["model"]
    if script == "pretrain_bestrq.py":
        def loss(out):
            return torch.nn.functional.cross_entropy(out[0].float(), out[1])
    elif script == "pretrain_joint.py":
        position_loss, weight = hparams["position_loss"], hparams["position_weight"]

        def loss(out):
            return (torch.nn.functional.cross_entropy(out.code_logits.float(), out.code_targets)
                    + weight * position_loss.of_output(out.position))
    else:
        position_loss = hparams["position_loss"]

        def loss(out):
            return position_loss.of_output(out, progress=0.0)
    return net, loss, hparams.get("crop_seconds"), hparams.get("batch_size")


def _encoder_token_share(net, feats, rel) -> float:
    """Share of the patches that enter the encoder in one forward pass (1.0 without dropping)."""
    encoder = net.encoder.encoder
    seen = []
    handle = encoder.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[1]))
    try:
        with torch.no_grad():
            net(feats, rel)
    finally:
        handle.remove()
    patches = feats.shape[1] // net.encoder.patch_embedding.patch_frames
    return sum(seen) / (len(seen) * patches) if seen else float("nan")


def bench_objectives(
    pretrainers: list[str],
    threads: tuple[int, ...] = (1, 2),
    seconds: float = 8.0,
    batch: int = 8,
    repeats: int = 5,
    warmup: int = 2,
    seed: int = 0,
    model: dict | None = None,
    dtype: str = "fp32",
) -> list[dict]:
    """One row per (threads, pretrainer): ``step_ms`` (median), ``step_ms_min``,
    ``audio_s_per_s``, ``speedup`` over the first pretrainer at the same threads,
    ``encoder_tokens`` (share of the patches the encoder runs on; a position pretext runs
    every token as a query), ``saved_mb`` (activations held for backward), ``batch_audio_s``.
    ``model`` overrides architecture keys (tests use tiny sizes); ``dtype`` "bf16" runs the
    forward pass under CPU autocast, as the recipes' ``precision: bf16``."""
    before = torch.get_num_threads()
    rows = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        built = {}
        for name in pretrainers:
            net, loss, crop, crop_batch = build_pretrainer(name, model)
            net.train()
            if crop:
                shape = (int(crop_batch), int(round(float(crop) * FRAMES_PER_SECOND)))
            else:
                shape = (batch, int(round(seconds * FRAMES_PER_SECOND)))
            feats = torch.randn(*shape, 80)
            rel = torch.ones(shape[0])
            opt = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.9, 0.98))
            built[name] = (net, loss, opt, feats, rel, _encoder_token_share(net, feats, rel))

        def step(name, hooks=None):
            net, loss, opt, feats, rel, _ = built[name]
            opt.zero_grad(set_to_none=True)
            with _precision_context(dtype):
                if hooks is None:
                    value = loss(net(feats, rel))
                else:
                    with hooks:
                        value = loss(net(feats, rel))
            value.backward()
            opt.step()

        try:
            for count in threads:
                torch.set_num_threads(count)
                saved = {}
                for name in pretrainers:
                    for i in range(warmup):
                        if i == 0:
                            meter = SavedTensorBytes(built[name][0].parameters())
                            step(name, meter)
                            saved[name] = meter.bytes / 2**20
                        else:
                            step(name)
                times = {name: [] for name in pretrainers}
                for _ in range(repeats):
                    for name in pretrainers:
                        start = time.perf_counter()
                        step(name)
                        times[name].append(time.perf_counter() - start)
                base = None
                for name in pretrainers:
                    feats = built[name][3]
                    audio = feats.shape[0] * feats.shape[1] / FRAMES_PER_SECOND
                    med = statistics.median(times[name])
                    speed = audio / med
                    base = base or speed
                    rows.append({
                        "threads": count, "pretrainer": name, "step_ms": 1000 * med,
                        "step_ms_min": 1000 * min(times[name]), "audio_s_per_s": speed,
                        "speedup": speed / base, "encoder_tokens": built[name][5],
                        "saved_mb": saved.get(name, float("nan")), "batch_audio_s": audio,
                        "batch_shape": list(feats.shape[:2]), "dtype": dtype,
                    })
        finally:
            torch.set_num_threads(before)
    return rows


OBJECTIVE_HEADERS = ("threads", "pretrainer", "batch (utterances x frames)", "patches through the encoder",
                     "step ms (median)", "step ms (min)", "audio s / s", "speed-up vs first row",
                     "saved activations MB")


def objective_table_rows(rows: list[dict]) -> list[list]:
    """Rows of :func:`bench_objectives` as cells under :data:`OBJECTIVE_HEADERS`."""
    return [[r["threads"], r["pretrainer"], " x ".join(map(str, r["batch_shape"])),
             f"{100 * r['encoder_tokens']:.0f} %", round(r["step_ms"], 1), round(r["step_ms_min"], 1),
             round(r["audio_s_per_s"], 1), f"{r['speedup']:.2f}x", round(r["saved_mb"], 1)]
            for r in rows]


__all__ = ["OBJECTIVE_HEADERS", "bench_objectives", "build_pretrainer", "objective_table_rows"]
