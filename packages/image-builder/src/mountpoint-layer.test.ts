import { describe, expect, it } from "vitest";
import { createMemoryFileSystem } from "./file-system.js";
import { compareEntryNames, planMountpointLayer } from "./mountpoint-layer.js";

const a = "/nix/store/s66mzxpvicwk07gjbjfw9izjfa797vsw-a";
const b = "/nix/store/3n58xw4373jp0ljirf06d8077j15pc4j-b";
const loop = "/nix/store/q7hi3rvpfgc232qkdq2dacmvkmsrnldg-loop";

describe("mountpoint layer planning", () => {
  it("sorts parents before children, component by component", () => {
    const names = ["nix-x", "nix/store", "nix", "a/b", "a", "a-b"];
    expect(names.sort(compareEntryNames)).toEqual(["a", "a/b", "a-b", "nix", "nix/store", "nix-x"]);
  });

  it("orders as comparing the split components would, for any names", () => {
    const reference = (left: string, right: string) => {
      const a = left.split("/");
      const b = right.split("/");
      for (let index = 0; index < Math.min(a.length, b.length); index++) {
        if (a[index] !== b[index]) return a[index]! < b[index]! ? -1 : 1;
      }
      return a.length - b.length;
    };
    // Characters below and above "/" (0x2f), a multi-byte one and empty components.
    const alphabet = ["a", "b", "-", ".", "/", "0", "é", "+"];
    let seed = 7;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const names = Array.from({ length: 400 }, () =>
      Array.from(
        { length: 1 + Math.floor(random() * 6) },
        () => alphabet[Math.floor(random() * alphabet.length)],
      ).join(""),
    );
    for (const left of names) {
      for (const right of names.slice(0, 60)) {
        expect(Math.sign(compareEntryNames(left, right))).toBe(Math.sign(reference(left, right)));
      }
    }
  });

  it("skips a later copyToRoot's directory that clashes with an earlier file, with its subtree", async () => {
    const fileSystem = createMemoryFileSystem({
      [`${a}/lib`]: { type: "file" },
      [`${b}/lib/libx.so`]: { type: "file" },
      [`${b}/share/doc`]: { type: "file" },
    });
    const entries = await planMountpointLayer({
      storePaths: [a, b],
      copyToRoot: [a, b],
      fileSystem,
      storeDir: "/nix/store",
    });
    const names = entries.map((entry) => `${entry.name}:${entry.type}`);
    expect(names).toContain("lib:symlink");
    expect(names.some((name) => name.startsWith("lib/"))).toBe(false);
    expect(names).toContain("share/doc:symlink");
    expect(entries.find((entry) => entry.name === "lib")?.linkname).toBe(`${a}/lib`);
  });

  it("gives up on copyToRoot symlink loops", async () => {
    const fileSystem = createMemoryFileSystem({ [loop]: { type: "symlink", target: loop } });
    await expect(
      planMountpointLayer({
        storePaths: [],
        copyToRoot: [loop],
        fileSystem,
        storeDir: "/nix/store",
      }),
    ).rejects.toThrow(/too many levels of symbolic links/);
  });

  it("uses a custom store directory for the mountpoints", async () => {
    const storePath = "/opt/store/s66mzxpvicwk07gjbjfw9izjfa797vsw-a";
    const fileSystem = createMemoryFileSystem({ [storePath]: { type: "directory" } });
    const entries = await planMountpointLayer({
      storePaths: [storePath],
      copyToRoot: [],
      fileSystem,
      storeDir: "/opt/store",
    });
    expect(entries.map((entry) => entry.name)).toEqual(["opt", "opt/store", storePath.slice(1)]);
  });
});
