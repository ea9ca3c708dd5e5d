/**
 * Bytes pulled from a registry: a nix image of redis (its closure already in the Nix store, as
 * on any host that ran it or substituted it before) against the same closure as an ordinary
 * one-layer image. Both are pushed with skopeo to Debian's docker-registry on 127.0.0.1, then
 * fetched by containerd 1.6 (`ctr content fetch`, every blob of the image) through a small HTTP
 * proxy that counts the response body bytes the registry sent.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { startContainerd } from "@nix-snapshotter/containerd-client/testing";
import { buildImage, writeImageArchive } from "@nix-snapshotter/image-builder";
import { createNixFixtures } from "@nix-snapshotter/nix-store/testing";
import { type Figure, freePort, layeredArchive, workDirectory } from "./harness.js";

const execFileAsync = promisify(execFile);

export const registrySection = "Bytes pulled from the registry";

/** A forwarding proxy to 127.0.0.1:`target` that counts the bytes of response bodies. */
async function countingProxy(target: number): Promise<{
  port: number;
  bytes(): number;
  reset(): void;
  close(): Promise<void>;
}> {
  let bytes = 0;
  const server: Server = createServer((incoming, outgoing) => {
    const forward = request(
      {
        host: "127.0.0.1",
        port: target,
        method: incoming.method,
        path: incoming.url,
        headers: incoming.headers,
      },
      (response) => {
        outgoing.writeHead(response.statusCode ?? 502, response.headers);
        response.on("data", (chunk: Buffer) => {
          bytes += chunk.byteLength;
        });
        response.pipe(outgoing);
      },
    );
    forward.on("error", (error) => outgoing.destroy(error));
    incoming.pipe(forward);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    bytes: () => bytes,
    reset: () => {
      bytes = 0;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export async function benchRegistryBytes(
  progress: (line: string) => void,
): Promise<{ figures: Figure[] }> {
  const fixtures = await createNixFixtures({ label: "bench-registry" });
  const work = await workDirectory("bench-registry-");
  let registry: ChildProcess | undefined;
  const containerd = await startContainerd({ version: "1.6" });
  try {
    const redis = await fixtures.redis();
    const nixImage = await buildImage({
      config: { Entrypoint: [redis.executable] },
      closure: redis.closure,
    });
    await writeFile(join(work.path, "nix.tar"), writeImageArchive(nixImage));
    const layered = await layeredArchive("docker.io/bench/layered-redis:1", redis.closure, [
      redis.executable,
    ]);
    await writeFile(join(work.path, "layered.tar"), layered.archive);

    const registryPort = await freePort();
    await writeFile(
      join(work.path, "registry.yml"),
      [
        "version: 0.1",
        "log:",
        "  level: error",
        "storage:",
        "  filesystem:",
        `    rootdirectory: ${join(work.path, "registry")}`,
        "http:",
        `  addr: 127.0.0.1:${registryPort}`,
        "",
      ].join("\n"),
    );
    registry = spawn("docker-registry", ["serve", join(work.path, "registry.yml")], {
      stdio: "ignore",
    });
    for (let attempt = 0; ; attempt++) {
      const up = await fetch(`http://127.0.0.1:${registryPort}/v2/`).then(
        (response) => response.ok,
        () => false,
      );
      if (up) break;
      if (attempt > 300) throw new Error("docker-registry did not start");
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    for (const name of ["nix", "layered"]) {
      await execFileAsync("skopeo", [
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        `oci-archive:${join(work.path, `${name}.tar`)}`,
        `docker://127.0.0.1:${registryPort}/bench/${name}-redis:1`,
      ]);
    }
    const proxy = await countingProxy(registryPort);
    try {
      const pulled: Record<string, number> = {};
      for (const name of ["nix", "layered"]) {
        proxy.reset();
        await containerd.ctr([
          "content",
          "fetch",
          "--plain-http",
          `127.0.0.1:${proxy.port}/bench/${name}-redis:1`,
        ]);
        pulled[name] = proxy.bytes();
      }
      const ours = pulled.nix!;
      const baseline = pulled.layered!;
      progress(
        `registry bytes (redis, ${redis.closure.length} paths): nix ${ours}, layered ${baseline}`,
      );
      return {
        figures: [
          {
            section: registrySection,
            figure: `redis (${redis.closure.length} store paths), closure present`,
            ours,
            baseline,
            unit: "bytes",
          },
        ],
      };
    } finally {
      await proxy.close();
    }
  } finally {
    registry?.kill("SIGTERM");
    await containerd.stop();
    await fixtures.cleanup();
    await work.remove();
  }
}
