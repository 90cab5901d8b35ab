"""Layer kit shared by the GAN families: equalized-learning-rate dense and conv layers, minibatch stddev.

Weights are stored as unit-variance randn (divided by the lr multiplier for dense layers) and scaled at
run time (equalized learning rate, Karras et al. 2018), exactly as the official StyleGAN2-ADA networks
store them, so state dicts copy 1:1 between the code bases.

Every class here is persistent: a pickled network carries this file's source too. Keep this module's
imports to numpy, torch and torch_utils so pickles load where the `networks` package is absent.
"""

import numpy as np
import torch

from torch_utils import misc, persistence
from torch_utils.ops import bias_act, conv2d_resample, upfirdn2d

#----------------------------------------------------------------------------

def activation_gain(activation):
    """Default gain that keeps the activations' variance for the given bias_act activation."""
    return bias_act.activation_funcs[activation].def_gain

#----------------------------------------------------------------------------

@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    """Dense layer y = act(x W^T * gain + b) with equalized learning rate."""

    def __init__(self,
        in_features,                # Number of input features.
        out_features,               # Number of output features.
        bias            = True,     # Add a learned bias?
        activation      = 'linear', # Activation name understood by bias_act.
        lr_multiplier   = 1,        # Learning-rate multiplier of this layer.
        bias_init       = 0,        # Initial value of the bias.
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        # Stored divided by lr_multiplier and multiplied back at run time: the optimizer then sees a
        # parameter whose effective step is lr * lr_multiplier.
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == 'linear' and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())  # one fused kernel for the common linear case
        return bias_act.bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self):
        return f'in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class Conv2dLayer(torch.nn.Module):
    """Convolution with equalized learning rate, optional FIR up/downsampling, bias, activation and clamp."""

    def __init__(self,
        in_channels,                    # Number of input channels.
        out_channels,                   # Number of output channels.
        kernel_size,                    # Width and height of the kernel.
        bias            = True,         # Add a learned bias?
        activation      = 'linear',     # Activation name understood by bias_act.
        up              = 1,            # Integer upsampling factor.
        down            = 1,            # Integer downsampling factor.
        resample_filter = [1,3,3,1],    # Low-pass filter applied when resampling.
        conv_clamp      = None,         # Clamp the output to +-X (None = no clamping); used with fp16.
        channels_last   = False,        # Store the weight in channels_last memory format?
        trainable       = True,         # False = weight and bias are buffers (frozen layers).
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))
        self.act_gain = activation_gain(activation)

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias) if bias is not None else None
        else:
            self.register_buffer('weight', weight)
            if bias is not None:
                self.register_buffer('bias', bias)
            else:
                self.bias = None

    def forward(self, x, gain=1):
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        flip_weight = (self.up == 1)  # cheaper path; the transposed conv used for up=2 needs the flip
        x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
            padding=self.padding, flip_weight=flip_weight)
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self):
        return (f'in_channels={self.in_channels}, out_channels={self.out_channels}, activation={self.activation}, '
                f'up={self.up}, down={self.down}')

#----------------------------------------------------------------------------

@persistence.persistent_class
class MinibatchStdLayer(torch.nn.Module):
    """Appends the average stddev over groups of the minibatch as extra feature maps (Karras et al. 2018)."""

    def __init__(self,
        group_size,         # Samples per group; None = the whole minibatch.
        num_channels = 1,   # Number of stddev feature maps to append (channels are split into this many groups).
    ):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x):
        N, C, H, W = x.shape
        with misc.suppress_tracer_warnings():  # traced as a constant; N is fixed per trace
            G = torch.min(torch.as_tensor(self.group_size), torch.as_tensor(N)) if self.group_size is not None else N
        F = self.num_channels
        c = C // F

        y = x.reshape(G, -1, F, c, H, W)    # [GnFcHW] sample i lives in group i % n, channels split in F groups
        y = y - y.mean(dim=0)               # [GnFcHW] deviation from the group mean
        y = y.square().mean(dim=0)          # [nFcHW]  variance over the group
        y = (y + 1e-8).sqrt()               # [nFcHW]  stddev over the group
        y = y.mean(dim=[2,3,4])             # [nF]     averaged over channels and pixels
        y = y.reshape(-1, F, 1, 1)          # [nF11]
        y = y.repeat(G, 1, H, W)            # [NFHW]   broadcast back to every sample and pixel
        return torch.cat([x, y], dim=1)     # [N(C+F)HW]

    def extra_repr(self):
        return f'group_size={self.group_size}, num_channels={self.num_channels}'

#----------------------------------------------------------------------------
