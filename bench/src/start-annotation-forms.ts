/**
 * Container start in hardlink mode for each nix annotation form: the same closure (busybox plus
 * N synthetic store paths) as three nix images whose layer carries the per-path form only
 * (`nix-layer` + one `nix-store-path.<i>` per path), the closure form only (`nix-closure`), or
 * both, against the closure as an ordinary one-layer image on containerd's overlayfs, on one
 * containerd 1.7. Each form has its own daemon (hardlink mode) as its own proxy snapshotter
 * (`nix-per-path`, `nix-closure`, `nix-both`): containerd's collection after a removal Walks every
 * snapshot of that snapshotter (every label of each), so a snapshotter holding only one form's
 * images is what a user of that form gets. Runs are interleaved (one of each variant in turn, the
 * order rotating from run to run) so that load drifting over the run hits every variant alike;
 * the figure is the median. The closure-info path is made with `nix-store --add` (a directory
 * with a `store-paths` file): it has no references, so the fixtures' roots keep the closure alive.
 *
 * `node bench/dist/start-annotation-forms.js` (root). BENCH_FORMS_SIZES (default 1000,5000),
 * BENCH_FORMS_RUNS (default 7), BENCH_DAEMON_NODE_ARGS (flags of the daemons' node, e.g.
 * `--cpu-prof --cpu-prof-dir=<dir>`), BENCH_CONTAINERD_LOG (a file: containerd runs at log level
 * trace and its log is copied there at the end, e.g. for its garbage collections' durations),
 * BENCH_DAEMON_METRICS (a file name prefix: each daemon serves its metrics on a loopback port and
 * their text is written to `<prefix>.<form>` at the end, e.g. the time of each gRPC method on the
 * daemon's side), BENCH_FORMS_CLIENT_SIDE=1 (after each size's starts, times the client's share of
 * a start before its Prepare with containerd's Go client: bench/trials/client-side/main.go).
 */
import { execFile } from "node:child_process";
import { copyFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { promisify } from "node:util";
import { createContainerdClient, importArchive } from "@nix-snapshotter/containerd-client";
import { type Containerd, startContainerd } from "@nix-snapshotter/containerd-client/testing";
import { type AnnotationForm, buildImage, writeImageArchive } from "@nix-snapshotter/image-builder";
import { createNixFixtures, type SyntheticClosure } from "@nix-snapshotter/nix-store/testing";
import { buildGoProgram } from "@nix-snapshotter/snapshotter/testing";
import { type DaemonProcess, startDaemonProcess } from "nix-snapshotter/testing";
import {
  addClosureInfo,
  freePort,
  layeredArchive,
  median,
  repositoryRoot,
  workDirectory,
} from "./harness.js";

const execFileAsync = promisify(execFile);
/** BENCH_FORMS_CLIENT_SIDE=1: a trial Go program, see its header. */
const clientSideSource = join(repositoryRoot, "bench", "trials", "client-side", "main.go");

const forms = ["per-path", "closure", "both"] as const satisfies readonly AnnotationForm[];

/** Each form's images live in their own daemon, a proxy snapshotter of its own. */
function snapshotterOf(variant: (typeof forms)[number] | "layered"): string {
  return variant === "layered" ? "overlayfs" : `nix-${variant}`;
}

export interface FormsPoint {
  paths: number;
  /** Median start time per nix form, and of the layered image. */
  ms: Record<(typeof forms)[number] | "layered", number>;
  /** Bytes of the nix image's manifest per form (the labels containerd stores). */
  manifestBytes: Record<(typeof forms)[number], number>;
  /**
   * Median of Prepare + Mounts + Remove of a container's snapshot on the image's top layer
   * through containerd's Snapshots API: the snapshot part of a start, without mount and runc.
   */
  snapshotMs: Record<(typeof forms)[number] | "layered", number>;
}

export async function benchStartAnnotationForms(
  sizes: readonly number[],
  runs: number,
  progress: (line: string) => void,
): Promise<FormsPoint[]> {
  const fixtures = await createNixFixtures({ label: "bench-forms" });
  const work = await workDirectory("bench-forms-");
  const daemons: Partial<Record<(typeof forms)[number], DaemonProcess>> = {};
  let containerd: Containerd | undefined;
  const closures: SyntheticClosure[] = [];
  const closureInfos: string[] = [];
  try {
    const busybox = await fixtures.busybox();
    const metricsFile = process.env.BENCH_DAEMON_METRICS;
    const metricsPorts: Partial<Record<(typeof forms)[number], number>> = {};
    for (const form of forms) {
      const metricsPort = metricsFile === undefined ? undefined : await freePort();
      if (metricsPort !== undefined) metricsPorts[form] = metricsPort;
      daemons[form] = await startDaemonProcess({
        mountMode: "hardlink",
        logLevel: "warn",
        ...(metricsPort === undefined
          ? {}
          : { extraConfig: `metrics_address = "127.0.0.1:${metricsPort}"\n` }),
        ...(process.env.BENCH_DAEMON_NODE_ARGS === undefined
          ? {}
          : { nodeArgs: process.env.BENCH_DAEMON_NODE_ARGS.split(" ").filter(Boolean) }),
      });
    }
    containerd = await startContainerd({
      version: "1.7",
      ...(process.env.BENCH_CONTAINERD_LOG === undefined ? {} : { logLevel: "trace" as const }),
      proxyPlugins: Object.fromEntries(
        forms.map((form) => [snapshotterOf(form), daemons[form]!.address]),
      ),
    });
    const client = createContainerdClient({
      address: containerd.address,
      namespace: containerd.namespace,
    });
    const points: FormsPoint[] = [];
    // containerd collects a snapshot that nothing references, and a Remove schedules a
    // collection: the bench's own snapshots live in a lease.
    const call = { lease: "nix-snapshotter-bench-forms" };
    try {
      await client.leases.create({ id: call.lease, labels: {} });
      const entrypoint = [`${busybox.storePath}/bin/true`];
      for (const count of sizes) {
        progress(`annotation forms: ${count} paths: creating the closure`);
        const synthetic = await fixtures.syntheticClosure({
          count,
          name: `bench-forms-${count}`,
          closureInfo: false,
        });
        closures.push(synthetic);
        const storePaths = [...new Set([...busybox.closure, ...synthetic.paths])].sort();
        const closureInfo = await addClosureInfo(
          fixtures,
          work.path,
          `forms-closure-info-${count}`,
          storePaths,
        );
        closureInfos.push(closureInfo);

        const references: Record<string, string> = {};
        const tops: Record<string, string> = {};
        const manifestBytes = {} as FormsPoint["manifestBytes"];
        for (const form of forms) {
          const image = await buildImage({
            config: { Entrypoint: entrypoint },
            closure: { closureInfo, storePaths },
            annotationForm: form,
          });
          manifestBytes[form] = image.manifestDescriptor.size;
          const name = `docker.io/bench/forms-${count}-${form}:1`;
          const imported = await importArchive(
            client,
            writeImageArchive(image, { names: [name] }),
            {
              snapshotter: snapshotterOf(form),
              names: [name],
            },
          );
          tops[form] = imported.chainIds.at(-1)!;
          references[form] = name;
        }
        const layered = await layeredArchive(
          `docker.io/bench/forms-layered-${count}:1`,
          storePaths,
          entrypoint,
        );
        tops.layered = (
          await importArchive(client, layered.archive, { snapshotter: "overlayfs" })
        ).chainIds.at(-1)!;
        references.layered = `docker.io/bench/forms-layered-${count}:1`;

        const variants = [...forms, "layered"] as const;
        const samples = Object.fromEntries(variants.map((variant) => [variant, [] as number[]]));
        progress(`annotation forms: ${storePaths.length} paths: ${runs} interleaved runs`);
        for (let run = 0; run < runs; run++) {
          // Each run starts with another variant: a start may overlap with what the previous
          // removal left running (containerd's collection, the daemon's deletions).
          const order = variants.map((_, index) => variants[(index + run) % variants.length]!);
          for (const variant of order) {
            const start = performance.now();
            await containerd.ctr([
              "run",
              "--rm",
              "--snapshotter",
              snapshotterOf(variant),
              references[variant]!,
              `forms-${count}-${variant}-${run}`,
            ]);
            samples[variant]!.push(performance.now() - start);
          }
        }
        const snapshotSamples = Object.fromEntries(
          variants.map((variant) => [variant, [] as number[]]),
        );
        for (let run = 0; run < runs; run++) {
          for (const variant of variants) {
            const snapshotter = snapshotterOf(variant);
            const key = `forms-snapshot-${count}-${variant}-${run}`;
            const start = performance.now();
            await client.snapshots.prepare({ snapshotter, key, parent: tops[variant]! }, call);
            await client.snapshots.mounts({ snapshotter, key }, call);
            await client.snapshots.remove({ snapshotter, key }, call);
            snapshotSamples[variant]!.push(performance.now() - start);
          }
        }
        if (process.env.BENCH_FORMS_CLIENT_SIDE === "1") {
          // The client's share of `ctr run` before its Prepare, from containerd's own Go client.
          const binary = await buildGoProgram(clientSideSource, "client-side");
          const { stdout } = await execFileAsync(binary, [
            containerd.address,
            containerd.namespace,
            String(runs),
            ...variants.map((variant) => `${snapshotterOf(variant)}=${references[variant]!}`),
          ]);
          progress(`annotation forms: ${storePaths.length} paths: client side ${stdout.trim()}`);
        }
        const snapshotMs = Object.fromEntries(
          variants.map((variant) => [variant, median(snapshotSamples[variant]!)]),
        ) as FormsPoint["snapshotMs"];
        const ms = Object.fromEntries(
          variants.map((variant) => [variant, median(samples[variant]!)]),
        ) as FormsPoint["ms"];
        points.push({ paths: storePaths.length, ms, manifestBytes, snapshotMs });
        progress(
          `annotation forms: ${storePaths.length} paths: ${variants
            .map(
              (variant) =>
                `${variant} ${ms[variant].toFixed(0)} ms (${(ms.layered / ms[variant]).toFixed(2)}x)`,
            )
            .join(", ")}; snapshot Prepare+Mounts+Remove: ${variants
            .map((variant) => `${variant} ${snapshotMs[variant].toFixed(0)} ms`)
            .join(", ")}`,
        );
      }
      if (metricsFile !== undefined) {
        for (const [form, port] of Object.entries(metricsPorts)) {
          const response = await fetch(`http://127.0.0.1:${port}/metrics`);
          await writeFile(`${metricsFile}.${form}`, await response.text());
        }
      }
    } finally {
      client.close();
    }
    return points;
  } finally {
    if (containerd !== undefined && process.env.BENCH_CONTAINERD_LOG !== undefined) {
      await copyFile(containerd.logPath, process.env.BENCH_CONTAINERD_LOG).catch(() => undefined);
    }
    await containerd?.stop();
    for (const daemon of Object.values(daemons)) await daemon.cleanup();
    for (const synthetic of closures) {
      await synthetic.release();
      await fixtures.deletePaths(synthetic.paths).catch(() => undefined);
    }
    await fixtures.cleanup();
    await fixtures.deletePaths(closureInfos).catch(() => undefined);
    await work.remove();
  }
}
