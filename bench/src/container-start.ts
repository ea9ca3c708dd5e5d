/**
 * Container start time against closure size: `ctr run --rm` of a container whose entrypoint is
 * busybox's `true`, on an image whose closure is busybox plus N synthetic store paths, through
 * the real daemon in bind mode and in hardlink mode, against the same closure packed as an
 * ordinary one-layer image on containerd's built-in overlayfs snapshotter. One containerd 1.7
 * (bind mode needs >= 1.7) serves all three, with two daemons as the proxy snapshotters
 * `nix-bind` and `nix-hardlink`. Each figure is the median of BENCH_START_RUNS runs (default 5);
 * a run covers what a user waits for: create the container (Prepare), mount, start runc, wait for
 * the exit, delete the container and its snapshot.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { createContainerdClient, importArchive } from "@nix-snapshotter/containerd-client";
import { type Containerd, startContainerd } from "@nix-snapshotter/containerd-client/testing";
import { buildImage, writeImageArchive } from "@nix-snapshotter/image-builder";
import { createNixFixtures, type SyntheticClosure } from "@nix-snapshotter/nix-store/testing";
import { type DaemonProcess, startDaemonProcess } from "nix-snapshotter/testing";
import { type Figure, layeredArchive, median, workDirectory } from "./harness.js";

export const startSection = "Container start time vs closure size";

export interface StartPoint {
  paths: number;
  bindMs: number;
  hardlinkMs: number;
  layeredMs: number;
}

export interface StartResult {
  figures: Figure[];
  points: StartPoint[];
  containerdVersion: string;
}

export async function benchContainerStart(
  sizes: readonly number[],
  runs: number,
  progress: (line: string) => void,
): Promise<StartResult> {
  const fixtures = await createNixFixtures({ label: "bench-start" });
  const work = await workDirectory("bench-start-");
  const daemons: DaemonProcess[] = [];
  let containerd: Containerd | undefined;
  const closures: SyntheticClosure[] = [];
  try {
    const busybox = await fixtures.busybox();
    const bind = await startDaemonProcess({ mountMode: "bind", logLevel: "warn" });
    daemons.push(bind);
    const hardlink = await startDaemonProcess({ mountMode: "hardlink", logLevel: "warn" });
    daemons.push(hardlink);
    containerd = await startContainerd({
      version: "1.7",
      proxyPlugins: { "nix-bind": bind.address, "nix-hardlink": hardlink.address },
    });
    const client = createContainerdClient({
      address: containerd.address,
      namespace: containerd.namespace,
    });
    const points: StartPoint[] = [];
    const figures: Figure[] = [];
    try {
      const entrypoint = [`${busybox.storePath}/bin/true`];
      for (const count of sizes) {
        progress(`container start: ${count} paths: creating the closure`);
        const synthetic = await fixtures.syntheticClosure({
          count,
          name: `bench-start-${count}`,
          closureInfo: false,
        });
        closures.push(synthetic);
        const closure = [...busybox.closure, ...synthetic.paths];
        const image = await buildImage({ config: { Entrypoint: entrypoint }, closure });
        const nixArchive = writeImageArchive(image, { names: [`docker.io/bench/nix-${count}:1`] });
        const layered = await layeredArchive(
          `docker.io/bench/layered-${count}:1`,
          closure,
          entrypoint,
        );
        await writeFile(join(work.path, `layered-${count}.tar`), layered.archive);
        progress(`container start: ${count} paths: importing (nix image twice, layered once)`);
        for (const snapshotter of ["nix-bind", "nix-hardlink"]) {
          await importArchive(client, nixArchive, {
            snapshotter,
            names: [`docker.io/bench/nix-${count}-${snapshotter}:1`],
          });
        }
        await importArchive(client, layered.archive, { snapshotter: "overlayfs" });

        const time = async (snapshotter: string, reference: string, id: string) => {
          const samples: number[] = [];
          for (let run = 0; run < runs; run++) {
            const start = performance.now();
            await containerd!.ctr([
              "run",
              "--rm",
              "--snapshotter",
              snapshotter,
              reference,
              `${id}-${run}`,
            ]);
            samples.push(performance.now() - start);
          }
          return median(samples);
        };
        progress(`container start: ${count} paths: ${runs} runs each`);
        const point: StartPoint = {
          paths: closure.length,
          bindMs: await time(
            "nix-bind",
            `docker.io/bench/nix-${count}-nix-bind:1`,
            `bind-${count}`,
          ),
          hardlinkMs: await time(
            "nix-hardlink",
            `docker.io/bench/nix-${count}-nix-hardlink:1`,
            `hardlink-${count}`,
          ),
          layeredMs: await time(
            "overlayfs",
            `docker.io/bench/layered-${count}:1`,
            `layered-${count}`,
          ),
        };
        points.push(point);
        for (const mode of ["bind", "hardlink"] as const) {
          figures.push({
            section: startSection,
            figure: `${point.paths} paths, ${mode} mode`,
            ours: mode === "bind" ? point.bindMs : point.hardlinkMs,
            baseline: point.layeredMs,
            unit: "ms",
          });
        }
        progress(
          `container start: ${point.paths} paths: bind ${point.bindMs.toFixed(0)} ms, hardlink ${point.hardlinkMs.toFixed(0)} ms, layered ${point.layeredMs.toFixed(0)} ms`,
        );
      }
    } finally {
      client.close();
    }
    return { figures, points, containerdVersion: containerd.versionLine };
  } finally {
    await containerd?.stop();
    for (const daemon of daemons) await daemon.cleanup();
    for (const synthetic of closures) {
      await synthetic.release();
      await fixtures.deletePaths(synthetic.paths).catch(() => undefined);
    }
    await fixtures.cleanup();
    await work.remove();
  }
}
