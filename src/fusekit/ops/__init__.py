"""fusekit's ops, declared once and dispatched to a backend by the registry."""

from .kron import kron_factor_grads as kron_factor_grads
from .kron import kron_linear as kron_linear

__all__ = ["kron_linear", "kron_factor_grads"]
