#!/usr/bin/env python3
"""PyTorch float64 expectations for the pointwise op family (tensor math with broadcasting) in the gradient-check
harness: add/sub (alpha), mul, div, pow, minimum, maximum and where with broadcast operands (size-1 dimensions, rank
mismatch, JS-number scalars), every unary op (neg ... gelu, silu) and the activation layers nn.Sigmoid, nn.GELU,
nn.SiLU, nn.ELU and nn.Softplus.

Run with a Python that has torch:  /usr/bin/python3 scripts/make_gradcheck_pointwise_fixtures.py
Writes test/fixtures/gradcheck_pointwise_torch.json; test/gradcheck/registry-pointwise.ts runs each case with our
library. Case records are built by scripts/make_gradcheck_fixtures.py's helpers (same format and conventions).
A scalar operand is config.scalarA / config.scalarB (a JS number on our side, a Python float in torch); where's
condition is stored as 0/1 values and turned into a bool tensor by the registry (x > 0.5).
"""

import os

import torch
import torch.nn.functional as F

from fixture_file import write_cases
from make_gradcheck_fixtures import case_record, op_case, random32, run

SEED = 20161103  # any fixed value keeps the fixtures reproducible
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'gradcheck_pointwise_torch.json')


def away_from_zero(shape, low=0.5, high=2.0):
    """Values with |x| in [low, high) and random signs: safe divisors, no ties at kinks."""
    magnitude = random32(shape, low, high)
    sign = torch.where(torch.rand(*shape) < 0.5, -1.0, 1.0).to(magnitude.dtype)
    return magnitude * sign


def binary_cases():
    cases = []
    a, b = random32([3, 1, 4]), random32([5, 1])
    cases.append(op_case('add broadcast [3, 1, 4] + [5, 1]', 'add', {}, {'a': a, 'b': b}, ['a', 'b'],
                         lambda t: (t['a'] + t['b'], {})))
    cases.append(op_case('add alpha -1.5 broadcast [2, 3] + [3]', 'add', {'alpha': -1.5},
                         {'a': random32([2, 3]), 'b': random32([3])}, ['a', 'b'],
                         lambda t: (torch.add(t['a'], t['b'], alpha=-1.5), {})))
    cases.append(op_case('add scalar b', 'add', {'scalarB': 2.5}, {'a': random32([2, 3])}, ['a'],
                         lambda t: (t['a'] + 2.5, {})))
    cases.append(op_case('sub broadcast [4, 1] - [1, 3] alpha 2', 'sub', {'alpha': 2.0},
                         {'a': random32([4, 1]), 'b': random32([1, 3])}, ['a', 'b'],
                         lambda t: (torch.sub(t['a'], t['b'], alpha=2.0), {})))
    cases.append(op_case('sub scalar a', 'sub', {'scalarA': 1.25}, {'b': random32([3, 2])}, ['b'],
                         lambda t: (1.25 - t['b'], {})))
    cases.append(op_case('mul broadcast [2, 3, 4] * [4]', 'mul', {}, {'a': random32([2, 3, 4]), 'b': random32([4])},
                         ['a', 'b'], lambda t: (t['a'] * t['b'], {})))
    cases.append(op_case('mul broadcast [2, 1, 3] * [2, 4, 1]', 'mul', {},
                         {'a': random32([2, 1, 3]), 'b': random32([2, 4, 1])}, ['a', 'b'],
                         lambda t: (t['a'] * t['b'], {})))
    cases.append(op_case('mul scalar b', 'mul', {'scalarB': -0.75}, {'a': random32([5])}, ['a'],
                         lambda t: (t['a'] * -0.75, {})))
    cases.append(op_case('div', 'div', {}, {'a': random32([3, 4]), 'b': away_from_zero([3, 4])}, ['a', 'b'],
                         lambda t: (t['a'] / t['b'], {})))
    cases.append(op_case('div broadcast [3, 4] / [3, 1]', 'div', {}, {'a': random32([3, 4]), 'b': away_from_zero([3, 1])},
                         ['a', 'b'], lambda t: (t['a'] / t['b'], {})))
    cases.append(op_case('div scalar a', 'div', {'scalarA': 3.0}, {'b': away_from_zero([4])}, ['b'],
                         lambda t: (3.0 / t['b'], {})))
    cases.append(op_case('pow broadcast [3, 4] ^ [4]', 'pow', {}, {'a': random32([3, 4], 0.5, 2.0), 'b': random32([4], -2.0, 2.0)},
                         ['a', 'b'], lambda t: (torch.pow(t['a'], t['b']), {})))
    cases.append(op_case('pow scalar exponent 3', 'pow', {'scalarB': 3.0}, {'a': random32([2, 3])}, ['a'],
                         lambda t: (torch.pow(t['a'], 3.0), {})))
    for op, fn in (('minimum', torch.minimum), ('maximum', torch.maximum)):
        a = random32([3, 4])
        b = random32([3, 4])
        b[0, :2] = a[0, :2]  # ties: torch splits the gradient evenly
        cases.append(op_case(f'{op} with ties', op, {}, {'a': a, 'b': b}, ['a', 'b'], lambda t, fn=fn: (fn(t['a'], t['b']), {})))
        cases.append(op_case(f'{op} broadcast [2, 3] and [2, 1]', op, {}, {'a': random32([2, 3]), 'b': random32([2, 1])},
                             ['a', 'b'], lambda t, fn=fn: (fn(t['a'], t['b']), {})))
    condition = (torch.rand(3, 1) < 0.5).to(torch.float64)
    cases.append(op_case('where broadcast [3, 1] ? [1, 4] : [3, 4]', 'where', {},
                         {'condition': condition, 'a': random32([1, 4]), 'b': random32([3, 4])}, ['a', 'b'],
                         lambda t: (torch.where(t['condition'] > 0.5, t['a'], t['b']), {})))
    cases.append(op_case('where scalar b', 'where', {'scalarB': -1.0},
                         {'condition': (torch.rand(2, 3) < 0.5).to(torch.float64), 'a': random32([2, 3])}, ['a'],
                         lambda t: (torch.where(t['condition'] > 0.5, t['a'], torch.tensor(-1.0, dtype=torch.float64)), {})))
    return cases


def unary_cases():
    cases = []
    x = random32([3, 4])
    positive = random32([3, 4], 0.25, 3.0)
    plain = [
        ('neg', x, lambda v: -v),
        ('exp', x, torch.exp),
        ('log', positive, torch.log),
        ('sqrt', positive, torch.sqrt),
        ('rsqrt', positive, torch.rsqrt),
        ('abs', away_from_zero([3, 4], 0.05, 2.0), torch.abs),
        ('sign', away_from_zero([3, 4], 0.05, 2.0), torch.sign),
        ('sigmoid', x, torch.sigmoid),
        ('silu', x, F.silu),
    ]
    for op, inputs, fn in plain:
        cases.append(op_case(op, op, {}, {'x': inputs}, ['x'], lambda t, fn=fn: (fn(t['x']), {})))
    wide = random32([4, 5], -3.0, 3.0)
    for low, high in ((-0.5, 0.75), (0.0, None), (None, 0.25)):
        config = {'min': low, 'max': high}
        cases.append(op_case(f'clamp min {low} max {high}', 'clamp', config, {'x': wide}, ['x'],
                             lambda t, low=low, high=high: (torch.clamp(t['x'], min=low, max=high), {})))
    cases.append(op_case('elu default alpha', 'elu', {}, {'x': x}, ['x'], lambda t: (F.elu(t['x']), {})))
    cases.append(op_case('elu alpha 0.5', 'elu', {'alpha': 0.5}, {'x': x}, ['x'], lambda t: (F.elu(t['x'], alpha=0.5), {})))
    cases.append(op_case('softplus default', 'softplus', {}, {'x': wide}, ['x'], lambda t: (F.softplus(t['x']), {})))
    # beta 2, threshold 1: inputs above 0.5 take the linear branch.
    cases.append(op_case('softplus beta 2 threshold 1', 'softplus', {'beta': 2.0, 'threshold': 1.0}, {'x': wide}, ['x'],
                         lambda t: (F.softplus(t['x'], beta=2.0, threshold=1.0), {})))
    cases.append(op_case('gelu exact', 'gelu', {}, {'x': wide}, ['x'], lambda t: (F.gelu(t['x']), {})))
    cases.append(op_case('gelu tanh', 'gelu', {'approximate': 'tanh'}, {'x': wide}, ['x'],
                         lambda t: (F.gelu(t['x'], approximate='tanh'), {})))
    cases.append(op_case('relu [2, 3]', 'relu', {}, {'x': random32([2, 3])}, ['x'],
                         lambda t: (F.relu(t['x']), {})))
    cases.append(op_case('tanh [5]', 'tanh', {}, {'x': random32([5])}, ['x'], lambda t: (torch.tanh(t['x']), {})))
    cases.append(op_case('leakyRelu slope 0.3', 'leakyRelu', {'negativeSlope': 0.3}, {'x': random32([5])}, ['x'],
                         lambda t: (F.leaky_relu(t['x'], 0.3), {})))
    return cases


LAYERS = [
    ('nn.Sigmoid', {'type': 'Sigmoid'}, lambda x: torch.sigmoid(x)),
    ('nn.GELU', {'type': 'GELU'}, lambda x: F.gelu(x)),
    ('nn.GELU tanh', {'type': 'GELU', 'approximate': 'tanh'}, lambda x: F.gelu(x, approximate='tanh')),
    ('nn.SiLU', {'type': 'SiLU'}, lambda x: F.silu(x)),
    ('nn.ELU alpha 0.7', {'type': 'ELU', 'alpha': 0.7}, lambda x: F.elu(x, alpha=0.7)),
    ('nn.Softplus beta 2 threshold 1.5', {'type': 'Softplus', 'beta': 2.0, 'threshold': 1.5},
     lambda x: F.softplus(x, beta=2.0, threshold=1.5)),
]


def layer_cases():
    """Parameter-free layers: the same function in train and eval mode."""
    cases = []
    for name, spec, fn in LAYERS:
        x = random32([4, 5], -3.0, 3.0)
        for mode in ('train', 'eval'):
            y, c, extras, grads, scales = run({'x': x}, ['x'], lambda t, fn=fn: (fn(t['x']), {}))
            cases.append(case_record(f'{name} {mode}', 'layer', {'spec': spec, 'mode': mode}, {'x': x}, ['x'], y, c,
                                     extras, grads, scales))
    return cases


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    cases = binary_cases() + unary_cases() + layer_cases()
    names = [c['name'] for c in cases]
    assert len(names) == len(set(names)), 'case names must be unique'
    header = {
        'generator': 'scripts/make_gradcheck_pointwise_fixtures.py',
        'torch': torch.__version__,
        'seed': SEED,
        'note': 'inputs and cotangents are float32 values; outputs and gradients are torch float64 results on those '
                'values; gradients are of L = sum(y * cotangent)',
    }
    write_cases(OUT, header, cases)
    print(f'wrote {os.path.relpath(OUT)}: {len(cases)} cases, {os.path.getsize(OUT)} bytes, torch {torch.__version__}')


if __name__ == '__main__':
    main()
