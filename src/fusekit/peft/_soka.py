"""SoKA layer, config and model wrapper."""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

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
        a_shape: ``(m1, n1)`` of the left factor, or ``None`` for shapes chosen per layer by
            ``inner_dim``; with ``b_shape`` it must fit every target.
        b_shape: ``(m2, n2)``.
        inner_dim: ``f`` for the shapes ``A: (out/f, f)``, ``B: (f, in/f)`` on every layer
            (``f`` must divide both sides). One such term has ``out + in`` parameters, as one
            LoRA rank, and costs ``f`` times LoRA's multiply-adds per token; ``f = 1`` is
            LoRA exactly. ``"square"``: the divisor pairs nearest the square roots (peft
            LoKr's shapes; the most expensive per token). ``None`` (default): 8 where it
            divides both sides, else 4, else 2, else ``"square"``; chosen from measurements
            (docs/benchmarks.md: at f = 8 a 4096x4096 layer trains at 1.0-1.06x LoRA's time,
            near-square factors at 1.6-2.6x).
        init: ``"kpsvd"`` (leading KPSVD terms of the weight, residual frozen in the base),
            ``"kpsvd_exact"`` (the same with a full SVD), ``"gradient"`` (directions from the
            KPSVD of the mean gradient of the weight over a few batches, an estimate of the
            full fine-tuning update; magnitudes from the weight's KPSVD values; residual frozen;
            needs ``init_batches`` and ``loss_fn`` in :func:`get_soka_model`) or ``"zeros"``
            (``B = 0``).
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
    inner_dim: int | str | None = None
    init: str = "kpsvd"
    alpha: float | None = None
    modules_to_save: list[str] = field(default_factory=list)
    seed: int = 0
    rank_pattern: dict[str, int] = field(default_factory=dict)
    rank_rule: dict | None = None

    def __post_init__(self) -> None:
        if type(self.r) is not int or self.r < 1:
            raise InputError(f"SoKAConfig: r must be a positive int, got {self.r!r}")
        if self.init not in _INITS:
            raise InputError(f"SoKAConfig: init must be one of {', '.join(map(repr, _INITS))}, "
                             f"got {self.init!r}")
        if (self.a_shape is None) != (self.b_shape is None):
            raise InputError("SoKAConfig: give both a_shape and b_shape, or neither")
        if self.inner_dim is not None:
            if self.inner_dim != "square" and (type(self.inner_dim) is not int
                                               or self.inner_dim < 1):
                raise InputError(f"SoKAConfig: inner_dim must be a positive int, 'square' or "
                                 f"None, got {self.inner_dim!r}")
            if self.a_shape is not None:
                raise InputError("SoKAConfig: give inner_dim or a_shape/b_shape, not both")
        if self.rank_rule is not None and self.init == "zeros":
            raise InputError("SoKAConfig: rank_rule reads the KPSVD spectrum of the weight; use "
                             "init='kpsvd' or 'kpsvd_exact' with it")
        if not isinstance(self.rank_pattern, dict):
            raise InputError(f"SoKAConfig: rank_pattern must be a dict of module name (or regex) "
                             f"to rank, got {self.rank_pattern!r}")
        for key, value in self.rank_pattern.items():
            if type(value) is not int or value < 1:
                raise InputError(f"SoKAConfig: rank_pattern[{key!r}] must be a positive int, got "
                                 f"{value!r}")
            _check_pattern(f"rank_pattern key {key!r}", key)
        self._check_targets()
        if self.a_shape is not None:
            for name in ("a_shape", "b_shape"):
                shape = getattr(self, name)
                if (not isinstance(shape, (tuple, list)) or len(shape) != 2
                        or any(isinstance(d, bool) or not isinstance(d, numbers.Integral)
                               or d < 1 for d in shape)):
                    raise InputError(f"SoKAConfig: {name} must be two positive ints (rows, "
                                     f"columns), got {shape!r}")
        if self.alpha is not None and (isinstance(self.alpha, bool)
                                       or not isinstance(self.alpha, (int, float))
                                       or not math.isfinite(self.alpha) or self.alpha == 0):
            raise InputError(f"SoKAConfig: alpha must be a finite non-zero number or None "
                             f"(None: alpha = r, a scale of 1), got {self.alpha!r}")
        if isinstance(self.modules_to_save, str) or not all(
                isinstance(m, str) for m in self.modules_to_save):
            one = f" (for one module: [{self.modules_to_save!r}])" * isinstance(
                self.modules_to_save, str)
            raise InputError(f"SoKAConfig: modules_to_save must be a list of module names, got "
                             f"{self.modules_to_save!r}{one}")
        if type(self.seed) is not int:
            raise InputError(f"SoKAConfig: seed must be an int, got {self.seed!r}")
        if self.rank_rule is not None:
            if not isinstance(self.rank_rule, dict):
                raise InputError(f"SoKAConfig: rank_rule must be a dict of select_rank's keyword "
                                 f"arguments, got {self.rank_rule!r}")
            unknown = set(self.rank_rule) - set(_RANK_RULE_KEYS)
            if unknown:
                raise InputError(f"SoKAConfig: rank_rule takes {', '.join(_RANK_RULE_KEYS)}; "
                                 f"unknown: {', '.join(map(repr, sorted(unknown, key=str)))}")

    def _check_targets(self) -> None:
        targets = self.target_modules
        if isinstance(targets, str):
            if targets != "all-linear":
                _check_pattern("target_modules", targets)
        elif not isinstance(targets, (list, tuple)) or not all(isinstance(t, str)
                                                               for t in targets):
            raise InputError(f"SoKAConfig: target_modules must be a list of module names, a "
                             f"regex string or 'all-linear', got {targets!r}")

    def factor_shapes(self, out_features: int, in_features: int
                      ) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(a_shape, b_shape)`` for an ``out_features x in_features`` layer."""
        if self.a_shape is not None:
            a_shape, b_shape = tuple(self.a_shape), tuple(self.b_shape)  # type: ignore[arg-type]
            if a_shape[0] * b_shape[0] != out_features or a_shape[1] * b_shape[1] != in_features:
                raise InputError(
                    f"SoKA factor shapes {a_shape} kron {b_shape} give a "
                    f"{a_shape[0] * b_shape[0]}x{a_shape[1] * b_shape[1]} weight, but the layer "
                    f"is {out_features}x{in_features}"
                )
            return a_shape, b_shape  # type: ignore[return-value]
        f = self.inner_dim
        if f is None:
            f = next((d for d in _DEFAULT_INNER_DIMS if out_features % d == 0
                      and in_features % d == 0 and min(out_features, in_features) > d), "square")
        if f == "square":
            return ops.kron_factor_shapes((out_features, in_features))
        if out_features % f or in_features % f:
            raise InputError(f"SoKA inner_dim={f} must divide both sides of the "
                             f"{out_features}x{in_features} layer")
        return (out_features // f, f), (f, in_features // f)

    def rank_for(self, name: str) -> int:
        """The configured rank (the cap, with ``rank_rule``) of the module called ``name``."""
        for key, value in self.rank_pattern.items():
            if name == key or name.endswith("." + key) or re.fullmatch(key, name):
                return value
        return self.r


#: The keyword arguments of ``ops.select_rank`` that ``rank_rule`` may give.
_RANK_RULE_KEYS = ("energy", "elbow", "min_elbow_gap")


def _check_model(what: str, model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise InputError(f"{what}: model must be a torch.nn.Module, got {type(model).__name__}")


def _check_pattern(what: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise InputError(f"SoKAConfig: {what} is not a valid regex ({exc}); escape special "
                         f"characters with re.escape for a literal name") from None


class SoKALinear(nn.Module):
    """``base(x) + scale * sum_k (A[k] kron B[k]) x`` with ``base`` frozen."""

    def __init__(self, base: nn.Linear, config: SoKAConfig, *, loading: bool = False,
                 grad: torch.Tensor | None = None) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise InputError(f"SoKALinear adapts torch.nn.Linear, got {type(base).__name__}")
        out_f, in_f = base.weight.shape
        a_shape, b_shape = config.factor_shapes(out_f, in_f)
        if config.init == "gradient" and grad is None and not loading:
            raise InputError("SoKA init='gradient' needs the weight's gradient estimate: build "
                             "the model with get_soka_model(model, config, init_batches=..., "
                             "loss_fn=...)")
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
            A, B, s = ops.kpsvd(w.float(), a_shape, b_shape, config.r, method, seed=config.seed)
            if config.init == "gradient":
                # Directions of the leading Kronecker terms of the estimated update, at the
                # weight's own KPSVD magnitudes (so the learning rates of init="kpsvd" fit).
                Ag, Bg, sg = ops.kpsvd(grad.float(), a_shape, b_shape, config.r, method,
                                       seed=config.seed)
                unit = torch.where(sg > 0, s / sg.clamp_min(torch.finfo(sg.dtype).tiny), 0.0)
                A, B = Ag * unit.sqrt()[:, None, None], Bg * unit.sqrt()[:, None, None]
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


_INITS = ("kpsvd", "kpsvd_exact", "gradient", "zeros")
#: Default inner dimensions, tried in order (see SoKAConfig.inner_dim).
_DEFAULT_INNER_DIMS = (8, 4, 2)


def _ruled_rank(module: nn.Linear, config: SoKAConfig) -> int:
    """Rank from the leading ``config.r`` KPSVD values of the layer's weight and the rule."""
    w = module.weight.detach().float()
    a_shape, b_shape = config.factor_shapes(*w.shape)
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
                 shapes: dict[str, tuple] | None = None,
                 grads: dict[str, torch.Tensor] | None = None) -> None:
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
                    SoKALinear(module, layer_config, loading=shapes is not None,
                               grad=None if grads is None else grads[name]))
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
        weights = path / "adapter_model.safetensors"
        try:
            tensors = load_file(str(weights))
        except OSError:
            raise
        except Exception as exc:  # safetensors' own error type for a damaged file
            raise InputError(f"{weights} is not a safetensors file ({exc})") from exc
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise InputError(f"no SoKA adapter in {path}: {exc.strerror} ({exc.filename}); give the "
                         f"directory save_pretrained wrote") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path / 'adapter_config.json'} is not a SoKA adapter config (not "
                         f"JSON: {exc})") from None
    if not isinstance(meta, dict) or not {"layers", "config"} <= set(meta):
        raise InputError(f"{path / 'adapter_config.json'} is not a SoKA adapter config (no "
                         f"'layers' and 'config' entries)")
    _check_model("from_pretrained", model)
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
                           "target_modules": sorted(meta["layers"]), "a_shape": None,
                           "b_shape": None, "inner_dim": None, "rank_rule": None,
                           "rank_pattern": {}})
    soka = SoKAModel(model, config, shapes={n: (tuple(s["a_shape"]), tuple(s["b_shape"]),
                                                  s["terms"]) for n, s in meta["layers"].items()})
    for name, layer in soka.soka_layers():
        with torch.no_grad():
            layer.A.copy_(tensors[f"{name}.A"])
            layer.B.copy_(tensors[f"{name}.B"])
        layer.scale = 1.0
    return soka


def gradient_estimates(model: nn.Module, config: SoKAConfig, init_batches: Iterable[Any],
                       loss_fn: Callable[[nn.Module, Any], torch.Tensor]
                       ) -> dict[str, torch.Tensor]:
    """Mean gradient of ``loss_fn`` w.r.t. every targeted weight over ``init_batches``.

    ``-lr`` times it estimates the full fine-tuning update of a few steps; ``init="gradient"``
    takes the leading Kronecker terms of it. The model's parameters, their ``requires_grad``
    flags and ``.grad`` fields are left as they were.
    """
    targets = [(n, m) for n, m in model.named_modules() if _matches(n, m, config.target_modules)]
    if not targets:
        raise InputError(f"target_modules={config.target_modules!r} matches no nn.Linear")
    flags = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    sums = {n: torch.zeros_like(m.weight, dtype=torch.float32) for n, m in targets}
    batches = 0
    try:
        for p, _, _ in flags:
            p.requires_grad_(False)
        for _, m in targets:
            m.weight.requires_grad_(True)
        for batch in init_batches:
            for _, m in targets:
                m.weight.grad = None
            loss = loss_fn(model, batch)
            if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
                raise InputError("loss_fn(model, batch) must return a scalar loss tensor, got "
                                 f"{type(loss).__name__}")
            if not torch.isfinite(loss):
                raise InputError(f"loss_fn gave a non-finite loss ({float(loss)}) on init batch "
                                 f"{batches}; gradient init needs finite losses")
            loss.backward()
            for n, m in targets:
                if m.weight.grad is not None:
                    sums[n] += m.weight.grad.float()
            batches += 1
    finally:
        for p, flag, grad in flags:
            p.requires_grad_(flag)
            p.grad = grad
    if batches == 0:
        raise InputError("init='gradient' got no init_batches; pass a few training batches")
    return {n: g / batches for n, g in sums.items()}


def get_soka_model(model: nn.Module, config: SoKAConfig, *,
                   init_batches: Iterable[Any] | None = None,
                   loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None) -> SoKAModel:
    """Wrap ``model`` with SoKA adapters on the linears ``config.target_modules`` names.

    Args:
        model: Any ``torch.nn.Module``; it is modified in place (as peft does).
        config: The :class:`SoKAConfig`.
        init_batches: For ``init="gradient"``: a few training batches (any objects
            ``loss_fn`` takes).
        loss_fn: For ``init="gradient"``: ``loss_fn(model, batch)`` returns the scalar loss.

    Returns:
        The :class:`SoKAModel`; only adapter factors and ``modules_to_save`` are trainable.

    Example:
        >>> import torch, fusekit.peft as fp
        >>> net = torch.nn.Sequential(torch.nn.Linear(32, 32))
        >>> data = [torch.randn(8, 32) for _ in range(2)]
        >>> soka = fp.get_soka_model(net, fp.SoKAConfig(r=2, target_modules="all-linear",
        ...                          init="gradient"), init_batches=data,
        ...                          loss_fn=lambda m, x: (m(x) - x).pow(2).mean())
    """
    _check_model("get_soka_model", model)
    if not isinstance(config, SoKAConfig):
        raise InputError(f"get_soka_model: config must be a SoKAConfig, got "
                         f"{type(config).__name__} (SoKAConfig(**your_dict) makes one)")
    grads = None
    if config.init == "gradient":
        if init_batches is None or loss_fn is None:
            raise InputError("SoKA init='gradient' needs init_batches and loss_fn: "
                             "get_soka_model(model, config, init_batches=[...], "
                             "loss_fn=lambda model, batch: loss)")
        grads = gradient_estimates(model, config, init_batches, loss_fn)
    return SoKAModel(model, config, grads=grads)
