"""Geometry of multi-compartment cells: SWC morphologies and the axial coupling."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import InputError


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
        broadcast it to ``(2, n_cells, n_comp)`` for a population. Where ``length``, ``diam``
        or ``r_axial`` is a torch tensor, the result is a float64 tensor differentiable with
        respect to them (fit diameters or ``r_axial`` through a differentiable
        :func:`fusekit.ops.cable_simulate`).
    """
    parent = np.asarray(parent)
    area, half_r, zero, cat, stack = _cylinders(parent, length, diam, r_axial)
    p = np.asarray(parent[1:], dtype=np.int64)
    g_ms = 1e3 / (half_r[1:] + half_r[p])  # S -> mS, between every compartment and its parent
    rows = [cat([zero, g_ms / area[1:]]), cat([zero, g_ms / area[p]])]
    return stack(rows)


def _cylinders(parent: np.ndarray, length: Any, diam: Any, r_axial: Any) -> tuple[Any, ...]:
    """Checked geometry: every cylinder's lateral area (cm^2) and half axial resistance (Ohm).

    Also returns a one-element zero and ``cat``/``stack`` of the arrays' library (torch when
    any input is a tensor, so that gradients reach the geometry; else NumPy float64).
    """
    if any(type(x).__module__.startswith("torch") for x in (length, diam, r_axial)):
        import torch

        as64 = functools.partial(torch.as_tensor, dtype=torch.float64)
        length, diam, r_axial = as64(length), as64(diam), as64(r_axial)
        zero = torch.zeros_like(length[:1])
        cat, stack = torch.cat, torch.stack
    else:
        length = np.asarray(length, dtype=np.float64)
        diam = np.asarray(diam, dtype=np.float64)
        zero = np.zeros(1)
        cat, stack = np.concatenate, np.stack
    for name, x in (("length", length), ("diam", diam)):
        if tuple(x.shape) != parent.shape:
            raise InputError(f"cable_coupling: {name} must have parent's shape {parent.shape} "
                             f"(one value per compartment, um), got {tuple(x.shape)}")
        if not bool(((x > 0) & (x < float("inf"))).all()):
            raise InputError(f"cable_coupling: every {name} must be positive and finite (um); "
                             "a compartment needs an area and a cross-section")
    if not float(r_axial.detach() if hasattr(r_axial, "detach") else r_axial) > 0:
        raise InputError(f"cable_coupling: r_axial must be positive (Ohm cm), got {r_axial!r}")
    length_cm = length * 1e-4
    radius_cm = diam * 0.5e-4
    area = np.pi * 2 * radius_cm * length_cm  # cm^2
    half_r = r_axial * (length_cm / 2) / (np.pi * radius_cm**2)  # Ohm
    return area, half_r, zero, cat, stack


@dataclass(frozen=True)
class CableTree:
    """Compartments and NEURON's zero-area junction nodes, as ``cable_simulate`` takes them.

    Attributes:
        parent: ``(n_nodes,)`` Hines order: the compartments, each junction right after the
            compartment whose end it is.
        coupling: ``(2, n_nodes)`` mS/cm^2, as :func:`cable_coupling`'s rows (a junction's
            row per the area of the compartment it ends, any positive scale would do).
        junction: ``(n_nodes,)`` bool: a junction node (give it ``c_m = 0``: no membrane, so
            the ops skip its channels and hold its states; with no current its row is then
            only its axial currents).
        node: ``(n_comp,)`` every compartment's index among the nodes.
        area: ``(n_nodes,)`` lateral area, cm^2 (a junction's: its scale above).
    """

    parent: np.ndarray
    coupling: np.ndarray
    junction: np.ndarray
    node: np.ndarray
    area: np.ndarray


def cable_tree(parent: Any, length: Any, diam: Any, r_axial: float = 100.0) -> CableTree:
    """Cylinders joined at their ends as NEURON joins sections: zero-area nodes at branches.

    NEURON (one segment per section, children attached at the parent's ``1`` end) puts a
    node of zero area where a section ends: with one child it only joins two
    half-sections in series, which :func:`cable_coupling` computes; with several children it
    couples the parent's half-section and all of theirs at once. This inserts such a node
    after every compartment with two or more children (``junction``), so that
    ``cable_simulate`` and ``cable_network_simulate`` with ``c_m = 0`` there compute what
    NEURON does (``tests/test_ion_cable_network.py`` compares them to round-off).
    :class:`CableNetwork` does this by default and keeps the junctions out of sight.

    Args:
        parent: ``(n_comp,)`` parent compartments in Hines order.
        length: ``(n_comp,)`` um.
        diam: ``(n_comp,)`` um.
        r_axial: Axial resistivity, Ohm cm.

    Returns:
        The :class:`CableTree`.

    Example:
        >>> import numpy as np
        >>> tree = cable_tree(np.array([-1, 0, 0]), np.full(3, 50.0), np.full(3, 2.0))
        >>> tree.parent.tolist(), tree.junction.tolist()  # the soma's end joins both
        ([-1, 0, 1, 1], [False, True, False, False])
    """
    parent = np.asarray(parent, dtype=np.int64)
    area, half_r = _cylinders(parent, np.asarray(length, np.float64),
                              np.asarray(diam, np.float64), float(r_axial))[:2]
    n_comp = parent.shape[0]
    n_children = np.bincount(parent[1:], minlength=n_comp) if n_comp > 1 else np.zeros(1, int)
    node = np.empty(n_comp, dtype=np.int64)
    parents: list[int] = []
    areas: list[float] = []
    junction: list[bool] = []
    g_up: list[float] = []  # conductance to the parent node, mS
    joint = np.full(n_comp, -1)  # the junction node at a compartment's end
    for i in range(n_comp):
        node[i] = len(parents)
        p = int(parent[i])
        if p < 0:
            parents.append(-1)
            g_up.append(0.0)
        elif joint[p] >= 0:  # onto the parent's junction: this half-section alone
            parents.append(int(joint[p]))
            g_up.append(1e3 / half_r[i])
        else:  # the parent's only child: both half-sections in series
            parents.append(int(node[p]))
            g_up.append(1e3 / (half_r[i] + half_r[p]))
        areas.append(float(area[i]))
        junction.append(False)
        if n_children[i] >= 2:
            joint[i] = len(parents)
            parents.append(int(node[i]))
            g_up.append(1e3 / half_r[i])
            areas.append(float(area[i]))
            junction.append(True)
    par = np.array(parents, dtype=np.int64)
    a = np.array(areas)
    g = np.array(g_up)
    up = np.where(par >= 0, par, 0)
    coupling = np.stack([g / a, g / a[up]])
    coupling[:, 0] = 0.0
    return CableTree(par, coupling, np.array(junction), node, a)


@dataclass(frozen=True)
class Morphology:
    """Compartments of a reconstructed cell, one per SWC point, in Hines order.

    Attributes:
        parent: ``(n_comp,)`` int64, ``parent[0] = -1``, ``parent[i] < i``.
        length: ``(n_comp,)`` um: distance to the parent point (the root: its diameter).
        diam: ``(n_comp,)`` um: twice the point's radius.
        xyz: ``(n_comp, 3)`` um.
        kind: ``(n_comp,)`` SWC structure types (1 soma, 2 axon, 3 basal, 4 apical dendrite).
        swc_id: ``(n_comp,)`` the point's id in the file.
    """

    parent: np.ndarray
    length: np.ndarray
    diam: np.ndarray
    xyz: np.ndarray
    kind: np.ndarray
    swc_id: np.ndarray

    @property
    def area(self) -> np.ndarray:
        """Lateral area of every compartment's cylinder, cm^2."""
        return np.pi * self.diam * self.length * 1e-8

    def coupling(self, r_axial: float = 100.0) -> np.ndarray:
        """:func:`cable_coupling` of this morphology, ``(2, n_comp)`` mS/cm^2."""
        return cable_coupling(self.parent, self.length, self.diam, r_axial)


def read_swc(path: str | os.PathLike[str], *, min_length: float = 0.01) -> Morphology:
    """Read an SWC reconstruction into compartments (one per point) in Hines order.

    Each point becomes a cylinder from its parent point to itself, of the point's diameter;
    the root (usually a one-point soma of radius ``R``) becomes a cylinder with length and
    diameter ``2 R``, whose lateral area is the sphere's, as in NEURON. Points are renumbered
    depth-first from the root so that every parent comes before its children.

    Args:
        path: SWC file (``id type x y z radius parent``, ``#`` comments).
        min_length: Shortest compartment, um (coincident points would have no area).

    Returns:
        The :class:`Morphology`.

    Raises:
        InputError: A line that is not 7 numbers, a radius that is not positive, a repeated
            id, a point that is its own parent, no points, several roots, a parent id that is
            not in the file, or points not connected to the root.
    """
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            try:
                if len(fields) < 7:
                    raise ValueError
                row = [float(x) for x in fields[:7]]
            except ValueError:
                raise InputError(
                    f"{path}, line {number}: an SWC point needs 7 numbers (id type x y z radius "
                    f"parent), got {line!r}") from None
            if not all(np.isfinite(row)) or row[0] != int(row[0]) or row[6] != int(row[6]):
                raise InputError(f"{path}, line {number}: id and parent must be integers and "
                                 f"every field finite, got {line!r}")
            if row[5] <= 0:
                raise InputError(f"{path}, line {number}: point {int(row[0])} has radius "
                                 f"{row[5]:g} um; radii must be positive (a compartment needs an "
                                 "area and a cross-section)")
            if row[6] == row[0]:
                raise InputError(f"{path}, line {number}: point {int(row[0])} is its own parent")
            rows.append(row)
    if not rows:
        raise InputError(f"{path}: no SWC points found")
    data = np.array(rows)
    ids = data[:, 0].astype(np.int64)
    parents = data[:, 6].astype(np.int64)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise InputError(f"{path}: point ids must be unique; {unique[counts > 1].tolist()} "
                         "appear more than once")
    roots = np.flatnonzero(parents < 0)
    if len(roots) != 1:
        raise InputError(f"{path}: an SWC cell needs exactly one root (parent -1), found "
                         f"{len(roots)}")
    row_of = {int(i): r for r, i in enumerate(ids)}
    children: dict[int, list[int]] = {r: [] for r in range(len(ids))}
    for r, p in enumerate(parents):
        if p >= 0:
            if int(p) not in row_of:
                raise InputError(f"{path}: point {ids[r]} names parent {p}, which is not in "
                                 "the file")
            children[row_of[int(p)]].append(r)
    order: list[int] = []
    stack = [int(roots[0])]
    while stack:  # depth-first, children in file order
        r = stack.pop()
        order.append(r)
        stack.extend(reversed(children[r]))
    if len(order) != len(ids):
        raise InputError(f"{path}: {len(ids) - len(order)} points are not connected to the "
                         "root")
    new_index = {r: k for k, r in enumerate(order)}
    xyz = data[order, 2:5]
    diam = 2 * data[order, 5]
    parent = np.array([-1] + [new_index[row_of[int(parents[r])]] for r in order[1:]],
                      dtype=np.int64)
    length = np.empty(len(order))
    length[0] = diam[0]
    length[1:] = np.linalg.norm(xyz[1:] - xyz[parent[1:]], axis=1)
    return Morphology(parent=parent, length=np.maximum(length, min_length), diam=diam, xyz=xyz,
                      kind=data[order, 1].astype(np.int64), swc_id=ids[order])
