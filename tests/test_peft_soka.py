"""fusekit.peft: SoKA adapters on nn.Linear, in peft's conventions."""

import pytest

torch = pytest.importorskip("torch")

import fusekit  # noqa: E402
import fusekit.peft as fp  # noqa: E402


def mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 10))


def test_kpsvd_init_keeps_the_model_output_exactly():
    model, x = mlp(), torch.randn(5, 64)
    before = model(x).detach()
    soka = fp.get_soka_model(model, fp.SoKAConfig(r=3, target_modules=["0", "2"]))
    torch.testing.assert_close(soka(x), before, rtol=1e-5, atol=1e-5)


def test_only_the_factors_train():
    soka = fp.get_soka_model(mlp(), fp.SoKAConfig(r=2, target_modules=["0"]))
    names = [n for n, p in soka.named_parameters() if p.requires_grad]
    assert sorted(n.split(".")[-1] for n in names) == ["A", "B"]
    soka(torch.randn(4, 64)).sum().backward()
    layer = dict(soka.soka_layers())["0"]
    assert layer.A.grad is not None and layer.base.weight.grad is None


def test_default_factor_shapes_have_inner_dim_8_and_layer_computes_kron_sum():
    soka = fp.get_soka_model(mlp(), fp.SoKAConfig(r=2, target_modules=["0"], init="zeros"))
    layer = dict(soka.soka_layers())["0"]
    assert (layer.a_shape, layer.b_shape) == ((6, 8), (8, 8))  # A: (48/8, 8), B: (8, 64/8)
    with torch.no_grad():
        layer.B.normal_()
    x = torch.randn(3, 64)
    dense = layer.base(x) + x @ layer.delta_weight().T
    torch.testing.assert_close(layer(x), dense, rtol=1e-5, atol=1e-5)


def test_zeros_init_starts_from_the_base_model():
    model, x = mlp(), torch.randn(2, 64)
    before = model(x).detach()
    soka = fp.get_soka_model(model, fp.SoKAConfig(r=4, target_modules="all-linear", init="zeros"))
    torch.testing.assert_close(soka(x), before)


def test_merge_and_unload_returns_plain_linears_with_the_same_output():
    soka = fp.get_soka_model(mlp(), fp.SoKAConfig(r=2, target_modules=["0"], init="zeros"))
    layer = dict(soka.soka_layers())["0"]
    with torch.no_grad():
        layer.B.normal_()
    x = torch.randn(3, 64)
    adapted = soka(x).detach()
    plain = soka.merge_and_unload()
    assert isinstance(plain[0], torch.nn.Linear)
    torch.testing.assert_close(plain(x), adapted, rtol=1e-5, atol=1e-5)


def test_merge_unmerge_round_trip():
    soka = fp.get_soka_model(mlp(), fp.SoKAConfig(r=2, target_modules=["2"], init="zeros"))
    layer = dict(soka.soka_layers())["2"]
    with torch.no_grad():
        layer.B.normal_()
    w = layer.base.weight.detach().clone()
    x = torch.randn(3, 48)
    y = layer(x).detach()
    layer.merge()
    torch.testing.assert_close(layer(x), y, rtol=1e-5, atol=1e-5)
    layer.unmerge()
    torch.testing.assert_close(layer.base.weight, w, rtol=1e-6, atol=1e-6)


def test_regex_targets_and_modules_to_save(capsys):
    soka = fp.get_soka_model(mlp(), fp.SoKAConfig(r=1, target_modules=r"0",
                                                  modules_to_save=["2"]))
    assert [n for n, _ in soka.soka_layers()] == ["0"]
    trainable, total = soka.trainable_parameters()
    assert trainable == 1 * (6 * 8 + 8 * 8) + 48 * 10 + 10
    soka.print_trainable_parameters()
    assert "trainable params: " in capsys.readouterr().out


def test_target_modules_matching_nothing_lists_the_linears():
    with pytest.raises(fusekit.InputError, match=r"matches no nn.Linear .* are: 0, 2"):
        fp.get_soka_model(mlp(), fp.SoKAConfig(target_modules=["q_proj"]))


def test_rank_above_what_the_factors_allow_is_rejected():
    with pytest.raises(fusekit.InputError, match="rank 49 is above what factors"):
        fp.get_soka_model(mlp(), fp.SoKAConfig(r=49, target_modules=["0"]))


def test_prime_dimensions_without_useful_factorization_are_rejected():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(13, 11))
    with pytest.raises(fusekit.InputError, match="no useful factorization"):
        fp.get_soka_model(model, fp.SoKAConfig(r=1, target_modules=["0"]))


def test_bad_config_values_are_rejected():
    with pytest.raises(fusekit.InputError, match="init must be"):
        fp.SoKAConfig(init="pissa")
    with pytest.raises(fusekit.InputError, match="r must be a positive int"):
        fp.SoKAConfig(r=0)


def trained(init, seed=0):
    model = mlp(seed)
    soka = fp.get_soka_model(model, fp.SoKAConfig(r=2, target_modules=["0", "2"], init=init))
    with torch.no_grad():  # stands in for training: move every factor
        for _, layer in soka.soka_layers():
            layer.A.add_(0.1 * torch.randn_like(layer.A))
            layer.B.add_(0.1 * torch.randn_like(layer.B))
    return soka


@pytest.mark.parametrize("init", ["kpsvd", "zeros"])
def test_saved_adapter_applies_to_the_original_base_model(tmp_path, init):
    soka = trained(init)
    x = torch.randn(4, 64)
    expected = soka(x).detach()
    soka.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_config.json").exists()
    assert (tmp_path / "adapter_model.safetensors").exists()
    loaded = fp.from_pretrained(mlp(), tmp_path)  # a fresh copy of the original base
    torch.testing.assert_close(loaded(x), expected, rtol=1e-5, atol=1e-5)


def test_adapter_for_another_base_model_is_rejected(tmp_path):
    trained("zeros").save_pretrained(tmp_path)
    other = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 10))
    with pytest.raises(fusekit.InputError, match="saved for a model whose '0' is a 48x64 linear"):
        fp.from_pretrained(other, tmp_path)


def test_loading_from_a_directory_without_an_adapter_is_rejected(tmp_path):
    with pytest.raises(fusekit.InputError, match="no SoKA adapter in"):
        fp.from_pretrained(mlp(), tmp_path)


def test_rank_pattern_overrides_r_per_layer():
    soka = fp.get_soka_model(mlp(), fp.SoKAConfig(r=2, target_modules=["0", "2"],
                                                  rank_pattern={"2": 3}))
    ranks = {n: layer.r for n, layer in soka.soka_layers()}
    assert ranks == {"0": 2, "2": 3}


def test_rank_rule_picks_the_energy_rank_of_a_kronecker_structured_weight():
    model = mlp()
    rng = torch.Generator().manual_seed(1)
    A, B = torch.randn(2, 6, 8, generator=rng), torch.randn(2, 8, 8, generator=rng)
    with torch.no_grad():  # the first layer's weight is exactly two Kronecker terms
        model[0].weight.copy_(torch.kron(A[0], B[0]) + torch.kron(A[1], B[1]))
    soka = fp.get_soka_model(model, fp.SoKAConfig(r=8, target_modules=["0"],
                                                  rank_rule={"energy": 0.9999}))
    assert dict(soka.soka_layers())["0"].r == 2


def test_rank_rule_needs_a_kpsvd_init():
    with pytest.raises(fusekit.InputError, match="rank_rule reads the KPSVD spectrum"):
        fp.SoKAConfig(init="zeros", rank_rule={"energy": 0.9})


def test_missing_safetensors_gets_an_install_hint(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # import now fails
    soka = fp.get_soka_model(mlp(), fp.SoKAConfig(r=1, target_modules=["0"]))
    with pytest.raises(fusekit.InputError, match="pip install safetensors"):
        soka.save_pretrained(tmp_path)


def test_inner_dim_shapes_cost_one_lora_rank_per_term():
    soka = fp.get_soka_model(mlp(), fp.SoKAConfig(r=2, target_modules=["0"], inner_dim=4))
    layer = dict(soka.soka_layers())["0"]
    assert (layer.a_shape, layer.b_shape) == ((12, 4), (4, 16))  # (48/4, 4) and (4, 64/4)
    assert layer.A[0].numel() + layer.B[0].numel() == 48 + 64


def test_inner_dim_one_is_pissa_the_svd_of_the_weight():
    model = mlp()
    w = model[0].weight.detach().double().clone()
    soka = fp.get_soka_model(model, fp.SoKAConfig(r=3, target_modules=["0"], inner_dim=1,
                                                  init="kpsvd_exact"))
    layer = dict(soka.soka_layers())["0"]
    u, s, vt = torch.linalg.svd(w)
    pissa = (u[:, :3] * s[:3]) @ vt[:3]  # PiSSA's principal part
    torch.testing.assert_close(layer.delta_weight().double(), pissa, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"inner_dim": 5}, "inner_dim=5 must divide both sides of the 48x64 layer"),
    ({"inner_dim": 0}, "inner_dim must be a positive int"),
    ({"inner_dim": 2, "a_shape": (6, 8), "b_shape": (8, 8)}, "inner_dim or a_shape"),
])
def test_bad_inner_dim_is_rejected(kwargs, message):
    with pytest.raises(fusekit.InputError, match=message):
        fp.get_soka_model(mlp(), fp.SoKAConfig(r=1, target_modules=["0"], **kwargs))


def regression_batches(n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 64, generator=gen), torch.randn(16, 10, generator=gen))
            for _ in range(n)]


def mse(model, batch):
    x, y = batch
    return (model(x) - y).pow(2).mean()


def test_gradient_init_takes_the_kpsvd_directions_of_the_mean_gradient():
    model, batches = mlp(), regression_batches()
    reference = mlp()  # the same weights: the mean gradient computed by hand
    loss = sum(mse(reference, b) for b in batches) / len(batches)
    loss.backward()
    grad = reference[0].weight.grad
    x = batches[0][0]
    before = model(x).detach()
    soka = fp.get_soka_model(model, fp.SoKAConfig(r=2, target_modules=["0"], init="gradient"),
                             init_batches=batches, loss_fn=mse)
    torch.testing.assert_close(soka(x), before, rtol=1e-5, atol=1e-5)  # residual frozen
    layer = dict(soka.soka_layers())["0"]
    Ag, Bg, _ = fusekit.ops.kpsvd(grad, layer.a_shape, layer.b_shape, 2, "randomized", seed=0)
    for k in range(2):  # each term is the gradient's term, rescaled (same direction and sign)
        cos = torch.nn.functional.cosine_similarity
        cos_a = cos(layer.A[k].detach().flatten(), Ag[k].flatten(), 0)
        cos_b = cos(layer.B[k].detach().flatten(), Bg[k].flatten(), 0)
        assert float(cos_a) == pytest.approx(1.0, abs=1e-4)
        assert float(cos_b) == pytest.approx(1.0, abs=1e-4)


def test_gradient_init_leaves_flags_and_grads_as_they_were():
    model = mlp()
    model[2].weight.requires_grad_(False)
    fp.gradient_estimates(model, fp.SoKAConfig(target_modules=["0"]), regression_batches(1), mse)
    assert model[2].weight.requires_grad is False and model[0].weight.requires_grad is True
    assert all(p.grad is None for p in model.parameters())


def test_gradient_init_adapter_saves_for_the_original_base(tmp_path):
    soka = fp.get_soka_model(mlp(), fp.SoKAConfig(r=2, target_modules=["0", "2"],
                                                  init="gradient", inner_dim=2),
                             init_batches=regression_batches(), loss_fn=mse)
    with torch.no_grad():
        for _, layer in soka.soka_layers():
            layer.A.add_(0.1 * torch.randn_like(layer.A))
    x = torch.randn(4, 64)
    expected = soka(x).detach()
    soka.save_pretrained(tmp_path)
    torch.testing.assert_close(fp.from_pretrained(mlp(), tmp_path)(x), expected,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "needs init_batches and loss_fn"),
    ({"init_batches": [], "loss_fn": mse}, "got no init_batches"),
    ({"init_batches": [None], "loss_fn": lambda m, b: 1.0}, "must return a scalar loss"),
    ({"init_batches": [None], "loss_fn": lambda m, b: torch.tensor(float("nan"))},
     "non-finite loss"),
])
def test_gradient_init_bad_input(kwargs, message):
    with pytest.raises(fusekit.InputError, match=message):
        fp.get_soka_model(mlp(), fp.SoKAConfig(r=1, target_modules=["0"], init="gradient"),
                          **kwargs)


def test_default_inner_dim_falls_back_to_4_then_2_then_square():
    config = fp.SoKAConfig()
    assert config.factor_shapes(36, 44) == ((9, 4), (4, 11))
    assert config.factor_shapes(18, 30) == ((9, 2), (2, 15))
    assert config.factor_shapes(15, 21) == ((3, 3), (5, 7))  # odd sides: near-square


def test_square_inner_dim_gives_lokr_shapes():
    config = fp.SoKAConfig(inner_dim="square")
    assert config.factor_shapes(4096, 4096) == ((64, 64), (64, 64))
    assert config.factor_shapes(48, 64) == fusekit.ops.kron_factor_shapes((48, 64))
