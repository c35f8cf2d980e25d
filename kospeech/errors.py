"""Exceptions with messages meant for people: each names the file, key or utterance at fault."""


class KoSpeechError(Exception):
    """Base of every error the toolkit raises on purpose (as opposed to a bug)."""


class ConfigError(KoSpeechError, ValueError):
    """A config (YAML file, override or component arguments) that cannot be used as written."""


class RegistryError(ConfigError):
    """An unknown, duplicate or unusable registry name."""


class DataError(KoSpeechError, ValueError):
    """Audio, transcripts or data dirs that cannot be read; the message names the file."""


class TrainingError(KoSpeechError, RuntimeError):
    """A run that cannot usefully go on (every update non-finite); the message says where it stopped."""
