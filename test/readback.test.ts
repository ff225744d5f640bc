// await t.data(): the asynchronous host readback.
import { describe, expect, it } from 'vitest';

import { backend, DisposedTensorError, randn } from '../ts/index.js';

const devices = ['cpu', ...(backend().cuda.usable ? ['cuda'] : [])] as const;

describe.each(devices)('tensor.data() on %s', (device) => {
  it('resolves to the same values as toArray()', async () => {
    const t = randn([33, 17], { seed: 5, device });
    expect(await t.data()).toEqual(t.toArray());
  });

  it('still resolves when the tensor is disposed while the copy is pending', async () => {
    const t = randn([1000], { seed: 6, device });
    const expected = t.toArray();
    const pending = t.data();
    t.dispose();
    expect(await pending).toEqual(expected);
  });

  it('rejects with DisposedTensorError on a disposed tensor', async () => {
    const t = randn([4], { seed: 7, device });
    t.dispose();
    await expect(t.data()).rejects.toBeInstanceOf(DisposedTensorError);
  });
});
