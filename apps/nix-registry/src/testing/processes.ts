import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { connect } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** Helpers of the e2e tests: processes of the built apps, and raw HTTP requests. */

export const registryEntry = fileURLToPath(new URL("../../dist/main.js", import.meta.url));
export const snapshotterEntry = fileURLToPath(
  new URL("../../../nix-snapshotter/dist/main.js", import.meta.url),
);

export interface Started {
  child: ChildProcess;
  exited: Promise<unknown>;
  log(): Promise<string>;
}

export function startProcess(
  entry: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  logPath: string,
): Started {
  const fd = openSync(logPath, "a");
  const child = spawn(process.execPath, [entry, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", fd, fd],
  });
  closeSync(fd);
  const exited = new Promise((resolve) => child.once("exit", resolve));
  return { child, exited, log: () => readFile(logPath, "utf8").catch(() => "") };
}

export async function stopProcess(started: Started | undefined): Promise<void> {
  if (started === undefined || started.child.exitCode !== null) return;
  started.child.kill("SIGTERM");
  const timeout = new Promise((resolve) => setTimeout(() => resolve("timeout"), 20_000));
  if ((await Promise.race([started.exited, timeout])) === "timeout") {
    started.child.kill("SIGKILL");
    await started.exited;
  }
}

export async function waitFor<T>(
  what: string,
  started: Started,
  probe: () => Promise<T | undefined>,
): Promise<T> {
  for (let attempt = 0; attempt < 600; attempt++) {
    if (started.child.exitCode !== null) throw new Error(`${what} exited:\n${await started.log()}`);
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${what} not ready:\n${await started.log()}`);
}

export function get(
  port: number,
  path: string,
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest({ host: "127.0.0.1", port, path }, (response) => {
      let body = "";
      response.setEncoding("utf8").on("data", (chunk: string) => {
        body += chunk;
      });
      response.on("end", () =>
        resolve({ status: response.statusCode ?? 0, headers: response.headers, body }),
      );
    });
    request.on("error", reject);
    request.end();
  });
}

/** Starts the built nix-snapshotter daemon on a socket in `dir`; waits until it accepts. */
export async function startSnapshotter(
  dir: string,
  gcRootsDir: string,
  mountMode: "bind" | "hardlink",
): Promise<{ process: Started; address: string }> {
  const address = join(dir, "snapshotter.sock");
  await writeFile(
    join(dir, "snapshotter.toml"),
    [
      `address = ${JSON.stringify(address)}`,
      `root = ${JSON.stringify(join(dir, "snapshotter-root"))}`,
      `gc_roots_dir = ${JSON.stringify(gcRootsDir)}`,
      `mount_mode = ${JSON.stringify(mountMode)}`,
      "[image_service]",
      "enable = false",
      "",
    ].join("\n"),
  );
  const started = startProcess(
    snapshotterEntry,
    ["-c", join(dir, "snapshotter.toml")],
    { NIX_SNAPSHOTTER_LOG_FORMAT: "json" },
    join(dir, "snapshotter.log"),
  );
  await waitFor(
    "nix-snapshotter",
    started,
    () =>
      new Promise<true | undefined>((resolve) => {
        const socket = connect(address);
        socket.once("connect", () => {
          socket.destroy();
          resolve(true);
        });
        socket.once("error", () => resolve(undefined));
      }),
  );
  return { process: started, address };
}
