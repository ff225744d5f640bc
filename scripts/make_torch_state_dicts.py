#!/usr/bin/env python3
"""PyTorch weight-normalized state dicts as safetensors files, for test/io.test.ts (which needs no torch).

Run with a Python that has torch (Debian's python3-torch 1.13 here):
    /usr/bin/python3 scripts/make_torch_state_dicts.py
Writes test/fixtures/torch_state_dicts/*.safetensors.

Three small models, each saved under both of torch's naming schemes:
  <model>.weight_norm.safetensors      torch.nn.utils.weight_norm: `<layer>.weight_g`, `<layer>.weight_v`
  <model>.parametrizations.safetensors torch.nn.utils.parametrizations.weight_norm (torch >= 2.1):
                                       `<layer>.parametrizations.weight.original0` (g), `...original1` (v)
  <model>.io.safetensors               `input`, torch's `output` on it (and `weight`, the effective weight, for
                                       the ConvTranspose1d)
Models: mlp (Linear 8->16, ReLU, Linear 16->4), conv (Conv2d 2->4 k3 p1, ReLU, MaxPool2d 2, Flatten, Linear 36->5),
convtranspose1d (a single ConvTranspose1d 3->4 k3 s2: weight [in, out, k], weight_norm dim=0 = one norm per INPUT
channel).

torch 1.13 has no torch.nn.utils.parametrizations.weight_norm (it arrived in 2.1). The second scheme is therefore made
by torch 1.13's own torch.nn.utils.parametrize.register_parametrization with a parametrization module written here
that does what torch 2.x's does (forward(g, v) = torch._weight_norm(v, g, dim); right_inverse(w) returns (g, v),
which register_parametrization stores as original0 and original1). The script checks that this model's outputs
equal the weight_norm model's.

g is torch's keepdim shape ([out, 1] for a Linear, [out, 1, 1, 1] for a Conv2d, [in, 1, 1] for the
ConvTranspose1d). g is set away from ‖v‖ (torch initializes g = ‖v‖, which would make w = v and hide a wrong norm).

The safetensors format is written here with struct + json (the safetensors package is not a dependency): 8-byte
little-endian header length, the JSON header (padded with spaces to a multiple of 8), then the raw float32 data.
"""
import json
import os
import struct

import torch
from torch import nn
from torch.nn.utils import parametrize, weight_norm

SEED = 20160225
WEIGHTED_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose1d)
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'torch_state_dicts')


def write_safetensors(path, tensors, metadata):
    header = {}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        data = t.detach().contiguous().to(torch.float32).numpy().astype('<f4').tobytes()
        header[name] = {'dtype': 'F32', 'shape': list(t.shape), 'data_offsets': [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header['__metadata__'] = metadata
    text = json.dumps(header, separators=(',', ':')).encode('utf-8')
    text += b' ' * (-len(text) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


class WeightNormParametrization(nn.Module):
    """What torch >= 2.1's parametrizations.weight_norm registers: original0 = g, original1 = v."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, weight_g, weight_v):
        return torch._weight_norm(weight_v, weight_g, self.dim)

    def right_inverse(self, weight):
        return torch.norm_except_dim(weight, 2, self.dim), weight


def parametrized_weight_norm(module, dim=0):
    parametrize.register_parametrization(module, 'weight', WeightNormParametrization(dim), unsafe=True)
    return module


def spread_gains(model):
    """g away from ‖v‖, biases away from 0."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('weight_g'):
                p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
            elif name.endswith('bias'):
                p.copy_(torch.empty_like(p).uniform_(-0.5, 0.5))


def with_parametrizations(model, build_plain, dim=0):
    """The same model under the parametrizations scheme, with the same g, v and biases."""
    twin = build_plain()
    state = model.state_dict()
    with torch.no_grad():
        layers = [(name, m) for name, m in twin.named_modules() if isinstance(m, WEIGHTED_LAYERS)]
        for name, module in layers:
            prefix = f'{name}.' if name else ''
            parametrized_weight_norm(module, dim)
            module.parametrizations.weight.original0.copy_(state[prefix + 'weight_g'])
            module.parametrizations.weight.original1.copy_(state[prefix + 'weight_v'])
            module.bias.copy_(state[prefix + 'bias'])
    return twin


def export(name, build_plain, input_shape, dim=0, extra=None):
    model = build_plain()
    for module in model.modules() if isinstance(model, nn.Sequential) else [model]:
        if isinstance(module, WEIGHTED_LAYERS):
            weight_norm(module, dim=dim)
    spread_gains(model)
    x = torch.randn(*input_shape)
    with torch.no_grad():
        y = model(x)
        twin = with_parametrizations(model, build_plain, dim)
        y_twin = twin(x)
    assert torch.equal(y, y_twin), f'{name}: the two schemes disagree'
    common = {'generator': 'scripts/make_torch_state_dicts.py', 'torch': torch.__version__, 'model': name}
    schemes = {
        'weight_norm': (model.state_dict(), 'torch.nn.utils.weight_norm'),
        'parametrizations': (twin.state_dict(), 'torch.nn.utils.parametrizations.weight_norm naming, made with '
                             'parametrize.register_parametrization (torch 1.13 lacks the function)'),
    }
    for scheme, (state, how) in schemes.items():
        write_safetensors(os.path.join(OUT_DIR, f'{name}.{scheme}.safetensors'), state,
                          {**common, 'scheme': how, 'weight_norm_dim': str(dim)})
    io = {'input': x, 'output': y}
    if extra:
        io.update(extra(model))
    write_safetensors(os.path.join(OUT_DIR, f'{name}.io.safetensors'), io, common)
    return model


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    export('mlp', lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), [5, 8])
    export('conv', lambda: nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                         nn.Linear(36, 5)), [3, 2, 6, 6])
    # weight [in=3, out=4, k=3]; dim 0 keeps one norm per input channel, as torch defines it.
    export('convtranspose1d', lambda: nn.ConvTranspose1d(3, 4, 3, stride=2), [2, 3, 5],
           extra=lambda m: {'weight': m.weight.detach().clone()})
    total = 0
    for file in sorted(os.listdir(OUT_DIR)):
        size = os.path.getsize(os.path.join(OUT_DIR, file))
        total += size
        print(f'{file}: {size} bytes')
    print(f'total {total} bytes, torch {torch.__version__}')


if __name__ == '__main__':
    main()
