"""Human-readable compile report: per pass what it did, per layer unit, passes, DDR, cycles."""

from __future__ import annotations

from typing import Any

from convforge.sw.runtime.program import Program


def layer_rows(program: Program) -> list[dict[str, Any]]:
    """One row per QGraph layer that has descriptors, in execution order: its units,
    descriptors (passes, i.e. output-channel tiles and copies), output rows per band, DDR
    bytes moved and predicted cycles (sums over its descriptors)."""
    rows: dict[str, dict[str, Any]] = {}
    for d in program.descriptors:
        if d["opcode"] == "END":
            continue
        row = rows.setdefault(d["layer"], {"layer": d["layer"], "units": [], "opcodes": [], "passes": 0,
                                           "tile_rows": [], "ddr_bytes": 0, "cycles": 0, "macs": 0})
        for key, value in (("units", d["unit"]), ("opcodes", d["opcode"]), ("tile_rows", d.get("tile_rows", 0))):
            if value not in row[key]:
                row[key].append(value)
        row["passes"] += 1
        row["ddr_bytes"] += d["ddr_bytes"]
        row["cycles"] += d["cycles"]
        row["macs"] += d["macs"]
    return list(rows.values())


def format_report(program: Program) -> str:
    """The pass report, the per-layer table and the frame totals, as text."""
    cfg = program.config
    lines = [f"engine: {cfg.describe()}", "", "passes:"]
    lines += [f"  {line}" for line in program.report]
    lines += ["", f"{'layer':<40} {'unit':<16} {'opcode':<22} {'passes':>6} {'rows/band':>9} "
                  f"{'DDR bytes':>11} {'cycles':>10}"]
    for r in layer_rows(program):
        lines.append(f"{r['layer'][:40]:<40} {'+'.join(r['units']):<16} {'+'.join(r['opcodes'])[:22]:<22} "
                     f"{r['passes']:>6} {'/'.join(str(t) for t in r['tile_rows']):>9} {r['ddr_bytes']:>11} "
                     f"{r['cycles']:>10}")
    c = program.cycles
    lines += ["", f"frame: {program.n_descriptors} descriptors, {c['ddr_bytes']} DDR bytes, {c['cycles']} cycles "
                  f"= {c['fps']:.1f} FPS at {cfg.clock_mhz:g} MHz, MAC utilisation {c['mac_utilisation']:.1%} "
                  f"of {cfg.macs_per_cycle} MACs/cycle, {c['copies']} copy descriptors, "
                  f"{c.get('fused_chains', 0)} fused chains ({c.get('scratch_bytes', 0)} scratchpad bytes)"]
    return "\n".join(lines)
