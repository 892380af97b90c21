"""speechpos: position-prediction pretraining (MP3, DropPos) for speech and vision on SpeechBrain."""

__version__ = "0.1.0"
