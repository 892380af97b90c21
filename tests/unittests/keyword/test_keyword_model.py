"""The Keyword Transformer: shapes, features as the paper, no position leak without PE."""

import torch

from speechpos.position import PositionEmbedding, sample_context
from speechpos.speech.keyword_model import KeywordFeatures, KeywordTransformer, TokenClassifier

SMALL = dict(d_model=32, num_layers=2, nhead=4, d_ffn=64, patch_frames=2)


def test_mfcc_as_the_paper():
    feats = KeywordFeatures()(torch.randn(3, 16000))
    assert feats.shape == (3, 98, 40)


def test_shapes_with_context():
    kwt = KeywordTransformer(**SMALL, position_embedding="learned")
    feats = torch.randn(2, 98, 40)
    ctx = sample_context(torch.tensor([49, 49]), 0.25)
    assert kwt(feats, ctx).shape == (2, 49, 32)
    assert isinstance(kwt.position_embedding, PositionEmbedding)
    assert float(kwt.position_embedding.weight.detach().abs().sum()) == 0.0  # zero-initialised


def test_no_position_leak_without_pe():
    torch.manual_seed(0)
    kwt = KeywordTransformer(**SMALL, position_embedding="none").eval()
    classifier = TokenClassifier(32, 12).eval()
    feats = torch.randn(2, 98, 40)
    perm = torch.randperm(49)
    permuted = feats.reshape(2, 49, 80)[:, perm].reshape(2, 98, 40)
    out, out_p = kwt(feats), kwt(permuted)
    torch.testing.assert_close(out[:, perm], out_p, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(classifier.pool(out), classifier.pool(out_p), atol=1e-5, rtol=1e-4)


def test_learned_pe_can_see_order():
    kwt = KeywordTransformer(**SMALL, position_embedding="learned").eval()
    with torch.no_grad():
        kwt.position_embedding.weight.normal_()
    feats = torch.randn(1, 98, 40)
    perm = torch.randperm(49)
    permuted = feats.reshape(1, 49, 80)[:, perm].reshape(1, 98, 40)
    assert not torch.allclose(kwt(feats).mean(1), kwt(permuted).mean(1), atol=1e-4)
