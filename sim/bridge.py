"""The accelerator's Verilator model in a child process, driven over a request/response bridge.

This is what the SimDevice ``rtl`` backend (:mod:`convforge.sw.runtime.simdevice`) puts
behind the PYNQ driver's MMIO and buffers. cocotb owns the interpreter it runs in, so the
simulation runs in a child process started by :func:`convforge.sim.runner.launch_testbench`
(the same build cache and run directories as every other testbench) with the cocotb side
:mod:`convforge.sim.tb_bridge`; the driver's process stays a plain Python process that
never imports cocotb. The two talk over a Unix socket:

============================  ==========================================================
parent (:class:`RtlSimulation`)  child (cocotb, :mod:`convforge.sim.tb_bridge`)
============================  ==========================================================
:meth:`~RtlSimulation.read`    ``AxiLiteMaster.read`` of one CSR word (``s_axil``)
:meth:`~RtlSimulation.write`   ``AxiLiteMaster.write`` of one CSR word
:meth:`~RtlSimulation.write_memory`  bytes into the ``AxiRam`` serving ``m_axi`` (a flush)
:meth:`~RtlSimulation.read_memory`   bytes out of it (an invalidate)
:attr:`~RtlSimulation.irq`     the level of the top's ``irq`` output
============================  ==========================================================

Time: after a CTRL write the child lets the clock run freely, in slices of
``chunk_cycles``, answering requests between slices, until STATUS shows the frame has
ended (done, or neither busy nor done after a soft reset); otherwise it waits for the next
request without advancing time. A driver polling STATUS therefore sees the frame finish
after as many cycles as the RTL takes, whatever its polling rate.

Failure handling: every wait on the child has a timeout (:data:`STARTUP_TIMEOUT_S`,
:data:`REQUEST_TIMEOUT_S`); a child that exits, crashes or stops answering is killed and
gives a :class:`~convforge.errors.SimulationError` naming what happened and the log file.
The child exits by itself when the parent closes the socket (or dies).

Wire format: each message is a 4-byte little-endian header length, a JSON header, then
``header["nbytes"]`` raw bytes (memory contents).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
import weakref
from typing import Any

from convforge.errors import SimulationError

#: Seconds the child may take from launch to its first message (simulator start-up, cocotb
#: and cocotbext-axi imports, reset).
STARTUP_TIMEOUT_S = 180.0
#: Seconds one request may take. The child answers between clock slices of
#: ``chunk_cycles`` cycles, well under a second of simulation each.
REQUEST_TIMEOUT_S = 60.0
#: Cycles the clock runs between two looks at the socket while a frame is in flight.
CHUNK_CYCLES = 2000
#: Byte address space of the simulated DDR (the AXI master's; a sparse memory model).
RAM_BYTES = 1 << 32

_HEADER = struct.Struct("<I")


# --------------------------------------------------------------------------- wire format
def send_message(sock: socket.socket, header: dict[str, Any], payload: bytes = b"") -> None:
    """Send one message: ``header`` (JSON) and ``payload`` (raw bytes)."""
    head = json.dumps({**header, "nbytes": len(payload)}).encode()
    sock.sendall(_HEADER.pack(len(head)) + head + bytes(payload))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise EOFError("connection closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_message(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    """Receive one message: ``(header, payload)``. EOFError when the other side closed."""
    (n,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    header = json.loads(_recv_exact(sock, n))
    payload = _recv_exact(sock, int(header.get("nbytes", 0))) if header.get("nbytes") else b""
    return header, payload


# --------------------------------------------------------------------------- parent side
def _shutdown(sock: socket.socket | None, tb, tmpdir: str) -> None:
    """Close the socket (the child exits on EOF), reap or kill the child, remove the socket dir."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
    if tb is not None:
        try:
            tb.process.wait(timeout=5)
        except Exception:  # noqa: BLE001  (still running: it must go)
            tb.kill()
    shutil.rmtree(tmpdir, ignore_errors=True)


class RtlSimulation:
    """The generated accelerator top (:class:`convforge.hw.rtl.accel.Accelerator`, the
    hardware's own watchdog) for ``engine``, simulated by Verilator in a child process.

    Built through :func:`convforge.sim.regress_accel.build_accel` (the runner's build cache:
    compiled once per EngineConfig and simulator, then reused), started with
    :func:`convforge.sim.runner.launch_testbench`.

    Args:
        engine: the EngineConfig of the design.
        simulator: ``verilator`` (the only simulator that can run in the background).
        chunk_cycles: clock cycles between two looks at the socket while a frame runs.
        request_timeout_s: seconds one request may take before the child counts as hung.
        startup_timeout_s: seconds from launch to the child's first message.
        progress: called as ``progress(cycle, in_flight)`` after every answer (cycle: the
            simulation's clock cycle count since it started).

    Raises:
        SimulationError: the simulator is missing, the build failed, or the child did not
            start (message names the log).
    """

    def __init__(self, engine, *, simulator: str = "verilator", chunk_cycles: int = CHUNK_CYCLES,
                 request_timeout_s: float = REQUEST_TIMEOUT_S, startup_timeout_s: float = STARTUP_TIMEOUT_S,
                 progress=None) -> None:
        from convforge.hw.rtl.controller import WATCHDOG_CYCLES
        from convforge.sim.regress_accel import build_accel
        from convforge.sim.runner import launch_testbench

        self.engine = engine
        self.request_timeout_s = float(request_timeout_s)
        self.progress = progress
        self.cycle = 0
        self.in_flight = False
        self._irq = 0
        self._dead: str | None = None
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.handle = build_accel(engine, simulator, watchdog_cycles=WATCHDOG_CYCLES)
        # AF_UNIX paths are limited to ~100 bytes: the socket lives in a short temp dir.
        self._tmpdir = tempfile.mkdtemp(prefix="cf-rtl-")
        path = os.path.join(self._tmpdir, "bridge.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            listener.listen(1)
            self.testbench = launch_testbench(
                self.handle, "convforge.sim.tb_bridge", run_name="simdevice",
                params={"socket": path, "chunk_cycles": int(chunk_cycles), "ram_bytes": RAM_BYTES})
        except BaseException:
            listener.close()
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            raise
        self._finalizer = weakref.finalize(self, _shutdown, None, self.testbench, self._tmpdir)
        try:
            self._sock = self._accept(listener, float(startup_timeout_s))
        finally:
            listener.close()
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _shutdown, self._sock, self.testbench, self._tmpdir)
        self._sock.settimeout(self.request_timeout_s)
        try:
            hello, _ = recv_message(self._sock)
        except (OSError, EOFError, ValueError) as exc:
            raise self._failed(f"sent no greeting ({exc})") from exc
        self.pid = int(hello["pid"])
        self.cycle = int(hello.get("cycle", 0))

    # ------------------------------------------------------------------ plumbing
    @property
    def log(self):
        """The simulator's log file."""
        return self.testbench.log

    @property
    def alive(self) -> bool:
        return self._dead is None and self.testbench.process.poll() is None

    def _accept(self, listener: socket.socket, timeout_s: float) -> socket.socket:
        deadline = time.monotonic() + timeout_s
        listener.settimeout(0.25)
        while True:
            try:
                conn, _ = listener.accept()
                return conn
            except TimeoutError:
                pass
            if self.testbench.process.poll() is not None:
                raise self._failed("exited while starting")
            if time.monotonic() > deadline:
                raise self._failed(f"did not connect within {timeout_s:g} s of its launch")

    def _failed(self, what: str) -> SimulationError:
        """Kill the child, remember why, and return the error to raise."""
        code = self.testbench.process.poll()  # None: still running (hung), killed now
        self.testbench.kill()
        status = "" if code is None else f" (killed by signal {-code})" if code < 0 else f" (exit status {code})"
        pid = self.testbench.process.pid
        self._dead = f"the RTL simulator of the accelerator (pid {pid}) {what}{status}; log: {self.log}"
        tail = self.testbench.log_tail(1500).strip()
        return SimulationError(self._dead + (f"\n--- end of the log ---\n{tail}" if tail else ""))

    def _request(self, header: dict[str, Any], payload: bytes = b"") -> tuple[dict[str, Any], bytes]:
        with self._lock:
            if self._dead is not None:
                raise SimulationError(f"{self._dead} (earlier); load the overlay again to restart it")
            op = header["op"]
            self._sock.settimeout(self.request_timeout_s)
            try:
                send_message(self._sock, header, payload)
                reply, data = recv_message(self._sock)
            except TimeoutError as exc:
                raise self._failed(f"did not answer {op} within {self.request_timeout_s:g} s and was killed") from exc
            except (OSError, EOFError) as exc:
                with contextlib.suppress(Exception):
                    self.testbench.process.wait(timeout=5)
                raise self._failed(f"closed the connection during {op} ({exc.__class__.__name__}: it exited or "
                                   "crashed)") from exc
        self.cycle, self._irq, self.in_flight = int(reply["cycle"]), int(reply["irq"]), bool(reply["in_flight"])
        if self.progress is not None:
            self.progress(self.cycle, self.in_flight)
        if "error" in reply:
            raise SimulationError(f"RTL simulation, {op}: {reply['error']}")
        return reply, data

    # ------------------------------------------------------------------ the device
    def read(self, offset: int) -> int:
        """The 32-bit CSR word at byte ``offset`` (an AXI4-Lite read on ``s_axil``).

        Raises:
            SimulationError: the CSR block answered SLVERR (no register there), or the
                simulator died / hung.
        """
        reply, _ = self._request({"op": "read", "addr": int(offset)})
        return int(reply["value"])

    def write(self, offset: int, value: int) -> None:
        """A 32-bit CSR write at byte ``offset`` (an AXI4-Lite write on ``s_axil``)."""
        self._request({"op": "write", "addr": int(offset), "value": int(value) & 0xFFFF_FFFF})

    def write_memory(self, address: int, data: bytes) -> None:
        """Put ``data`` at byte ``address`` of the simulated DDR (what a cache flush makes visible)."""
        self._check_range(address, len(data))
        self._request({"op": "mem_write", "addr": int(address)}, bytes(data))

    def read_memory(self, address: int, length: int) -> bytes:
        """``length`` bytes from byte ``address`` of the simulated DDR."""
        self._check_range(address, length)
        _, data = self._request({"op": "mem_read", "addr": int(address), "length": int(length)})
        return data

    @property
    def irq(self) -> bool:
        """The level of the accelerator's ``irq`` output now."""
        self._request({"op": "status"})
        return bool(self._irq)

    def close(self) -> None:
        """Stop the simulation (idempotent)."""
        with self._lock:
            if self._dead is None:
                self._dead = "was closed"
        self._finalizer()

    @staticmethod
    def _check_range(address: int, length: int) -> None:
        if address < 0 or address + length > RAM_BYTES:
            raise SimulationError(
                f"DDR access {address:#x} (+{length} bytes) outside the simulated {RAM_BYTES:#x}-byte address space"
            )
