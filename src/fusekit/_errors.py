"""Exception classes. Every message says what was wrong and what to do about it."""


class FusekitError(Exception):
    """Base class of every error fusekit raises on purpose."""


class InputError(FusekitError, ValueError):
    """An argument has the wrong shape, dtype, values or kind of array."""


class MixedArraysError(InputError):
    """Inputs of one call live in different array libraries or on different devices."""


class BackendUnavailableError(FusekitError, RuntimeError):
    """A backend was asked for by name but cannot run on this machine."""


class NoKernelError(FusekitError, RuntimeError):
    """No registered kernel fits the inputs; the message lists every candidate and why."""


class UnknownBackendError(FusekitError, ValueError):
    """A backend name that fusekit does not know."""
