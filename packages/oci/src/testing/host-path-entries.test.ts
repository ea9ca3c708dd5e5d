import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { hostPathEntries } from "./host-path-entries.js";

describe("hostPathEntries", () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "host-path-entries-"));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("lists parents, then each path's tree in sorted order, keeping links and modes", async () => {
    const store = join(root, "store");
    await mkdir(join(store, "b-package", "bin"), { recursive: true });
    await writeFile(join(store, "b-package", "bin", "tool"), "#!/bin/sh\n");
    await chmod(join(store, "b-package", "bin", "tool"), 0o555);
    await symlink("bin/tool", join(store, "b-package", "link"));
    await writeFile(join(store, "a-file"), "data");
    const entries = await hostPathEntries([join(store, "b-package"), join(store, "a-file")]);
    const name = (path: string) => path.slice(1);
    const parentNames = root
      .split("/")
      .slice(1)
      .map((_, index, parts) => parts.slice(0, index + 1).join("/"));
    expect(entries.map((entry) => entry.name)).toEqual([
      ...parentNames,
      name(store),
      name(join(store, "a-file")),
      name(join(store, "b-package")),
      name(join(store, "b-package", "bin")),
      name(join(store, "b-package", "bin", "tool")),
      name(join(store, "b-package", "link")),
    ]);
    const byName = new Map(entries.map((entry) => [entry.name, entry]));
    expect(byName.get(name(join(store, "b-package", "bin", "tool")))?.mode).toBe(0o555);
    expect(byName.get(name(join(store, "b-package", "link")))).toMatchObject({
      type: "symlink",
      linkname: "bin/tool",
    });
    expect(Buffer.from(byName.get(name(join(store, "a-file")))?.data ?? []).toString()).toBe(
      "data",
    );
  });

  it("refuses a relative path", async () => {
    await expect(hostPathEntries(["relative/path"])).rejects.toThrow(/not absolute/);
  });
});
