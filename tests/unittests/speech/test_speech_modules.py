import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from speechpos.speech import (
    CheckpointMismatchError,
    FramePatchEmbedding,
    build_speech_encoder,
    load_encoder_state,
    set_convolution_mode,
)
from speechpos.speech.ctc import (
    CharTokenizer,
    TranscriptError,
    beam_decode,
    greedy_decode,
    make_beam_searcher,
)
from speechpos.speech.data.audio import AudioError, read_audio_checked, read_audio_converted

SMALL = dict(num_layers=2, d_model=32, nhead=4, d_ffn=64, dropout=0.0, kernel_size=7)


def conformer(conv_mode, **kw):
    torch.manual_seed(0)
    return build_speech_encoder(kind="conformer", conv_mode=conv_mode, **SMALL, **kw).eval()


def test_convolution_switched_on_with_zero_init_keeps_the_pretrained_function():
    pretrained = conformer("off")
    feats, lens = torch.randn(2, 48, 80), torch.tensor([1.0, 0.7])
    before, _ = pretrained(feats, lens)
    finetune = conformer("on", position_embedding=True)
    path = "/tmp/_speechpos_conf.ckpt"
    torch.save(pretrained.state_dict(), path)
    load_encoder_state(finetune, path)
    set_convolution_mode(finetune, "on", zero_init=True)
    after, _ = finetune(feats, lens)
    valid = torch.arange(before.shape[1])[None] < torch.tensor([12, 8])[:, None]
    torch.testing.assert_close(after[valid], before[valid], atol=1e-5, rtol=1e-4)
    # ... and the convolution does contribute once its projection has learned something
    for gate in [m for m in finetune.modules() if type(m).__name__ == "ConvolutionGate"]:
        torch.nn.init.normal_(gate.conv.after_conv[2].weight)
    changed, _ = finetune(feats, lens)
    assert (changed - after).abs().max() > 1e-3


@pytest.mark.parametrize("conv_mode", ["on", "shuffled", "off"])
def test_padding_content_never_reaches_valid_tokens(conv_mode):
    enc = conformer(conv_mode)
    feats = torch.randn(1, 40, 80)
    outs = []
    for _ in range(2):
        torch.manual_seed(5)  # same shuffle in both runs; only the padding differs
        padded_feats = torch.cat([feats, 100 * torch.randn(1, 24, 80)], 1)
        torch.manual_seed(5)
        out, lengths = enc(padded_feats, torch.tensor([40 / 64]))
        outs.append(out[:, :10])
    assert int(lengths[0]) == 10
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-4)
    if conv_mode == "off":  # no convolution: padded and unpadded runs agree exactly
        alone, _ = enc(feats, torch.tensor([1.0]))
        torch.testing.assert_close(outs[0], alone, atol=1e-5, rtol=1e-4)


def test_conv_mode_must_be_known():
    with pytest.raises(ValueError, match="conv_mode must be one of"):
        conformer("sometimes")


def test_patches_shorter_than_one_patch_are_refused():
    embed = FramePatchEmbedding(80, 4, 16)
    with pytest.raises(ValueError, match="input of 3 frames is shorter than one patch of 4 frames"):
        embed(torch.randn(1, 3, 80), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="shorter than one patch"):
        embed(torch.randn(2, 40, 80), torch.tensor([1.0, 0.05]))


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    conf = build_speech_encoder(kind="conformer", **SMALL)
    trans = build_speech_encoder(kind="transformer", **SMALL)
    path = tmp_path / "conformer.ckpt"
    torch.save(conf.state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match=r"conformer.ckpt was saved from a different architecture: \d+ keys missing .* keys unexpected"):
        load_encoder_state(trans, path)
    bad = tmp_path / "garbage.ckpt"
    bad.write_text("not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="garbage.ckpt: not a readable PyTorch checkpoint"):
        load_encoder_state(trans, bad)
    with pytest.raises(FileNotFoundError, match="no pretrained encoder 'encoder.ckpt' found"):
        load_encoder_state(trans, tmp_path / "missing.ckpt")


def test_position_embedding_may_be_new_and_stays_zero(tmp_path):
    src = build_speech_encoder(kind="transformer", **SMALL)
    dst = build_speech_encoder(kind="transformer", position_embedding=True, **SMALL)
    torch.save(src.state_dict(), tmp_path / "e.ckpt")
    load_encoder_state(dst, tmp_path / "e.ckpt")
    assert float(dst.position_embedding.weight.detach().abs().sum()) == 0.0
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)


def _write(path, data, rate):
    sf.write(str(path), data, rate)
    return str(path)


def test_audio_errors_name_the_file(tmp_path):
    good = _write(tmp_path / "ok.flac", np.zeros(16000, dtype="float32"), 16000)
    assert read_audio_checked(good).shape == (16000,)
    with pytest.raises(AudioError, match=r"missing.flac: audio file not found"):
        read_audio_checked(str(tmp_path / "missing.flac"))
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + b"\x00" * 100)
    with pytest.raises(AudioError, match=r"corrupt.flac: cannot decode audio"):
        read_audio_checked(str(corrupt))
    with pytest.raises(AudioError, match=r"rate8k.flac: sample rate is 8000 Hz, expected 16000 Hz"):
        read_audio_checked(_write(tmp_path / "rate8k.flac", np.zeros(8000, dtype="float32"), 8000))
    with pytest.raises(AudioError, match=r"stereo.flac: 2 channels, expected mono"):
        read_audio_checked(_write(tmp_path / "stereo.flac", np.zeros((1600, 2), dtype="float32"), 16000))
    with pytest.raises(AudioError, match=r"short.flac: 100 samples \(0.006 s\) is shorter than one patch \(640 samples\)"):
        read_audio_checked(_write(tmp_path / "short.flac", np.zeros(100, dtype="float32"), 16000), min_samples=640)


def test_inference_reader_downmixes_and_resamples_but_keeps_the_errors(tmp_path, caplog):
    """read_audio_converted (inference) accepts what read_audio_checked (training) refuses."""
    import logging

    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype("float32")  # 1 s of 440 Hz at 16 kHz
    ok = _write(tmp_path / "ok.flac", tone, 16000)
    with caplog.at_level(logging.INFO, logger="speechpos"):
        assert torch.equal(read_audio_converted(ok), read_audio_checked(ok))
        t44 = np.arange(44100) / 44100
        left = 0.5 * np.sin(2 * np.pi * 440 * t44) + 0.3 * np.sin(2 * np.pi * 1000 * t44)
        right = 0.5 * np.sin(2 * np.pi * 440 * t44) - 0.3 * np.sin(2 * np.pi * 1000 * t44)
        both = np.stack([left, right], 1).astype("float32")
        stereo = _write(tmp_path / "stereo.wav", both, 44100)
        wav = read_audio_converted(stereo)
    assert "ok.flac" not in caplog.text
    assert f"{stereo}: converted from 44100 Hz, 2 channel(s) to 16000 Hz mono" in caplog.text
    assert wav.dtype == torch.float32 and wav.shape == (16000,)
    assert torch.allclose(wav[100:-100], torch.from_numpy(tone)[100:-100], atol=1e-3)  # the mean
    with pytest.raises(AudioError, match=r"stereo.wav: sample rate is 44100 Hz, expected 16000 Hz"):
        read_audio_checked(stereo)  # training stays strict

    with pytest.raises(AudioError, match=r"missing.flac: audio file not found"):
        read_audio_converted(str(tmp_path / "missing.flac"))
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + b"\x00" * 100)
    with pytest.raises(AudioError) as strict:
        read_audio_checked(str(corrupt))
    with pytest.raises(AudioError) as err:
        read_audio_converted(str(corrupt))
    assert str(err.value) == str(strict.value)
    assert "corrupt.flac: cannot decode audio (" in str(err.value)
    # too short is measured after resampling: 320 samples at 8 kHz are 640 at 16 kHz
    at8k = _write(tmp_path / "8k.flac", np.zeros(320, "float32"), 8000)
    assert read_audio_converted(at8k, min_samples=640).shape == (640,)
    short = _write(tmp_path / "short.wav", np.zeros((1000, 2), "float32"), 44100)
    message = r"short.wav: 363 samples \(0.023 s\) is shorter than one patch \(640 samples\)"
    with pytest.raises(AudioError, match=message):
        read_audio_converted(short, min_samples=640)


def _emission(tok, text, blanks=True):
    """Log-probs whose best path spells ``text`` (a blank between repeated letters)."""
    path = []
    for i, c in enumerate(text):
        if i and c == text[i - 1]:
            path.append(tok.blank_index)
        path.append(tok.encode(c)[0])
        if blanks:
            path.append(tok.blank_index)
    onehot = F.one_hot(torch.tensor([path]), len(tok)).float()
    return torch.log(0.9 * onehot + 0.1 / len(tok))


def test_decoding_a_known_emission_gives_the_known_text():
    tok = CharTokenizer.from_texts(["HELLO THERE", "IT'S A LITTLE BOOK"])
    text = "IT'S A LITTLE BOOK"
    logp = _emission(tok, text)
    assert greedy_decode(logp, torch.tensor([1.0]), tok) == [text]
    assert beam_decode(make_beam_searcher(tok, 8), logp, torch.tensor([1.0])) == [text]
    # repeated letters with no blank between them collapse, as CTC says
    assert greedy_decode(_emission(tok, "BOOK", blanks=False), torch.tensor([1.0]), tok) == ["BOOK"]


def test_tokenizer_refuses_unknown_characters_and_round_trips(tmp_path):
    tok = CharTokenizer.load_or_create(str(tmp_path / "tok.txt"), ["AB C"])
    again = CharTokenizer.load_or_create(str(tmp_path / "tok.txt"), [])
    assert tok.vocab_list == again.vocab_list and tok.blank_index == 0
    assert again.decode(again.encode("CAB A")) == "CAB A"
    with pytest.raises(TranscriptError, match=r"characters \['Z'\] are not in the tokenizer's set"):
        tok.encode("ZA")


def test_sentencepiece_units_round_trip_with_blank_at_zero(tmp_path):
    from speechpos.speech.ctc import SentencePieceTokenizer

    csv = tmp_path / "train.csv"
    words = ["AND THE LORD SPAKE UNTO MOSES", "IN THE BEGINNING GOD CREATED THE HEAVEN",
             "A SMALL DOG RAN ACROSS THE ROAD", "THE LIGHT SHINETH IN DARKNESS"]
    csv.write_text("ID,duration,wav,spk_id,wrd\n" + "".join(
        f"u{i},1.0,x.flac,s,{w}\n" for i, w in enumerate(words * 5)))
    tok = SentencePieceTokenizer(str(tmp_path / "sp"), 30, str(csv), model_type="unigram")
    ids = tok.encode("THE LORD GOD")
    assert min(ids) >= 1 and tok.blank_index == 0 and tok.vocab_list[0] == "<blank>"
    assert tok.decode(ids) == "THE LORD GOD"
    assert tok.decode([0, *ids, 0]) == "THE LORD GOD"
    assert len(tok.vocab_list) == len(tok) == 31
