"""Exporting models: the fine-tuning encoder built from a pretraining run, SentencePiece rows."""

import torch

from speechpos.inference.export import finetune_encoder, sentencepiece_rows
from speechpos.speech import build_speech_encoder

ARCH = dict(n_mels=80, patch_frames=4, encoder_kind="conformer", num_layers=2, d_model=32, nhead=4,
            d_ffn=64, dropout=0.0, kernel_size=7, conv_mode="off", null_key=True, max_positions=100)


def _pretrained(tmp_path, conv_mode):
    torch.manual_seed(0)
    args = {k: v for k, v in ARCH.items() if k != "encoder_kind"}
    enc = build_speech_encoder(kind="conformer", **{**args, "conv_mode": conv_mode})
    path = tmp_path / "encoder.ckpt"
    torch.save(enc.state_dict(), path)
    return {**ARCH, "conv_mode": conv_mode}, path, enc


def test_a_convolution_off_in_pretraining_is_switched_on_as_a_no_op(tmp_path):
    hp, path, pretrained = _pretrained(tmp_path, "off")
    encoder, args = finetune_encoder(hp, path)
    assert args["conv_mode"] == "on" and args["position_embedding"] == "learned"
    feats, lengths = torch.randn(2, 24, 80), torch.tensor([1.0, 0.5])
    pretrained.eval(), encoder.eval()
    with torch.no_grad():
        # Zero-initialised convolution and position embedding: the pretrained function at step 0.
        assert torch.allclose(encoder(feats, lengths)[0], pretrained(feats, lengths)[0], atol=1e-5)
    zeroed = [k for k, v in encoder.state_dict().items() if k in pretrained.state_dict()
              and not torch.equal(v, pretrained.state_dict()[k])]
    assert zeroed and all("conv" in k for k in zeroed)


def test_a_convolution_on_in_pretraining_keeps_its_weights(tmp_path):
    hp, path, pretrained = _pretrained(tmp_path, "on")
    encoder, _ = finetune_encoder(hp, path)
    for key, value in pretrained.state_dict().items():
        assert torch.equal(encoder.state_dict()[key], value), key


def test_sentencepiece_rows_move_units_to_speechbrains_indices():
    logits = torch.tensor([[5.0, 0.0, 1.0, 9.0]])  # blank, <unk>, unit 1, unit 2 (speechpos order)
    rows = sentencepiece_rows(4)
    assert logits[:, rows].argmax(-1).item() == 2  # unit 2 at SpeechBrain index 2
    assert logits[:, rows][0, 0] == 5.0  # the blank stays at 0
