"""CPU kernels of the ion_network_grad family: the whole run and its backward, compiled.

A point neuron is a cell of one compartment, so ``network_run`` runs the compiled loops of
``cable_network_run`` (:mod:`.ion_cable_network_grad`) on cells of one compartment with no
axial coupling: the one-row Hines solve is the point neuron's ``v' = R / D``, its transpose
``a_R = a_v' / D``, the same arithmetic as :func:`fusekit.ops.membrane_step` and its vjp. The
loops compile the whole run, so no step pays Python: a step of the Python loop over the
compiled step kernels cost about 80 us of NumPy glue forward and 190 us backward at 500
neurons (0.10 + 0.30 ms per step, against 0.03 + 0.11 ms compiled).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._registry import register_kernel
from ...ops import ion_network_grad as grad
from .ion_cable_network_grad import run_loops, run_vjp_loops

_FLOATS = ("float32", "float64")
_ROOT = np.array([-1], dtype=np.int64)  # a cell of one compartment
_NONE = np.zeros(0, dtype=np.int64)  # every synapse onto compartment 0


def _col(a: np.ndarray) -> np.ndarray:
    return a[..., None]


@register_kernel(grad.network_run_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def network_run_cpu(v0: np.ndarray, states0: np.ndarray, params: np.ndarray,
                    i_ext: np.ndarray, g_syn0: np.ndarray, indptr: np.ndarray,
                    indices: np.ndarray, weights: np.ndarray, arrivals0: np.ndarray,
                    synapse_type: np.ndarray, **kw: Any) -> tuple[np.ndarray, ...]:
    """The whole run in one compiled loop, a checkpoint at every segment's start."""
    coupling = np.zeros((2, v0.shape[0], 1), dtype=v0.dtype)
    out = run_loops("network_run", _col(v0), _col(states0), _col(params), _col(i_ext), _ROOT,
                    coupling, _col(g_syn0), indptr, indices, weights, _col(arrivals0),
                    synapse_type, _NONE, **kw)
    v, S, g, v_record, count, times, arrivals, ck_v, ck_S, ck_g, ck_spikes, ck_count = out
    return (v[:, 0], S[..., 0], g[..., 0], v_record[..., 0], count, times, arrivals[..., 0],
            ck_v[..., 0], ck_S[..., 0], ck_g[..., 0], ck_spikes, ck_count)


@register_kernel(grad.network_run_vjp_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def network_run_vjp_cpu(ck_v: np.ndarray, ck_S: np.ndarray, ck_g: np.ndarray,
                        ck_spikes: np.ndarray, ck_count: np.ndarray, params: np.ndarray,
                        i_ext: np.ndarray, indptr: np.ndarray, indices: np.ndarray,
                        weights: np.ndarray, arrivals0: np.ndarray, synapse_type: np.ndarray,
                        g_v: np.ndarray,
                        g_states: np.ndarray, g_g_syn: np.ndarray, g_v_record: np.ndarray,
                        g_spike_times: np.ndarray, g_arrivals: np.ndarray, **kw: Any
                        ) -> tuple[np.ndarray, ...]:
    """The segments re-run and walked back in one compiled loop."""
    coupling = np.zeros((2, params.shape[1], 1), dtype=params.dtype)
    a_v, a_S, a_P, a_I, _, a_g, a_w, A = run_vjp_loops(
        "network_run", _col(ck_v), _col(ck_S), _col(ck_g), ck_spikes, ck_count, _col(params),
        _col(i_ext), _ROOT, coupling, indptr, indices, weights, _col(arrivals0), synapse_type,
        _NONE,
        _col(g_v), _col(g_states), _col(g_g_syn), _col(g_v_record), g_spike_times,
        _col(g_arrivals), **kw)
    return a_v[:, 0], a_S[..., 0], a_P[..., 0], a_I[..., 0], a_g[..., 0], a_w, A[..., 0]
