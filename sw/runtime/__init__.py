"""Running Programs: the PYNQ driver (:mod:`.driver`), the simulated PYNQ device
(:mod:`.simdevice`, with the CSR model :mod:`.csr_model`) and backend sessions
(:mod:`.session`). Submodules are imported explicitly: the driver needs ``pynq``."""
