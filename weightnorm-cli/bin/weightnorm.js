#!/usr/bin/env node
// The `weightnorm` command's entry: a committed file, so npm links the bin in a fresh checkout before the
// TypeScript build (npm's prepare) has written dist/.
import '../dist/cli.js';
