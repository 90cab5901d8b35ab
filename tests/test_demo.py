"""demo.py, the README's main command, end to end on the real slide with a very short training run."""

import glob
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "demo.py"), f"--outdir={out}", "--kimg=0.04",
                           "--metric-images=16"], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "cmu-64.zip").is_file()
    assert len(glob.glob(str(out / "preview" / "*.png"))) == 1
    run_dir, = glob.glob(str(out / "training-runs" / "*"))
    assert glob.glob(os.path.join(run_dir, "network-snapshot-*.pkl"))
    assert glob.glob(os.path.join(run_dir, "training-state-*.pt"))
    assert (out / "generated" / "grid.png").is_file() and len(glob.glob(str(out / "generated" / "seed*.png"))) == 36
    for name, key in [("metric-swd16.jsonl", "swd16_avg"), ("metric-fid16_full.jsonl", "fid16_full")]:
        with open(os.path.join(run_dir, name)) as f:
            result = json.loads(f.readlines()[-1])
        assert result["results"][key] > 0


def test_demo_rejects_bad_options():
    proc = subprocess.run([sys.executable, os.path.join(REPO, "demo.py"), "--kimg=0"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("Error:")
