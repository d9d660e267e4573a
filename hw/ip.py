"""How the accelerator appears in a PYNQ overlay: its IP identity and where its CSRs live.

One definition for everyone who names the IP: the board flow packages the Vivado IP
under :data:`ACCEL_VLNV`, the PYNQ driver binds to it (``bindto``), and the simulated
PYNQ device serves overlay metadata with it.
"""

from __future__ import annotations

from convforge.errors import ConfigError

#: Vendor:library:name:version of the packaged accelerator IP (Vivado IP-XACT identity).
ACCEL_VLNV = "convforge.org:convforge:accel:1.0"

#: Instance name of the accelerator in the block design (``overlay.convforge_0``).
ACCEL_INSTANCE = "convforge_0"

#: Base address (bytes) of the accelerator's AXI4-Lite CSR slave per processor family:
#: the first address of the PS master port the block design connects it to
#: (Zynq-7000 M_AXI_GP0 at 0x4000_0000; Zynq UltraScale+ M_AXI_HPM0_FPD at 0xA000_0000).
CSR_BASE_BY_FAMILY = {"xc7": 0x4000_0000, "xcup": 0xA000_0000}


def csr_base_address(yosys_family: str) -> int:
    """Physical byte address of the CSR block on a board whose part family is ``yosys_family``.

    Raises:
        ConfigError: the family has no known PS master port mapping.
    """
    try:
        return CSR_BASE_BY_FAMILY[yosys_family]
    except KeyError:
        raise ConfigError(
            f"no CSR base address known for part family {yosys_family!r}; known: {sorted(CSR_BASE_BY_FAMILY)}"
        ) from None
