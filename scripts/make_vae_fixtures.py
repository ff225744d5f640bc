#!/usr/bin/env python3
"""PyTorch float64 expectations for the convolutional VAE of `weightnorm vae` (weightnorm-cli/src/commands/vae-model.ts).

Run with a Python that has torch:  /usr/bin/python3 scripts/make_vae_fixtures.py
Writes test/fixtures/vae_torch.json; test/vae.test.ts loads each case's parameters into our ConvVae and compares.

A tiny VAE (channels 2 and 3, latent 2, batch 3, 28x28 binary digits), plain and weight-normalized (dim 0 for every
layer, as torch.nn.utils.weight_norm's default: per output channel for Linear and Conv2d, per input channel for
ConvTranspose2d), with random float32 parameters, inputs and latent noise eps. Computed in float64 from exactly those
values: mu, logVar, the logits, the two terms of -ELBO summed over the batch (Bernoulli negative log-likelihood and
KL(N(mu, exp(logVar)) || N(0, I))), the loss (their sum / batch) and its gradient for every parameter.
"""

import os

import torch
import torch.nn.functional as F

from fixture_file import write_cases
from make_gradcheck_fixtures import float32_values, float64_values, random32

SEED = 20160228
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'vae_torch.json')
C1, C2, LATENT, BATCH = 2, 3, 2, 3
CODE = 7

# name -> (weight shape, bias channels)
LAYERS = {
    'conv1': ([C1, 1, 4, 4], C1),
    'conv2': ([C2, C1, 4, 4], C2),
    'toLatent': ([2 * LATENT, C2 * CODE * CODE], 2 * LATENT),
    'fromLatent': ([C2 * CODE * CODE, LATENT], C2 * CODE * CODE),
    'deconv1': ([C2, C1, 4, 4], C1),
    'deconv2': ([C1, 1, 4, 4], 1),
}


def weight_of(params, name, weight_norm):
    if not weight_norm:
        return params[f'{name}.weight']
    v, g = params[f'{name}.v'], params[f'{name}.g']
    norm = v.reshape(v.shape[0], -1).norm(dim=1)
    return (g / norm).reshape(-1, *([1] * (v.dim() - 1))) * v


def forward(params, x, eps, weight_norm):
    w = lambda name: weight_of(params, name, weight_norm)
    b = lambda name: params[f'{name}.bias']
    h = F.elu(F.conv2d(x, w('conv1'), b('conv1'), stride=2, padding=1))
    h = F.elu(F.conv2d(h, w('conv2'), b('conv2'), stride=2, padding=1))
    code = F.linear(h.reshape(h.shape[0], -1), w('toLatent'), b('toLatent'))
    mu, log_var = code[:, :LATENT], code[:, LATENT:]
    z = mu + torch.exp(0.5 * log_var) * eps
    h = F.elu(F.linear(z, w('fromLatent'), b('fromLatent'))).reshape(-1, C2, CODE, CODE)
    h = F.elu(F.conv_transpose2d(h, w('deconv1'), b('deconv1'), stride=2, padding=1))
    logits = F.conv_transpose2d(h, w('deconv2'), b('deconv2'), stride=2, padding=1)
    reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction='sum')
    kl = 0.5 * (mu * mu + torch.exp(log_var) - 1.0 - log_var).sum()
    return logits, mu, log_var, reconstruction, kl


def case(name, weight_norm):
    params = {}
    for layer, (shape, bias) in LAYERS.items():
        fan_in = shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1)
        if layer.startswith('deconv'):
            fan_in = shape[0] * shape[2] * shape[3]
        weight = random32(shape, std=1.0 / fan_in ** 0.5)
        if weight_norm:
            params[f'{layer}.v'] = weight
            params[f'{layer}.g'] = random32([shape[0]], low=0.5, high=1.5)
        else:
            params[f'{layer}.weight'] = weight
        params[f'{layer}.bias'] = random32([bias], std=0.1)
    x = (torch.rand(BATCH, 1, 28, 28) > 0.7).to(torch.float64)
    eps = random32([BATCH, LATENT])
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    logits, mu, log_var, reconstruction, kl = forward(leaves, x, eps, weight_norm)
    loss = (reconstruction + kl) / BATCH
    loss.backward()
    return {
        'name': name,
        'weightNorm': weight_norm,
        'channels': [C1, C2],
        'latent': LATENT,
        'params': {k: {'shape': list(v.shape), 'data': float32_values(v)} for k, v in params.items()},
        'x': {'shape': list(x.shape), 'data': float32_values(x)},
        'eps': {'shape': list(eps.shape), 'data': float32_values(eps)},
        'mu': float64_values(mu),
        'logVar': float64_values(log_var),
        'logits': float64_values(logits),
        'reconstruction': float(reconstruction),
        'kl': float(kl),
        'loss': float(loss),
        'grads': {k: float64_values(v.grad) for k, v in leaves.items()},
    }


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    cases = [case('plain', False), case('weight norm', True)]
    header = {
        'generator': 'scripts/make_vae_fixtures.py',
        'torch': torch.__version__,
        'seed': SEED,
        'note': 'parameters, x and eps are float32 values; everything else is torch float64 on those values; '
                'grads are of loss = (reconstruction + kl) / batch',
    }
    write_cases(OUT, header, cases)
    print(f'wrote {os.path.relpath(OUT)}: {len(cases)} cases, {os.path.getsize(OUT)} bytes, torch {torch.__version__}')


if __name__ == '__main__':
    main()
