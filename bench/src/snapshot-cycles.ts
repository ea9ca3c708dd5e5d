/**
 * Snapshot operation cycles through containerd's Snapshots API: the real daemon as the `nix`
 * proxy snapshotter against containerd's built-in overlayfs snapshotter, on the same containerd
 * 1.6. One cycle is Prepare + Mounts + Commit + View + Stat + Remove(view) + Remove(committed),
 * the cycle of the field notes' measurement of containerd's own overlay snapshotter. Plain
 * snapshots (no nix labels): this measures the proxy round trip and the metadata store.
 */
import { performance } from "node:perf_hooks";
import {
  type CallOptions,
  type ContainerdClient,
  createContainerdClient,
} from "@nix-snapshotter/containerd-client";
import { type Containerd, startContainerd } from "@nix-snapshotter/containerd-client/testing";
import { type DaemonProcess, startDaemonProcess } from "nix-snapshotter/testing";
import type { Figure } from "./harness.js";

export const cyclesSection = "Snapshot op cycles through containerd";

/**
 * Every call runs in this lease: containerd's garbage collector removes snapshots that nothing
 * references, and a Remove schedules a collection that would take the next cycle's active
 * snapshot between its Prepare and its Commit.
 */
const lease = "nix-snapshotter-bench-cycles";

async function cycle(client: ContainerdClient, snapshotter: string, id: string): Promise<void> {
  try {
    await cycleSteps(client, snapshotter, id, { lease });
  } catch (error) {
    throw new Error(`${snapshotter}, cycle ${id}: ${(error as Error).message}`, { cause: error });
  }
}

async function cycleSteps(
  client: ContainerdClient,
  snapshotter: string,
  id: string,
  call: CallOptions,
): Promise<void> {
  const key = `active-${id}`;
  const name = `committed-${id}`;
  const view = `view-${id}`;
  await client.snapshots.prepare({ snapshotter, key, parent: "" }, call);
  const mounts = await client.snapshots.mounts({ snapshotter, key }, call);
  if (mounts.mounts.length === 0) throw new Error(`${snapshotter}: Mounts returned nothing`);
  await client.snapshots.commit({ snapshotter, name, key }, call);
  await client.snapshots.view({ snapshotter, key: view, parent: name }, call);
  const stat = await client.snapshots.stat({ snapshotter, key: name }, call);
  if (stat.info?.name !== name) throw new Error(`${snapshotter}: Stat named the wrong snapshot`);
  await client.snapshots.remove({ snapshotter, key: view }, call);
  await client.snapshots.remove({ snapshotter, key: name }, call);
}

/** Cycles per second of `total` cycles run by `concurrency` workers. */
async function throughput(
  client: ContainerdClient,
  snapshotter: string,
  concurrency: number,
  total: number,
): Promise<number> {
  // Warm-up: the first calls open connections and prepare statements.
  for (let index = 0; index < 5; index++) await cycle(client, snapshotter, `warm-${index}`);
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        const index = next++;
        await cycle(client, snapshotter, `c${concurrency}-${index}`);
      }
    }),
  );
  return (total * 1000) / (performance.now() - start);
}

export async function benchSnapshotCycles(
  progress: (line: string) => void,
): Promise<{ figures: Figure[]; containerdVersion: string }> {
  let daemon: DaemonProcess | undefined;
  let containerd: Containerd | undefined;
  try {
    daemon = await startDaemonProcess({ mountMode: "hardlink", logLevel: "warn" });
    containerd = await startContainerd({ version: "1.6", proxyPlugins: { nix: daemon.address } });
    const client = createContainerdClient({
      address: containerd.address,
      namespace: containerd.namespace,
    });
    const figures: Figure[] = [];
    try {
      await client.leases.create({ id: lease, labels: {} });
      for (const [concurrency, total] of [
        [1, 300],
        [8, 600],
      ] as const) {
        const ours = await throughput(client, "nix", concurrency, total);
        const baseline = await throughput(client, "overlayfs", concurrency, total);
        figures.push({
          section: cyclesSection,
          figure: `${total} cycles, concurrency ${concurrency}`,
          ours,
          baseline,
          unit: "cycles/s",
        });
        progress(
          `snapshot cycles, concurrency ${concurrency}: nix ${ours.toFixed(0)}/s, overlayfs ${baseline.toFixed(0)}/s`,
        );
      }
    } finally {
      client.close();
    }
    return { figures, containerdVersion: containerd.versionLine };
  } finally {
    await containerd?.stop();
    await daemon?.cleanup();
  }
}
