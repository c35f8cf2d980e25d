"""``kospeech serve``: the web demo and JSON endpoint (:mod:`kospeech.serve.app`) and OpenAI's
transcription API (:mod:`kospeech.serve.openai_api`). Needs the ``serve`` extra.

:class:`Refused` is here because both APIs raise and answer it, each in its own shape.
"""


class Refused(Exception):
    """A request the server turns down: an HTTP ``status`` and a one-line reason (each API words its own body)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
