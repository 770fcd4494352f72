"""``fusekit mst FILE``: the forest of a graph file, its timings and model steps, clear errors."""

import re

import pytest

pytest.importorskip("scipy")

from fusekit._cli import main  # noqa: E402

# Triangle 1-2-3 with weights 5 (1-2), 6 (1-3), 4 (2-3) and an isolated vertex 4:
# the forest is {2-3, 1-2}, weight 9, two components.
METIS_WEIGHTED = "% comment\n4 3 011 1\n7 2 5 3 6\n8 1 5 3 4\n9 1 6 2 4\n1\n"
GR = "c path 1-2-3 and a heavy chord\np sp 3 3\na 1 2 2\na 2 3 3\na 1 3 10\n"


def value(out, label):
    """The value printed after ``label`` at the start of a report line."""
    m = re.search(rf"^\s*{re.escape(label)}\s{{2,}}(.+)$", out, re.MULTILINE)
    assert m, f"no line {label!r} in:\n{out}"
    return m.group(1).strip()


def run_cli(capsys, *args):
    rc = main(["mst", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_metis_file_reports_weight_components_edges_times_and_model_steps(tmp_path, capsys):
    f = tmp_path / "tri.graph"
    f.write_text(METIS_WEIGHTED)
    rc, out, err = run_cli(capsys, f, "--p", 2)
    assert rc == 0 and err == ""
    assert value(out, "total weight") == "9"
    assert value(out, "components") == "2"
    assert value(out, "edges in the forest") == "2"
    assert "4 vertices, 3 edges" in value(out, "graph")
    for stage in ("read file", "check input", "total"):
        assert re.fullmatch(r"[\d.]+ (s|ms|us|ns)", value(out, stage))
    assert "p = 2" in out
    # events 1-2 (w 5) and 2-3 (w 4) up to the heaviest tree edge; grid 4..6 has 3 steps
    assert value(out, "sort grid") == "3 steps"
    assert value(out, "events examined").startswith("2 ")
    assert value(out, "serial Kruskal") == "4 steps"  # 3 + ceil(2 / 2)


@pytest.mark.parametrize("method", ["auto", "pipelined", "spike-kruskal", "radix-kruskal",
                                    "filter-kruskal", "boruvka"])
def test_every_method_prints_the_same_forest(tmp_path, capsys, method):
    f = tmp_path / "tri.graph"
    f.write_text(METIS_WEIGHTED)
    rc, out, _ = run_cli(capsys, f, "--method", method)
    assert rc == 0
    assert value(out, "total weight") == "9" and value(out, "components") == "2"
    if method != "auto":
        assert value(out, "method") == method


def test_format_option_overrides_the_extension(tmp_path, capsys):
    f = tmp_path / "path.txt"
    f.write_text(GR)
    rc, out, _ = run_cli(capsys, f, "--format", "gr")
    assert rc == 0
    assert value(out, "total weight") == "5" and value(out, "components") == "1"
    assert "DIMACS .gr" in value(out, "graph")


def test_matrix_market_file_with_float_weights(tmp_path, capsys):
    import scipy.io
    import scipy.sparse

    a = scipy.sparse.coo_matrix(([2.5, 3.0, 1.25], ([0, 1, 0], [1, 2, 2])), shape=(4, 4))
    scipy.io.mmwrite(tmp_path / "g.mtx", a)
    rc, out, _ = run_cli(capsys, tmp_path / "g.mtx")
    assert rc == 0
    assert float(value(out, "total weight")) == 3.75
    assert value(out, "components") == "2" and value(out, "edges in the forest") == "2"


def assert_clean_error(rc, out, err, *needles):
    assert rc == 2 and out == ""
    assert err.startswith("fusekit mst: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in err


def test_missing_file_exits_2_with_a_message(tmp_path, capsys):
    assert_clean_error(*run_cli(capsys, tmp_path / "nope.graph"), "no such file")


def test_a_directory_is_not_a_graph_file(tmp_path, capsys):
    d = tmp_path / "dir.graph"
    d.mkdir()
    assert_clean_error(*run_cli(capsys, d), "is a directory")


def test_unknown_extension_asks_for_format(tmp_path, capsys):
    f = tmp_path / "tri.edges"
    f.write_text(METIS_WEIGHTED)
    assert_clean_error(*run_cli(capsys, f), "'.edges'", "--format")


def test_unknown_format_name_is_an_argparse_error(tmp_path, capsys):
    f = tmp_path / "tri.graph"
    f.write_text(METIS_WEIGHTED)
    with pytest.raises(SystemExit) as exc:
        main(["mst", str(f), "--format", "csv"])
    assert exc.value.code == 2
    assert "invalid choice: 'csv'" in capsys.readouterr().err


@pytest.mark.parametrize("name,content,needle", [
    ("words.graph", "hello world\n", "as a METIS file"),
    ("short.graph", "3\n", "as a METIS file"),
    ("count.graph", "3 5\n2\n1\n\n", "declares 5 edges"),
    ("binary.mtx", b"\x00\xff\xfe\x80garbage", "as a Matrix Market file"),
    ("ragged.gr", "p sp 3 2\na 1 2\na 2 3 1\n", "as a DIMACS .gr file"),
])
def test_unreadable_content_exits_2_naming_the_file(tmp_path, capsys, name, content, needle):
    f = tmp_path / name
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        f.write_text(content)
    assert_clean_error(*run_cli(capsys, f), str(f), needle)


def test_vertex_ids_outside_the_header_count_exit_2(tmp_path, capsys):
    f = tmp_path / "zero.gr"
    f.write_text("p sp 2 1\na 0 1 3\n")  # .gr ids are 1-based: 0 is not a vertex
    assert_clean_error(*run_cli(capsys, f), "vertex id -1 is out of range")


def test_unknown_method_and_bad_p_exit_2(tmp_path, capsys):
    f = tmp_path / "tri.graph"
    f.write_text(METIS_WEIGHTED)
    assert_clean_error(*run_cli(capsys, f, "--method", "prim"), "boruvka")
    assert_clean_error(*run_cli(capsys, f, "--p", 0), "--p must be at least 1")
