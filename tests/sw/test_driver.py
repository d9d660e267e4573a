"""The PYNQ driver on SimDevice emu: bit-exact with the integer reference, and its faults."""

import numpy as np
import pytest
import torch

from convforge.errors import ProgramFormatError
from convforge.hw.boards import get_board


@pytest.fixture
def accel(sim_overlay):
    return sim_overlay[1].convforge_0


def _image(seed, graph):
    size = graph.tensors[graph.input].shape[1]
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_driver_outputs_equal_the_integer_reference_and_give_the_same_detections(accel, small_model):
    from convforge.models.eval import decode_int
    from convforge.models.quant.executor import run_qgraph
    from convforge.models.train.evaluate import head_scales

    graph, program_file = small_model
    accel.load(program_file)
    scales = head_scales(graph)
    for seed in (0, 1):  # two frames: the buffer is reused
        image = _image(seed, graph)
        frame = accel.run(image)
        want = run_qgraph(graph, image)
        assert set(frame.outputs) == {"hm", "wh", "reg"}
        for head in ("hm", "wh", "reg"):
            assert np.array_equal(frame.outputs[head], want[head][0].numpy()), head
        got_d, want_d = (decode_int(*(torch.as_tensor(np.asarray(heads[h])).reshape(1, *heads[h].shape[-3:])
                                      for h in ("hm", "wh", "reg")), scales)[0] for heads in (frame.outputs, want))
        assert np.array_equal(got_d.boxes, want_d.boxes) and np.array_equal(got_d.scores, want_d.scores)
        c = frame.counters
        assert c["cycles"] > 0 and c["busy_cycles"]["pointwise"] > 0 and c["ddr_read_bytes"] > 0
        assert 0 < c["busy_percent"]["pointwise"] <= 100 and c["fps_at_clock"] > 0
        assert frame.wait == "poll"


def test_program_for_another_engine_is_refused_naming_the_field(accel, small_model, tmp_path):
    import dataclasses

    from convforge.sw.compiler import compile as compile_program
    from convforge.sw.runtime.driver import AcceleratorError

    graph, _ = small_model
    other = dataclasses.replace(get_board("ultra96v2").engine, pe_ci=8)
    program = compile_program(graph, other)
    with pytest.raises(AcceleratorError, match=r"pe_ci: hardware 16, Program 8"):
        accel.load(program)


def test_hardware_error_code_raises_naming_the_layer(accel, small_model):
    from convforge.hw.layouts import DESCRIPTOR_BYTES, descriptor_layout
    from convforge.sw.runtime.driver import AcceleratorError
    from convforge.sw.runtime.program import Program

    graph, program_file = small_model
    program = Program.load(program_file)
    k = 3
    layer = program.descriptors[k]["layer"]
    field = descriptor_layout(program.config)["opcode"]
    assert field.offset == 0 and field.width <= 8
    program.image[program.program_offset + k * DESCRIPTOR_BYTES] |= (1 << field.width) - 1  # no such opcode
    accel.load(program)
    with pytest.raises(AcceleratorError, match=rf"descriptor {k} \(layer '{layer}'\) with error BAD_OPCODE"):
        accel.run(_image(0, graph))
    # soft reset after the error: the next frame of a good Program runs
    accel.load(program_file)
    assert accel.run(_image(0, graph)).counters["cycles"] > 0


def test_corrupt_program_file_is_a_clear_error_naming_the_file(accel, small_model, tmp_path):
    _, program_file = small_model
    bad = tmp_path / "bad.cfprog"
    raw = bytearray(program_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(ProgramFormatError, match="bad.cfprog"):
        accel.load(bad)
    with pytest.raises(ProgramFormatError, match="no-such.cfprog"):
        accel.load(tmp_path / "no-such.cfprog")


def test_run_without_a_program_and_wrong_image_shape_are_refused(accel, small_model):
    from convforge.errors import ShapeError
    from convforge.sw.runtime.driver import AcceleratorError

    graph, program_file = small_model
    size = graph.tensors[graph.input].shape[1]
    with pytest.raises(AcceleratorError, match="no Program loaded"):
        accel.run(_image(0, graph))
    accel.load(program_file)
    with pytest.raises(ShapeError, match=f"expects a uint8 \\({size}, {size}, 3\\)"):
        accel.run(np.zeros((size, size + 1, 3), np.uint8))


def test_every_tensor_read_back_through_the_driver_equals_the_integer_reference(accel, small_model):
    from convforge.models.quant.executor import run_qgraph
    from convforge.sw.compiler import compile as compile_program

    graph, _ = small_model
    program = compile_program(graph, get_board("ultra96v2").engine, reuse_buffers=False, fuse="never")
    accel.load(program)
    image = _image(7, graph)
    accel.run(image)
    want = run_qgraph(graph, image, keep_all=True)
    names = [t for t in program.tensors if t != program.input]
    assert len(names) > 100
    mismatched = [t for t in names if not np.array_equal(accel.read_tensor(t), want[t][0].numpy())]
    assert mismatched == []


def test_waiting_for_an_interrupt_the_overlay_does_not_wire_is_refused(accel, small_model):
    from convforge.sw.runtime.driver import AcceleratorError

    graph, program_file = small_model
    accel.load(program_file)
    with pytest.raises(AcceleratorError, match="wires no interrupt"):
        accel.run(_image(0, graph), wait="interrupt")
    with pytest.raises(AcceleratorError, match="choose auto, poll or interrupt"):
        accel.run(_image(0, graph), wait="sometimes")
