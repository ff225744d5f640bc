"""Writes a fixture file the tests read: a JSON header, then one case per line (small diffs when regenerated)."""
import json
import os


def write_cases(path, header, cases):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write('{\n')
        for key, value in header.items():
            f.write(f'  {json.dumps(key)}: {json.dumps(value)},\n')
        f.write('  "cases": [\n')
        f.write(',\n'.join('    ' + json.dumps(c, separators=(',', ':')) for c in cases))
        f.write('\n  ]\n}\n')
