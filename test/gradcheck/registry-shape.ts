// The gradient-check entries of the shape ops (ts/shape.ts), whose cases are in test/fixtures/gradcheck_shape_torch.json
// (scripts/make_gradcheck_shape_fixtures.py). Views and copies move values without arithmetic, so they are held to
// the elementwise bound (they are in fact exact); the index ops' backwards (and scatterAdd's forward) add up the
// terms that land on one element.
import { nn, type Tensor, tensor } from '../../ts/index.js';
import type { OpConfig } from './fixture.js';
import { accumulation, ELEMENTWISE, type OpEntry } from './entry.js';

const F = nn.functional;

function need(t: Record<string, Tensor>, name: string): Tensor {
  const value = t[name];
  if (!value) throw new RangeError(`gradcheck: the fixture case has no input '${name}'`);
  return value;
}

function number(config: OpConfig, key: string): number {
  const value = config[key];
  if (typeof value !== 'number') throw new TypeError(`gradcheck: config.${key}: expected a number, received ${JSON.stringify(value)}`);
  return value;
}

/** An optional number of the config: undefined when the case leaves it out (the op's default is then checked). */
const optionalNumber = (config: OpConfig, key: string): number | undefined => (config[key] === undefined ? undefined : number(config, key));

/** The case's int32 index tensor ({ shape, data } in the config), on the device of `like`. */
function indexOf(config: OpConfig, like: Tensor): Tensor {
  const { shape, data } = config.index as { shape: number[]; data: number[] };
  return tensor(Int32Array.from(data), shape, { device: like.device, dtype: 'int32' });
}

/** The pieces of a split or chunk joined again, so that one output carries every piece's values and gradients. */
const joined = (pieces: Tensor[], dim: number): Tensor => F.concat(pieces, dim);

export const SHAPE_OPS: Record<string, OpEntry> = {
  view: { run: (t, c) => ({ y: F.view(need(t, 'x'), c.shape as number[]) }), tolerance: ELEMENTWISE },
  squeeze: { run: (t, c) => ({ y: F.squeeze(need(t, 'x'), optionalNumber(c, 'dim')) }), tolerance: ELEMENTWISE },
  unsqueeze: { run: (t, c) => ({ y: F.unsqueeze(need(t, 'x'), number(c, 'dim')) }), tolerance: ELEMENTWISE },
  contiguous: { run: (t) => ({ y: F.contiguous(need(t, 'x')) }), tolerance: ELEMENTWISE },
  clone: { run: (t) => ({ y: F.clone(need(t, 'x')) }), tolerance: ELEMENTWISE },
  expand: { run: (t, c) => ({ y: F.expand(need(t, 'x'), c.sizes as number[]) }), tolerance: accumulation(8, 'the backward sums dy over the 8 copies of each element') },
  transpose: { run: (t, c) => ({ y: F.transpose(need(t, 'x'), number(c, 'dim0'), number(c, 'dim1')) }), tolerance: ELEMENTWISE },
  permute: { run: (t, c) => ({ y: F.permute(need(t, 'x'), c.dims as number[]) }), tolerance: ELEMENTWISE },
  slice: {
    run: (t, c) => ({ y: F.slice(need(t, 'x'), number(c, 'dim'), optionalNumber(c, 'start'), optionalNumber(c, 'end'), optionalNumber(c, 'step')) }),
    tolerance: ELEMENTWISE,
  },
  narrow: { run: (t, c) => ({ y: F.narrow(need(t, 'x'), number(c, 'dim'), number(c, 'start'), number(c, 'length')) }), tolerance: ELEMENTWISE },
  split: {
    run: (t, c) => ({ y: joined(F.split(need(t, 'x'), c.sizeOrSections as number | number[], number(c, 'dim')), number(c, 'dim')) }),
    tolerance: ELEMENTWISE,
  },
  chunk: { run: (t, c) => ({ y: joined(F.chunk(need(t, 'x'), number(c, 'chunks'), number(c, 'dim')), number(c, 'dim')) }), tolerance: ELEMENTWISE },
  flip: { run: (t, c) => ({ y: F.flip(need(t, 'x'), c.dims as number[]) }), tolerance: ELEMENTWISE },
  concat: { run: (t, c) => ({ y: F.concat([need(t, 'a'), need(t, 'b'), need(t, 'c')], number(c, 'dim')) }), tolerance: ELEMENTWISE },
  cat: { run: (t, c) => ({ y: F.cat([need(t, 'a'), need(t, 'b')], number(c, 'dim')) }), tolerance: ELEMENTWISE },
  stack: { run: (t, c) => ({ y: F.stack([need(t, 'a'), need(t, 'b')], number(c, 'dim')) }), tolerance: ELEMENTWISE },
  indexSelect: {
    run: (t, c) => ({ y: F.indexSelect(need(t, 'x'), number(c, 'dim'), indexOf(c, need(t, 'x'))) }),
    tolerance: accumulation(3, 'the backward adds the gradients of an index repeated up to 3 times'),
  },
  gather: {
    run: (t, c) => ({ y: F.gather(need(t, 'x'), number(c, 'dim'), indexOf(c, need(t, 'x'))) }),
    tolerance: accumulation(6, 'the backward adds the gradients of up to 6 positions that gathered one element'),
  },
  scatterAdd: {
    run: (t, c) => ({ y: F.scatterAdd(need(t, 'x'), number(c, 'dim'), indexOf(c, need(t, 'x')), need(t, 'src')) }),
    tolerance: accumulation(5, 'x plus up to 4 src values landing on one element'),
  },
};
