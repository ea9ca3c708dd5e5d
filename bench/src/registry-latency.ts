/**
 * Benchmark: nix-registry against Debian's docker-registry serving the same images pushed in
 * advance, in one run on 127.0.0.1. Needs root, Nix, /bin/busybox and docker-registry.
 *
 * - Cached manifest: sequential `GET /v2/<name>/manifests/latest` (Accept: OCI manifest) on one
 *   keep-alive connection, p50 and p99, alternating blocks of 100 between the two registries.
 * - First pull: manifest by tag, then config and layer blobs, of an image the registry has not
 *   served yet. For nix-registry that includes the Nix evaluation, the realisation (the closure
 *   is already in the store: a first registry built it to push the same image to
 *   docker-registry) and the image generation; docker-registry serves the pushed blobs.
 *
 * Both nix-registries are the built daemon (`nix-registry/testing`'s process harness) with the
 * app's stand-in package set (made offline from the host's busybox).
 *
 * Run alone: `node bench/dist/registry-latency.js [requests] [--json]` (default 1000 requests
 * each; BENCH_REGISTRY_REQUESTS also sets it). `pnpm bench` runs it as a child process with
 * `--json` (section "nix-registry vs docker-registry").
 */
import { randomBytes } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { Agent, request as httpRequest } from "node:http";
import { join } from "node:path";
import {
  createMemoryImageSource,
  createRegistryClient,
  pushImage,
  staticCredentials,
} from "@nix-snapshotter/image-builder";
import { startRegistry as startDockerRegistry } from "@nix-snapshotter/image-builder/testing";
import { type Digest, MediaType, sha256Digest } from "@nix-snapshotter/oci";
import { createStandInSet, type RegistryProcess, startRegistryProcess } from "nix-registry/testing";
import { median, workDirectory } from "./harness.js";

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
          const body = Buffer.concat(chunks);
          if (response.statusCode !== 200) {
            reject(new Error(`${path}: ${response.statusCode} ${body.toString().slice(0, 300)}`));
          } else resolve(body);
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

export function percentile(values: readonly number[], fraction: number): number {
  if (values.length === 0) throw new Error("percentile of nothing");
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(fraction * sorted.length) - 1))]!;
}

export interface RegistryLatencyFigure {
  figure: string;
  ours: number;
  baseline: number;
  unit: "ms";
}

/** Runs the benchmark; `log` gets progress lines. */
export async function benchRegistryLatency(
  requests: number,
  log: (line: string) => void,
): Promise<{ figures: RegistryLatencyFigure[]; firstNix: number[]; firstDocker: number[] }> {
  if (process.getuid?.() !== 0) throw new Error("run as root (Nix builds, GC roots)");
  const unique = `${process.pid}-${randomBytes(4).toString("hex")}`;
  const work = await workDirectory("nix-registry-bench-");
  const set = await createStandInSet(`registry-bench-${unique}`);
  const registries: RegistryProcess[] = [];
  const start = async (label: string) => {
    const dir = join(work.path, label);
    await mkdir(dir, { recursive: true });
    const registry = await startRegistryProcess({
      dir,
      pkgsPath: set.path,
      gcRootsName: `registry-bench-${label}-${unique}`,
      nixTimeout: 600,
      // info: the harness waits for the "listening" line; requests are logged at debug only.
      logLevel: "info",
    });
    registries.push(registry);
    return registry.url;
  };
  const docker = await startDockerRegistry();
  try {
    const names = ["hello", "busybox", "hello/busybox", "shell", "coreutils"];
    log(`registry-latency: building ${names.length} images once, pushing them to docker-registry`);
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

    log("registry-latency: first pulls from a fresh nix-registry and docker-registry");
    const fresh = await start("fresh");
    const firstNix: number[] = [];
    const firstDocker: number[] = [];
    for (const name of names) {
      firstDocker.push(await pull(docker.url, name));
      firstNix.push(await pull(fresh, name));
    }

    log(`registry-latency: ${requests} cached manifest requests each`);
    const cachedNix: number[] = [];
    const cachedDocker: number[] = [];
    for (let done = 0; done < requests; done += 100) {
      const block = Math.min(100, requests - done);
      for (const [base, into] of [
        [fresh, cachedNix],
        [docker.url, cachedDocker],
      ] as const) {
        for (let index = 0; index < block; index++) {
          const started = performance.now();
          await get(base, "/v2/hello/busybox/manifests/latest", MediaType.ImageManifest);
          into.push(performance.now() - started);
        }
      }
    }
    return {
      figures: [
        {
          figure: `cached manifest p50 (${cachedNix.length} requests)`,
          ours: percentile(cachedNix, 0.5),
          baseline: percentile(cachedDocker, 0.5),
          unit: "ms",
        },
        {
          figure: `cached manifest p99 (${cachedNix.length} requests)`,
          ours: percentile(cachedNix, 0.99),
          baseline: percentile(cachedDocker, 0.99),
          unit: "ms",
        },
        {
          figure: `first pull, median of ${names.length} images`,
          ours: median(firstNix),
          baseline: median(firstDocker),
          unit: "ms",
        },
      ],
      firstNix,
      firstDocker,
    };
  } finally {
    agent.destroy();
    for (const registry of registries) await registry.remove();
    await docker.stop();
    await set.remove();
    await work.remove();
  }
}

async function main(): Promise<void> {
  const argument = process.argv.slice(2).find((value) => /^\d+$/.test(value));
  const requests = Number(argument ?? process.env.BENCH_REGISTRY_REQUESTS ?? 1000);
  if (!Number.isSafeInteger(requests) || requests < 1)
    throw new Error("requests: a positive count");
  const result = await benchRegistryLatency(requests, (line) => process.stderr.write(`${line}\n`));
  if (process.argv.includes("--json")) {
    process.stdout.write(`${JSON.stringify({ figures: result.figures })}\n`);
    return;
  }
  const lines = [
    "| figure | nix-registry | docker-registry | ratio |",
    "| --- | --- | --- | --- |",
    ...result.figures.map(
      (figure) =>
        `| ${figure.figure} | ${figure.ours.toFixed(2)} ms | ${figure.baseline.toFixed(2)} ms | ${(figure.ours / figure.baseline).toFixed(2)}x |`,
    ),
    "",
    `first pulls, nix-registry (ms): ${result.firstNix.map((value) => value.toFixed(0)).join(", ")}`,
    `first pulls, docker-registry (ms): ${result.firstDocker.map((value) => value.toFixed(1)).join(", ")}`,
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(
    `${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  process.exit(1);
});
