"""Shared pytest fixtures of the speechpos test suite."""

import pytest

# ---------------------------------------------------------------------------------------------
# Speech data (issue 3): a tiny offline corpus in LibriSpeech layout, made once per session.
# Needs the Debian packages of tools/apt-packages.txt (bash tools/setup.sh installs them).
# ---------------------------------------------------------------------------------------------

TINY_LIBRISPEECH_SEED = 1234


@pytest.fixture(scope="session")
def tiny_librispeech(tmp_path_factory):
    """Path of the root of a tiny LibriSpeech-layout corpus (made in a few seconds).

    Holds ``train-clean-100`` (4 speakers, ~10 utterances, ~40 s), ``dev-clean`` and
    ``test-clean`` (2 speakers, ~4 utterances, ~15 s each): 16 kHz mono FLAC and
    ``<spk>-<chapter>.trans.txt``, as made by ``tools/make_corpus.py --size tiny --seed 1234``.
    Treat it as read-only (copy what a test needs to change).
    """
    from speechpos.data.corpus import make_corpus

    root = tmp_path_factory.mktemp("tiny_librispeech") / "LibriSpeech"
    make_corpus(root, size="tiny", seed=TINY_LIBRISPEECH_SEED, jobs=2, progress=False)
    return root


# ---------------------------------------------------------------------------------------------
# (end of the speech data fixtures)
# ---------------------------------------------------------------------------------------------
