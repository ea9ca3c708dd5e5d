import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ContainerdClient, createContainerdClient } from "./client.js";
import { isContainerdError } from "./errors.js";
import { importArchive } from "./import-archive.js";
import {
  type Containerd,
  type ContainerdVersion,
  containerdSkipReason,
  runContainer,
  startContainerd,
} from "./testing/containerd.js";
import { busyboxArchive, busyboxDockerArchive } from "./testing/test-images.js";

const versions: ContainerdVersion[] = ["1.6", "1.7", "2.1"];

for (const version of versions) {
  const skip = containerdSkipReason(version) ?? "";
  describe.skipIf(skip !== "")(`importArchive on containerd ${version} ${skip}`, () => {
    let containerd: Containerd;
    let client: ContainerdClient;
    const nonce = randomBytes(4).toString("hex");
    const name = `example.test/busybox-${nonce}:1`;
    const archive = busyboxArchive({
      name,
      entrypoint: ["/bin/cat", "/hello"],
      files: { hello: `hello ${nonce}\n` },
    });

    beforeAll(async () => {
      containerd = await startContainerd({ version, unpackConfig: [] });
      client = createContainerdClient({
        address: containerd.address,
        namespace: containerd.namespace,
      });
      await client.waitForReady(30_000);
    });
    afterAll(async () => {
      client?.close();
      await containerd?.stop();
    });

    it("imports, unpacks through overlayfs, and ctr runs the image", async () => {
      const result = await importArchive(client, archive, { snapshotter: "overlayfs" });
      expect(result.names).toEqual([name]);
      expect(result.contentWritten).toBe(4);
      expect(result.layersApplied).toBe(2);
      const images = await containerd.ctr(["images", "ls", "--quiet"]);
      expect(images.stdout.split("\n")).toContain(name);
      const snapshots = await containerd.ctr(["snapshots", "--snapshotter", "overlayfs", "ls"]);
      for (const chainId of result.chainIds) expect(snapshots.stdout).toContain(chainId);
      const run = await runContainer(containerd, "overlayfs", name, `run-${nonce}`);
      expect(run).toBe(`hello ${nonce}\n`);
    });

    it("a second import writes and applies nothing", async () => {
      const result = await importArchive(client, archive, { snapshotter: "overlayfs" });
      expect(result.contentWritten).toBe(0);
      expect(result.layersApplied).toBe(0);
    });

    it("keeps content and snapshots through containerd's GC, and leaves no lease", async () => {
      const leases = await containerd.ctr(["leases", "ls", "--quiet"]);
      expect(leases.stdout.trim()).toBe("");
      // Deleting an unrelated image triggers a GC pass (synchronously with --sync).
      await importArchive(
        client,
        busyboxArchive({ name: `example.test/other-${nonce}:1`, entrypoint: ["/bin/sh"] }),
        { snapshotter: "overlayfs" },
      );
      await containerd.ctr(["images", "rm", "--sync", `example.test/other-${nonce}:1`]);
      const content = await containerd.ctr(["content", "ls", "--quiet"]);
      const image = await client.images.get({ name });
      expect(content.stdout).toContain(image.image?.target?.digest);
      const run = await runContainer(containerd, "overlayfs", name, `again-${nonce}`);
      expect(run).toBe(`hello ${nonce}\n`);
    });

    it("two concurrent imports of one new image both succeed, with one copy of each blob", async () => {
      const concurrentName = `example.test/concurrent-${nonce}:1`;
      const concurrent = busyboxArchive({
        name: concurrentName,
        entrypoint: ["/bin/cat", "/data"],
        files: { data: `concurrent ${nonce}\n` },
      });
      const [first, second] = await Promise.all([
        importArchive(client, concurrent, { snapshotter: "overlayfs" }),
        importArchive(client, concurrent, { snapshotter: "overlayfs" }),
      ]);
      expect(first.target.digest).toBe(second.target.digest);
      // The busybox layer is shared with the first image; the rest was written once in all.
      expect(first.contentWritten + second.contentWritten).toBe(3);
      const snapshots = await containerd.ctr(["snapshots", "--snapshotter", "overlayfs", "ls"]);
      expect(snapshots.stdout).not.toContain("extract-");
      const run = await runContainer(
        containerd,
        "overlayfs",
        concurrentName,
        `concurrent-${nonce}`,
      );
      expect(run).toBe(`concurrent ${nonce}\n`);
    });

    it("imports a docker archive under its normalised RepoTag", async () => {
      const archive = busyboxDockerArchive({
        repoTag: `docker-${nonce}:2`,
        message: `docker ${nonce}\n`,
      });
      const result = await importArchive(client, archive, { snapshotter: "overlayfs" });
      expect(result.names).toEqual([`docker.io/library/docker-${nonce}:2`]);
      const run = await runContainer(
        containerd,
        "overlayfs",
        `docker.io/library/docker-${nonce}:2`,
        `docker-${nonce}`,
      );
      expect(run).toBe(`docker ${nonce}\n`);
    });

    it("refuses a layer whose diff id does not match, leaving no snapshot behind", async () => {
      const hostile = busyboxArchive({
        name: `example.test/hostile-${nonce}:1`,
        entrypoint: ["/bin/sh"],
        diffIds: [`sha256:${"0".repeat(64)}`],
      });
      const error = await importArchive(client, hostile, { snapshotter: "overlayfs" }).catch(
        (caught: unknown) => caught,
      );
      expect(isContainerdError(error, "InvalidArgument")).toBe(true);
      expect((error as Error).message).toContain(`sha256:${"0".repeat(64)}`);
      const snapshots = await containerd.ctr(["snapshots", "--snapshotter", "overlayfs", "ls"]);
      expect(snapshots.stdout).not.toContain("extract-");
      const images = await containerd.ctr(["images", "ls", "--quiet"]);
      expect(images.stdout).not.toContain("hostile");
    });

    it("fails with Unavailable naming the socket while containerd is away", async () => {
      const absent = createContainerdClient({ address: `${containerd.dir}/absent.sock` });
      const error = await absent.serverVersion().catch((caught: unknown) => caught);
      absent.close();
      expect(isContainerdError(error, "Unavailable")).toBe(true);
      expect((error as Error).message).toContain(`${containerd.dir}/absent.sock`);
    });
  });
}
