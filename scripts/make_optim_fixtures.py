#!/usr/bin/env python3
"""Optimizer trajectories from PyTorch in float64, for test/optim-parity.test.ts (which needs no torch).

Run with a Python that has torch (Debian's python3-torch 1.13 here):  /usr/bin/python3 scripts/make_optim_fixtures.py
Writes test/fixtures/optim_torch.json.

Each case runs one torch.optim optimizer (SGD, Adam, Adamax; torch's foreach=False single-tensor code) over three
small parameters for STEPS steps, with gradients given per step. Some steps give a parameter no gradient (grad None:
torch skips it, its state and step count unchanged); one parameter first gets a gradient at step 3, so its momentum
and bias correction start late; one gets an all-zero gradient at one step (a real step for torch). A case with a
schedule sets the lr after each step to initial + (final - initial) * min(1, t / totalSteps) (our linearDecay).

Initial values and gradients are float32 numbers (so the float32 library starts from exactly the same inputs); the
trajectory is float64. The JSON stores, per case, our option names, the initial values, the gradient of each
parameter at each step (null: none), and every parameter's value after each step.
"""
import json
import os

import torch

SEED = 1607  # any fixed value keeps the fixture reproducible
STEPS = 8
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'optim_torch.json')

SHAPES = [[2, 3], [4], [3]]


def has_gradient(param, step):
    """Which parameter has a gradient at a step (1-based): 0 always, 1 from step 3, 2 not at steps 3 and 6."""
    if param == 1:
        return step >= 3
    if param == 2:
        return step not in (3, 6)
    return True


ZERO_GRADIENT = (0, 5)  # parameter 0's gradient at step 5 is all zeros (a step, unlike None)

# (name, optimizer, our options, schedule or None). Every hyperparameter of each optimizer is non-default somewhere.
CASES = [
    ('SGD plain', 'SGD', {'lr': 0.1}, None),
    ('SGD momentum, dampening, weight decay', 'SGD', {'lr': 0.05, 'momentum': 0.9, 'dampening': 0.3, 'weightDecay': 0.02}, None),
    ('SGD Nesterov, weight decay', 'SGD', {'lr': 0.05, 'momentum': 0.8, 'nesterov': True, 'weightDecay': 0.01}, None),
    ('SGD momentum, linearDecay', 'SGD', {'lr': 0.1, 'momentum': 0.5}, {'totalSteps': 6, 'finalLr': 0.01}),
    ('Adam defaults', 'Adam', {'lr': 0.01}, None),
    ('Adam betas, eps, weight decay', 'Adam', {'lr': 0.02, 'betas': [0.8, 0.95], 'eps': 1e-3, 'weightDecay': 0.05}, None),
    ('Adam linearDecay', 'Adam', {'lr': 0.05}, {'totalSteps': 5, 'finalLr': 0.0}),
    ('Adamax defaults', 'Adamax', {'lr': 0.02}, None),
    ('Adamax betas, large eps, weight decay', 'Adamax', {'lr': 0.1, 'betas': [0.9, 0.5], 'eps': 1.0, 'weightDecay': 0.01}, None),
    ('Adamax betas, eps', 'Adamax', {'lr': 0.05, 'betas': [0.7, 0.9], 'eps': 0.1}, None),
]


def torch_optimizer(kind, params, options):
    if kind == 'SGD':
        return torch.optim.SGD(
            params,
            lr=options['lr'],
            momentum=options.get('momentum', 0.0),
            dampening=options.get('dampening', 0.0),
            weight_decay=options.get('weightDecay', 0.0),
            nesterov=options.get('nesterov', False),
            foreach=False,
        )
    cls = torch.optim.Adam if kind == 'Adam' else torch.optim.Adamax
    return cls(
        params,
        lr=options['lr'],
        betas=tuple(options.get('betas', [0.9, 0.999])),
        eps=options.get('eps', 1e-8),
        weight_decay=options.get('weightDecay', 0.0),
        foreach=False,
    )


def float32_normals(generator, shape, std=1.0):
    """float32 samples widened to float64 (exact), so both sides start from the same numbers."""
    return (torch.randn(shape, generator=generator, dtype=torch.float32) * std).to(torch.float64)


def run_case(generator, name, kind, options, schedule):
    initial = [float32_normals(generator, shape) for shape in SHAPES]
    grads = []
    for step in range(1, STEPS + 1):
        row = []
        for i, shape in enumerate(SHAPES):
            if not has_gradient(i, step):
                row.append(None)
            elif (i, step) == ZERO_GRADIENT:
                row.append(torch.zeros(shape, dtype=torch.float64))
            else:
                row.append(float32_normals(generator, shape))
        grads.append(row)

    params = [t.clone().requires_grad_(True) for t in initial]
    optimizer = torch_optimizer(kind, params, options)
    trajectory = []
    for step, row in enumerate(grads, start=1):
        for p, g in zip(params, row):
            p.grad = None if g is None else g.clone()
        optimizer.step()
        if schedule:
            lr = options['lr'] + (schedule['finalLr'] - options['lr']) * min(1.0, step / schedule['totalSteps'])
            for group in optimizer.param_groups:
                group['lr'] = lr
        trajectory.append([p.detach().flatten().tolist() for p in params])

    return {
        'name': name,
        'optimizer': kind,
        'options': options,
        'schedule': schedule,
        'shapes': SHAPES,
        'initial': [t.flatten().tolist() for t in initial],
        'grads': [[None if g is None else g.flatten().tolist() for g in row] for row in grads],
        'expected': trajectory,
    }


def main():
    torch.set_default_dtype(torch.float64)
    generator = torch.Generator().manual_seed(SEED)
    cases = [run_case(generator, *case) for case in CASES]
    fixture = {
        'generator': f'scripts/make_optim_fixtures.py, torch {torch.__version__}, float64, seed {SEED}',
        'steps': STEPS,
        'cases': cases,
    }
    with open(OUT, 'w') as f:
        json.dump(fixture, f, separators=(',', ':'))
        f.write('\n')
    print(f'wrote {OUT}: {len(cases)} cases, {os.path.getsize(OUT)} bytes')


if __name__ == '__main__':
    main()
