"""Reference kernels of the mst family: stable Kruskal with the reference union-find."""

from ..._registry import register_kernel
from ...ops import mst, spike


def _filter_kruskal_reference(u, v, w, *, n, max_unions):  # noqa: ANN001, ANN202
    return mst.forest_reference(u, v, w, n=n, max_unions=max_unions)


register_kernel(mst.filter_kruskal_op, backend="reference", arrays=["numpy"],
                dtypes=spike.VERTEX_DTYPES)(_filter_kruskal_reference)
register_kernel(mst.boruvka_op, backend="reference", arrays=["numpy"],
                dtypes=spike.VERTEX_DTYPES)(mst.boruvka_reference)
register_kernel(mst.pipelined_kruskal_op, backend="reference", arrays=["numpy"],
                dtypes=spike.VERTEX_DTYPES)(mst.pipelined_kruskal_reference)
