"""The Hodgkin-Huxley step in integer arithmetic, as a neuromorphic chip would compute it.

Same scheme as :func:`fusekit.ops.ion_simulate` with :data:`~fusekit.neuro.HH_CHANNELS`
(exponential-Euler gates, backward-Euler voltage), with every stored value a signed
fixed-point word and every product formed in an accumulator twice the word's width:

- ``v``: mV with ``v_frac_bits`` fractional bits; gates ``m, h, n``: ``gate_frac_bits``.
- Rates come from lookup tables over ``v_range`` with a power-of-two step (NEURON's rate
  tables use 1 mV): per gate ``x_inf`` and ``exp(-dt (alpha + beta))``, precomputed in
  float64 and rounded once; looked up by shifting the voltage offset, with linear
  interpolation between entries (``interpolate=False``: the entry below).
- Gate update ``x' = x_inf + (x - x_inf) d`` with one rounded product.
- Voltage update ``v' = (v + sum_c B_c o_c + dt i_ext / c_m) / (1 + sum_c A_c o_c)`` with
  ``A_c = dt gbar_c / c_m`` and ``B_c = A_c E_c`` stored in words scaled to fill them, ``o_c``
  the open fractions (``m^3 h``, ``n^4``, 1), and one exact integer division (rounded to
  nearest) of the accumulator by ``1 + sum A_c o_c``.

Every shift rounds to nearest. Overflow cannot wrap silently: the constructor bounds every
intermediate for voltages in ``v_range`` and raises :class:`~fusekit.InputError` for a
format that cannot hold it, and :meth:`FixedPointHH.simulate` raises
:class:`FixedPointRangeError` the step a voltage leaves ``v_range``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .. import ops
from .._errors import InputError
from ..ops.ion import IonSimulation
from ..ops.ion_channel import ChannelSet
from .hh import HH_CHANNELS, HHPotassium, HHSodium

__all__ = ["FixedPointError", "FixedPointHH", "FixedPointRangeError", "fixed_point_error"]


class FixedPointRangeError(InputError):
    """A fixed-point voltage left the range its format and rate tables were built for."""


def _round_shift(x: np.ndarray, bits: int) -> np.ndarray:
    """``x / 2**bits`` rounded to nearest (half up), in integers."""
    if bits == 0:
        return x
    return (x + (1 << (bits - 1))) >> bits


def _frac_bits_for(value: float, word_bits: int) -> int:
    """The most fractional bits with which ``|value|`` still fits a signed word."""
    limit = 2 ** (word_bits - 1) - 1
    if value == 0:
        return word_bits - 2
    return min(2 * word_bits, math.floor(math.log2(limit / abs(value))))


class FixedPointHH:
    """``n`` HH squid-axon neurons stepped in ``word_bits``-bit fixed point.

    Args:
        word_bits: Width of every stored value (16, 24, 32; at most 32, since NumPy's
            int64 stands for the double-width accumulator).
        v_frac_bits: Fractional bits of the membrane potential (mV).
        gate_frac_bits: Fractional bits of the gates (values in [0, 1]).
        table_step: Voltage step of the rate tables, mV, a power of two (1.0 as NEURON).
        v_range: ``(v_lo, v_hi)`` mV, the tables' span and the allowed voltages; multiples
            of ``table_step``.
        dt: Time step, ms.
        interpolate: Interpolate linearly between table entries.
        **params: HH parameters (scalars): ``c_m``, ``g_na``, ``e_na``, ``g_k``, ``e_k``,
            ``g_leak``, ``e_leak`` in fusekit's units; defaults as :class:`HHSodium` etc.

    Example:
        >>> import numpy as np
        >>> from fusekit.neuro import FixedPointHH
        >>> chip = FixedPointHH(word_bits=32, v_frac_bits=20, gate_frac_bits=28)
        >>> out = chip.simulate(np.array([10.0]), n_steps=400)
        >>> int(out.spike_count[0]), round(float(out.spike_times[0, 0]), 2)
        (1, 1.92)
    """

    def __init__(self, *, word_bits: int = 32, v_frac_bits: int = 20, gate_frac_bits: int = 28,
                 table_step: float = 0.0625, v_range: tuple[float, float] = (-100.0, 70.0),
                 dt: float = 0.025, interpolate: bool = True, **params: float):
        where = "FixedPointHH"
        if not (isinstance(word_bits, int) and 8 <= word_bits <= 32):
            raise InputError(f"{where}: word_bits must be an integer from 8 to 32 (int64 "
                             f"holds the double-width accumulator), got {word_bits!r}")
        if not (isinstance(dt, int | float) and math.isfinite(dt) and dt > 0):
            raise InputError(f"{where}: dt must be a positive time step in ms, got {dt!r}")
        k = -math.log2(table_step) if table_step > 0 else math.nan
        if not (math.isfinite(k) and k == round(k) and 0 <= k <= v_frac_bits):
            raise InputError(
                f"{where}: table_step must be a power of two mV between 2**-v_frac_bits = "
                f"{2.0 ** -v_frac_bits} and 1 (the table index is a shift of v), got "
                f"{table_step!r}")
        v_lo, v_hi = (float(x) for x in v_range)
        if not (v_lo < v_hi and (v_lo / table_step).is_integer()
                and (v_hi / table_step).is_integer()):
            raise InputError(f"{where}: v_range must be (v_lo, v_hi) with v_lo < v_hi, both "
                             f"multiples of table_step = {table_step} mV, got {v_range!r}")
        self.word_bits, self.v_frac_bits = word_bits, v_frac_bits
        self.gate_frac_bits, self.table_step = gate_frac_bits, table_step
        self.v_range, self.dt, self.interpolate = (v_lo, v_hi), dt, interpolate
        self._word_max = 2 ** (word_bits - 1) - 1
        self._acc_max = 2 ** (2 * word_bits - 1) - 1
        self._shift = v_frac_bits - int(k)  # low bits of the voltage offset below one entry

        cs = ChannelSet(HH_CHANNELS)
        unknown = set(params) - set(cs.param_names)
        if unknown:
            raise InputError(f"{where}: unknown HH parameters {sorted(unknown)}; known are "
                             f"{list(cs.param_names)}")
        defaults = dict(zip(cs.param_names, cs.default_params(1)[:, 0].tolist(), strict=True))
        self.params = {**defaults, **{name: float(x) for name, x in params.items()}}
        p = self.params
        if p["c_m"] <= 0 or min(p["g_na"], p["g_k"], p["g_leak"]) < 0:
            raise InputError(f"{where}: c_m must be positive and conductances non-negative, "
                             f"got {p}")

        word = self._word_max
        self._need(f"v_range {v_range} mV with v_frac_bits = {v_frac_bits}",
                   max(abs(v_lo), abs(v_hi)) * 2 ** v_frac_bits, word,
                   "use fewer v_frac_bits or a narrower v_range")
        self._need(f"a gate value of 1 with gate_frac_bits = {gate_frac_bits}",
                   2 ** gate_frac_bits, word, "use gate_frac_bits <= word_bits - 2")

        # Rate tables: one entry per table_step over v_range, plus one to interpolate into.
        self._v_lo_q = round(v_lo * 2 ** v_frac_bits)
        self._v_hi_q = round(v_hi * 2 ** v_frac_bits)
        v_tab = v_lo + table_step * np.arange(round((v_hi - v_lo) / table_step) + 2)
        one = 2 ** gate_frac_bits
        self._inf, self._decay = [], []
        for alpha, beta in ((HHSodium.alpha_m, HHSodium.beta_m),
                            (HHSodium.alpha_h, HHSodium.beta_h),
                            (HHPotassium.alpha_n, HHPotassium.beta_n)):
            a, b = alpha(v_tab), beta(v_tab)
            self._inf.append(np.round(a / (a + b) * one).astype(np.int64))
            self._decay.append(np.round(np.exp(-dt * (a + b)) * one).astype(np.int64))
        # Interpolation: |t[i+1] - t[i]| <= 2**g times the offset's low bits.
        self._need("the table interpolation product", one * 2 ** self._shift, self._acc_max,
                   "use a coarser table_step or fewer v_frac_bits")
        self._need("the gate update product", one * one, self._acc_max,
                   "use fewer gate_frac_bits")

        # Voltage coefficients, each scaled to fill a word.
        a_coef = [dt * p[g] / p["c_m"] for g in ("g_na", "g_k", "g_leak")]
        b_coef = [a * p[e] for a, e in zip(a_coef, ("e_na", "e_k", "e_leak"), strict=True)]
        self.a_frac_bits = _frac_bits_for(max(1.0, sum(a_coef)), word_bits)
        self.b_frac_bits = _frac_bits_for(max(abs(b) for b in b_coef), word_bits)
        self._a = np.array([round(a * 2 ** self.a_frac_bits) for a in a_coef], np.int64)
        self._b = np.array([round(b * 2 ** self.b_frac_bits) for b in b_coef], np.int64)
        self._need("the conductance sum sum_c A_c o_c", int(np.abs(self._a).sum()) * one,
                   self._acc_max, "use fewer gate_frac_bits")
        self._need("a drive product B_c o_c", int(np.abs(self._b).max()) * one, self._acc_max,
                   "use fewer gate_frac_bits")
        # The numerator before division: v + sum B_c o_c (+ the input, checked per run).
        self._numerator_bound = (max(-self._v_lo_q, self._v_hi_q)
                                 + int(np.abs(self._b).sum() * 2 ** v_frac_bits
                                       // 2 ** self.b_frac_bits) + 1)
        self._check_numerator(0)

    def _need(self, what: str, value: float, limit: int, fix: str) -> None:
        if value > limit:
            raise InputError(
                f"FixedPointHH: {what} needs {math.log2(value):.2f} bits of magnitude but a "
                f"{'word' if limit == self._word_max else 'double-width accumulator'} of this "
                f"{self.word_bits}-bit format holds {math.log2(limit + 1):.0f} plus the sign; "
                f"{fix}, or a wider word_bits")

    def _check_numerator(self, input_q: int) -> None:
        bound = self._numerator_bound + input_q
        self._need("the voltage numerator shifted for the division",
                   2 * bound * 2 ** self.a_frac_bits, self._acc_max,
                   "use fewer v_frac_bits, a narrower v_range or a smaller input current")

    def quantize_v(self, v: Any) -> np.ndarray:
        """Membrane potentials (mV) as fixed-point words, int64 arrays."""
        return np.round(np.asarray(v, np.float64) * 2 ** self.v_frac_bits).astype(np.int64)

    def _lookup(self, table: np.ndarray, off: np.ndarray, index: np.ndarray) -> np.ndarray:
        lo = table[index]
        if not self.interpolate or self._shift == 0:
            return lo
        low_bits = off & ((1 << self._shift) - 1)
        return lo + _round_shift((table[index + 1] - lo) * low_bits, self._shift)

    def step(self, v: np.ndarray, gates: np.ndarray, input_q: np.ndarray) -> np.ndarray:
        """One step in place on ``gates`` (``(3, n)`` int64); returns the new ``v`` words.

        ``input_q`` is ``dt i_ext / c_m`` in voltage words (see :meth:`simulate`).
        """
        g = self.gate_frac_bits
        off = v - self._v_lo_q
        index = off >> self._shift
        for x, inf, decay in zip(gates, self._inf, self._decay, strict=True):
            x_inf = self._lookup(inf, off, index)
            x[:] = x_inf + _round_shift((x - x_inf) * self._lookup(decay, off, index), g)
        m, h, n = gates
        m3h = _round_shift(_round_shift(_round_shift(m * m, g) * m, g) * h, g)
        n2 = _round_shift(n * n, g)
        n4 = _round_shift(n2 * n2, g)
        one = np.int64(1 << g)
        a_na, a_k, a_leak = self._a
        b_na, b_k, b_leak = self._b
        conductance = a_na * m3h + a_k * n4 + a_leak * one  # Q(a + g)
        drive = b_na * m3h + b_k * n4 + b_leak * one  # Q(b + g)
        numerator = v + _round_shift(drive, self.b_frac_bits + g - self.v_frac_bits) + input_q
        denominator = (1 << self.a_frac_bits) + _round_shift(conductance, g)  # Q(a), >= 1
        # round(numerator / (1 + G)) with numerator in Q(v): (2 N 2^a + D) // (2 D)
        return (2 * (numerator << self.a_frac_bits) + denominator) // (2 * denominator)

    def simulate(self, i_ext: Any, n_steps: int, *, v0: float = -65.0, record_every: int = 0,
                 spike_threshold: float = 0.0, max_spikes: int = 64) -> IonSimulation:
        """Run ``n_steps`` fixed-point steps from rest at ``v0`` with constant currents.

        The input enters as the per-step increment ``dt i_ext / c_m`` rounded to a voltage
        word (the chip receives it quantised). Spikes are upward crossings of
        ``spike_threshold``; their times are interpolated within the step from the decoded
        voltages (the host's readout, not the chip's).

        Args:
            i_ext: Injected currents, uA/cm^2, shape ``(n,)``.
            n_steps: Number of steps of ``dt``.
            v0: Initial potential, mV; gates start at their steady state there (from the
                tables).
            record_every: Record ``v`` every this many steps (0: none).
            spike_threshold: mV.
            max_spikes: Spike times kept per neuron.

        Returns:
            An :class:`~fusekit.ops.IonSimulation` with float64 ``v`` (mV), ``states``
            (``m, h, n``), ``v_record``, ``spike_count`` and ``spike_times`` (ms), decoded from
            the integer state.

        Raises:
            FixedPointRangeError: A voltage left ``v_range``.
        """
        i_ext = np.asarray(i_ext, np.float64)
        if i_ext.ndim != 1 or not np.isfinite(i_ext).all():
            raise InputError("FixedPointHH.simulate: i_ext must be a finite (n,) array of "
                             f"currents in uA/cm^2, got shape {i_ext.shape}")
        n = i_ext.shape[0]
        input_q = np.round(self.dt * i_ext / self.params["c_m"] * 2 ** self.v_frac_bits)
        input_q = input_q.astype(np.int64)
        biggest = int(np.abs(input_q).max(initial=0))
        self._need("the input increment dt i_ext / c_m", biggest, self._word_max,
                   "use a smaller current or fewer v_frac_bits")
        self._check_numerator(biggest)
        v = np.full(n, self.quantize_v(v0), np.int64)
        self._check_range(v, 0)
        off = v - self._v_lo_q
        gates = np.stack([self._lookup(inf, off, off >> self._shift) for inf in self._inf])
        scale = 2.0 ** -self.v_frac_bits
        records = []
        spike_count = np.zeros(n, np.int64)
        spike_times = np.full((max_spikes, n), np.nan)
        for step in range(n_steps):
            v_new = self.step(v, gates, input_q)
            self._check_range(v_new, step + 1)
            before, after = v * scale, v_new * scale
            for j in np.flatnonzero((before < spike_threshold) & (after >= spike_threshold)):
                if spike_count[j] < max_spikes:
                    frac = (spike_threshold - before[j]) / (after[j] - before[j])
                    spike_times[spike_count[j], j] = (step + frac) * self.dt
                spike_count[j] += 1
            v = v_new
            if record_every and (step + 1) % record_every == 0:
                records.append(v * scale)
        v_record = np.stack(records) if records else np.zeros((0, n))
        return IonSimulation(v * scale, gates * 2.0 ** -self.gate_frac_bits, v_record,
                             spike_count, spike_times)

    def _check_range(self, v: np.ndarray, step: int) -> None:
        bad = (v < self._v_lo_q) | (v > self._v_hi_q)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise FixedPointRangeError(
                f"FixedPointHH: neuron {j} reached {v[j] * 2.0 ** -self.v_frac_bits:.3f} mV "
                f"after step {step}, outside v_range {self.v_range} that the format and "
                "rate tables were built for; widen v_range (and check the format still "
                "holds it) or lower the input current")

    def __repr__(self) -> str:
        return (f"FixedPointHH(word_bits={self.word_bits}, v_frac_bits={self.v_frac_bits}, "
                f"gate_frac_bits={self.gate_frac_bits}, table_step={self.table_step}, "
                f"interpolate={self.interpolate})")


class FixedPointError(NamedTuple):
    """Error of a fixed-point run against the float64 reference, per input current.

    Attributes:
        currents: uA/cm^2, shape ``(k,)``.
        v_rms: Root-mean-square voltage difference over the run, mV, ``(k,)``.
        count_ref: Spike counts of the float64 reference, ``(k,)``.
        count_fixed: Spike counts of the fixed-point run, ``(k,)``.
        max_spike_shift: Largest spike-time difference over the spikes both runs have
            (paired in order), ms, ``(k,)``; NaN where neither spiked.
    """

    currents: np.ndarray
    v_rms: np.ndarray
    count_ref: np.ndarray
    count_fixed: np.ndarray
    max_spike_shift: np.ndarray


def fixed_point_error(chip: FixedPointHH, currents: Sequence[float] | np.ndarray, *,
                      duration: float = 100.0, v0: float = -65.0,
                      max_spikes: int = 256) -> FixedPointError:
    """Compare ``chip`` with ``ion_simulate`` (float64, reference backend) on step currents.

    Args:
        chip: The fixed-point model (its ``dt`` and parameters are used for both runs).
        currents: Constant currents, uA/cm^2, one neuron each.
        duration: ms.
        v0: Initial potential, mV (gates at steady state).
        max_spikes: Spike times compared per current.

    Returns:
        A :class:`FixedPointError`.
    """
    i_ext = np.asarray(currents, np.float64)
    n, n_steps = i_ext.shape[0], int(round(duration / chip.dt))
    cs = ChannelSet(HH_CHANNELS)
    params = cs.default_params(n, np.float64, **chip.params)
    v_init = np.full(n, float(v0))
    ref = ops.ion_simulate(v_init, cs.steady_states(v_init, params), params, i_ext,
                           channels=cs, dt=chip.dt, n_steps=n_steps, record_every=1,
                           max_spikes=max_spikes, backend="reference")
    fix = chip.simulate(i_ext, n_steps, v0=v0, record_every=1, max_spikes=max_spikes)
    v_rms = np.sqrt(np.mean((fix.v_record - ref.v_record) ** 2, axis=0))
    shift = np.abs(fix.spike_times - ref.spike_times)
    both = np.isfinite(shift)
    max_shift = np.where(both.any(axis=0), np.where(both, shift, 0.0).max(axis=0), np.nan)
    return FixedPointError(i_ext, v_rms, ref.spike_count, fix.spike_count, max_shift)
