"""Geometry of multi-compartment cells: SWC morphologies and the axial coupling."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
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

    Raises:
        InputError: ``parent`` not a non-empty integer array in Hines order, ``length`` or
            ``diam`` of another shape or not positive and finite, ``r_axial`` not one
            positive finite number.
    """
    parent = _hines_parent("cable_coupling", parent)
    area, half_r, zero, cat, stack = _cylinders(parent, length, diam, r_axial)
    p = parent[1:]
    g_ms = 1e3 / (half_r[1:] + half_r[p])  # S -> mS, between every compartment and its parent
    rows = [cat([zero, g_ms / area[1:]]), cat([zero, g_ms / area[p]])]
    return stack(rows)


def _hines_parent(op: str, parent: Any) -> np.ndarray:
    """``parent`` as int64 after checking that it is a tree in Hines order (else InputError).

    The rule is the one the cable ops check (``hines_solve``, ``cable_simulate``):
    ``parent[0] = -1`` (the root, the only one) and ``0 <= parent[i] < i`` for every other
    compartment.
    """
    p = np.asarray(parent)
    if p.ndim != 1 or p.shape[0] == 0:
        raise InputError(f"{op}: parent must be a non-empty (n_comp,) array of parent indices "
                         f"(parent[0] = -1 for the root), got shape {p.shape}")
    if p.dtype.kind not in "iu":
        raise InputError(f"{op}: parent must hold integer compartment indices, got dtype "
                         f"{p.dtype}; convert whole numbers with parent.astype(np.int64)")
    p = p.astype(np.int64, copy=False)
    bad = np.flatnonzero((p < 0) | (p >= np.arange(p.shape[0])))
    bad = bad[bad > 0] if p[0] == -1 else np.array([0])
    if bad.size:
        i = int(bad[0])
        raise InputError(
            f"{op}: parent must list the compartments in Hines order: parent[0] = -1 (the "
            "root, the only one) and 0 <= parent[i] < i for every other compartment, but "
            f"parent[{i}] = {int(p[i])}; number the compartments depth-first from the root so "
            "that every parent comes before its children (read_swc does)")
    return p


def _cylinders(parent: np.ndarray, length: Any, diam: Any, r_axial: Any,
               op: str = "cable_coupling") -> tuple[Any, ...]:
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
            raise InputError(f"{op}: {name} must have parent's shape {parent.shape} "
                             f"(one value per compartment, um), got {tuple(x.shape)}")
        if not bool(((x > 0) & (x < float("inf"))).all()):
            raise InputError(f"{op}: every {name} must be positive and finite (um); "
                             "a compartment needs an area and a cross-section")
    ra = np.asarray(r_axial.detach().cpu() if hasattr(r_axial, "detach") else r_axial)
    if not (ra.size == 1 and ra.dtype.kind in "iuf" and math.isfinite(ra.item())
            and ra.item() > 0):
        why = ("; an infinite one would silently decouple every compartment"
               if ra.size == 1 and ra.dtype.kind == "f" and np.isinf(ra).all() else "")
        raise InputError(f"{op}: r_axial must be one positive finite number (axial "
                         f"resistivity, Ohm cm; NEURON's Ra, often 100), got {r_axial!r}{why}")
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


def numpy_geometry(op: str, **arrays: Any) -> list[Any]:
    """The geometry arrays as NumPy, for the trees and networks built without gradients.

    Tensors are detached; one that requires grad is refused (its gradient would be lost).
    """
    out = []
    for name, x in arrays.items():
        if getattr(x, "requires_grad", False):
            raise InputError(
                f"{op}: {name} requires grad, but {op} builds its tree in NumPy and would "
                "drop the gradient; for gradients w.r.t. the geometry use cable_coupling "
                f"(differentiable) with cable_simulate, or pass {name}.detach()")
        out.append(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    return out


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

    Raises:
        InputError: As :func:`cable_coupling`; also for a tensor that requires grad (the
            tree is NumPy, without gradients).

    Example:
        >>> import numpy as np
        >>> tree = cable_tree(np.array([-1, 0, 0]), np.full(3, 50.0), np.full(3, 2.0))
        >>> tree.parent.tolist(), tree.junction.tolist()  # the soma's end joins both
        ([-1, 0, 1, 1], [False, True, False, False])
    """
    parent = _hines_parent("cable_tree", parent)
    length, diam, r_axial = numpy_geometry("cable_tree", length=length, diam=diam,
                                           r_axial=r_axial)
    area, half_r = _cylinders(parent, np.asarray(length, np.float64),
                              np.asarray(diam, np.float64), r_axial, "cable_tree")[:2]
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

    def discretize(self, d_lambda: float = 0.1, *, frequency: float = 100.0,
                   r_axial: float = 100.0, c_m: float = 1.0,
                   max_length: float | None = None) -> Morphology:
        """Fewer, longer compartments by NEURON's d_lambda rule: sections cut into segments.

        A reconstruction has a point every micrometre or two, far finer than the cable needs.
        As NEURON does, this joins the points into sections (unbranched runs that keep one SWC
        type; the root stays a compartment of its own) and cuts every section into ``nseg``
        segments of equal length, ``nseg`` the odd number of the d_lambda rule
        (``fixnseg.hoc``): ``int((l / d_lambda + 0.9) / 2) * 2 + 1``, where ``l`` is the
        section's length in units of the AC length constant at ``frequency``, summed over its
        cylinders: ``sum_i L_i / lambda_f(d_i)``, ``lambda_f(d) = 1e5 sqrt(d / (4 pi f r_a
        c_m))`` um. ``max_length`` (um) also caps every segment's length.

        Each segment becomes the cylinder with the lateral area and the axial resistance of
        the cylinders it covers (a point's cylinder cut where a segment ends): the total
        membrane and every section's resistance are kept exactly, and ``coupling()`` then
        splits a segment's resistance at its middle.

        Args:
            d_lambda: Longest segment, in units of the length constant (NEURON's 0.1).
            frequency: Hz, of the length constant (NEURON's 100).
            r_axial: Axial resistivity, Ohm cm, as the simulation will use.
            c_m: uF/cm^2, as the simulation will use.
            max_length: Longest segment, um (``None``: no cap).

        Returns:
            A :class:`Morphology` of the segments in Hines order: ``xyz`` the point halfway
            along each segment's path, ``kind`` its section's, ``swc_id`` that of the point
            whose cylinder holds the segment's middle.

        Example:
            >>> import numpy as np
            >>> xyz = np.zeros((201, 3)); xyz[:, 0] = np.arange(201.0)   # a 200 um dendrite
            >>> m = Morphology(np.arange(-1, 200), np.r_[10.0, np.ones(200)], np.r_[10.0,
            ...                np.full(200, 2.0)], xyz, np.r_[1, np.full(200, 3)], np.arange(201))
            >>> m.discretize().length.round(3).tolist()   # the soma, then 5 segments
            [10.0, 40.0, 40.0, 40.0, 40.0, 40.0]
        """
        for name, x in (("d_lambda", d_lambda), ("frequency", frequency),
                        ("r_axial", r_axial), ("c_m", c_m),
                        ("max_length", 1.0 if max_length is None else max_length)):
            if not (np.isfinite(x) and x > 0):
                raise InputError(f"Morphology.discretize: {name} must be a positive number, "
                                 f"got {x!r}")
        return _discretize(self, float(d_lambda), 1e-5 * np.sqrt(
            4 * np.pi * float(frequency) * float(r_axial) * float(c_m)), max_length)

    def neuron_tree(self, d_lambda: float = 0.1, *, frequency: float = 100.0,
                    r_axial: float | Mapping[Any, float] = 100.0,
                    c_m: float | Mapping[Any, float] = 1.0) -> Any:
        """The cell NEURON builds from this reconstruction: Import3d, then the d_lambda rule.

        NEURON's ``Import3d_SWC_read`` and ``Import3d_GUI.instantiate`` make sections of the
        SWC points (a one-point soma becomes a cylinder with the sphere's area, dendrites on
        it are attached to ``soma(0.5)`` by a wire, every other child starts with a copy of
        its parent point), and NEURON models the membrane between two 3-d points as a
        frustum. This builds the same sections and ``nseg`` (``lambda_f`` over the 3-d points,
        ``nseg = int((L / (d_lambda lambda_f) + 0.9) / 2) * 2 + 1``), and every segment's area
        and half resistances integrated over its frusta as NEURON does: the voltages then
        agree with NEURON's to within 1e-4 mV (NEURON stores 3-d points in float32; with the
        points rounded to float32, to 1e-8 mV). :meth:`discretize` instead keeps fusekit's
        cylinder per point and every section's exact area and resistance.

        Args:
            d_lambda: Longest segment, in units of the AC length constant (NEURON's 0.1).
            frequency: Hz, of the length constant (NEURON's 100).
            r_axial: Axial resistivity, Ohm cm (``Ra``), for the rule and the coupling: one
                number, or one per section type, as NEURON users set ``Ra`` per section
                list: a mapping by SWC type or NEURON's name for it, ``{"soma": 100, "axon":
                150, "dend": 200}`` (``"apic"``, ``"dend_5"`` for type 5, or ``3``), where a
                section's own name (``"axon[0]": 300``) overrides its type's value.
            c_m: uF/cm^2 (``cm``), for the rule: one number or a mapping as ``r_axial``
                (spine-corrected dendrites, say). :class:`CableNetwork` takes it as the
                compartments' ``c_m`` unless given one (``tree.compartment_c_m()``).

        Returns:
            A :class:`fusekit.neuro.NeuronTree`: a :class:`CableTree` (run it with
            ``c_m = 0`` at its junctions, or pass it to :class:`CableNetwork` as the
            morphology) with every compartment's NEURON section and ``x``.

        Raises:
            InputError: Repeated ``swc_id`` values (a discretized morphology), a parent id
                above its child's (NEURON refuses such files), an argument that is not a
                positive number, or a mapping that misses one of the cell's section types or
                names a section the cell lacks.

        Example:
            >>> import numpy as np
            >>> xyz = np.zeros((201, 3)); xyz[:, 0] = np.arange(201.0)
            >>> m = Morphology(np.arange(-1, 200), np.r_[10.0, np.ones(200)], np.r_[10.0,
            ...                np.full(200, 2.0)], xyz, np.r_[1, np.full(200, 3)], np.arange(201))
            >>> tree = m.neuron_tree()
            >>> tree.names, tree.nseg.tolist()
            (('soma[0]', 'dend[0]'), [1, 5])
        """
        from ._import3d import neuron_tree

        return neuron_tree(self, d_lambda, frequency=frequency, r_axial=r_axial, c_m=c_m)


def _sections(m: Morphology) -> list[list[int]]:
    """Runs of points with one child each and one SWC type, each from its first point.

    Ordered by their first point, so that a section's parent section comes before it.
    """
    n = m.parent.shape[0]
    children: list[list[int]] = [[] for _ in range(n)]
    for i in range(1, n):
        children[int(m.parent[i])].append(i)

    def starts(i: int) -> bool:
        p = int(m.parent[i])
        return p == 0 or len(children[p]) != 1 or m.kind[i] != m.kind[p]

    sections = []
    for first in (i for i in range(1, n) if starts(i)):
        run = [first]
        while len(children[run[-1]]) == 1 and not starts(children[run[-1]][0]):
            run.append(children[run[-1]][0])
        sections.append(run)
    return sections


def _discretize(m: Morphology, d_lambda: float, per_sqrt_diam: float,
                max_length: float | None) -> Morphology:
    """:meth:`Morphology.discretize` (``per_sqrt_diam``: ``1 / (lambda_f(d) sqrt(d))``)."""
    parent, length, diam = [-1], [float(m.length[0])], [float(m.diam[0])]
    xyz, kind, swc_id = [m.xyz[0]], [int(m.kind[0])], [int(m.swc_id[0])]
    last = {0: 0}  # point -> the segment that ends at it (a section's last point)
    for run in _sections(m):
        pieces = np.asarray(m.length[run], dtype=np.float64)
        widths = np.asarray(m.diam[run], dtype=np.float64)
        total = float(pieces.sum())
        electrotonic = float((pieces / np.sqrt(widths)).sum()) * per_sqrt_diam
        nseg = int((electrotonic / d_lambda + 0.9) / 2) * 2 + 1
        if max_length is not None:
            nseg = max(nseg, int(np.ceil(total / max_length - 1e-12)))
        ends = np.cumsum(pieces)
        starts_at = ends - pieces
        up = last[int(m.parent[run[0]])]
        for k in range(nseg):
            a, b = total * k / nseg, total * (k + 1) / nseg
            cover = np.clip(np.minimum(ends, b) - np.maximum(starts_at, a), 0.0, None)
            area = float((np.pi * widths * cover).sum())  # um^2
            resist = float((4 * cover / (np.pi * widths**2)).sum())  # per unit r_axial, 1/um
            d = (4 * area / (np.pi**2 * resist)) ** (1 / 3)
            mid = (a + b) / 2
            j = min(int(np.searchsorted(ends, mid)), len(run) - 1)
            frac = (mid - starts_at[j]) / pieces[j]
            origin = m.xyz[int(m.parent[run[j]])]
            parent.append(up)
            length.append(area / (np.pi * d))
            diam.append(d)
            xyz.append(origin + frac * (m.xyz[run[j]] - origin))
            kind.append(int(m.kind[run[0]]))
            swc_id.append(int(m.swc_id[run[j]]))
            up = len(parent) - 1
        last[run[-1]] = up
    return Morphology(parent=np.array(parent, dtype=np.int64), length=np.array(length),
                      diam=np.array(diam), xyz=np.array(xyz, dtype=np.float64).reshape(-1, 3),
                      kind=np.array(kind, dtype=np.int64), swc_id=np.array(swc_id))


def synthetic_swc(path: str | os.PathLike[str], step: float = 1.5, seed: int = 0) -> None:
    """Write a synthetic reconstruction (for the tests, the benchmarks and the tour).

    A soma (radius 8 um), a basal dendrite that forks and forks again on both sides, a
    tapering apical dendrite that forks once and an axon (SWC type 2), a point every ``step``
    um along slightly wobbling paths: 1,013 points at the default step. Not a real cell;
    :func:`read_swc` reads it as one.
    """
    rng = np.random.default_rng(seed)
    rows: list[tuple[float, ...]] = [(1, 1, 0.0, 0.0, 0.0, 8.0, -1)]

    def neurite(parent_id: int, kind: int, start: Any, direction: Any, length: float,
                r0: float, r1: float) -> tuple[int, np.ndarray]:
        direction = np.asarray(direction, float) / np.linalg.norm(direction)
        pos, pid = np.asarray(start, float), parent_id
        n = max(2, int(length / step))
        for k in range(n):
            d = direction + rng.normal(0.0, 0.15, 3)
            pos = pos + step * d / np.linalg.norm(d)
            rows.append((len(rows) + 1, kind, *pos, r0 + (r1 - r0) * k / (n - 1), pid))
            pid = len(rows)
        return pid, pos

    tip, at = neurite(1, 3, (0, -8, 0), (0, -1, 0), 120, 1.2, 0.8)  # basal trunk
    for side in (-1, 1):
        tip2, at2 = neurite(tip, 3, at, (side, -1, 0), 80, 0.7, 0.5)
        for side2 in (-1, 1):
            neurite(tip2, 3, at2, (side + 0.5 * side2, -1, 0.3), 60, 0.4, 0.3)
    apex, at = neurite(1, 4, (0, 8, 0), (0, 1, 0), 300, 2.0, 1.0)  # apical, tapering
    for side in (-1, 1):
        neurite(apex, 4, at, (side, 1, 0), 150, 0.8, 0.4)
    neurite(1, 2, (8, 0, 0), (1, 0, 0), 400, 0.5, 0.5)  # axon
    with open(path, "w") as f:
        f.write("# a synthetic reconstruction written by fusekit.neuro._cable.synthetic_swc\n")
        for row in rows:
            f.write(" ".join(str(x) for x in row) + "\n")


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
            not in the file, or points not connected to the root; ``min_length`` not a positive
            finite number.
    """
    if (isinstance(min_length, bool) or not isinstance(min_length, int | float)
            or not math.isfinite(min_length) or min_length <= 0):
        raise InputError(f"read_swc: min_length must be a positive finite length in um (the "
                         f"shortest compartment; default 0.01), got {min_length!r}")
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
