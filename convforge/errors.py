"""The convforge error family.

Every error raised for bad user input (shapes, files, parameters, unsupported layers)
is a ``ConvforgeError`` whose message names the offending thing and the fix.
The CLI prints these without a traceback and exits with status 2.
"""


class ConvforgeError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class ShapeError(ConvforgeError):
    """A tensor has the wrong shape or dtype for the operation."""


class ExportError(ConvforgeError):
    """A model cannot be expressed in the QGraph (unsupported module, shift out of range,
    accumulator bound too large)."""


class QGraphFormatError(ConvforgeError):
    """A QGraph file is corrupt, incomplete, or of another format version."""


class ConfigError(ConvforgeError):
    """An EngineConfig, board profile or CLI parameter is out of range."""


class SimulationError(ConvforgeError):
    """A simulator is missing or a hardware simulation could not be built or run."""


class DatasetError(ConvforgeError):
    """A dataset path or annotation file is missing or malformed."""


class CheckpointError(ConvforgeError):
    """A checkpoint file is missing, corrupt, or for another model."""


class LayoutError(ConvforgeError):
    """A value does not fit a field of a hardware layout (descriptor, packed word)."""


class IntegerOverflowError(ConvforgeError):
    """An integer primitive was given values whose exact result does not fit int64, or a
    narrow integer type (INTEGER_SPEC §6: the reference never wraps); the message names the
    operation and the offending values."""

class CompileError(ConvforgeError):
    """The compiler cannot map a layer onto the engine (names the layer, limit and field)."""


class ProgramFormatError(ConvforgeError):
    """A Program file is missing, corrupt or of another format version (names the file)."""


class EmulatorFault(ConvforgeError):
    """The engine (emulated) flagged a fault: carries the hardware error code and descriptor.

    Attributes:
        code: the :class:`convforge.hw.layouts.Fault` value the status CSR would show.
        index: the failing descriptor's index in the program.
    """

    def __init__(self, message: str, code: int, index: int) -> None:
        super().__init__(message)
        self.code = int(code)
        self.index = int(index)


class ResourceError(ConfigError):
    """An EngineConfig does not fit a board's part per the resource estimate
    (:func:`convforge.hw.estimate.check_fit`); the message names each resource over, used vs
    available, and the EngineConfig fields that shrink it.

    Attributes:
        over: ``{resource: (used, available)}`` for every resource over the part.
    """

    def __init__(self, message: str, over: dict[str, tuple[float, float]] | None = None) -> None:
        super().__init__(message)
        self.over = dict(over or {})
