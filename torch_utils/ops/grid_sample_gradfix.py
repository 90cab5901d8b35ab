"""grid_sample (bilinear, zero padding, align_corners=False) with a backward that skips unneeded gradients.

The backward calls `torch.ops.aten.grid_sampler_2d_backward` with an output mask, so e.g. an augmentation
grid built from constants costs no grid gradient; autograd differentiates that op again, so double
backward (R1 through the augmentation pipe) works.
"""

import torch

# ----------------------------------------------------------------------------

enabled = True  # False = plain torch.nn.functional.grid_sample.

_BILINEAR = 0   # interpolation_mode and padding_mode codes of aten::grid_sampler_2d
_ZEROS = 0


def grid_sample(input, grid):
    """torch.nn.functional.grid_sample(input, grid, mode='bilinear', padding_mode='zeros', align_corners=False)."""
    if not enabled:
        return torch.nn.functional.grid_sample(input, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    return _GridSample2d.apply(input, grid)

# ----------------------------------------------------------------------------


class _GridSample2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, grid):  # pylint: disable=arguments-differ
        if input.ndim != 4 or grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[0] != input.shape[0]:
            raise ValueError(f'grid_sample expects input [N, C, H, W] and grid [N, H_out, W_out, 2], '
                             f'got {list(input.shape)} and {list(grid.shape)}')
        output = torch.nn.functional.grid_sample(input, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
        ctx.save_for_backward(input, grid)
        return output

    @staticmethod
    def backward(ctx, grad_output):  # pylint: disable=arguments-differ
        input, grid = ctx.saved_tensors
        need_input, need_grid = ctx.needs_input_grad[:2]
        if not (need_input or need_grid):
            return None, None
        grad_input, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
            grad_output, input, grid, _BILINEAR, _ZEROS, False, [need_input, need_grid])
        return (grad_input if need_input else None), (grad_grid if need_grid else None)

# ----------------------------------------------------------------------------
