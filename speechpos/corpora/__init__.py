"""Offline speech corpora made by text-to-speech, in the exact layouts the recipes prepare.

* :mod:`~speechpos.corpora.librispeech`: a LibriSpeech-layout corpus of read public-domain text
  (``tools/data/make_corpus.py``), with :mod:`~speechpos.corpora.text` (the text, normalised like
  LibriSpeech transcripts) and :mod:`~speechpos.corpora.tts` (three Debian engines behind one
  interface).
* :mod:`~speechpos.corpora.speech_commands`: a Google Speech Commands-layout keyword corpus
  (``tools/data/make_kws_corpus.py``).

Their output is read by the preparation in :mod:`speechpos.speech.data`, as the real corpora are.
"""
