"""tools/anomaly.py: detection metrics by brute force, the f-AnoGAN score by hand, evaluation on real H&E."""

import csv
import itertools
import json

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

from anomaly_data import tumour_crops
from anomaly_data import any_tissue_crops as tissue_crops
from datasets import write_dataset_zip
from projection_nets import image_from_w, save_snapshot, tiny_stylegan2
import dnnlib
from tools import anomaly, assets, cli_utils, projection, reference_group, train_encoder


def _brute_force(labels, scores):
    pos, neg = scores[labels == 1], scores[labels == 0]
    # AUROC: probability that a random positive outscores a random negative (ties count half).
    auroc = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)])
    # Average precision: precision at each positive's rank (all tied scores taken together), averaged.
    ap, f1max = 0.0, 0.0
    for t in np.unique(scores):
        flagged = scores >= t
        tp = np.sum(flagged & (labels == 1))
        precision, recall = tp / flagged.sum(), tp / len(pos)
        f1max = max(f1max, 0 if tp == 0 else 2 * precision * recall / (precision + recall))
    thresholds = np.sort(np.unique(scores))[::-1]
    prev_recall = 0.0
    for t in thresholds:
        flagged = scores >= t
        tp = np.sum(flagged & (labels == 1))
        recall = tp / len(pos)
        ap += (recall - prev_recall) * tp / flagged.sum()
        prev_recall = recall
    return auroc, ap, f1max


def test_detection_metrics_equal_brute_force():
    labels = np.array([0, 0, 1, 0, 1, 1, 0, 1, 0, 0])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.65, 0.9, 0.2, 0.4, 0.05, 0.3])  # one tie across classes (0.4)
    found = anomaly.detection_metrics(labels, scores)
    auroc, ap, f1max = _brute_force(labels, scores)
    assert found['AUROC'] == pytest.approx(auroc, abs=1e-12)
    assert found['AUPR'] == pytest.approx(ap, abs=1e-12)
    assert found['F1_oracle'] == pytest.approx(f1max, abs=1e-12)
    # Hand-checked: 20 of 24 pairs ordered right, one tie -> (19 + 0.5) / 24.
    assert found['AUROC'] == pytest.approx(19.5 / 24)
    perfect = anomaly.detection_metrics([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])
    assert perfect == dict(AUROC=1.0, AUPR=1.0, F1_oracle=1.0)


def test_threshold_metrics_by_hand():
    """F1 at a threshold fixed on validation normals: numpy's quantile, then counts by hand and scikit-learn's F1."""
    from sklearn.metrics import f1_score, precision_score, recall_score
    val = np.array([0.1, 0.2, 0.3, 0.4, 0.5])           # 95th percentile (linear): 0.4 + 0.8 * 0.1 = 0.48
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.2, 0.49, 0.6, 0.45, 0.7, 0.9, 0.48])  # flagged (> 0.48): 0.49, 0.6 | 0.7, 0.9
    found = anomaly.threshold_metrics(labels, scores, val, quantile=0.95)
    assert found['threshold'] == pytest.approx(0.48)
    # tp 2 (0.7, 0.9), fp 2 (0.49, 0.6), fn 2 (0.45, 0.48 is not above the threshold): F1 = 4 / (4 + 2 + 2)
    assert found['F1'] == pytest.approx(0.5) and found['precision'] == pytest.approx(0.5)
    assert found['recall'] == pytest.approx(0.5) and found['false_positive_rate'] == pytest.approx(2 / 3)
    flagged = scores > np.quantile(val, 0.95)
    assert found['F1'] == pytest.approx(f1_score(labels, flagged))
    assert found['precision'] == pytest.approx(precision_score(labels, flagged))
    assert found['recall'] == pytest.approx(recall_score(labels, flagged))
    assert anomaly.threshold_metrics([0, 1], [0.0, 0.1], [5.0])['F1'] == 0  # nothing flagged
    split = anomaly.validation_split(np.array([1, 0, 0, 1, 0, 0, 0, 0, 1]), fraction=0.25)
    assert split.sum() == 2 and not split[[0, 3, 8]].any()  # round(0.25 * 6) normals, never a tumour patch
    np.testing.assert_array_equal(split, anomaly.validation_split(np.array([1, 0, 0, 1, 0, 0, 0, 0, 1]), 0.25))
    assert anomaly.validation_split(np.array([0, 1, 1]), 0.5).sum() == 0  # one normal: it stays in the test


def _hand_built_groups(D, x, reference):
    """Per image: D's b4.fc features and logit inside a batch [image, reference...] of the group size D was
    built with, run through the unmodified layer (one group, as in a training step)."""
    size = D.b4.mbstd.group_size
    features, logits = [], []
    for k in range(len(x)):
        batch = torch.cat([x[k:k + 1], reference[:size - 1]])
        captured = []
        hook = D.b4.fc.register_forward_hook(lambda _m, _i, out: captured.append(out))
        logits.append(D(batch, torch.zeros([size, 0]))[0])
        hook.remove()
        features.append(captured[0][0])
    return torch.stack(features), torch.cat(logits)


def test_fanogan_score_by_hand(one_thread):
    G, D = tiny_stylegan2(16)
    patches = cli_utils.images_to_uint8(torch.cat([image_from_w(G, s)[1] for s in (1, 2, 3)]))
    reference = cli_utils.images_to_uint8(torch.cat([image_from_w(G, s)[1] for s in (7, 8, 9)]))
    torch.manual_seed(0)
    E = train_encoder.build_encoder(G, D, channel_base=128, channel_max=16).eval()
    result = anomaly.score_patches(G, patches, method='encoder', E=E, D=D, kappa=2.0, batch_size=2, progress=False,
                                   reference=reference)
    with torch.no_grad():
        x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 127.5 - 1
        ref = torch.from_numpy(reference).permute(0, 3, 1, 2).float() / 127.5 - 1
        recon = G.synthesis(E(x).expand(-1, G.num_ws, -1), noise_mode='const').clamp(-1, 1)
        residual = ((x - recon) ** 2).mean(dim=(1, 2, 3))
        fx, logits = _hand_built_groups(D, x, ref)
        fr, _ = _hand_built_groups(D, recon, ref)
        features = ((fx - fr) ** 2).mean(dim=1)
    np.testing.assert_allclose(result.residual, residual.numpy(), rtol=1e-4)
    np.testing.assert_allclose(result.features, features.numpy(), rtol=1e-3, atol=1e-8)
    np.testing.assert_allclose(result.score, (residual + 2.0 * features).numpy(), rtol=1e-3)
    assert result.recon.shape == patches.shape and result.recon.dtype == np.uint8
    assert np.isnan(result.lpips).all()  # the f-AnoGAN score never ran VGG16
    np.testing.assert_allclose(result.critic, -logits.numpy(), rtol=1e-4, atol=1e-6)  # -D(x) in its group
    critic = anomaly.score_patches(G, patches, method='encoder', E=E, D=D, score='critic', batch_size=3, progress=False,
                                   reference=reference)
    np.testing.assert_allclose(critic.score, -logits.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(critic.residual, result.residual, rtol=1e-5)  # terms do not depend on the batch size
    assert np.isnan(critic.lpips).all()  # nor does the critic score run VGG16
    with pytest.raises(Exception, match='uint8'):
        anomaly.score_patches(G, patches.astype(np.float32), method='encoder', E=E, D=D, reference=reference)
    with pytest.raises(dnnlib.util.UserError, match='reference patches'):  # D groups 4 images: 3 references needed
        anomaly.score_patches(G, patches, method='encoder', E=E, D=D, reference=reference[:2])


def test_reference_groups_make_scores_independent_of_the_batch(he_crops, one_thread):
    """A patch's D features and logit are the same alone and in a batch of 7, equal those it gets in a training-like
    group [patch, 3 references] built by hand, and differ from the group-of-one statistic D never saw."""
    G, D = tiny_stylegan2(16, seed=4)
    assert D.b4.mbstd.group_size == 4 and reference_group.references_needed(D) == 3
    patches = he_crops(16, 7, seed=21)
    reference = he_crops(16, 3, seed=22)
    x, ref = projection.to_float(patches, 'cpu'), projection.to_float(reference, 'cpu')
    with torch.no_grad(), reference_group.reference_groups(D, ref):
        f7, l7 = train_encoder.discriminator_outputs(D, x)
        f1, l1 = train_encoder.discriminator_outputs(D, x[2:3])
    torch.testing.assert_close(f1[0], f7[2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(l1[0], l7[2], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        hand_f, hand_l = _hand_built_groups(D, x, ref)
    torch.testing.assert_close(f7, hand_f, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(l7, hand_l, rtol=1e-5, atol=1e-6)
    assert D.b4.mbstd.group_size == 4 and 'forward' not in vars(D.b4.mbstd)  # the layer is restored on exit
    with torch.no_grad():
        alone_f, _ = train_encoder.discriminator_outputs(D, x)  # group size 1: a constant stddev channel
    assert float((alone_f - hand_f).abs().max()) > 1e-3
    # Through score_patches: batch size 1 and 7 give the same scores.
    E = train_encoder.build_encoder(G, D, channel_base=128, channel_max=16).eval()
    kwargs = dict(method='encoder', E=E, D=D, reference=reference, progress=False)
    one, seven = anomaly.score_patches(G, patches, batch_size=1, **kwargs), anomaly.score_patches(G, patches, batch_size=7, **kwargs)
    for key in ('score', 'features', 'critic'):
        np.testing.assert_allclose(one[key], seven[key], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('family', ['dcgan', 'wgan'])
def test_discriminator_outputs_of_feature_families(family, one_thread):
    """Families with D.features(): the critic term is D's own output for each image alone, the features are D's."""
    from networks import dcgan, wgan
    torch.manual_seed(0)
    D = (dcgan.Discriminator(c_dim=0, img_resolution=64, img_channels=3, width=8) if family == 'dcgan' else
         wgan.Discriminator(c_dim=0, img_resolution=64, img_channels=3, dim=8)).eval().requires_grad_(False)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    if family == 'dcgan':
        stem, trunk, head = (lambda img: img), D.body, D.logit
    else:
        stem, trunk, head = D.fromrgb, D.blocks, (lambda f: D.out(f.flatten(1)))
    passes = []
    hook = trunk.register_forward_hook(lambda *_args: passes.append(1))
    features, logits = train_encoder.discriminator_outputs(D, x)
    hook.remove()
    assert len(passes) == 1  # features and logits from one pass through the trunk
    alone = torch.cat([head(trunk(stem(x[k:k + 1]))) for k in range(3)]).reshape(3)
    torch.testing.assert_close(logits, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(features, D.features(x, None).flatten(1))
    torch.testing.assert_close(train_encoder.discriminator_features(D, x), features)

    class Unpickled(torch.nn.Module):  # a family from a pickle made before logits_from_features: D runs twice
        def __init__(self):
            super().__init__()
            self.inner, self.c_dim = D, 0

        def features(self, img, c=None):
            return D.features(img, c)

        def forward(self, img, c=None):
            return D(img, c)
    old_features, old_logits = train_encoder.discriminator_outputs(Unpickled(), x)
    torch.testing.assert_close(old_logits, logits)
    torch.testing.assert_close(old_features, features)


def test_encoder_path_runs_vgg16_only_for_the_lpips_score(monkeypatch, one_thread):
    """--method encoder with the f-AnoGAN score never loads LPIPS; --score lpips adds it: LPIPS(x, x') + residual."""
    G, D = tiny_stylegan2(16)
    patches = cli_utils.images_to_uint8(torch.cat([image_from_w(G, s)[1] for s in (4, 5)]))
    torch.manual_seed(1)
    E = train_encoder.build_encoder(G, D, channel_base=128, channel_max=16).eval()
    real_load = projection.lpips_lib.load_lpips

    def refuse(*_args, **_kwargs):
        raise AssertionError('VGG16 loaded for a score that does not use it')
    monkeypatch.setattr(projection.lpips_lib, 'load_lpips', refuse)
    reference = patches[[0, 1, 0]]
    fast = anomaly.score_patches(G, patches, method='encoder', E=E, D=D, progress=False, reference=reference)
    assert np.isnan(fast.lpips).all() and np.isfinite(fast.score).all()
    monkeypatch.setattr(projection.lpips_lib, 'load_lpips', real_load)
    lpips = real_load('cpu')
    both = anomaly.score_patches(G, patches, method='encoder', E=E, D=D, score='lpips', lpips=lpips, progress=False,
                                 reference=reference)
    with torch.no_grad():
        x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 127.5 - 1
        recon = G.synthesis(E(x).expand(-1, G.num_ws, -1), noise_mode='const')
        distance = lpips(recon, x).numpy()
    np.testing.assert_allclose(both.lpips, distance, rtol=1e-4)
    np.testing.assert_allclose(both.score, distance + both.residual, rtol=1e-5)
    np.testing.assert_allclose(both.residual, fast.residual, rtol=1e-6)
    np.testing.assert_allclose(both.features, fast.features, rtol=1e-5)  # the terms do not depend on the score
    mixed = anomaly.score_patches(G, patches, method='encoder', E=E, D=D, score='perceptual', kappa=3.0, lpips=lpips,
                                  progress=False, reference=reference)
    np.testing.assert_allclose(mixed.score, distance + 3.0 * fast.features, rtol=1e-4)
    with pytest.raises(Exception, match='unknown score'):
        anomaly.score_patches(G, patches, method='encoder', E=E, D=D, score='psnr')


@pytest.fixture(scope='module')
def tumour_tile():
    with PIL.Image.open(assets.fetch('tia-tumour-tile', verbose=False)) as img:
        return np.asarray(img.convert('RGB'))


def test_evaluate_on_real_he(tmp_path, he_image, tumour_tile, one_thread):
    """evaluate on CMU-1-Small-Region (normal, 0) and tumour-tile (1) patches, Reinhard-normalised to the training
    patches: one JSON line whose metrics agree with scores.csv (F1 at the threshold recomputed from the validation
    split), every patch scored once, the scores those of the normalised patches, ROC and Fig 4 pictures written."""
    from tools.histology import stain
    normal = tissue_crops(he_image, 16, 56, seed=11)
    tumour = tumour_crops(tumour_tile, 16, 8, seed=12)
    G, D = tiny_stylegan2(16)
    pkl = save_snapshot(tmp_path / 'net.pkl', G, D)
    train = write_dataset_zip(tmp_path / 'normal.zip', normal[:40])
    enc = train_encoder.train_encoder(pkl, train, str(tmp_path / 'enc'),
                                      kimg=0.08, batch_size=8, lr=1e-3, device='cpu', progress=False, workers=0,
                                      encoder_kwargs=dict(channel_base=128, channel_max=16))
    data = write_dataset_zip(tmp_path / 'labelled.zip', np.concatenate([normal[40:], tumour]), labels=[0] * 16 + [1] * 8)
    outdir = tmp_path / 'eval'
    res = CliRunner().invoke(anomaly.cli, ['evaluate', '--network', pkl, '--encoder', enc, '--data', data,
                                           '--outdir', str(outdir), '--device', 'cpu', '--batch', '5',
                                           '--reference-data', train, '--stain-normalize', 'reinhard'])
    assert res.exit_code == 0, res.output
    found = json.loads(res.output[res.output.rindex('{"AUROC"'):].splitlines()[0])  # stdout's JSON line after progress
    assert found['num_normal'] == 16 and found['num_tumour'] == 8 and found['method'] == 'encoder', found
    assert found['score'] == 'fanogan' and found['stain_normalize'] == 'reinhard' and found['reference_data'] == train
    with open(outdir / 'scores.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 and len({r['name'] for r in rows}) == 24
    labels, scores = np.array([int(r['label']) for r in rows]), np.array([float(r['score']) for r in rows])
    assert labels.tolist() == [0] * 16 + [1] * 8
    recomputed = anomaly.detection_metrics(labels, scores)
    for key in ('AUROC', 'AUPR', 'F1_oracle'):
        assert recomputed[key] == pytest.approx(found[key], rel=1e-5)
    val = np.array([r['split'] == 'val' for r in rows])
    assert val.sum() == 4 and (labels[val] == 0).all() and found['threshold']['num_val_normal'] == 4
    threshold = np.quantile(scores[val], 0.95)
    assert found['threshold']['threshold'] == pytest.approx(threshold, rel=1e-5)
    flagged, truth = scores[~val] > threshold, labels[~val] == 1
    tp, fp, fn = (flagged & truth).sum(), (flagged & ~truth).sum(), (~flagged & truth).sum()
    assert found['F1_at_threshold'] == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp else 0.0, rel=1e-5)
    for r in rows:  # score = residual + kappa * features, kappa = 1
        assert float(r['score']) == pytest.approx(float(r['residual']) + float(r['features']), rel=1e-4)
    # The scores are those of the stain-normalised patches, each with the fixed reference group.
    _, images, _ = anomaly.load_patches(data, 16, labelled=True)
    reference = anomaly.reference_patches(train, 16)
    normalised = stain.fit('reinhard', reference)(images)
    assert np.abs(normalised.astype(int) - images).mean() > 5  # the tumour tile's stain does move
    direct = anomaly.score_patches(G, normalised, E=train_encoder.load_encoder(enc, G), D=D, reference=reference,
                                   progress=False)
    np.testing.assert_allclose(scores, direct.score, rtol=1e-4)
    for name in ('roc.png', 'fig4.png'):
        with PIL.Image.open(outdir / name) as img:
            assert img.size[0] > 200 and img.size[1] > 100
    assert json.load(open(outdir / 'metrics.json'))['AUROC'] == found['AUROC']


@pytest.mark.parametrize('kind', ['no_reference', 'bad_stain'])
def test_evaluate_bad_reference_or_stain_is_one_line(kind, tmp_path, he_crops):
    G, D = tiny_stylegan2(16)
    pkl = save_snapshot(tmp_path / 'net.pkl', G, D, training_data=False)  # records no training data
    data = write_dataset_zip(tmp_path / 'labelled.zip', he_crops(16, 4), labels=[0, 0, 1, 1])
    args = ['--stain-normalize', 'vahadane'] if kind == 'bad_stain' else []
    res = CliRunner().invoke(anomaly.cli, ['evaluate', '--network', pkl, '--data', data, '--method', 'lpips',
                                           '--outdir', str(tmp_path / 'out'), '--num-steps', '1', *args])
    errors = [line for line in res.output.splitlines() if line.startswith('Error')]
    assert res.exit_code != 0 and len(errors) == 1 and 'Traceback' not in res.output, res.output
    assert ('--reference-data' if kind == 'no_reference' else 'vahadane') in errors[0]
    assert not (tmp_path / 'out').exists()


def test_evaluate_refuses_unlabelled_data(tmp_path, he_crops):
    G, D = tiny_stylegan2(16)
    pkl = save_snapshot(tmp_path / 'net.pkl', G, D)
    data = write_dataset_zip(tmp_path / 'plain.zip', he_crops(16, 4))
    res = CliRunner().invoke(anomaly.cli, ['evaluate', '--network', pkl, '--data', data, '--method', 'lpips',
                                           '--outdir', str(tmp_path / 'out'), '--num-steps', '1'])
    assert res.exit_code != 0 and 'labels' in res.output and not (tmp_path / 'out').exists(), res.output
