import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  DOCKER_REGISTRY_BINARY,
  type StartRegistryOptions,
  startRegistry,
  type TestRegistry,
} from "./registry.js";

const execFileAsync = promisify(execFile);

function onPath(name: string): boolean {
  return (process.env.PATH ?? "/usr/bin:/bin")
    .split(":")
    .some((directory) => existsSync(join(directory, name)));
}

/**
 * The programs a registry end-to-end test drives that this machine lacks: `docker-registry`,
 * `skopeo`, `htpasswd` (basic auth) and `openssl` (token auth, TLS). Empty when all are there.
 */
export function missingRegistryPrograms(): string[] {
  return [
    existsSync(DOCKER_REGISTRY_BINARY) ? undefined : "docker-registry",
    ...["skopeo", "htpasswd", "openssl"].filter((name) => !onPath(name)),
  ].filter((name) => name !== undefined);
}

/** The manifest bytes exactly as the registry serves them, read by `skopeo inspect --raw`. */
export async function skopeoRawManifest(
  registry: TestRegistry,
  reference: string,
): Promise<Buffer> {
  const credentials =
    registry.auth === "none" ? [] : ["--creds", `${registry.username}:${registry.password}`];
  const { stdout } = await execFileAsync(
    "skopeo",
    [
      "inspect",
      "--raw",
      "--tls-verify=false",
      ...credentials,
      `docker://${registry.host}/${reference}`,
    ],
    { encoding: "buffer", maxBuffer: 16 * 1024 * 1024 },
  );
  return stdout;
}

/** Registries started by one test file, stopped together (after each test, say). */
export interface RegistryPool {
  start(options?: StartRegistryOptions): Promise<TestRegistry>;
  /** Stops every registry started since the last call. */
  stopAll(): Promise<void>;
}

export function createRegistryPool(): RegistryPool {
  const registries: TestRegistry[] = [];
  return {
    async start(options = {}) {
      const registry = await startRegistry(options);
      registries.push(registry);
      return registry;
    },
    async stopAll() {
      await Promise.all(registries.splice(0).map((registry) => registry.stop()));
    },
  };
}
