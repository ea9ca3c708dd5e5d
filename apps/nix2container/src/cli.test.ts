import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { loadArchiveImage, sha256Digest, writeTar } from "@nix-snapshotter/oci";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InspectResult } from "./commands/inspect.js";
import { createFakeStore, type FakeStore } from "./testing/fake-store.js";
import { runCli } from "./testing/run-cli.js";

// A fake store in a temporary directory (the CLI takes --store-dir), so these tests need no Nix.
let storeDir: string;
let work: string;
let hello: string;
let configFile: string;
let closureInfo: string;
let copyToRootFile: string;

const hash = (letter: string) => letter.repeat(32);

let store: FakeStore;
const buildArgs = (out: string, ...extra: string[]) => store.buildArgs(out, ...extra);

beforeAll(async () => {
  store = await createFakeStore("nix2container-cli-");
  ({ storeDir, work, hello, configFile, closureInfo, copyToRootFile } = store);
});

afterAll(async () => {
  await store?.cleanup();
});

describe("nix2container build and inspect", () => {
  it("builds an OCI archive that inspect describes, the same bytes every time", async () => {
    const out = join(work, "image.tar");
    await runCli(...buildArgs(out, "--ref", "example.com/hello:1", "--annotations", "both"));
    const first = await readFile(out);
    await runCli(...buildArgs(out, "--ref", "example.com/hello:1", "--annotations", "both"));
    expect((await readFile(out)).equals(first)).toBe(true);

    const image = loadArchiveImage(first);
    expect(image.names).toEqual(["example.com/hello:1"]);
    expect(image.config.config).toEqual({ Env: ["A=1"], Entrypoint: ["/bin/hello"] });
    // The config file is in the closure-info list but not mounted, as with the Go tool.
    expect(image.layers[0]?.descriptor.annotations).toEqual({
      "containerd.io/snapshot/nix-layer": "true",
      "containerd.io/snapshot/nix-store-path.0": hello,
      "containerd.io/snapshot/nix-closure": closureInfo,
    });

    const inspected = JSON.parse(await runCli("inspect", "--json", out)) as InspectResult;
    expect(inspected.references).toEqual(["example.com/hello:1"]);
    expect(inspected.platform).toBe("linux/amd64");
    expect(inspected.storePaths).toEqual([hello]);
    expect(inspected.closures).toEqual([closureInfo]);
    expect(inspected.manifest).toBe(image.manifestDescriptor.digest);
    const text = await runCli("inspect", out);
    expect(text).toContain(`Reference:   example.com/hello:1`);
    expect(text).toContain(`  ${hello}`);
    expect(text).toContain('"/bin/hello"');
  });

  it("writes the closure form alone by default for a closure-info, per-path on request", async () => {
    const out = join(work, "default-form.tar");
    await runCli(...buildArgs(out, "--ref", "example.com/hello:1"));
    expect(loadArchiveImage(await readFile(out)).layers[0]?.descriptor.annotations).toEqual({
      "containerd.io/snapshot/nix-closure": closureInfo,
    });
    await runCli(...buildArgs(out, "--ref", "example.com/hello:1", "--annotations", "per-path"));
    expect(loadArchiveImage(await readFile(out)).layers[0]?.descriptor.annotations).toEqual({
      "containerd.io/snapshot/nix-layer": "true",
      "containerd.io/snapshot/nix-store-path.0": hello,
    });
  });

  it("names a store-path output nix:0<out>:latest by default", async () => {
    const out = join(storeDir, `${hash("d")}-nix-image-hello.tar`);
    await runCli(...buildArgs(out, "--annotations", "per-path", "--compression", "zstd"));
    const image = loadArchiveImage(await readFile(out));
    expect(image.names).toEqual([`nix:0${out}:latest`]);
    expect(image.layers[0]?.descriptor.mediaType).toBe(
      "application/vnd.oci.image.layer.v1.tar+zstd",
    );
    expect(
      image.layers[0]?.descriptor.annotations?.["containerd.io/snapshot/nix-closure"],
    ).toBeUndefined();
  });

  it("keeps the annotations of a nix base image", async () => {
    const base = join(work, "base.tar");
    await runCli(...buildArgs(base, "--ref", "base:1"));
    const out = join(work, "derived.tar");
    await runCli(...buildArgs(out, "--ref", "derived:1", "--from-image", base));
    const baseImage = loadArchiveImage(await readFile(base));
    const image = loadArchiveImage(await readFile(out));
    expect(image.layers[0]?.descriptor).toEqual(baseImage.layers[0]?.descriptor);
    expect(image.layers).toHaveLength(2);
  });
});

describe("nix2container inspect", () => {
  it("describes a docker archive without nix layers", async () => {
    const layer = writeTar([{ name: "etc/hostname", type: "file", data: Buffer.from("x") }]);
    const config = {
      architecture: "arm64",
      os: "linux",
      variant: "v8",
      config: { Cmd: ["/bin/sh"] },
      rootfs: { type: "layers", diff_ids: [sha256Digest(layer)] },
    };
    const archive = join(work, "docker.tar");
    await writeFile(
      archive,
      writeTar([
        { name: "layer.tar", type: "file", data: layer },
        { name: "config.json", type: "file", data: Buffer.from(JSON.stringify(config)) },
        {
          name: "manifest.json",
          type: "file",
          data: Buffer.from(
            JSON.stringify([
              { Config: "config.json", RepoTags: ["busybox:1"], Layers: ["layer.tar"] },
            ]),
          ),
        },
      ]),
    );
    const result = JSON.parse(await runCli("inspect", "--json", archive)) as InspectResult;
    expect(result).toMatchObject({
      references: ["busybox:1"],
      format: "docker",
      platform: "linux/arm64/v8",
      storePaths: [],
      closures: [],
    });
    expect(result.layers).toEqual([
      {
        digest: sha256Digest(layer),
        mediaType: "application/vnd.oci.image.layer.v1.tar",
        size: layer.byteLength,
      },
    ]);
    await rm(archive);
  });

  it("fails clearly on a file that is not an archive", async () => {
    const path = join(work, "not-an-archive");
    await writeFile(path, "hello".repeat(300));
    await expect(runCli("inspect", path)).rejects.toThrow(
      /archive ".*not-an-archive": tar archive: not a tar archive/,
    );
    await expect(runCli("inspect", join(work, "missing.tar"))).rejects.toThrow(
      /cannot read archive/,
    );
    await rm(path);
  });
});

describe("hostile input writes nothing", () => {
  async function expectFailure(args: string[], message: RegExp, out: string): Promise<void> {
    await expect(runCli(...args)).rejects.toThrow(message);
    const leftovers = (await readdir(work)).filter(
      (name) => name.includes(".tmp") || name === "fail.tar",
    );
    expect(leftovers).toEqual([]);
    await expect(readFile(out)).rejects.toMatchObject({ code: "ENOENT" });
  }

  const out = () => join(work, "fail.tar");

  it("malformed JSON config", async () => {
    const bad = join(work, "bad.json");
    await writeFile(bad, "{ entrypoint: ");
    const args = buildArgs(out(), "--ref", "a:1");
    args[args.indexOf(configFile)] = bad;
    await expectFailure(args, /--config ".*bad\.json": malformed JSON/, out());
  });

  it("a wrongly typed config field", async () => {
    const bad = join(work, "typed.json");
    await writeFile(bad, JSON.stringify({ Entrypoint: "/bin/hello" }));
    const args = buildArgs(out(), "--ref", "a:1");
    args[args.indexOf(configFile)] = bad;
    await expectFailure(args, /config\.Entrypoint: expected an array of strings/, out());
  });

  it("a reference with a bad tag", async () => {
    await expectFailure(buildArgs(out(), "--ref", "app:bad/tag!"), /invalid/, out());
    await expectFailure(buildArgs(out(), "--ref", "app:-tag"), /invalid tag "-tag"/, out());
  });

  it("a closure path outside the store", async () => {
    const list = join(work, "closure.txt");
    await writeFile(list, `${hello}\n/etc/passwd\n`);
    const args = buildArgs(out(), "--ref", "a:1");
    args[args.indexOf(join(closureInfo, "store-paths"))] = list;
    await expectFailure(
      args,
      /closure\.txt:2: "\/etc\/passwd" is not a canonical store path/,
      out(),
    );
  });

  it("a copyToRoot outside the store", async () => {
    const list = join(work, "ctr.json");
    await writeFile(list, JSON.stringify(["/etc"]));
    const args = buildArgs(out(), "--ref", "a:1");
    args[args.indexOf(copyToRootFile)] = list;
    await expectFailure(args, /copyToRoot "\/etc" is not inside the store/, out());
  });

  it("a base archive with escaping entries", async () => {
    const hostile = join(work, "hostile.tar");
    const [header] = [writeTar([{ name: "placeholder-name", type: "symlink", linkname: "x" }])];
    const patched = Buffer.from(header!);
    // Make the link point outside the archive and fix the checksum.
    patched.fill(0, 157, 257);
    patched.write("../../../etc/passwd", 157, "utf8");
    patched.fill(0x20, 148, 156);
    let sum = 0;
    for (const byte of patched.subarray(0, 512)) sum += byte;
    patched.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8, "ascii");
    await writeFile(hostile, patched);
    await expectFailure(
      buildArgs(out(), "--ref", "a:1", "--from-image", hostile),
      /base image: .*escapes the archive/,
      out(),
    );
    await rm(hostile);
  });

  it("an output that is not a store path without --ref", async () => {
    await expectFailure(buildArgs(out()), /is not a store path.*pass --ref/, out());
  });

  it("does not replace an existing output on failure", async () => {
    const existing = join(work, "existing.tar");
    await writeFile(existing, "old");
    await expect(runCli(...buildArgs(existing, "--ref", "app:-bad"))).rejects.toThrow(
      /invalid tag/,
    );
    expect(await readFile(existing, "utf8")).toBe("old");
    await rm(existing);
  });
});
