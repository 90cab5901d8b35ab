"""Layer kit of HistoSynth's GAN families: equalized-learning-rate dense and convolution layers, minibatch stddev.

Equalized learning rate (Karras et al. 2018): a weight is kept as a unit-variance normal sample and
multiplied at run time by He's constant 1/sqrt(fan_in), so Adam moves every layer by the same relative
amount. A dense layer also stores its weight divided by a learning-rate multiplier and multiplies the
multiplier back in, which slows that layer down (StyleGAN's mapping network uses 0.01). These are the
storage conventions of the official StyleGAN2-ADA state dicts, which therefore copy 1:1.

The classes are persistent (a pickle carries this file's source), so only numpy, torch and torch_utils
may be imported here.
"""

import numpy as np
import torch

from torch_utils import misc, persistence
from torch_utils.ops import bias_act, conv2d_resample, upfirdn2d

#----------------------------------------------------------------------------

_RECTIFIERS = ('relu', 'lrelu', 'swish')

def activation_gain(activation):
    """He et al. 2015: sqrt(2) restores the variance a rectifier halves; other activations keep gain 1."""
    return np.sqrt(2) if activation in _RECTIFIERS else 1

def _scaled(tensor, factor, dtype):
    """`tensor` in `dtype`, multiplied by a Python scalar unless that is 1."""
    tensor = tensor.to(dtype)
    return tensor if factor == 1 else tensor * factor

def register_resample_filter(module, taps):
    """Give `module` its FIR low-pass filter buffer 'resample_filter' (normalised, see upfirdn2d.setup_filter)."""
    module.register_buffer('resample_filter', upfirdn2d.setup_filter(taps))

def add_tensor(module, name, value, trainable=True):
    """Store `value` (None allowed) on `module` as a parameter, or as a buffer when frozen."""
    if value is None:
        setattr(module, name, None)
    elif trainable:
        setattr(module, name, torch.nn.Parameter(value))
    else:
        module.register_buffer(name, value)

def conv_kernel(out_channels, in_channels, kernel_size, channels_last=False):
    """Unit-normal kernel [out, in, k, k], optionally stored channels-last."""
    kernel = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
    return kernel.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

#----------------------------------------------------------------------------

@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    """act(x @ (W * lr_multiplier / sqrt(in_features))^T + b * lr_multiplier)."""

    def __init__(self, in_features, out_features, bias=True, activation='linear', lr_multiplier=1, bias_init=0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        # Both gains multiply the stored tensors at run time. The weight is stored divided by lr_multiplier,
        # so it starts as N(0, 1/in_features) in effect while the optimizer's steps shrink by lr_multiplier.
        self.weight_gain, self.bias_gain = lr_multiplier * in_features ** -0.5, lr_multiplier
        add_tensor(self, 'weight', torch.randn([out_features, in_features]).div_(lr_multiplier))
        add_tensor(self, 'bias', torch.full([out_features], np.float32(bias_init)) if bias else None)

    def forward(self, x):
        weight_t = _scaled(self.weight, self.weight_gain, x.dtype).t()
        if self.bias is None:
            return bias_act.bias_act(x.matmul(weight_t), act=self.activation)
        bias = _scaled(self.bias, self.bias_gain, x.dtype)
        if self.activation == 'linear':
            return torch.addmm(bias.unsqueeze(0), x, weight_t)  # bias and product in one BLAS call
        return bias_act.bias_act(x.matmul(weight_t), bias, act=self.activation)

    def extra_repr(self):
        return f'in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class Conv2dLayer(torch.nn.Module):
    """Square-kernel convolution with equalized lr, optional FIR up/downsampling, bias, activation, clamp.

    `gain` of forward() multiplies the activation's output and the clamp (resnet branches use sqrt(0.5)).
    trainable=False registers weight and bias as buffers (Freeze-D).
    """

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation='linear', up=1, down=1,
                 resample_filter=[1,3,3,1], conv_clamp=None, channels_last=False, trainable=True):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.weight_gain = (in_channels * kernel_size ** 2) ** -0.5
        self.act_gain = activation_gain(activation)
        register_resample_filter(self, resample_filter)
        add_tensor(self, 'weight', conv_kernel(out_channels, in_channels, kernel_size, channels_last), trainable)
        add_tensor(self, 'bias', torch.zeros([out_channels]) if bias else None, trainable)

    def forward(self, x, gain=1):
        weight = _scaled(self.weight, self.weight_gain, x.dtype)
        # A plain correlation when not upsampling; the transposed convolution used for up > 1 wants
        # the kernel flipped (the function is the same either way). 'Same' padding of an odd kernel.
        x = conv2d_resample.conv2d_resample(x=x, w=weight, f=self.resample_filter, up=self.up, down=self.down,
            padding=weight.shape[-1] // 2, flip_weight=(self.up == 1))
        bias = None if self.bias is None else self.bias.to(x.dtype)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act.bias_act(x, bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self):
        return (f'in_channels={self.in_channels}, out_channels={self.out_channels}, activation={self.activation}, '
                f'up={self.up}, down={self.down}')

#----------------------------------------------------------------------------

@persistence.persistent_class
class MinibatchStdLayer(torch.nn.Module):
    """Appends `num_channels` feature maps holding the mean stddev of the features within a sample's group.

    Sample i belongs to group i mod (N / group_size); the channels are split into `num_channels` parts,
    each giving one map (Karras et al. 2018).
    """

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x):
        n, c, h, w = x.shape
        with misc.suppress_tracer_warnings():  # a constant per trace: the batch size is fixed
            group = n if self.group_size is None else min(int(self.group_size), int(n))
        parts = self.num_channels
        grouped = x.reshape(group, -1, parts, c // parts, h, w)            # [group, N/group, parts, c/parts, h, w]
        stddev = (grouped.var(dim=0, unbiased=False) + 1e-8).sqrt()       # over the members of each group
        score = stddev.mean(dim=[2, 3, 4]).repeat(group, 1)               # [N, parts], sample i -> group i % (N/group)
        maps = score.reshape(n, parts, 1, 1).expand(-1, -1, h, w)
        return torch.cat([x, maps.to(x.dtype)], dim=1)

    def extra_repr(self):
        return f'group_size={self.group_size}, num_channels={self.num_channels}'

#----------------------------------------------------------------------------
# HistoSynth — see README.md.
