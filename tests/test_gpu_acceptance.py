"""benchmarks/gpu_acceptance.py: its CPU dry run goes end to end and its checks can fail."""

import json
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))

import gpu_acceptance  # noqa: E402


def _op_names():
    return {name for name, _, _, _ in gpu_acceptance._op_cases(torch.device('cpu'))}


def test_ops_section_compares_every_op_with_ref():
    report = gpu_acceptance.Report()
    gpu_acceptance.section_ops(report, torch.device('cpu'), gpu_acceptance.QUICK)
    ran = [r for r in report.rows if r['status'] != 'skip']
    assert not report.failures, report.failures
    assert {r['case'].split(' [')[0] for r in ran} == _op_names()
    for r in ran:
        assert 0 <= r['value'] <= r['tolerance'] and 0 <= r['grad'] <= r['tolerance']
    # The second-order pass differentiates through the backward of every op family, not only the curved ones.
    assert any(r['grad2'] > 0 for r in ran if r['case'].startswith('upfirdn2d'))


def test_ops_section_catches_a_wrong_kernel(monkeypatch):
    # An op whose compiled path is off by 1e-3 (float16-sized error in a float32 run) is a failure, not a pass.
    from torch_utils.ops import fma
    real = fma.fma
    monkeypatch.setattr(fma, 'fma', lambda a, b, c: real(a, b, c) * 1.001)
    report = gpu_acceptance.Report()
    gpu_acceptance.section_ops(report, torch.device('cpu'), gpu_acceptance.QUICK, only=['fma', 'bias_act lrelu'])
    assert {r['case'] for r in report.failures} == {'fma vs a * b + c [float32]', 'fma vs a * b + c [float32 channels_last]'}
    assert any(r['case'].startswith('bias_act lrelu') and r['status'] == 'ok' for r in report.rows)


@pytest.mark.slow
def test_cpu_dry_run_end_to_end(tmp_path):
    out = tmp_path / 'acceptance.json'
    result = subprocess.run([sys.executable, os.path.join(REPO, 'benchmarks', 'gpu_acceptance.py'), '--device=cpu',
                             '--quick', f'--out={out}'], capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data['failures'] == 0 and data['device'] == 'cpu' and data['quick']
    sections = {r['section'] for r in data['rows']}
    assert set(gpu_acceptance.SECTIONS) <= sections
    by_section = {s: [r for r in data['rows'] if r['section'] == s] for s in sections}
    assert all(r['default_s_per_kimg'] > 0 and r['ref_ops_s_per_kimg'] > 0 for r in by_section['train'])
    assert len(by_section['train']) == 2
    assert by_section['ddp'][0]['param_rel_diff'] == 0  # one CPU process: the same arithmetic exactly
    assert by_section['projector'][0]['s_per_step'] > 0 and by_section['slide_map'][0]['patches_per_s'] > 0
    assert 'failed check(s)' in result.stdout


@pytest.mark.gpu
def test_gpu_ops_and_networks(tmp_path):
    out = tmp_path / 'acceptance.json'
    result = subprocess.run([sys.executable, os.path.join(REPO, 'benchmarks', 'gpu_acceptance.py'), '--device=cuda',
                             '--sections=ops,networks,official', f'--out={out}'], capture_output=True, text=True,
                            timeout=1800, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads(out.read_text())['failures'] == 0


def test_image_comparison_fails_beyond_float16_tolerance():
    want = torch.rand([2, 3, 8, 8]) * 2 - 1
    report = gpu_acceptance.Report()
    gpu_acceptance._compare_images(report, 'networks', 'close', want + 0.01, want)
    gpu_acceptance._compare_images(report, 'networks', 'off', want + 0.2, want)
    gpu_acceptance._compare_images(report, 'networks', 'nan', want.clone().fill_(float('nan')), want)
    assert [r['status'] for r in report.rows] == ['ok', 'FAIL', 'FAIL']
