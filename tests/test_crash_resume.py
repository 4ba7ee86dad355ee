"""CI size of the crash-safety campaign (``python -m benchmarks.crash_resume``; figures in
RELIABILITY.md): ``ndf convert`` SIGKILLed at random moments and resumed gives the bytes of
an uninterrupted run, and a concurrent reader never sees a partial file under a final name."""

from __future__ import annotations

import pytest

from benchmarks.crash_resume import campaign


@pytest.mark.slow
def test_random_sigkills_then_resume_is_byte_identical(tmp_path):
    result = campaign(tmp_path, kills=4, train=3, test=1, seed=7)
    assert result["kills"] == 4 and result["kills_with_shards_done"] >= 1, result["kill_points"]
    assert result["final_identical"] and result["round_mismatches"] == 0
    assert result["reader_errors"] == [] and result["reader_checks"] >= result["reference_files"]
