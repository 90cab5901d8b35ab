"""Test helper: write images as a dataset zip in the official StyleGAN2-ADA layout."""

import io
import json
import zipfile

import PIL.Image


def write_dataset_zip(path, images, labels=None):
    """uint8 [N, H, W, C] images -> zip of PNGs (`00000/img00000000.png`, …) with dataset.json when labelled."""
    names = [f'{i // 1000:05d}/img{i:08d}.png' for i in range(len(images))]
    with zipfile.ZipFile(path, 'w') as z:
        for name, img in zip(names, images):
            buf = io.BytesIO()
            PIL.Image.fromarray(img).save(buf, format='PNG')
            z.writestr(name, buf.getvalue())
        if labels is not None:
            z.writestr('dataset.json', json.dumps({'labels': [[name, label] for name, label in zip(names, labels)]}))
    return str(path)
