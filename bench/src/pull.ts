// Benchmark: PullImage of a `nix:0` image whose closure is in the store, against `ctr images
// import` of the same closure packed as an ordinary layered image, in the same run, on the same
// containerd. Run as root after `pnpm build`: `pnpm --filter @nix-snapshotter/bench bench:pull`.
//
// Environment: BENCH_CONTAINERD (1.6 | 1.7 | 2.1, default 1.6), BENCH_MOUNT_MODE (hardlink |
// bind, default hardlink on 1.6 else bind), BENCH_ITERATIONS (default 7).
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { promisify } from "node:util";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Snapshots } from "@nix-snapshotter/api/snapshots/v1";
import { createContainerdClient } from "@nix-snapshotter/containerd-client";
import {
  type ContainerdVersion,
  startContainerd,
} from "@nix-snapshotter/containerd-client/testing";
import { createImageService } from "@nix-snapshotter/cri-image-service";
import { buildImage, writeImageArchive } from "@nix-snapshotter/image-builder";
import { createNixStore } from "@nix-snapshotter/nix-store";
import { createNixFixtures, TEST_GC_ROOTS_PARENT } from "@nix-snapshotter/nix-store/testing";
import { hostPathEntries, testImageArchive } from "@nix-snapshotter/oci/testing";
import {
  createSnapshotsService,
  createSnapshotter,
  nixStorePortFrom,
} from "@nix-snapshotter/snapshotter";
import { pino } from "pino";

const execFileAsync = promisify(execFile);
const version = (process.env.BENCH_CONTAINERD ?? "1.6") as ContainerdVersion;
const mountMode = (process.env.BENCH_MOUNT_MODE ?? (version === "1.6" ? "hardlink" : "bind")) as
  | "bind"
  | "hardlink";
const iterations = Number(process.env.BENCH_ITERATIONS ?? 7);

/** The closure as an ordinary image: one gzip layer holding every store path's files. */
async function layeredArchive(name: string, paths: readonly string[], entrypoint: string[]) {
  const { archive, manifest } = testImageArchive({
    names: [name],
    layers: [await hostPathEntries(paths)],
    config: { Entrypoint: entrypoint },
  });
  return { archive, layerBytes: manifest.layers[0]?.size ?? 0 };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), "cri-pull-bench-"));
  const fixtures = await createNixFixtures({ label: "cri-pull-bench" });
  const logger = pino({ level: "silent" });
  const gcRootsDir = join(TEST_GC_ROOTS_PARENT, `cri-pull-bench-${process.pid}`);
  const nixStore = createNixStore({ gcRootsDir });
  const snapshotter = await createSnapshotter({
    root: join(work, "snapshotter"),
    mountMode,
    nixStore: nixStorePortFrom(nixStore),
  });
  const socket = join(work, "nix.sock");
  const server = createServer(
    {},
    connectNodeAdapter({
      routes: (router) => {
        router.service(Snapshots, createSnapshotsService(snapshotter));
      },
      grpc: true,
      grpcWeb: false,
      connect: false,
    }),
  );
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  const containerd = await startContainerd({
    version,
    proxyPlugins: { nix: socket },
    cri: { snapshotter: "nix", restrictOomScoreAdj: true },
  });
  const client = createContainerdClient({ address: containerd.address, namespace: "k8s.io" });
  const service = createImageService({
    containerdAddress: containerd.address,
    containerd: client,
    nixStore,
    logger,
    snapshotterRoot: join(work, "snapshotter"),
  });
  try {
    const redis = await fixtures.redis();
    const image = await buildImage({
      config: { entrypoint: [redis.executable] },
      closure: redis.closure,
    });
    const file = join(work, "nix-image-redis.tar");
    await writeFile(file, writeImageArchive(image));
    const archivePath = (await execFileAsync("nix-store", ["--add", file])).stdout.trim();
    await fixtures.root("archive", [archivePath]);
    const reference = `nix:0${archivePath}`;
    const layered = await layeredArchive("example.test/redis-layered:1", redis.closure, [
      redis.executable,
    ]);
    const layeredPath = join(work, "layered.tar");
    await writeFile(layeredPath, layered.archive);

    const nixTimes: number[] = [];
    const againTimes: number[] = [];
    const ctrTimes: number[] = [];
    for (let round = 0; round < iterations; round++) {
      let start = performance.now();
      await service.pullNixImage(reference);
      nixTimes.push(performance.now() - start);
      start = performance.now();
      await service.pullNixImage(reference);
      againTimes.push(performance.now() - start);
      await client.images.delete({ name: `${reference}:latest`, sync: true });
      await nixStore.removeRoots(`cri-image-${archivePath.slice(11, 43)}`);

      start = performance.now();
      await containerd.ctr(["images", "import", "--snapshotter", "overlayfs", layeredPath], {
        namespace: "bench",
      });
      ctrTimes.push(performance.now() - start);
      await containerd.ctr(["images", "rm", "--sync", "example.test/redis-layered:1"], {
        namespace: "bench",
      });
    }
    const nix = median(nixTimes);
    const ctr = median(ctrTimes);
    const closureBytes = redis.closure.length;
    process.stdout.write(
      [
        `containerd ${version}, nix snapshotter mount mode ${mountMode}, ${iterations} rounds, medians`,
        `closure: ${closureBytes} store paths; layered image layer ${(layered.layerBytes / 1e6).toFixed(1)} MB gzip`,
        `PullImage nix:0 (closure present):          ${nix.toFixed(0)} ms  (all: ${nixTimes.map((t) => t.toFixed(0)).join(", ")})`,
        `PullImage nix:0 again (image present):      ${median(againTimes).toFixed(1)} ms`,
        `ctr images import (same closure, layered):  ${ctr.toFixed(0)} ms  (all: ${ctrTimes.map((t) => t.toFixed(0)).join(", ")})`,
        `ratio ctr import / PullImage nix:0:          ${(ctr / nix).toFixed(2)}x`,
        "",
      ].join("\n"),
    );
    // `--json`: the same figures as one JSON line (read by bench/ at the root).
    if (process.argv.includes("--json")) {
      const figure = `PullImage nix:0 (redis, containerd ${version}, ${mountMode})`;
      console.log(JSON.stringify({ figures: [{ figure, ours: nix, baseline: ctr, unit: "ms" }] }));
    }
  } finally {
    service.close();
    client.close();
    await containerd.stop();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await snapshotter.close();
    await fixtures.cleanup();
    await rm(gcRootsDir, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  }
}

await main();
