#!/usr/bin/env python3
"""PyTorch float64 expectations for the loss functions in the gradient-check harness (test/gradcheck/).

Run with a Python that has torch:  /usr/bin/python3 scripts/make_gradcheck_loss_fixtures.py
Writes test/fixtures/gradcheck_loss_torch.json; test/gradcheck/registry-loss.ts runs each case with our library.

Cases cover every reduction, the regression losses (MSE, L1, Huber, smooth L1), binary cross-entropy on
probabilities (with inputs at 0 and 1, where PyTorch clamps the log at -100) and on logits (with logits of
magnitude 80 and 1e4, where a naive formula overflows; with weight and posWeight), NLL and cross-entropy over [N, C]
and [N, C, T] with class weights, ignored positions and label smoothing. Only the prediction (input, logits,
log-probabilities) is differentiable: targets, labels and weights are constants, as the library treats them.
"""

import os

import torch
import torch.nn.functional as F

from fixture_file import write_cases
from make_gradcheck_fixtures import op_case, random32

SEED = 20160226
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'gradcheck_loss_torch.json')
REDUCTIONS = ['mean', 'sum', 'none']


def as_loss(y):
    """Our reduced losses have shape [1] (a one-element tensor, as every reduction in the library)."""
    return y.reshape(1) if y.dim() == 0 else y


def regression_cases():
    cases = []
    for reduction in REDUCTIONS:
        inputs = {'input': random32([4, 5]), 'target': random32([4, 5])}
        cases.append(op_case(f'mseLoss {reduction}', 'mseLoss', {'reduction': reduction}, inputs, ['input'],
                             lambda t, r=reduction: (as_loss(F.mse_loss(t['input'], t['target'], reduction=r)), {})))
        cases.append(op_case(f'l1Loss {reduction}', 'l1Loss', {'reduction': reduction}, inputs, ['input'],
                             lambda t, r=reduction: (as_loss(F.l1_loss(t['input'], t['target'], reduction=r)), {})))
        # std 2 puts elements on both sides of delta / beta.
        wide = {'input': random32([3, 6], std=2.0), 'target': random32([3, 6])}
        for delta in [1.0, 0.5]:
            cases.append(op_case(f'huberLoss delta {delta} {reduction}', 'huberLoss', {'reduction': reduction, 'delta': delta},
                                 wide, ['input'],
                                 lambda t, r=reduction, d=delta: (as_loss(F.huber_loss(t['input'], t['target'], reduction=r, delta=d)), {})))
        for beta in [1.0, 0.25, 0.0]:
            cases.append(op_case(f'smoothL1Loss beta {beta} {reduction}', 'smoothL1Loss', {'reduction': reduction, 'beta': beta},
                                 wide, ['input'],
                                 lambda t, r=reduction, b=beta: (as_loss(F.smooth_l1_loss(t['input'], t['target'], reduction=r, beta=b)), {})))
    return cases


def bce_cases():
    cases = []
    for reduction in REDUCTIONS:
        probs = random32([4, 3], low=0.02, high=0.98)
        target = (torch.rand(4, 3) > 0.5).to(torch.float64)
        cases.append(op_case(f'binaryCrossEntropy {reduction}', 'binaryCrossEntropy', {'reduction': reduction},
                             {'input': probs, 'target': target}, ['input'],
                             lambda t, r=reduction: (as_loss(F.binary_cross_entropy(t['input'], t['target'], reduction=r)), {})))
        weight = random32([3], low=0.5, high=2.0)
        cases.append(op_case(f'binaryCrossEntropy weight {reduction}', 'binaryCrossEntropy', {'reduction': reduction},
                             {'input': probs, 'target': random32([4, 3], low=0.0, high=1.0), 'weight': weight}, ['input'],
                             lambda t, r=reduction: (as_loss(F.binary_cross_entropy(t['input'], t['target'], weight=t['weight'], reduction=r)), {})))
        logits = random32([4, 3], std=3.0)
        soft = random32([4, 3], low=0.0, high=1.0)
        cases.append(op_case(f'binaryCrossEntropyWithLogits {reduction}', 'binaryCrossEntropyWithLogits', {'reduction': reduction},
                             {'input': logits, 'target': soft}, ['input'],
                             lambda t, r=reduction: (as_loss(F.binary_cross_entropy_with_logits(t['input'], t['target'], reduction=r)), {})))
        cases.append(op_case(f'binaryCrossEntropyWithLogits weight posWeight {reduction}', 'binaryCrossEntropyWithLogits',
                             {'reduction': reduction},
                             {'input': logits, 'target': soft, 'weight': weight, 'posWeight': random32([3], low=0.5, high=3.0)}, ['input'],
                             lambda t, r=reduction: (as_loss(F.binary_cross_entropy_with_logits(
                                 t['input'], t['target'], weight=t['weight'], pos_weight=t['posWeight'], reduction=r)), {})))
    # Probabilities at exactly 0 and 1 (the clamped log) and logits far beyond exp's float32 range.
    edge = torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 0.25]], dtype=torch.float64)
    edge_target = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    cases.append(op_case('binaryCrossEntropy probabilities 0 and 1', 'binaryCrossEntropy', {'reduction': 'none'},
                         {'input': edge, 'target': edge_target}, ['input'],
                         lambda t: (F.binary_cross_entropy(t['input'], t['target'], reduction='none'), {})))
    big = torch.tensor([[1e4, -1e4, 80.0, -80.0], [-1e4, 1e4, -80.0, 80.0], [0.5, -0.5, 20.0, -20.0]], dtype=torch.float64)
    big_target = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0], [0.3, 0.7, 0.0, 1.0]], dtype=torch.float64)
    for reduction in ['none', 'mean']:
        cases.append(op_case(f'binaryCrossEntropyWithLogits logits 1e4 and 80 {reduction}', 'binaryCrossEntropyWithLogits',
                             {'reduction': reduction}, {'input': big, 'target': big_target}, ['input'],
                             lambda t, r=reduction: (as_loss(F.binary_cross_entropy_with_logits(t['input'], t['target'], reduction=r)), {})))
    cases.append(op_case('binaryCrossEntropyWithLogits logits 1e4 posWeight', 'binaryCrossEntropyWithLogits', {'reduction': 'none'},
                         {'input': big, 'target': big_target, 'posWeight': torch.tensor([2.0, 0.5, 3.0, 1.0], dtype=torch.float64)},
                         ['input'],
                         lambda t: (F.binary_cross_entropy_with_logits(t['input'], t['target'], pos_weight=t['posWeight'],
                                                                       reduction='none'), {})))
    return cases


def class_cases():
    cases = []
    for reduction in REDUCTIONS:
        labels = [2, 0, 4, 1, -100, 3]
        for name, options in [('plain', {}), ('weight', {'weight': True}), ('smoothing', {'labelSmoothing': 0.1}),
                              ('weight smoothing', {'weight': True, 'labelSmoothing': 0.3})]:
            inputs = {'logits': random32([6, 5], std=2.0)}
            if options.get('weight'):
                inputs['weight'] = random32([5], low=0.5, high=2.0)
            smoothing = options.get('labelSmoothing', 0.0)
            config = {'labels': labels, 'reduction': reduction, 'labelSmoothing': smoothing}

            def forward(t, r=reduction, s=smoothing):
                return as_loss(F.cross_entropy(t['logits'], torch.tensor(labels), weight=t.get('weight'), reduction=r,
                                               label_smoothing=s)), {}
            cases.append(op_case(f'crossEntropy [N, C] ignore {name} {reduction}', 'crossEntropy', config, inputs, ['logits'], forward))
        # [N, C, T]: class axis 1, a label per (n, t); ignoreIndex other than the default.
        seq_labels = [[1, 2, 0, 7], [3, 7, 3, 1]]
        inputs = {'logits': random32([2, 4, 4], std=2.0), 'weight': random32([4], low=0.5, high=2.0)}
        config = {'labels': seq_labels, 'reduction': reduction, 'ignoreIndex': 7, 'labelSmoothing': 0.2}
        cases.append(op_case(f'crossEntropy [N, C, T] {reduction}', 'crossEntropy', config, inputs, ['logits'],
                             lambda t, r=reduction: (as_loss(F.cross_entropy(t['logits'], torch.tensor(seq_labels), weight=t['weight'],
                                                                             ignore_index=7, reduction=r, label_smoothing=0.2)), {})))
        log_probs = torch.log_softmax(random32([5, 4], std=2.0), dim=1).to(torch.float32).to(torch.float64)
        nll_labels = [3, 0, -100, 1, 2]
        cases.append(op_case(f'nllLoss ignore {reduction}', 'nllLoss', {'labels': nll_labels, 'reduction': reduction},
                             {'logProbs': log_probs, 'weight': random32([4], low=0.5, high=2.0)}, ['logProbs'],
                             lambda t, r=reduction: (as_loss(F.nll_loss(t['logProbs'], torch.tensor(nll_labels), weight=t['weight'],
                                                                        reduction=r)), {})))
        nll_seq = torch.log_softmax(random32([2, 3, 2, 2]), dim=1).to(torch.float32).to(torch.float64)
        nll_seq_labels = [[[0, 2], [1, 1]], [[2, 0], [0, 1]]]
        cases.append(op_case(f'nllLoss [N, C, H, W] {reduction}', 'nllLoss', {'labels': nll_seq_labels, 'reduction': reduction},
                             {'logProbs': nll_seq}, ['logProbs'],
                             lambda t, r=reduction: (as_loss(F.nll_loss(t['logProbs'], torch.tensor(nll_seq_labels), reduction=r)), {})))
    return cases


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    cases = regression_cases() + bce_cases() + class_cases()
    names = [c['name'] for c in cases]
    assert len(names) == len(set(names)), 'case names must be unique'
    header = {
        'generator': 'scripts/make_gradcheck_loss_fixtures.py',
        'torch': torch.__version__,
        'seed': SEED,
        'note': 'inputs and cotangents are float32 values; outputs and gradients are torch float64 results on those '
                'values; gradients are of L = sum(y * cotangent); only the prediction is differentiable',
    }
    write_cases(OUT, header, cases)
    print(f'wrote {os.path.relpath(OUT)}: {len(cases)} cases, {os.path.getsize(OUT)} bytes, torch {torch.__version__}')


if __name__ == '__main__':
    main()
