"""KoSpeech: Korean end-to-end speech recognition, assembled from registered components."""

__version__ = "0.1.0"
