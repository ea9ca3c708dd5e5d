/**
 * Benchmark: nix-registry against Debian's docker-registry serving the same images pushed in
 * advance, in one run on 127.0.0.1. Needs root, Nix, /bin/busybox and docker-registry.
 *
 * - Cached manifest: sequential `GET /v2/<name>/manifests/latest` (Accept: OCI manifest) on a
 *   keep-alive connection, p50 and p99.
 * - First pull: manifest by tag, then config and layer blobs, of an image the registry has not
 *   served yet. For nix-registry that includes the Nix evaluation, the realisation (the closure
 *   is already in the store: built once beforehand to push the same image to docker-registry)
 *   and the image generation; docker-registry serves the pushed blobs.
 *
 * Run: `pnpm build && node apps/nix-registry/dist/bench/latency.js [requests]`.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { Agent, request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  createMemoryImageSource,
  createRegistryClient,
  pushImage,
  staticCredentials,
} from "@nix-snapshotter/image-builder";
import { startRegistry as startDockerRegistry } from "@nix-snapshotter/image-builder/testing";
import { TEST_GC_ROOTS_PARENT } from "@nix-snapshotter/nix-store/testing";
import { type Digest, MediaType, sha256Digest } from "@nix-snapshotter/oci";
import { pino } from "pino";
import { defaultConfig } from "../config.js";
import { type RunningRegistry, startRegistry } from "../registry.js";
import { createStandInSet } from "../testing/stand-in-set.js";

const agent = new Agent({ keepAlive: true, maxSockets: 1 });

function get(base: string, path: string, accept?: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const url = new URL(path, base);
    const request = httpRequest(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        agent,
        headers: accept ? { accept } : {},
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => {
          if (response.statusCode !== 200) {
            reject(new Error(`${path}: ${response.statusCode} ${Buffer.concat(chunks)}`));
          } else resolve(Buffer.concat(chunks));
        });
      },
    );
    request.on("error", reject);
    request.end();
  });
}

/** Manifest by tag, then every blob it names; returns milliseconds. */
async function pull(base: string, name: string): Promise<number> {
  const started = performance.now();
  const manifest = JSON.parse(
    (await get(base, `/v2/${name}/manifests/latest`, MediaType.ImageManifest)).toString(),
  ) as { config: { digest: string }; layers: { digest: string }[] };
  for (const digest of [manifest.config.digest, ...manifest.layers.map((layer) => layer.digest)]) {
    await get(base, `/v2/${name}/blobs/${digest}`);
  }
  return performance.now() - started;
}

function percentile(values: readonly number[], fraction: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)]!;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("run as root (Nix builds, GC roots)");
  const requests = Number(process.argv[2] ?? 1000);
  const unique = `${process.pid}-${randomBytes(4).toString("hex")}`;
  const dir = await mkdtemp(join(tmpdir(), "nix-registry-bench-"));
  const set = await createStandInSet(`registry-bench-${unique}`);
  process.env.NIX_CONFIG = "substituters =\nsandbox = false";
  const registries: RunningRegistry[] = [];
  const start = async (label: string) => {
    const registry = await startRegistry({
      config: {
        ...defaultConfig(),
        host: "127.0.0.1",
        port: 0,
        pkgsPath: set.path,
        storagePath: join(dir, label),
        gcRootsDir: join(TEST_GC_ROOTS_PARENT, `registry-bench-${label}-${unique}`),
        nixTimeout: 600,
      },
      logger: pino({ level: "warn" }),
    });
    registries.push(registry);
    return `http://127.0.0.1:${registry.port}`;
  };
  const docker = await startDockerRegistry();
  try {
    const names = ["hello", "busybox", "hello/busybox", "shell", "coreutils"];
    // Build each image once (a first nix-registry), push the same image to docker-registry.
    const builder = await start("builder");
    const client = createRegistryClient({
      registry: docker.host,
      plainHttp: true,
      credentials: staticCredentials(undefined),
    });
    for (const name of names) {
      const manifestData = await get(
        builder,
        `/v2/${name}/manifests/latest`,
        MediaType.ImageManifest,
      );
      const manifest = JSON.parse(manifestData.toString()) as {
        config: { digest: string };
        layers: { digest: string }[];
      };
      const blobs = new Map<Digest, Uint8Array>([[sha256Digest(manifestData), manifestData]]);
      for (const digest of [
        manifest.config.digest,
        ...manifest.layers.map((layer) => layer.digest),
      ]) {
        blobs.set(digest as Digest, await get(builder, `/v2/${name}/blobs/${digest}`));
      }
      await pushImage({
        client,
        repository: name,
        tag: "latest",
        source: createMemoryImageSource(
          {
            mediaType: MediaType.ImageManifest,
            digest: sha256Digest(manifestData),
            size: manifestData.byteLength,
          },
          blobs,
        ),
      });
    }

    // First pulls: a fresh nix-registry (empty cache) against docker-registry.
    const fresh = await start("fresh");
    const firstNix: number[] = [];
    const firstDocker: number[] = [];
    for (const name of names) {
      firstDocker.push(await pull(docker.url, name));
      firstNix.push(await pull(fresh, name));
    }

    // Cached manifests, alternating blocks of 100.
    const cachedNix: number[] = [];
    const cachedDocker: number[] = [];
    for (let done = 0; done < requests; done += 100) {
      for (const [base, into] of [
        [fresh, cachedNix],
        [docker.url, cachedDocker],
      ] as const) {
        for (let index = 0; index < 100; index++) {
          const started = performance.now();
          await get(base, "/v2/hello/busybox/manifests/latest", MediaType.ImageManifest);
          into.push(performance.now() - started);
        }
      }
    }
    const row = (what: string, nix: number[], dockerValues: number[]) =>
      `| ${what} | ${percentile(nix, 0.5).toFixed(2)} / ${percentile(nix, 0.99).toFixed(2)} ms | ${percentile(dockerValues, 0.5).toFixed(2)} / ${percentile(dockerValues, 0.99).toFixed(2)} ms | ${(percentile(nix, 0.5) / percentile(dockerValues, 0.5)).toFixed(2)}x |`;
    process.stdout.write(
      [
        `| measure (p50 / p99) | nix-registry | docker-registry | ratio (p50) |`,
        `| --- | --- | --- | --- |`,
        row(`cached manifest, ${cachedNix.length} requests each`, cachedNix, cachedDocker),
        row(`first pull (manifest + blobs), ${names.length} images each`, firstNix, firstDocker),
        "",
        `first pulls, nix-registry (ms): ${firstNix.map((value) => value.toFixed(0)).join(", ")}`,
        `first pulls, docker-registry (ms): ${firstDocker.map((value) => value.toFixed(1)).join(", ")}`,
        "",
      ].join("\n"),
    );
  } finally {
    agent.destroy();
    for (const registry of registries) await registry.close();
    await docker.stop();
    for (const label of ["builder", "fresh"]) {
      await rm(join(TEST_GC_ROOTS_PARENT, `registry-bench-${label}-${unique}`), {
        recursive: true,
        force: true,
      });
    }
    await set.remove();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(
    `${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  process.exit(1);
});
