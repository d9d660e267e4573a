"""``convforge compile``: writes a loadable Program and a report; refuses by name, writes nothing."""

import pytest
from graphs import GraphBuilder, every_op_graph

from convforge.hw.config import EngineConfig
from convforge.models.train.zoo import CODENET_NAME, MBV2_NAME, get_model
from convforge.sw.cli import main
from convforge.sw.runtime.program import Program


def test_compile_writes_program_and_report(tmp_path, capsys):
    every_op_graph(0).save(tmp_path / "net")
    cfg = tmp_path / "engine.toml"
    cfg.write_text(EngineConfig(pe_ci=8, pe_co=4, dw_lanes=4).to_toml())
    rc = main(["compile", "--qgraph", str(tmp_path / "net.json"), "--config", str(cfg), "--out",
               str(tmp_path / "out"), "--report"])
    assert rc == 0
    text = capsys.readouterr().out
    for needle in ("[legalise]", "[lower]", "[tile]", "[allocate]", "[emit]", "DDR bytes", "CONV_KXK", "FPS"):
        assert needle in text
    prog = Program.load(tmp_path / "out" / "net.cfprog")
    assert prog.config == EngineConfig(pe_ci=8, pe_co=4, dw_lanes=4)
    assert (tmp_path / "out" / "net.report.txt").read_text().startswith("engine:")


def test_compile_refuses_a_layer_in_one_line_and_writes_nothing(tmp_path, capsys):
    b = GraphBuilder(1)
    y = b.conv(b.conv("input", 8), 8, 3, 1, groups=4)
    b.graph({"y": y}).save(tmp_path / "grouped")
    rc = main(["compile", "--qgraph", str(tmp_path / "grouped.json"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and b.layers[-1].name in err and "groups" in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("name", [CODENET_NAME, MBV2_NAME])
def test_every_shipped_model_compiles_for_every_board(name):
    from convforge.hw.boards import BOARDS
    from convforge.models.quant.qgraph import QGraph
    from convforge.sw.compiler import compile

    graph = QGraph.load(get_model(name).qgraph)
    for board in BOARDS.values():
        prog = compile(graph, board.engine, ddr_gbps=board.ddr_gbps)
        assert prog.n_descriptors > 60 and prog.cycles["fps"] > 0, board.name  # CoDeNet 88, MobileNetV2 70
