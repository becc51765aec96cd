"""``run_bench``: run the selected scenarios, print the table, write ``results.json`` and plots."""

from __future__ import annotations

import datetime as _dt
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from spatia_py.config import ConfigError

__all__ = ["BenchError", "run_bench", "check_scenarios", "SCENARIO_NAMES"]

SCENARIO_NAMES = ("loop", "long", "dynamic", "scale")
"""Valid scenario names, in the order they run (the keys of ``scenarios.SCENARIOS``)."""


class BenchError(ConfigError):
    """A bad ``spatia bench`` argument (unknown scenario, unusable output folder); says how to fix it."""


def check_scenarios(scenarios: Sequence[str] | None) -> list[str]:
    """The scenarios to run (all when None), in canonical order, or :class:`BenchError` naming the valid ones."""
    if scenarios is None or len(scenarios) == 0:
        return list(SCENARIO_NAMES)
    if isinstance(scenarios, str):
        scenarios = [scenarios]
    unknown = [s for s in scenarios if s not in SCENARIO_NAMES]
    if unknown:
        raise BenchError(f"unknown scenario {', '.join(repr(s) for s in unknown)}; "
                         f"valid scenarios are: {', '.join(SCENARIO_NAMES)}")
    return [s for s in SCENARIO_NAMES if s in set(scenarios)]


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file; give a folder for results.json and the plots")
    if out.is_dir() and any(out.iterdir()):
        raise BenchError(f"--out {out} is not empty; choose a new folder (nothing was overwritten)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise BenchError(f"cannot write to --out {out}: {e.strerror or e}") from None


def run_bench(scenarios: Sequence[str] | None = None, quick: bool = False, out: str | Path = "bench-out",
              stream=None) -> int:
    """Run benchmark scenarios and report them.

    Args:
        scenarios: names from :data:`SCENARIO_NAMES`; None runs all of them.
        quick: tiny sizes for a CI smoke run.
        out: an empty (or new) folder: ``results.json``, ``<scenario>_<curve>.png``, ``runs/``, ``peers/``.
        stream: where progress and the table go (default stdout).

    Returns:
        0 when every scenario completed, 1 when any failed (its error is in the table and results.json).

    Raises:
        BenchError: an unknown scenario or an unusable output folder (before anything runs).
    """
    names = check_scenarios(scenarios)
    out = Path(out)
    _check_out(out)
    stream = stream if stream is not None else sys.stdout

    from spatia_py.bench.report import format_table, write_plots, write_results_json
    from spatia_py.bench.scenarios import PARAMS, SCENARIOS, BenchContext
    from spatia_py.bench.sysinfo import config_hash, machine_info

    ctx = BenchContext(out=out, quick=quick, stream=stream)
    results: dict = {
        "bench": "spatia",
        "format_version": 1,
        "mode": ctx.mode,
        "scenarios_run": names,
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "scenarios": {},
    }
    failed = []
    t_all = time.perf_counter()
    for name in names:
        ctx.configs = {}
        ctx.log(name, f"start ({ctx.mode})")
        t0 = time.perf_counter()
        try:
            res = SCENARIOS[name](ctx)
        except Exception:  # one failing scenario must not lose the others' numbers; reported, exit 1
            tb = traceback.format_exc()
            print(tb, file=sys.stderr, flush=True)
            res = {"error": tb, "rows": [], "curves": {}, "figures": {}}
        res["wall_s"] = time.perf_counter() - t0
        res["configs"] = dict(ctx.configs)
        res["params"] = PARAMS[name][ctx.mode]
        res["params_sha256"] = config_hash(res["params"])
        if res.get("error") or res.get("errors"):
            failed.append(name)
        results["scenarios"][name] = res
        ctx.log(name, f"{'FAILED' if name in failed else 'done'} in {res['wall_s']:.1f}s")
        write_results_json(results, out)  # keep what is done if a later scenario is interrupted
    results["wall_s"] = time.perf_counter() - t_all
    try:
        results["machine"]["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    plots = write_plots(results, out)
    results["plots"] = [p.name for p in plots]
    path = write_results_json(results, out)
    print("", file=stream)
    print(format_table(results), file=stream)
    print(f"spatia bench: {len(names)} scenario(s) ({ctx.mode}) in {results['wall_s']:.1f}s, "
          f"{len(plots)} plots, {'FAILED: ' + ', '.join(failed) if failed else 'all ok'} -> {path}",
          file=stream, flush=True)
    return 1 if failed else 0
