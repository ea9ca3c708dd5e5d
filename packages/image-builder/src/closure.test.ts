import { describe, expect, it } from "vitest";
import { parseStorePathList, readClosure } from "./closure.js";
import { createMemoryFileSystem } from "./file-system.js";

const info = "/nix/store/0c0s3b6kqhq8sd6d0gn9ng9kz1c4dx0q-closure-info";
const hello = "/nix/store/s66mzxpvicwk07gjbjfw9izjfa797vsw-hello-2.12.1";
const fileSystem = createMemoryFileSystem({
  [`${info}/store-paths`]: { type: "file", data: `${hello}\n\n` },
  "/tmp/list": { type: "file", data: `${hello}\r\n` },
  "/tmp/bad": { type: "file", data: `${hello}\n/etc/passwd\n` },
});

describe("closures", () => {
  it("reads closure-info paths, their store-paths file, and plain lists", async () => {
    expect(await readClosure(info, { fileSystem })).toEqual({
      closureInfo: info,
      storePaths: [hello],
    });
    expect(await readClosure(`${info}/store-paths`, { fileSystem })).toEqual({
      closureInfo: info,
      storePaths: [hello],
    });
    expect(await readClosure("/tmp/list", { fileSystem })).toEqual([hello]);
  });

  it("names the file and line of a bad entry", async () => {
    await expect(readClosure("/tmp/bad", { fileSystem })).rejects.toThrow(
      /\/tmp\/bad:2: "\/etc\/passwd" is not a canonical store path/,
    );
    expect(() => parseStorePathList("../x", "f")).toThrow(/f:1/);
  });

  it("reports a missing file as NotFound", async () => {
    await expect(readClosure("/tmp/missing", { fileSystem })).rejects.toMatchObject({
      code: "NotFound",
    });
  });
});
