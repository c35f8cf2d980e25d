"""``kospeech serve``: the web demo and JSON endpoint (see :mod:`kospeech.serve.app`). Needs the ``serve`` extra."""
