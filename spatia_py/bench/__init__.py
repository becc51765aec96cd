"""``spatia bench``: scenarios on the procedural world, peers measured side by side in one run,
scaling curves and plots. Compare numbers as ratios within one run, never across machines.

Modules: :mod:`~spatia_py.bench.scenarios` (loop, long, dynamic, scale),
:mod:`~spatia_py.bench.peers` (COLMAP, Open3D, rebuild-everything memory),
:mod:`~spatia_py.bench.report` (table, results.json, plots), :mod:`~spatia_py.bench.sysinfo`.
"""

from spatia_py.bench.runner import SCENARIO_NAMES, BenchError, run_bench

__all__ = ["run_bench", "BenchError", "SCENARIO_NAMES"]
