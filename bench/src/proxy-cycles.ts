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
 */
import { execFile, spawn } from "node:child_process";
import { connect } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { buildGoProgram, goProgramsUnavailable } from "@nix-snapshotter/snapshotter/testing";
import { startDaemonProcess } from "nix-snapshotter/testing";
import { type Figure, median, repositoryRoot, workDirectory } from "./harness.js";

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

/** Runs the Go client: cycles per second of `total` cycles at `concurrency` against `address`. */
export async function goCycles(
  binary: string,
  address: string,
  concurrency: number,
  total: number,
  prefix: string,
): Promise<number> {
  const { stdout } = await execFileAsync(
    binary,
    ["cycles", address, String(concurrency), String(total), prefix],
    { maxBuffer: 1024 * 1024, timeout: 15 * 60_000 },
  ).catch((error: { stderr?: string; message: string }) => {
    throw new Error(
      `go-snapshot-cycles cycles ${address}: ${error.stderr?.trim() || error.message}`,
    );
  });
  const line = stdout.trim().split("\n").at(-1) ?? "";
  const parsed = JSON.parse(line) as { cyclesPerSecond?: unknown };
  if (typeof parsed.cyclesPerSecond !== "number") {
    throw new Error(`go-snapshot-cycles printed no rate: ${line.slice(0, 200)}`);
  }
  return parsed.cyclesPerSecond;
}

export async function benchProxyCycles(
  progress: (line: string) => void,
  options: { rounds?: number; nodeArgs?: string[] } = {},
): Promise<{ figures: Figure[] }> {
  const unavailable = goProgramsUnavailable();
  if (unavailable !== undefined) throw new Error(`cannot build the Go reference: ${unavailable}`);
  progress("proxy cycles: building go-snapshot-cycles (GOPATH mode, Debian's containerd 1.6)");
  const binary = await buildGoProgram(source, "go-snapshot-cycles");
  const rounds = options.rounds ?? Number(process.env.BENCH_PROXY_ROUNDS ?? 2);
  const daemon = await startDaemonProcess({
    mountMode: "hardlink",
    logLevel: "warn",
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
      for (let round = 0; round < rounds; round++) {
        const prefix = `c${concurrency}-r${round}`;
        const measure = async (which: "ours" | "go") =>
          (which === "ours" ? ours : reference).push(
            await goCycles(
              binary,
              which === "ours" ? daemon.address : overlay!.address,
              concurrency,
              total,
              `${prefix}-${which}`,
            ),
          );
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
