/**
 * Container start time against closure size: `ctr run --rm` of a container whose entrypoint is
 * busybox's `true`, on an image whose closure is busybox plus N synthetic store paths, through
 * the real daemon in bind mode and in hardlink mode, against the same closure packed as an
 * ordinary one-layer image on containerd's built-in overlayfs snapshotter. One containerd 1.7
 * (bind mode needs >= 1.7) serves all three, with two daemons as the proxy snapshotters
 * `nix-bind` and `nix-hardlink`. A run covers what a user waits for: create the container
 * (Prepare), mount, start runc, wait for the exit, delete the container and its snapshot.
 *
 * Hardlink mode's goal is a ratio to layered, so those two are measured interleaved: after one
 * unmeasured start of each, `runs` rounds (BENCH_START_RUNS, default 15) of one hardlink and one
 * layered start, the order alternating from round to round (hardlink first, then layered first),
 * so that load drifting over the run and whatever the previous start left running (containerd's
 * collection of the removed snapshot) hit both alike. Bind mode, slow at large closures and not
 * compared to a goal, runs its own `bindRuns` starts (BENCH_START_BIND_RUNS, default 5) before
 * them. Each figure is a median. BENCH_START_SAMPLES=1 prints every kept sample in run order.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { createContainerdClient, importArchive } from "@nix-snapshotter/containerd-client";
import { type Containerd, startContainerd } from "@nix-snapshotter/containerd-client/testing";
import { buildImage, writeImageArchive } from "@nix-snapshotter/image-builder";
import { createNixFixtures, type SyntheticClosure } from "@nix-snapshotter/nix-store/testing";
import { type DaemonProcess, startDaemonProcess } from "nix-snapshotter/testing";
import { addClosureInfo, type Figure, layeredArchive, median, workDirectory } from "./harness.js";

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
  bindRuns: number,
  progress: (line: string) => void,
): Promise<StartResult> {
  if (!(runs >= 1 && bindRuns >= 1)) throw new Error("container start: at least one run each");
  const fixtures = await createNixFixtures({ label: "bench-start" });
  const work = await workDirectory("bench-start-");
  const daemons: DaemonProcess[] = [];
  let containerd: Containerd | undefined;
  const closures: SyntheticClosure[] = [];
  const closureInfos: string[] = [];
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
        const closure = [...new Set([...busybox.closure, ...synthetic.paths])].sort();
        // A closure-info path, as nix/'s buildImage passes: the image gets buildImage's default
        // annotation form for it (the closure form alone).
        const closureInfo = await addClosureInfo(
          fixtures,
          work.path,
          `start-closure-info-${count}`,
          closure,
        );
        closureInfos.push(closureInfo);
        const image = await buildImage({
          config: { Entrypoint: entrypoint },
          closure: { closureInfo, storePaths: closure },
        });
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

        const start = async (snapshotter: string, reference: string, id: string) => {
          const started = performance.now();
          await containerd!.ctr(["run", "--rm", "--snapshotter", snapshotter, reference, id]);
          return performance.now() - started;
        };
        const variants: Record<"bind" | "hardlink" | "layered", [string, string]> = {
          bind: ["nix-bind", `docker.io/bench/nix-${count}-nix-bind:1`],
          hardlink: ["nix-hardlink", `docker.io/bench/nix-${count}-nix-hardlink:1`],
          layered: ["overlayfs", `docker.io/bench/layered-${count}:1`],
        };
        const samples = { bind: [] as number[], hardlink: [] as number[], layered: [] as number[] };
        progress(
          `container start: ${count} paths: bind ${bindRuns} runs, then hardlink and layered ${runs} interleaved rounds`,
        );
        for (let run = 0; run <= bindRuns; run++) {
          const ms = await start(...variants.bind, `bind-${count}-${run}`);
          if (run > 0) samples.bind.push(ms);
        }
        for (let run = 0; run <= runs; run++) {
          // Round 0 warms both up (first start on a freshly imported image) and is not kept.
          const order =
            run % 2 === 0 ? (["hardlink", "layered"] as const) : (["layered", "hardlink"] as const);
          for (const variant of order) {
            const ms = await start(...variants[variant], `${variant}-${count}-${run}`);
            if (run > 0) samples[variant].push(ms);
          }
        }
        const point: StartPoint = {
          paths: closure.length,
          bindMs: median(samples.bind),
          hardlinkMs: median(samples.hardlink),
          layeredMs: median(samples.layered),
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
        // Layered / hardlink within each round (two starts next to each other): how much the
        // figure would move with other rounds.
        const ratios = samples.hardlink
          .map((ms, round) => samples.layered[round]! / ms)
          .sort((a, b) => a - b);
        const quartile = (q: number) => ratios[Math.floor((ratios.length - 1) * q)]!.toFixed(2);
        if (process.env.BENCH_START_SAMPLES === "1") {
          const list = (values: number[]) => values.map((ms) => ms.toFixed(0)).join(" ");
          progress(
            `container start: ${count} paths: samples in run order: hardlink ${list(samples.hardlink)}; layered ${list(samples.layered)}`,
          );
        }
        progress(
          `container start: ${point.paths} paths: bind ${point.bindMs.toFixed(0)} ms, hardlink ${point.hardlinkMs.toFixed(0)} ms, layered ${point.layeredMs.toFixed(0)} ms; layered / hardlink per round: median ${quartile(0.5)}, quartiles ${quartile(0.25)}-${quartile(0.75)}`,
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
    await fixtures.deletePaths(closureInfos).catch(() => undefined);
    await work.remove();
  }
}
