import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, openSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { Health } from "@nix-snapshotter/api/health/v1";
import { TEST_GC_ROOTS_PARENT } from "@nix-snapshotter/nix-store/testing";
import {
  createRemoteSnapshotter,
  defaultMountMode,
  type NixMountMode,
  type Snapshotter,
} from "@nix-snapshotter/snapshotter";
import { daemonNodeFlags } from "../node-flags.js";

/** The built daemon (`pnpm build` first). */
export const daemonEntry = fileURLToPath(new URL("../../dist/main.js", import.meta.url));

/** Parent of every test daemon's GC roots directory (see docs/development.md). */
export const testGcRootsParent = TEST_GC_ROOTS_PARENT;

export interface DaemonProcessOptions {
  /** One of the snapshotter's `nixMountModes` (default: the first). */
  mountMode?: NixMountMode;
  /** TOML lines appended to the generated config (must not repeat its keys). */
  extraConfig?: string;
  /** Extra flags after `-c <config>`. */
  args?: string[];
  /** Passed as `--address` (overriding the file); the helper then waits on this socket. */
  addressFlag?: string;
  /** Passed as `--root` (overriding the file). */
  rootFlag?: string;
  /** GC roots directory (default: a fresh one under {@link testGcRootsParent}). */
  gcRootsDir?: string;
  env?: NodeJS.ProcessEnv;
  /** Node flags before the daemon's entry (default: `daemonNodeFlags`, as the daemon ships). */
  nodeArgs?: string[];
  /** The daemon's `-l` (default `debug`; the benchmarks pass `warn`). */
  logLevel?: string;
  /** Milliseconds to wait for the health service (default 30 000). */
  readyTimeoutMs?: number;
  /** Serve the CRI ImageService, forwarding to containerd at this socket (default: disabled). */
  imageService?: { containerdAddress: string };
}

export interface DaemonProcess {
  child: ChildProcess;
  /** The private directory: config.toml, root/, run/<socket>, daemon.log. */
  dir: string;
  address: string;
  root: string;
  configPath: string;
  gcRootsDir: string;
  transport: Transport;
  /** A Snapshotter calling the daemon over its socket. */
  snapshotter: Snapshotter;
  log(): Promise<string>;
  /** Sends `signal` (default SIGTERM) and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** stop() plus removal of the directory, the GC roots directory and a `--root` flag's
   * directory. Idempotent. */
  cleanup(): Promise<void>;
}

/** A gRPC transport over a unix socket (HTTP/2 prior knowledge), and a way to close it. */
export function unixGrpcTransport(path: string): {
  transport: Transport;
  close(): void;
} {
  const sessionManager = new Http2SessionManager("http://localhost", undefined, {
    createConnection: () => connect(path),
  });
  return {
    transport: createGrpcTransport({ baseUrl: "http://localhost", sessionManager }),
    close: () => sessionManager.abort(),
  };
}

const delay = (milliseconds: number) => new Promise((resolve) => setTimeout(resolve, milliseconds));

/**
 * Runs the built daemon as a child process with a private config, root, socket and GC roots
 * directory, and waits until its health service answers SERVING. The e2e tests of this app and
 * the benchmarks (bench/, through the `nix-snapshotter/testing` export) use it.
 */
export async function startDaemonProcess(
  options: DaemonProcessOptions = {},
): Promise<DaemonProcess> {
  if (!existsSync(daemonEntry)) throw new Error(`${daemonEntry} missing: run pnpm build`);
  const dir = await mkdtemp(join(tmpdir(), "nix-snapshotter-daemon-"));
  const fileAddress = join(dir, "run", "nix-snapshotter.sock");
  const fileRoot = join(dir, "root");
  const address = options.addressFlag ?? fileAddress;
  const root = options.rootFlag ?? fileRoot;
  const configPath = join(dir, "config.toml");
  const logPath = join(dir, "daemon.log");
  const gcRootsDir =
    options.gcRootsDir ??
    join(testGcRootsParent, `daemon-${process.pid}-${randomBytes(4).toString("hex")}`);
  await writeFile(
    configPath,
    [
      `address = ${JSON.stringify(fileAddress)}`,
      `root = ${JSON.stringify(fileRoot)}`,
      `mount_mode = ${JSON.stringify(options.mountMode ?? defaultMountMode)}`,
      `gc_roots_dir = ${JSON.stringify(gcRootsDir)}`,
      options.extraConfig ?? "",
      "[image_service]",
      options.imageService
        ? `enable = true\ncontainerd_address = ${JSON.stringify(options.imageService.containerdAddress)}`
        : "enable = false",
      "",
    ].join("\n"),
  );
  const logFd = openSync(logPath, "a");
  const child = spawn(
    process.execPath,
    [
      ...(options.nodeArgs ?? daemonNodeFlags),
      daemonEntry,
      "-c",
      configPath,
      "-l",
      options.logLevel ?? "debug",
      ...(options.addressFlag ? ["--address", options.addressFlag] : []),
      ...(options.rootFlag ? ["--root", options.rootFlag] : []),
      ...(options.args ?? []),
    ],
    {
      env: { ...process.env, NIX_SNAPSHOTTER_LOG_FORMAT: "json", ...options.env },
      stdio: ["ignore", logFd, logFd],
    },
  );
  closeSync(logFd);
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => {
      exit = { code, signal };
      resolve(exit);
    });
  });
  const log = () => readFile(logPath, "utf8").catch(() => "");
  const { transport, close } = unixGrpcTransport(address);

  const stop = async (signal: NodeJS.Signals = "SIGTERM") => {
    if (!exit) child.kill(signal);
    return exited;
  };
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    close();
    if (!exit) {
      child.kill("SIGTERM");
      const timeout = delay(20_000).then(() => "timeout" as const);
      if ((await Promise.race([exited, timeout])) === "timeout") {
        child.kill("SIGKILL");
        await exited;
      }
    }
    await rm(gcRootsDir, { recursive: true, force: true });
    if (options.rootFlag) await rm(options.rootFlag, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
  };

  const health = createClient(Health, transport);
  const deadline = Date.now() + (options.readyTimeoutMs ?? 30_000);
  for (;;) {
    if (exit) {
      const text = await log();
      await cleanup();
      throw new Error(`daemon exited (${exit.code ?? exit.signal}) before it was ready:\n${text}`);
    }
    if (existsSync(address)) {
      const status = await health.check({ service: "" }, { timeoutMs: 2_000 }).then(
        (response) => response.status,
        () => undefined,
      );
      if (status === 1) break;
    }
    if (Date.now() > deadline) {
      const text = await log();
      await cleanup();
      throw new Error(`daemon did not become ready on ${address}:\n${text}`);
    }
    await delay(50);
  }

  return {
    child,
    dir,
    address,
    root,
    configPath,
    gcRootsDir,
    transport,
    snapshotter: createRemoteSnapshotter(transport),
    log,
    stop,
    cleanup,
  };
}
