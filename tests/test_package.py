"""Package-level promises: cheap import, info, the CLI, the tour."""

import json
import subprocess
import sys

import pytest

import fusekit
from fusekit._cli import comparison_rows, main, paired_rows


def test_import_fusekit_loads_no_heavy_framework():
    code = ("import sys, fusekit; "
            "print(json.dumps([m for m in ('torch', 'numba', 'cupy') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True,
                         text=True, check=True)
    assert json.loads(out.stdout) == []


def test_info_reports_every_backend_and_the_cpu(capsys):
    facts = fusekit.info()
    text = capsys.readouterr().out
    assert set(facts["backends"]) == {"cuda", "cpu", "reference"}
    assert facts["backends"]["reference"]["available"] is True
    for name, b in facts["backends"].items():
        assert name in text
        if not b["available"]:
            assert b["reason"] in text
    assert "vector extensions" in text and "Numba CPU target" in text
    assert "FP8 products on the CPU: " in text
    assert f"CUDA launches: {facts['cuda_launch']}" in text
    assert facts["ops"]["kron_linear"][-2:] == ["cpu", "reference"]
    assert "fp8_gemv" in text


def test_info_says_how_cuda_kernels_launch_and_how_tensors_reach_them(monkeypatch):
    from fusekit import _arrays, _info
    from fusekit.backends.cuda import _device

    monkeypatch.setattr(_device, "_fast_launch_parts", lambda: ("parts",))
    monkeypatch.setattr(_arrays, "_TORCH_CUDA_VIEW", True)
    text = _info.cuda_launch_facts()
    assert "skip Numba's dispatcher" in text and "FUSEKIT_TORCH_CUDA_VIEW=1" in text
    monkeypatch.setattr(_device, "_fast_launch_parts", lambda: None)
    monkeypatch.setattr(_arrays, "_TORCH_CUDA_VIEW", False)
    monkeypatch.setenv("FUSEKIT_CUDA_FAST_LAUNCH", "0")
    text = _info.cuda_launch_facts()
    assert "turned off by FUSEKIT_CUDA_FAST_LAUNCH=0" in text and text.endswith("DLPack")
    monkeypatch.delenv("FUSEKIT_CUDA_FAST_LAUNCH")
    assert "no cuda.core launch" in _info.cuda_launch_facts()


def test_cli_info_runs(capsys):
    assert main(["info"]) == 0
    assert "Backends (auto order)" in capsys.readouterr().out


def test_cli_tour_prints_a_results_table(capsys):
    assert main(["tour", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "Results" in out and "kron_linear" in out and "speed-up" in out
    assert "fit g_na, g_k, g_leak to HH traces" in out
    assert "synapses on dendrites" in out and "spike counts equal for 100% of cells" in out
    assert "NIR export of 20 branched cells" in out
    assert "SWC cell as NEURON imports it" in out
    assert "HH network weight gradient" in out and "branched-cell network gradient" in out
    assert "tokens, float32 x" in out and "tokens, bf16 x" in out  # the FP8 expert both ways


def test_bench_comparison_rows_rank_peers_against_fusekit():
    report = {"benchmarks": [
        {"group": "g", "name": "test_fusekit[x]", "stats": {"median": 1e-3}},
        {"group": "g", "name": "test_dense", "stats": {"median": 4e-3}},
    ]}
    rows = comparison_rows(report)
    assert rows == [["g", "fusekit[x]", "1 ms", "1.00x"], ["g", "dense", "4 ms", "4.00x"]]


def test_bench_paired_rows_list_the_ratios_a_benchmark_measured_in_pairs():
    report = {"benchmarks": [
        {"group": "g", "name": "test_fusekit_paired[a-1]", "stats": {"median": 1e-3},
         "extra_info": {"stream_ratio_median": 0.876, "stream_ratio_min": 0.86,
                        "weight_bytes": 14680064, "fusekit_min_us": 347.4}},
        {"group": "g", "name": "test_dense", "stats": {"median": 4e-3}},
    ]}
    assert paired_rows(report) == [["fusekit_paired[a-1]", "stream_ratio_median", "0.876"],
                                   ["fusekit_paired[a-1]", "stream_ratio_min", "0.860"]]


def test_python_dash_m_fusekit_works():
    out = subprocess.run([sys.executable, "-m", "fusekit", "info"], capture_output=True,
                         text=True, check=True)
    assert "reference" in out.stdout


def test_cli_bench_runs_one_group_and_prints_the_comparison(capsys):
    rc = main(["bench", "dispatch_auto or direct_cpu", "--", "--benchmark-max-time=0.01",
               "--benchmark-min-rounds=1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Comparison" in out and "fusekit_dispatch_auto" in out


def test_info_finds_cupy_under_its_per_cuda_wheel_name(monkeypatch):
    # CuPy installs as cupy-cuda12x or cupy-cuda13x, never as "cupy" (seen on an H200 image).
    import importlib.metadata as metadata

    from fusekit import _info

    real_version = metadata.version

    def version(name):
        if name == "cupy-cuda13x":
            return "14.2.0"
        if name == "cupy":
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(metadata, "version", version)
    monkeypatch.setattr(metadata, "packages_distributions", lambda: {"cupy": ["cupy-cuda13x"]})
    assert _info._version("cupy") == "14.2.0 (cupy-cuda13x)"
    monkeypatch.setattr(metadata, "packages_distributions", lambda: {})
    assert _info._version("cupy") == "not installed"


def test_info_names_a_source_tree_that_is_not_installed(monkeypatch):
    # Seen on a GPU machine running from a copy of the repository (PYTHONPATH=src).
    import importlib.metadata as metadata

    from fusekit import _info

    real_version = metadata.version

    def version(name):
        if name == "fusekit":
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(metadata, "version", version)
    text = _info._fusekit_version()
    assert text.startswith(f"{fusekit.__version__} (not installed: source at ")
    assert text.rstrip(")").endswith("fusekit")


def test_cli_names_an_unknown_option_before_the_command(capsys):
    with pytest.raises(SystemExit) as err:
        main(["--bogus"])
    assert err.value.code == 2
    msg = capsys.readouterr().err
    assert "unrecognized option --bogus" in msg and "info, tour, bench, mst" in msg
    with pytest.raises(SystemExit) as err:
        main(["-h"])
    assert err.value.code == 0
