"""``compile: auto`` and the compiled encoder: same maths as eager, over batches of varying shape."""

import pytest
import torch
from speechbrain.utils.run_opts import RunOptions

from speechpos.compilation import choose_compile, resolve_compile
from speechpos.speech.model import build_speech_encoder


@pytest.mark.parametrize(("requested", "device", "expected"), [
    ("auto", "cuda:0", False), ("auto", "cpu", False), ("True", "cpu", True), ("true", "cuda:0", True),
    (False, "cuda", False), ("false", "cuda:1", False),
])
def test_auto_is_off_where_compiling_was_measured_not_to_pay_and_explicit_asks_are_kept(requested, device, expected):
    assert choose_compile(requested, device)[0] is expected


def test_command_line_compile_wins_and_the_brain_gets_a_bool():
    hparams = {"compile": "auto", "device": "cpu"}
    assert resolve_compile(RunOptions(), hparams) is False and hparams["compile"] is False
    cli = RunOptions.from_dictionary({"compile": True})
    hparams = {"compile": "auto"}
    assert resolve_compile(cli, hparams) is True and hparams["compile"] is True
    hparams = {"compile": "auto"}
    cuda = RunOptions.from_dictionary({"device": "cuda:0"})
    assert resolve_compile(cuda, hparams) is False and hparams["compile"] is False
    with pytest.raises(ValueError, match="compile must be one of auto, True, False; got 'maybe'"):
        resolve_compile(RunOptions(), {"compile": "maybe"})


def test_ctc_yaml_names_speechbrains_compile_options():
    from pathlib import Path

    from hyperpyyaml import load_hyperpyyaml

    root = Path(__file__).resolve().parents[2]
    hp = load_hyperpyyaml((root / "recipes/LibriSpeech/hparams/ctc.yaml").read_text(),
                          {"output_folder": "/tmp/unused", "num_layers": 1})
    assert hp["compile"] == "auto"
    assert set(hp["compile_module_keys"]) <= set(hp["modules"])
    assert hp["compile_using_dynamic_shape_tracing"] is True


def test_dynamically_compiled_encoder_matches_eager_on_two_batch_shapes():
    """Traced once with dynamic shapes (dynamo + AOTAutograd: forward and backward graphs), the
    encoder serves batches of another size and length with eager's maths. The inductor backend
    itself (minutes of C++ compiling on a fresh machine) runs in ``tools/bench/bench_ctc_step.py
    --compile`` and ``tools/gpu/gpu_check.sh``, not in the test suite."""
    torch.manual_seed(0)
    enc = build_speech_encoder(n_mels=8, patch_frames=2, kind="transformer", num_layers=1, d_model=16,
                               nhead=2, d_ffn=32, dropout=0.0).train()
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    backend = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(enc.encoder, dynamic=True, backend=backend)
    frames_traced = []
    for batch, frames in ((3, 40), (2, 26)):
        feats = torch.randn(batch, frames, 8)
        lengths = torch.ones(batch)
        lengths[-1] = 0.75
        tokens, ref_lens = enc.embed(feats, lengths)
        ref = enc.encoder(tokens, ref_lens)
        got = compiled(tokens, ref_lens)
        valid = torch.arange(ref.shape[1])[None] < ref_lens[:, None]
        torch.testing.assert_close(got[valid], ref[valid], atol=1e-4, rtol=1e-4)
        (grad_ref,) = torch.autograd.grad(ref[valid].sum(), enc.encoder.parameters().__next__())
        (grad_got,) = torch.autograd.grad(got[valid].sum(), enc.encoder.parameters().__next__())
        torch.testing.assert_close(grad_got, grad_ref, atol=1e-3, rtol=1e-3)
        frames_traced.append(backend.frame_count)
    assert frames_traced[0] > 0 and frames_traced[1] == frames_traced[0]  # the second shape: no recompile


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("cuda", [False, True])
def test_training_batches_are_pinned_where_cuda_is(monkeypatch, dynamic, cuda):
    """The CUDA data path, checked on CPU: batches are pinned exactly when a GPU is there."""
    from speechpos.recipes import train_loader_options

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    hparams = {"dynamic_batching": dynamic, "train_dataloader_opts": {"batch_size": 4},
               "max_batch_length_train": 10, "num_buckets": 2, "max_batch_ex": 8, "num_workers": 0}
    import speechbrain as sb

    monkeypatch.setattr(sb.dataio.sampler, "DynamicBatchSampler", lambda *a, **k: "sampler")
    opts = train_loader_options(hparams, train_set=[])
    assert opts["pin_memory"] is cuda
    assert ("batch_sampler" in opts) is dynamic
    hparams["train_dataloader_opts"] = {"batch_size": 4, "pin_memory": False}
    if not dynamic:
        assert train_loader_options(hparams, [])["pin_memory"] is False  # the yaml wins
