// The native kernel tests compare against float64 values from the TypeScript reference (test/reference), written to
// test/fixtures/native_reference/ by scripts/make_native_reference.mjs: the committed files must be exactly what the
// reference and the library's generator produce today, or the two references would drift apart.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { randn, tensor } from '../ts/index.js';
import { uniformStream } from '../ts/rl/random.js';
import { nativeBfloat16Fixture } from './reference/native-bfloat16-fixture.js';
import { libraryInputSource, nativeWeightNormCases, nativeWeightNormFixture } from './reference/native-fixtures.js';
import { nativeKernelFixtures } from './reference/native-kernel-fixtures.js';
import { nativeOpFixtures } from './reference/native-op-fixtures.js';

const fixturePath = fileURLToPath(new URL('./fixtures/native_reference/weightnorm.bin', import.meta.url));

describe('native reference fixtures', () => {
  it('weightnorm.bin is what the TypeScript reference writes today (node scripts/make_native_reference.mjs)', () => {
    const committed = new Uint8Array(readFileSync(fixturePath));
    const fresh = nativeWeightNormFixture(libraryInputSource({ randn, tensor }));
    expect(committed.length, 'size differs: regenerate with node scripts/make_native_reference.mjs').toBe(fresh.length);
    const firstDifference = committed.findIndex((byte, i) => byte !== fresh[i]);
    expect(firstDifference, `first differing byte at ${firstDifference}: regenerate the fixture`).toBe(-1);
    expect(committed.length).toBeLessThan(1 << 20);
  }, 480_000);

  it("starts with the format's magic and holds every case of the list", () => {
    const bytes = new Uint8Array(readFileSync(fixturePath));
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    expect(new TextDecoder().decode(bytes.subarray(0, 8))).toBe('WNREF001');
    expect(view.getUint32(8, true)).toBe(nativeWeightNormCases().length);
  });

  it('bfloat16.bin is what the TypeScript reference writes today (node scripts/make_native_reference.mjs)', () => {
    const committed = new Uint8Array(readFileSync(fileURLToPath(new URL('./fixtures/native_reference/bfloat16.bin', import.meta.url))));
    const fresh = nativeBfloat16Fixture(uniformStream);
    expect(new TextDecoder().decode(committed.subarray(0, 8))).toBe('WNBF1601');
    expect(committed.length, 'size differs: regenerate with node scripts/make_native_reference.mjs').toBe(fresh.length);
    const firstDifference = committed.findIndex((byte, i) => byte !== fresh[i]);
    expect(firstDifference, `first differing byte at ${firstDifference}: regenerate the fixture`).toBe(-1);
    expect(committed.length).toBeLessThan(300 << 10);
  });

  for (const { file, write } of [...nativeOpFixtures, ...nativeKernelFixtures]) {
    it(`${file} is what the TypeScript reference writes today (node scripts/make_native_reference.mjs)`, () => {
      const committed = new Uint8Array(readFileSync(fileURLToPath(new URL(`./fixtures/native_reference/${file}`, import.meta.url))));
      const fresh = write(libraryInputSource({ randn, tensor }));
      expect(new TextDecoder().decode(committed.subarray(0, 8))).toBe('WNOPS001');
      expect(committed.length, 'size differs: regenerate with node scripts/make_native_reference.mjs').toBe(fresh.length);
      const firstDifference = committed.findIndex((byte, i) => byte !== fresh[i]);
      expect(firstDifference, `first differing byte at ${firstDifference}: regenerate the fixture`).toBe(-1);
      expect(committed.length).toBeLessThan(1 << 20);
    }, 120_000);
  }
});
