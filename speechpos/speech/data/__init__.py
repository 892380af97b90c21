"""Speech data for the recipes: preparation of the corpora and the pipelines that read them.

* :mod:`~speechpos.speech.data.librispeech`: LibriSpeech preparation (CSV manifests, checked
  inputs, Libri-light-style subsets), on the real corpus or an offline one
  (:mod:`speechpos.corpora`).
* :mod:`~speechpos.speech.data.speech_commands`: Google Speech Commands preparation (v1/v2, the
  12-class task or one class per word) and the dataset's layout.
* :mod:`~speechpos.speech.data.audio`: reading audio with errors that name the file (strict
  for training, converting for inference).
* :mod:`~speechpos.speech.data.dataio`, :mod:`~speechpos.speech.data.keyword_data`: SpeechBrain
  datasets over the LibriSpeech and Speech Commands manifests.
"""
