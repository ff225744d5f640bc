#!/usr/bin/env python3
"""Golden weight-norm fixtures from PyTorch, for test/fixtures.test.ts (which needs no torch).

Run with a Python that has torch (Debian's python3-torch 1.13 here):  /usr/bin/python3 scripts/make_fixtures.py
Writes test/fixtures/weightnorm_torch.json.

Which torch functions (checked against torch 1.13's schemas):
  aten::_weight_norm_interface(Tensor v, Tensor g, int dim=0) -> (Tensor w, Tensor norms)
  aten::_weight_norm_interface_backward(Tensor grad_w, Tensor saved_v, Tensor saved_g, Tensor saved_norms, int dim)
      -> (Tensor grad_v, Tensor grad_g)
  aten::_weight_norm(Tensor v, Tensor g, int dim=0) -> Tensor w
The fused interface only accepts the first or the last dim. A middle dim, and torch's dim=-1 (one norm over the
whole tensor: our dim null), go through torch._weight_norm's composite path (norm_except_dim), with the backward
from autograd and the norm from torch.linalg.vector_norm.

torch has no eps, so the inputs are random normals (no zero channel; the floor never applies). g has torch's
shape (size 1 on every axis but dim); the fixture stores it, norm and dg flattened to our 1-D layout.
"""

import os

import numpy as np
import torch

from fixture_file import write_cases

SEED = 20160225  # the paper's arXiv date; any fixed value keeps the fixtures reproducible
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'weightnorm_torch.json')

# (shape, our dim). Ours: negative counts from the end, None = whole tensor. Kept small: the JSON is committed.
CASES = [
    ([10], 0),
    ([10], None),
    ([4, 5], 0),
    ([4, 5], 1),
    ([6, 7], -1),
    ([1, 5], 0),
    ([3, 4, 5], 0),
    ([3, 4, 5], 2),
    ([3, 4, 5], 1),
    ([3, 4, 5], None),
    ([8, 3, 3, 3], 0),
    ([8, 3, 3, 3], 1),
    ([16, 33], 0),
    ([16, 33], 1),
    ([33, 16], None),
]


def float32_values(t):
    """Flattened float32 values as the shortest decimals that read back (via float64) as the same float32."""
    out = []
    for x in t.detach().contiguous().view(-1).numpy().astype(np.float32):
        if abs(x) >= 1e-4 or x == 0:
            text = np.format_float_positional(x, unique=True, trim='-')
        else:
            text = np.format_float_scientific(x, unique=True, trim='-')
        value = float(text)
        if np.float32(value) != x:  # double rounding: keep the exact value instead
            value = float(x)
        out.append(value)
    return out


def make_case(shape, dim):
    rank = len(shape)
    axis = None if dim is None else dim % rank
    v = torch.randn(*shape, dtype=torch.float32)
    g_shape = [1] * rank
    if axis is not None:
        g_shape[axis] = shape[axis]
    g = torch.randn(*g_shape, dtype=torch.float32) if axis is not None else torch.randn((), dtype=torch.float32)
    dw = torch.randn(*shape, dtype=torch.float32)
    fused = axis is not None and (axis == 0 or axis == rank - 1)
    if fused:
        w, norms = torch._weight_norm_interface(v, g, axis)
        w_composite = torch._weight_norm(v, g, axis)
        assert torch.allclose(w, w_composite, rtol=1e-6, atol=1e-7)
        dv, dg = torch.ops.aten._weight_norm_interface_backward(dw, v, g, norms, axis)
        op = 'aten::_weight_norm_interface + aten::_weight_norm_interface_backward'
        torch_dim = axis
    else:
        torch_dim = -1 if axis is None else axis
        vv = v.clone().requires_grad_(True)
        gg = g.clone().requires_grad_(True)
        w = torch._weight_norm(vv, gg, torch_dim)
        w.backward(dw)
        dv, dg = vv.grad, gg.grad
        if axis is None:
            norms = torch.linalg.vector_norm(v).reshape(1)
        else:
            reduce_axes = [a for a in range(rank) if a != axis]
            norms = torch.linalg.vector_norm(v, dim=reduce_axes)
        op = 'aten::_weight_norm (composite) + autograd; norm from torch.linalg.vector_norm'
    return {
        'name': f"[{', '.join(map(str, shape))}] dim {'null' if dim is None else dim}",
        'op': op,
        'shape': shape,
        'dim': dim,
        'torchDim': torch_dim,
        'v': float32_values(v),
        'g': float32_values(g),
        'dw': float32_values(dw),
        'w': float32_values(w),
        'norm': float32_values(norms),
        'dv': float32_values(dv),
        'dg': float32_values(dg),
    }


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    cases = [make_case(shape, dim) for shape, dim in CASES]
    header = {
        'generator': 'scripts/make_fixtures.py',
        'torch': torch.__version__,
        'seed': SEED,
        'note': 'float32 values; g, norm and dg flattened to 1-D; dim null = one norm over the whole tensor (torch dim -1)',
    }
    write_cases(OUT, header, cases)
    print(f'wrote {os.path.relpath(OUT)}: {len(cases)} cases, {os.path.getsize(OUT)} bytes, torch {torch.__version__}')


if __name__ == '__main__':
    main()
