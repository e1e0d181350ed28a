"""The benchmark scripts that CI can run without their real inputs: `benchmarks/gpu_check.py --cpu-smoke` (the
GPU check's own code on tiny shapes, so that the script a GPU session runs cannot rot)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import REPO


def test_the_gpu_check_runs_on_tiny_shapes_and_writes_its_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n\nkept text\n")
    rows = tmp_path / "rows.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--cpu-smoke", "--steps", "2",
                    "--results", str(results), "--json", str(rows)], check=True, capture_output=True, timeout=600)
    text = results.read_text()
    assert text.startswith("# results\n\nkept text\n") and text.count("<!-- gpu-check:begin -->") == 1
    assert "CPU smoke run" in text
    got = json.loads(rows.read_text())
    assert [(r["shape"], r["what"]) for r in got] == [
        (s, w) for s in ("tiny-a", "tiny-b") for w in ("train padded", "train packed", "generate, batch 4")]
    assert all(r["tok_s"] > 0 for r in got)
    padded = {r["shape"]: r["padding"] for r in got if r["what"] == "train padded"}
    packed = {r["shape"]: r["padding"] for r in got if r["what"] == "train packed"}
    assert all(packed[s] < padded[s] for s in padded)  # packing removes padding
    table = re.findall(r"^\| tiny-[ab] \|", text, flags=re.M)
    assert len(table) == 6
