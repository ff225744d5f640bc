"""Writes test/fixtures/gradcheck_reduce_torch.json: the gradient-check cases of the reductions over chosen axes
(sum, mean, amax, amin, max, min with dim, var, std, logsumexp), softmax / logSoftmax and the nn.Softmax /
nn.LogSoftmax layers, with torch float64 results on float32 inputs (the format and helpers of
make_gradcheck_fixtures.py). Run with a Python that has torch: /usr/bin/python3 scripts/make_gradcheck_reduce_fixtures.py
"""
import os

import torch

from fixture_file import write_cases
from make_gradcheck_fixtures import case_record, op_case, random32, run

SEED = 20160225
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'gradcheck_reduce_torch.json')


def as_result(y):
    """Every axis reduced without keepDim: our result has shape [1] (as sum() always had), torch's shape []."""
    return y.reshape(1) if y.dim() == 0 else y


def reduction_cases():
    cases = []
    x345 = lambda: random32([3, 4, 5])  # noqa: E731

    def add(name, op, config, x, forward):
        cases.append(op_case(name, op, config, {'x': x}, ['x'], lambda t: (as_result(forward(t['x'])), {})))

    for dim, keep in ((1, False), ([0, 2], False), (-1, True), ([1, 2], True), (None, True)):
        torch_dim = dim if dim is not None else [0, 1, 2]
        add(f'sum dim={dim} keepDim={keep}', 'sum', {'dim': dim, 'keepDim': keep}, x345(),
            lambda x, d=torch_dim, k=keep: x.sum(d, keepdim=k))
    add('sum dim=[1, 3] of 4-D', 'sum', {'dim': [1, 3], 'keepDim': False}, random32([2, 3, 4, 5]),
        lambda x: x.sum([1, 3]))
    add('sum over a size-1 dim', 'sum', {'dim': 1, 'keepDim': False}, random32([3, 1, 4]), lambda x: x.sum(1))
    for dim, keep in ((0, False), ([0, 2], True), (-2, False)):
        add(f'mean dim={dim} keepDim={keep}', 'mean', {'dim': dim, 'keepDim': keep}, x345(),
            lambda x, d=dim, k=keep: x.mean(d, keepdim=k))
    for op, dim, keep in (('amax', 1, False), ('amax', [0, 2], False), ('amin', -1, True), ('amin', [0, 1], False)):
        fn = torch.amax if op == 'amax' else torch.amin
        add(f'{op} dim={dim} keepDim={keep}', op, {'dim': dim, 'keepDim': keep}, x345(),
            lambda x, f=fn, d=dim, k=keep: f(x, d, keepdim=k))
    for op, dim, keep in (('max', 1, False), ('max', -1, True), ('min', 0, True), ('min', 2, False)):
        fn = torch.max if op == 'max' else torch.min
        add(f'{op} dim={dim} keepDim={keep} (values)', op, {'dim': dim, 'keepDim': keep}, x345(),
            lambda x, f=fn, d=dim, k=keep: f(x, d, keepdim=k).values)
    for op, dim, keep, correction in (('var', 1, False, 1), ('var', [1, 2], True, 0), ('var', -1, False, 2),
                                      ('std', -1, False, 1), ('std', [0, 1], True, 0), ('std', 0, False, 1),
                                      ('var', [0, 2], False, 1), ('std', [0, 2], True, 0)):
        fn = torch.var if op == 'var' else torch.std
        add(f'{op} dim={dim} keepDim={keep} correction={correction}', op,
            {'dim': dim, 'keepDim': keep, 'correction': correction}, x345(),
            lambda x, f=fn, d=dim, k=keep, c=correction: f(x, d, correction=c, keepdim=k))
    for dim, keep, large in ((1, False, False), ([0, 2], False, False), (-1, True, True), (None, False, True)):
        x = x345() * (100.0 if large else 1.0) + (1000.0 if large else 0.0)
        x = x.to(torch.float32).to(torch.float64)
        torch_dim = dim if dim is not None else [0, 1, 2]
        add(f'logsumexp dim={dim} keepDim={keep}' + (' large values' if large else ''), 'logsumexp',
            {'dim': dim, 'keepDim': keep}, x, lambda x, d=torch_dim, k=keep: torch.logsumexp(x, d, keepdim=k))
    for op, dim, large in (('softmax', 1, False), ('softmax', -1, True), ('softmax', 0, False),
                           ('logSoftmax', 1, False), ('logSoftmax', -1, True), ('logSoftmax', 0, False)):
        x = x345() * (30.0 if large else 1.0) + (1000.0 if large else 0.0)
        x = x.to(torch.float32).to(torch.float64)
        fn = torch.softmax if op == 'softmax' else torch.log_softmax
        add(f'{op} dim={dim}' + (' large values' if large else ''), op, {'dim': dim}, x,
            lambda x, f=fn, d=dim: f(x, d))
    return cases


def layer_cases():
    """nn.Softmax and nn.LogSoftmax: stateless, the same in train and eval mode."""
    cases = []
    for layer, fn in (('Softmax', torch.softmax), ('LogSoftmax', torch.log_softmax)):
        spec = {'type': layer, 'dim': 1}
        x = random32([4, 6])
        for mode in ('train', 'eval'):
            y, c, extras, grads, scales = run({'x': x}, ['x'], lambda t, f=fn: (f(t['x'], 1), {}))
            cases.append(case_record(f'{layer} dim=1 {mode}', 'layer', {'spec': spec, 'mode': mode}, {'x': x}, ['x'],
                                     y, c, extras, grads, scales))
    return cases


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    cases = reduction_cases() + layer_cases()
    names = [c['name'] for c in cases]
    assert len(names) == len(set(names)), 'case names must be unique'
    header = {
        'generator': 'scripts/make_gradcheck_reduce_fixtures.py',
        'torch': torch.__version__,
        'seed': SEED,
        'note': 'inputs and cotangents are float32 values; outputs and gradients are torch float64 results on those '
                'values; gradients are of L = sum(y * cotangent)',
    }
    write_cases(OUT, header, cases)
    print(f'wrote {os.path.relpath(OUT)}: {len(cases)} cases, {os.path.getsize(OUT)} bytes, torch {torch.__version__}')


if __name__ == '__main__':
    main()
