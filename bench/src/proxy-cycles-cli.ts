/**
 * `node bench/dist/proxy-cycles.js`: the proxy-cycles benchmark alone, printing each figure and
 * its ratio. BENCH_DAEMON_NODE_ARGS passes flags to the daemon's node (e.g. `--cpu-prof
 * --cpu-prof-dir=/tmp/profiles`); BENCH_PROXY_ROUNDS sets the rounds.
 */
import { benchProxyCycles } from "./proxy-cycles.js";

// Unset: the daemon's own flags (as it ships); set (even empty): exactly these.
const nodeArgs = process.env.BENCH_DAEMON_NODE_ARGS?.split(" ").filter(Boolean);
benchProxyCycles((line) => process.stderr.write(`bench: ${line}\n`), nodeArgs ? { nodeArgs } : {})
  .then(({ figures }) => {
    for (const figure of figures) {
      process.stdout.write(
        `${figure.figure}: nix-snapshotter ${figure.ours.toFixed(1)}/s, Go overlay ${figure.baseline.toFixed(1)}/s, ratio ${(figure.ours / figure.baseline).toFixed(2)}x\n`,
      );
    }
  })
  .catch((error: unknown) => {
    process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
