"""A network of single-compartment neurons with conductance synapses, and its state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import ops
from .._errors import InputError
from ..ops.ion import NetworkSimulation, synapse_kinds
from ..ops.ion_channel import Channel, ChannelSet, channel_set


class Network:
    """``n`` neurons of one channel set, connected by CSR synapses (rows: presynaptic).

    State (``v``, ``states``, ``g_syn``, the spikes in flight ``arrivals``, time ``t``)
    carries over between :meth:`run` calls, so runs in pieces equal one long run.

    Args:
        channels: Channel classes or a :class:`ChannelSet`.
        connectivity: A ``scipy.sparse`` matrix with ``.indptr``, ``.indices``, ``.data``
            (``W[pre, post]``, mS/cm^2 per spike), or a tuple ``(indptr, indices, weights)``.
        delay: Synaptic delay, ms (a whole number of steps at the ``dt`` of :meth:`run`).
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

        if isinstance(connectivity, tuple):
            indptr, indices, weights = connectivity
        else:
            indptr, indices, weights = (connectivity.indptr, connectivity.indices,
                                        connectivity.data)
        self.dtype = np.dtype(dtype)
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.weights = np.asarray(weights, dtype=self.dtype)
        n = self.indptr.shape[0] - 1
        self.channel_set = channel_set(channels)
        self.params = self.channel_set.default_params(n, self.dtype, **params)
        self.v = np.full(n, v0, dtype=self.dtype)
        self.states = self.channel_set.steady_states(self.v, self.params).astype(self.dtype)
        taus, _, typed = synapse_kinds(tau_syn, e_syn)
        self.synapse_type = None
        if synapse_type is not None:
            kinds = np.asarray(synapse_type, dtype=np.int64)
            nnz = self.indices.shape[0]
            if kinds.shape == (nnz,):
                self.synapse_type = kinds
            elif kinds.shape == (n,):  # per presynaptic neuron: repeat along its CSR row
                self.synapse_type = np.repeat(kinds, np.diff(self.indptr))
            else:
                raise InputError(f"Network: synapse_type must give the type of every synapse "
                                 f"({nnz},) or of every presynaptic neuron ({n},), got "
                                 f"{kinds.shape}")
        self.g_syn = np.zeros((len(taus), n) if typed else n, dtype=self.dtype)
        self.i_ext = np.zeros(n, dtype=self.dtype)
        self.delay, self.tau_syn, self.e_syn = delay, tau_syn, e_syn
        # (delay_steps, n) after a run ((delay_steps, n_types, n) with several types)
        self.arrivals: np.ndarray | None = None
        self.t = 0.0

    def run(self, duration: float, *, dt: float = 0.025, record_every: int = 0,
            spike_threshold: float = 0.0, max_spikes: int = 64,
            backend: str | None = None) -> NetworkSimulation:
        """Advance by ``duration`` ms; spike times in the result are absolute (ms).

        Args:
            duration: ms (rounded to whole steps).
            dt: Time step, ms.
            record_every: Record ``v`` every this many steps (0: none).
            spike_threshold: mV.
            max_spikes: Spike times kept per neuron.
            backend: As for every fusekit op.

        Returns:
            The :class:`~fusekit.ops.NetworkSimulation` of this run.
        """
        n_steps = int(round(duration / dt))
        delay_steps = max(1, int(round(self.delay / dt)))
        arrivals = self.arrivals
        if arrivals is not None and arrivals.shape[0] != delay_steps:
            if arrivals.any():
                raise InputError(
                    f"Network.run: dt = {dt} ms makes the {self.delay} ms delay "
                    f"{delay_steps} steps, but the last run's spikes in flight are on a "
                    f"grid of {arrivals.shape[0]}; keep dt while spikes are in flight (or "
                    "set net.arrivals = None to drop them)")
            arrivals = None
        out = ops.network_simulate(
            self.v, self.states, self.params, self.i_ext, self.g_syn, self.indptr,
            self.indices, self.weights, channels=self.channel_set, dt=dt, n_steps=n_steps,
            delay_steps=delay_steps, tau_syn=self.tau_syn, e_syn=self.e_syn,
            synapse_type=self.synapse_type, record_every=record_every,
            spike_threshold=spike_threshold, max_spikes=max_spikes, arrivals0=arrivals,
            backend=backend,
        )
        out = out._replace(spike_times=out.spike_times + self.dtype.type(self.t))
        self.v, self.states, self.g_syn = out.v, out.states, out.g_syn
        self.arrivals = out.arrivals
        self.t += n_steps * dt
        return out
