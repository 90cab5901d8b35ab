"""Differentiable discriminator augmentation (ADA, Karras et al. 2020).

Every op is applied to each image independently with probability `<op multiplier> * p`; `p` is a
buffer moved by the ADA controller in the training loop. All geometric ops (flips, 90-degree turns,
translations, scaling, rotation) are gathered into one inverse 2D transform and executed with a
single resampling: reflect-pad, 2x upsample with an orthogonal wavelet low-pass, bilinear
grid_sample, 2x downsample with the same filter (integer translations come out exact; the wavelet
is not symmetric, so flips and quarter turns pick up a slight blur). When a pipeline has only
flips, quarter turns and integer translations (presets 'blit' and 'histo') the pixels are copied
exactly instead. Colour ops are gathered into one 4x4 matrix acting on (R, G, B, 1).
"""

import numpy as np
import torch

from torch_utils import misc, persistence
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix, upfirdn2d

#----------------------------------------------------------------------------
# Low-pass decomposition filters of the Symlet wavelets (published coefficients).

wavelets = {
    'sym2': [-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025],
    'sym6': [0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
             0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
             -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148],
}

def imgfilter_bank(lowpass, num_bands=4):
    """Rows: symmetric filters splitting the spectrum into octave bands, lowest first, summing to a delta.

    lo = H(z)H(1/z)/2 and hi = H(-z)H(-1/z)/2 add up to a delta for an orthogonal wavelet H; the
    band of octave k is lo at the finer scales times hi at scale k, dilated by 2^k.
    """
    h = np.asarray(lowpass, dtype=np.float64)
    lo = np.convolve(h, h[::-1]) / 2
    hi_h = h * (-1.0) ** np.arange(h.size)
    hi = np.convolve(hi_h, hi_h[::-1]) / 2

    def dilate(f, factor):
        out = np.zeros((f.size - 1) * factor + 1)
        out[::factor] = f
        return out

    bands = []
    low = np.ones(1)
    for k in range(num_bands - 1):
        bands.append(np.convolve(low, dilate(hi, 2 ** k)))
        low = np.convolve(low, dilate(lo, 2 ** k))
    bands.append(low)
    bands = bands[::-1] # lowest band first
    taps = max(b.size for b in bands)
    bank = np.zeros([num_bands, taps])
    for i, b in enumerate(bands):
        start = (taps - b.size) // 2
        bank[i, start:start + b.size] = b
    return bank

#----------------------------------------------------------------------------
# Batched homogeneous matrices. Elements are Python numbers or [N] tensors.

def matrix(*rows, device=None):
    elems = [x for row in rows for x in row]
    ref = next((x for x in elems if isinstance(x, torch.Tensor)), None)
    if ref is None:
        return misc.constant(np.asarray(rows, dtype=np.float32), device=device)
    elems = [x if isinstance(x, torch.Tensor) else misc.constant(x, shape=ref.shape, device=ref.device) for x in elems]
    return torch.stack(elems, dim=-1).reshape(ref.shape + (len(rows), len(rows[0])))

def translate2d(tx, ty, **kwargs):
    return matrix([1, 0, tx], [0, 1, ty], [0, 0, 1], **kwargs)

def scale2d(sx, sy, **kwargs):
    return matrix([sx, 0, 0], [0, sy, 0], [0, 0, 1], **kwargs)

def rotate2d(theta, **kwargs):
    c, s = torch.cos(theta), torch.sin(theta)
    return matrix([c, -s, 0], [s, c, 0], [0, 0, 1], **kwargs)

def translate3d(tx, ty, tz, **kwargs):
    return matrix([1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1], **kwargs)

def scale3d(sx, sy, sz, **kwargs):
    return matrix([sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1], **kwargs)

def rotate3d(axis, theta, **kwargs):
    """Rotation by theta around the unit vector `axis` (Rodrigues)."""
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    s, c = torch.sin(theta), torch.cos(theta)
    d = 1 - c
    return matrix(
        [x * x * d + c,     x * y * d - z * s, x * z * d + y * s, 0],
        [y * x * d + z * s, y * y * d + c,     y * z * d - x * s, 0],
        [z * x * d - y * s, z * y * d + x * s, z * z * d + c,     0],
        [0,                 0,                 0,                 1], **kwargs)

#----------------------------------------------------------------------------

@persistence.persistent_class
class AugmentPipe(torch.nn.Module):
    """ADA augmentation pipeline. Ops are off by default; a multiplier of 1 enables one.

    Extra over the official set: `yflip` (vertical mirror), used by the histology preset.
    """

    def __init__(self,
        xflip=0, rotate90=0, xint=0, xint_max=0.125,
        scale=0, rotate=0, aniso=0, xfrac=0, scale_std=0.2, rotate_max=1, aniso_std=0.2, xfrac_std=0.125,
        brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0, brightness_std=0.2, contrast_std=0.5, hue_max=1, saturation_std=1,
        imgfilter=0, imgfilter_bands=[1,1,1,1], imgfilter_std=1,
        noise=0, cutout=0, noise_std=0.1, cutout_size=0.5,
        yflip=0,
    ):
        super().__init__()
        self.register_buffer('p', torch.ones([])) # overall probability multiplier, set by ADA

        # Pixel blitting.
        self.xflip          = float(xflip)          # x-flip
        self.yflip          = float(yflip)          # y-flip
        self.rotate90       = float(rotate90)       # rotation by a multiple of 90 degrees
        self.xint           = float(xint)           # integer translation
        self.xint_max       = float(xint_max)       # its range, relative to the image size

        # General geometric transformations.
        self.scale          = float(scale)          # isotropic scaling
        self.rotate         = float(rotate)         # arbitrary rotation
        self.aniso          = float(aniso)          # anisotropic scaling
        self.xfrac          = float(xfrac)          # fractional translation
        self.scale_std      = float(scale_std)      # log2 std of isotropic scaling
        self.rotate_max     = float(rotate_max)     # rotation range, 1 = full circle
        self.aniso_std      = float(aniso_std)      # log2 std of anisotropic scaling
        self.xfrac_std      = float(xfrac_std)      # std of fractional translation, relative to the image size

        # Colour transformations.
        self.brightness     = float(brightness)     # additive brightness
        self.contrast       = float(contrast)       # multiplicative contrast
        self.lumaflip       = float(lumaflip)       # mirror along the luma axis
        self.hue            = float(hue)            # rotation around the luma axis
        self.saturation     = float(saturation)     # scaling away from the luma axis
        self.brightness_std = float(brightness_std) # std of brightness
        self.contrast_std   = float(contrast_std)   # log2 std of contrast
        self.hue_max        = float(hue_max)        # hue range, 1 = full circle
        self.saturation_std = float(saturation_std) # log2 std of saturation

        # Image-space filtering.
        self.imgfilter      = float(imgfilter)      # per-band amplification
        self.imgfilter_bands = list(imgfilter_bands) # multipliers of the individual bands
        self.imgfilter_std  = float(imgfilter_std)  # log2 std of the band gains

        # Image-space corruptions.
        self.noise          = float(noise)          # additive RGB noise
        self.cutout         = float(cutout)         # cutout rectangle
        self.noise_std      = float(noise_std)      # std of the noise
        self.cutout_size    = float(cutout_size)    # cutout size, relative to the image size

        self.register_buffer('Hz_geom', upfirdn2d.setup_filter(wavelets['sym6']))
        self.register_buffer('Hz_fbank', torch.as_tensor(imgfilter_bank(wavelets['sym2'], len(self.imgfilter_bands)), dtype=torch.float32))

    def _chance(self, multiplier, shape, device):
        """Boolean mask: apply the op to this image (probability multiplier * p)."""
        return torch.rand(shape, device=device) < multiplier * self.p

    def forward(self, images, debug_percentile=None):
        """Augment NCHW images. `debug_percentile` in [0, 1] replaces every random draw (all ops on)."""
        assert isinstance(images, torch.Tensor) and images.ndim == 4
        N, C, H, W = images.shape
        dev = images.device
        dbg = None if debug_percentile is None else torch.as_tensor(debug_percentile, dtype=torch.float32, device=dev)

        # Inverse geometric transform, output pixel -> input pixel, centred pixel coordinates.
        G_inv = torch.eye(3, device=dev)
        geom = False

        for multiplier, sx, sy in [(self.xflip, 1, 0), (self.yflip, 0, 1)]:
            if multiplier > 0:
                i = torch.floor(torch.rand([N], device=dev) * 2)
                i = torch.where(self._chance(multiplier, [N], dev), i, torch.zeros_like(i))
                if dbg is not None:
                    i = torch.full_like(i, torch.floor(dbg * 2))
                G_inv = G_inv @ scale2d(1 - 2 * i * sx, 1 - 2 * i * sy)
                geom = True

        if self.rotate90 > 0:
            i = torch.floor(torch.rand([N], device=dev) * 4)
            i = torch.where(self._chance(self.rotate90, [N], dev), i, torch.zeros_like(i))
            if dbg is not None:
                i = torch.full_like(i, torch.floor(dbg * 4))
            G_inv = G_inv @ rotate2d(np.pi / 2 * i)
            geom = True

        if self.xint > 0:
            t = (torch.rand([N, 2], device=dev) * 2 - 1) * self.xint_max
            t = torch.where(self._chance(self.xint, [N, 1], dev), t, torch.zeros_like(t))
            if dbg is not None:
                t = torch.full_like(t, (dbg * 2 - 1) * self.xint_max)
            G_inv = G_inv @ translate2d(-torch.round(t[:, 0] * W), -torch.round(t[:, 1] * H))
            geom = True

        if self.scale > 0:
            s = torch.exp2(torch.randn([N], device=dev) * self.scale_std)
            s = torch.where(self._chance(self.scale, [N], dev), s, torch.ones_like(s))
            if dbg is not None:
                s = torch.full_like(s, torch.exp2(torch.erfinv(dbg * 2 - 1) * self.scale_std))
            G_inv = G_inv @ scale2d(1 / s, 1 / s)
            geom = True

        # Rotation is split into a pre- and a post-rotation around the anisotropic scaling, each with
        # probability p_rot, so that P(any rotation) = rotate * p.
        p_rot = 1 - torch.sqrt((1 - self.rotate * self.p).clamp(0, 1))
        if self.rotate > 0:
            theta = (torch.rand([N], device=dev) * 2 - 1) * np.pi * self.rotate_max
            theta = torch.where(torch.rand([N], device=dev) < p_rot, theta, torch.zeros_like(theta))
            if dbg is not None:
                theta = torch.full_like(theta, (dbg * 2 - 1) * np.pi * self.rotate_max)
            G_inv = G_inv @ rotate2d(theta)
            geom = True

        if self.aniso > 0:
            s = torch.exp2(torch.randn([N], device=dev) * self.aniso_std)
            s = torch.where(self._chance(self.aniso, [N], dev), s, torch.ones_like(s))
            if dbg is not None:
                s = torch.full_like(s, torch.exp2(torch.erfinv(dbg * 2 - 1) * self.aniso_std))
            G_inv = G_inv @ scale2d(1 / s, s)
            geom = True

        if self.rotate > 0:
            theta = (torch.rand([N], device=dev) * 2 - 1) * np.pi * self.rotate_max
            theta = torch.where(torch.rand([N], device=dev) < p_rot, theta, torch.zeros_like(theta))
            if dbg is not None:
                theta = torch.zeros_like(theta)
            G_inv = G_inv @ rotate2d(theta)
            geom = True

        if self.xfrac > 0:
            t = torch.randn([N, 2], device=dev) * self.xfrac_std
            t = torch.where(self._chance(self.xfrac, [N, 1], dev), t, torch.zeros_like(t))
            if dbg is not None:
                t = torch.full_like(t, torch.erfinv(dbg * 2 - 1) * self.xfrac_std)
            G_inv = G_inv @ translate2d(-t[:, 0] * W, -t[:, 1] * H)
            geom = True

        if geom:
            if max(self.scale, self.rotate, self.aniso, self.xfrac) > 0:
                images = self._resample(images, G_inv.expand(N, 3, 3))
            else: # only flips, quarter turns and integer moves: copy pixels, no resampling blur
                images = self._blit(images, G_inv.expand(N, 3, 3))

        # Colour matrix acting on homogeneous (R, G, B, 1).
        I_4 = torch.eye(4, device=dev)
        M = I_4
        color = False
        luma = misc.constant(np.asarray([1, 1, 1, 0]) / np.sqrt(3), device=dev)
        luma_outer = torch.outer(luma, luma)

        if self.brightness > 0:
            b = torch.randn([N], device=dev) * self.brightness_std
            b = torch.where(self._chance(self.brightness, [N], dev), b, torch.zeros_like(b))
            if dbg is not None:
                b = torch.full_like(b, torch.erfinv(dbg * 2 - 1) * self.brightness_std)
            M = translate3d(b, b, b) @ M
            color = True

        if self.contrast > 0:
            c = torch.exp2(torch.randn([N], device=dev) * self.contrast_std)
            c = torch.where(self._chance(self.contrast, [N], dev), c, torch.ones_like(c))
            if dbg is not None:
                c = torch.full_like(c, torch.exp2(torch.erfinv(dbg * 2 - 1) * self.contrast_std))
            M = scale3d(c, c, c) @ M
            color = True

        if self.lumaflip > 0:
            i = torch.floor(torch.rand([N, 1, 1], device=dev) * 2)
            i = torch.where(self._chance(self.lumaflip, [N, 1, 1], dev), i, torch.zeros_like(i))
            if dbg is not None:
                i = torch.full_like(i, torch.floor(dbg * 2))
            M = (I_4 - 2 * luma_outer * i) @ M # Householder reflection across the plane normal to luma
            color = True

        if self.hue > 0 and C > 1:
            theta = (torch.rand([N], device=dev) * 2 - 1) * np.pi * self.hue_max
            theta = torch.where(self._chance(self.hue, [N], dev), theta, torch.zeros_like(theta))
            if dbg is not None:
                theta = torch.full_like(theta, (dbg * 2 - 1) * np.pi * self.hue_max)
            M = rotate3d(luma.expand(N, 4), theta) @ M
            color = True

        if self.saturation > 0 and C > 1:
            s = torch.exp2(torch.randn([N, 1, 1], device=dev) * self.saturation_std)
            s = torch.where(self._chance(self.saturation, [N, 1, 1], dev), s, torch.ones_like(s))
            if dbg is not None:
                s = torch.full_like(s, torch.exp2(torch.erfinv(dbg * 2 - 1) * self.saturation_std))
            M = (luma_outer + (I_4 - luma_outer) * s) @ M
            color = True

        if color:
            M = M.expand(N, 4, 4)
            flat = images.reshape(N, C, H * W)
            if C == 3:
                flat = M[:, :3, :3] @ flat + M[:, :3, 3:]
            elif C == 1:
                # Grayscale: average the RGB rows, so the image acts as its own luma.
                M = M[:, :3, :].mean(dim=1, keepdim=True)
                flat = flat * M[:, :, :3].sum(dim=2, keepdim=True) + M[:, :, 3:]
            else:
                raise ValueError('Colour augmentation needs 1 or 3 channels')
            images = flat.reshape(N, C, H, W)

        if self.imgfilter > 0:
            images = self._filter_bands(images, dbg)

        if self.noise > 0:
            sigma = torch.randn([N, 1, 1, 1], device=dev).abs() * self.noise_std
            sigma = torch.where(self._chance(self.noise, [N, 1, 1, 1], dev), sigma, torch.zeros_like(sigma))
            if dbg is not None:
                sigma = torch.full_like(sigma, torch.erfinv(dbg) * self.noise_std)
            images = images + torch.randn([N, C, H, W], device=dev) * sigma

        if self.cutout > 0:
            size = torch.full([N, 2, 1, 1, 1], self.cutout_size, device=dev)
            size = torch.where(self._chance(self.cutout, [N, 1, 1, 1, 1], dev), size, torch.zeros_like(size))
            center = torch.rand([N, 2, 1, 1, 1], device=dev)
            if dbg is not None:
                size = torch.full_like(size, self.cutout_size)
                center = torch.full_like(center, dbg)
            coord_x = torch.arange(W, device=dev).reshape([1, 1, 1, -1])
            coord_y = torch.arange(H, device=dev).reshape([1, 1, -1, 1])
            outside_x = ((coord_x + 0.5) / W - center[:, 0]).abs() >= size[:, 0] / 2
            outside_y = ((coord_y + 0.5) / H - center[:, 1]).abs() >= size[:, 1] / 2
            images = images * torch.logical_or(outside_x, outside_y).to(images.dtype)

        return images

    def _blit(self, images, G_inv):
        """Apply an integer inverse transform G_inv [N, 3, 3] exactly: gather pixels, reflecting at the borders."""
        N, C, H, W = images.shape
        dev = images.device
        cx, cy = (W - 1) / 2, (H - 1) / 2
        oy, ox = torch.meshgrid(torch.arange(H, device=dev) - cy, torch.arange(W, device=dev) - cx, indexing='ij')
        G = G_inv.reshape(N, 3, 3, 1, 1)
        src_x = torch.round(G[:, 0, 0] * ox + G[:, 0, 1] * oy + G[:, 0, 2] + cx).to(torch.int64)
        src_y = torch.round(G[:, 1, 0] * ox + G[:, 1, 1] * oy + G[:, 1, 2] + cy).to(torch.int64)

        def reflect(i, n): # same convention as torch's 'reflect' padding (edge pixel not repeated)
            if n == 1:
                return torch.zeros_like(i)
            i = i.remainder(2 * (n - 1))
            return torch.where(i >= n, 2 * (n - 1) - i, i)

        index = (reflect(src_y, H) * W + reflect(src_x, W)).reshape(N, 1, H * W).expand(N, C, H * W)
        return images.reshape(N, C, H * W).gather(2, index).reshape(N, C, H, W)

    def _resample(self, images, G_inv):
        """Apply the inverse transform G_inv [N, 3, 3] with one band-limited resampling."""
        N, C, H, W = images.shape
        dev = images.device
        pad = self.Hz_geom.shape[0] // 4 # filter support, in pixels, at the original resolution

        # Reflect-pad just enough to cover every input position the output corners reach.
        corners = misc.constant([[-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]], device=dev) # [4, 3]
        corners = corners * misc.constant([W / 2 - 0.5, H / 2 - 0.5, 1], device=dev)
        reach = (G_inv @ corners.t())[:, :2, :] # [N, 2, 4]
        reach = reach.permute(1, 0, 2).flatten(1) # [2, N*4]
        margin = torch.cat([-reach, reach]).max(dim=1).values # [x0, y0, x1, y1]
        margin = margin + misc.constant([pad * 2 - W / 2 + 0.5, pad * 2 - H / 2 + 0.5] * 2, device=dev)
        margin = margin.max(misc.constant([0, 0] * 2, device=dev))
        margin = margin.min(misc.constant([W - 1, H - 1] * 2, device=dev)) # reflection covers at most one image
        mx0, my0, mx1, my1 = margin.ceil().to(torch.int32).tolist()
        images = torch.nn.functional.pad(images, [mx0, mx1, my0, my1], mode='reflect')
        G_inv = translate2d((mx0 - mx1) / 2, (my0 - my1) / 2, device=dev) @ G_inv

        # 2x upsampling; the half-pixel conjugation matches the even-length filter's grid.
        images = upfirdn2d.upsample2d(images, self.Hz_geom, up=2)
        G_inv = scale2d(2, 2, device=dev) @ G_inv @ scale2d(1 / 2, 1 / 2, device=dev)
        G_inv = translate2d(-0.5, -0.5, device=dev) @ G_inv @ translate2d(0.5, 0.5, device=dev)

        # Sample the output (2x, plus filter margin) through normalised coordinates.
        out_shape = [N, C, (H + pad * 2) * 2, (W + pad * 2) * 2]
        to_norm_in = scale2d(2 / images.shape[3], 2 / images.shape[2], device=dev)
        from_norm_out = scale2d(out_shape[3] / 2, out_shape[2] / 2, device=dev)
        theta = (to_norm_in @ G_inv @ from_norm_out)[:, :2, :]
        grid = torch.nn.functional.affine_grid(theta=theta, size=out_shape, align_corners=False)
        images = grid_sample_gradfix.grid_sample(images, grid)

        # Back to the original resolution, cropping the filter margin.
        return upfirdn2d.downsample2d(images, self.Hz_geom, down=2, padding=-pad * 2, flip_filter=True)

    def _filter_bands(self, images, dbg):
        """Amplify or attenuate frequency bands by random gains, keeping the expected power."""
        N, C, H, W = images.shape
        dev = images.device
        num_bands = self.Hz_fbank.shape[0]
        assert len(self.imgfilter_bands) == num_bands
        expected_power = misc.constant(np.array([10] + [1] * (num_bands - 1)) / (9 + num_bands), device=dev) # natural images: most power in the lowest band

        gains = torch.ones([N, num_bands], device=dev)
        for i, band_multiplier in enumerate(self.imgfilter_bands):
            t_i = torch.exp2(torch.randn([N], device=dev) * self.imgfilter_std)
            t_i = torch.where(self._chance(self.imgfilter * band_multiplier, [N], dev), t_i, torch.ones_like(t_i))
            if dbg is not None:
                t_i = torch.full_like(t_i, torch.exp2(torch.erfinv(dbg * 2 - 1) * self.imgfilter_std)) if band_multiplier > 0 else torch.ones_like(t_i)
            t = torch.ones([N, num_bands], device=dev)
            t[:, i] = t_i
            t = t / (expected_power * t.square()).sum(dim=-1, keepdim=True).sqrt()
            gains = gains * t

        taps = gains @ self.Hz_fbank # [N, taps]: one symmetric separable filter per image
        taps = taps.unsqueeze(1).repeat([1, C, 1]).reshape(N * C, 1, -1)
        half = self.Hz_fbank.shape[1] // 2
        x = images.reshape(1, N * C, H, W)
        mode = 'reflect' if half < min(H, W) else 'replicate' # reflection needs the image larger than the filter
        x = torch.nn.functional.pad(x, [half, half, half, half], mode=mode)
        x = conv2d_gradfix.conv2d(x, taps.unsqueeze(2), groups=N * C)
        x = conv2d_gradfix.conv2d(x, taps.unsqueeze(3), groups=N * C)
        return x.reshape(N, C, H, W)

#----------------------------------------------------------------------------
