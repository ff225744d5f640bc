// Float64 references of the optimizers' update rules, as PyTorch 1.13 writes them (torch.optim.SGD, Adam, Adamax),
// one step at a time on plain arrays: the native kernel tests compare cpu::sgd_step / adam_step / adamax_step (and
// their CUDA twins) with these through test/fixtures/native_reference/optim.bin.

export interface SgdReferenceOptions {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
}

export interface AdamReferenceOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** Parameter and state, updated in place; velocity is unused without momentum. */
export interface OptimizerState {
  p: Float64Array;
  s1: Float64Array; // SGD: velocity; Adam, Adamax: the first moment m
  s2: Float64Array; // Adam: the second moment v; Adamax: the infinity norm u
}

/** One SGD step (step counts from 1: the first step with momentum sets the velocity to the gradient). */
export function sgdStep(state: OptimizerState, grad: ArrayLike<number>, o: SgdReferenceOptions, step: number): void {
  const { p, s1 } = state;
  for (let i = 0; i < p.length; i++) {
    const g = grad[i]! + o.weightDecay * p[i]!;
    let d = g;
    if (o.momentum !== 0) {
      s1[i] = step === 1 ? g : o.momentum * s1[i]! + (1 - o.dampening) * g;
      d = o.nesterov ? g + o.momentum * s1[i]! : s1[i]!;
    }
    p[i] = p[i]! - o.lr * d;
  }
}

/** One Adam step with bias correction (weight decay is the L2 term added to the gradient, as torch.optim.Adam). */
export function adamStep(state: OptimizerState, grad: ArrayLike<number>, o: AdamReferenceOptions, step: number): void {
  const { p, s1, s2 } = state;
  const c1 = 1 - o.beta1 ** step;
  const c2 = 1 - o.beta2 ** step;
  for (let i = 0; i < p.length; i++) {
    const g = grad[i]! + o.weightDecay * p[i]!;
    s1[i] = o.beta1 * s1[i]! + (1 - o.beta1) * g;
    s2[i] = o.beta2 * s2[i]! + (1 - o.beta2) * g * g;
    p[i] = p[i]! - ((o.lr / c1) * s1[i]!) / (Math.sqrt(s2[i]! / c2) + o.eps);
  }
}

/** One Adamax step: PyTorch puts eps inside the max (u = max(beta2 u, |g| + eps)), and corrects only m's bias. */
export function adamaxStep(state: OptimizerState, grad: ArrayLike<number>, o: AdamReferenceOptions, step: number): void {
  const { p, s1, s2 } = state;
  const c1 = 1 - o.beta1 ** step;
  for (let i = 0; i < p.length; i++) {
    const g = grad[i]! + o.weightDecay * p[i]!;
    s1[i] = o.beta1 * s1[i]! + (1 - o.beta1) * g;
    s2[i] = Math.max(o.beta2 * s2[i]!, Math.abs(g) + o.eps);
    p[i] = p[i]! - ((o.lr / c1) * s1[i]!) / s2[i]!;
  }
}
