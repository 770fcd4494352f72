"""Biophysical neurons on fusekit's ion-channel ops.

Channels are small Python classes (states, parameters, rates, conductance, reversal); fusekit
compiles a cell's channels into one fused kernel per backend. Shipped: the Hodgkin-Huxley
squid channels (:mod:`fusekit.neuro.hh`) and the cortical set of Pospischil et al. 2008
(:mod:`fusekit.neuro.pospischil`).

Example:
    >>> import numpy as np
    >>> from fusekit import neuro
    >>> pop = neuro.Population(neuro.HH_CHANNELS, n=100)
    >>> pop.i_ext[:] = 10.0  # uA/cm^2
    >>> out = pop.run(50.0, dt=0.025, record_every=4)
    >>> out.v_record.shape
    (500, 100)

Spiking layers for torch with surrogate spike gradients (:class:`HHLayer`, :class:`LIFLayer`,
:class:`LeakyReadout`, :class:`SpikingClassifier`, :class:`SuperSpike`) import torch, so they
load on first use.

See ``docs/neuro.md``.
"""

from typing import Any

from ..ops.ion import IonSimulation as IonSimulation
from ..ops.ion_channel import Channel as Channel
from ..ops.ion_channel import ChannelSet as ChannelSet
from ..ops.ion_channel import exp as exp
from ..ops.ion_channel import log as log
from ..ops.ion_channel import sqrt as sqrt
from ..ops.ion_channel import vtrap as vtrap
from ._autograd import cable_network_simulate_torch as cable_network_simulate_torch
from ._autograd import network_simulate_torch as network_simulate_torch
from ._autograd import params_tensor as params_tensor
from ._autograd import simulate as simulate
from ._autograd import simulate_torch as simulate_torch
from ._cable import CableTree as CableTree
from ._cable import Morphology as Morphology
from ._cable import cable_coupling as cable_coupling
from ._cable import cable_tree as cable_tree
from ._cable import read_swc as read_swc
from ._cable_network import CableNetwork as CableNetwork
from ._fit import ParameterFit as ParameterFit
from ._fit import fit_parameters as fit_parameters
from ._fit import noisy_steps as noisy_steps
from ._fit import trace_loss as trace_loss
from ._fixed_point import FixedPointError as FixedPointError
from ._fixed_point import FixedPointHH as FixedPointHH
from ._fixed_point import FixedPointRangeError as FixedPointRangeError
from ._fixed_point import fixed_point_error as fixed_point_error
from ._import3d import NeuronTree as NeuronTree
from ._network import Network as Network
from ._network import random_connectivity as random_connectivity
from ._neuron import NeuronModel as NeuronModel
from ._neuron import to_neuron as to_neuron
from ._nir import LIFFit as LIFFit
from ._nir import LIFRun as LIFRun
from ._nir import fit_lif as fit_lif
from ._nir import fit_lif_cable as fit_lif_cable
from ._nir import simulate_nir as simulate_nir
from ._nir import soma_attenuation as soma_attenuation
from ._nir import to_nir as to_nir
from ._nir import write_nir as write_nir
from ._plots import plot_raster as plot_raster
from ._plots import plot_states as plot_states
from ._plots import plot_traces as plot_traces
from ._population import Population as Population
from ._record import Recording as Recording
from ._record import record as record
from .hh import HH_CHANNELS as HH_CHANNELS
from .hh import HHLeak as HHLeak
from .hh import HHPotassium as HHPotassium
from .hh import HHSodium as HHSodium
from .pospischil import POSPISCHIL_RS_CHANNELS as POSPISCHIL_RS_CHANNELS
from .pospischil import PospischilCaL as PospischilCaL
from .pospischil import PospischilCaT as PospischilCaT
from .pospischil import PospischilKd as PospischilKd
from .pospischil import PospischilLeak as PospischilLeak
from .pospischil import PospischilM as PospischilM
from .pospischil import PospischilNa as PospischilNa

#: Names served by ``_layers`` (torch), imported on first access to keep ``fusekit.neuro`` light.
_TORCH_LAYERS = ("HHLayer", "LIFLayer", "LeakyReadout", "SpikingClassifier", "SuperSpike")


def __getattr__(name: str) -> Any:
    if name in _TORCH_LAYERS:
        from . import _layers

        return getattr(_layers, name)
    raise AttributeError(f"module 'fusekit.neuro' has no attribute {name!r}")


__all__ = [
    "HH_CHANNELS",
    "CableNetwork",
    "CableTree",
    "Channel",
    "ChannelSet",
    "FixedPointError",
    "FixedPointHH",
    "FixedPointRangeError",
    "HHLayer",
    "HHLeak",
    "HHPotassium",
    "HHSodium",
    "IonSimulation",
    "LIFFit",
    "LIFRun",
    "LIFLayer",
    "LeakyReadout",
    "Morphology",
    "Network",
    "NeuronModel",
    "NeuronTree",
    "POSPISCHIL_RS_CHANNELS",
    "ParameterFit",
    "Population",
    "PospischilCaL",
    "PospischilCaT",
    "PospischilKd",
    "PospischilLeak",
    "PospischilM",
    "PospischilNa",
    "Recording",
    "SpikingClassifier",
    "SuperSpike",
    "cable_coupling",
    "cable_network_simulate_torch",
    "cable_tree",
    "exp",
    "fit_lif",
    "fit_lif_cable",
    "fit_parameters",
    "fixed_point_error",
    "log",
    "noisy_steps",
    "params_tensor",
    "plot_raster",
    "plot_states",
    "plot_traces",
    "random_connectivity",
    "read_swc",
    "record",
    "simulate",
    "simulate_nir",
    "soma_attenuation",
    "simulate_torch",
    "network_simulate_torch",
    "sqrt",
    "to_neuron",
    "to_nir",
    "trace_loss",
    "vtrap",
    "write_nir",
]
