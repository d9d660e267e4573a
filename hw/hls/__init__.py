"""HLS generation through hls4ml: QGraph -> Vitis HLS project, bit-exact in C simulation.

* :mod:`~convforge.hw.hls.convert` -- QGraph to hls4ml model (io_stream, integer types).
* :mod:`~convforge.hw.hls.layers` -- convforge's custom hls4ml layers (extension API) and
  their C++ (``templates/nnet_convforge.h``).
* :mod:`~convforge.hw.hls.project` -- write the Vitis project; the ``vitis_hls`` command.
* :mod:`~convforge.hw.hls.csim` -- g++ C simulation (cached builds), checked layer by layer
  against the integer reference.
* :mod:`~convforge.hw.hls.cases` -- random QGraphs per layer kind (tests, benchmarks).

hls4ml is the optional extra ``convforge[hls]``; it is imported only when a model is built.
"""

#: Default FPGA part (the Ultra96-V2, convforge's default board) and clock period (ns).
DEFAULT_PART = "xczu3eg-sbva484-1-i"
DEFAULT_CLOCK_NS = 5.0
