"""EngineConfig: the one hardware parameter set.

The same frozen dataclass drives the RTL generators, the compiler, the driver, the cycle
model and every report. It loads from and saves to TOML, and every field is validated
with a message that names the field and its allowed range.

Board profiles (:mod:`convforge.hw.boards`) carry a default EngineConfig sized for the
board.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
import zlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from convforge.errors import ConfigError

#: Depthwise-unit modes that can be built.
DW_MODES = ("regular", "square", "bilinear")

#: Width of one CSR word of the EngineConfig encoding (:meth:`EngineConfig.to_csr_words`).
CSR_WORD_BITS = 32
#: Floats are encoded in units of 1/CSR_FLOAT_SCALE (thousandths: 250.0 MHz -> 250000).
CSR_FLOAT_SCALE = 1000
#: Choice vocabularies of string / tuple-of-string fields, for the CSR encoding (a field
#: may instead carry ``metadata={"choices": (...)}`` or a ``Literal[...]`` type).
CSR_CHOICES: dict[str, tuple[str, ...]] = {"dw_modes": DW_MODES}


@dataclass(frozen=True)
class EngineConfig:
    """Accelerator parameters. Units: channels, bits, pixels, MHz."""

    #: Pointwise PE array input-channel parallelism (MAC columns).
    pe_ci: int = 16
    #: Pointwise PE array output-channel parallelism (MAC rows).
    pe_co: int = 16
    #: Depthwise unit channel lanes (each lane computes 9 MACs per cycle).
    dw_lanes: int = 16
    #: Activation width in bits (INTEGER_SPEC §2: 8).
    act_bits: int = 8
    #: Weight width in bits for layers after the first (INTEGER_SPEC §2 default 4).
    w_bits: int = 4
    #: Weight width of the first layer.
    first_w_bits: int = 8
    #: Accumulator width in bits (the compiler proves every layer fits, §6).
    acc_bits: int = 32
    #: Bias width in bits (int32, §2).
    bias_bits: int = 32
    #: Requant multiplier width (15-bit M, §3) and shift width (S in [0, 62]).
    m_bits: int = 15
    s_bits: int = 6
    #: Line buffer: the widest image row (pixels) the depthwise unit accepts.
    line_width: int = 256
    #: Square-deformable maximum dilation D_max (§4; dilation map values 0..D_max).
    d_max: int = 8
    #: Bilinear-deformable fractional bits F and offset range R in pixels (§2).
    frac_bits: int = 4
    offset_range: int = 7
    #: Which depthwise modes are built.
    dw_modes: tuple[str, ...] = DW_MODES
    #: AXI data width of the DMA in bits.
    axi_data_bits: int = 128
    #: Target clock in MHz.
    clock_mhz: float = 250.0
    #: Pointwise weight buffer depth, in ``pe_ci x pe_co`` weight tiles; the compiler splits a
    #: layer by output channels so that ``ceil(ci / pe_ci) * ceil(co_tile / pe_co)`` fits.
    weight_depth: int = 1024
    #: Largest channel count of one pass (input channels, ``k*k*C`` for an im2col conv,
    #: and output channels), in channels.
    max_channels: int = 2048
    #: Activation buffer: bytes per ping-pong half. The compiler cuts a pass into bands of
    #: output rows whose input rows (and output rows) fit one half.
    act_buffer_bytes: int = 65536
    #: Largest max-pool window side and stride, in pixels.
    pool_k_max: int = 4
    pool_s_max: int = 4
    #: Max-pool block buffer capacity in rows of ``line_width`` pixels.
    pool_block_rows: int = 8
    #: On-chip fusion scratchpad in bytes (0: none built). Operand views with the
    #: ``onchip`` flag address it instead of DDR; the compiler fuses 1x1 -> 3x3 depthwise
    #: -> 1x1 chains into row bands whose two intermediates fit it (docs/compiler.md).
    fuse_buffer_bytes: int = 65536

    def __post_init__(self) -> None:
        def need(cond: bool, name: str, what: str) -> None:
            if not cond:
                raise ConfigError(
                    f"EngineConfig.{name} = {getattr(self, name)!r}: must be {what}"
                )

        for name in ("pe_ci", "pe_co", "dw_lanes"):
            need(isinstance(getattr(self, name), int) and 1 <= getattr(self, name) <= 256,
                 name, "an integer in [1, 256]")
        need(self.act_bits == 8, "act_bits", "8 (INTEGER_SPEC v1 activations are 8-bit)")
        need(2 <= self.w_bits <= 8, "w_bits", "in [2, 8]")
        need(2 <= self.first_w_bits <= 8, "first_w_bits", "in [2, 8]")
        need(16 <= self.acc_bits <= 48, "acc_bits", "in [16, 48]")
        need(self.bias_bits == 32, "bias_bits", "32 (INTEGER_SPEC §2 biases are int32)")
        need(self.m_bits == 15, "m_bits", "15 (INTEGER_SPEC §3)")
        need(self.s_bits == 6, "s_bits", "6 (shifts 0..62, INTEGER_SPEC §3)")
        need(8 <= self.line_width <= 4096, "line_width", "in [8, 4096] pixels")
        need(1 <= self.d_max <= 15, "d_max", "in [1, 15] pixels")
        need(1 <= self.frac_bits <= 6, "frac_bits", "in [1, 6]")
        need(
            1 <= self.offset_range and self.offset_range * (1 << self.frac_bits) <= 127,
            "offset_range",
            f"at least 1 with offset_range * 2**frac_bits <= 127 (int8 offsets, §2); "
            f"with frac_bits={self.frac_bits} that is <= {127 >> self.frac_bits}",
        )
        need(
            isinstance(self.dw_modes, tuple) and len(self.dw_modes) > 0
            and all(m in DW_MODES for m in self.dw_modes),
            "dw_modes", f"a non-empty subset of {DW_MODES}",
        )
        need(self.axi_data_bits in (32, 64, 128, 256), "axi_data_bits", "32, 64, 128 or 256")
        need(10.0 <= self.clock_mhz <= 800.0, "clock_mhz", "in [10, 800] MHz")
        need(isinstance(self.weight_depth, int) and 16 <= self.weight_depth <= 65536,
             "weight_depth", "an integer in [16, 65536] tiles")
        need(isinstance(self.max_channels, int) and 16 <= self.max_channels <= 65535,
             "max_channels", "an integer in [16, 65535] channels")
        need(isinstance(self.act_buffer_bytes, int) and 1024 <= self.act_buffer_bytes <= (1 << 24),
             "act_buffer_bytes", "an integer in [1024, 16 Mi] bytes")
        need(isinstance(self.pool_k_max, int) and 1 <= self.pool_k_max <= 15, "pool_k_max", "in [1, 15] pixels")
        need(isinstance(self.pool_s_max, int) and 1 <= self.pool_s_max <= 15, "pool_s_max", "in [1, 15] pixels")
        need(isinstance(self.pool_block_rows, int) and 1 <= self.pool_block_rows <= 1024,
             "pool_block_rows", "in [1, 1024] rows")
        need(isinstance(self.fuse_buffer_bytes, int) and (self.fuse_buffer_bytes == 0
             or 1024 <= self.fuse_buffer_bytes <= (1 << 22)) and self.fuse_buffer_bytes % 64 == 0,
             "fuse_buffer_bytes", "0 (no scratchpad) or a multiple of 64 in [1024, 4 Mi] bytes")

    # -- derived figures -----------------------------------------------------------------
    @property
    def macs_per_cycle(self) -> int:
        """Peak MACs per cycle: the PE array plus the depthwise unit's 9 taps per lane."""
        return self.pe_ci * self.pe_co + 9 * self.dw_lanes

    @property
    def peak_gops(self) -> float:
        """Peak throughput, counting a MAC as 2 operations."""
        return 2 * self.macs_per_cycle * self.clock_mhz / 1e3

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["dw_modes"] = list(self.dw_modes)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> EngineConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown EngineConfig field(s) {', '.join(unknown)}; "
                f"known fields: {', '.join(sorted(known))}"
            )
        data = dict(data)
        if "dw_modes" in data:
            data["dw_modes"] = tuple(data["dw_modes"])
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc

    # -- CSR encoding (register map, hw/regmap/convforge.rdl: CFG_COUNT, CFG[]) ----------
    @classmethod
    def csr_field_names(cls) -> tuple[str, ...]:
        """Names of the fields encoded by :meth:`to_csr_words`, in word order (dataclass order)."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def csr_word_count(cls) -> int:
        """``len(to_csr_words())``: one word per field plus the hash word."""
        return len(fields(cls)) + 1

    def to_csr_words(self) -> list[int]:
        """The EngineConfig as the read-only CFG registers expose it: one unsigned 32-bit
        word per dataclass field (generic over :func:`dataclasses.fields`, in field
        order), then a CRC-32 hash word (:func:`zlib.crc32` over every field's name and
        word, so a renamed, added or reordered field changes it too).

        Per field type: ``bool`` -> 0/1; ``int`` -> the value (0 .. 2**32-1); ``float``
        -> the value in thousandths (``250.0`` -> ``250000``); a string with choices -> its
        index; a tuple of strings -> a bit mask over the choices (bit ``i`` = choice ``i``;
        choices from :data:`CSR_CHOICES`, the field's ``metadata["choices"]`` or a
        ``Literal`` type).

        Raises:
            ConfigError: a value has no exact encoding (negative or >= 2**32, a float not
                a multiple of 0.001, a field type without an encoding); the message names
                the field.
        """
        words = [_csr_encode(self, f) for f in fields(self)]
        return [*words, _csr_hash(self.csr_field_names(), words)]

    @classmethod
    def from_csr_words(cls, words: typing.Sequence[int], source: str = "CFG registers") -> EngineConfig:
        """Inverse of :meth:`to_csr_words` (tuples of choices come back in choice order).

        Raises:
            ConfigError: wrong word count or hash (the hardware was built by a convforge
                with other EngineConfig fields: rebuild it or use the matching convforge),
                or a word that decodes to an invalid value (names the field).
        """
        names = cls.csr_field_names()
        words = [int(w) for w in words]
        if len(words) != len(names) + 1:
            raise ConfigError(
                f"{source}: {len(words)} EngineConfig words, this convforge encodes "
                f"{len(names) + 1} ({len(names)} fields + hash); the hardware was built by a "
                f"convforge with other EngineConfig fields: rebuild the bitstream with this version"
            )
        expect = _csr_hash(names, words[:-1])
        if words[-1] != expect:
            raise ConfigError(
                f"{source}: EngineConfig hash word 0x{words[-1]:08x} != 0x{expect:08x} computed "
                f"from the field words: the hardware encodes other fields (rebuild the bitstream "
                f"with this convforge) or the registers were misread"
            )
        hints = typing.get_type_hints(cls, include_extras=True)
        values = {f.name: _csr_decode(f, hints[f.name], w, source)
                  for f, w in zip(fields(cls), words[:-1], strict=True)}
        return cls.from_dict(values, source=source)

    def csr_differences(self, words: typing.Sequence[int]) -> list[str]:
        """Fields whose CSR words differ from ``words`` (e.g. read from the hardware), as
        ``"name: here <value>, there <decoded value or raw word>"``; empty when equal."""
        mine = self.to_csr_words()
        out = []
        hints = typing.get_type_hints(type(self), include_extras=True)
        for f, a, b in zip(fields(self), mine, words, strict=False):
            if a != int(b):
                try:
                    other: Any = _csr_decode(f, hints[f.name], int(b), "CFG registers")
                except ConfigError:
                    other = f"word 0x{int(b):08x}"
                out.append(f"{f.name}: here {getattr(self, f.name)!r}, there {other!r}")
        if len(words) != len(mine):
            out.append(f"word count: here {len(mine)}, there {len(words)}")
        return out

    def to_toml(self) -> str:
        lines = ["[engine]"]
        for key, value in self.to_dict().items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, list):
                lines.append(f"{key} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in value)}]")
            else:
                lines.append(f"{key} = {value!r}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, path: str | Path) -> EngineConfig:
        """Load the ``[engine]`` table of a TOML file (or the top level if there is none)."""
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no such config file") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
        return cls.from_dict(doc.get("engine", doc), source=str(path))

    def describe(self) -> str:
        """A short human-readable block for reports."""
        return (
            f"PE array {self.pe_ci}x{self.pe_co} (W{self.w_bits}A{self.act_bits}, acc {self.acc_bits}b), "
            f"depthwise {self.dw_lanes} lanes x 9 [{', '.join(self.dw_modes)}], "
            f"line {self.line_width} px, D_max {self.d_max}, F {self.frac_bits}, R {self.offset_range}, "
            f"{self.clock_mhz:g} MHz, peak {self.peak_gops:.1f} GOPS"
        )


# -- CSR encoding helpers -----------------------------------------------------------------
def _csr_choices(f: dataclasses.Field, hint: Any) -> tuple[str, ...] | None:
    if "choices" in f.metadata:
        return tuple(f.metadata["choices"])
    if f.name in CSR_CHOICES:
        return CSR_CHOICES[f.name]
    for t in (hint, *typing.get_args(hint)):
        if typing.get_origin(t) is typing.Literal:
            return tuple(typing.get_args(t))
    return None


def _csr_kind(f: dataclasses.Field, hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is bool:
        return "bool"
    if hint is int:
        return "int"
    if hint is float:
        return "float"
    if hint is str or origin is typing.Literal:
        return "choice"
    if origin is tuple:
        return "choices"
    raise ConfigError(
        f"EngineConfig.{f.name}: type {hint!r} has no CSR encoding; use bool, int, float, a "
        f"string or tuple of strings with choices (convforge.hw.config.CSR_CHOICES)"
    )


def _csr_encode(cfg: EngineConfig, f: dataclasses.Field) -> int:
    hint = typing.get_type_hints(type(cfg), include_extras=True)[f.name]
    value = getattr(cfg, f.name)
    kind = _csr_kind(f, hint)
    if kind == "bool":
        word = int(bool(value))
    elif kind == "int":
        word = int(value)
    elif kind == "float":
        word = round(value * CSR_FLOAT_SCALE)
        if abs(word - value * CSR_FLOAT_SCALE) > 1e-6 * max(1.0, abs(value)):
            raise ConfigError(
                f"EngineConfig.{f.name} = {value!r}: the CSR encoding holds multiples of "
                f"{1 / CSR_FLOAT_SCALE:g}; round it (e.g. {round(value, 3)!r})"
            )
    else:
        choices = _csr_choices(f, hint)
        if choices is None:
            raise ConfigError(
                f"EngineConfig.{f.name}: no choice list for its CSR encoding; add "
                f"metadata={{'choices': (...)}} to the field or an entry to CSR_CHOICES"
            )
        items = (value,) if kind == "choice" else tuple(value)
        bad = [v for v in items if v not in choices]
        if bad:
            raise ConfigError(f"EngineConfig.{f.name}: {bad[0]!r} is not one of {choices}")
        word = choices.index(value) if kind == "choice" else sum(1 << choices.index(v) for v in set(items))
    if not 0 <= word < 1 << CSR_WORD_BITS:
        raise ConfigError(
            f"EngineConfig.{f.name} = {value!r}: its CSR word {word} is outside "
            f"[0, 2**{CSR_WORD_BITS}); the register map holds unsigned 32-bit words"
        )
    return word


def _csr_decode(f: dataclasses.Field, hint: Any, word: int, source: str) -> Any:
    kind = _csr_kind(f, hint)
    if kind == "bool":
        return bool(word)
    if kind == "int":
        return word
    if kind == "float":
        return word / CSR_FLOAT_SCALE
    choices = _csr_choices(f, hint) or ()
    if kind == "choice":
        if word >= len(choices):
            raise ConfigError(f"{source}: EngineConfig.{f.name} word {word} is not an index of {choices}")
        return choices[word]
    if word >> len(choices):
        raise ConfigError(f"{source}: EngineConfig.{f.name} word 0x{word:x} has bits beyond {choices}")
    return tuple(c for i, c in enumerate(choices) if word >> i & 1)


def _csr_hash(names: typing.Sequence[str], words: typing.Sequence[int]) -> int:
    data = b"".join(n.encode() + b"\0" + int(w).to_bytes(4, "little") for n, w in zip(names, words, strict=True))
    return zlib.crc32(data) & 0xFFFFFFFF
