"""tools/classifier.py: DenseNet121 normal-vs-tumour training and the Table 2 evaluation, on real H&E."""

import json
import os
import pickle

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

from anomaly_data import any_tissue_crops as tissue_crops
from datasets import write_dataset_zip
from networks import stylegan2
from dnnlib import assets
from tools import classifier

RES = 32


@pytest.fixture(scope='module')
def tumour_image():
    """The real H&E tumour tile (1000x1000) from the asset registry."""
    return np.asarray(PIL.Image.open(assets.fetch('tia-tumour-tile', verbose=False)).convert('RGB'))


@pytest.fixture(scope='module')
def two_tissues(he_image, tumour_image, tmp_path_factory):
    """Labelled zips: CMU-1 patches as class 0, the TIA tumour tile's patches as class 1 (train and held-out test)."""
    folder = tmp_path_factory.mktemp('cls')
    def make(name, count, seed):
        normal = tissue_crops(he_image, RES, count, seed=seed)
        tumour = tissue_crops(tumour_image, RES, count, seed=seed)
        return write_dataset_zip(folder / name, np.concatenate([normal, tumour]), [0] * count + [1] * count)
    return dict(train=make('train.zip', 48, 1), test=make('test.zip', 24, 2), folder=folder)


def tiny_generator(seed):
    torch.manual_seed(seed)
    return stylegan2.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=RES, img_channels=3,
                               mapping_kwargs=dict(num_layers=1),
                               synthesis_kwargs=dict(channel_base=128, channel_max=8)).eval().requires_grad_(False)


def write_pkl(path, G):
    with open(path, 'wb') as f:
        pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=None), f)
    return str(path)


def assert_one_line_error(res):
    assert res.exit_code != 0 and isinstance(res.exception, SystemExit), res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: '), res.output
    assert 'Traceback' not in res.output


@pytest.fixture(scope='module')
def trained(two_tissues):
    outdir = two_tissues['folder'] / 'run'
    res = CliRunner().invoke(classifier.cli, ['train', '--data', two_tissues['train'], '--outdir', str(outdir),
                                              '--epochs', '5', '--batch', '16', '--val-split', '0.25'])
    assert res.exit_code == 0, res.output
    return outdir


def test_training_learns_two_real_tissues(trained, two_tissues):
    stats = [json.loads(line) for line in open(trained / 'stats.jsonl')]
    assert [s['epoch'] for s in stats] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(s['train_loss']) for s in stats)
    model, state = classifier.load_checkpoint(str(trained / 'best.pt'))
    assert state['resolution'] == RES and state['classes'] == ['normal', 'tumour']
    # Held-out patches, predicted here without the tool's own evaluation path.
    dataset, labels = classifier.open_labelled_dataset(two_tissues['test'])
    images = torch.stack([torch.as_tensor(dataset[i][0]) for i in range(len(dataset))])
    model.eval()
    with torch.no_grad():
        pred = model(classifier.normalise(images, 'cpu')).argmax(dim=1).numpy()
    accuracy = (pred == labels).mean()
    assert accuracy >= 0.8, accuracy  # chance is 0.5


def test_eval_writes_table_with_right_counts(trained, two_tissues):
    folder = two_tissues['folder']
    normal, tumour = write_pkl(folder / 'Gn.pkl', tiny_generator(1)), write_pkl(folder / 'Gt.pkl', tiny_generator(2))
    out = folder / 'eval'
    res = CliRunner().invoke(classifier.cli, ['eval', '--model', str(trained / 'best.pt'), '--real', two_tissues['test'],
                                              '--normal-network', normal, '--tumor-network', tumour, '--num', '10',
                                              '--batch', '4', '--outdir', str(out)])
    assert res.exit_code == 0, res.output
    result = json.load(open(out / 'classifier_eval.json'))
    synth, real = result['synthesized'], result['real']
    assert synth['count'] == 20 and [sum(row) for row in synth['confusion_matrix']] == [10, 10]
    assert [sum(row) for row in real['confusion_matrix']] == [24, 24]
    cm = np.array(real['confusion_matrix'])
    assert real['accuracy'] == pytest.approx(np.trace(cm) / cm.sum())
    assert real['recall']['tumour'] == pytest.approx(cm[1, 1] / cm[1].sum())
    table = open(out / 'table2.md').read().splitlines()
    assert table[0] == '| Image size | Real CA | Synthesized CA |'
    assert table[2] == f'| {RES}×{RES} | {real["accuracy"]:.4f} | {synth["accuracy"]:.4f} |'


def test_resume_continues_exactly(two_tissues, tmp_path):
    data = two_tissues['train']
    common = ['--data', data, '--batch', '16', '--val-split', '0.25', '--workers', '0']
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    runner = CliRunner()
    assert runner.invoke(classifier.cli, ['train', '--outdir', str(straight), '--epochs', '2'] + common).exit_code == 0
    assert runner.invoke(classifier.cli, ['train', '--outdir', str(resumed), '--epochs', '1'] + common).exit_code == 0
    res = runner.invoke(classifier.cli, ['train', '--outdir', str(resumed), '--epochs', '2', '--resume'] + common)
    assert res.exit_code == 0, res.output
    a = torch.load(straight / 'last.pt', weights_only=True)['model']
    b = torch.load(resumed / 'last.pt', weights_only=True)['model']
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_bad_inputs_give_one_line_errors(trained, two_tissues, tmp_path, he_crops):
    runner = CliRunner()
    crops = he_crops(RES, 6)
    single = write_dataset_zip(tmp_path / 'single.zip', crops, [0] * 6)
    mislabelled = write_dataset_zip(tmp_path / 'bad.zip', crops, [0, 1, 2, 0, 1, 2])
    unlabelled = write_dataset_zip(tmp_path / 'nolabels.zip', crops)
    for data in [single, mislabelled, unlabelled, str(tmp_path / 'missing.zip')]:
        out = tmp_path / ('out_' + os.path.basename(data))
        assert_one_line_error(runner.invoke(classifier.cli, ['train', '--data', data, '--outdir', str(out)]))
        assert not out.exists()  # nothing created for a failed start

    model = str(trained / 'best.pt')
    G = write_pkl(tmp_path / 'G.pkl', tiny_generator(3))
    wide = write_dataset_zip(tmp_path / 'wide.zip', he_crops(64, 4), [0, 1, 0, 1])
    cases = [
        ['--real', two_tissues['test'], '--normal-network', str(tmp_path / 'none.pkl'), '--tumor-network', G],
        ['--real', wide, '--normal-network', G, '--tumor-network', G],  # 64px data, 32px model
    ]
    G64 = stylegan2.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=64, img_channels=3,
                              mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=128, channel_max=8))
    cases.append(['--real', two_tissues['test'], '--normal-network', G,
                  '--tumor-network', write_pkl(tmp_path / 'G64.pkl', G64)])
    for case in cases:
        res = runner.invoke(classifier.cli, ['eval', '--model', model, '--num', '2', '--outdir', str(tmp_path / 'e')] + case)
        assert_one_line_error(res)
    text = tmp_path / 'model.txt'
    text.write_text('not a model')
    assert_one_line_error(runner.invoke(classifier.cli, ['eval', '--model', str(text), '--real', two_tissues['test'],
                                                         '--normal-network', G, '--tumor-network', G]))
    assert not (tmp_path / 'e').exists()
