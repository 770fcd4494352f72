"""Backends. Each is a package with ``unavailable_reason()`` and one module per op family.

The registry imports a backend package by name the first time a call needs it, and a family
module only when that backend is available; nothing here is imported by ``import fusekit``.
"""
