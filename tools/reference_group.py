"""Discriminator outputs of single patches on the distribution D was trained on: minibatch-stddev reference groups.

A StyleGAN2 / PGAN discriminator appends to its last block the standard deviation of the activations over a group
of `group_size` images (Karras et al. 2018). In training every group is a random draw of real training patches (or
of generated ones). Scoring a patch alone (group size 1) feeds D a constant stddev channel of ~1e-4 that it never
saw; scoring a batch makes a patch's score depend on whichever patches share its batch.

Here every scored image gets its own group: the image itself plus `group_size - 1` fixed reference patches of the
GAN's normal training set, the same for every image. The statistic is computed from that group exactly as the
layer would compute it on a batch [image, reference_1, ..., reference_{g-1}], so a patch's features and logit do not
depend on its batch-mates, and D sees a group like the ones it was trained on.
"""

import contextlib

import torch

import dnnlib

#----------------------------------------------------------------------------

def mbstd_layers(D):
    """D's minibatch-stddev layers (any family: recognised by class name and their group_size / num_channels)."""
    return [m for m in D.modules() if type(m).__name__ == 'MinibatchStdLayer' and hasattr(m, 'group_size')]


def group_size(D, default=4):
    """The largest group size D's minibatch-stddev layers were built with (1 without such layers). A layer built
    with group_size=None grouped whole per-GPU batches; `default` stands in for that unknown size."""
    sizes = [default if m.group_size is None else int(m.group_size) for m in mbstd_layers(D)]
    return max(sizes, default=1)


def references_needed(D):
    """How many reference patches complete a group: group_size(D) - 1 (0 when D has no minibatch-stddev)."""
    return group_size(D) - 1


def _grouped_stddev(x, reference, size, parts):
    """The layer's output for each row of x [N, C, H, W] in the group (x_n, reference[:size - 1])."""
    n, c, h, w = x.shape
    others = reference[:size - 1].to(x.dtype)
    members = torch.cat([x[:, None], others[None].expand(n, *others.shape)], dim=1)  # [N, size, C, H, W]
    members = members.reshape(n, size, parts, c // parts, h, w)
    stddev = (members.var(dim=1, unbiased=False) + 1e-8).sqrt()                 # [N, parts, C/parts, H, W]
    stat = stddev.mean(dim=[2, 3, 4])                                            # [N, parts]
    return torch.cat([x, stat.reshape(n, parts, 1, 1).expand(-1, -1, h, w).to(x.dtype)], dim=1)


@contextlib.contextmanager
def reference_groups(D, reference):
    """Within the block, D's minibatch-stddev layers group each input image with the reference images.

    reference: float [K, C, R, R] in [-1, 1] (normal training patches), K >= references_needed(D). The layers'
    inputs for the references are recorded once on entry (one pass of D over them); inside the block any
    group_size a caller sets on the layers is ignored in favour of the size the layer had on entry.
    """
    layers = mbstd_layers(D)
    if not layers:
        yield
        return
    need = references_needed(D)
    if reference is None or reference.shape[0] < need:
        have = 0 if reference is None else reference.shape[0]
        raise dnnlib.util.UserError(f'the discriminator groups {need + 1} images in its minibatch-stddev layer: scoring '
                                    f'needs {need} reference patches of the GAN\'s training set, got {have}')
    sizes = [group_size(D) if m.group_size is None else int(m.group_size) for m in layers]
    recorded = {}
    hooks = [m.register_forward_pre_hook(lambda module, inputs: recorded.__setitem__(module, inputs[0].detach()))
             for m in layers]
    try:
        with torch.no_grad():
            batch = reference[:max(need, 1)]
            D(batch, torch.zeros([batch.shape[0], getattr(D, 'c_dim', 0)], device=batch.device))
    finally:
        for hook in hooks:
            hook.remove()
    try:
        for layer, size in zip(layers, sizes):
            ref, parts = recorded[layer], int(getattr(layer, 'num_channels', 1))
            layer.forward = lambda x, _ref=ref, _size=size, _parts=parts: _grouped_stddev(x, _ref, _size, _parts)
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop('forward', None)

#----------------------------------------------------------------------------
