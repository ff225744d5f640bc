#!/usr/bin/env python3
"""PyTorch float64 expectations for the convolution family in the gradient-check harness (test/gradcheck/).

Run with a Python that has torch (Debian's python3-torch 1.13 here):  /usr/bin/python3 scripts/make_gradcheck_conv_fixtures.py
Writes test/fixtures/gradcheck_conv_torch.json; test/gradcheck/registry-conv.ts says how our library runs each case.

Cases: conv1d, conv2d, convTranspose1d, convTranspose2d with strides, paddings ('same' with an even kernel too),
dilations, groups (depthwise included) and output paddings (one allowed only by the dilation), kernel == input and
stride > kernel; the weight-normalized convolutions (scale in the GEMM epilogue); pad in every mode (and a crop);
nearest upsampling; and the layers Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d (plain, weight norm over dims
0, 1, 2 and None, folded by removeWeightNorm), the pad layers and Upsample, in training and evaluation mode, plus a
small HiFi-GAN-like Sequential. Same format and helpers as scripts/make_gradcheck_fixtures.py.
"""

import os

import torch
import torch.nn.functional as F

import make_gradcheck_fixtures as core
from fixture_file import write_cases
from make_gradcheck_fixtures import DTYPE, norm_of, op_case, random32, weight_norm_torch

SEED = 20160226
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'gradcheck_conv_torch.json')


def listed(value, dims):
    return list(value) if isinstance(value, (list, tuple)) else [value] * dims


# ---------------------------------------------------------------------------------------------------------------
# Functional ops.

def conv_op_cases():
    cases = []

    def direct(name, op, x_shape, w_shape, config, bias=True):
        dims = len(x_shape) - 2
        torch_fn = F.conv1d if dims == 1 else F.conv2d
        inputs = {'x': random32(x_shape), 'weight': random32(w_shape)}
        if bias:
            inputs['bias'] = random32([w_shape[0]])
        kwargs = {'stride': config.get('stride', 1), 'padding': config.get('padding', 0),
                  'dilation': config.get('dilation', 1), 'groups': config.get('groups', 1)}
        cases.append(op_case(name, op, config, inputs, list(inputs),
                             lambda t: (torch_fn(t['x'], t['weight'], t.get('bias'), **kwargs), {})))

    direct('conv1d k3 padding 1', 'conv1d', [2, 3, 9], [4, 3, 3], {'padding': 1})
    direct('conv1d stride 2 dilation 3', 'conv1d', [2, 2, 17], [3, 2, 4], {'stride': 2, 'dilation': 3, 'padding': 2})
    direct('conv1d groups 2 without bias', 'conv1d', [2, 4, 8], [6, 2, 3], {'groups': 2, 'padding': 1}, bias=False)
    direct('conv1d depthwise (groups == channels)', 'conv1d', [2, 3, 10], [3, 1, 5], {'groups': 3, 'padding': 2})
    direct('conv1d kernel == input', 'conv1d', [2, 3, 5], [2, 3, 5], {})
    direct('conv1d stride 3 > kernel 2', 'conv1d', [2, 2, 10], [3, 2, 2], {'stride': 3})
    direct("conv1d padding 'same', even dilated kernel", 'conv1d', [2, 2, 7], [3, 2, 4], {'padding': 'same'})
    direct("conv1d padding 'same', dilation 2", 'conv1d', [1, 2, 9], [2, 2, 3], {'padding': 'same', 'dilation': 2})
    direct('conv2d per-axis stride, padding, dilation', 'conv2d', [2, 3, 6, 7], [4, 3, 3, 2],
           {'stride': [2, 1], 'padding': [1, 2], 'dilation': [1, 2]})
    direct('conv2d groups 3', 'conv2d', [2, 6, 4, 5], [3, 2, 2, 3], {'groups': 3, 'padding': [1, 0]})
    direct("conv2d padding 'valid', tuple kernel", 'conv2d', [2, 2, 5, 4], [3, 2, 3, 1], {'padding': 'valid'})

    def transposed(name, op, x_shape, w_shape, config, bias=True):
        dims = len(x_shape) - 2
        torch_fn = F.conv_transpose1d if dims == 1 else F.conv_transpose2d
        groups = config.get('groups', 1)
        inputs = {'x': random32(x_shape), 'weight': random32(w_shape)}
        if bias:
            inputs['bias'] = random32([w_shape[1] * groups])
        kwargs = {'stride': config.get('stride', 1), 'padding': config.get('padding', 0),
                  'output_padding': config.get('outputPadding', 0), 'dilation': config.get('dilation', 1),
                  'groups': groups}
        cases.append(op_case(name, op, config, inputs, list(inputs),
                             lambda t: (torch_fn(t['x'], t['weight'], t.get('bias'), **kwargs), {})))

    transposed('convTranspose1d HiFi-GAN-like (k8 s4 p2)', 'convTranspose1d', [2, 3, 5], [3, 2, 8],
               {'stride': 4, 'padding': 2})
    transposed('convTranspose1d output padding 1 < stride 2', 'convTranspose1d', [2, 2, 4], [2, 3, 3],
               {'stride': 2, 'padding': 1, 'outputPadding': 1})
    transposed('convTranspose1d output padding allowed by dilation', 'convTranspose1d', [1, 2, 5], [2, 2, 3],
               {'dilation': 2, 'outputPadding': 1})
    transposed('convTranspose1d groups 2 without bias', 'convTranspose1d', [2, 4, 5], [4, 3, 3],
               {'groups': 2, 'stride': 2}, bias=False)
    transposed('convTranspose1d stride 3 > kernel 2', 'convTranspose1d', [2, 2, 4], [2, 2, 2], {'stride': 3})
    transposed('convTranspose2d per-axis, output padding', 'convTranspose2d', [2, 3, 3, 4], [3, 2, 3, 2],
               {'stride': [2, 3], 'padding': [1, 0], 'outputPadding': [1, 2]})
    transposed('convTranspose2d depthwise', 'convTranspose2d', [1, 3, 3, 3], [3, 1, 3, 3],
               {'groups': 3, 'stride': 2, 'padding': 1})

    def weight_normalized(name, op, x_shape, v_shape, config):
        dims = len(x_shape) - 2
        torch_fn = F.conv1d if dims == 1 else F.conv2d
        inputs = {'x': random32(x_shape), 'v': random32(v_shape), 'g': random32([v_shape[0]], 0.5, 2.0),
                  'bias': random32([v_shape[0]])}
        kwargs = {'stride': config.get('stride', 1), 'padding': config.get('padding', 0),
                  'dilation': config.get('dilation', 1), 'groups': config.get('groups', 1)}

        def forward(t):
            w, _ = weight_norm_torch(t['v'], t['g'], 0)
            return torch_fn(t['x'], w, t['bias'], **kwargs), {}
        cases.append(op_case(name, op, config, inputs, list(inputs), forward))

    weight_normalized('weightNormConv1d dilation 2 padding 2', 'weightNormConv1d', [2, 3, 9], [4, 3, 3],
                      {'dilation': 2, 'padding': 2})
    weight_normalized('weightNormConv1d groups 2 stride 2', 'weightNormConv1d', [3, 4, 8], [4, 2, 3],
                      {'groups': 2, 'stride': 2})
    weight_normalized('weightNormConv2d per-axis', 'weightNormConv2d', [2, 2, 5, 6], [3, 2, 2, 3],
                      {'stride': [1, 2], 'padding': [1, 1]})
    # Output smaller than the weight: the op keeps the raw product t and writes dv in the GEMM epilogue (the cases
    # above take the other route, dv and dg from the weight-gradient product).
    weight_normalized('weightNormConv1d output smaller than the weight', 'weightNormConv1d', [1, 8, 4], [6, 8, 3],
                      {'padding': 1})
    weight_normalized('weightNormConv2d output smaller than the weight', 'weightNormConv2d', [1, 4, 3, 3], [5, 4, 3, 3],
                      {'padding': 1, 'stride': 2})

    def padded(name, x_shape, pads, mode, value=None):
        config = {'pads': pads, 'mode': mode}
        if value is not None:
            config['value'] = value
        inputs = {'x': random32(x_shape)}
        kwargs = {'mode': mode} if mode != 'constant' else {'mode': 'constant', 'value': value or 0.0}
        cases.append(op_case(name, 'pad', config, inputs, ['x'], lambda t: (F.pad(t['x'], pads, **kwargs), {})))

    padded('pad constant 1-D with value', [2, 3, 5], [2, 1], 'constant', 0.5)
    padded('pad constant 2-D crop (negative pads)', [2, 2, 4, 5], [-1, 2, 1, -2], 'constant')
    padded('pad reflect 1-D', [2, 3, 6], [3, 5], 'reflect')
    padded('pad reflect 2-D', [1, 2, 4, 5], [2, 1, 3, 2], 'reflect')
    padded('pad replicate 1-D', [2, 2, 4], [3, 2], 'replicate')
    padded('pad replicate 2-D', [1, 2, 3, 4], [2, 3, 1, 2], 'replicate')

    def upsampled(name, op, x_shape, config, torch_kwargs):
        inputs = {'x': random32(x_shape)}
        cases.append(op_case(name, op, config, inputs, ['x'],
                             lambda t: (F.interpolate(t['x'], mode='nearest', **torch_kwargs), {})))

    upsampled('upsample 1-D factor 3', 'upsample', [2, 3, 4], {'scaleFactor': 3}, {'scale_factor': 3})
    upsampled('upsample 2-D factors [2, 3]', 'upsample', [1, 2, 3, 2], {'scaleFactor': [2, 3]}, {'scale_factor': (2, 3)})
    upsampled('interpolate 2-D size', 'interpolate', [2, 1, 2, 3], {'size': [4, 9]}, {'size': (4, 9)})
    return cases


# ---------------------------------------------------------------------------------------------------------------
# Layers: the core script's layer_case with state and forward extended to the conv family.

CONV_KINDS = ('Conv1d', 'Conv2d', 'ConvTranspose1d', 'ConvTranspose2d')
PAD_KINDS = {'ReflectionPad1d': ('reflect', 1), 'ReflectionPad2d': ('reflect', 2), 'ReplicationPad1d': ('replicate', 1),
             'ReplicationPad2d': ('replicate', 2), 'ConstantPad1d': ('constant', 1), 'ConstantPad2d': ('constant', 2),
             'ZeroPad2d': ('constant', 2)}

core_layer_state = core.layer_state
core_layer_forward = core.layer_forward


def weight_shape(spec):
    kind = spec['type']
    dims = 1 if kind.endswith('1d') else 2
    kernel = listed(spec['kernel'], dims)
    groups = spec.get('groups', 1)
    if kind.startswith('ConvTranspose'):
        return [spec['in'], spec['out'] // groups] + kernel
    return [spec['out'], spec['in'] // groups] + kernel


def layer_state(spec):
    if spec['type'] not in CONV_KINDS:
        return core_layer_state(spec)
    shape = weight_shape(spec)
    state = {}
    wn = spec.get('weightNorm')
    if wn is not None:
        dim = wn['dim']
        state['v'] = random32(shape)
        if spec.get('zeroRow'):
            state['v'][0] = 0.0  # a zero channel: the eps floor keeps w and the gradients finite
        state['g'] = random32([1 if dim is None else shape[dim]], 0.5, 2.0)
    else:
        state['weight'] = random32(shape)
    if spec.get('bias', True):
        state['bias'] = random32([spec['out']])
    return state


def layer_forward(spec, t, x, training, prefix=''):
    kind = spec['type']
    p = lambda name: t[prefix + name]
    if kind in CONV_KINDS:
        wn = spec.get('weightNorm')
        if wn is not None and spec.get('removeWeightNorm'):
            weight = p('weight')
        elif wn is not None:
            weight = weight_norm_eps(p('v'), p('g'), wn['dim'])
        else:
            weight = p('weight')
        bias = p('bias') if spec.get('bias', True) else None
        kwargs = {'stride': spec.get('stride', 1), 'padding': spec.get('padding', 0), 'dilation': spec.get('dilation', 1),
                  'groups': spec.get('groups', 1)}
        if kind == 'Conv1d':
            return F.conv1d(x, weight, bias, **kwargs)
        if kind == 'Conv2d':
            return F.conv2d(x, weight, bias, **kwargs)
        kwargs['output_padding'] = spec.get('outputPadding', 0)
        fn = F.conv_transpose1d if kind == 'ConvTranspose1d' else F.conv_transpose2d
        return fn(x, weight, bias, **kwargs)
    if kind in PAD_KINDS:
        mode, axes = PAD_KINDS[kind]
        pads = listed(spec['padding'], 2 * axes)
        if mode == 'constant':
            return F.pad(x, pads, mode='constant', value=spec.get('value', 0.0))
        return F.pad(x, pads, mode=mode)
    if kind == 'Upsample':
        return F.interpolate(x, scale_factor=spec['scaleFactor'], mode='nearest')
    return core_layer_forward(spec, t, x, training, prefix)


def weight_norm_eps(v, g, dim, eps=1e-12):
    """torch's w = g v / ||v|| with our floor max(||v||, eps) (a zero channel: w = 0, finite gradients)."""
    axes = core.reduce_axes(v.dim(), dim)
    norm = torch.linalg.vector_norm(v, dim=axes, keepdim=True).clamp_min(eps)
    shape = [1] * v.dim()
    if dim is not None:
        shape[dim] = v.shape[dim]
    return g.reshape(shape) * v / norm


core.layer_state = layer_state
core.layer_forward = layer_forward

LAYERS = [
    ('nn.Conv1d', {'type': 'Conv1d', 'in': 3, 'out': 4, 'kernel': 3, 'padding': 1}, [2, 3, 8]),
    ('nn.Conv1d weightNorm dim 0 stride 2 dilation 2', {'type': 'Conv1d', 'in': 3, 'out': 4, 'kernel': 3, 'stride': 2,
                                                        'dilation': 2, 'padding': 2, 'weightNorm': {'dim': 0}}, [2, 3, 11]),
    ('nn.Conv1d weightNorm dim 0 zero channel', {'type': 'Conv1d', 'in': 2, 'out': 3, 'kernel': 3, 'padding': 1,
                                                 'weightNorm': {'dim': 0}, 'zeroRow': True}, [2, 2, 6]),
    ('nn.Conv1d weightNorm dim 0, output smaller than the weight', {'type': 'Conv1d', 'in': 8, 'out': 6, 'kernel': 3,
                                                                      'padding': 1, 'weightNorm': {'dim': 0}}, [1, 8, 3]),
    ('nn.Conv1d weightNorm dim 1 groups 2', {'type': 'Conv1d', 'in': 4, 'out': 4, 'kernel': 3, 'groups': 2,
                                             'weightNorm': {'dim': 1}}, [2, 4, 7]),
    ('nn.Conv1d wav2vec2-like (k8 padding 4 groups 4, weightNorm dim 2)',
     {'type': 'Conv1d', 'in': 8, 'out': 8, 'kernel': 8, 'padding': 4, 'groups': 4, 'weightNorm': {'dim': 2}}, [1, 8, 12]),
    ('nn.Conv1d weightNorm dim null, depthwise', {'type': 'Conv1d', 'in': 3, 'out': 3, 'kernel': 5, 'padding': 2,
                                                 'groups': 3, 'weightNorm': {'dim': None}}, [2, 3, 6]),
    ('nn.Conv1d weightNorm, removed', {'type': 'Conv1d', 'in': 2, 'out': 3, 'kernel': 3, 'weightNorm': {'dim': 0},
                                       'removeWeightNorm': True}, [2, 2, 6]),
    ('nn.Conv2d dilation, groups, tuple kernel, weightNorm dim 0',
     {'type': 'Conv2d', 'in': 4, 'out': 6, 'kernel': [3, 2], 'dilation': [2, 1], 'padding': [2, 1], 'groups': 2,
      'weightNorm': {'dim': 0}}, [2, 4, 5, 4]),
    ('nn.ConvTranspose1d', {'type': 'ConvTranspose1d', 'in': 3, 'out': 2, 'kernel': 4, 'stride': 2, 'padding': 1},
     [2, 3, 5]),
    ('nn.ConvTranspose1d weightNorm dim 0 (HiFi-GAN-like k8 s4 p2)',
     {'type': 'ConvTranspose1d', 'in': 4, 'out': 2, 'kernel': 8, 'stride': 4, 'padding': 2, 'weightNorm': {'dim': 0}},
     [2, 4, 4]),
    ('nn.ConvTranspose1d weightNorm dim 1 groups 2 output padding',
     {'type': 'ConvTranspose1d', 'in': 4, 'out': 6, 'kernel': 3, 'stride': 2, 'outputPadding': 1, 'groups': 2,
      'weightNorm': {'dim': 1}}, [2, 4, 4]),
    ('nn.ConvTranspose1d weightNorm dim null without bias',
     {'type': 'ConvTranspose1d', 'in': 2, 'out': 3, 'kernel': 3, 'dilation': 2, 'bias': False,
      'weightNorm': {'dim': None}}, [2, 2, 4]),
    ('nn.ConvTranspose1d weightNorm, removed', {'type': 'ConvTranspose1d', 'in': 3, 'out': 2, 'kernel': 4, 'stride': 2,
                                                'weightNorm': {'dim': 0}, 'removeWeightNorm': True}, [2, 3, 4]),
    ('nn.ConvTranspose2d weightNorm dim 0 output padding',
     {'type': 'ConvTranspose2d', 'in': 3, 'out': 2, 'kernel': [3, 2], 'stride': [2, 2], 'padding': [1, 0],
      'outputPadding': [1, 1], 'weightNorm': {'dim': 0}}, [2, 3, 3, 3]),
    ('nn.ReflectionPad1d', {'type': 'ReflectionPad1d', 'padding': [3, 1]}, [2, 3, 5]),
    ('nn.ReflectionPad2d', {'type': 'ReflectionPad2d', 'padding': 2}, [1, 2, 4, 3]),
    ('nn.ReplicationPad1d', {'type': 'ReplicationPad1d', 'padding': 2}, [2, 2, 4]),
    ('nn.ReplicationPad2d', {'type': 'ReplicationPad2d', 'padding': [1, 2, 2, 0]}, [1, 2, 3, 3]),
    ('nn.ConstantPad1d', {'type': 'ConstantPad1d', 'padding': [1, 2], 'value': -0.5}, [2, 2, 4]),
    ('nn.ConstantPad2d', {'type': 'ConstantPad2d', 'padding': [1, 0, 2, 1], 'value': 1.5}, [1, 2, 3, 3]),
    ('nn.ZeroPad2d', {'type': 'ZeroPad2d', 'padding': [2, 1, 0, 1]}, [1, 2, 3, 3]),
    ('nn.Upsample 1-D', {'type': 'Upsample', 'scaleFactor': 2}, [2, 3, 4]),
    ('nn.Upsample 2-D', {'type': 'Upsample', 'scaleFactor': [2, 3]}, [1, 2, 2, 3]),
    ('nn.Sequential HiFi-GAN-like upsampling block', {'type': 'Sequential', 'layers': [
        {'type': 'LeakyReLU', 'negativeSlope': 0.1},
        {'type': 'ConvTranspose1d', 'in': 4, 'out': 2, 'kernel': 4, 'stride': 2, 'padding': 1, 'weightNorm': {'dim': 0}},
        {'type': 'LeakyReLU', 'negativeSlope': 0.1},
        {'type': 'Conv1d', 'in': 2, 'out': 2, 'kernel': 3, 'dilation': 3, 'padding': 3, 'weightNorm': {'dim': 0}},
        {'type': 'ReflectionPad1d', 'padding': [1, 0]},
        {'type': 'Conv1d', 'in': 2, 'out': 1, 'kernel': 7, 'padding': 3, 'weightNorm': {'dim': 0}},
        {'type': 'Tanh'},
    ]}, [2, 4, 6]),
]


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    cases = conv_op_cases()
    for name, spec, x_shape in LAYERS:
        cases.extend(core.layer_case(name, spec, x_shape))
    names = [c['name'] for c in cases]
    assert len(names) == len(set(names)), 'case names must be unique'
    header = {
        'generator': 'scripts/make_gradcheck_conv_fixtures.py',
        'torch': torch.__version__,
        'seed': SEED,
        'note': 'inputs and cotangents are float32 values; outputs, extras and gradients are torch float64 results on '
                'those values; gradients are of L = sum(y * cotangent)',
    }
    write_cases(OUT, header, cases)
    print(f'wrote {os.path.relpath(OUT)}: {len(cases)} cases, {os.path.getsize(OUT)} bytes, torch {torch.__version__}')


if __name__ == '__main__':
    main()
