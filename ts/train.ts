// A training step and an evaluation loop around the layers, optimizers and tidy(), with the check every long run
// needs: a NaN or infinite loss stops training with the step it happened at, instead of training on garbage.
import { noGrad } from './autograd.js';
import { batches, type BatchOptions, type LabeledData } from './data/index.js';
import { typeError } from './errors.js';
import { crossEntropy } from './functional.js';
import { Module } from './nn.js';
import { Optimizer } from './optim.js';
import { tidy } from './scope.js';
import { Tensor } from './tensor.js';

/** Thrown when the loss is NaN or ±Infinity; `step` is the optimizer step (1-based) that produced it. */
export class NonFiniteLossError extends Error {
  override name = 'NonFiniteLossError';
  constructor(
    readonly step: number,
    readonly loss: number,
  ) {
    super(`training diverged: the loss is ${loss} at step ${step} (lower the learning rate, or check the inputs for NaN)`);
  }
}

/**
 * One optimizer step on (x, labels) with the cross-entropy loss: forward, backward, update, all inside tidy().
 * Returns the loss before the update; throws NonFiniteLossError (without updating) if it is not finite.
 */
export function trainStep(model: Module, optimizer: Optimizer, x: Tensor, labels: Int32Array | readonly number[] | Tensor): number {
  if (!(model instanceof Module)) throw typeError('trainStep: model', 'a Module', model);
  if (!(optimizer instanceof Optimizer)) throw typeError('trainStep: optimizer', 'an Optimizer', optimizer);
  return tidy(() => {
    const loss = crossEntropy(model.forward(x), labels);
    const value = loss.item();
    if (!Number.isFinite(value)) throw new NonFiniteLossError(optimizer.stepCount + 1, value);
    optimizer.zeroGrad();
    loss.backward();
    optimizer.step();
    return value;
  });
}

export interface Evaluation {
  loss: number;
  accuracy: number;
}

/**
 * Mean cross-entropy and accuracy of `model` (in eval mode) over any labeled split (the model's output has one
 * score per class); restores the previous mode.
 */
export function evaluate(model: Module, split: LabeledData, options: Omit<BatchOptions, 'seed' | 'epoch'>): Evaluation {
  const wasTraining = model.training;
  model.eval();
  let lossSum = 0;
  let correct = 0;
  try {
    noGrad(() => {
      for (const [x, labels] of batches(split, options)) {
        tidy(() => {
          const logits = model.forward(x);
          lossSum += crossEntropy(logits, labels).item() * labels.length;
          const scores = logits.toArray();
          const classes = logits.shape[1]!;
          labels.forEach((label, i) => {
            let best = 0;
            for (let c = 1; c < classes; c++) if (scores[i * classes + c]! > scores[i * classes + best]!) best = c;
            if (best === label) correct++;
          });
          x.dispose();
        });
      }
    });
  } finally {
    model.train(wasTraining);
  }
  return { loss: lossSum / split.count, accuracy: correct / split.count };
}
