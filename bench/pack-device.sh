#!/usr/bin/env bash
# Prepares .device/ on THIS machine for bench/gpu.sh on a GPU machine that has no Node.js and no network:
#   .device/node.xz               this machine's node binary (official builds are self-contained but for glibc)
#   .device/node_modules.tar.xz   the repository's node_modules
#   .device/nodedir.tar.xz        Node's top-level C headers: cmake-js builds against a local "nodedir" instead of
#                                 downloading headers (the device has no network)
#   .device/prebuilt/             this machine's weightnorm.node and kernel tests (real code for sm_80/86/89/90 plus
#                                 sm_90 PTX) from the development build (`npm run build`: the addon with its
#                                 benchmark harness): the fallback when the device's own build fails
# Carry ".device", "dist" and "weightnorm-cli/dist" to the device (run tool: carry [".device", "dist",
# "weightnorm-cli/dist"]); all are git-ignored (gpu.sh also rebuilds them with tsc).
# Rerun it before each device run: node_modules changes as packages are added.
# Prints the total it adds; the carried paths and the working tree must stay under 64 MiB together.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DEST=.device
rm -rf "$DEST/prebuilt"; mkdir -p "$DEST/prebuilt"
THREADS=${XZ_THREADS:-2}

node_bin=$(command -v node)
echo "node: $node_bin ($(node --version))"
if [ ! -f "$DEST/node.xz" ] || [ "$node_bin" -nt "$DEST/node.xz" ]; then
  xz -T"$THREADS" -9 -c "$node_bin" >"$DEST/node.xz"
else
  echo "node.xz is up to date"
fi

# Everything under node_modules goes: vitest, typescript and the bench's runtime deps all run on the device (the
# workspace links node_modules/weightnorm -> .. and node_modules/weightnorm-cli travel as symlinks).
# Only npm's own cache folder is left out (it is rebuilt on demand).
tar --exclude='node_modules/.cache' -cf - node_modules | xz -T"$THREADS" -9 >"$DEST/node_modules.tar.xz"

nodedir=$(npm config get nodedir 2>/dev/null || true)
if [ -z "$nodedir" ] || [ "$nodedir" = "undefined" ] || [ ! -f "$nodedir/include/node/node_api.h" ]; then
  nodedir=$(dirname "$(dirname "$node_bin")")
fi
if [ -f "$nodedir/include/node/node_api.h" ]; then
  # Top-level headers only (node.h, node_api.h, js_native_api.h, v8*.h ...): the addon uses N-API alone, and
  # cmake-js only checks that include/node/node.h exists. openssl/, uv/ and friends would add ~50 MB for nothing.
  (cd "$nodedir" && find include/node -maxdepth 1 -type f -print0 | tar --null -T - -cf -) | xz -T"$THREADS" -9 >"$DEST/nodedir.tar.xz"
else
  echo "warning: no Node headers found (npm nodedir or next to node); gpu.sh will build with plain cmake" >&2
  rm -f "$DEST/nodedir.tar.xz"
fi

for artifact in build/Release/weightnorm.node build/weightnorm_backend_ops_test; do
  if [ -f "$artifact" ]; then cp "$artifact" "$DEST/prebuilt/"; else echo "note: $artifact not built; no fallback for it" >&2; fi
done
# Compressed: four CUDA architectures of code in each binary are most of the transfer.
tar -C "$DEST" -cf - prebuilt | xz -T"$THREADS" -9 >"$DEST/prebuilt.tar.xz"
rm -rf "$DEST/prebuilt"

grep -q '^WEIGHTNORM_DEVELOPER_TOOLS:BOOL=ON$' build/CMakeCache.txt 2>/dev/null ||
  echo "warning: build/ is not the development build (npm run build): the prebuilt addon lacks the benchmark harness" >&2
[ -d dist ] && [ -d weightnorm-cli/dist ] || echo "warning: dist/ or weightnorm-cli/dist/ missing: run npm run build:ts first" >&2

echo
du -sh "$DEST"/* dist weightnorm-cli/dist 2>/dev/null
carried=$(du -sb "$DEST" dist weightnorm-cli/dist 2>/dev/null | awk '{s += $1} END {print s}')
# The working tree as the device gets it: everything but the git-ignored outputs (approximated by the big ones).
tree=$(du -sb --exclude=./node_modules --exclude=./build --exclude=./dist --exclude=./.device --exclude=./.git \
  --exclude=./bench/gpu-out --exclude=./weightnorm-cli/dist --exclude=./prebuilds . | awk '{print $1}')
total=$((carried + tree))
awk -v c="$carried" -v t="$tree" 'BEGIN {
  printf "carried (.device + dist + weightnorm-cli/dist): %.1f MiB; working tree: %.1f MiB; total: %.1f MiB (limit 64 MiB)\n",
    c / 1048576, t / 1048576, (c + t) / 1048576 }'
if [ "$total" -ge $((64 * 1048576)) ]; then
  echo "TOO LARGE for the device transfer" >&2
  exit 1
fi
