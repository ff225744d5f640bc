// All-reduce bandwidth of the Gloo process group over loopback, 1 to 64 MB of float32:
//   npx weightnorm launch --nproc 2 bench/distributed-allreduce.mjs
// Rank 0 prints, per size, the median time of 10 all-reduces and the "bus bandwidth" as nccl-tests defines it
// (bytes · 2(n−1)/n / time: what each rank's links carry in a ring), so different world sizes compare. It times
// distributed.allReduce on a CPU tensor, so one copy out of the tensor and one back in are included.
import { distributed, tensor } from 'weightnorm';

const { rank, worldSize } = await distributed.init();
for (const megabytes of [1, 4, 16, 64]) {
  const elements = (megabytes * 2 ** 20) / 4;
  const x = tensor(new Float32Array(elements).fill(1), [elements]);
  await distributed.allReduce(x); // warm-up: the pairs' buffers
  const times = [];
  for (let i = 0; i < 10; i++) {
    await distributed.barrier();
    const start = performance.now();
    await distributed.allReduce(x);
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  const ms = times[5];
  const busMBs = ((megabytes * 2 ** 20 * 2 * (worldSize - 1)) / worldSize / (ms / 1000)) / 1e6;
  if (rank === 0) console.log(`${worldSize} ranks, ${megabytes} MB: ${ms.toFixed(2)} ms, bus bandwidth ${busMBs.toFixed(1)} MB/s`);
  x.dispose();
}
await distributed.destroy();
