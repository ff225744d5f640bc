// The training step both CPU-threading scripts time (measure-omp-wait.mjs, measure-cpu-threads.mjs): a
// weight-normalized MLP 784-256-256-10, batch 100, Adam, trainStep() on the built package (npm run build).
// Returns the step times after `warmup` untimed steps, sorted, how many timed steps ran at each thread count, and
// the thread count at the end.
export async function timeMlpSteps({ threads, steps, warmup }) {
  const { nn, optim, randn, setNumThreads, trainStep, backend } = await import('../dist/index.js');
  setNumThreads(threads);
  const model = new nn.Sequential(new nn.Linear(784, 256, { weightNorm: true }), new nn.ReLU(), new nn.Linear(256, 256, { weightNorm: true }), new nn.ReLU(), new nn.Linear(256, 10, { weightNorm: true }));
  const optimizer = new optim.Adam(model.parameters(), { lr: 1e-3 });
  const x = randn([100, 784], { seed: 1 });
  const labels = Int32Array.from({ length: 100 }, (_, i) => i % 10);
  const times = [];
  const threadSteps = {};
  for (let i = 0; i < warmup + steps; i++) {
    const t0 = performance.now();
    trainStep(model, optimizer, x, labels);
    if (i < warmup) continue;
    times.push(performance.now() - t0);
    const now = backend().cpu.threads;
    threadSteps[now] = (threadSteps[now] ?? 0) + 1;
  }
  times.sort((a, b) => a - b);
  return { times, threadSteps, threads: backend().cpu.threads };
}
