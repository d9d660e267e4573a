"""convforge: FPGA hardware-software co-design of quantized deformable object detectors.

The import package maps the repository's top-level folders:
``convforge.models`` (models/), ``convforge.hw`` (hw/), ``convforge.sim`` (sim/),
``convforge.sw`` (sw/).
"""

from convforge.errors import ConvforgeError

__version__ = "0.1.0"
__all__ = ["ConvforgeError", "__version__"]
