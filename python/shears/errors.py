"""The exceptions shears raises. Every one derives from :class:`Error`; the ones that fit a
built-in kind derive from it too, so ``except ValueError`` and ``except FileNotFoundError`` work.
Their messages are the CLI's."""


class Error(Exception):
    """Anything shears could not do."""


class InvalidInput(Error, ValueError):
    """A request, config value, model or file shears cannot honour (an unknown method, a target
    outside its range, an op shears cannot import, a wrong shape, NaN)."""


class NotFound(Error, FileNotFoundError):
    """A model, config, sweep or data file that does not exist."""


class RunBusy(Error):
    """Another process is running the same run directory right now."""
