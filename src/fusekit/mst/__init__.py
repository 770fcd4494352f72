"""Minimum spanning forests, the neuromorphic way and the fast way.

:func:`minimum_spanning_forest` runs the pipelined spiking Kruskal (a spike sort and a
union-find running concurrently, handing events over in firing order), its two serial
variants (spike sort or spiking radix sort, then union-find), filter-Kruskal or Borůvka, and
reports the forest, wall-clock time per stage, the spiking network's counts, and on request
(:meth:`MSTResult.schedule`) the model's time steps beside a spiking Prim's baseline.

Example:
    >>> from fusekit.mst import minimum_spanning_forest, graphs
    >>> u, v, w, n = graphs.delaunay_graph(1000, seed=0, weights="int255")
    >>> r = minimum_spanning_forest(u, v, w, n)
    >>> r.n_components, len(r.edges)
    (1, 999)

``fusekit.mst.graphs`` has the DIMACS10-family generators and the file readers; it needs
SciPy (``pip install scipy``).
"""

from . import graphs as graphs
from ._forest import METHODS as METHODS
from ._forest import MSTResult as MSTResult
from ._forest import choose_method as choose_method
from ._forest import minimum_spanning_forest as minimum_spanning_forest
from ._input import EdgeList as EdgeList
from ._input import edge_list as edge_list
from ._input import from_networkx as from_networkx
from ._input import from_scipy as from_scipy
from ._model import SpikingSchedule as SpikingSchedule
from ._model import kruskal_schedule as kruskal_schedule

__all__ = ["METHODS", "EdgeList", "MSTResult", "SpikingSchedule", "choose_method", "edge_list",
           "from_networkx", "from_scipy", "graphs", "kruskal_schedule",
           "minimum_spanning_forest"]
