import { rm } from "node:fs/promises";
import { join } from "node:path";
import { TEST_GC_ROOTS_PARENT } from "@nix-snapshotter/nix-store/testing";
import { registryEntry, type Started, startProcess, stopProcess, waitFor } from "./processes.js";

/** Nix offline, builds unsandboxed: the stand-in set's builders run host programs. */
export const OFFLINE_NIX_CONFIG = "substituters =\nsandbox = false";

export interface RegistryProcessOptions {
  /** A directory of the caller's: the storage (`storage/`) and the log go here. */
  dir: string;
  /** The package set: a local Nix file or directory... */
  pkgsPath?: string;
  /** ...or a git repository (`file://...`). */
  pkgsRepo?: string;
  /**
   * Name of the registry's GC roots directory below the tests' GC roots parent (unique per run);
   * `remove()` deletes it.
   */
  gcRootsName: string;
  /** Seconds the Nix steps of one image may take (default 240). */
  nixTimeout?: number;
  /** Platforms served (default: the registry's default, the host's). */
  platforms?: readonly string[];
  /** Enables the binary cache export, signed with this secret key file. */
  binaryCacheSecretKeyFile?: string;
  /** Directory of the Nix programs (e.g. wrappers that count invocations); default PATH. */
  nixBin?: string;
  /** Log file name in `dir` (default `registry.log`); a restart can take another. */
  logName?: string;
  /** The registry's log level (default `debug`): `info` or lower (the address is logged at info). */
  logLevel?: "trace" | "debug" | "info";
  /** More environment variables (they win over the harness's). */
  env?: NodeJS.ProcessEnv;
}

export interface RegistryProcess {
  /** The process, its exit and its log. */
  process: Started;
  /** Port bound on 127.0.0.1. */
  port: number;
  /** `http://127.0.0.1:<port>`. */
  url: string;
  /** The GC roots directory the registry was given. */
  gcRootsDir: string;
  /** The storage directory (`<dir>/storage`). */
  storagePath: string;
  log(): Promise<string>;
  /** SIGTERM, then SIGKILL after 20 s; waits for the exit. */
  stop(): Promise<void>;
  /** SIGKILL at once (a crash); waits for the exit. */
  kill(): Promise<void>;
  /** Stops the process and removes its GC roots directory (not `dir`). */
  remove(): Promise<void>;
}

/**
 * Starts the built registry (`dist/main.js`) on 127.0.0.1, an ephemeral port, configured by its
 * environment variables as an operator would, Nix offline; resolves once it logs the address it
 * listens on. Shared by the app's e2e tests and the benchmarks of `bench/`.
 */
export async function startRegistryProcess(
  options: RegistryProcessOptions,
): Promise<RegistryProcess> {
  const gcRootsDir = join(TEST_GC_ROOTS_PARENT, options.gcRootsName);
  const storagePath = join(options.dir, "storage");
  const env: NodeJS.ProcessEnv = {
    HOST: "127.0.0.1",
    PORT: "0",
    STORAGE_BACKEND: "filesystem",
    STORAGE_PATH: storagePath,
    NIX_TIMEOUT: String(options.nixTimeout ?? 240),
    NIX_REGISTRY_GC_ROOTS_DIR: gcRootsDir,
    NIX_REGISTRY_LOG_FORMAT: "json",
    NIX_CONFIG: OFFLINE_NIX_CONFIG,
    ...(options.pkgsPath === undefined ? {} : { PKGS_PATH: options.pkgsPath }),
    ...(options.pkgsRepo === undefined ? {} : { PKGS_REPO: options.pkgsRepo }),
    ...(options.nixBin === undefined ? {} : { NIX_REGISTRY_NIX_BIN: options.nixBin }),
    ...(options.platforms === undefined
      ? {}
      : { NIX_REGISTRY_PLATFORMS: options.platforms.join(",") }),
    ...(options.binaryCacheSecretKeyFile === undefined
      ? {}
      : {
          NIX_REGISTRY_BINARY_CACHE: "true",
          NIX_REGISTRY_BINARY_CACHE_SECRET_KEY_FILE: options.binaryCacheSecretKeyFile,
        }),
    ...options.env,
  };
  const started = startProcess(
    registryEntry,
    ["-l", options.logLevel ?? "debug"],
    env,
    join(options.dir, options.logName ?? "registry.log"),
  );
  let port: number;
  try {
    port = await waitFor("nix-registry", started, async () => {
      const match = /"address":"127\.0\.0\.1:(\d+)"/.exec(await started.log());
      return match ? Number(match[1]) : undefined;
    });
  } catch (error) {
    await stopProcess(started);
    await rm(gcRootsDir, { recursive: true, force: true });
    throw error;
  }
  const kill = async () => {
    if (started.child.exitCode !== null || started.child.signalCode !== null) return;
    started.child.kill("SIGKILL");
    await started.exited;
  };
  const stop = () => stopProcess(started);
  return {
    process: started,
    port,
    url: `http://127.0.0.1:${port}`,
    gcRootsDir,
    storagePath,
    log: started.log,
    stop,
    kill,
    remove: async () => {
      await stop();
      await rm(gcRootsDir, { recursive: true, force: true });
    },
  };
}
