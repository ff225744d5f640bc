#!/usr/bin/env python3
"""PyTorch float64 expectations for test/rnn.test.ts: nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell run by torch itself.

Run with a Python that has torch (Debian's python3-torch 1.13 here):  /usr/bin/python3 scripts/make_rnn_fixtures.py
Writes test/fixtures/rnn_torch.json.

Each case builds the torch module in float64 from float32 random values, applies torch.nn.utils.weight_norm to the
matrices the case names, and stores: the module's state dict under torch's names (torch 1.13 has only the
weight_hh_l0_g / weight_hh_l0_v scheme; cases marked 'parametrizations' rename them to the newer
parametrizations.weight_hh_l0.original0 (g) / original1 (v), which is what torch.nn.utils.parametrizations.weight_norm
writes), the input and initial states, random cotangents of output, h and c, and torch's float64 output, final
states and gradients of L = sum(output * co) + sum(h * ch) + sum(c * cc) with respect to the input, the initial states
and every parameter (stored under this library's names: weight_hh_l0_g, weight_hh_l0_v, bias_ih_l0, ... with g
flattened). The test imports the state dict with io.importTorchWeightNorm, so both naming schemes are checked too.
"""

import os

import numpy as np
import torch

from fixture_file import write_cases

SEED = 20160226
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'rnn_torch.json')
DTYPE = torch.float64


def float32_values(t):
    out = []
    for x in t.detach().contiguous().view(-1).numpy().astype(np.float32):
        value = float(np.format_float_scientific(x, unique=True, trim='-'))
        if np.float32(value) != x:
            value = float(x)
        out.append(value)
    return out


def float64_values(t):
    return [float(f'{x:.12g}') for x in t.detach().contiguous().view(-1).tolist()]


def random32(shape):
    return torch.randn(*shape, dtype=torch.float32).to(DTYPE)


def entry(t):
    return {'shape': list(t.shape), 'data': float32_values(t)}


def result(t):
    return {'shape': list(t.shape), 'data': float64_values(t)}


def our_name(torch_name):
    return torch_name  # torch's weight_norm names (weight_hh_l0_g / _v) are ours; g is flattened by the import


def new_scheme(torch_name):
    for suffix, index in (('_g', 0), ('_v', 1)):
        if torch_name.endswith(suffix) and torch_name.startswith('weight_'):
            return f'parametrizations.{torch_name[:-2]}.original{index}'
    return torch_name


def make_case(name, kind, input_size, hidden, steps, batch, num_layers=1, bias=True, batch_first=False,
              weight_norm=None, states=True, scheme='weight_norm'):
    """weight_norm: {matrix name prefix ('weight_ih', 'weight_hh'): dim} applied to every layer's matrix."""
    cell = kind.endswith('Cell')
    module_class = getattr(torch.nn, kind)
    if cell:
        module = module_class(input_size, hidden, bias=bias)
    else:
        module = module_class(input_size, hidden, num_layers=num_layers, bias=bias, batch_first=batch_first)
    module = module.to(DTYPE)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(random32(list(p.shape)) * 0.5)
    for matrix, dim in (weight_norm or {}).items():
        names = [matrix] if cell else [f'{matrix}_l{k}' for k in range(num_layers)]
        for n in names:
            torch.nn.utils.weight_norm(module, n, dim=dim)
    with torch.no_grad():
        # g is initialized to ‖v‖ by weight_norm; move it off that so a wrong g shows.
        for n, p in module.named_parameters():
            if n.endswith('_g'):
                p.mul_(1 + 0.3 * torch.rand(p.shape, dtype=torch.float32).to(DTYPE))
            elif n.endswith('_v'):
                p.copy_(p.to(torch.float32).to(DTYPE))
            p.copy_(p.to(torch.float32).to(DTYPE))
    lstm = 'LSTM' in kind
    if cell:
        x = random32([batch, input_size])
        state_shape = [batch, hidden]
    else:
        x = random32([batch, steps, input_size] if batch_first else [steps, batch, input_size])
        state_shape = [num_layers, batch, hidden]
    h0 = random32(state_shape) if states else None
    c0 = random32(state_shape) if states and lstm else None
    x.requires_grad_(True)
    leaves = [x]
    for t in (h0, c0):
        if t is not None:
            t.requires_grad_(True)
            leaves.append(t)
    if cell:
        if lstm:
            h, c = module(x, (h0, c0) if states else None)
        else:
            h = module(x, h0)
            c = None
        output = None
    else:
        if lstm:
            output, (h, c) = module(x, (h0, c0) if states else None)
        else:
            output, h = module(x, h0)
            c = None
    loss = 0
    cotangents = {}
    for label, value in (('output', output), ('h', h), ('c', c)):
        if value is None:
            continue
        co = random32(list(value.shape))
        cotangents[label] = co
        loss = loss + (value * co).sum()
    loss.backward()
    params = dict(module.named_parameters())
    state_dict = {(new_scheme(n) if scheme == 'parametrizations' else n): entry(p) for n, p in params.items()}
    grads = {'x': float64_values(x.grad)}
    if h0 is not None:
        grads['h0'] = float64_values(h0.grad)
    if c0 is not None:
        grads['c0'] = float64_values(c0.grad)
    for n, p in params.items():
        grads[our_name(n)] = float64_values(p.grad)
    options = {'bias': bias}
    if not cell:
        options.update({'numLayers': num_layers, 'batchFirst': batch_first})
    if weight_norm:
        options['weightNorm'] = {('ih' if m == 'weight_ih' else 'hh'): {'dim': d} for m, d in weight_norm.items()}
    record = {
        'name': name, 'layer': kind, 'inputSize': input_size, 'hiddenSize': hidden, 'options': options,
        'scheme': scheme, 'stateDict': state_dict, 'x': entry(x),
        'h0': entry(h0) if h0 is not None else None, 'c0': entry(c0) if c0 is not None else None,
        'cotangents': {k: entry(v) for k, v in cotangents.items()},
        'expected': {k: result(v) for k, v in (('output', output), ('h', h), ('c', c)) if v is not None},
        'grads': grads,
    }
    return record


CASES = [
    ('LSTM, 1 layer, T = 5, initial states', 'LSTM', 3, 4, 5, 2, {}),
    ('LSTM, 2 layers, batchFirst, weight norm dim 0 on both matrices (parametrizations names)', 'LSTM', 3, 4, 4, 3,
     {'num_layers': 2, 'batch_first': True, 'weight_norm': {'weight_ih': 0, 'weight_hh': 0}, 'scheme': 'parametrizations'}),
    ('LSTM, 2 layers, T = 1, no bias, weight norm on hh only', 'LSTM', 2, 3, 1, 2,
     {'num_layers': 2, 'bias': False, 'weight_norm': {'weight_hh': 0}}),
    ('LSTM, weight norm dim 1, zero initial states', 'LSTM', 3, 2, 6, 2,
     {'weight_norm': {'weight_ih': 1, 'weight_hh': 1}, 'states': False}),
    ('GRU, 1 layer, weight norm dim 0, initial state', 'GRU', 3, 4, 5, 2, {'weight_norm': {'weight_ih': 0, 'weight_hh': 0}}),
    ('GRU, 2 layers, batchFirst, T = 1, zero initial state', 'GRU', 3, 4, 1, 3,
     {'num_layers': 2, 'batch_first': True, 'states': False}),
    ('GRU, 2 layers, weight norm dim 0 (parametrizations names), no bias', 'GRU', 2, 3, 4, 2,
     {'num_layers': 2, 'bias': False, 'weight_norm': {'weight_ih': 0, 'weight_hh': 0}, 'scheme': 'parametrizations'}),
    ('LSTMCell, weight norm dim 0', 'LSTMCell', 3, 4, 1, 2, {'weight_norm': {'weight_ih': 0, 'weight_hh': 0}}),
    ('LSTMCell, plain', 'LSTMCell', 3, 4, 1, 2, {}),
    ('GRUCell, plain', 'GRUCell', 3, 4, 1, 2, {}),
    ('GRUCell, weight norm on ih (parametrizations names)', 'GRUCell', 3, 4, 1, 2,
     {'weight_norm': {'weight_ih': 0}, 'scheme': 'parametrizations'}),
]


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    cases = [make_case(name, kind, i, h, t, n, **extra) for name, kind, i, h, t, n, extra in CASES]
    header = {
        'generator': 'scripts/make_rnn_fixtures.py',
        'torch': torch.__version__,
        'seed': SEED,
        'note': 'inputs, states, cotangents and the state dict are float32 values; expected and grads are torch float64 '
                'results on them; grads are of L = sum(output*co) + sum(h*ch) + sum(c*cc), under our parameter names',
    }
    write_cases(OUT, header, cases)
    print(f'wrote {os.path.relpath(OUT)}: {len(cases)} cases, {os.path.getsize(OUT)} bytes, torch {torch.__version__}')


if __name__ == '__main__':
    main()
