import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createSnapshotter } from "./snapshotter.js";
import { kill9, spawnTypeScriptChild, waitForLine } from "./testing/child-process.js";

const snapshotterModule = pathToFileURL(join(import.meta.dirname, "snapshotter.ts")).href;

let directory: string;

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), "snapshotter-crash-"));
});

afterEach(async () => {
  await rm(directory, { recursive: true, force: true });
});

describe("kill -9 of a busy snapshotter", () => {
  // The child runs Prepare/write/Commit/View/Remove cycles as fast as it can, several at a
  // time; it is killed after a varying number of cycles, i.e. at an arbitrary instant.
  it.each([3, 17, 41])("leaves a consistent root after %i cycles", async (cycles) => {
    const root = join(directory, "root");
    const source = `
      import { writeFile } from "node:fs/promises";
      import { join } from "node:path";
      import { createSnapshotter } from ${JSON.stringify(snapshotterModule)};
      const s = await createSnapshotter({ root: process.argv[2], mountMode: "none" });
      await s.prepare("base-key", "");
      await s.commit("base", "base-key");
      let cycle = 0;
      async function worker(lane) {
        for (let index = 0; ; index++) {
          const key = "k-" + lane + "-" + index;
          const [mount] = await s.prepare(key, "base");
          const upper = mount.options.find((o) => o.startsWith("upperdir=")).slice(9);
          await writeFile(join(upper, "file"), "x".repeat(1000));
          await s.commit("c-" + key, key);
          await s.view("v-" + key, "c-" + key);
          if (index % 2 === 0) { await s.remove("v-" + key); await s.remove("c-" + key); }
          console.log("cycle " + ++cycle);
        }
      }
      await Promise.all([worker(1), worker(2), worker(3)]);
    `;
    const child = await spawnTypeScriptChild(directory, source, [root]);
    await waitForLine(child, new RegExp(`^cycle ${cycles}$`));
    await kill9(child);

    const s = await createSnapshotter({ root, mountMode: "none" });
    const infos = [];
    for await (const info of s.list()) infos.push(info);
    const names = new Set(infos.map((info) => info.name));
    for (const info of infos) {
      if (info.parent !== "") expect(names.has(info.parent)).toBe(true);
    }
    await s.cleanup();
    // After Cleanup, the directories are exactly the snapshots' ids: nothing orphaned, nothing lost.
    const directories = (await readdir(join(root, "snapshots"))).sort();
    expect(directories.every((name) => /^[0-9]+$/.test(name))).toBe(true);
    expect(directories).toHaveLength(infos.length);
    for (const info of infos.filter((i) => i.kind === "active" || i.kind === "view")) {
      await s.mounts(info.name);
    }
    // And it keeps working.
    await s.prepare("after", "base");
    await s.commit("after-c", "after");
    await s.close();
  });
});
