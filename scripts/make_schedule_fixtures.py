#!/usr/bin/env python3
"""PyTorch expectations for the learning-rate schedules and gradient clipping (test/optim-schedule.test.ts).

Run with a Python that has torch:  /usr/bin/python3 scripts/make_schedule_fixtures.py
Writes test/fixtures/schedules_torch.json:
- schedules: torch.optim.lr_scheduler's lr of each parameter group over 30 steps (the lr before the first step,
  then after each scheduler.step()), two groups with different lrs;
- clipping: float32 gradients, torch.nn.utils.clip_grad_norm_'s returned total norm and the clipped gradients
  (float64 results on those values), for the 2-norm and the infinity norm, clipping and not clipping.
"""

import os

import torch

from fixture_file import write_cases
from make_gradcheck_fixtures import entry, float64_values, random32

SEED = 20160227
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'schedules_torch.json')
STEPS = 30
LRS = [0.1, 0.02]


def lr_sequence(make):
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD([{'params': [params[0]], 'lr': LRS[0]}, {'params': [params[1]], 'lr': LRS[1]}], lr=LRS[0])
    scheduler = make(opt)
    sequence = [[g['lr'] for g in opt.param_groups]]
    for _ in range(STEPS):
        opt.step()
        scheduler.step()
        sequence.append([g['lr'] for g in opt.param_groups])
    return sequence


def schedule_cases():
    L = torch.optim.lr_scheduler
    specs = [
        ('StepLR', {'stepSize': 7, 'gamma': 0.5}, lambda o: L.StepLR(o, step_size=7, gamma=0.5)),
        ('StepLR', {'stepSize': 3}, lambda o: L.StepLR(o, step_size=3)),
        ('CosineAnnealingLR', {'tMax': 20, 'etaMin': 0.001}, lambda o: L.CosineAnnealingLR(o, T_max=20, eta_min=0.001)),
        ('LinearLR', {'startFactor': 0.25, 'endFactor': 1.0, 'totalIters': 8},
         lambda o: L.LinearLR(o, start_factor=0.25, end_factor=1.0, total_iters=8)),
        ('LinearLR', {'startFactor': 1.0, 'endFactor': 0.1, 'totalIters': 20},
         lambda o: L.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=20)),
        ('warmupCosine', {'warmupSteps': 5, 'totalSteps': 30, 'startFactor': 0.01, 'etaMin': 0.0001},
         lambda o: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.01, end_factor=1.0, total_iters=5),
                                      L.CosineAnnealingLR(o, T_max=25, eta_min=0.0001)], milestones=[5])),
    ]
    return [{'name': f'{kind} {options}', 'kind': kind, 'options': options, 'groupLrs': LRS, 'lrs': lr_sequence(make)}
            for kind, options, make in specs]


def clipping_cases():
    cases = []
    shapes = [[3, 4], [5], [2, 2, 2]]
    for norm_type, max_norm in [(2.0, 1.0), (2.0, 100.0), (float('inf'), 0.5), (float('inf'), 100.0)]:
        grads = [random32(shape, std=0.7) for shape in shapes]
        params = [torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64)) for shape in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
        cases.append({
            'name': f'clipGradNorm normType {norm_type} maxNorm {max_norm}',
            'normType': 'inf' if norm_type == float('inf') else norm_type,
            'maxNorm': max_norm,
            'grads': [entry(g) for g in grads],
            'total': float(total),
            'clipped': [float64_values(p.grad) for p in params],
        })
    return cases


def main():
    torch.manual_seed(SEED)
    header = {'generator': 'scripts/make_schedule_fixtures.py', 'torch': torch.__version__, 'seed': SEED,
              'note': 'schedules: lr per group before the first step and after each of 30 steps; clipping: float32 '
                      'gradients, torch float64 total norm and clipped gradients'}
    cases = schedule_cases() + clipping_cases()
    write_cases(OUT, header, cases)
    print(f'wrote {os.path.relpath(OUT)}: {len(cases)} cases, {os.path.getsize(OUT)} bytes, torch {torch.__version__}')


if __name__ == '__main__':
    main()
