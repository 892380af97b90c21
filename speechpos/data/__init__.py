"""Speech data: offline LibriSpeech-layout corpus (text, text-to-speech, corpus maker)."""
