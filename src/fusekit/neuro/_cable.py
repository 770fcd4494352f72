"""Geometry of multi-compartment cells: axial coupling from lengths, diameters and r_a."""

from __future__ import annotations

from typing import Any

import numpy as np


def cable_coupling(parent: Any, length: Any, diam: Any, r_axial: float = 100.0) -> np.ndarray:
    """Axial coupling of cylindrical compartments, in the layout of ``cable_simulate``.

    Compartment ``i`` is a cylinder of ``length[i]`` and ``diam[i]`` (um); the axial
    resistance between the centres of ``i`` and its parent ``p`` is
    ``r_a (L_i / 2) / (pi r_i^2) + r_a (L_p / 2) / (pi r_p^2)``, so the conductance ``g`` is
    split between the two half-compartments as in NEURON with one segment per section. The
    couplings are ``g / area_i`` and ``g / area_p`` in mS/cm^2.

    Example:
        >>> import numpy as np
        >>> parent = np.array([-1, 0, 1])
        >>> cable_coupling(parent, np.full(3, 20.0), np.full(3, 2.0)).shape
        (2, 3)

    Args:
        parent: ``(n_comp,)`` parent indices in Hines order.
        length: ``(n_comp,)`` um.
        diam: ``(n_comp,)`` um.
        r_axial: Axial resistivity, Ohm cm (NEURON's ``Ra``).

    Returns:
        ``(2, n_comp)`` float64: row 0 ``a_(i, parent)``, row 1 ``a_(parent, i)``, mS/cm^2;
        broadcast it to ``(2, n_cells, n_comp)`` for a population.
    """
    parent = np.asarray(parent)
    length_cm = np.asarray(length, dtype=np.float64) * 1e-4
    radius_cm = np.asarray(diam, dtype=np.float64) * 0.5e-4
    area = np.pi * 2 * radius_cm * length_cm  # cm^2
    half_r = r_axial * (length_cm / 2) / (np.pi * radius_cm**2)  # Ohm
    out = np.zeros((2, parent.shape[0]))
    for i in range(1, parent.shape[0]):
        p = parent[i]
        g_ms = 1e3 / (half_r[i] + half_r[p])  # S -> mS
        out[0, i] = g_ms / area[i]
        out[1, i] = g_ms / area[p]
    return out
