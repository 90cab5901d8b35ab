"""Test helper for the slide-map tests: a real-H&E pyramid with a pasted lesion and its ASAP XML outline."""

import pickle

from anomaly_data import resample_tile
from tools.histology import wsi
from tools.train_encoder import build_encoder

LESION_BOX = (1100, 700, 1600, 1200)  # x0, y0, x1, y1 at level 0: tissue of CMU-1-Small-Region lies here


def lesion_slide(he_image, tumour_tile, box=LESION_BOX):
    """CMU-1-Small-Region with the tumour tile's tissue, resampled to the slide's 0.5 um/px, pasted into `box`."""
    x0, y0, x1, y1 = box
    tissue = resample_tile(tumour_tile)
    assert tissue.shape[0] >= y1 - y0 and tissue.shape[1] >= x1 - x0, 'the lesion box is larger than the tile'
    out = he_image.copy()
    out[y0:y1, x0:x1] = tissue[:y1 - y0, :x1 - x0]
    return out


def write_lesion_slide(folder, he_image, tumour_tile, name='lesion', box=LESION_BOX):
    """(slide path, ASAP XML path) of the lesion slide written as a pyramidal TIFF."""
    slide = str(folder / f'{name}.tif')
    wsi.write_pyramid_tiff(slide, lesion_slide(he_image, tumour_tile, box), levels=3, mpp=0.499)
    xml = folder / f'{name}.xml'
    xml.write_text(asap_xml([box]))
    return slide, str(xml)


def asap_xml(boxes, group='Tumor', groups=None):
    """ASAP XML with one rectangular polygon per (x0, y0, x1, y1) box, in `group` or in its entry of `groups`
    (CAMELYON16: '_0'/'_1' tumour, '_2' exclusion)."""
    parts = ['<?xml version="1.0"?>', '<ASAP_Annotations>', '<Annotations>']
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        part_of = group if groups is None else groups[k]
        parts.append(f'<Annotation Name="Annotation {k}" Type="Polygon" PartOfGroup="{part_of}"><Coordinates>')
        for order, (x, y) in enumerate([(x0, y0), (x1, y0), (x1, y1), (x0, y1)]):
            parts.append(f'<Coordinate Order="{order}" X="{x}" Y="{y}" />')
        parts.append('</Coordinates></Annotation>')
    parts += ['</Annotations>', '<AnnotationGroups><Group Name="Tumor" PartOfGroup="None" Color="#F4FA58"/>'
              '</AnnotationGroups>', '</ASAP_Annotations>']
    return '\n'.join(parts)


def save_encoder(path, G, D, seed=0):
    """An untrained (deterministic) encoder snapshot for G, as tools.train_encoder saves them."""
    import torch
    torch.manual_seed(seed)
    E = build_encoder(G, D, channel_base=128, channel_max=16).eval().requires_grad_(False)
    with open(path, 'wb') as f:
        pickle.dump(dict(E=E), f)
    return str(path)
