"""cocotb side of the SimDevice ``rtl`` bridge (:mod:`convforge.sim.bridge`): the accelerator
top with an ``AxiLiteMaster`` on ``s_axil`` and an ``AxiRam`` (sparse, the whole 32-bit
address space) on ``m_axi``, serving the parent's requests from a Unix socket.

Parameters (``tb_params()``): ``socket`` (path the parent listens on), ``chunk_cycles``
(cycles between two looks at the socket while a frame runs), ``ram_bytes``.

Requests (``op``): ``read`` / ``write`` a CSR word, ``mem_write`` / ``mem_read`` bytes of the
DDR model, ``status``. Every reply carries ``cycle`` (clock cycles since the simulation started), ``irq``
(the ``irq`` output) and ``in_flight``, and ``error`` when the request failed (an AXI
error response, an address outside the RAM). The test ends when the parent closes the
socket.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import warnings

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam, AxiResp

from convforge.hw.layouts import csr
from convforge.sim.bridge import recv_message, send_message
from convforge.sim.tbio import tb_params

STATUS = csr.REGISTERS["STATUS"]
CTRL = csr.REGISTERS["CTRL"]


#: Clock period of the simulation in ns (the cycle count reported is sim time / period).
PERIOD_NS = 10


def _cycle() -> int:
    return int(get_sim_time("ns")) // PERIOD_NS


@cocotb.test()
async def serve(dut):
    p = tb_params()
    chunk = int(p.get("chunk_cycles", 2000))
    # One log line per AXI transaction (the driver polls) would grow the log without bound.
    logging.getLogger(f"cocotb.{dut._name}").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\.axi")
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    dut.rst.value = 1
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi", bus_separator="__"), dut.clk, dut.rst, size=int(p["ram_bytes"]))
    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__"), dut.clk, dut.rst)
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(p["socket"])
    in_flight = False
    quiet = 0  # consecutive status checks without busy or done

    def reply(header: dict, payload: bytes = b"") -> None:
        send_message(sock, {**header, "cycle": _cycle(), "irq": int(dut.irq.value), "in_flight": in_flight},
                     payload)

    async def status_word() -> int:
        return int.from_bytes((await axil.read(csr.ADDR_STATUS, 4)).data, "little")

    reply({"op": "hello", "pid": os.getpid()})
    while True:
        if in_flight and not select.select([sock], [], [], 0)[0]:
            # Nothing asked: let the frame run, then see whether it ended.
            await ClockCycles(dut.clk, chunk)
            word = await status_word()
            if STATUS.field("done").get(word):
                in_flight = False
            elif not STATUS.field("busy").get(word):
                quiet += 1
                in_flight = quiet < 2  # idle twice in a row: soft reset or nothing started
            else:
                quiet = 0
            continue
        try:
            msg, payload = recv_message(sock)
        except (EOFError, OSError):
            break  # the parent closed the bridge (or died): end the simulation
        op = msg.get("op")
        try:
            if op == "read":
                r = await axil.read(int(msg["addr"]), 4)
                if r.resp != AxiResp.OKAY:
                    reply({"error": f"CSR read at offset {int(msg['addr']):#x} answered {r.resp.name} "
                                    "(no register there; see docs/registers.md)"})
                else:
                    reply({"value": int.from_bytes(r.data, "little")})
            elif op == "write":
                value = int(msg["value"])
                r = await axil.write(int(msg["addr"]), value.to_bytes(4, "little"))
                if int(msg["addr"]) == csr.ADDR_CTRL and value & (CTRL.field("start").mask
                                                                 | CTRL.field("soft_reset").mask):
                    in_flight, quiet = True, 0
                if r.resp != AxiResp.OKAY:
                    reply({"error": f"CSR write at offset {int(msg['addr']):#x} answered {r.resp.name} "
                                    "(no register there; see docs/registers.md)"})
                else:
                    reply({})
            elif op == "mem_write":
                ram.write(int(msg["addr"]), payload)
                reply({})
            elif op == "mem_read":
                reply({}, bytes(ram.read(int(msg["addr"]), int(msg["length"]))))
            elif op == "status":
                reply({})
            else:
                reply({"error": f"unknown request {op!r}"})
        except (ValueError, IndexError, KeyError) as exc:
            reply({"error": f"{exc.__class__.__name__}: {exc}"})
    sock.close()
