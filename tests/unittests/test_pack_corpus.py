"""tools/data/pack_corpus.py (a corpus carried to a GPU node as Opus) and a corpus taken as it is:
what they refuse, each with the folder or file named. The round trip itself runs on the real
tiny corpus in tests/integration/test_gpu_check.py."""

import importlib.util
from pathlib import Path

import pytest

from speechpos.experiments.runs import made_corpus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pack_corpus():
    spec = importlib.util.spec_from_file_location("tool_pack_corpus", ROOT / "tools" / "data" / "pack_corpus.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_an_unfinished_corpus_is_not_packed(pack_corpus, tmp_path):
    (tmp_path / "c" / "train-clean-100").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'c'}: no corpus.json, not a finished corpus"):
        pack_corpus.pack(tmp_path / "c", tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_unpack_refuses_a_folder_without_packed_audio_and_names_a_corrupt_file(pack_corpus, tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "corpus.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'p'}: no .opus.ogg files, not a packed corpus"):
        pack_corpus.unpack(tmp_path / "p", tmp_path / "u")
    bad = tmp_path / "p" / "train-clean-100" / "1" / "2" / "1-2-0000.opus.ogg"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"OggS but not really")
    with pytest.raises(RuntimeError, match=f"{bad}: not a readable Opus file"):
        pack_corpus.unpack(tmp_path / "p", tmp_path / "u")


def test_a_corpus_taken_as_it_is_must_have_the_librispeech_layout(tmp_path):
    (tmp_path / "c").mkdir()
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'c'}: no train-clean-100 folder"):
        made_corpus(tmp_path / "c", None, 1234, 1, tmp_path / "prep")
