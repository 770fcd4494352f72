"""SoKA layer, config and model wrapper."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from .. import ops
from .._errors import InputError


@dataclass
class SoKAConfig:
    """Which linears get a SoKA adapter and how it is shaped and initialised.

    Args:
        r: Kronecker terms per adapted layer.
        target_modules: Module names to adapt: a list (a name matches when it equals an entry
            or ends with ``"." + entry``), a regex string (full match), or ``"all-linear"``
            (every ``nn.Linear`` except the one named ``lm_head``/``classifier``).
        a_shape: ``(m1, n1)`` of the left factor, or ``None`` for the divisor pairs nearest
            the square roots (peft LoKr's default); with ``b_shape`` it must fit every target.
        b_shape: ``(m2, n2)``.
        init: ``"kpsvd"`` (leading KPSVD terms of the weight, residual frozen in the base),
            ``"kpsvd_exact"`` (the same with a full SVD) or ``"zeros"`` (``B = 0``).
        alpha: Scale of the adapter output for ``init="zeros"`` (``alpha / r``, as LoRA).
        modules_to_save: Names of modules kept trainable in full (e.g. a new classifier).
        seed: Seed of random initialisations.
        rank_pattern: Per-layer ranks overriding ``r``: keys are module names (exact or
            ``"." + key`` suffix) or regexes (full match), as in peft.
        rank_rule: Pick each layer's rank from the KPSVD spectrum of its pretrained weight,
            at most its ``r``: keyword arguments of :func:`fusekit.ops.select_rank`
            (``energy``, ``elbow``, ``min_elbow_gap``); the energy is measured against the
            whole weight's ``||W||_F^2``. Only with a KPSVD ``init``.
    """

    r: int = 8
    target_modules: list[str] | str = field(default_factory=lambda: ["q_proj", "v_proj"])
    a_shape: tuple[int, int] | None = None
    b_shape: tuple[int, int] | None = None
    init: str = "kpsvd"
    alpha: float | None = None
    modules_to_save: list[str] = field(default_factory=list)
    seed: int = 0
    rank_pattern: dict[str, int] = field(default_factory=dict)
    rank_rule: dict | None = None

    def __post_init__(self) -> None:
        if type(self.r) is not int or self.r < 1:
            raise InputError(f"SoKAConfig: r must be a positive int, got {self.r!r}")
        if self.init not in ("kpsvd", "kpsvd_exact", "zeros"):
            raise InputError(f"SoKAConfig: init must be 'kpsvd', 'kpsvd_exact' or 'zeros', got "
                             f"{self.init!r}")
        if (self.a_shape is None) != (self.b_shape is None):
            raise InputError("SoKAConfig: give both a_shape and b_shape, or neither")
        if self.rank_rule is not None and self.init == "zeros":
            raise InputError("SoKAConfig: rank_rule reads the KPSVD spectrum of the weight; use "
                             "init='kpsvd' or 'kpsvd_exact' with it")
        for key, value in self.rank_pattern.items():
            if type(value) is not int or value < 1:
                raise InputError(f"SoKAConfig: rank_pattern[{key!r}] must be a positive int, got "
                                 f"{value!r}")

    def rank_for(self, name: str) -> int:
        """The configured rank (the cap, with ``rank_rule``) of the module called ``name``."""
        for key, value in self.rank_pattern.items():
            if name == key or name.endswith("." + key) or re.fullmatch(key, name):
                return value
        return self.r


class SoKALinear(nn.Module):
    """``base(x) + scale * sum_k (A[k] kron B[k]) x`` with ``base`` frozen."""

    def __init__(self, base: nn.Linear, config: SoKAConfig, *, loading: bool = False) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise InputError(f"SoKALinear adapts torch.nn.Linear, got {type(base).__name__}")
        out_f, in_f = base.weight.shape
        if config.a_shape is None:
            a_shape, b_shape = ops.kron_factor_shapes((out_f, in_f))
        else:
            a_shape, b_shape = tuple(config.a_shape), tuple(config.b_shape)  # type: ignore[arg-type]
            if a_shape[0] * b_shape[0] != out_f or a_shape[1] * b_shape[1] != in_f:
                raise InputError(
                    f"SoKA factor shapes {a_shape} kron {b_shape} give a {a_shape[0] * b_shape[0]}"
                    f"x{a_shape[1] * b_shape[1]} weight, but the layer is {out_f}x{in_f}"
                )
        full = min(a_shape[0] * a_shape[1], b_shape[0] * b_shape[1])
        if config.r > full and not loading:
            raise InputError(
                f"SoKA rank {config.r} is above what factors {a_shape} kron {b_shape} allow "
                f"(at most min(m1*n1, m2*n2) = {full}); lower r or change the factor shapes"
            )
        params = config.r * (a_shape[0] * a_shape[1] + b_shape[0] * b_shape[1])
        if params >= out_f * in_f and not loading:
            raise InputError(
                f"SoKA on a {out_f}x{in_f} layer with factors {a_shape} kron {b_shape} and r="
                f"{config.r} has {params} parameters, no fewer than the weight itself: these "
                "dimensions have no useful factorization (prime sizes?); pass a_shape/b_shape "
                "or leave this layer out of target_modules"
            )
        self.base = base
        self.a_shape, self.b_shape, self.r = a_shape, b_shape, config.r
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        w = base.weight.detach()
        if config.init == "zeros":
            gen = torch.Generator().manual_seed(config.seed)
            A = torch.randn(config.r, *a_shape, generator=gen, dtype=w.dtype) / (a_shape[1] ** 0.5)
            B = torch.zeros(config.r, *b_shape, dtype=w.dtype)
            self.scale = (config.alpha or config.r) / config.r
            A0 = B0 = None
        else:
            method = "exact" if config.init == "kpsvd_exact" else "randomized"
            A, B, _ = ops.kpsvd(w.float(), a_shape, b_shape, config.r, method, seed=config.seed)
            A, B = A.to(w.dtype), B.to(w.dtype)
            self.scale = 1.0
            with torch.no_grad():  # the frozen residual: adapted output == original output
                base.weight -= _kron_sum(A, B).to(w.dtype)
            A0, B0 = A.clone(), B.clone()
        self.A = nn.Parameter(A.contiguous())
        self.B = nn.Parameter(B.contiguous())
        # The initial factors of a KPSVD init: what the base weight had taken out of it.
        self.register_buffer("A0", A0, persistent=False)
        self.register_buffer("B0", B0, persistent=False)
        self.merged = False

    def factors_for_original_base(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Factors whose Kronecker sum is this layer's change to the *original* weight.

        After a KPSVD init the base holds ``W - sum A0 kron B0``; applied to the original
        ``W`` the adapter must be ``scale * sum A kron B - sum A0 kron B0``: the same layout
        with ``2r`` terms (``[scale A, -A0]``, ``[B, B0]``), as PiSSA's conversion to LoRA.
        """
        A, B = self.scale * self.A.detach(), self.B.detach()
        if self.A0 is None:
            return A.contiguous(), B.contiguous()
        return torch.cat([A, -self.A0]).contiguous(), torch.cat([B, self.B0]).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Base output plus the Kronecker-sum adapter, never forming the delta weight."""
        y = self.base(x)
        if self.merged:
            return y
        return y + self.scale * ops.kron_linear(x, self.A, self.B)

    def delta_weight(self) -> torch.Tensor:
        """The adapter as a dense ``(out, in)`` matrix (for merging and inspection)."""
        return self.scale * _kron_sum(self.A.detach(), self.B.detach())

    def merge(self) -> None:
        """Add the adapter into the base weight: zero inference overhead until ``unmerge``."""
        if not self.merged:
            with torch.no_grad():
                self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    def unmerge(self) -> None:
        """Undo :meth:`merge`."""
        if self.merged:
            with torch.no_grad():
                self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, A={tuple(self.A.shape[1:])}, B={tuple(self.B.shape[1:])}"


def _ruled_rank(module: nn.Linear, config: SoKAConfig) -> int:
    """Rank from the leading ``config.r`` KPSVD values of the layer's weight and the rule."""
    w = module.weight.detach().float()
    a_shape, b_shape = ((config.a_shape, config.b_shape) if config.a_shape is not None
                        else ops.kron_factor_shapes(tuple(w.shape)))
    cap = min(config.r, a_shape[0] * a_shape[1], b_shape[0] * b_shape[1])
    _, _, s = ops.kpsvd(w, a_shape, b_shape, cap, "randomized", seed=config.seed)
    rank = ops.select_rank(s.numpy(), total_energy=float((w.double() ** 2).sum()),
                           **config.rank_rule)
    return max(1, rank)


def _kron_sum(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return sum(torch.kron(A[k], B[k]) for k in range(A.shape[0]))  # type: ignore[return-value]


def _matches(name: str, module: nn.Module, target: list[str] | str) -> bool:
    if not isinstance(module, nn.Linear):
        return False
    if target == "all-linear":
        return name.split(".")[-1] not in ("lm_head", "classifier")
    if isinstance(target, str):
        return re.fullmatch(target, name) is not None
    return any(name == t or name.endswith("." + t) for t in target)


class SoKAModel(nn.Module):
    """A model whose targeted linears carry SoKA adapters; everything else is frozen."""

    def __init__(self, model: nn.Module, config: SoKAConfig,
                 shapes: dict[str, tuple] | None = None) -> None:
        super().__init__()
        self.base_model = model
        self.config = config
        targets = [(n, m) for n, m in model.named_modules()
                   if _matches(n, m, config.target_modules)]
        if not targets:
            linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
            raise InputError(
                f"target_modules={config.target_modules!r} matches no nn.Linear of the model; "
                f"its linear layers are: {', '.join(linears[:20]) or 'none'}"
            )
        for p in model.parameters():
            p.requires_grad_(False)
        for name, module in targets:
            parent, _, child = name.rpartition(".")
            layer_config = replace(config, r=config.rank_for(name))
            if shapes is not None:  # loading: the saved shapes and term counts
                a_shape, b_shape, terms = shapes[name]
                layer_config = replace(config, a_shape=a_shape, b_shape=b_shape, r=terms)
            elif config.rank_rule is not None:
                layer_config = replace(layer_config, r=_ruled_rank(module, layer_config))
            setattr(model.get_submodule(parent) if parent else model, child,
                    SoKALinear(module, layer_config, loading=shapes is not None))
        for name in config.modules_to_save:
            try:
                keep = model.get_submodule(name)
            except AttributeError:
                raise InputError(f"modules_to_save: the model has no module {name!r}") from None
            for p in keep.parameters():
                p.requires_grad_(True)

    def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, D102
        return self.base_model(*args, **kwargs)

    def soka_layers(self) -> Iterator[tuple[str, SoKALinear]]:
        """``(name, layer)`` of every SoKA layer."""
        for name, m in self.base_model.named_modules():
            if isinstance(m, SoKALinear):
                yield name, m

    def trainable_parameters(self) -> tuple[int, int]:
        """``(trainable, total)`` parameter counts."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, sum(p.numel() for p in self.parameters())

    def print_trainable_parameters(self) -> None:
        """Print trainable and total parameters, as peft does."""
        t, n = self.trainable_parameters()
        print(f"trainable params: {t:,} || all params: {n:,} || trainable%: {100 * t / n:.4f}")

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """See :func:`save_pretrained`."""
        save_pretrained(self, directory)

    def merge_and_unload(self) -> nn.Module:
        """Merge every adapter into its base weight and return the plain model."""
        for name, layer in list(self.soka_layers()):
            layer.merge()
            parent, _, child = name.rpartition(".")
            host = self.base_model.get_submodule(parent) if parent else self.base_model
            setattr(host, child, layer.base)
        return self.base_model


def _safetensors() -> tuple:
    try:
        from safetensors.torch import load_file, save_file
    except ImportError:
        raise InputError("saving and loading SoKA adapters needs safetensors: "
                         "pip install safetensors") from None
    return load_file, save_file


def save_pretrained(model: SoKAModel, directory: str | os.PathLike) -> None:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` to ``directory``.

    The saved factors apply to the **original** base model (for a KPSVD init they carry the
    ``2r``-term conversion of :meth:`SoKALinear.factors_for_original_base`), so
    :func:`from_pretrained` on a fresh copy of the base gives the adapted model.
    """
    _, save_file = _safetensors()
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    tensors, layers = {}, {}
    for name, layer in model.soka_layers():
        A, B = layer.factors_for_original_base()
        tensors[f"{name}.A"], tensors[f"{name}.B"] = A.cpu(), B.cpu()
        layers[name] = {"a_shape": list(layer.a_shape), "b_shape": list(layer.b_shape),
                        "terms": int(A.shape[0]), "in_features": layer.base.in_features,
                        "out_features": layer.base.out_features}
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(model.config).items()}
    meta = {"peft_type": "SOKA", "library": "fusekit", "config": config, "layers": layers}
    (path / "adapter_config.json").write_text(json.dumps(meta, indent=2))
    save_file(tensors, str(path / "adapter_model.safetensors"))


def from_pretrained(model: nn.Module, directory: str | os.PathLike) -> SoKAModel:
    """Attach the SoKA adapter saved in ``directory`` to ``model`` (the original base).

    Raises:
        InputError: When the directory lacks the files, or a saved layer is missing from the
            model or has another shape (an adapter for a different base model).
    """
    load_file, _ = _safetensors()
    path = Path(directory)
    try:
        meta = json.loads((path / "adapter_config.json").read_text())
        tensors = load_file(str(path / "adapter_model.safetensors"))
    except FileNotFoundError as exc:
        raise InputError(f"no SoKA adapter in {path}: {exc.strerror} ({exc.filename})") from None
    modules = dict(model.named_modules())
    for name, spec in meta["layers"].items():
        m = modules.get(name)
        want = (spec["out_features"], spec["in_features"])
        if not isinstance(m, nn.Linear) or tuple(m.weight.shape) != want:
            got = tuple(m.weight.shape) if isinstance(m, nn.Linear) else type(m).__name__
            raise InputError(f"this adapter was saved for a model whose {name!r} is a "
                             f"{want[0]}x{want[1]} linear; this model has {got}")
    saved = meta["config"]
    config = SoKAConfig(**{**saved, "init": "zeros", "alpha": None,
                           "target_modules": sorted(meta["layers"]),
                           "a_shape": None, "b_shape": None})
    soka = SoKAModel(model, config, shapes={n: (tuple(s["a_shape"]), tuple(s["b_shape"]),
                                                  s["terms"]) for n, s in meta["layers"].items()})
    for name, layer in soka.soka_layers():
        with torch.no_grad():
            layer.A.copy_(tensors[f"{name}.A"])
            layer.B.copy_(tensors[f"{name}.B"])
        layer.scale = 1.0
    return soka


def get_soka_model(model: nn.Module, config: SoKAConfig) -> SoKAModel:
    """Wrap ``model`` with SoKA adapters on the linears ``config.target_modules`` names.

    Args:
        model: Any ``torch.nn.Module``; it is modified in place (as peft does).
        config: The :class:`SoKAConfig`.

    Returns:
        The :class:`SoKAModel`; only adapter factors and ``modules_to_save`` are trainable.
    """
    return SoKAModel(model, config)
