"""Export to the Neuromorphic Intermediate Representation (NIR), lossily.

NIR's neurons are I, IF, LI, LIF, CubaLI and CubaLIF: a Hodgkin-Huxley neuron has no NIR
node. :func:`to_nir` writes what NIR can express: the connectivity (a dense ``Linear`` of
the CSR weights, a ``Delay`` for the synaptic delay) and, per population, LIF (no
synapses) or CubaLIF (with synapses) stand-ins whose parameters are fitted so that their
spike counts under constant current match the HH neurons' (:func:`fit_lif`); the fit error
travels in the graph's metadata. Lost: the channel dynamics (HH's type-II onset of firing at
a rheobase with a jump in rate, transient single spikes below it, spike shape and
after-hyperpolarisation, refractoriness), and conductance synapses become current synapses
with the driving force frozen at rest (``e_syn - v_leak``).

Units: mV, uA/cm^2 (currents), kOhm cm^2 (``r``, so that ``r I`` is in mV), and times
(``tau``, ``tau_syn``, ``delay``, and the ``Linear`` weights, which carry ``tau_syn``) in
seconds by default (``time_unit="ms"`` keeps ms); the graph's metadata names them.

Requires the optional ``nir`` package (``pip install nir`` or ``pip install fusekit[nir]``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .. import ops
from .._errors import InputError
from ..ops.ion import synapse_kinds
from ..ops.ion_channel import Channel, ChannelSet, channel_set
from ._cable_network import CableNetwork
from ._network import Network
from ._population import Population, run_steps
from .hh import HH_CHANNELS

__all__ = ["LIFFit", "LIFRun", "fit_lif", "fit_lif_cable", "simulate_nir", "soma_attenuation",
           "to_nir", "write_nir"]

#: Constant currents (uA/cm^2) of the default f-I curve.
DEFAULT_CURRENTS = tuple(float(i) for i in range(0, 42, 2))
_TIME_SCALE = {"s": 1e-3, "ms": 1.0}
#: Default weight of a squared first-spike difference (per ms^2) against a squared count
#: difference in the fit: 0, since weighting latencies (0.01-0.1) made both the rate and the
#: first-spike errors of the HH fit larger (HH fires single transient spikes below rheobase).
LATENCY_WEIGHT = 0.0


def _nir() -> Any:
    try:
        import nir
    except ImportError as err:
        raise ImportError("fusekit's NIR export needs the nir package: pip install nir (or "
                          "pip install 'fusekit[nir]')") from err
    return nir


class LIFFit(NamedTuple):
    """A LIF stand-in fitted to a neuron's f-I curve, and how well it fits.

    Parameters (NIR's LIF: ``tau dv/dt = (v_leak - v) + r I``, spike when ``v >
    v_threshold``, then ``v = v_reset``) in mV, ms and kOhm cm^2 (``r I`` in mV for ``I`` in
    uA/cm^2). Fitted to spike counts, ``v`` is a rest-referenced variable, not the HH
    membrane potential (see ``docs/neuro.md``).

    Attributes:
        tau: Membrane time constant, ms.
        r: Resistance, kOhm cm^2.
        v_leak: Rest, mV (the HH neuron's resting potential).
        v_threshold: mV.
        v_reset: mV.
        currents: The constant currents of the fit, uA/cm^2, ``(k,)``.
        rate_hh: HH firing rates, Hz (spike count over the fit's duration), ``(k,)``.
        rate_lif: The stand-in's rates from :func:`simulate_nir`'s stepper, Hz, ``(k,)``.
        rate_rel_rms: ``rms(rate_lif - rate_hh) / rms(rate_hh)``.
        first_spike_hh: First spike time, ms (NaN: none), ``(k,)``.
        first_spike_lif: The same for the stand-in, ``(k,)``.
        first_spike_mae: Mean absolute first-spike difference where both spike, ms.
        first_spike_missing: Currents where exactly one of the two spikes.
    """

    tau: float
    r: float
    v_leak: float
    v_threshold: float
    v_reset: float
    currents: np.ndarray
    rate_hh: np.ndarray
    rate_lif: np.ndarray
    rate_rel_rms: float
    first_spike_hh: np.ndarray
    first_spike_lif: np.ndarray
    first_spike_mae: float
    first_spike_missing: int


class LIFRun(NamedTuple):
    """A run of :func:`simulate_nir`.

    Attributes:
        spike_count: Spikes per neuron, int64, ``(n,)``.
        spike_times: ms from the start, ``(max_spikes, n)``, NaN where fewer spikes.
        v: Final potentials, mV, ``(n,)``.
    """

    spike_count: np.ndarray
    spike_times: np.ndarray
    v: np.ndarray


def _lif_counts(tau: float, r: float, v_leak: float, v_threshold: float, v_reset: float,
                currents: np.ndarray, duration: float) -> np.ndarray:
    """Continuous-time LIF spike counts from rest, smooth in the parameters.

    ``1 + floor((duration - first) / isi)`` with the floor replaced by its average over
    phases, ``x - 1/2``: no plateaus for the optimiser, and no bias towards fractional
    spikes at short durations.
    """
    v_inf = v_leak + r * currents
    above = v_inf > v_threshold
    with np.errstate(divide="ignore", invalid="ignore"):
        first = tau * np.log((v_inf - v_leak) / (v_inf - v_threshold))
        isi = tau * np.log((v_inf - v_reset) / (v_inf - v_threshold))
        count = 0.5 + (duration - first) / isi
    return np.where(above & (first < duration), count, 0.0)


def _first_spike(spike_times: np.ndarray) -> np.ndarray:
    return spike_times[0] if spike_times.shape[0] else np.full(spike_times.shape[1], np.nan)


def fit_lif(channels: ChannelSet | Sequence[type[Channel]] = HH_CHANNELS, *,
            currents: Sequence[float] | np.ndarray = DEFAULT_CURRENTS, duration: float = 200.0,
            dt: float = 0.025, v0: float = -65.0, latency_weight: float = LATENCY_WEIGHT,
            backend: str | None = "reference", **params: float) -> LIFFit:
    """Fit a LIF stand-in to the f-I curve of one neuron type.

    The neuron is simulated with :func:`fusekit.ops.ion_simulate` (float64) for
    ``duration`` ms at each constant current from rest at ``v0``. ``v_leak`` is the
    neuron's rest (its potential after the run at zero current), ``v_reset`` the deepest
    after-spike trough of the runs, and ``tau``, ``r`` and ``v_threshold`` minimise the
    squared difference of spike counts (plus ``latency_weight`` times that of first-spike
    times; Nelder-Mead on the continuous-time LIF from 12 starts). The reported errors come
    from :func:`simulate_nir`'s stepper at ``dt``.

    Args:
        channels: The neuron's channels.
        currents: Constant currents, uA/cm^2.
        duration: ms per current.
        dt: ms.
        v0: Initial potential, mV (gates at steady state).
        latency_weight: Weight of a squared first-spike difference (per ms^2) in the loss,
            against 1 per squared spike-count difference.
        backend: Backend of the HH runs.
        **params: Scalar parameter overrides (``g_na=100.0``, ...).

    Returns:
        A :class:`LIFFit`.

    Example:
        >>> from fusekit.neuro import fit_lif
        >>> fit = fit_lif(currents=[0, 10, 20, 40], duration=100.0)  # doctest: +SKIP
        >>> fit.rate_rel_rms  # doctest: +SKIP
    """
    cs = channel_set(channels)
    currents = np.asarray(currents, np.float64)
    if currents.ndim != 1 or currents.size < 3 or not np.isfinite(currents).all():
        raise InputError(f"fit_lif: currents must be a finite 1-d list of at least 3 currents "
                         f"(uA/cm^2) to fit 3 parameters, got {currents!r}")
    n_steps = run_steps("fit_lif", duration, dt)
    if not n_steps:
        raise InputError(f"fit_lif: duration must be at least one step dt = {dt} ms, got "
                         f"{duration} ms")
    i_ext = np.append(currents, 0.0)  # the last neuron finds the rest potential
    n = i_ext.shape[0]
    p = cs.default_params(n, np.float64, **params)
    v = np.full(n, float(v0))
    hh = ops.ion_simulate(v, cs.steady_states(v, p), p, i_ext, channels=cs, dt=dt,
                          n_steps=n_steps, record_every=1, max_spikes=1, backend=backend)
    # Rest from the zero-current neuron; reset at the deepest after-spike trough.
    return _fit_runs("fit_lif", currents, hh.spike_count[:-1], hh.spike_times[:, :-1],
                     float(hh.v[-1]), float(min(hh.v_record.min(), hh.v[-1])), duration, dt,
                     latency_weight)


def _fit_runs(op: str, currents: np.ndarray, counts: np.ndarray, spike_times: np.ndarray,
              v_leak: float, v_reset: float, duration: float, dt: float,
              latency_weight: float) -> LIFFit:
    """The LIF fit to one neuron's runs at ``currents`` (spike counts, first spike times)."""
    from scipy.optimize import minimize

    n_steps = int(round(duration / dt))
    count_hh = np.asarray(counts).astype(np.float64)
    first_hh = _first_spike(spike_times)
    if count_hh.max() == 0:
        raise InputError(f"{op}: the neuron never fired for currents {currents.tolist()} "
                         f"uA/cm^2 within {duration} ms; give larger currents")

    # Only tau, the rheobase gap / r and (v_threshold - v_reset) / r shape the counts; the
    # flat HH f-I curve drives the gap towards 0 (reset far below threshold in its units),
    # so the gap is kept above 1e-4 of the reset depth, where float64 steps still resolve it.
    gap_min = 1e-4 * max(v_leak - v_reset, 1.0)
    fires = np.isfinite(first_hh)

    def params_of(x: np.ndarray) -> tuple[float, float, float]:
        tau, rheobase, gap = math.exp(x[0]), math.exp(x[1]), gap_min + math.exp(x[2])
        return tau, gap / rheobase, v_leak + gap

    def loss(x: np.ndarray) -> float:
        tau, r, v_th = params_of(x)
        c = _lif_counts(tau, r, v_leak, v_th, v_reset, currents, duration)
        with np.errstate(divide="ignore", invalid="ignore"):
            v_inf = v_leak + r * currents[fires]
            first = np.where(v_inf > v_th, tau * np.log((v_inf - v_leak) / (v_inf - v_th)),
                             duration)
        return float(np.sum((c - count_hh) ** 2) + latency_weight * np.sum(
            (np.minimum(first, duration) - first_hh[fires]) ** 2))

    starts = [np.log([tau, rheobase, gap]) for tau in (2.0, 10.0) for rheobase in (2.0, 8.0)
              for gap in (0.05, 1.0, 10.0)]
    best = min((minimize(loss, x, method="Nelder-Mead",
                         options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 4000})
                for x in starts), key=lambda res: res.fun)
    tau, r, v_th = params_of(best.x)
    fit = dict(tau=tau, r=r, v_leak=v_leak, v_threshold=v_th, v_reset=v_reset)
    run = _step_lif(currents, n_steps, dt, max_spikes=1, **{k: np.full(currents.size, x)
                                                            for k, x in fit.items()})
    rate_hh = count_hh / duration * 1e3
    rate_lif = run.spike_count / duration * 1e3
    first_lif = _first_spike(run.spike_times)
    both = np.isfinite(first_hh) & np.isfinite(first_lif)
    return LIFFit(
        **fit, currents=currents, rate_hh=rate_hh, rate_lif=rate_lif,
        rate_rel_rms=float(np.sqrt(np.mean((rate_lif - rate_hh) ** 2) / np.mean(rate_hh ** 2))),
        first_spike_hh=first_hh, first_spike_lif=first_lif,
        first_spike_mae=float(np.abs(first_lif - first_hh)[both].mean()) if both.any()
        else math.nan,
        first_spike_missing=int((np.isfinite(first_hh) != np.isfinite(first_lif)).sum()),
    )


def _step_lif(i_ext: np.ndarray, n_steps: int, dt: float, *, tau: np.ndarray, r: np.ndarray,
              v_leak: np.ndarray, v_threshold: np.ndarray, v_reset: np.ndarray,
              tau_syn: np.ndarray | None = None, w_in: np.ndarray | float = 1.0,
              weight: np.ndarray | None = None, delay_steps: int = 1,
              max_spikes: int = 64) -> LIFRun:
    """Float64 LIF / CubaLIF steps per NIR's equations, times in ms, from ``v = v_leak``.

    Each step integrates exactly for inputs held over the step: the synaptic current (if
    ``tau_syn``) ``I' = w_in u + (I - w_in u) exp(-dt / tau_syn)``, then ``v' = v_inf + (v -
    v_inf) exp(-dt / tau)`` with ``v_inf = v_leak + r I`` (``I = u`` without ``tau_syn``);
    ``u`` is ``i_ext`` plus ``weight @ s / dt`` for the spike vector ``s`` emitted
    ``delay_steps`` earlier (a spike is a delta: area 1). A spike is ``v' > v_threshold``;
    ``v`` then resets to ``v_reset``; its time is interpolated within the step.
    """
    n = i_ext.shape[0]
    v = v_leak.astype(np.float64).copy()
    current = np.zeros(n)
    decay_mem = np.exp(-dt / tau)
    decay_syn = None if tau_syn is None else np.exp(-dt / tau_syn)
    pending = [np.zeros(n) for _ in range(delay_steps)]  # spikes on their way, oldest first
    spike_count = np.zeros(n, np.int64)
    spike_times = np.full((max_spikes, n), np.nan)
    for step in range(n_steps):
        u = i_ext
        if weight is not None:
            u = u + weight @ pending.pop(0) / dt
        if decay_syn is None:
            current = u
        else:
            current = w_in * u + (current - w_in * u) * decay_syn
        v_inf = v_leak + r * current
        v_new = v_inf + (v - v_inf) * decay_mem
        fired = v_new > v_threshold
        for j in np.flatnonzero(fired):
            if spike_count[j] < max_spikes:
                frac = (v_threshold[j] - v[j]) / (v_new[j] - v[j])
                spike_times[spike_count[j], j] = (step + min(max(frac, 0.0), 1.0)) * dt
            spike_count[j] += 1
        v = np.where(fired, v_reset, v_new)
        if weight is not None:
            pending.append(fired.astype(np.float64))
    return LIFRun(spike_count, spike_times, v)


def _cell_kinds(model: CableNetwork) -> tuple[np.ndarray, np.ndarray]:
    """The distinct cells of a cable network, ``(kinds, n_params, n_comp)``, and each one's kind."""
    params = np.asarray(model.params, np.float64)  # (n_params, n_cells, n_comp)
    flat = params.transpose(1, 0, 2).reshape(params.shape[1], -1)
    kinds, which = np.unique(flat, axis=0, return_inverse=True)
    return kinds.reshape(-1, params.shape[0], params.shape[2]), which.reshape(-1)


def _cell_copies(model: CableNetwork, params: np.ndarray, n: int) -> CableNetwork:
    """``n`` unconnected float64 copies of one cell of ``model``, from rest at -65 mV.

    ``params``: the cell's, ``(n_params, n_comp)``.
    """
    names = model.channel_set.param_names
    empty = (np.zeros(n + 1, np.int64), np.zeros(0, np.int64), np.zeros(0))
    morphology = (model.tree if model.length is None or model.diam is None
                  else (model.parent, model.length, model.diam))
    return CableNetwork(model.channel_set, morphology, empty,
                        r_axial=model.r_axial, junctions=model.tree is not None,
                        dtype=np.float64, **dict(zip(names, params, strict=True)))


def fit_lif_cable(model: CableNetwork, cell: int = 0, *,
                  currents: Sequence[float] | np.ndarray = DEFAULT_CURRENTS,
                  duration: float = 200.0, dt: float = 0.025,
                  latency_weight: float = LATENCY_WEIGHT,
                  backend: str | None = None) -> LIFFit:
    """Fit a LIF stand-in to the somatic f-I curve of one cell of a :class:`CableNetwork`.

    As :func:`fit_lif`, with the cell (its morphology and every compartment's parameters)
    simulated whole and the constant currents injected into compartment 0, the soma (uA/cm^2
    of the soma's area). The stand-in's ``r`` is in kOhm cm^2 of the soma.

    Args:
        model: The network; its synapses and state are not used.
        cell: Which cell's parameters.
        currents: Constant currents into the soma, uA/cm^2.
        duration: ms per current.
        dt: ms.
        latency_weight: As for :func:`fit_lif`.
        backend: As for every fusekit op (default: the fastest available).

    Returns:
        A :class:`LIFFit`.
    """
    currents = np.asarray(currents, np.float64)
    if currents.ndim != 1 or currents.size < 3 or not np.isfinite(currents).all():
        raise InputError(f"fit_lif_cable: currents must be a finite 1-d list of at least 3 "
                         f"currents (uA/cm^2) to fit 3 parameters, got {currents!r}")
    if not run_steps("fit_lif_cable", duration, dt):
        raise InputError(f"fit_lif_cable: duration must be at least one step dt = {dt} ms, got "
                         f"{duration} ms")
    net = _cell_copies(model, np.asarray(model.params, np.float64)[:, cell], currents.size + 1)
    net.i_ext[:-1, 0] = currents  # the last cell finds the rest potential
    out = net.run(duration, dt=dt, record_every=1, record_at=[0], max_spikes=1,
                  backend=backend)
    return _fit_runs("fit_lif_cable", currents, out.spike_count[:-1], out.spike_times[:, :-1],
                     float(out.v[-1, 0]), float(min(out.v_record.min(), out.v[-1, 0])),
                     duration, dt, latency_weight)


#: Current (uA/cm^2 of the soma, as an absolute current at other compartments) and settling
#: time (ms) of :func:`soma_attenuation`'s runs.
_PROBE_CURRENT, _PROBE_MS = 0.01, 200.0


def soma_attenuation(model: CableNetwork, cell: int = 0, *, dt: float = 0.025,
                     backend: str | None = None) -> np.ndarray:
    """How much of a small steady current into each compartment reaches the soma.

    ``a[c]`` is the soma's steady depolarisation by a current into compartment ``c`` over
    that by the same current (in uA, not per area) into the soma: 1 at the soma, less out
    on the dendrites. It is the ratio of transfer to input resistance (``Z[0, c] /
    Z[0, 0]``) of the cell linearised at rest, measured by running it (with its channels,
    not a passive stand-in) for 200 ms with 0.01 uA/cm^2 of the soma's area.

    Args:
        model: The network; only its morphology and ``cell``'s parameters are used.
        cell: Which cell's parameters.
        dt: ms.
        backend: As for every fusekit op.

    Returns:
        ``(n_comp,)`` float64.
    """
    n_comp = model.parent.shape[0]
    net = _cell_copies(model, np.asarray(model.params, np.float64)[:, cell], n_comp + 1)
    current = _PROBE_CURRENT * model.area[0]  # uA
    net.i_ext[np.arange(n_comp), np.arange(n_comp)] = current / model.area
    out = net.run(_PROBE_MS, dt=dt, max_spikes=1, backend=backend)
    if out.spike_count.any():
        raise InputError("soma_attenuation: the cell fires at rest (or with a current of "
                         f"{_PROBE_CURRENT} uA/cm^2): it has no resting state to linearise")
    dv = out.v[:n_comp, 0] - out.v[n_comp, 0]
    if not dv[0] > 0:
        raise InputError("soma_attenuation: a depolarising current did not depolarise the "
                         "soma at rest")
    return dv / dv[0]


def _synapses(model: Network | CableNetwork, v_leak: np.ndarray, scale: float,
              gain: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Dense NIR current-synapse weights ``(post, pre)``, and each neuron's ``tau_syn``.

    Times are in the graph's unit (``scale`` per ms).
    A spike of synapse ``e`` (weight ``W``, type ``k``) adds the charge of the HH synapse at
    rest, ``W (e_syn[k] - v_leak[post]) tau_syn[k]``, times ``gain[e]`` (the cable's
    attenuation to the soma). CubaLIF has one synaptic time constant per neuron: with several
    synapse types it is the mean of the types' weighted by the absolute charge a neuron
    receives from each, and each synapse keeps its own type's charge.
    """
    taus, es, _ = synapse_kinds(model.tau_syn, model.e_syn)
    taus_a, es_a = np.asarray(taus), np.asarray(es)
    n = model.indptr.shape[0] - 1
    nnz = model.indices.shape[0]
    kind = (np.zeros(nnz, np.int64) if model.synapse_type is None
            else np.asarray(model.synapse_type, np.int64))
    pre = np.repeat(np.arange(n), np.diff(model.indptr))
    post = np.asarray(model.indices, np.int64)
    charge = (np.asarray(model.weights, np.float64) * (es_a[kind] - v_leak[post])
              * taus_a[kind] * (1.0 if gain is None else gain))
    dense = np.zeros((n, n))
    np.add.at(dense, (post, pre), charge * scale)
    per_type = np.zeros((n, taus_a.size))
    np.add.at(per_type, (post, kind), np.abs(charge))
    total = per_type.sum(axis=1)
    tau = np.where(total > 0, per_type @ taus_a / np.where(total > 0, total, 1.0), taus_a[0])
    return dense, tau * scale


def to_nir(model: Population | Network | CableNetwork, *,
           fits: Sequence[LIFFit] | LIFFit | None = None, time_unit: str = "s",
           currents: Sequence[float] | np.ndarray = DEFAULT_CURRENTS, duration: float = 200.0,
           dt: float = 0.025, backend: str | None = "reference") -> Any:
    """The NIR graph of a :class:`Population`, :class:`Network` or :class:`CableNetwork`.

    A population becomes ``input -> neurons (LIF) -> output``; a network becomes ``input ->
    neurons (CubaLIF)``, ``neurons -> delay -> synapses (Linear) -> neurons`` and ``neurons
    -> output``. ``synapses.weight`` is dense ``(post, pre)`` (NIR's ``y = W x``): each
    synapse adds the charge of the HH synapse at rest, ``W[pre, post] (e_syn - v_leak[post])
    tau_syn``, so that a spike lifts the stand-in's synaptic current by the HH synapse's
    current at rest, ``W (e_syn - v_leak)``. With several synapse types each keeps its own
    ``e_syn`` and ``tau_syn`` in its charge, and a neuron's one ``tau_syn`` is the mean of the
    types' weighted by the charge it receives of each. The input is the injected current per
    neuron, uA/cm^2.

    A cable network's cells become point neurons: each stand-in is fitted to its cell's
    somatic f-I curve (:func:`fit_lif_cable`, current into the soma, uA/cm^2 of the soma), and
    a synapse on compartment ``c`` carries its charge times ``area[c] / area[0]`` (the same
    current as a density of the soma) times ``soma_attenuation(model)[c]``, the share of a
    steady current at ``c`` that reaches the soma. The metadata holds it per kind of cell
    (``soma_attenuation``, ``(n_kinds, n_comp)``, kinds by their parameters in ``np.unique``
    order, the order of the fits when there is one fit per kind).

    Neurons (cells) with the same parameters share one fit (run here unless ``fits`` are
    given); the graph's metadata holds each fit's parameters and errors
    (``fit_rate_rel_rms``, ``fit_first_spike_mae_ms``, one entry per fit) and which fit each
    neuron uses (``fit_index``).

    Args:
        model: The population or network (its channels and parameters; its state is not
            exported).
        fits: Fits to use, one per distinct neuron (in ``np.unique`` order of the parameter
            columns, of whole cells for a cable network), or one for all.
        time_unit: ``"s"`` or ``"ms"``: the unit of the graph's times.
        currents: Passed to :func:`fit_lif` (when ``fits`` is None).
        duration: Passed to :func:`fit_lif`.
        dt: Passed to :func:`fit_lif`, and the time step of the attenuation runs.
        backend: Passed to :func:`fit_lif`.

    Returns:
        A ``nir.NIRGraph``.

    Example:
        >>> from fusekit.neuro import HH_CHANNELS, Population, to_nir
        >>> graph = to_nir(Population(HH_CHANNELS, n=4))  # doctest: +SKIP
        >>> graph.metadata["fit_rate_rel_rms"]  # doctest: +SKIP
    """
    nir = _nir()
    if not isinstance(model, Population | Network | CableNetwork):
        raise InputError(f"to_nir: model must be a fusekit.neuro Population, Network or "
                         f"CableNetwork, got {type(model).__name__}")
    if time_unit not in _TIME_SCALE:
        raise InputError(f"to_nir: time_unit must be 's' or 'ms', got {time_unit!r}")
    scale = _TIME_SCALE[time_unit]
    fit_kwargs = dict(currents=currents, duration=duration, dt=dt, backend=backend)
    cable = isinstance(model, CableNetwork)
    # Neurons (cells) of one kind share their parameters, and a fit.
    if cable:
        kinds, kind = _cell_kinds(model)
    else:
        columns, kind = np.unique(np.asarray(model.params, np.float64), axis=1,
                                  return_inverse=True)
        kinds, kind = columns.T, kind.reshape(-1)
    firsts = [int(np.flatnonzero(kind == k)[0]) for k in range(kinds.shape[0])]
    which = kind  # each neuron's fit
    n = which.shape[0]
    if fits is None:
        names = model.channel_set.param_names
        fit_list = [fit_lif_cable(model, cell, **fit_kwargs) if cable else
                    fit_lif(model.channel_set, **fit_kwargs,
                            **dict(zip(names, kinds[k].tolist(), strict=True)))
                    for k, cell in enumerate(firsts)]
    else:
        fit_list = [fits] if isinstance(fits, LIFFit) else list(fits)
        wrong = [type(f).__name__ for f in fit_list if not isinstance(f, LIFFit)]
        if wrong or not fit_list:
            raise InputError(f"to_nir: fits must be LIFFit results (fit_lif, fit_lif_cable), "
                             f"one or one per distinct neuron, got {wrong or 'none'}")
        if len(fit_list) == 1:
            which = np.zeros(n, np.int64)
        elif len(fit_list) != kinds.shape[0]:
            raise InputError(f"to_nir: the model has {kinds.shape[0]} distinct neurons (by "
                             f"their parameters) but {len(fit_list)} fits were given; give one "
                             f"fit, or one per distinct neuron")

    def per_neuron(name: str) -> np.ndarray:
        return np.array([getattr(f, name) for f in fit_list], np.float64)[which]

    tau, r, v_leak = per_neuron("tau") * scale, per_neuron("r"), per_neuron("v_leak")
    v_threshold, v_reset = per_neuron("v_threshold"), per_neuron("v_reset")
    shape = np.array([n])
    nodes: dict[str, Any] = {"input": nir.Input(shape), "output": nir.Output(shape)}
    edges = [("input", "neurons"), ("neurons", "output")]
    metadata: dict[str, Any] = {
        "source": "fusekit.neuro.to_nir: Hodgkin-Huxley neurons exported as fitted LIF stand-ins",
        "time_unit": time_unit, "voltage_unit": "mV", "current_unit": "uA/cm^2",
        "resistance_unit": "kOhm cm^2",
        "lost": "channel dynamics (type-II onset, transient spikes, spike shape, "
                "after-hyperpolarisation, refractoriness); conductance synapses exported as "
                "current synapses with the driving force at rest",
        "fit_index": which.astype(np.int64),
        "fit_rate_rel_rms": np.array([f.rate_rel_rms for f in fit_list]),
        "fit_first_spike_mae_ms": np.array([f.first_spike_mae for f in fit_list]),
        "fit_currents": fit_list[0].currents,
        "fit_rate_hh_hz": np.stack([f.rate_hh for f in fit_list]),
        "fit_rate_lif_hz": np.stack([f.rate_lif for f in fit_list]),
    }
    if isinstance(model, Population):
        nodes["neurons"] = nir.LIF(tau=tau, r=r, v_leak=v_leak, v_threshold=v_threshold,
                                   v_reset=v_reset)
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)
    gain = None
    if cable:
        # one attenuation per kind of cell, measured on its first cell
        atten = np.stack([soma_attenuation(model, c, dt=dt, backend=backend) for c in firsts])
        comp = model.synapse_compartment
        post = np.asarray(model.indices, np.int64)
        gain = atten[kind[post], comp] * model.area[comp] / model.area[0]
        metadata["soma_attenuation"] = atten
        metadata["lost"] += ("; the cells' dendrites (synapses act at the soma with the "
                             "steady-state attenuation from their compartment, so dendritic "
                             "filtering and local dendritic spikes are lost)")
    weight, tau_syn = _synapses(model, v_leak, scale, gain)
    nodes["neurons"] = nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau, r=r, v_leak=v_leak,
                                   v_threshold=v_threshold, v_reset=v_reset, w_in=np.ones(n))
    nodes["delay"] = nir.Delay(np.full(n, model.delay * scale))
    nodes["synapses"] = nir.Linear(weight=weight)
    edges += [("neurons", "delay"), ("delay", "synapses"), ("synapses", "neurons")]
    metadata["synapse_note"] = (f"conductance synapses (tau_syn = {model.tau_syn} ms, "
                                f"e_syn = {model.e_syn} mV) as current synapses")
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def write_nir(path: str | Path, model: Population | Network | CableNetwork,
              **kwargs: Any) -> Any:
    """Write :func:`to_nir` of ``model`` to ``path`` (HDF5, read back by ``nir.read``).

    Returns:
        The graph written.
    """
    graph = to_nir(model, **kwargs)
    _nir().write(str(path), graph)
    return graph


def simulate_nir(graph: Any, i_ext: Any, duration: float, *, dt: float = 0.025,
                 max_spikes: int = 64) -> LIFRun:
    """Simulate a graph of :func:`to_nir`'s shape with a small float64 LIF/CubaLIF stepper.

    An independent reading of NIR's equations (not fusekit's kernels), to check a stand-in
    against the HH model on the same input. It accepts one LIF or CubaLIF node fed by the
    input, optionally with a recurrent ``Linear`` (through a ``Delay``) back into it.

    Args:
        graph: A ``nir.NIRGraph`` (for instance from ``nir.read``).
        i_ext: Constant input current per neuron, uA/cm^2, ``(n,)``.
        duration: ms.
        dt: Step, ms.
        max_spikes: Spike times kept per neuron.

    Returns:
        A :class:`LIFRun` (spike times in ms from the start).
    """
    nir = _nir()
    scale = _TIME_SCALE.get(str(graph.metadata.get("time_unit", "s")))
    neurons = [k for k, node in graph.nodes.items() if isinstance(node, nir.LIF | nir.CubaLIF)]
    if scale is None or len(neurons) != 1:
        raise InputError("simulate_nir: expected a graph of to_nir's shape (one LIF or CubaLIF "
                         f"node, time_unit 's' or 'ms'), got nodes {list(graph.nodes)}")
    name = neurons[0]
    node = graph.nodes[name]
    into = {src for src, dst in graph.edges if dst == name}
    synapses = [k for k in into if isinstance(graph.nodes[k], nir.Linear | nir.Affine)]
    weight, delay_steps = None, 1
    if synapses:
        weight = np.asarray(graph.nodes[synapses[0]].weight, np.float64)
        delays = [src for src, dst in graph.edges
                  if dst == synapses[0] and isinstance(graph.nodes[src], nir.Delay)]
        if delays:
            delay_ms = float(np.max(graph.nodes[delays[0]].delay)) / scale
            delay_steps = max(1, int(round(delay_ms / dt)))
    i_ext = np.asarray(i_ext, np.float64)
    n_steps = int(round(duration / dt))
    if isinstance(node, nir.CubaLIF):
        return _step_lif(i_ext, n_steps, dt, tau=node.tau_mem / scale, r=node.r,
                         v_leak=node.v_leak, v_threshold=node.v_threshold,
                         v_reset=node.v_reset, tau_syn=node.tau_syn / scale, w_in=node.w_in,
                         weight=None if weight is None else weight / scale,
                         delay_steps=delay_steps, max_spikes=max_spikes)
    return _step_lif(i_ext, n_steps, dt, tau=node.tau / scale, r=node.r, v_leak=node.v_leak,
                     v_threshold=node.v_threshold, v_reset=node.v_reset,
                     weight=None if weight is None else weight / scale,
                     delay_steps=delay_steps, max_spikes=max_spikes)
