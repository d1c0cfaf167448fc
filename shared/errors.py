"""Errors a user can cause. The CLI prints their message as one line and exits with code 2."""


class StreamlabError(Exception):
    """Base class: the message says what was wrong and what to do, in one line."""


class UnknownExperiment(StreamlabError):
    pass


class ConfigError(StreamlabError):
    pass


class RunError(StreamlabError):
    pass


class DataError(StreamlabError):
    """Missing, malformed or corrupt input data (a wrong path, a broken video, a bad layout)."""
