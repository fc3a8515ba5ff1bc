"""The thread policy (threads.py): its rule, its override, what a run records of it."""
from __future__ import annotations

import json

import pytest
import torch

from headstart import threads
from headstart.exceptions import ConfigError


@pytest.mark.parametrize("cores,busy,expected", [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1),
                                                 (2, 2.0, 1), (8, 3.2, 5), (4, None, 4)])
def test_threads_are_the_cores_other_processes_leave_free(monkeypatch, cores, busy, expected):
    monkeypatch.delenv("HEADSTART_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: cores)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: busy)
    p = threads.measure_policy()
    assert (p.torch, p.onnxruntime, p.blas, p.spinning) == (expected, expected, expected, False)
    assert (f"{busy:.1f} busy" in p.rule) if busy is not None else p.rule == f"{cores} cores"


def test_headstart_threads_fixes_the_count(monkeypatch):
    monkeypatch.setenv("HEADSTART_THREADS", "3")
    p = threads.measure_policy()
    assert (p.torch, p.onnxruntime, p.blas, p.spinning, p.rule) == (3, 3, 3, False,
                                                                    "HEADSTART_THREADS")
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("HEADSTART_THREADS", bad)
        with pytest.raises(ConfigError, match=f"HEADSTART_THREADS .* got '{bad}'"):
            threads.measure_policy()


def test_omp_num_threads_fixes_the_count_unless_headstart_threads_does(monkeypatch):
    monkeypatch.delenv("HEADSTART_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 0.0)
    p = threads.measure_policy()
    assert (p.torch, p.onnxruntime, p.blas, p.rule) == (1, 1, 1, "OMP_NUM_THREADS")
    monkeypatch.setenv("HEADSTART_THREADS", "2")
    assert threads.measure_policy().rule == "HEADSTART_THREADS"


def test_busy_elsewhere_is_a_share_of_the_machine():
    busy = threads.busy_elsewhere(0.05)
    assert busy is None or 0 <= busy <= (__import__("os").cpu_count() or 1)


def test_apply_sets_the_policy_once_and_leaves_a_later_choice_alone():
    p = threads.apply()  # conftest applied it first
    assert threads.apply() is p
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        threads.apply()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_onnx_sessions_take_the_policy():
    ort = pytest.importorskip("onnxruntime")
    opts = threads.session_options(ort.SessionOptions())
    assert opts.intra_op_num_threads == threads.policy().onnxruntime
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert threads.session_options(ort.SessionOptions(), 3).intra_op_num_threads == 3


def test_every_run_records_its_threads(tiny_runs):
    for run in tiny_runs.values():
        t = json.loads((run / "metrics.json").read_text())["threads"]
        assert t["spinning"] is False and t["onnxruntime"] == threads.policy().onnxruntime
        assert t["torch"] >= 1 and (t["blas"] is None or t["blas"] >= 1) and t["rule"]
