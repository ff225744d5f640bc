// The benchmark's parts, in a module of its own so that the CLI can list them without loading the benchmark.
/**
 * weightnorm: the weight-norm kernels (float32 and bfloat16); gemm, linear, mnist, lstm: the side-by-side suites
 * against PyTorch; training: whole training steps of a CNN and of the demo MLP, plain and weight-normalized, against
 * PyTorch eager; conv: the convolution layers' training step, weight norm against plain; vocoder: HiFi-GAN V1's
 * generator, inference (real-time factor) and a WN vs plain training step.
 */
export const SUITES = ['weightnorm', 'gemm', 'linear', 'mnist', 'training', 'lstm', 'conv', 'vocoder'] as const;
export type Suite = (typeof SUITES)[number];
