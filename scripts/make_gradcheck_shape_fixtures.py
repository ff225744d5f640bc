#!/usr/bin/env python3
"""PyTorch float64 expectations of the shape ops (ts/shape.ts) for the gradient-check harness (test/gradcheck/).

Run with a Python that has torch:  /usr/bin/python3 scripts/make_gradcheck_shape_fixtures.py
Writes test/fixtures/gradcheck_shape_torch.json; test/gradcheck/registry-shape.ts says how each case runs with our
library. Cases as in scripts/make_gradcheck_fixtures.py (random float32 inputs, torch float64 output and gradients
of sum(y * c)). The index ops' int32 indices are not differentiable: they travel in the case's config
({'shape', 'data'}). Ops that return several tensors (split, chunk) are checked through their concatenation, and
concat/stack with two or three differentiable inputs. The output is deterministic.
"""

import os

import torch

from fixture_file import write_cases
from make_gradcheck_fixtures import op_case, random32

SEED = 20160225
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'gradcheck_shape_torch.json')


def index_config(values, shape):
    return {'shape': list(shape), 'data': [int(v) for v in values.reshape(-1).tolist()]}


def random_index(shape, limit):
    return torch.randint(0, limit, shape)


def cases():
    out = []
    x = random32([2, 3, 4])

    # Views.
    out.append(op_case('view [2, 3, 4] -> [6, 4]', 'view', {'shape': [6, 4]}, {'x': x}, ['x'],
                       lambda t: (t['x'].view(6, 4), {})))
    x1 = random32([2, 1, 3, 1])
    out.append(op_case('squeeze all', 'squeeze', {}, {'x': x1}, ['x'], lambda t: (t['x'].squeeze(), {})))
    out.append(op_case('squeeze dim -1', 'squeeze', {'dim': -1}, {'x': x1}, ['x'], lambda t: (t['x'].squeeze(-1), {})))
    out.append(op_case('unsqueeze dim -2', 'unsqueeze', {'dim': -2}, {'x': x}, ['x'], lambda t: (t['x'].unsqueeze(-2), {})))
    out.append(op_case('contiguous', 'contiguous', {}, {'x': x}, ['x'], lambda t: (t['x'].contiguous() * 1, {})))
    out.append(op_case('clone', 'clone', {}, {'x': x}, ['x'], lambda t: (t['x'].clone(), {})))
    out.append(op_case('expand [3, 1] -> [2, 3, 4]', 'expand', {'sizes': [2, -1, 4]}, {'x': random32([3, 1])}, ['x'],
                       lambda t: (t['x'].expand(2, -1, 4), {})))

    # Copies.
    out.append(op_case('transpose 0, -1', 'transpose', {'dim0': 0, 'dim1': -1}, {'x': x}, ['x'],
                       lambda t: (t['x'].transpose(0, -1), {})))
    out.append(op_case('permute [2, 0, 1]', 'permute', {'dims': [2, 0, 1]}, {'x': x}, ['x'],
                       lambda t: (t['x'].permute(2, 0, 1), {})))
    x4 = random32([2, 3, 2, 3])
    out.append(op_case('permute rank 4 [3, 1, 0, 2]', 'permute', {'dims': [3, 1, 0, 2]}, {'x': x4}, ['x'],
                       lambda t: (t['x'].permute(3, 1, 0, 2), {})))
    x7 = random32([3, 7])
    out.append(op_case('slice dim 1 [1:6:2]', 'slice', {'dim': 1, 'start': 1, 'end': 6, 'step': 2}, {'x': x7}, ['x'],
                       lambda t: (t['x'][:, 1:6:2], {})))
    out.append(op_case('slice dim -1 [-4:]', 'slice', {'dim': -1, 'start': -4}, {'x': x7}, ['x'],
                       lambda t: (t['x'][:, -4:], {})))
    out.append(op_case('slice dim 0 [:-1]', 'slice', {'dim': 0, 'end': -1}, {'x': x7}, ['x'],
                       lambda t: (t['x'][:-1], {})))
    out.append(op_case('narrow dim 1 from -5, 3', 'narrow', {'dim': 1, 'start': -5, 'length': 3}, {'x': x7}, ['x'],
                       lambda t: (t['x'].narrow(1, -5, 3), {})))
    out.append(op_case('split dim 1 by 3', 'split', {'sizeOrSections': 3, 'dim': 1}, {'x': x7}, ['x'],
                       lambda t: (torch.cat(t['x'].split(3, 1), 1), {})))
    out.append(op_case('split dim 1 [2, 4, 1]', 'split', {'sizeOrSections': [2, 4, 1], 'dim': 1}, {'x': x7}, ['x'],
                       lambda t: (torch.cat(t['x'].split([2, 4, 1], 1), 1), {})))
    out.append(op_case('chunk 3 dim 1', 'chunk', {'chunks': 3, 'dim': 1}, {'x': x7}, ['x'],
                       lambda t: (torch.cat(t['x'].chunk(3, 1), 1), {})))
    out.append(op_case('flip dims [0, 2]', 'flip', {'dims': [0, 2]}, {'x': x}, ['x'],
                       lambda t: (t['x'].flip(0, 2), {})))
    a, b, c = random32([2, 3]), random32([2, 1]), random32([2, 4])
    out.append(op_case('concat dim 1 of three', 'concat', {'dim': 1}, {'a': a, 'b': b, 'c': c}, ['a', 'b', 'c'],
                       lambda t: (torch.cat([t['a'], t['b'], t['c']], 1), {})))
    out.append(op_case('cat dim 0', 'cat', {'dim': 0}, {'a': random32([1, 3]), 'b': random32([2, 3])}, ['a', 'b'],
                       lambda t: (torch.cat([t['a'], t['b']], 0), {})))
    out.append(op_case('stack dim -1', 'stack', {'dim': -1}, {'a': random32([2, 3]), 'b': random32([2, 3])}, ['a', 'b'],
                       lambda t: (torch.stack([t['a'], t['b']], -1), {})))

    # Index ops (repeated indices: the backward sums).
    index = torch.tensor([2, 0, 2, 1, 2])
    out.append(op_case('indexSelect dim 1, repeated', 'indexSelect', {'dim': 1, 'index': index_config(index, [5])},
                       {'x': x}, ['x'], lambda t: (t['x'].index_select(1, index), {})))
    rows = torch.tensor([3, 3, 0])
    out.append(op_case('indexSelect dim 0 of rows', 'indexSelect', {'dim': 0, 'index': index_config(rows, [3])},
                       {'x': random32([4, 5])}, ['x'], lambda t: (t['x'].index_select(0, rows), {})))
    gather_index = random_index([2, 5, 3], 3)
    out.append(op_case('gather dim 1', 'gather', {'dim': 1, 'index': index_config(gather_index, [2, 5, 3])},
                       {'x': x}, ['x'], lambda t: (t['x'].gather(1, gather_index), {})))
    last_index = random_index([2, 2, 6], 4)
    out.append(op_case('gather dim -1, index smaller off dim', 'gather',
                       {'dim': -1, 'index': index_config(last_index, [2, 2, 6])},
                       {'x': x}, ['x'], lambda t: (t['x'].gather(-1, last_index), {})))
    scatter_index = random_index([4, 3], 3)
    out.append(op_case('scatterAdd dim 0', 'scatterAdd', {'dim': 0, 'index': index_config(scatter_index, [4, 3])},
                       {'x': random32([3, 3]), 'src': random32([4, 3])}, ['x', 'src'],
                       lambda t: (t['x'].scatter_add(0, scatter_index, t['src']), {})))
    small_index = random_index([2, 2], 5)
    out.append(op_case('scatterAdd dim 1, src larger than index', 'scatterAdd',
                       {'dim': 1, 'index': index_config(small_index, [2, 2])},
                       {'x': random32([3, 5]), 'src': random32([3, 4])}, ['x', 'src'],
                       # torch 1.13's scatter_add backward refuses a src larger than index; only src's corner that
                       # index covers is read, so that corner is what is passed.
                       lambda t: (t['x'].scatter_add(1, small_index, t['src'][:2, :2]), {})))
    return out


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    all_cases = cases()
    names = [c['name'] for c in all_cases]
    assert len(names) == len(set(names)), 'case names must be unique'
    header = {
        'generator': 'scripts/make_gradcheck_shape_fixtures.py',
        'torch': torch.__version__,
        'seed': SEED,
        'note': 'inputs and cotangents are float32 values; outputs and gradients are torch float64 results on those '
                'values; gradients are of L = sum(y * cotangent); int32 indices are in each case\'s config',
    }
    write_cases(OUT, header, all_cases)
    print(f'wrote {os.path.relpath(OUT)}: {len(all_cases)} cases, {os.path.getsize(OUT)} bytes, torch {torch.__version__}')


if __name__ == '__main__':
    main()
