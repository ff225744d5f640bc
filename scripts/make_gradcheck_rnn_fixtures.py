#!/usr/bin/env python3
"""Gradient-check cases of the recurrent op family (nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell, nn.Embedding) for the
harness in test/gradcheck/ (entries: test/gradcheck/registry-rnn.ts).

Run with a Python that has torch:  /usr/bin/python3 scripts/make_gradcheck_rnn_fixtures.py
Writes test/fixtures/gradcheck_rnn_torch.json.

Each layer is written here as torch float64 ops on the state dict under this library's names (weight_ih_l0,
weight_hh_l0_v, weight_hh_l0_g, bias_ih_l0, ...), checked once against torch.nn.LSTM / GRU / LSTMCell / GRUCell /
Embedding on the same values, and then differentiated like every other harness case. The harness calls a layer with
x alone (zero initial states), so its y is what registry-rnn.ts returns: the flattened output, h and (LSTM) c in
one vector for the sequence layers, h and c for the LSTM cell. Initial states, batchFirst in both directions and the
torch import are checked by test/rnn.test.ts.
"""

import os

import torch

from fixture_file import write_cases
from make_gradcheck_fixtures import DTYPE, case_record, random32, run, weight_norm_torch

SEED = 20160227
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'gradcheck_rnn_torch.json')


def gates_of(spec):
    return 4 if spec['type'].startswith('LSTM') else 3


def matrix_names(spec):
    """(our matrix name, rows, columns, weight-norm config or None) of each weight matrix."""
    h = spec['out']
    rows = gates_of(spec) * h
    norms = spec.get('weightNorm') or {}
    if spec['type'].endswith('Cell'):
        return [('weight_ih', rows, spec['in'], norms.get('ih')), ('weight_hh', rows, h, norms.get('hh'))]
    out = []
    for k in range(spec.get('numLayers', 1)):
        out.append((f'weight_ih_l{k}', rows, spec['in'] if k == 0 else h, norms.get('ih')))
        out.append((f'weight_hh_l{k}', rows, h, norms.get('hh')))
    return out


def layer_state(spec):
    if spec['type'] == 'Embedding':
        weight = random32([spec['num'], spec['dim']])
        if spec.get('paddingIdx') is not None:
            weight[spec['paddingIdx']] = 0
        return {'weight': weight}
    state = {}
    bias = spec.get('bias', True)
    for name, rows, columns, norm in matrix_names(spec):
        v = random32([rows, columns], std=0.5)
        if norm is None:
            state[name] = v
        else:
            dim = norm['dim']
            channels = 1 if dim is None else [rows, columns][dim]
            state[f'{name}_v'] = v
            state[f'{name}_g'] = random32([channels], low=0.5, high=1.5)
        if bias:
            suffix = name[len('weight_'):]  # ih_l0 / hh_l0 / ih / hh
            state[f'bias_{suffix}'] = random32([rows], std=0.5)
    return state


def weights(spec, t):
    """Materialized weights {name: w} from the state dict t (v/g through weight norm)."""
    out = {}
    if spec['type'] == 'Embedding':
        return out
    for name, _, _, norm in matrix_names(spec):
        if norm is None:
            out[name] = t[name]
        else:
            out[name] = weight_norm_torch(t[f'{name}_v'], t[f'{name}_g'], norm['dim'])[0]
    return out


def step(kind, x, h, c, w_ih, w_hh, b_ih, b_hh):
    gx = x @ w_ih.t() + (b_ih if b_ih is not None else 0)
    gh = h @ w_hh.t() + (b_hh if b_hh is not None else 0)
    if kind == 'lstm':
        i, f, g, o = (gx + gh).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    xr, xz, xn = gx.chunk(3, dim=1)
    hr, hz, hn = gh.chunk(3, dim=1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h, None


def layer_forward(spec, t, x):
    if spec['type'] == 'Embedding':
        return t['weight'][x.long()]
    kind = 'lstm' if spec['type'].startswith('LSTM') else 'gru'
    w = weights(spec, t)
    h_size = spec['out']
    if spec['type'].endswith('Cell'):
        zeros = torch.zeros(x.shape[0], h_size, dtype=DTYPE)
        h, c = step(kind, x, zeros, zeros, w['weight_ih'], w['weight_hh'], t.get('bias_ih'), t.get('bias_hh'))
        return torch.cat([h.reshape(-1), c.reshape(-1)]) if kind == 'lstm' else h
    seq = x.transpose(0, 1) if spec.get('batchFirst') else x
    finals_h, finals_c = [], []
    for k in range(spec.get('numLayers', 1)):
        h = torch.zeros(seq.shape[1], h_size, dtype=DTYPE)
        c = torch.zeros_like(h)
        outs = []
        for s in range(seq.shape[0]):
            h, c = step(kind, seq[s], h, c, w[f'weight_ih_l{k}'], w[f'weight_hh_l{k}'], t.get(f'bias_ih_l{k}'),
                        t.get(f'bias_hh_l{k}'))
            outs.append(h)
        seq = torch.stack(outs)
        finals_h.append(h)
        finals_c.append(c)
    output = seq.transpose(0, 1) if spec.get('batchFirst') else seq
    parts = [output.reshape(-1), torch.stack(finals_h).reshape(-1)]
    if kind == 'lstm':
        parts.append(torch.stack(finals_c).reshape(-1))
    return torch.cat(parts)


def torch_module(spec, state):
    """The same layer as a torch module (float64), for the one-time check of layer_forward."""
    w = weights(spec, state)
    kind = spec['type']
    if kind == 'Embedding':
        m = torch.nn.Embedding(spec['num'], spec['dim'], padding_idx=spec.get('paddingIdx')).to(DTYPE)
    elif kind.endswith('Cell'):
        m = getattr(torch.nn, kind)(spec['in'], spec['out'], bias=spec.get('bias', True)).to(DTYPE)
    else:
        m = getattr(torch.nn, kind)(spec['in'], spec['out'], num_layers=spec.get('numLayers', 1),
                                    bias=spec.get('bias', True), batch_first=spec.get('batchFirst', False)).to(DTYPE)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(w[name] if name in w else state[name])
    return m


def check_against_torch(spec, state, x):
    with torch.no_grad():
        ours = layer_forward(spec, state, x)
        m = torch_module(spec, state)
        kind = spec['type']
        if kind == 'Embedding':
            theirs = m(x.long())
        elif kind == 'LSTMCell':
            h, c = m(x)
            theirs = torch.cat([h.reshape(-1), c.reshape(-1)])
        elif kind == 'GRUCell':
            theirs = m(x)
        elif kind == 'LSTM':
            out, (h, c) = m(x)
            theirs = torch.cat([out.reshape(-1), h.reshape(-1), c.reshape(-1)])
        else:
            out, h = m(x)
            theirs = torch.cat([out.reshape(-1), h.reshape(-1)])
        assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12), f'{spec}: layer_forward differs from torch'


def layer_case(name, spec, x_shape):
    state = layer_state(spec)
    if spec['type'] == 'Embedding':
        x = torch.randint(0, spec['num'], x_shape).to(DTYPE)
        if spec.get('paddingIdx') is not None:
            x.view(-1)[1] = spec['paddingIdx']
        x.view(-1)[2] = x.view(-1)[0]  # a repeated index: its rows' gradients add
    else:
        x = random32(x_shape)
    check_against_torch(spec, state, x)
    differentiable = list(state) if spec['type'] == 'Embedding' else ['x'] + list(state)
    cases = []
    for mode in ('train', 'eval'):
        def forward(t):
            y = layer_forward(spec, t, t['x'])
            if spec['type'] == 'Embedding' and spec.get('paddingIdx') is not None:
                keep = (t['x'] != spec['paddingIdx']).to(DTYPE).unsqueeze(-1)
                y = y * keep + (y * (1 - keep)).detach()  # torch's padding_idx: no gradient into that row
            return y, {}
        y, c, extras, grads, scales = run({'x': x, **state}, differentiable, forward)
        cases.append(case_record(f'{name} {mode}', 'layer', {'spec': spec, 'mode': mode}, {'x': x, **state},
                                 differentiable, y, c, extras, grads, scales))
    return cases


LAYERS = [
    ('nn.LSTM', {'type': 'LSTM', 'in': 3, 'out': 4}, [5, 2, 3]),
    ('nn.LSTM 2 layers, batchFirst, weightNorm dim 0', {'type': 'LSTM', 'in': 3, 'out': 3, 'numLayers': 2,
                                                        'batchFirst': True,
                                                        'weightNorm': {'ih': {'dim': 0}, 'hh': {'dim': 0}}}, [2, 4, 3]),
    ('nn.LSTM T = 1, no bias, weightNorm dim 1 on hh', {'type': 'LSTM', 'in': 2, 'out': 3, 'bias': False,
                                                        'weightNorm': {'hh': {'dim': 1}}}, [1, 3, 2]),
    ('nn.GRU', {'type': 'GRU', 'in': 3, 'out': 4}, [5, 2, 3]),
    ('nn.GRU 2 layers, batchFirst, weightNorm dim 0', {'type': 'GRU', 'in': 3, 'out': 3, 'numLayers': 2,
                                                      'batchFirst': True,
                                                      'weightNorm': {'ih': {'dim': 0}, 'hh': {'dim': 0}}}, [2, 4, 3]),
    ('nn.GRU T = 1, weightNorm dim null', {'type': 'GRU', 'in': 2, 'out': 3,
                                           'weightNorm': {'ih': {'dim': None}, 'hh': {'dim': None}}}, [1, 2, 2]),
    ('nn.LSTMCell', {'type': 'LSTMCell', 'in': 3, 'out': 4}, [2, 3]),
    ('nn.LSTMCell weightNorm dim 0', {'type': 'LSTMCell', 'in': 3, 'out': 4,
                                      'weightNorm': {'ih': {'dim': 0}, 'hh': {'dim': 0}}}, [2, 3]),
    ('nn.GRUCell', {'type': 'GRUCell', 'in': 3, 'out': 4}, [2, 3]),
    ('nn.GRUCell weightNorm dim 0, no bias', {'type': 'GRUCell', 'in': 3, 'out': 4, 'bias': False,
                                              'weightNorm': {'ih': {'dim': 0}, 'hh': {'dim': 0}}}, [2, 3]),
    ('nn.Embedding', {'type': 'Embedding', 'num': 6, 'dim': 4}, [2, 3]),
    ('nn.Embedding paddingIdx', {'type': 'Embedding', 'num': 6, 'dim': 4, 'paddingIdx': 1}, [5]),
]


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    cases = []
    for name, spec, x_shape in LAYERS:
        cases.extend(layer_case(name, spec, x_shape))
    names = [c['name'] for c in cases]
    assert len(names) == len(set(names)), 'case names must be unique'
    header = {
        'generator': 'scripts/make_gradcheck_rnn_fixtures.py',
        'torch': torch.__version__,
        'seed': SEED,
        'note': 'inputs and cotangents are float32 values; outputs and gradients are torch float64 results on those '
                'values; gradients are of L = sum(y * cotangent); y of a sequence layer is [output, h, c] flattened',
    }
    write_cases(OUT, header, cases)
    print(f'wrote {os.path.relpath(OUT)}: {len(cases)} cases, {os.path.getsize(OUT)} bytes, torch {torch.__version__}')


if __name__ == '__main__':
    main()
