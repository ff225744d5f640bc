// `require('weightnorm')` from CommonJS. The package is an ES module: Node versions that can require() one
// (22.12+, 20.19+) get it; older ones would otherwise fail with ERR_REQUIRE_ESM or a puzzling
// ERR_PACKAGE_PATH_NOT_EXPORTED, so they get a message that says what to write instead.
function loadEsm(): unknown {
  try {
    return require('./index.js');
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'ERR_REQUIRE_ESM' || code === 'ERR_REQUIRE_ASYNC_MODULE') {
      throw new Error(
        "weightnorm is an ES module and this Node cannot require() it: use `import { ... } from 'weightnorm'`, " +
          "or `const weightnorm = await import('weightnorm')` from CommonJS (Node 20.19+ and 22.12+ also allow require)",
        { cause: error },
      );
    }
    throw error;
  }
}

export = loadEsm();
