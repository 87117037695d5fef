"""Benchmark harness helpers that decide what is measured (never timings)."""

from benchmarks import allocator_bench


def test_find_preload_glibc_installed_and_missing(tmp_path, monkeypatch):
    (tmp_path / "libb.so.4").write_bytes(b"")
    (tmp_path / "liba.so.4").write_bytes(b"")
    monkeypatch.setattr(allocator_bench, "ALLOCATORS", {
        "glibc": (), "fake": (str(tmp_path / "nowhere" / "*.so.4"), str(tmp_path / "lib*.so.4")),
        "absent": (str(tmp_path / "libz*.so"),)})
    assert allocator_bench.find_preload("glibc") == ""          # nothing to preload
    assert allocator_bench.find_preload("fake") == str(tmp_path / "liba.so.4")   # first pattern that matches
    assert allocator_bench.find_preload("absent") is None         # not installed: skipped


def test_summarize_pools_children_and_takes_the_median():
    runs = [{"ms_all": [10.0, 30.0], "user_s_per_step": 1.0, "sys_s_per_step": 0.5, "minor_faults_per_step": 100},
            {"ms_all": [20.0], "user_s_per_step": 3.0, "sys_s_per_step": 0.1, "minor_faults_per_step": 300}]
    row = allocator_bench.summarize("akorn", "glibc", "", runs)
    assert row["ms_per_step"] == 20.0 and row["preload"] is None
    assert row["user_s_per_step"] == 2.0 and row["minor_faults_per_step"] == 200


def test_concurrency_summary_adds_the_runs_at_once():
    from benchmarks import concurrency_bench
    # two rounds of two runs at once: run 0 took 2,000 ms/step (median), run 1 4,000 ms/step
    rounds = [[{"ms_all": [1000.0, 2000.0]}, {"ms_all": [4000.0]}],
              [{"ms_all": [3000.0]}, {"ms_all": [4000.0, 5000.0]}]]
    row = concurrency_bench.summarize("akorn", "many", rounds, steps=900)
    assert row["ms_per_step"] == [2000.0, 4000.0] and row["runs_at_once"] == 2
    assert row["steps_per_hour"] == 1800.0 + 900.0 and row["models_per_hour"] == 3.0


def test_concurrency_bench_runs_its_layouts_end_to_end(tmp_path):
    """The children compile, meet at the barrier, pin themselves and report (tiny model: not a timing)."""
    import json
    import os
    import subprocess
    import sys
    if len(os.sched_getaffinity(0)) < 2:
        import pytest
        pytest.skip("needs two cores")
    out = tmp_path / "c.json"
    subprocess.run([sys.executable, "-m", "benchmarks.concurrency_bench", "--tiny", "--models", "itrsa", "--cores", "2",
                    "--iters", "1", "--rounds", "1", "--allocator", "glibc", "--out", str(out)], check=True,
                   capture_output=True, text=True, timeout=600)
    rows = {r["layout"]: r for r in json.loads(out.read_text())["results"]}
    assert [rows[k]["runs_at_once"] for k in ("one", "many", "many1")] == [1, 2, 2]
    assert rows["one"]["throughput_vs_one"] == 1.0 and all(r["steps_per_hour"] > 0 for r in rows.values())


def test_concurrency_bench_stops_the_other_children_when_one_fails(monkeypatch):
    """A child that cannot start (no such core) raises, and the children waiting at the barrier are killed."""
    import subprocess

    import pytest

    from benchmarks import concurrency_bench
    started = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(concurrency_bench.subprocess, "Popen", Recorded)
    with pytest.raises(RuntimeError, match="before the barrier"):
        concurrency_bench.run_together("itrsa", 1, [(1, 10_000), (1, None)], "", tiny=True)
    assert len(started) == 2 and all(p.poll() is not None for p in started)
