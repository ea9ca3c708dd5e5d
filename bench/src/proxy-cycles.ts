/**
 * Snapshot operation cycles over the proxy Snapshots API, without containerd in between: the
 * daemon against containerd's own overlay snapshotter served by a small Go program
 * (`go-snapshot-cycles serve`: `snapshots/overlay` + `contrib/snapshotservice`, containerd 1.6
 * from Debian's packaged sources). One Go client (`go-snapshot-cycles cycles`, containerd's
 * `snapshots/proxy` on one gRPC connection, as containerd dials a proxy plugin) drives both in
 * the same run, so the two numbers differ only by the server. A cycle is Prepare + Mounts +
 * Commit + View + Stat + Remove(view) + Remove(committed) of plain snapshots.
 *
 * Run alone: `node bench/dist/proxy-cycles.js` (root; src/proxy-cycles-cli.ts).
 * BENCH_PROXY_ROUNDS (default 2) runs the pair that many times, alternating which server goes
 * first; the figure is the upper median (of 2 rounds: the better one).
 * BENCH_PROXY_WARMUP (default 600) cycles run against each server at each concurrency before the
 * timed rounds, untimed for the figure (their rates are printed): the daemon is a long-running
 * process, and its first few thousand calls run code that V8 has not yet optimised (a fresh
 * daemon's first 300 cycles ran at 0.77-0.89x of its later rounds). The Go server gets the same
 * warm-up (its files, the page cache and its bolt file see the same history).
 * BENCH_PROXY_CALLS=1: per call, the client's latency (p50/p90/mean of each of the seven calls,
 * GO_SNAPSHOT_CYCLES_CALLS in the Go client) for both servers, and the daemon's own time per
 * method (the mean of `nix_snapshotter_grpc_request_duration_seconds` over that run: from the
 * stream's headers to the encoded answer), printed after each run.
 */
import { execFile, spawn } from "node:child_process";
import { connect } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { buildGoProgram, goProgramsUnavailable } from "@nix-snapshotter/snapshotter/testing";
import { startDaemonProcess } from "nix-snapshotter/testing";
import { type Figure, freePort, median, repositoryRoot, workDirectory } from "./harness.js";

const execFileAsync = promisify(execFile);

export const proxyCyclesSection = "Snapshot op cycles over the proxy API vs Go overlay";

const source = join(repositoryRoot, "bench", "src", "go-snapshot-cycles", "main.go");

const delay = (milliseconds: number) => new Promise((resolve) => setTimeout(resolve, milliseconds));

export interface ProxyServer {
  address: string;
  stop(): Promise<void>;
}

async function waitForSocket(address: string, exited: () => boolean): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited()) throw new Error(`the server of ${address} exited before it listened`);
    const ready = await new Promise<boolean>((resolve) => {
      const socket = connect(address);
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (ready) return;
    if (Date.now() > deadline) throw new Error(`nothing listened on ${address} within 30 s`);
    await delay(50);
  }
}

/** containerd's overlay snapshotter over the proxy API, in a fresh temporary root. */
export async function startGoOverlay(binary: string): Promise<ProxyServer> {
  const work = await workDirectory("bench-go-overlay-");
  const address = join(work.path, "overlay.sock");
  const root = join(work.path, "root");
  let stderr = "";
  const child = spawn(binary, ["serve", root, address], { stdio: ["ignore", "ignore", "pipe"] });
  child.stderr.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4096);
  });
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.once("exit", () => {
      exited = true;
      resolve();
    }),
  );
  const stop = async () => {
    if (!exited) child.kill("SIGTERM");
    await Promise.race([exit, delay(20_000)]);
    if (!exited) child.kill("SIGKILL");
    await exit;
    await work.remove();
  };
  try {
    await waitForSocket(address, () => exited);
  } catch (error) {
    await stop();
    throw new Error(`${(error as Error).message}\n${stderr}`);
  }
  return { address, stop };
}

/** The client's latency of one call over a run, in milliseconds (GO_SNAPSHOT_CYCLES_CALLS). */
export interface CallLatency {
  n: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
}

/** Sum (seconds) and count of the daemon's request-duration histogram, by method (all codes). */
async function daemonDurations(port: number): Promise<Map<string, { sum: number; count: number }>> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`, {
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  if (text.length > 16 * 1024 * 1024) throw new Error("metrics page over 16 MiB");
  const byMethod = new Map<string, { sum: number; count: number }>();
  const pattern =
    /^nix_snapshotter_grpc_request_duration_seconds_(sum|count)\{[^}]*method="([A-Za-z]+)"[^}]*\} (\S+)$/gm;
  for (const match of text.matchAll(pattern)) {
    const entry = byMethod.get(match[2]!) ?? { sum: 0, count: 0 };
    entry[match[1] as "sum" | "count"] += Number(match[3]);
    byMethod.set(match[2]!, entry);
  }
  return byMethod;
}

/** Runs the Go client: cycles per second of `total` cycles at `concurrency` against `address`. */
export async function goCycles(
  binary: string,
  address: string,
  concurrency: number,
  total: number,
  prefix: string,
): Promise<number> {
  return (await goCyclesTimed(binary, address, concurrency, total, prefix, false)).rate;
}

/** {@link goCycles}, with each call's client-side latency when `calls`. */
export async function goCyclesTimed(
  binary: string,
  address: string,
  concurrency: number,
  total: number,
  prefix: string,
  calls: boolean,
): Promise<{ rate: number; calls?: Record<string, CallLatency> }> {
  const { stdout } = await execFileAsync(
    binary,
    ["cycles", address, String(concurrency), String(total), prefix],
    {
      maxBuffer: 1024 * 1024,
      timeout: 15 * 60_000,
      ...(calls ? { env: { ...process.env, GO_SNAPSHOT_CYCLES_CALLS: "1" } } : {}),
    },
  ).catch((error: { stderr?: string; message: string }) => {
    throw new Error(
      `go-snapshot-cycles cycles ${address}: ${error.stderr?.trim() || error.message}`,
    );
  });
  const line = stdout.trim().split("\n").at(-1) ?? "";
  const parsed = JSON.parse(line) as {
    cyclesPerSecond?: unknown;
    calls?: Record<string, CallLatency>;
  };
  if (typeof parsed.cyclesPerSecond !== "number") {
    throw new Error(`go-snapshot-cycles printed no rate: ${line.slice(0, 200)}`);
  }
  return {
    rate: parsed.cyclesPerSecond,
    ...(calls && parsed.calls ? { calls: parsed.calls } : {}),
  };
}

const ms = (value: number) => value.toFixed(2);

export async function benchProxyCycles(
  progress: (line: string) => void,
  options: { rounds?: number; warmup?: number; nodeArgs?: string[] } = {},
): Promise<{ figures: Figure[] }> {
  const unavailable = goProgramsUnavailable();
  if (unavailable !== undefined) throw new Error(`cannot build the Go reference: ${unavailable}`);
  progress("proxy cycles: building go-snapshot-cycles (GOPATH mode, Debian's containerd 1.6)");
  const binary = await buildGoProgram(source, "go-snapshot-cycles");
  const rounds = options.rounds ?? Number(process.env.BENCH_PROXY_ROUNDS ?? 2);
  const warmup = options.warmup ?? Number(process.env.BENCH_PROXY_WARMUP ?? 600);
  if (!Number.isSafeInteger(warmup) || warmup < 0) {
    throw new Error(`BENCH_PROXY_WARMUP must be a whole number of cycles, not ${warmup}`);
  }
  const calls = process.env.BENCH_PROXY_CALLS === "1";
  const metricsPort = calls ? await freePort() : undefined;
  const daemon = await startDaemonProcess({
    mountMode: "hardlink",
    logLevel: "warn",
    ...(metricsPort === undefined
      ? {}
      : { extraConfig: `metrics_address = "127.0.0.1:${metricsPort}"\n` }),
    ...(options.nodeArgs ? { nodeArgs: options.nodeArgs } : {}),
  });
  let overlay: ProxyServer | undefined;
  try {
    overlay = await startGoOverlay(binary);
    const figures: Figure[] = [];
    for (const [concurrency, total] of [
      [1, 300],
      [8, 600],
    ] as const) {
      const ours: number[] = [];
      const reference: number[] = [];
      if (warmup > 0) {
        const rates: string[] = [];
        for (const [name, address] of [
          ["nix-snapshotter", daemon.address],
          ["Go overlay", overlay.address],
        ] as const) {
          const rate = await goCycles(binary, address, concurrency, warmup, `c${concurrency}-warm`);
          rates.push(`${name} ${rate.toFixed(0)}/s`);
        }
        progress(
          `proxy cycles, concurrency ${concurrency}, warm-up of ${warmup} cycles (not counted): ${rates.join(", ")}`,
        );
      }
      for (let round = 0; round < rounds; round++) {
        const prefix = `c${concurrency}-r${round}`;
        const measure = async (which: "ours" | "go") => {
          const before = metricsPort !== undefined && which === "ours";
          const metricsBefore = before ? await daemonDurations(metricsPort) : undefined;
          const result = await goCyclesTimed(
            binary,
            which === "ours" ? daemon.address : overlay!.address,
            concurrency,
            total,
            `${prefix}-${which}`,
            calls,
          );
          (which === "ours" ? ours : reference).push(result.rate);
          if (result.calls) {
            const server =
              metricsBefore === undefined ? undefined : await daemonDurations(metricsPort!);
            for (const [call, latency] of Object.entries(result.calls)) {
              const method = call.replace(/\(.*\)$/, "");
              const after = server?.get(method);
              const earlier = metricsBefore?.get(method) ?? { sum: 0, count: 0 };
              const own =
                after && after.count > earlier.count
                  ? `, daemon's own mean ${ms((1000 * (after.sum - earlier.sum)) / (after.count - earlier.count))}`
                  : "";
              progress(
                `proxy calls, ${which === "ours" ? "nix-snapshotter" : "Go overlay"}, concurrency ${concurrency}, round ${round + 1}, ${call}: p50 ${ms(latency.p50)} p90 ${ms(latency.p90)} p99 ${ms(latency.p99)} mean ${ms(latency.mean)} ms (client)${own}`,
              );
            }
          }
        };
        // Alternate the order: the machine's load drifts during a run.
        for (const which of round % 2 === 0
          ? (["ours", "go"] as const)
          : (["go", "ours"] as const)) {
          await measure(which);
        }
        progress(
          `proxy cycles, concurrency ${concurrency}, round ${round + 1}: nix-snapshotter ${ours.at(-1)!.toFixed(0)}/s, Go overlay ${reference.at(-1)!.toFixed(0)}/s (${(ours.at(-1)! / reference.at(-1)!).toFixed(2)}x)`,
        );
      }
      figures.push({
        section: proxyCyclesSection,
        figure: `${total} cycles, concurrency ${concurrency}`,
        ours: median(ours),
        baseline: median(reference),
        unit: "cycles/s",
      });
    }
    return { figures };
  } finally {
    await overlay?.stop();
    await daemon.cleanup();
  }
}
