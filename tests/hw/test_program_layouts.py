"""The Program's layouts and the vectorised codec agree with the scalar pack/unpack."""

import numpy as np
import pytest

from convforge.errors import LayoutError
from convforge.hw.config import EngineConfig
from convforge.hw.layouts import (
    DESCRIPTOR_BYTES,
    Opcode,
    config_tag,
    descriptor_layout,
    dw_channel_word_layout,
    requant_word_layout,
    weight_tile_bytes,
    weight_tile_layout,
)
from convforge.hw.packing import layout_bytes, pack, pack_array, unpack, unpack_array


@pytest.mark.parametrize(
    "cfg", [EngineConfig(), EngineConfig(pe_ci=8, axi_data_bits=64), EngineConfig(max_channels=65535)]
)
def test_descriptor_is_a_whole_number_of_beats(cfg):
    layout = descriptor_layout(cfg)
    assert layout.size == DESCRIPTOR_BYTES * 8
    assert DESCRIPTOR_BYTES * 8 % cfg.axi_data_bits == 0


def test_pack_array_matches_scalar_pack_on_descriptors():
    cfg = EngineConfig()
    layout = descriptor_layout(cfg)
    rng = np.random.default_rng(0)
    n = 5
    records = {
        "opcode": np.array([Opcode.CONV_PW, Opcode.ADD, Opcode.END, Opcode.COPY, Opcode.DW_SQUARE]),
        "lo": rng.integers(-256, 256, n),
        "hi": rng.integers(-256, 256, n),
        "in_channels": rng.integers(0, 2048, n),
        "weights_offset": rng.integers(0, 1 << 32, n, dtype=np.int64),
        "src": {"offset": rng.integers(0, 1 << 32, n, dtype=np.int64), "upsample": rng.integers(0, 2, n),
                "channel_stride": rng.integers(0, 256, n)},
    }
    raw = pack_array(layout, records)
    assert raw.shape == (n, DESCRIPTOR_BYTES) and raw.dtype == np.uint8
    for k in range(n):
        scalar = {key: (int(v[k]) if not isinstance(v, dict) else {f: int(a[k]) for f, a in v.items()})
                  for key, v in records.items()}
        assert int.from_bytes(raw[k].tobytes(), "little") == pack(layout, scalar)
    back = unpack_array(layout, raw)
    for key in ("opcode", "lo", "hi", "in_channels", "weights_offset"):
        assert np.array_equal(back[key], records[key])
    assert np.array_equal(back["src"]["offset"], records["src"]["offset"])
    assert np.array_equal(back["dst"]["offset"], np.zeros(n))


@pytest.mark.parametrize("w_bits", [4, 8])
def test_weight_tiles_round_trip_and_match_scalar_pack(w_bits):
    cfg = EngineConfig(pe_ci=8, pe_co=4)
    layout = weight_tile_layout(cfg, w_bits)
    q = (1 << (w_bits - 1)) - 1
    tiles = np.random.default_rng(1).integers(-q, q + 1, (7, cfg.pe_co, cfg.pe_ci))
    raw = pack_array(layout, tiles)
    assert raw.shape[1] == layout_bytes(layout) <= weight_tile_bytes(cfg, w_bits)
    assert np.array_equal(unpack_array(layout, raw), tiles)
    assert int.from_bytes(raw[3].tobytes(), "little") == pack(layout, tiles[3].tolist())
    assert unpack(layout, pack(layout, tiles[3].tolist())) == tiles[3].tolist()


def test_parameter_words_round_trip():
    cfg = EngineConfig()
    rq = requant_word_layout(cfg)
    assert rq.size == 64
    recs = {"bias": np.array([-(1 << 31), (1 << 31) - 1, 0]), "m": np.array([1 << 14, 0, (1 << 15) - 1]),
            "s": np.array([0, 62, 17])}
    back = unpack_array(rq, pack_array(rq, recs))
    assert all(np.array_equal(back[k], recs[k]) for k in recs)
    dw = dw_channel_word_layout(cfg)
    assert dw.size == 128
    w = np.random.default_rng(2).integers(-127, 128, (4, 9))
    back = unpack_array(dw, pack_array(dw, {"weights": w, "bias": np.arange(4), "m": np.arange(4), "s": np.arange(4)}))
    assert np.array_equal(back["weights"], w)


def test_value_out_of_range_names_the_field():
    layout = descriptor_layout(EngineConfig())
    with pytest.raises(LayoutError, match=r"\['lo'\]"):
        pack_array(layout, {"lo": np.array([0, 300])})
    with pytest.raises(LayoutError, match="unknown field"):
        pack_array(layout, {"nonsense": np.array([0])})


def test_config_tag_differs_between_configs():
    assert config_tag(EngineConfig()) == config_tag(EngineConfig())
    assert config_tag(EngineConfig()) != config_tag(EngineConfig(weight_depth=512))
