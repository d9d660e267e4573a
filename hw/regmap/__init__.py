"""The register map, defined once in SystemRDL (``convforge.rdl`` beside this file), and
everything generated from it.

:func:`compile_regmap` elaborates the ``.rdl`` with systemrdl-compiler's Python API
(``CFG_WORDS`` = :meth:`EngineConfig.csr_word_count`) into a plain :class:`RegMap`;
from it come

* :func:`render_python`: ``hw/layouts/csr.py``, the committed module with offsets, fields
  and error codes that the driver imports on a board without systemrdl, and that the
  Amaranth CSR block (:mod:`convforge.hw.rtl.csr`) builds its register decode from;
* :func:`render_markdown`: ``docs/registers.md``;
* :func:`write_ipxact`: the IP-XACT component (PeakRDL's ``peakrdl-ipxact`` exporter) for
  the board flow's IP packaging.

``python -m convforge.hw.regmap`` rewrites the two committed files; ``--check`` only
compares (exit 1 when they drifted). The test suite runs the same comparison.

systemrdl-compiler and peakrdl-ipxact are only needed to regenerate, never to import
``convforge.hw.layouts.csr``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from convforge.errors import ConfigError
from convforge.hw.config import EngineConfig

#: The one register-map definition.
RDL_PATH = Path(__file__).with_name("convforge.rdl")
#: Top-level addrmap in :data:`RDL_PATH`.
TOP = "convforge_csr"
#: Address window of the CSR block in bytes (power of two): the CFG array may grow to 64
#: words (0x100..0x1FF) without moving any register.
ADDRESS_SPAN = 0x200
#: Repository files generated from the rdl, relative to the repository root.
PYTHON_MODULE = Path("hw/layouts/csr.py")
MARKDOWN_DOC = Path("docs/registers.md")
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class FieldDef:
    """One field. ``access``: ``const`` (read-only constant), ``ro`` (read-only, driven by
    the hardware), ``rw``, ``w1p`` (write 1 for a one-cycle pulse, reads 0), ``w1c``
    (sticky, hardware sets, write 1 to clear)."""

    name: str
    lsb: int
    width: int
    access: str
    reset: int
    desc: str
    encode: str | None = None


@dataclass(frozen=True)
class RegisterDef:
    """One register (or register array of ``count`` words ``stride`` bytes apart)."""

    name: str
    offset: int
    title: str
    desc: str
    fields: tuple[FieldDef, ...]
    count: int = 1
    stride: int = 4


@dataclass(frozen=True)
class EnumDef:
    name: str
    members: tuple[tuple[str, int, str], ...]  # (name, value, description)


@dataclass(frozen=True)
class RegMap:
    """The elaborated register map, independent of systemrdl's node classes."""

    name: str
    desc: str
    span: int
    registers: tuple[RegisterDef, ...]
    enums: tuple[EnumDef, ...] = field(default_factory=tuple)
    cfg_fields: tuple[str, ...] = ()


def _compiler():
    try:
        from systemrdl import RDLCompileError, RDLCompiler  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError(
            "regenerating the register map needs systemrdl-compiler: "
            "pip install -e '.[hw]' (it is in the hw extra)"
        ) from exc
    return RDLCompiler, RDLCompileError


def elaborate(rdl_path: Path = RDL_PATH, cfg_words: int | None = None):
    """The systemrdl root node of the elaborated map (for exporters).

    Raises:
        ConfigError: the rdl does not compile (message has the compiler's diagnostics).
    """
    rdl_compiler, compile_error = _compiler()
    words = EngineConfig.csr_word_count() if cfg_words is None else cfg_words
    rdlc = rdl_compiler()
    try:
        rdlc.compile_file(str(rdl_path))
        return rdlc.elaborate(top_def_name=TOP, parameters={"CFG_WORDS": words})
    except compile_error as exc:
        raise ConfigError(f"{rdl_path}: SystemRDL compilation failed ({exc}); see the messages above") from exc


def _access(f) -> str:
    from systemrdl.rdltypes import OnWriteType  # noqa: PLC0415

    if not f.is_sw_writable:
        return "ro" if f.is_hw_writable else "const"
    if f.get_property("singlepulse"):
        return "w1p"
    if f.get_property("onwrite") == OnWriteType.woclr:
        return "w1c"
    if f.get_property("onwrite") is None:
        return "rw"
    raise ConfigError(f"field {f.get_path()}: onwrite={f.get_property('onwrite')} is not supported by the CSR block")


def _text(node, prop: str) -> str:
    value = node.get_property(prop)
    return " ".join(str(value).split()) if value else ""


def compile_regmap(rdl_path: Path = RDL_PATH, cfg_words: int | None = None) -> RegMap:
    """Elaborate the rdl into a :class:`RegMap` (offsets in bytes, fields LSB-first).

    Raises:
        ConfigError: the rdl does not compile, uses a field access the CSR block does not
            implement, or the map does not fit :data:`ADDRESS_SPAN`.
    """
    root = elaborate(rdl_path, cfg_words)
    top = root.top
    regs, enums = [], {}
    for reg in top.registers():
        fields = []
        for f in reg.fields():
            enc = f.get_property("encode")
            if enc is not None:
                enums[enc.type_name] = EnumDef(
                    enc.type_name, tuple((m.name, m.value, " ".join((m.rdl_desc or "").split())) for m in enc))
            reset = f.get_property("reset")
            fields.append(FieldDef(f.inst_name, f.lsb, f.width, _access(f), int(reset or 0),
                                   _text(f, "desc"), enc.type_name if enc is not None else None))
        count = reg.array_dimensions[0] if reg.is_array else 1
        stride = reg.array_stride if reg.is_array else 4
        title = reg.get_property("name") if reg.get_property("name") != reg.inst_name else ""
        regs.append(RegisterDef(reg.inst_name, reg.raw_address_offset, title, _text(reg, "desc"),
                                tuple(sorted(fields, key=lambda x: x.lsb)), count, stride))
    end = max(r.offset + r.count * r.stride for r in regs)
    if end > ADDRESS_SPAN:
        raise ConfigError(
            f"{rdl_path}: the register map ends at 0x{end:x}, beyond the CSR window 0x{ADDRESS_SPAN:x} "
            f"(CFG_WORDS={EngineConfig.csr_word_count()}: too many EngineConfig fields for 64 words)"
        )
    return RegMap(TOP, _text(top, "desc"), ADDRESS_SPAN, tuple(sorted(regs, key=lambda r: r.offset)),
                  tuple(enums.values()), EngineConfig.csr_field_names())


# -- generated Python module --------------------------------------------------------------
_PY_HEADER = '''\
# ruff: noqa: E501
"""convforge CSR register map: offsets, fields and error codes.

GENERATED from hw/regmap/convforge.rdl by ``python -m convforge.hw.regmap``; do not edit
(tests/hw/test_regmap.py fails when this file differs from what the rdl generates).
Imports nothing outside the standard library, so the driver uses it on a board.

Offsets are bytes from the CSR block's base; every register is 32 bits. Field ``access``:
``const`` (read-only constant), ``ro`` (read-only, hardware-driven), ``rw``, ``w1p``
(write 1 for a one-cycle pulse, reads 0), ``w1c`` (sticky, write 1 to clear).
Unmapped addresses answer SLVERR (reads return 0); writes to read-only registers are
ignored with OKAY.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """A bit field ``[lsb + width - 1 : lsb]`` of a register."""

    name: str
    lsb: int
    width: int
    access: str
    reset: int
    desc: str

    @property
    def mask(self) -> int:
        """The field's bits in the register word."""
        return ((1 << self.width) - 1) << self.lsb

    def get(self, word: int) -> int:
        """The field's value in ``word``."""
        return (word >> self.lsb) & ((1 << self.width) - 1)

    def put(self, word: int, value: int) -> int:
        """``word`` with the field set to ``value`` (ValueError if it does not fit)."""
        if not 0 <= value < 1 << self.width:
            raise ValueError(f"field {self.name}: {value} does not fit {self.width} bits")
        return (word & ~self.mask) | (value << self.lsb)


@dataclass(frozen=True)
class Register:
    """A register, or an array of ``count`` registers ``stride`` bytes apart."""

    name: str
    offset: int
    desc: str
    fields: tuple[Field, ...]
    count: int = 1
    stride: int = 4

    def field(self, name: str) -> Field:
        """The field called ``name`` (KeyError names the register's fields)."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name!r}; fields: {[f.name for f in self.fields]}")

    @property
    def readable_reset(self) -> int:
        """The word a read returns after reset (``w1p`` fields read 0)."""
        return sum(f.reset << f.lsb for f in self.fields if f.access != "w1p")

'''


def render_python(regmap: RegMap | None = None) -> str:
    """Text of ``hw/layouts/csr.py`` for ``regmap`` (default: the compiled rdl)."""
    rm = compile_regmap() if regmap is None else regmap
    out = [_PY_HEADER]
    for en in rm.enums:
        cls = "".join(p.capitalize() for p in en.name.removesuffix("_e").split("_"))
        out.append(f"\nclass {cls}(enum.IntEnum):\n    \"\"\"``{en.name}`` of the rdl (STATUS.error_code).\"\"\"\n\n")
        out += [f"    {name} = {value}\n" for name, value, _ in en.members]
        const = en.name.removesuffix("_e").upper()
        out.append(f"\n\n#: Meaning of each :class:`{cls}` value.\n{const}_TEXT: dict[{cls}, str] = {{\n")
        out += [f"    {cls}.{name}: {desc!r},\n" for name, _, desc in en.members]
        out.append("}\n")
    regs = {r.name: r for r in rm.registers}
    ident = regs["ID"].fields[0].reset
    ver = {f.name: f.reset for f in regs["VERSION"].fields}
    out.append("\n#: ID register value.\n")
    out.append(f"ID_MAGIC = 0x{ident:08X}\n")
    out.append(f"VERSION_MAJOR = {ver['major']}\nVERSION_MINOR = {ver['minor']}\n")
    out.append(f"#: Bytes of address space the CSR block decodes.\nADDRESS_SPAN = 0x{rm.span:X}\n")
    out.append("#: EngineConfig field names in CFG word order; the last CFG word is the hash.\n")
    out.append("CFG_FIELDS: tuple[str, ...] = (\n" + "".join(f"    {n!r},\n" for n in rm.cfg_fields) + ")\n")
    out.append(f"CFG_WORDS = {regs['CFG'].count}\n\n")
    out.append("#: Byte offset of every register (of the first word of an array).\n")
    width = max(len(r.name) for r in rm.registers)
    out += [f"{'ADDR_' + r.name:<{width + 5}} = 0x{r.offset:03X}\n" for r in rm.registers]
    out.append("\n#: Every register, by name, in address order.\nREGISTERS: dict[str, Register] = {\n")
    for r in rm.registers:
        desc = ". ".join(x.rstrip(".") for x in (r.title, r.desc) if x) + "."
        out.append(f"    {r.name!r}: Register({r.name!r}, 0x{r.offset:03X}, {desc!r}, (\n")
        for f in r.fields:
            out.append(f"        Field({f.name!r}, {f.lsb}, {f.width}, {f.access!r}, 0x{f.reset:X}, {f.desc!r}),\n")
        tail = f", {r.count}, {r.stride}" if r.count != 1 else ""
        out.append(f"    ){tail}),\n")
    out.append("}\n")
    return "".join(out)


# -- docs/registers.md ------------------------------------------------------------------
def _md_row(*cells: str) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |\n"


def render_markdown(regmap: RegMap | None = None) -> str:
    """Text of ``docs/registers.md``."""
    rm = compile_regmap() if regmap is None else regmap
    out = [
        "# CSR register map\n\n",
        "<!-- GENERATED from hw/regmap/convforge.rdl by `python -m convforge.hw.regmap`; do not edit. -->\n\n",
        f"{rm.desc} AXI4-Lite, 32-bit registers, {rm.span} bytes of address space. "
        "Unmapped addresses answer SLVERR (reads return 0); writes to read-only registers are "
        "ignored (OKAY). 64-bit values are `_LO`/`_HI` pairs: reading `_LO` latches the upper "
        "half for the next `_HI` read. Counters clear at START and SOFT_RESET.\n\n",
        "Access: `const` read-only constant, `ro` read-only (hardware), `rw`, `w1p` write 1 "
        "for a one-cycle pulse (reads 0), `w1c` sticky, write 1 to clear.\n\n",
        "| Offset | Register | Fields | Description |\n|---|---|---|---|\n",
    ]
    for r in rm.registers:
        where = f"0x{r.offset:03X}" if r.count == 1 else \
            f"0x{r.offset:03X}..0x{r.offset + (r.count - 1) * r.stride:03X}"
        name = r.name if r.count == 1 else f"{r.name}[{r.count}]"
        fields = "<br>".join(
            f"`{f.name}` [{f.lsb + f.width - 1}:{f.lsb}] {f.access}"
            + (f" reset 0x{f.reset:X}" if f.reset else "") for f in r.fields)
        desc = " ".join(x for x in (r.title + "." if r.title else "", r.desc) if x)
        notes = " ".join(f"`{f.name}`: {f.desc}" for f in r.fields if f.desc)
        out.append(_md_row(where, name, fields, f"{desc} {notes}"))
    for en in rm.enums:
        out.append(f"\n## {en.name}\n\n| Value | Name | Meaning |\n|---|---|---|\n")
        out += [f"| {v} | {n} | {d} |\n" for n, v, d in en.members]
    out.append("\n## EngineConfig words (CFG)\n\n"
               "`EngineConfig.to_csr_words()`: one word per field in this order, then a CRC-32 "
               "hash of names and words (ints as is, floats in thousandths, choice tuples as bit "
               "masks). The driver compares them with the Program's config and names the field "
               "that differs.\n\n| Word | Field |\n|---|---|\n")
    out += [f"| {i} | `{n}` |\n" for i, n in enumerate(rm.cfg_fields)]
    out.append(f"| {len(rm.cfg_fields)} | hash |\n")
    return "".join(out)


# -- IP-XACT -----------------------------------------------------------------------------
def write_ipxact(path: Path | str, vendor: str = "convforge.org", library: str = "convforge",
                 version: str = "1.0") -> Path:
    """Write the register map as an IP-XACT (IEEE 1685-2014) component to ``path`` with
    PeakRDL's exporter (peakrdl-ipxact); the board flow packages it with the IP.

    Raises:
        ConfigError: peakrdl-ipxact missing (names the install) or the rdl invalid.
    """
    try:
        from peakrdl_ipxact import IPXACTExporter, Standard  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError("writing IP-XACT needs peakrdl-ipxact: pip install -e '.[hw]'") from exc
    root = elaborate()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    IPXACTExporter(vendor=vendor, library=library, version=version,
                   standard=Standard.IEEE_1685_2014).export(root.top, str(path))
    return path


def generated_files() -> dict[Path, str]:
    """Every committed generated file (path relative to the repository) and its text."""
    rm = compile_regmap()
    return {PYTHON_MODULE: render_python(rm), MARKDOWN_DOC: render_markdown(rm)}


def main(argv: list[str] | None = None) -> int:
    """Regenerate (or ``--check``) the committed files; ``--ipxact PATH`` also writes IP-XACT."""
    p = argparse.ArgumentParser(prog="python -m convforge.hw.regmap", description=main.__doc__)
    p.add_argument("--check", action="store_true", help="compare only; exit 1 when a file drifted")
    p.add_argument("--ipxact", type=Path, help="also write the IP-XACT component here")
    args = p.parse_args(argv)
    try:
        stale = []
        for rel, text in generated_files().items():
            target = REPO_ROOT / rel
            if not target.is_file() or target.read_text() != text:
                stale.append(rel)
                if not args.check:
                    target.write_text(text)
        if args.ipxact:
            print(f"wrote {write_ipxact(args.ipxact)}")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check and stale:
        print(f"stale generated files: {', '.join(map(str, stale))}; run python -m convforge.hw.regmap")
        return 1
    print("up to date" if not stale else f"rewrote {', '.join(map(str, stale))}")
    return 0
