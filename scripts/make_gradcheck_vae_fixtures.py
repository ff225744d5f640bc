#!/usr/bin/env python3
"""PyTorch float64 expectations for nn.functional.gaussianKl in the gradient-check harness (test/gradcheck/).

Run with a Python that has torch:  /usr/bin/python3 scripts/make_gradcheck_vae_fixtures.py
Writes test/fixtures/gradcheck_vae_torch.json; test/gradcheck/registry-vae.ts runs each case with our library.

gaussianKl(mu, logVar) = 0.5 * (mu^2 + exp(logVar) - 1 - logVar) per element (the KL of N(mu, exp(logVar)) from
N(0, 1)), with every reduction; torch has no such function, so the reference is that formula in float64. Cases:
random [batch, latent] inputs, log-variances of magnitude 30 to 80 (exp(80) is within float32's range, exp(-80)
underflows towards 0 while the -logVar term dominates; also a case with negative ones only), log-variances near 0 (where exp(logVar) - 1 - logVar
cancels), and a rank-3 input. Both mu and logVar are differentiable.
"""

import os

import torch

from fixture_file import write_cases
from make_gradcheck_fixtures import op_case, random32

SEED = 20160227
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'gradcheck_vae_torch.json')
REDUCTIONS = ['mean', 'sum', 'none']


def gaussian_kl(mu, log_var, reduction):
    per_element = 0.5 * (mu * mu + torch.exp(log_var) - 1.0 - log_var)
    if reduction == 'none':
        return per_element
    return (per_element.sum() if reduction == 'sum' else per_element.mean()).reshape(1)


def kl_case(name, reduction, mu, log_var):
    return op_case(f'gaussianKl {name} {reduction}', 'gaussianKl', {'reduction': reduction},
                   {'mu': mu, 'logVar': log_var}, ['mu', 'logVar'],
                   lambda t, r=reduction: (gaussian_kl(t['mu'], t['logVar'], r), {}))


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    cases = []
    for reduction in REDUCTIONS:
        cases.append(kl_case('[4, 6]', reduction, random32([4, 6]), random32([4, 6], std=1.5)))
        large = torch.tensor([[80.0, -80.0, 30.0, -30.0], [60.0, -60.0, 0.5, -45.0]], dtype=torch.float64)
        cases.append(kl_case('large |logVar|', reduction, random32([2, 4], std=2.0), large))
        cases.append(kl_case('logVar near 0', reduction, random32([3, 5], std=0.01), random32([3, 5], std=1e-3)))
        # Only large negative log-variances: the outputs are ~|logVar|/2, so each is measured at its own scale (in
        # the case above exp(80) sets the scale).
        negative = torch.tensor([[-80.0, -30.0, -45.0], [-60.0, -0.6, -12.0]], dtype=torch.float64)
        cases.append(kl_case('large negative logVar', reduction, random32([2, 3], std=2.0), negative))
    cases.append(kl_case('[2, 3, 4]', 'none', random32([2, 3, 4]), random32([2, 3, 4])))
    names = [c['name'] for c in cases]
    assert len(names) == len(set(names)), 'case names must be unique'
    header = {
        'generator': 'scripts/make_gradcheck_vae_fixtures.py',
        'torch': torch.__version__,
        'seed': SEED,
        'note': 'inputs and cotangents are float32 values; outputs and gradients are torch float64 results on those '
                'values; gradients are of L = sum(y * cotangent); mu and logVar are both differentiable',
    }
    write_cases(OUT, header, cases)
    print(f'wrote {os.path.relpath(OUT)}: {len(cases)} cases, {os.path.getsize(OUT)} bytes, torch {torch.__version__}')


if __name__ == '__main__':
    main()
