#!/usr/bin/env python3
"""PyTorch float64 expectations for the gradient-check harness (test/gradcheck/), which needs no torch.

Run with a Python that has torch (Debian's python3-torch 1.13 here):  /usr/bin/python3 scripts/make_gradcheck_fixtures.py
Writes test/fixtures/gradcheck_torch.json.

The cases are defined here; test/gradcheck/registry.ts says how to run each op (by its `config.op`) and layer (by its
spec's `type`) with our library, and test/gradcheck.test.ts fails when an op or layer that nn exports has no case here.

For each case: random float32 inputs (and, for a layer, its state dict under our names: v, g, weight, bias, gamma,
beta, runningMean, runningVar), a random float32 cotangent c of the output y, and, computed in float64 by torch from
exactly those float32 values: y, the gradient of L = sum(y * c) with respect to every differentiable input and
parameter, the op's other outputs (batch statistics, norms) and, for a layer in training mode, its buffers after the
forward. Each gradient also has a scale, max_j sum_i |c_i * dy_i/dx_j| (from the float64 Jacobian): the sum of
magnitudes behind it, against which the harness measures float32 error. Random ops (dropout, Gaussian noise) in
training mode store inputs and cotangent only: the harness checks them against the mask or noise it recovers from its
own output. The output is deterministic: rerunning it changes nothing unless a case changed.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

from fixture_file import write_cases

SEED = 20160225  # the paper's arXiv date; any fixed value keeps the fixtures reproducible
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'gradcheck_torch.json')
DTYPE = torch.float64


def float32_values(t):
    """Flattened float32 values as the shortest decimals that read back (via float64) as the same float32."""
    out = []
    for x in t.detach().contiguous().view(-1).numpy().astype(np.float32):
        value = float(np.format_float_scientific(x, unique=True, trim='-'))
        if np.float32(value) != x:  # double rounding: keep the exact value instead
            value = float(x)
        out.append(value)
    return out


def float64_values(t):
    """Flattened float64 results to 12 significant digits (5e-13 relative: far below any tolerance, and small)."""
    return [float(f'{x:.12g}') for x in t.detach().contiguous().view(-1).tolist()]


def random32(shape, low=None, high=None, mean=0.0, std=1.0):
    """Random float32 values (normal(mean, std), or uniform in [low, high)) as a float64 tensor: both sides of the
    comparison see exactly these values."""
    if low is None:
        t = mean + std * torch.randn(*shape, dtype=torch.float32)
    else:
        t = low + (high - low) * torch.rand(*shape, dtype=torch.float32)
    return t.to(DTYPE)


def entry(t):
    return {'shape': list(t.shape), 'data': float32_values(t)}


def result(t):
    return {'shape': list(t.shape), 'data': float64_values(t)}


def run(inputs, differentiable, forward):
    """forward(tensors) -> (y, extras). Returns y, extras, the gradients of sum(y * c) for a random c, and each
    gradient's scale (see gradient_scale)."""
    leaves = {k: v.clone().requires_grad_(k in differentiable) for k, v in inputs.items()}
    y, extras = forward(leaves)
    c = random32(list(y.shape))
    (y * c).sum().backward()
    grads = {k: leaves[k].grad for k in differentiable}
    for k, g in grads.items():
        assert g is not None, f'torch gave no gradient for {k}'
    scales = {k: gradient_scale(inputs, k, forward, c) for k in differentiable}
    return y, c, extras, grads, scales


def gradient_scale(inputs, name, forward, c):
    """max_j sum_i |c_i * dy_i/dx_j|: the largest sum of magnitudes behind one element of the gradient of x = inputs[name].

    The gradient is J^T c, a sum over the outputs; where its terms cancel (a gain's gradient summed over a whole
    matrix), float32 error is relative to this sum of magnitudes, not to the small result."""
    def y_of(z):
        return forward({**inputs, name: z})[0].reshape(-1)
    jacobian = torch.autograd.functional.jacobian(y_of, inputs[name])  # [y.numel(), *x.shape]
    terms = (c.reshape(-1, *([1] * inputs[name].dim())) * jacobian).abs()
    return float(f'{terms.sum(0).max().item():.6g}')


def case_record(name, kind, config, inputs, differentiable, y=None, c=None, extras=None, grads=None, scales=None,
                random=False):
    record = {'name': name, 'kind': kind, 'config': config, 'random': random,
              'inputs': {k: entry(v) for k, v in inputs.items()}, 'differentiable': differentiable}
    if c is not None:
        record['cotangent'] = entry(c)
    if y is not None:
        record['output'] = result(y)
        record['extras'] = {k: result(v) for k, v in (extras or {}).items()}
        record['grads'] = {k: float64_values(v) for k, v in grads.items()}
        record['gradScales'] = scales
    return record


def op_case(name, op, config, inputs, differentiable, forward):
    y, c, extras, grads, scales = run(inputs, differentiable, forward)
    return case_record(name, 'op', {'op': op, **config}, inputs, differentiable, y, c, extras, grads, scales)


def random_op_case(name, op, config, inputs):
    """Inputs and a cotangent only: the expectation follows from the mask or noise the op drew."""
    x = inputs['x']
    return case_record(name, 'op', {'op': op, **config}, inputs, ['x'], c=random32(list(x.shape)), random=True)


# ---------------------------------------------------------------------------------------------------------------
# Weight norm in torch terms: w = g * v / ||v||, the norm over every axis but `dim` (None: over all of v).

def reduce_axes(rank, dim):
    return list(range(rank)) if dim is None else [a for a in range(rank) if a != dim]


def weight_norm_torch(v, g, dim):
    axes = reduce_axes(v.dim(), dim)
    norm = torch.linalg.vector_norm(v, dim=axes, keepdim=True)
    shape = [1] * v.dim()
    if dim is not None:
        shape[dim] = v.shape[dim]
    return g.reshape(shape) * v / norm, norm.reshape(-1)


def norm_of(v, dim):
    return torch.linalg.vector_norm(v, dim=reduce_axes(v.dim(), dim)).reshape(-1)


# ---------------------------------------------------------------------------------------------------------------
# Functional ops (nn.functional), one or more cases each.

def op_cases():
    cases = []
    a, b = random32([3, 5]), random32([3, 5])
    cases.append(op_case('add', 'add', {}, {'a': a, 'b': b}, ['a', 'b'], lambda t: (t['a'] + t['b'], {})))
    cases.append(op_case('mul', 'mul', {}, {'a': a, 'b': b}, ['a', 'b'], lambda t: (t['a'] * t['b'], {})))
    # One tensor as both operands: its two gradients must be added (autograd's accumulation).
    cases.append(op_case('mul of a tensor by itself', 'mul', {'sameOperand': True}, {'a': a}, ['a'],
                         lambda t: (t['a'] * t['a'], {})))
    x = random32([2, 3, 4])
    cases.append(op_case('scale', 'scale', {'alpha': -1.75}, {'x': x}, ['x'], lambda t: (-1.75 * t['x'], {})))
    cases.append(op_case('sum', 'sum', {}, {'x': x}, ['x'], lambda t: (t['x'].sum().reshape(1), {})))
    cases.append(op_case('mean', 'mean', {}, {'x': x}, ['x'], lambda t: (t['x'].mean().reshape(1), {})))
    cases.append(op_case('reshape [2, 3, 4] -> [4, -1]', 'reshape', {'shape': [4, -1]}, {'x': x}, ['x'],
                         lambda t: (t['x'].reshape(4, -1), {})))
    x4 = random32([2, 3, 2, 2])
    cases.append(op_case('flatten', 'flatten', {}, {'x': x4}, ['x'], lambda t: (t['x'].flatten(1), {})))
    cases.append(op_case('matmul [4, 6] [6, 3]', 'matmul', {}, {'a': random32([4, 6]), 'b': random32([6, 3])},
                         ['a', 'b'], lambda t: (t['a'] @ t['b'], {})))

    x, w, bias = random32([4, 6]), random32([5, 6]), random32([5])
    cases.append(op_case('linear with bias', 'linear', {'bias': True}, {'x': x, 'weight': w, 'bias': bias},
                         ['x', 'weight', 'bias'], lambda t: (F.linear(t['x'], t['weight'], t['bias']), {})))
    cases.append(op_case('linear without bias', 'linear', {'bias': False}, {'x': x, 'weight': w},
                         ['x', 'weight'], lambda t: (F.linear(t['x'], t['weight']), {})))

    v, g = random32([5, 6]), random32([5], 0.5, 2.0)
    for with_bias in (True, False):
        inputs = {'x': x, 'v': v, 'g': g, **({'bias': bias} if with_bias else {})}

        def forward(t, with_bias=with_bias):
            w_, _ = weight_norm_torch(t['v'], t['g'], 0)
            return F.linear(t['x'], w_, t['bias'] if with_bias else None), {}
        cases.append(op_case(f"weightNormLinear {'with' if with_bias else 'without'} bias", 'weightNormLinear',
                             {'bias': with_bias}, inputs, list(inputs), forward))

    for shape, dim, given_norm in [([5, 6], 0, False), ([5, 6], 1, False), ([4, 3, 2, 2], 0, False),
                                   ([4, 3, 2, 2], 2, False), ([4, 3, 2, 2], -1, False), ([5, 6], None, False),
                                   ([4, 3, 2, 2], 0, True)]:
        v = random32(shape)
        g = random32([1 if dim is None else shape[dim]], 0.5, 2.0)
        name = f"weightNorm {shape} dim {'null' if dim is None else dim}{', norm given' if given_norm else ''}"

        def forward(t, dim=dim):
            w_, norm = weight_norm_torch(t['v'], t['g'], None if dim is None else dim % t['v'].dim())
            return w_, {'norm': norm}
        cases.append(op_case(name, 'weightNorm', {'dim': dim, 'givenNorm': given_norm}, {'v': v, 'g': g}, ['v', 'g'],
                             forward))

    for stride, padding, with_bias in [(1, 1, True), (2, 0, True), (2, 1, False)]:
        x, w = random32([2, 3, 5, 5]), random32([4, 3, 3, 3])
        inputs = {'x': x, 'weight': w, **({'bias': random32([4])} if with_bias else {})}

        def forward(t, stride=stride, padding=padding, with_bias=with_bias):
            return F.conv2d(t['x'], t['weight'], t['bias'] if with_bias else None, stride=stride, padding=padding), {}
        cases.append(op_case(f"conv2d stride {stride} padding {padding}{'' if with_bias else ' without bias'}",
                             'conv2d', {'stride': stride, 'padding': padding, 'bias': with_bias}, inputs, list(inputs),
                             forward))

    for kernel, stride, shape in [(2, 2, [2, 3, 4, 4]), (3, 2, [2, 2, 5, 5]), (2, 1, [1, 2, 3, 4])]:
        cases.append(op_case(f'maxPool2d kernel {kernel} stride {stride}', 'maxPool2d',
                             {'kernel': kernel, 'stride': stride}, {'x': random32(shape)}, ['x'],
                             lambda t, k=kernel, s=stride: (F.max_pool2d(t['x'], k, s), {})))
    # Ties, as after a ReLU: torch sends a window's gradient to the first maximum in row-major order; so must we.
    ties = torch.randint(-1, 2, [2, 2, 4, 4]).to(DTYPE)
    cases.append(op_case('maxPool2d kernel 2 stride 2 with ties', 'maxPool2d', {'kernel': 2, 'stride': 2}, {'x': ties},
                         ['x'], lambda t: (F.max_pool2d(t['x'], 2, 2), {})))
    cases.append(op_case('maxPool2d kernel 3 stride 2 with ties', 'maxPool2d', {'kernel': 3, 'stride': 2},
                         {'x': torch.randint(-1, 2, [1, 2, 5, 5]).to(DTYPE)}, ['x'],
                         lambda t: (F.max_pool2d(t['x'], 3, 2), {})))
    cases.append(op_case('globalAvgPool2d', 'globalAvgPool2d', {}, {'x': random32([2, 3, 3, 4])}, ['x'],
                         lambda t: (t['x'].mean((2, 3)), {})))

    x = random32([4, 5])
    cases.append(op_case('relu', 'relu', {}, {'x': x}, ['x'], lambda t: (F.relu(t['x']), {})))
    cases.append(op_case('leakyRelu slope 0.2', 'leakyRelu', {'negativeSlope': 0.2}, {'x': x}, ['x'],
                         lambda t: (F.leaky_relu(t['x'], 0.2), {})))
    cases.append(op_case('leakyRelu default slope', 'leakyRelu', {}, {'x': x}, ['x'],
                         lambda t: (F.leaky_relu(t['x'], 0.01), {})))
    # Exact zeros (as after a ReLU or a max pool of one): torch's derivative there is 0 for relu, the slope for
    # leaky_relu.
    with_zeros = random32([4, 5]) * (torch.rand(4, 5) < 0.6).to(DTYPE)
    cases.append(op_case('relu at zero', 'relu', {}, {'x': with_zeros}, ['x'], lambda t: (F.relu(t['x']), {})))
    cases.append(op_case('leakyRelu slope 0.2 at zero', 'leakyRelu', {'negativeSlope': 0.2}, {'x': with_zeros}, ['x'],
                         lambda t: (F.leaky_relu(t['x'], 0.2), {})))
    cases.append(op_case('tanh', 'tanh', {}, {'x': random32([4, 5], std=1.5)}, ['x'], lambda t: (torch.tanh(t['x']), {})))

    # Enough elements that the kept fraction and the noise's moments are checked meaningfully.
    cases.append(random_op_case('dropout p 0.3', 'dropout', {'p': 0.3}, {'x': random32([8, 32])}))
    cases.append(op_case('dropout p 0', 'dropout', {'p': 0}, {'x': x}, ['x'], lambda t: (t['x'] * 1, {})))
    cases.append(random_op_case('gaussianNoise std 0.5', 'gaussianNoise', {'std': 0.5}, {'x': random32([8, 32])}))
    cases.append(op_case('gaussianNoise std 0', 'gaussianNoise', {'std': 0}, {'x': x}, ['x'], lambda t: (t['x'] * 1, {})))

    labels = [2, 0, 4, 1, 2, 3]
    cases.append(op_case('crossEntropy', 'crossEntropy', {'labels': labels}, {'logits': random32([6, 5], std=2.0)},
                         ['logits'], lambda t: (F.cross_entropy(t['logits'], torch.tensor(labels)).reshape(1), {})))

    eps = 1e-5
    for shape in ([4, 3, 2, 2], [6, 3]):
        channels = shape[1]
        inputs = {'x': random32(shape, mean=0.5, std=1.5), 'gamma': random32([channels], 0.5, 2.0), 'beta': random32([channels])}
        axes = [0] + list(range(2, len(shape)))

        def train_forward(t):
            y = F.batch_norm(t['x'], None, None, t['gamma'], t['beta'], training=True, eps=eps)
            return y, {'mean': t['x'].mean(axes), 'variance': t['x'].var(axes, unbiased=False)}
        cases.append(op_case(f'batchNorm {shape}', 'batchNorm', {'eps': eps}, inputs, ['x', 'gamma', 'beta'],
                             train_forward))
        stats = {'runningMean': random32([channels]), 'runningVar': random32([channels], 0.5, 2.0)}

        def eval_forward(t):
            return F.batch_norm(t['x'], t['runningMean'], t['runningVar'], t['gamma'], t['beta'], training=False,
                                eps=eps), {}
        cases.append(op_case(f'batchNormInference {shape}', 'batchNormInference', {'eps': eps}, {**inputs, **stats},
                             ['x', 'gamma', 'beta'], eval_forward))

        mean_only = {'x': inputs['x'], 'bias': inputs['beta']}
        view = [1, channels] + [1] * (len(shape) - 2)

        def mean_only_train(t):
            mean = t['x'].mean(axes)
            return t['x'] - mean.reshape(view) + t['bias'].reshape(view), {'mean': mean}
        cases.append(op_case(f'meanOnlyBatchNorm {shape} batch mean', 'meanOnlyBatchNorm', {'runningMean': False},
                             mean_only, ['x', 'bias'], mean_only_train))

        def mean_only_eval(t):
            return t['x'] - t['runningMean'].reshape(view) + t['bias'].reshape(view), {'mean': t['runningMean']}
        cases.append(op_case(f'meanOnlyBatchNorm {shape} running mean', 'meanOnlyBatchNorm', {'runningMean': True},
                             {**mean_only, 'runningMean': stats['runningMean']}, ['x', 'bias'], mean_only_eval))
    return cases


# ---------------------------------------------------------------------------------------------------------------
# Layers (nn), each in training and evaluation mode. A spec names the nn class and its constructor arguments; the
# harness builds the same layer from it and loads the state dict stored here.

def layer_state(spec):
    """Random parameters and buffers of a layer under our state-dict names (prefix '0.' etc. inside Sequential)."""
    kind = spec['type']
    if kind == 'Sequential':
        state = {}
        for i, layer in enumerate(spec['layers']):
            state.update({f'{i}.{k}': v for k, v in layer_state(layer).items()})
        return state
    if kind in ('Linear', 'Conv2d'):
        shape = [spec['out'], spec['in']] if kind == 'Linear' else [spec['out'], spec['in'], spec['kernel'], spec['kernel']]
        state = {}
        wn = spec.get('weightNorm')
        if wn is not None:
            dim = wn['dim']
            state['v'] = random32(shape)
            state['g'] = random32([1 if dim is None else shape[dim]], 0.5, 2.0)
        else:
            state['weight'] = random32(shape)
        if spec.get('bias', True):
            state['bias'] = random32([spec['out']])
        return state
    if kind == 'BatchNorm':
        n = spec['features']
        return {'gamma': random32([n], 0.5, 2.0), 'beta': random32([n]), 'runningMean': random32([n]),
                'runningVar': random32([n], 0.5, 2.0)}
    if kind == 'MeanOnlyBatchNorm':
        n = spec['features']
        return {'bias': random32([n]), 'runningMean': random32([n])}
    return {}


BUFFERS = ('runningMean', 'runningVar')


def layer_forward(spec, t, x, training, prefix=''):
    """Float64 torch forward of a layer; updates the running buffers in `t` in place (training), as ours do."""
    kind = spec['type']
    p = lambda name: t[prefix + name]
    if kind == 'Sequential':
        for i, layer in enumerate(spec['layers']):
            x = layer_forward(layer, t, x, training, f'{prefix}{i}.')
        return x
    if kind in ('Linear', 'Conv2d'):
        wn = spec.get('weightNorm')
        if wn is not None and spec.get('removeWeightNorm'):
            weight = p('weight')  # folded before the forward: the harness loaded w = g v / ||v|| into 'weight'
        elif wn is not None:
            weight, _ = weight_norm_torch(p('v'), p('g'), wn['dim'])
        else:
            weight = p('weight')
        bias = p('bias') if spec.get('bias', True) else None
        if kind == 'Linear':
            return F.linear(x, weight, bias)
        return F.conv2d(x, weight, bias, stride=spec.get('stride', 1), padding=spec.get('padding', 0))
    if kind == 'ReLU':
        return F.relu(x)
    if kind == 'LeakyReLU':
        return F.leaky_relu(x, spec.get('negativeSlope', 0.01))
    if kind == 'Tanh':
        return torch.tanh(x)
    if kind == 'MaxPool2d':
        return F.max_pool2d(x, spec['kernel'], spec.get('stride', spec['kernel']))
    if kind == 'GlobalAvgPool2d':
        return x.mean((2, 3))
    if kind == 'Flatten':
        return x.flatten(1)
    if kind in ('Dropout', 'GaussianNoise'):
        assert not training, 'random layers in training mode have no torch expectation'
        return x
    axes = [0] + list(range(2, x.dim()))
    view = [1, x.shape[1]] + [1] * (x.dim() - 2)
    if kind == 'BatchNorm':
        return F.batch_norm(x, t[prefix + 'runningMean'], t[prefix + 'runningVar'], p('gamma'), p('beta'),
                            training=training, momentum=0.1, eps=1e-5)
    if kind == 'MeanOnlyBatchNorm':
        if not training:
            return x - t[prefix + 'runningMean'].reshape(view) + p('bias').reshape(view)
        mean = x.mean(axes)
        with torch.no_grad():
            t[prefix + 'runningMean'].mul_(0.9).add_(0.1 * mean)
        return x - mean.reshape(view) + p('bias').reshape(view)
    raise ValueError(kind)


def fold_weight_norm(spec, state):
    """What nn.removeWeightNorm leaves: weight = g v / ||v|| (and the bias)."""
    if not spec.get('removeWeightNorm'):
        return state
    w, _ = weight_norm_torch(state['v'], state['g'], spec['weightNorm']['dim'])
    folded = {'weight': w.to(torch.float32).to(DTYPE)}  # our fold writes float32
    if 'bias' in state:
        folded['bias'] = state['bias']
    return folded


def layer_case(name, spec, x_shape):
    cases = []
    state = layer_state(spec)
    x = random32(x_shape)
    random_layer = spec['type'] in ('Dropout', 'GaussianNoise')
    for mode in ('train', 'eval'):
        training = mode == 'train'
        # The stored state is what the harness loads; the fold (removeWeightNorm) happens after loading, on our side.
        loaded = {k: v for k, v in state.items()}
        params = fold_weight_norm(spec, loaded)
        params = {k: v for k, v in params.items() if k.split('.')[-1] not in BUFFERS}
        buffers = {k: v.clone() for k, v in loaded.items() if k.split('.')[-1] in BUFFERS}
        config = {'spec': spec, 'mode': mode}
        inputs = {'x': x, **loaded}
        if random_layer and training:
            cases.append(case_record(f'{name} {mode}', 'layer', config, inputs, ['x'], c=random32(x_shape),
                                     random=True))
            continue
        differentiable = ['x'] + list(params)

        def forward(t):
            merged = {**t, **{k: v.clone() for k, v in buffers.items()}}  # each call starts from the loaded buffers
            y = layer_forward(spec, merged, t['x'], training)
            return y, ({f'buffer {k}': merged[k] for k in buffers} if training else {})
        y, c, extras, grads, scales = run({'x': x, **params}, differentiable, forward)
        cases.append(case_record(f'{name} {mode}', 'layer', config, inputs, differentiable, y, c, extras, grads,
                                 scales))
    return cases


LAYERS = [
    ('nn.Linear', {'type': 'Linear', 'in': 6, 'out': 5}, [4, 6]),
    ('nn.Linear without bias', {'type': 'Linear', 'in': 6, 'out': 5, 'bias': False}, [4, 6]),
    ('nn.Linear weightNorm dim 0', {'type': 'Linear', 'in': 6, 'out': 5, 'weightNorm': {'dim': 0}}, [4, 6]),
    ('nn.Linear weightNorm dim 1', {'type': 'Linear', 'in': 6, 'out': 5, 'weightNorm': {'dim': 1}}, [4, 6]),
    ('nn.Linear weightNorm dim null', {'type': 'Linear', 'in': 6, 'out': 5, 'weightNorm': {'dim': None}}, [4, 6]),
    ('nn.Linear weightNorm, removed', {'type': 'Linear', 'in': 6, 'out': 5, 'weightNorm': {'dim': 0},
                                       'removeWeightNorm': True}, [4, 6]),
    ('nn.Conv2d', {'type': 'Conv2d', 'in': 3, 'out': 4, 'kernel': 3, 'padding': 1}, [2, 3, 5, 5]),
    ('nn.Conv2d weightNorm dim 0', {'type': 'Conv2d', 'in': 3, 'out': 4, 'kernel': 3, 'stride': 2,
                                    'weightNorm': {'dim': 0}}, [2, 3, 5, 5]),
    ('nn.Conv2d weightNorm dim 1 without bias', {'type': 'Conv2d', 'in': 3, 'out': 4, 'kernel': 2, 'bias': False,
                                                 'weightNorm': {'dim': 1}}, [2, 3, 4, 4]),
    ('nn.Conv2d weightNorm, removed', {'type': 'Conv2d', 'in': 3, 'out': 4, 'kernel': 3, 'padding': 1,
                                       'weightNorm': {'dim': 0}, 'removeWeightNorm': True}, [2, 3, 4, 4]),
    ('nn.ReLU', {'type': 'ReLU'}, [4, 5]),
    ('nn.LeakyReLU', {'type': 'LeakyReLU', 'negativeSlope': 0.2}, [4, 5]),
    ('nn.Tanh', {'type': 'Tanh'}, [4, 5]),
    ('nn.MaxPool2d', {'type': 'MaxPool2d', 'kernel': 2}, [2, 3, 4, 4]),
    ('nn.MaxPool2d overlapping', {'type': 'MaxPool2d', 'kernel': 3, 'stride': 2}, [2, 2, 5, 5]),
    ('nn.GlobalAvgPool2d', {'type': 'GlobalAvgPool2d'}, [2, 3, 3, 4]),
    ('nn.Flatten', {'type': 'Flatten'}, [2, 3, 2, 2]),
    ('nn.Dropout', {'type': 'Dropout', 'p': 0.3}, [8, 32]),
    ('nn.GaussianNoise', {'type': 'GaussianNoise', 'std': 0.5}, [8, 32]),
    ('nn.BatchNorm 4-D', {'type': 'BatchNorm', 'features': 3}, [4, 3, 2, 2]),
    ('nn.BatchNorm 2-D', {'type': 'BatchNorm', 'features': 3}, [6, 3]),
    ('nn.MeanOnlyBatchNorm 4-D', {'type': 'MeanOnlyBatchNorm', 'features': 3}, [4, 3, 2, 2]),
    ('nn.MeanOnlyBatchNorm 2-D', {'type': 'MeanOnlyBatchNorm', 'features': 3}, [6, 3]),
    ('nn.Sequential CNN', {'type': 'Sequential', 'layers': [
        {'type': 'Conv2d', 'in': 2, 'out': 3, 'kernel': 3, 'padding': 1, 'weightNorm': {'dim': 0}},
        {'type': 'MeanOnlyBatchNorm', 'features': 3},
        {'type': 'ReLU'},
        {'type': 'MaxPool2d', 'kernel': 2},
        {'type': 'Flatten'},
        {'type': 'Linear', 'in': 12, 'out': 4, 'weightNorm': {'dim': 0}},
    ]}, [3, 2, 4, 4]),
    ('nn.Sequential MLP with BatchNorm', {'type': 'Sequential', 'layers': [
        {'type': 'Linear', 'in': 5, 'out': 6},
        {'type': 'BatchNorm', 'features': 6},
        {'type': 'Tanh'},
        {'type': 'Linear', 'in': 6, 'out': 3, 'weightNorm': {'dim': 0}},
    ]}, [5, 5]),
    ('nn.Sequential conv, global pool', {'type': 'Sequential', 'layers': [
        {'type': 'Conv2d', 'in': 2, 'out': 3, 'kernel': 2},
        {'type': 'LeakyReLU', 'negativeSlope': 0.1},
        {'type': 'GlobalAvgPool2d'},
        {'type': 'Linear', 'in': 3, 'out': 2, 'weightNorm': {'dim': 0}},
    ]}, [2, 2, 3, 3]),
]


def fused_op_cases():
    """Fused ops, against the torch ops they replace; drawn after every other case so that adding one leaves the
    earlier cases' random inputs as they were."""
    cases = []
    # ReLU then max pooling: windows of ties and windows all at or below 0 (whose gradient the ReLU stops).
    for kernel, stride, shape in [(2, 2, [2, 3, 4, 6]), (3, 1, [1, 2, 5, 5])]:
        x = torch.randint(-2, 3, shape).to(DTYPE) * 0.5 + random32(shape) * (torch.rand(shape) < 0.5).to(DTYPE)
        cases.append(op_case(f'reluMaxPool2d kernel {kernel} stride {stride}', 'reluMaxPool2d',
                             {'kernel': kernel, 'stride': stride}, {'x': x.to(torch.float32).to(DTYPE)}, ['x'],
                             lambda t, k=kernel, s=stride: (F.max_pool2d(F.relu(t['x']), k, s), {})))
    return cases


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    cases = op_cases()
    for name, spec, x_shape in LAYERS:
        cases.extend(layer_case(name, spec, x_shape))
    cases.extend(fused_op_cases())
    names = [c['name'] for c in cases]
    assert len(names) == len(set(names)), 'case names must be unique'
    header = {
        'generator': 'scripts/make_gradcheck_fixtures.py',
        'torch': torch.__version__,
        'seed': SEED,
        'note': 'inputs and cotangents are float32 values; outputs, extras and gradients are torch float64 results on '
                'those values; gradients are of L = sum(y * cotangent)',
    }
    write_cases(OUT, header, cases)
    print(f'wrote {os.path.relpath(OUT)}: {len(cases)} cases, {os.path.getsize(OUT)} bytes, torch {torch.__version__}')


if __name__ == '__main__':
    main()
