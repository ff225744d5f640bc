#!/usr/bin/env python3
"""A HiFi-GAN generator in PyTorch with random weights, for test/hifigan.test.ts (which needs no torch).

Run with a Python that has torch (Debian's python3-torch 1.13 here):
    /usr/bin/python3 scripts/make_hifigan_fixtures.py
Writes test/fixtures/hifigan/:
  generator.weight_norm.safetensors       the state dict of HiFi-GAN V1's generator at width 32 (upsample_initial_channel
                                          32 instead of 512, so the files stay small) with torch.nn.utils.weight_norm
                                          on every conv: `conv_pre.weight_g`, `ups.0.weight_v`,
                                          `resblocks.3.convs1.2.bias`, ... (float32)
  generator.parametrizations.safetensors  the same tensors under newer PyTorch's names
                                          (torch.nn.utils.parametrizations.weight_norm, torch >= 2.1):
                                          `<conv>.parametrizations.weight.original0` = g, `...original1` = v
  generator.io.safetensors                `mel` [1, 80, 32] (float32), and torch's float64 outputs [1, 1, 8192] on it:
                                          `output` with weight norm, `output_removed` after
                                          torch.nn.utils.remove_weight_norm (float64)
The metadata of generator.io.safetensors records `float32_error`: max |y32 − y64| of torch itself running the same
float32 weights in float32 against float64, the scale the test's tolerance is derived from.

The network is HIFIGAN_V1 / hifigan_generator in weightnorm-cli/peer_torch.py (one definition, shared with the
vocoder benchmark). The float64 outputs are computed from exactly the float32 values written (weights and mel are
rounded to float32 first), so they differ from a float32 computation by rounding alone.

Weights: v ~ N(0, 1); g set per layer so that each layer keeps its input's scale (a conv's output variance is
g² · E[x²]; a transposed conv with one norm per input channel, as torch's dim=0 gives it, adds stride · out / in),
times U(0.75, 1.25) so g is nowhere ‖v‖ (torch initializes g = ‖v‖, which would make w = v and hide a wrong norm);
biases U(-0.1, 0.1); the residual branches' second convs get half gain (nine residual adds per stage would
otherwise grow x), and conv_post's g and bias are scaled so that the pre-tanh waveform has standard deviation 0.3
on this mel (tanh not saturated: an error before it is not hidden). The output is deterministic:
rerunning it rewrites the same bytes.
"""
import json
import math
import os
import struct
import sys

import torch
from torch import nn
from torch.nn.utils import remove_weight_norm, weight_norm

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
sys.path.insert(0, os.path.join(ROOT, 'weightnorm-cli'))
from peer_torch import HIFIGAN_V1, hifigan_generator  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_torch_state_dicts import parametrized_weight_norm  # noqa: E402

SEED = 20160225
CHANNELS = 32
FRAMES = 32
MELS = 80
OUT_DIR = os.path.join(ROOT, 'test', 'fixtures', 'hifigan')
DTYPES = {torch.float32: ('F32', '<f4'), torch.float64: ('F64', '<f8')}


def write_safetensors(path, tensors, metadata):
    """safetensors with struct + json (the safetensors package is not a dependency): 8-byte little-endian header
    length, the JSON header padded with spaces to a multiple of 8, then the raw little-endian data."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        dtype, layout = DTYPES[t.dtype]
        data = t.detach().contiguous().numpy().astype(layout).tobytes()
        header[name] = {'dtype': dtype, 'shape': list(t.shape), 'data_offsets': [offset, offset + len(data)]}
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


def scale_preserving_gains(model, mel):
    """g per layer so that activations stay O(1) through the chain (see the module docstring)."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if not hasattr(module, 'weight_g'):
                continue
            g = module.weight_g
            if isinstance(module, nn.ConvTranspose1d):
                gain = math.sqrt(2 * module.stride[0] * module.out_channels / module.in_channels)
            elif '.convs2.' in name:
                gain = 0.5  # the residual branch's last conv: each of the 9 residual adds per stage grows x by little
            else:
                gain = math.sqrt(2)
            g.copy_(gain * torch.empty_like(g).uniform_(0.75, 1.25))
            module.weight_v.normal_(0, 1)
            module.bias.uniform_(-0.1, 0.1)
        # conv_post: pre-tanh standard deviation 0.3 on this mel (calibrated on the network's own output).
        post = model.conv_post
        pre_tanh = []
        hook = post.register_forward_hook(lambda module, inputs, output: pre_tanh.append(output))
        model(mel)
        hook.remove()
        factor = 0.3 / pre_tanh[0].std().item()
        post.weight_g.mul_(factor)
        post.bias.mul_(factor)


def parametrizations_naming(state):
    """torch >= 2.1's parametrizations.weight_norm names for a weight_norm state dict (same tensors, same shapes)."""
    renamed = {}
    for name, t in state.items():
        if name.endswith('.weight_g'):
            name = name[:-len('weight_g')] + 'parametrizations.weight.original0'
        elif name.endswith('.weight_v'):
            name = name[:-len('weight_v')] + 'parametrizations.weight.original1'
        renamed[name] = t
    return renamed


def check_parametrizations_naming(renamed, mel, expected):
    """The renamed state dict loads (strictly) into a generator parametrized as torch >= 2.1 does, same output."""
    twin = hifigan_generator(CHANNELS, parametrized_weight_norm).double()
    twin.load_state_dict({name: t.double() for name, t in renamed.items()})
    with torch.no_grad():
        assert torch.equal(twin.eval()(mel.double()), expected), 'the parametrizations naming gives another output'


def float64_twin(state):
    """A weight-normalized float64 generator holding exactly the float32 values of `state`."""
    model = hifigan_generator(CHANNELS, weight_norm).double()
    model.load_state_dict({name: t.double() for name, t in state.items()})
    return model.eval()


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    model = hifigan_generator(CHANNELS, weight_norm)
    mel = torch.randn(1, MELS, FRAMES)
    scale_preserving_gains(model, mel)
    state = {name: t.detach().float().clone() for name, t in model.state_dict().items()}

    with torch.no_grad():
        y32 = model.eval()(mel)
        twin = float64_twin(state)
        y64 = twin(mel.double())
        for module in twin.modules():
            if hasattr(module, 'weight_g'):
                remove_weight_norm(module)
        y64_removed = twin(mel.double())
    check_parametrizations_naming(parametrizations_naming(state), mel, y64)
    float32_error = (y32.double() - y64).abs().max().item()
    stats = {'output_std': y64.std().item(), 'output_max_abs': y64.abs().max().item(), 'float32_error': float32_error,
             'removed_vs_weight_norm': (y64_removed - y64).abs().max().item(),
             'saturated_fraction': (y64.abs() > 0.9).double().mean().item()}
    print(json.dumps(stats, indent=1))
    assert stats['output_std'] > 0.05 and stats['saturated_fraction'] < 0.01, 'the waveform should be neither ~0 nor saturated'

    common = {'generator': 'scripts/make_hifigan_fixtures.py', 'torch': torch.__version__,
              'config': json.dumps({**HIFIGAN_V1, 'upsample_initial_channel': CHANNELS})}
    write_safetensors(os.path.join(OUT_DIR, 'generator.weight_norm.safetensors'), state,
                      {**common, 'scheme': 'torch.nn.utils.weight_norm (dim=0)'})
    write_safetensors(os.path.join(OUT_DIR, 'generator.parametrizations.safetensors'), parametrizations_naming(state),
                      {**common, 'scheme': 'torch.nn.utils.parametrizations.weight_norm naming (dim=0), written by '
                                           'renaming weight_g/weight_v (torch 1.13 lacks the function)'})
    write_safetensors(os.path.join(OUT_DIR, 'generator.io.safetensors'),
                      {'mel': mel, 'output': y64, 'output_removed': y64_removed},
                      {**common, 'float32_error': repr(float32_error)})
    total = 0
    for file in sorted(os.listdir(OUT_DIR)):
        size = os.path.getsize(os.path.join(OUT_DIR, file))
        total += size
        print(f'{file}: {size} bytes')
    print(f'total {total} bytes, torch {torch.__version__}')


if __name__ == '__main__':
    main()
