"""A reconstruction as NEURON's Import3d and d_lambda rule build it: sections of frusta.

NEURON users load SWC files with ``Import3d_SWC_read`` / ``Import3d_GUI.instantiate`` and
then set every section's ``nseg`` by the d_lambda rule. :func:`neuron_tree` builds that
same cell for fusekit's cable ops: the same sections, 3-d points and attachments
(``read_swc.hoc``'s rules, the soma a sphere where it is one point), the same ``nseg``
(``stdlib.hoc``'s ``lambda_f`` over the 3-d points), and every segment's area and axial
resistance integrated over its frusta as NEURON's ``nrn_area_ri`` does, so that ``area(x)``
and ``ri(x)`` agree with NEURON's (``tests/test_ion_import3d.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import InputError
from ..ops._common import is_whole
from ._cable import CableTree

#: NEURON's section names per SWC type (``Import3d_GUI.type2name``).
_TYPE_NAMES = {1: "soma", 2: "axon", 3: "dend", 4: "apic"}


@dataclass(frozen=True)
class NeuronTree(CableTree):
    """A :class:`CableTree` of NEURON's segments, with the sections they come from.

    The compartments are NEURON's segments; the tree's nodes add NEURON's zero-area nodes
    where three or more segments meet (``junction``: give them ``c_m = 0``). Compartment 0 is
    the root section's middle segment, ``soma(0.5)``.

    Attributes:
        section: ``(n_comp,)`` every compartment's section (an index into ``names``).
        x: ``(n_comp,)`` the segment's centre along its section, 0..1 (NEURON's ``seg.x``).
        kind: ``(n_comp,)`` the SWC type of its section.
        names: Every section's NEURON name (``soma[0]``, ``dend[3]``, ...), in
            ``Import3d_GUI``'s numbering.
        points: Every section's 3-d points ``(n3d, 4)``: x, y, z, diam (um), NEURON's
            ``pt3d`` list.
        section_parent: ``(n_sections,)`` the parent section (``-1``: the root).
        parent_x: ``(n_sections,)`` where on its parent a section's ``0`` end is attached.
        nseg: ``(n_sections,)`` segments per section.
        r_axial: ``(n_sections,)`` every section's axial resistivity (``Ra``), Ohm cm, as the
            coupling and ``nseg`` were computed with.
        c_m: ``(n_sections,)`` every section's membrane capacitance (``cm``), uF/cm^2, as
            ``nseg`` was computed with; :meth:`compartment_c_m` gives it per compartment
            (:class:`CableNetwork` takes that unless given ``c_m``).
    """

    section: np.ndarray
    x: np.ndarray
    kind: np.ndarray
    names: tuple[str, ...]
    points: tuple[np.ndarray, ...]
    section_parent: np.ndarray
    parent_x: np.ndarray
    nseg: np.ndarray
    r_axial: np.ndarray
    c_m: np.ndarray

    def compartment_c_m(self) -> np.ndarray:
        """``(n_comp,)`` every compartment's ``c_m`` (its section's), uF/cm^2."""
        return self.c_m[self.section]

    def compartment(self, name: str, x: float = 0.5) -> int:
        """The compartment of NEURON's ``name(x)`` (the segment that holds ``x``).

        Example:
            >>> tree.compartment("soma[0]")  # doctest: +SKIP
            0
        """
        try:
            s = self.names.index(name)
        except ValueError:
            raise InputError(f"NeuronTree.compartment: no section {name!r}; the sections are "
                             f"{', '.join(self.names[:6])}{', ...' if len(self.names) > 6 else ''}"
                             ) from None
        if not 0.0 <= x <= 1.0:
            raise InputError(f"NeuronTree.compartment: x must lie in [0, 1], got {x!r}")
        k = min(int(x * int(self.nseg[s])), int(self.nseg[s]) - 1)
        comps = np.flatnonzero(self.section == s)
        return int(comps[np.argsort(self.x[comps])[k]])


@dataclass
class _Section:
    """One ``Import3d_Section``: its own first point, points, parent and flags."""

    first: int  # the index (id order) of its first own point
    points: list[int]  # point indices, a copy of the parent point first where there is one
    kind: int
    parent: int = -1  # the parent section's position in the list
    parent_x: float = 1.0
    wire: bool = False  # NEURON's ``first = 1``: the copied parent point is not used
    first_diam: float | None = None  # the copied parent point's diameter, where it differs


def _id_order(m: Any) -> tuple[np.ndarray, np.ndarray]:
    """Points in SWC id order (as Import3d sorts them) and each one's parent in that order."""
    ids = np.asarray(m.swc_id)
    if np.unique(ids).size != ids.size:
        raise InputError("neuron_tree: the morphology's swc_id values repeat; build the tree "
                         "from read_swc's per-point Morphology, not a discretized one")
    order = np.argsort(ids, kind="stable")
    where = np.empty_like(order)
    where[order] = np.arange(order.size)
    parent = np.asarray(m.parent)[order]
    pidx = np.where(parent >= 0, where[np.maximum(parent, 0)], -1)
    bad = np.flatnonzero((pidx >= np.arange(order.size)) & (pidx >= 0))
    if bad.size:
        k = int(bad[0])
        raise InputError(f"neuron_tree: point {ids[order[k]]} has parent "
                         f"{ids[order[pidx[k]]]}, a larger id; NEURON's Import3d reads only "
                         "files in which every parent id is below its child's")
    return order, pidx


def _import3d_sections(kind: np.ndarray, xyz: np.ndarray, diam: np.ndarray,
                       pidx: np.ndarray) -> list[_Section]:
    """``Import3d_SWC_read``'s sections (``mark_branch``, ``sectionify``, ``mksection``)."""
    n = kind.size
    pidx = pidx.copy()
    nchild = np.zeros(n)
    to_proximal = np.zeros(n, dtype=bool)
    for i in range(n):  # mark_branch
        p = int(pidx[i])
        if p < 0:
            continue
        nchild[p] += 1
        if p != i - 1:  # not the next point: a section ends at p
            nchild[p] += 0.01
            if p > 1:
                if kind[p] != 1 and kind[pidx[p]] == 1:  # p begins a dendrite on the soma
                    to_proximal[i] = True
                    nchild[p] = 1
            elif p == 0 and kind[p] != 1:
                to_proximal[i] = True
                nchild[p] = 1
        if kind[p] != kind[i]:
            nchild[p] += 0.01
    soma_children = np.zeros(n)
    for i in range(1, n):
        if kind[i] == 1 and pidx[i] >= 0 and kind[pidx[i]] == 1:
            soma_children[pidx[i]] += 1
    sphere3 = False
    if int((kind == 1).sum()) == 3 and n >= 3 and pidx[1] == 0 and pidx[2] == 0 \
            and nchild[1] == 0 and nchild[2] == 0 and diam[1] == diam[0] == diam[2]:
        span = np.linalg.norm(xyz[1] - xyz[0]) + np.linalg.norm(xyz[2] - xyz[0])
        if abs(span / diam[0] - 1) < 0.01:  # NeuroMorpho.org's three-point sphere
            sphere3 = True
            pidx[2] = 1
    for i in range(n - 1):  # a soma runs on through its next soma point
        if kind[i] == 1 and kind[i + 1] == 1 and pidx[i + 1] == i \
                and not (i != 0 and soma_children[i] > 1):
            nchild[i] = 1
    ends = np.flatnonzero(nchild != 1)  # every section's last point
    of_point = np.searchsorted(ends, np.arange(n))  # the section of every point

    sections: list[_Section] = []
    for s in range(ends.size):
        first = 0 if s == 0 else int(ends[s - 1]) + 1
        stop = int(ends[s]) + 1
        if s == 0:
            sections.append(_Section(0, list(range(1 if sphere3 else stop)), int(kind[0])))
            continue
        up = int(pidx[first])
        ps = int(of_point[up])
        psec = sections[ps]
        sec = _Section(first, [up, *range(first, stop)], int(kind[first]), ps)
        den_on_soma = psec.kind == 1 and kind[first] != 1
        handled = False
        if ps == 0:
            handled = True
            if den_on_soma and len(psec.points) == 1:  # a one-point soma
                sec.parent_x = 0.5
                sec.wire = stop - first > 1
            elif up == psec.first:  # the root's first point
                sec.parent_x = 0.0
                sec.wire = kind[first] != 1 and soma_children[up] > 1
            else:
                handled = False
        if not handled and psec.kind == 1:
            last = psec.first + len(psec.points) - (1 if ps == 0 else 2)
            if up < last:  # an interior point of the soma
                sec.parent_x = 0.5
                sec.wire = den_on_soma and stop - first > 1
            elif stop - first > 1 and soma_children[up] > 1 and kind[first] != 1:
                sec.wire = True
        if psec.kind == 1 and sec.kind != 1:
            sec.first_diam = float(diam[first])
        if to_proximal[first]:
            sec.parent_x = 0.0
        sections.append(sec)
    return _drop_empty(sections, xyz)


def _drop_empty(sections: list[_Section], xyz: np.ndarray) -> list[_Section]:
    """``Import3d_GUI.chk_valid``: one-point and zero-length two-point sections removed."""
    for i in range(len(sections) - 1, 0, -1):
        sec = sections[i]
        used = sec.points[1:] if sec.wire else sec.points
        if len(used) <= 1 or (len(used) == 2 and np.array_equal(xyz[used[0]], xyz[used[1]])):
            for child in sections[i + 1:]:
                if child.parent == i:
                    child.parent, child.parent_x = sec.parent, sec.parent_x
            for child in sections[i + 1:]:
                if child.parent > i:
                    child.parent -= 1
            del sections[i]
    return sections


def _section_points(sec: _Section, xyz: np.ndarray, diam: np.ndarray) -> np.ndarray:
    """A section's ``pt3d`` list ``(n3d, 4)``; a one-point root becomes a sphere's cylinder."""
    pts = np.column_stack([xyz[sec.points], diam[sec.points]]).astype(np.float64)
    if sec.first_diam is not None and sec.parent >= 0:
        pts[0, 3] = sec.first_diam
    if sec.wire:
        pts = pts[1:]
    if pts.shape[0] == 1:  # Import3d_GUI.sphere_rep: L = diam along x, the sphere's area
        d = pts[0, 3]
        pts = np.repeat(pts, 3, axis=0)
        pts[0, 0] -= d / 2
        pts[2, 0] += d / 2
    return pts


def _arc(pts: np.ndarray) -> np.ndarray:
    return np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pts[:, :3], axis=0), axis=1))]


def _nseg(pts: np.ndarray, d_lambda: float, frequency: float, r_axial: float,
          c_m: float) -> int:
    """``nseg`` by the d_lambda rule, with ``lambda_f`` over the 3-d points (stdlib.hoc)."""
    arc, d = _arc(pts), pts[:, 3]
    lam = float((np.diff(arc) / np.sqrt(d[:-1] + d[1:])).sum())
    lam *= np.sqrt(2) * 1e-5 * np.sqrt(4 * np.pi * frequency * r_axial * c_m)
    lambda_f = arc[-1] / lam  # um
    return int((arc[-1] / (d_lambda * lambda_f) + 0.9) / 2) * 2 + 1


def _segments(pts: np.ndarray, nseg: int, r_axial: float) -> tuple[np.ndarray, np.ndarray,
                                                                      np.ndarray]:
    """Area (um^2) and left / right half resistances (MOhm) of every segment.

    The frusta between the 3-d points integrated over each half segment as NEURON's
    ``diam_from_list`` does: lateral area ``pi (d1 + d2) / 2`` times the slant height,
    resistance ``4 r_a / pi`` times ``dx / (d1 d2)``.
    """
    arc, d = _arc(pts), np.abs(pts[:, 3])
    npt = arc.size
    ds = arc[-1] / nseg
    area = np.zeros(nseg)
    halves = np.zeros((nseg, 2))
    j, x1, y1 = 0, arc[0], d[0]
    for k in range(nseg):
        si = k * ds
        total = 0.0
        for half in range(2):
            ri = 0.0
            sip = si + ds / 2
            while True:
                jp = j + 1
                xj, xjp = arc[j], arc[jp]
                if xjp > sip or jp == npt - 1:
                    frac = 1.0 if abs(xjp - xj) < 1e-10 else (sip - xj) / (xjp - xj)
                    x2, y2, jnext = sip, (1 - frac) * d[j] + frac * d[jp], j
                else:
                    x2, y2, jnext = xjp, d[jp], jp
                delta = max(x2 - x1, 1e-15)
                ri += delta / (y1 * y2) if y1 * y2 != 0 else 1e15
                total += (y2 + y1) * np.sqrt(delta * delta + (0.5 * (y2 - y1)) ** 2)
                x1, y1 = x2, y2
                if j == jnext:
                    break
                j = jnext
            halves[k, half] = ri * r_axial / np.pi * 0.04
            si = sip
        area[k] = total * 0.5 * np.pi
    return area, halves[:, 0], halves[:, 1]


def _type_name(kind: int) -> str:
    return _TYPE_NAMES.get(kind, f"dend_{kind}")


def _section_names(sections: list[_Section]) -> list[str]:
    """NEURON's names of the sections (``soma[0]``, ``dend[3]``), ``Import3d_GUI``'s numbering."""
    names, counts = [], dict.fromkeys(_TYPE_NAMES.values(), 0)
    for sec in sections:
        base = _type_name(sec.kind)
        counts[base] = counts.get(base, 0) + 1
        names.append(f"{base}[{counts[base] - 1}]")
    return names


def _per_section(name: str, value: Any, kinds: list[int],
                 sections: list[str] | None = None) -> np.ndarray:
    """``value`` for every section: one number, or a mapping by section type and name.

    The mapping's keys are SWC types (``3``), NEURON's names for them (``"dend"``; ``"soma"``,
    ``"axon"``, ``"dend"``, ``"apic"``, ``"dend_5"`` for type 5), or ``sections``' names
    (``"axon[0]"``), which override their type's value. A type key may name a type the cell
    lacks (one mapping for many cells), a section key must name one of its sections, and
    every section needs a value.
    """
    where = f"Morphology.neuron_tree: {name}"
    if isinstance(value, Mapping):
        by_kind: dict[int, Any] = {}
        by_name: dict[str, Any] = {}
        names = {v: k for k, v in _TYPE_NAMES.items()}
        for key, v in value.items():
            if isinstance(key, str) and key.endswith("]") and "[" in key:
                if sections is not None and key not in sections:
                    shown = ", ".join(sections[:6]) + (", ..." if len(sections) > 6 else "")
                    raise InputError(f"{where} names the section {key!r}, which the cell "
                                     f"lacks; its sections are {shown}")
                by_name[key] = v
                continue
            if isinstance(key, str):
                kind = names.get(key)
                if kind is None and key.startswith("dend_") and key[5:].isdigit():
                    kind = int(key[5:])
                if kind is None:
                    raise InputError(f"{where} has the key {key!r}; give SWC types (1-4, ...) "
                                     f"or NEURON's section names soma, axon, dend, apic, "
                                     f"dend_<type>")
            elif is_whole(key):
                kind = int(key)
            else:
                raise InputError(f"{where} has the key {key!r}; give SWC types or NEURON's "
                                 f"section names (soma, axon, dend, apic)")
            if kind in by_kind:
                raise InputError(f"{where} gives type {kind} ({_type_name(kind)}) twice")
            by_kind[kind] = v
        named = sections or [""] * len(kinds)
        missing = sorted({k for k, n in zip(kinds, named, strict=True)
                          if k not in by_kind and n not in by_name})
        if missing:
            raise InputError(f"{where} has no value for the cell's section types "
                             f"{', '.join(f'{k} ({_type_name(k)})' for k in missing)}; "
                             f"it gives {sorted(by_kind)}")
        values = [by_name[n] if n in by_name else by_kind[k]
                  for k, n in zip(kinds, named, strict=True)]
    else:
        values = [value] * len(kinds)
    out = np.empty(len(values))
    for i, v in enumerate(values):
        try:
            out[i] = np.nan if isinstance(v, str | bytes) else float(v)
        except (TypeError, ValueError):
            out[i] = np.nan
        if not (np.isfinite(out[i]) and out[i] > 0):
            raise InputError(f"{where} must be a positive number (or a mapping of section "
                             f"types to such numbers), got {v!r}")
    return out


def neuron_tree(morphology: Any, d_lambda: float = 0.1, *, frequency: float = 100.0,
                r_axial: float | Mapping[Any, float] = 100.0,
                c_m: float | Mapping[Any, float] = 1.0) -> NeuronTree:
    """:meth:`fusekit.neuro.Morphology.neuron_tree` (the morphology from :func:`read_swc`)."""
    for name, value in (("d_lambda", d_lambda), ("frequency", frequency)):
        if not (np.isfinite(value) and value > 0):
            raise InputError(f"Morphology.neuron_tree: {name} must be a positive number, got "
                             f"{value!r}")
    for name, value in (("r_axial", r_axial), ("c_m", c_m)):
        if not isinstance(value, Mapping):
            _per_section(name, value, [0])  # a number: checked before the file's sections
    order, pidx = _id_order(morphology)
    kind = np.asarray(morphology.kind)[order].astype(np.int64)
    xyz = np.asarray(morphology.xyz, dtype=np.float64)[order]
    diam = np.asarray(morphology.diam, dtype=np.float64)[order]
    sections = _import3d_sections(kind, xyz, diam, pidx)
    points = [_section_points(sec, xyz, diam) for sec in sections]
    for s, pts in enumerate(points):
        if (pts[:, 3] <= 0).any():
            raise InputError(f"Morphology.neuron_tree: section {s} has a 3-d point of "
                             "diameter 0; NEURON's lambda_f and areas need positive diameters")
    kinds, names = [sec.kind for sec in sections], _section_names(sections)
    ra = _per_section("r_axial", r_axial, kinds, names)
    cm = _per_section("c_m", c_m, kinds, names)
    nseg = np.array([_nseg(p, d_lambda, frequency, ra[s], cm[s])
                     for s, p in enumerate(points)])
    return _tree(sections, points, nseg, ra, cm)


def _tree(sections: list[_Section], points: list[np.ndarray], nseg: np.ndarray,
          r_axial: np.ndarray, c_m: np.ndarray) -> NeuronTree:
    """NEURON's nodes and resistances, joined into fusekit's tree.

    Zero-area nodes are eliminated (dangling, or two resistances in series) or kept as
    junctions; the nodes are numbered depth-first from ``soma(0.5)``.
    """
    # nodes: every segment's centre (with area), every section's 1 end, the root's 0 end
    area: list[float] = []
    label: list[tuple[int, float]] = []  # (section, x) of a centre; x < 0 for ends
    edges: dict[int, dict[int, float]] = {}

    def node(a: float, sec: int, x: float) -> int:
        area.append(a)
        label.append((sec, x))
        edges[len(area) - 1] = {}
        return len(area) - 1

    def join(a: int, b: int, r: float) -> None:
        edges[a][b] = edges[b][a] = r

    centres: list[list[int]] = []
    end0: list[int] = []
    end1: list[int] = []
    for s, (sec, pts) in enumerate(zip(sections, points, strict=True)):
        n = int(nseg[s])
        a, left, right = _segments(pts, n, float(r_axial[s]))
        if sec.parent < 0:
            start = node(0.0, s, -1.0)
        else:
            p, px = sec.parent, sec.parent_x
            pn = int(nseg[p])
            start = end1[p] if px == 1 else end0[p] if px == 0 else centres[p][
                min(int(px * pn), pn - 1)]
        end0.append(start)
        ids = [node(float(a[k]), s, (k + 0.5) / n) for k in range(n)]
        join(start, ids[0], float(left[0]))
        for k in range(1, n):
            join(ids[k - 1], ids[k], float(right[k - 1] + left[k]))
        end1.append(node(0.0, s, -1.0))
        join(ids[-1], end1[-1], float(right[-1]))
        centres.append(ids)
    for v in [v for v in edges if area[v] == 0.0]:  # zero-area nodes: dangling or in series
        nb = edges[v]
        if len(nb) == 1:
            (u,) = nb
            del edges[u][v]
            del edges[v]
        elif len(nb) == 2:
            (u, r1), (w, r2) = nb.items()
            del edges[u][v], edges[w][v], edges[v]
            join(u, w, r1 + r2)
    root = centres[0][int(nseg[0]) // 2]
    order, parent_of = [], {root: -1}
    stack = [root]
    while stack:  # depth-first, neighbours in the order they were made
        v = stack.pop()
        order.append(v)
        kids = sorted(u for u in edges[v] if u not in parent_of)
        for u in kids:
            parent_of[u] = v
        stack.extend(reversed(kids))
    index = {v: i for i, v in enumerate(order)}
    par = np.array([index[parent_of[v]] if parent_of[v] >= 0 else -1 for v in order])
    junction = np.array([area[v] == 0.0 for v in order])
    a = np.array([area[v] for v in order]) * 1e-8  # um^2 -> cm^2
    for i in range(1, a.size):  # a junction's row is scaled by its parent's area
        if junction[i]:
            a[i] = a[par[i]]
    g = np.array([0.0] + [1e-3 / edges[v][parent_of[v]] for v in order[1:]])  # MOhm -> mS
    up = np.maximum(par, 0)
    coupling = np.stack([g / a, g / a[up]])
    coupling[:, 0] = 0.0
    comp = np.flatnonzero(~junction)
    names = _section_names(sections)
    sec_of = np.array([label[order[i]][0] for i in comp])
    return NeuronTree(
        parent=par, coupling=coupling, junction=junction, node=comp, area=a,
        section=sec_of, x=np.array([label[order[i]][1] for i in comp]),
        kind=np.array([sections[s].kind for s in sec_of], dtype=np.int64), names=tuple(names),
        points=tuple(points), section_parent=np.array([s.parent for s in sections]),
        parent_x=np.array([s.parent_x for s in sections]), nseg=nseg, r_axial=r_axial, c_m=c_m)
