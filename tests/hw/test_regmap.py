"""The register map: one SystemRDL definition, generated files in sync, EngineConfig CSR words."""

import dataclasses
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from convforge.errors import ConfigError
from convforge.hw.config import EngineConfig, _csr_hash
from convforge.hw.layouts import csr
from convforge.hw.regmap import (
    REPO_ROOT,
    compile_regmap,
    generated_files,
    main,
    write_ipxact,
)


def test_committed_generated_files_equal_what_the_rdl_generates_byte_for_byte():
    for rel, text in generated_files().items():
        committed = (REPO_ROOT / rel).read_text()
        assert committed == text, f"{rel} drifted from hw/regmap/convforge.rdl: run python -m convforge.hw.regmap"


def test_check_mode_reports_a_drifted_file_and_leaves_it(tmp_path, monkeypatch, capsys):
    import convforge.hw.regmap as regmap

    fake_root = tmp_path / "repo"
    (fake_root / "hw/layouts").mkdir(parents=True)
    (fake_root / "docs").mkdir()
    (fake_root / regmap.PYTHON_MODULE).write_text("stale\n")
    monkeypatch.setattr(regmap, "REPO_ROOT", fake_root)
    assert main(["--check"]) == 1
    assert "stale generated files" in capsys.readouterr().out
    assert (fake_root / regmap.PYTHON_MODULE).read_text() == "stale\n"
    assert main([]) == 0 and main(["--check"]) == 0


def test_register_map_is_word_aligned_without_overlaps_inside_the_span():
    spans = []
    for reg in csr.REGISTERS.values():
        assert reg.offset % 4 == 0
        spans.append((reg.offset, reg.offset + reg.count * reg.stride, reg.name))
        covered = 0
        for f in reg.fields:
            assert covered & f.mask == 0, f"{reg.name}.{f.name} overlaps"
            covered |= f.mask
            assert f.mask < 1 << 32
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
        assert end <= start, f"{a} overlaps {b}"
    assert spans[-1][1] <= csr.ADDRESS_SPAN
    assert csr.REGISTERS["CFG"].count == csr.CFG_WORDS == EngineConfig.csr_word_count()
    assert csr.CFG_FIELDS == EngineConfig.csr_field_names()
    assert csr.REGISTERS["CFG_COUNT"].readable_reset == csr.CFG_WORDS


def test_register_module_imports_on_a_board_without_amaranth_or_systemrdl():
    code = ("import sys\n"
            "for m in ('amaranth', 'systemrdl', 'peakrdl_ipxact', 'numpy', 'torch'): sys.modules[m] = None\n"
            "from convforge.hw.layouts import csr\n"
            "print(hex(csr.ADDR_CTRL), csr.ErrorCode.AXI_SLVERR.name)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0x8", "AXI_SLVERR"]


def test_error_codes_cover_every_fault_of_the_issue():
    names = {e.name for e in csr.ErrorCode}
    assert {"NONE", "BAD_OPCODE", "BAD_DESCRIPTOR", "ADDRESS_RANGE", "CONFIG_MISMATCH",
            "AXI_SLVERR", "AXI_DECERR", "TIMEOUT"} <= names
    assert csr.ErrorCode.NONE == 0
    assert set(csr.ERROR_CODE_TEXT) == set(csr.ErrorCode)
    width = csr.REGISTERS["STATUS"].field("error_code").width
    assert max(csr.ErrorCode) < 1 << width


def test_field_get_put_and_unknown_field_names_the_fields():
    status = csr.REGISTERS["STATUS"]
    code = status.field("error_code")
    word = code.put(status.field("done").put(0, 1), csr.ErrorCode.AXI_DECERR)
    assert code.get(word) == csr.ErrorCode.AXI_DECERR and status.field("done").get(word) == 1
    with pytest.raises(ValueError, match="error_code"):
        code.put(0, 256)
    with pytest.raises(KeyError, match="busy"):
        status.field("nope")


def test_ipxact_export_lists_every_register_at_its_offset(tmp_path):
    path = write_ipxact(tmp_path / "ip" / "convforge_csr.xml")
    ns = {"ipxact": "http://www.accellera.org/XMLSchema/IPXACT/1685-2014"}
    tree = ET.parse(path)
    found = {}
    for reg in tree.iter(f"{{{ns['ipxact']}}}register"):
        name = reg.find("ipxact:name", ns).text
        offset = int(reg.find("ipxact:addressOffset", ns).text.replace("'h", ""), 16)
        found[name] = offset
    for reg in csr.REGISTERS.values():
        assert found[reg.name] == reg.offset, reg.name


def test_a_broken_rdl_is_a_config_error_naming_the_file(tmp_path):
    bad = tmp_path / "broken.rdl"
    bad.write_text("addrmap convforge_csr #(longint unsigned CFG_WORDS = 1) { reg { field {} x[40:0]; } R; };\n")
    with pytest.raises(ConfigError, match="broken.rdl"):
        compile_regmap(bad)


# -- EngineConfig CSR encoding ----------------------------------------------------------
CONFIGS = [
    EngineConfig(),
    EngineConfig(pe_ci=8, pe_co=4, dw_lanes=2, w_bits=8, acc_bits=20, line_width=32, d_max=3,
                 frac_bits=3, offset_range=2, dw_modes=("square",), axi_data_bits=64, clock_mhz=187.5),
    EngineConfig(dw_modes=("bilinear", "regular"), clock_mhz=333.333),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["default", "small", "modes"])
def test_csr_words_round_trip_to_the_same_config(cfg):
    words = cfg.to_csr_words()
    assert len(words) == EngineConfig.csr_word_count() == len(dataclasses.fields(EngineConfig)) + 1
    assert all(0 <= w < 1 << 32 for w in words)
    back = EngineConfig.from_csr_words(words)
    assert back.to_csr_words() == words
    assert dataclasses.replace(back, dw_modes=cfg.dw_modes) == cfg  # modes come back in choice order


def test_every_field_change_changes_its_word_and_the_hash():
    base = EngineConfig()
    words = base.to_csr_words()
    for i, changed in enumerate([dataclasses.replace(base, pe_ci=8), dataclasses.replace(base, clock_mhz=200.0),
                                 dataclasses.replace(base, dw_modes=("regular",))]):
        other = changed.to_csr_words()
        assert other[-1] != words[-1], i
        diffs = base.csr_differences(other)
        assert len(diffs) == 1
    assert base.csr_differences(words) == []
    assert base.csr_differences(dataclasses.replace(base, w_bits=8).to_csr_words()) == [
        "w_bits: here 4, there 8"]


def test_wrong_hash_or_word_count_is_refused_with_the_fix():
    words = EngineConfig().to_csr_words()
    with pytest.raises(ConfigError, match="hash word"):
        EngineConfig.from_csr_words([*words[:-1], words[-1] ^ 1])
    with pytest.raises(ConfigError, match="rebuild the bitstream"):
        EngineConfig.from_csr_words(words[:-2] + words[-1:])


def test_words_that_decode_to_an_invalid_config_name_the_field():
    words = EngineConfig().to_csr_words()
    names = EngineConfig.csr_field_names()
    idx = names.index("act_bits")
    words[idx] = 9
    words[-1] = _csr_hash(names, words[:-1])
    with pytest.raises(ConfigError, match="act_bits"):
        EngineConfig.from_csr_words(words)


def test_a_clock_off_the_thousandths_grid_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="clock_mhz"):
        EngineConfig(clock_mhz=100.0001).to_csr_words()


def test_encoding_picks_up_added_fields_of_every_supported_type():
    @dataclasses.dataclass(frozen=True)
    class Grown(EngineConfig):
        spare_depth: int = 4096
        pool_ping_pong: bool = True
        dram_gbps: float = 4.25
        layout: str = dataclasses.field(default="nhwc", metadata={"choices": ("nchw", "nhwc")})

    cfg = Grown(dram_gbps=3.5)
    words = cfg.to_csr_words()
    assert len(words) == Grown.csr_word_count() == EngineConfig.csr_word_count() + 4
    assert words[-5:-1] == [4096, 1, 3500, 1]
    assert Grown.from_csr_words(words) == cfg
    assert words[-1] != EngineConfig().to_csr_words()[-1]


def test_a_field_type_without_encoding_is_a_config_error_naming_it():
    @dataclasses.dataclass(frozen=True)
    class Odd(EngineConfig):
        table: dict = dataclasses.field(default_factory=dict)

    with pytest.raises(ConfigError, match="table"):
        Odd().to_csr_words()


def test_generated_module_header_says_it_is_generated():
    text = Path(csr.__file__).read_text()
    assert "GENERATED from hw/regmap/convforge.rdl" in text
