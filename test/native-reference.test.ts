// The native kernel tests compare against float64 values from the TypeScript reference (test/reference), written to
// test/fixtures/native_reference/ by scripts/make_native_reference.mjs: the committed files must be exactly what the
// reference and the library's generator produce today, or the two references would drift apart.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { randn, tensor } from '../ts/index.js';
import { nativeWeightNormCases, nativeWeightNormFixture, type InputSource } from './reference/native-fixtures.js';

const fixturePath = fileURLToPath(new URL('./fixtures/native_reference/weightnorm.bin', import.meta.url));

// The inputs as the native test draws them: the library's randn and its bfloat16 rounding.
const source: InputSource = {
  normal(count, seed) {
    const t = randn([count], { seed });
    const values = t.toArray();
    t.dispose();
    return values;
  },
  bfloat16(values) {
    const t = tensor(values, [values.length]);
    const rounded = t.cast('bfloat16');
    const widened = rounded.toArray();
    t.dispose();
    rounded.dispose();
    return widened;
  },
};

describe('native reference fixtures', () => {
  it('weightnorm.bin is what the TypeScript reference writes today (node scripts/make_native_reference.mjs)', () => {
    const committed = new Uint8Array(readFileSync(fixturePath));
    const fresh = nativeWeightNormFixture(source);
    expect(committed.length, 'size differs: regenerate with node scripts/make_native_reference.mjs').toBe(fresh.length);
    const firstDifference = committed.findIndex((byte, i) => byte !== fresh[i]);
    expect(firstDifference, `first differing byte at ${firstDifference}: regenerate the fixture`).toBe(-1);
    expect(committed.length).toBeLessThan(1 << 20);
  }, 480_000);

  it('holds every case, each with a stored channel and element, so no case checks nothing', () => {
    const bytes = new Uint8Array(readFileSync(fixturePath));
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    expect(new TextDecoder().decode(bytes.subarray(0, 8))).toBe('WNREF001');
    expect(view.getUint32(8, true)).toBe(nativeWeightNormCases().length);
  });
});
