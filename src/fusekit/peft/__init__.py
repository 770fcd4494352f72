"""SoKA adapters (sums of Kronecker products) for ``torch.nn.Linear``, in peft's conventions.

A SoKA layer adds ``sum_k (A[k] kron B[k]) x`` to a frozen base linear, computed with
:func:`fusekit.ops.kron_linear` (the delta weight is never formed). With ``init="kpsvd"`` the
factors are the leading KPSVD terms of the pretrained weight and the base keeps the frozen
residual (as PiSSA does with the SVD), so the adapted model computes exactly what the original
did; with ``init="zeros"`` ``B`` starts at zero (as LoRA's ``B``) and the base is untouched.

Example:
    >>> import torch, fusekit.peft as fp
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
    ...                             torch.nn.Linear(64, 16))
    >>> soka = fp.get_soka_model(model, fp.SoKAConfig(r=2, target_modules=["0"]))
    >>> soka.print_trainable_parameters()  # doctest: +SKIP

``save_pretrained`` / ``from_pretrained`` write and read ``adapter_config.json`` and
``adapter_model.safetensors``; saved factors apply to the original base model.
``init="gradient"`` takes the factors' directions from the KPSVD of the mean gradient of each
weight over a few batches (``get_soka_model(..., init_batches=..., loss_fn=...)``).
"""

from ._soka import SoKAConfig as SoKAConfig
from ._soka import SoKALinear as SoKALinear
from ._soka import SoKAModel as SoKAModel
from ._soka import from_pretrained as from_pretrained
from ._soka import get_soka_model as get_soka_model
from ._soka import gradient_estimates as gradient_estimates
from ._soka import save_pretrained as save_pretrained

__all__ = ["SoKAConfig", "SoKALinear", "SoKAModel", "from_pretrained", "get_soka_model",
           "gradient_estimates", "save_pretrained"]
