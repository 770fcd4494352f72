"""A network of single-compartment neurons with conductance synapses, and its state."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np

from .. import ops
from .._errors import InputError
from .._registry import array_dtype
from ..ops._common import is_real
from ..ops.ion import NetworkSimulation, check_synapses, synapse_kinds
from ..ops.ion_channel import Channel, ChannelSet, channel_set
from ._population import absolute_spike_times, check_counts, run_steps, run_with_progress


def random_connectivity(n: int, p: float, w_max: float, rng: Any = None, *,
                        self_connections: bool = False
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random (Erdos-Renyi) synapses among ``n`` neurons as CSR ``(indptr, indices, weights)``.

    Every ordered pair ``(pre, post)`` is connected with probability ``p`` (Brian2's
    ``connect(p=...)``), no neuron onto itself unless ``self_connections``; weights are
    uniform in ``[0, w_max)`` (mS/cm^2). Draws an ``n x n`` matrix, so it suits networks up to
    some ten thousand neurons. The tuple serves :class:`Network`, :class:`CableNetwork` and
    the network ops as it is.

    Args:
        n: Neurons (or cells).
        p: Connection probability.
        w_max: Largest weight.
        rng: A ``numpy.random.Generator`` or a seed (``None``: a fresh one).
        self_connections: Allow ``pre == post``.

    Returns:
        ``indptr`` ``(n + 1,)`` int64, ``indices`` (postsynaptic neurons) and ``weights``,
        ``(nnz,)``; rows are the presynaptic neurons.

    Example:
        >>> from fusekit.neuro import random_connectivity
        >>> indptr, indices, weights = random_connectivity(100, 0.1, 0.3, rng=0)
        >>> indptr.shape
        (101,)
    """
    if not (isinstance(n, int | np.integer) and n >= 0):
        raise InputError(f"random_connectivity: n must be a non-negative integer, got {n!r}")
    if not 0.0 <= p <= 1.0:
        raise InputError(f"random_connectivity: p is a probability in [0, 1], got {p!r}")
    if not (np.isfinite(w_max) and w_max >= 0):
        raise InputError(f"random_connectivity: w_max must be a finite conductance >= 0 "
                         f"(mS/cm^2), got {w_max!r}")
    rng = np.random.default_rng(rng)
    dense = rng.random((n, n)) < p
    if not self_connections:
        dense &= ~np.eye(n, dtype=bool)
    indptr = np.concatenate([[0], np.cumsum(dense.sum(1))]).astype(np.int64)
    indices = np.nonzero(dense)[1].astype(np.int64)
    return indptr, indices, rng.uniform(0.0, w_max, indices.shape[0])


def index_array(owner: str, name: str, a: Any) -> np.ndarray:
    """``a`` (any array, a list or a torch tensor) as int64 ids, refusing what is not whole.

    Integers pass; floats pass only when every value is a whole number (ids read from a
    float file); ``1.7`` is refused rather than truncated to neuron 1.
    """
    if hasattr(a, "detach"):  # a torch tensor, perhaps on a GPU
        a = a.detach().cpu().numpy()
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError):
        arr = np.asarray(a, dtype=object)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all():
        return arr.astype(np.int64)
    got = (f"a {arr.dtype} array starting {arr.ravel()[:3].tolist()}"
           if arr.dtype.kind == "f" else f"a {arr.dtype} array")
    raise InputError(f"{owner}: {name} must hold integer ids, got {got}; pass whole numbers "
                     "(an int array): ids are never rounded")


def csr_arrays(connectivity: Any, dtype: np.dtype, owner: str = "Network"
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indptr, indices, weights)`` of a scipy.sparse matrix (any format) or of such a tuple.

    Raises:
        InputError: Another kind of connectivity, a matrix that is not square, ids that are
            not whole numbers, or weights that are not real numbers.
    """
    sparse = sys.modules.get("scipy.sparse")  # a scipy matrix means scipy is imported
    if sparse is not None and sparse.issparse(connectivity):
        if len(connectivity.shape) != 2 or connectivity.shape[0] != connectivity.shape[1]:
            raise InputError(f"{owner}: connectivity W[pre, post] must be a square (n, n) "
                             f"matrix over the n neurons, got shape {connectivity.shape}")
        csr = connectivity.tocsr()  # CSC's indptr would read as the transpose's
        indptr, indices, weights = csr.indptr, csr.indices, csr.data
    elif isinstance(connectivity, tuple) and len(connectivity) == 3:
        indptr, indices, weights = connectivity
    else:
        what = (f"a tuple of {len(connectivity)}" if isinstance(connectivity, tuple)
                else type(connectivity).__name__)
        raise InputError(
            f"{owner}: connectivity must be a scipy.sparse matrix W[pre, post] (mS/cm^2 per "
            f"spike, any sparse format) or a tuple (indptr, indices, weights) of CSR arrays "
            f"(rows: presynaptic neurons), got {what}; a dense matrix W converts with "
            f"scipy.sparse.csr_array(W)")
    indptr, indices = index_array(owner, "indptr", indptr), index_array(owner, "indices",
                                                                       indices)
    weights = np.asarray(weights)
    if weights.dtype.kind not in "iuf":
        raise InputError(f"{owner}: weights must be real conductances in mS/cm^2, got a "
                         f"{weights.dtype} array")
    if indptr.ndim != 1 or indptr.shape[0] < 1 or indices.ndim != 1 \
            or weights.shape != indices.shape:
        raise InputError(f"{owner}: connectivity must be 1-d CSR arrays, indptr (n + 1,) and "
                         f"indices and weights (nnz,), got {indptr.shape}, {indices.shape} "
                         f"and {weights.shape}")
    return indptr, indices, weights.astype(dtype)


def check_connectivity(owner: str, indptr: np.ndarray, indices: np.ndarray,
                       weights: np.ndarray) -> None:
    """The network ops' synapse checks at construction: CSR form, ids in range, weights.

    NaN, infinite or negative weights and indices outside the network are refused here
    rather than at the first run (or never, for :func:`to_nir`).
    """
    post = (indptr.shape[0] - 1,)
    zeros = np.zeros((1, *post), weights.dtype)
    check_synapses(owner, array_dtype(weights), post, zeros, indptr, indices, weights,
                   zeros[None], np.zeros(0, np.int64), n_types=1, delay_steps=1)


def check_delay(owner: str, delay: Any) -> float:
    """``delay`` (ms) as a float, refused unless a positive finite number."""
    if not (is_real(delay) and math.isfinite(delay) and delay > 0):
        raise InputError(f"{owner}: delay must be a finite synaptic delay in ms, at least one "
                         f"step dt of run(), got {delay!r}")
    return float(delay)


def per_synapse_types(owner: str, synapse_type: Any, indptr: np.ndarray,
                      nnz: int, n_types: int) -> np.ndarray | None:
    """Every synapse's type from one per synapse ``(nnz,)`` or one per presynaptic neuron.

    ``indptr`` must have passed :func:`check_connectivity`; the types must lie in
    ``[0, n_types)``.
    """
    if synapse_type is None:
        return None
    n = indptr.shape[0] - 1
    kinds = index_array(owner, "synapse_type", synapse_type)
    if kinds.shape == (n,) and kinds.shape != (nnz,):  # per presynaptic neuron: its CSR row
        kinds = np.repeat(kinds, np.diff(indptr))
    if kinds.shape != (nnz,):
        raise InputError(f"{owner}: synapse_type must give the type of every synapse ({nnz},) "
                         f"or of every presynaptic neuron ({n},), got {kinds.shape}")
    if nnz and (int(kinds.min()) < 0 or int(kinds.max()) >= n_types):
        raise InputError(f"{owner}: synapse_type must lie in [0, {n_types}): {n_types} synapse "
                         f"types are declared by tau_syn and e_syn")
    return kinds


def carry_state(net: Any, out: NetworkSimulation, n_steps: int, dt: float
                ) -> NetworkSimulation:
    """Keep a network run's end state on ``net`` and make its spike times absolute.

    ``net`` (a :class:`Network` or :class:`CableNetwork`) takes ``v``, ``states``, ``g_syn``
    and the spikes in flight, and its clock ``t`` advances by the run.
    """
    absolute_spike_times(out.spike_times, out.spike_count, net.t)
    net.v, net.states, net.g_syn, net.arrivals = out.v, out.states, out.g_syn, out.arrivals
    net.t += n_steps * dt
    return out


def delay_and_arrivals(owner: str, delay: float, dt: float, arrivals: np.ndarray | None
                       ) -> tuple[int, np.ndarray | None]:
    """The delay in steps at ``dt``, and the last run's spikes in flight if they still fit.

    Raises :class:`InputError` when spikes are in flight on another step grid.
    """
    delay = check_delay(owner, delay)
    # a hair under one step (0.1 - 0.025 * 3 in floats) is one step
    if delay < dt * (1 - 1e-9):
        raise InputError(f"{owner}: the synaptic delay {delay} ms is shorter than one step, "
                         f"dt = {dt} ms; a spike takes at least one step to arrive: use "
                         f"delay >= dt, or a smaller dt")
    delay_steps = int(round(delay / dt))
    if arrivals is not None and arrivals.shape[0] != delay_steps:
        if arrivals.any():
            raise InputError(
                f"{owner}: dt = {dt} ms makes the {delay} ms delay {delay_steps} steps, but "
                f"the last run's spikes in flight are on a grid of {arrivals.shape[0]}; keep "
                "dt while spikes are in flight (or set net.arrivals = None to drop them)")
        arrivals = None
    return delay_steps, arrivals


class Network:
    """``n`` neurons of one channel set, connected by CSR synapses (rows: presynaptic).

    State (``v``, ``states``, ``g_syn``, the spikes in flight ``arrivals``, time ``t``)
    carries over between :meth:`run` calls, so runs in pieces equal one long run.

    Args:
        channels: Channel classes or a :class:`ChannelSet`.
        connectivity: A square ``scipy.sparse`` matrix or array ``W[pre, post]`` (mS/cm^2
            per spike; any format, taken as CSR), or a tuple ``(indptr, indices, weights)``
            of CSR arrays (integer ids). Weights must be finite and non-negative.
        delay: Synaptic delay, ms, at least one step ``dt`` of :meth:`run` (rounded to a
            whole number of steps).
        tau_syn: Synaptic decay time constant, ms, or one per synapse type.
        e_syn: Synaptic reversal potential, mV, or one per synapse type.
        synapse_type: With several types (``tau_syn`` or ``e_syn`` a sequence), the type of
            every synapse, ``(nnz,)``, or of every presynaptic neuron, ``(n,)`` (Dale's law:
            all of a neuron's synapses share its type); ``g_syn`` is then ``(n_types, n)``.
        v0: Initial potential, mV; gates start at their steady state there.
        dtype: ``np.float32`` or ``np.float64``.
        **params: Parameter overrides (scalars or ``(n,)`` arrays).

    Example:
        >>> import numpy as np, scipy.sparse as sp
        >>> from fusekit.neuro import HH_CHANNELS, Network
        >>> W = sp.random(100, 100, density=0.05, format="csr", random_state=0) * 0.3
        >>> net = Network(HH_CHANNELS, W, delay=1.0)
        >>> net.i_ext[:10] = 15.0
        >>> out = net.run(50.0)  # doctest: +SKIP

        Excitatory and inhibitory neurons (the last 20 inhibit):

        >>> kind = (np.arange(100) >= 80).astype(int)  # 0: excitatory, 1: inhibitory
        >>> net = Network(HH_CHANNELS, W, tau_syn=[5.0, 10.0], e_syn=[0.0, -80.0],
        ...               synapse_type=kind)
    """

    def __init__(self, channels: ChannelSet | Sequence[type[Channel]], connectivity: Any, *,
                 delay: float = 1.0, tau_syn: float | Sequence[float] = 5.0,
                 e_syn: float | Sequence[float] = 0.0, synapse_type: Any = None,
                 v0: float = -65.0, dtype: Any = np.float64, **params: Any):

        self.dtype = np.dtype(dtype)
        self.indptr, self.indices, self.weights = csr_arrays(connectivity, self.dtype)
        check_connectivity("Network", self.indptr, self.indices, self.weights)
        n = self.indptr.shape[0] - 1
        delay = check_delay("Network", delay)
        self.channel_set = channel_set(channels)
        self.params = self.channel_set.default_params(n, self.dtype, **params)
        self.v = np.full(n, v0, dtype=self.dtype)
        self.states = self.channel_set.steady_states(self.v, self.params).astype(self.dtype)
        taus, _, typed = synapse_kinds(tau_syn, e_syn)
        self.synapse_type = per_synapse_types("Network", synapse_type, self.indptr,
                                              self.indices.shape[0], len(taus))
        self.g_syn = np.zeros((len(taus), n) if typed else n, dtype=self.dtype)
        self.i_ext = np.zeros(n, dtype=self.dtype)
        self.delay, self.tau_syn, self.e_syn = delay, tau_syn, e_syn
        # (delay_steps, n) after a run ((delay_steps, n_types, n) with several types)
        self.arrivals: np.ndarray | None = None
        self.t = 0.0

    def run(self, duration: float, *, dt: float = 0.025, record_every: int = 0,
            spike_threshold: float = 0.0, max_spikes: int = 64, progress: bool = False,
            progress_file: TextIO | None = None,
            backend: str | None = None) -> NetworkSimulation:
        """Advance by ``duration`` ms; spike times in the result are absolute (ms).

        Args:
            duration: ms (rounded to whole steps).
            dt: Time step, ms.
            record_every: Record ``v`` every this many steps (0: none).
            spike_threshold: mV.
            max_spikes: Spike times kept per neuron.
            progress: Show a progress bar (on ``progress_file``, default stderr); the run
                is then split into about 50 kernel calls (the same results).
            progress_file: Where the bar goes.
            backend: As for every fusekit op.

        Returns:
            The :class:`~fusekit.ops.NetworkSimulation` of this run.
        """

        def advance(steps: int) -> NetworkSimulation:
            return self._advance(steps, dt, record_every, spike_threshold, max_spikes, backend)

        n_steps = run_steps("Network.run", duration, dt)
        check_counts("Network.run", record_every=record_every, max_spikes=max_spikes)
        return run_with_progress(advance, n_steps, record_every, progress, progress_file,
                                 lambda: self.t)

    def _advance(self, n_steps: int, dt: float, record_every: int, spike_threshold: float,
                 max_spikes: int, backend: str | None) -> NetworkSimulation:
        delay_steps, arrivals = delay_and_arrivals("Network.run", self.delay, dt,
                                                   self.arrivals)
        out = ops.network_simulate(
            self.v, self.states, self.params, self.i_ext, self.g_syn, self.indptr,
            self.indices, self.weights, channels=self.channel_set, dt=dt, n_steps=n_steps,
            delay_steps=delay_steps, tau_syn=self.tau_syn, e_syn=self.e_syn,
            synapse_type=self.synapse_type, record_every=record_every,
            spike_threshold=spike_threshold, max_spikes=max_spikes, arrivals0=arrivals,
            backend=backend,
        )
        return carry_state(self, out, n_steps, dt)
