"""Wyoming protocol server for OpenAI-compatible speech-to-text and text-to-speech APIs."""

__version__ = "1.0.0"
