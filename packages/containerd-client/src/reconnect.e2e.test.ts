import { mkdtemp, rm, symlink, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createContainerdClient } from "./client.js";
import { isContainerdError } from "./errors.js";
import { canRunContainerd, findContainerd, startContainerd } from "./testing/containerd.js";

const skip = !canRunContainerd()
  ? "not root or no runc"
  : ((findContainerd("1.6") as { reason?: string }).reason ?? "");

describe.skipIf(skip !== "")(`containerd restarts under a live client ${skip}`, () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  it("fails with Unavailable while containerd is down and reconnects by itself", async () => {
    const dir = await mkdtemp(join(tmpdir(), "containerd-restart-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    // A stable address (as /run/containerd/containerd.sock is) pointing at the current instance.
    const address = join(dir, "containerd.sock");
    const first = await startContainerd({ version: "1.6" });
    cleanups.push(() => first.stop());
    await symlink(first.address, address);
    const client = createContainerdClient({ address, namespace: "restart" });
    cleanups.push(async () => client.close());
    await client.waitForReady(30_000);
    await client.namespaces.create({ namespace: { name: "restart", labels: { run: "first" } } });

    await first.stop();
    const down = await client.serverVersion().catch((caught: unknown) => caught);
    expect(isContainerdError(down, "Unavailable")).toBe(true);
    expect((down as Error).message).toContain(address);

    const second = await startContainerd({ version: "1.6" });
    cleanups.push(() => second.stop());
    await unlink(address);
    await symlink(second.address, address);
    await client.waitForReady(30_000);
    // The same client talks to the new containerd: its namespace list is its own.
    const listed = await client.namespaces.list({});
    expect(listed.namespaces.map((namespace) => namespace.name)).not.toContain("restart");
    expect((await client.serverVersion()).version).not.toBe("");
  });
});
