// Module.summary and nn.parameterCount, and a user-written Module with two inputs (registerModule /
// registerParameter), as the README shows them.
import { describe, expect, it } from 'vitest';

import { nn, randn, Tensor } from '../ts/index.js';

class TwoInputs extends nn.Module<[Tensor, Tensor]> {
  readonly fromA: nn.Linear;
  readonly weightB: Tensor;
  constructor() {
    super();
    this.fromA = this.registerModule('fromA', new nn.Linear(6, 4, { weightNorm: true }));
    this.weightB = this.registerParameter('weightB', randn([3, 4], { seed: 3 }));
  }
  forward(a: Tensor, b: Tensor): Tensor {
    return nn.functional.add(this.fromA.forward(a), nn.functional.matmul(b, this.weightB));
  }
}

describe('Module.summary and nn.parameterCount', () => {
  it('counts each tensor once, names every layer, and gives output shapes for an input shape', () => {
    const model = new nn.Sequential(new nn.Conv2d(1, 4, 3, { padding: 1, weightNorm: true }), new nn.BatchNorm(4), new nn.ReLU(), new nn.Flatten(), new nn.Linear(100, 3));
    expect(nn.parameterCount(model)).toBe(36 + 4 + 4 + 4 + 4 + 300 + 3);
    const table = model.summary([2, 1, 5, 5]);
    const lines = table.split('\n');
    expect(lines[0]).toMatch(/^Layer\s+Type\s+Output shape\s+Params$/);
    expect(lines.find((l) => l.includes('Conv2d'))).toMatch(/0\s+Conv2d\s+\[2, 4, 5, 5\]\s+44$/);
    expect(lines.find((l) => l.includes('Flatten'))).toMatch(/\[2, 100\]\s+0$/);
    expect(lines.find((l) => l.includes('Linear'))).toMatch(/\[2, 3\]\s+303$/);
    expect(table).toContain('Trainable params: 355');
    expect(table).toContain('Non-trainable params: 8 (buffers)');
    expect(model.summary()).toMatch(/Conv2d\s+-\s+44/);
  });

  it('changes nothing: modes, running statistics, dropout streams and forward methods stay as they were', () => {
    const model = new nn.Sequential(new nn.Linear(5, 6), new nn.BatchNorm(6), new nn.Dropout(0.5), new nn.Linear(6, 2));
    model.layers[3]!.eval();
    const before = Object.values(model.stateDict()).map((t) => Buffer.from(t.toArray().buffer));
    const streams = JSON.stringify(model.namedRandomStreams());
    model.summary([4, 5]);
    expect(model.layers.map((l) => l.training)).toEqual([true, true, true, false]);
    expect(Object.values(model.stateDict()).map((t) => Buffer.from(t.toArray().buffer))).toEqual(before);
    expect(JSON.stringify(model.namedRandomStreams())).toBe(streams);
    expect(Object.prototype.hasOwnProperty.call(model.layers[0], 'forward')).toBe(false);
  });

  it('a custom module with two inputs: its registered child and parameter are named, counted and summarized', () => {
    const m = new TwoInputs();
    expect(Object.keys(m.stateDict()).sort()).toEqual(['fromA.bias', 'fromA.g', 'fromA.v', 'weightB']);
    expect(nn.parameterCount(m)).toBe(24 + 4 + 4 + 12);
    expect(m.forward(randn([2, 6], { seed: 1 }), randn([2, 3], { seed: 2 })).shape).toEqual([2, 4]);
    const table = m.summary([[2, 6], [2, 3]]);
    expect(table).toMatch(/\(model\)\s+TwoInputs\s+\[2, 4\]\s+12/);
    expect(table).toMatch(/fromA\s+Linear\s+\[2, 4\]\s+32/);
    expect(() => m.summary('big' as never)).toThrow(/TwoInputs.summary: inputShape: expected a shape/);
    expect(() => nn.parameterCount({} as never)).toThrow(TypeError);
  });
});
