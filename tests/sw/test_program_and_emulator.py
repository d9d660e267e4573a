"""The Program file round trip, the emulator's faults, and the emulator without torch."""

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from checks import assert_bit_exact
from graphs import every_op_graph

from convforge.errors import EmulatorFault, ProgramFormatError
from convforge.hw.config import EngineConfig
from convforge.hw.layouts import DESCRIPTOR_BYTES, Fault
from convforge.sw.compiler import compile
from convforge.sw.runtime.emulator import Emulator, run_program
from convforge.sw.runtime.program import Program

CFG = EngineConfig(pe_ci=8, pe_co=4, dw_lanes=4)


@pytest.fixture(scope="module")
def compiled():
    g = every_op_graph(0)
    return g, compile(g, CFG, fuse="always")


def _image(seed=0, hw=(16, 16)):
    return np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)


def test_program_file_round_trip_is_identical(compiled, tmp_path):
    g, prog = compiled
    path = prog.save(tmp_path / "net.cfprog")
    back = Program.load(path)
    assert np.array_equal(back.image, prog.image)
    assert json.dumps(back.header(), sort_keys=True) == json.dumps(prog.header(), sort_keys=True)
    a, b = run_program(prog, _image()), run_program(back, _image())
    assert back.readable() == prog.readable() and len(prog.readable()) < len(g.tensors)  # a fused chain
    assert all(np.array_equal(a[t], b[t]) for t in prog.readable())
    assert not list(tmp_path.glob(".net.cfprog.*")), "temporary file left behind"


def test_corrupt_or_foreign_program_files_are_refused_by_name(compiled, tmp_path):
    _, prog = compiled
    path = prog.save(tmp_path / "net.cfprog")
    with pytest.raises(ProgramFormatError, match="no such Program file"):
        Program.load(tmp_path / "missing.cfprog")
    junk = tmp_path / "junk.cfprog"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ProgramFormatError, match="junk.cfprog"):
        Program.load(junk)
    with zipfile.ZipFile(path) as zf:
        doc, original = json.loads(zf.read("program.json")), zf.read("image.bin")
    blob = bytearray(original)
    blob[5] ^= 0xFF
    bad = tmp_path / "flipped.cfprog"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("program.json", json.dumps(doc))
        zf.writestr("image.bin", bytes(blob))
    with pytest.raises(ProgramFormatError, match="flipped.cfprog.*checksum"):
        Program.load(bad)
    doc["version"] = 99
    old = tmp_path / "v99.cfprog"
    with zipfile.ZipFile(old, "w") as zf:
        zf.writestr("program.json", json.dumps(doc))
        zf.writestr("image.bin", original)
    with pytest.raises(ProgramFormatError, match="v99.cfprog.*version 99"):
        Program.load(old)


def test_emulator_faults_carry_the_hardware_code_and_descriptor(compiled):
    _, prog = compiled
    mem = prog.new_buffer()
    mem[3 * DESCRIPTOR_BYTES] = (mem[3 * DESCRIPTOR_BYTES] & 0xF0) | 0xF  # opcode field is bits 0..3
    with pytest.raises(EmulatorFault) as err:
        Emulator(CFG).run(mem, 0, prog.n_descriptors)
    assert err.value.code == Fault.BAD_OPCODE and err.value.index == 3
    with pytest.raises(EmulatorFault) as err:
        Emulator(EngineConfig(pe_ci=8, pe_co=4, dw_lanes=8)).run(prog.new_buffer(), 0, prog.n_descriptors)
    assert err.value.code == Fault.CONFIG_MISMATCH and err.value.index == 0
    with pytest.raises(EmulatorFault) as err:
        Emulator(CFG).run(prog.new_buffer()[: prog.image.size + 64], 0, prog.n_descriptors)
    assert err.value.code == Fault.ADDRESS_RANGE
    with pytest.raises(EmulatorFault) as err:
        Emulator(CFG).run(prog.new_buffer(), 0, prog.n_descriptors - 1)
    assert err.value.code == Fault.NO_END
    with pytest.raises(EmulatorFault) as err:
        Emulator(EngineConfig(pe_ci=8, pe_co=4, dw_lanes=4, dw_modes=("regular", "square"))).run(
            prog.new_buffer(), 0, prog.n_descriptors)
    assert err.value.code in (Fault.CONFIG_MISMATCH, Fault.BAD_OPCODE)


def test_emulator_refuses_a_descriptor_field_the_engine_cannot_run(compiled):
    from convforge.hw.layouts import descriptor_layout
    from convforge.hw.packing import pack_array, unpack_array

    _, prog = compiled
    mem = prog.new_buffer()
    layout = descriptor_layout(CFG)
    fields = unpack_array(layout, mem[:DESCRIPTOR_BYTES].reshape(1, -1))
    fields["stride"][0] = 0
    mem[:DESCRIPTOR_BYTES] = pack_array(layout, fields)[0]
    with pytest.raises(EmulatorFault) as err:
        Emulator(CFG).run(mem, 0, prog.n_descriptors)
    assert err.value.code == Fault.BAD_DESCRIPTOR and err.value.index == 0


def test_emulator_stats_match_the_compilers_prediction_but_follow_the_deformable_maps(compiled):
    # the compiler predicts from the fields; the emulator also sees which taps each
    # deformable layer's map selects (the RTL skips the others)
    _, prog = compiled
    mem = prog.new_buffer()
    prog.place_image(mem, _image())
    stats = Emulator(CFG).run(mem, 0, prog.n_descriptors)
    assert stats.descriptors == prog.n_descriptors - 1
    deformable = [d["opcode"] in ("DW_SQUARE", "DW_BILINEAR") for d in prog.descriptors[:-1]]
    assert any(deformable) and not all(deformable)
    for f, d, deform in zip(stats.per_descriptor, prog.descriptors[:-1], deformable, strict=True):
        same = (f["cycles"], f["ddr_bytes"]) == (d["cycles"], d["ddr_bytes"])
        assert same or deform, d


def test_weight_cache_follows_the_memory(compiled):
    g, prog = compiled
    emu = Emulator(CFG)
    first = run_program(prog, _image(1), emu)
    again = run_program(prog, _image(2), emu)
    assert_bit_exact(g, prog, _image(2), emu)
    assert any(not np.array_equal(first[t], again[t]) for t in g.outputs.values())


def test_emulator_runs_without_torch(compiled, tmp_path):
    _, prog = compiled
    path = prog.save(tmp_path / "net.cfprog")
    code = (
        "import sys, numpy as np\n"
        "from convforge.sw.runtime.program import Program\n"
        "from convforge.sw.runtime.emulator import Emulator, run_program\n"
        f"p = Program.load({str(path)!r})\n"
        "out = run_program(p, np.zeros((16, 16, 3), np.uint8))\n"
        "assert len(out) > 10\n"
        "print('torch' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
