import {
  Annotation,
  compress,
  decompress,
  loadArchiveImage,
  MediaType,
  readTar,
  sha256Digest,
  writeOciArchive,
  writeTar,
} from "@nix-snapshotter/oci";
import { describe, expect, it } from "vitest";
import { buildImage } from "./build-image.js";
import { writeImageArchive } from "./export-archive.js";
import { createMemoryFileSystem, type MemoryNode } from "./file-system.js";

const hello = "/nix/store/s66mzxpvicwk07gjbjfw9izjfa797vsw-hello-2.12.1";
const glibc = "/nix/store/3n58xw4373jp0ljirf06d8077j15pc4j-glibc-2.37-8";
const script = "/nix/store/q7hi3rvpfgc232qkdq2dacmvkmsrnldg-script.sh";
const tools = "/nix/store/fz2c8qahxza5ygy4yvwdqzbck1bs3qag-tools";
const alias = "/nix/store/ryvnrp5n6kqv3fl20qy2xgcgdsza7i0m-alias";
const closureInfo = "/nix/store/0c0s3b6kqhq8sd6d0gn9ng9kz1c4dx0q-closure-info";

const tree: Record<string, MemoryNode> = {
  [`${hello}/bin/hello`]: { type: "file", data: "ELF" },
  [`${hello}/share/man/man1/hello.1`]: { type: "file" },
  [`${glibc}/lib/libc.so.6`]: { type: "file" },
  [script]: { type: "file", data: "#!/bin/sh" },
  [`${tools}/bin/hello`]: { type: "file" },
  [`${tools}/bin/tool`]: { type: "symlink", target: `${hello}/bin/hello` },
  [`${tools}/etc/tool.conf`]: { type: "file" },
  [alias]: { type: "symlink", target: hello },
  [`${closureInfo}/store-paths`]: { type: "file", data: `${glibc}\n${hello}\n` },
};
const fileSystem = createMemoryFileSystem(tree);
const platform = { architecture: "amd64", os: "linux" };

function layerEntries(layer: Uint8Array) {
  return readTar(decompress(layer), { rejectEscapingLinks: false }).map((entry) => {
    const kind = entry.type === "symlink" ? `-> ${entry.linkname}` : entry.type;
    return `${entry.name} ${entry.mode.toString(8)} ${kind}`;
  });
}

describe("buildImage", () => {
  it("builds mountpoints, copyToRoot links and per-path annotations", async () => {
    const image = await buildImage({
      closure: [hello, glibc, script],
      copyToRoot: [hello],
      config: { entrypoint: ["/bin/hello"], env: ["A=1"] },
      fileSystem,
      ...platform,
    });
    expect(image.storePaths).toEqual([glibc, script, hello]);
    expect(image.layer.mediaType).toBe(MediaType.ImageLayerGzip);
    expect(image.layer.annotations).toEqual({
      [Annotation.NixLayer]: "true",
      "containerd.io/snapshot/nix-store-path.0": glibc,
      "containerd.io/snapshot/nix-store-path.1": script,
      "containerd.io/snapshot/nix-store-path.2": hello,
    });
    const layer = image.blobs.get(image.layer.digest)!;
    expect(layerEntries(layer)).toEqual([
      "bin 755 directory",
      `bin/hello 777 -> ${hello}/bin/hello`,
      "nix 755 directory",
      "nix/store 755 directory",
      `${glibc.slice(1)} 755 directory`,
      `${script.slice(1)} 555 file`,
      `${hello.slice(1)} 755 directory`,
      "share 755 directory",
      "share/man 755 directory",
      "share/man/man1 755 directory",
      `share/man/man1/hello.1 777 -> ${hello}/share/man/man1/hello.1`,
    ]);
    const entries = readTar(decompress(layer), { rejectEscapingLinks: false });
    expect(entries.every((entry) => entry.uid === 0 && entry.gid === 0 && entry.mtime === 0)).toBe(
      true,
    );
    expect(image.diffId).toBe(sha256Digest(decompress(layer)));
    expect(image.config).toEqual({
      architecture: "amd64",
      os: "linux",
      config: { Env: ["A=1"], Entrypoint: ["/bin/hello"] },
      rootfs: { type: "layers", diff_ids: [image.diffId] },
      history: [{ created_by: "nix2container build", comment: "nix mountpoint layer" }],
    });
    expect(image.manifest.layers).toEqual([image.layer]);
    expect(image.blobs.size).toBe(3);
  });

  it("is deterministic and independent of closure order and duplicates", async () => {
    const first = await buildImage({
      closure: [hello, glibc],
      copyToRoot: [hello],
      fileSystem,
      ...platform,
    });
    const second = await buildImage({
      closure: [glibc, hello, glibc],
      copyToRoot: [hello],
      fileSystem,
      ...platform,
    });
    expect(second.manifestDescriptor).toEqual(first.manifestDescriptor);
    expect(
      writeImageArchive(first, { names: ["app:1"] }).equals(
        writeImageArchive(second, { names: ["app:1"] }),
      ),
    ).toBe(true);
  });

  it("writes the closure form alone for closure-info closures by default, per-path for lists", async () => {
    const closure = { closureInfo, storePaths: [glibc, hello] };
    const auto = await buildImage({ closure, fileSystem, ...platform });
    expect(auto.layer.annotations).toEqual({ [Annotation.NixClosure]: closureInfo });
    const list = await buildImage({ closure: [glibc, hello], fileSystem, ...platform });
    expect(list.layer.annotations).toEqual({
      "containerd.io/snapshot/nix-layer": "true",
      "containerd.io/snapshot/nix-store-path.0": glibc,
      "containerd.io/snapshot/nix-store-path.1": hello,
    });
    const both = await buildImage({ closure, fileSystem, annotationForm: "both", ...platform });
    expect(both.layer.annotations).toEqual({
      ...list.layer.annotations,
      [Annotation.NixClosure]: closureInfo,
    });
    const perPath = await buildImage({
      closure,
      fileSystem,
      annotationForm: "per-path",
      ...platform,
    });
    expect(perPath.layer.annotations).toEqual(list.layer.annotations);
    await expect(
      buildImage({ closure: [hello], fileSystem, annotationForm: "both", ...platform }),
    ).rejects.toThrow(/needs a closure from a closure-info/);
  });

  it("writes only the closure label in the closure form; the mountpoints stay", async () => {
    const closure = { closureInfo, storePaths: [glibc, hello] };
    const image = await buildImage({ closure, fileSystem, annotationForm: "closure", ...platform });
    expect(image.layer.annotations).toEqual({ [Annotation.NixClosure]: closureInfo });
    const perPath = await buildImage({
      closure,
      fileSystem,
      annotationForm: "per-path",
      ...platform,
    });
    expect(image.diffId).toBe(perPath.diffId);
    await expect(
      buildImage({ closure: [hello], fileSystem, annotationForm: "closure", ...platform }),
    ).rejects.toThrow(/"closure" needs a closure from a closure-info/);
  });

  it("merges overlapping copyToRoots: directories merge, the first one wins other clashes", async () => {
    const image = await buildImage({
      closure: [hello, tools],
      copyToRoot: [tools, hello],
      fileSystem,
      ...platform,
    });
    const names = layerEntries(image.blobs.get(image.layer.digest)!);
    expect(names).toContain(`bin/hello 777 -> ${tools}/bin/hello`);
    expect(names).toContain(`bin/tool 777 -> ${tools}/bin/tool`);
    expect(names).toContain(`etc/tool.conf 777 -> ${tools}/etc/tool.conf`);
    expect(names).toContain(`share/man/man1/hello.1 777 -> ${hello}/share/man/man1/hello.1`);
    expect(names.filter((name) => name.startsWith("bin/hello "))).toHaveLength(1);
  });

  it("follows a copyToRoot that is a symlink to another store path", async () => {
    const image = await buildImage({
      closure: [alias, hello],
      copyToRoot: [alias],
      fileSystem,
      ...platform,
    });
    const names = layerEntries(image.blobs.get(image.layer.digest)!);
    expect(names).toContain(`bin/hello 777 -> ${hello}/bin/hello`);
    expect(names).toContain(`${alias.slice(1)} 755 directory`);
  });

  it("supports zstd and uncompressed layers", async () => {
    for (const [compression, mediaType] of [
      ["zstd", MediaType.ImageLayerZstd],
      ["none", MediaType.ImageLayer],
    ] as const) {
      const image = await buildImage({ closure: [hello], fileSystem, compression, ...platform });
      expect(image.layer.mediaType).toBe(mediaType);
      expect(sha256Digest(decompress(image.blobs.get(image.layer.digest)!))).toBe(image.diffId);
    }
  });

  it.each([
    [{ closure: ["/etc/passwd"] }, /closure entry "\/etc\/passwd" is not a canonical store path/],
    [{ closure: [`${hello}/bin`] }, /is not a canonical store path/],
    [{ closure: [hello], copyToRoot: ["/etc"] }, /copyToRoot "\/etc" is not inside the store/],
    [{ closure: [hello], copyToRoot: [tools] }, /not in the closure/],
    [{ closure: [script], copyToRoot: [script] }, /must be a directory, got a file/],
    [
      { closure: [hello], config: { Entrypoint: "/bin/hello" } },
      /image config: config\.Entrypoint: expected an array/,
    ],
    [{ closure: [hello], config: [1] }, /expected a JSON object/],
    [{ closure: ["/nix/store/00000000000000000000000000000000-missing"] }, /missing.*ENOENT/],
  ])("rejects bad input %#", async (input, message) => {
    await expect(buildImage({ fileSystem, ...platform, ...input })).rejects.toThrow(message);
  });

  it("rejects a copyToRoot symlink leading out of the store", async () => {
    const escaping = "/nix/store/ryvnrp5n6kqv3fl20qy2xgcgdsza7i0m-escape";
    const hostile = createMemoryFileSystem({
      ...tree,
      [escaping]: { type: "symlink", target: "/etc" },
    });
    await expect(
      buildImage({ closure: [hello], copyToRoot: [escaping], fileSystem: hostile, ...platform }),
    ).rejects.toMatchObject({
      code: "InvalidArgument",
      message: expect.stringMatching(/outside the store/),
    });
  });

  it("reports config keys that match no field", async () => {
    const image = await buildImage({
      closure: [],
      config: { Hostname: "x", cmd: ["a"] },
      fileSystem,
      ...platform,
    });
    expect(image.ignoredConfigKeys).toEqual(["Hostname"]);
    expect(image.config.config).toEqual({ Cmd: ["a"] });
  });

  it("keeps odd label and port keys such as __proto__ as ordinary keys", async () => {
    const config = JSON.parse(
      '{"Labels": {"__proto__": "x", "a": "b"}, "ExposedPorts": {"__proto__": {}}}',
    );
    const image = await buildImage({ closure: [], config, fileSystem, ...platform });
    const written = JSON.parse(
      Buffer.from(image.blobs.get(image.configDescriptor.digest)!).toString(),
    ) as {
      config: { Labels: Record<string, string>; ExposedPorts: Record<string, unknown> };
    };
    expect(Object.keys(written.config.Labels)).toEqual(["__proto__", "a"]);
    expect(Object.keys(written.config.ExposedPorts)).toEqual(["__proto__"]);
  });

  it("defaults architecture and OS to the build host", async () => {
    const image = await buildImage({ closure: [], fileSystem });
    expect(image.config.os).toBe(process.platform);
    expect(image.config.architecture).toBe(process.arch === "x64" ? "amd64" : process.arch);
  });
});

describe("base images", () => {
  it("keeps a nix base image's layers byte-identical with their annotations", async () => {
    const base = await buildImage({
      closure: { closureInfo, storePaths: [glibc, hello] },
      copyToRoot: [hello],
      config: { Cmd: ["/bin/hello"], Env: ["A=1", "B=2"], Labels: { x: "base" }, WorkingDir: "/w" },
      fileSystem,
      ...platform,
    });
    const archive = writeImageArchive(base, { names: ["base:1"] });
    const image = await buildImage({
      closure: [tools],
      config: { env: ["B=3", "C=4"], labels: { y: "new" } },
      fromImage: archive,
      fileSystem,
      ...platform,
    });
    expect(image.manifest.layers[0]).toEqual(base.layer);
    expect(image.blobs.get(base.layer.digest)).toEqual(base.blobs.get(base.layer.digest));
    expect(image.config.rootfs.diff_ids).toEqual([base.diffId, image.diffId]);
    expect(image.config.config).toEqual({
      Env: ["A=1", "B=3", "C=4"],
      Cmd: ["/bin/hello"],
      WorkingDir: "/w",
      Labels: { x: "base", y: "new" },
    });
    expect(image.config.history).toHaveLength(2);
    const loaded = loadArchiveImage(writeImageArchive(image));
    expect(loaded.layers.map((layer) => layer.descriptor)).toEqual(image.manifest.layers);
  });

  it("drops the base Cmd when the image sets an Entrypoint", async () => {
    const base = await buildImage({
      closure: [],
      config: { Cmd: ["/bin/sh"] },
      fileSystem,
      ...platform,
    });
    const image = await buildImage({
      closure: [],
      config: { Entrypoint: ["/bin/hello"] },
      fromImage: writeImageArchive(base),
      fileSystem,
      ...platform,
    });
    expect(image.config.config).toEqual({ Entrypoint: ["/bin/hello"] });
  });

  it("accepts compressed docker archives as base", async () => {
    const layerTar = writeTar([
      { name: "etc/os-release", type: "file", data: Buffer.from("ID=test\n") },
    ]);
    const config = {
      architecture: "amd64",
      os: "linux",
      config: { Env: ["PATH=/bin"] },
      rootfs: { type: "layers", diff_ids: [sha256Digest(layerTar)] },
      history: [{ created_by: "base" }],
    };
    const dockerArchive = writeTar([
      { name: "layer/layer.tar", type: "file", data: layerTar },
      { name: "config.json", type: "file", data: Buffer.from(JSON.stringify(config)) },
      {
        name: "manifest.json",
        type: "file",
        data: Buffer.from(
          JSON.stringify([
            { Config: "config.json", RepoTags: ["base:1"], Layers: ["layer/layer.tar"] },
          ]),
        ),
      },
    ]);
    const { compress } = await import("@nix-snapshotter/oci");
    const image = await buildImage({
      closure: [hello],
      fromImage: compress(dockerArchive, "gzip"),
      fileSystem,
      ...platform,
    });
    expect(image.manifest.layers[0]).toEqual({
      mediaType: MediaType.ImageLayer,
      digest: sha256Digest(layerTar),
      size: layerTar.byteLength,
    });
    expect(image.config.config?.Env).toEqual(["PATH=/bin"]);
    expect(image.config.history?.map((entry) => entry.created_by)).toEqual([
      "base",
      "nix2container build",
    ]);
  });

  it("takes the manifest of the image's platform from a multi-platform base", async () => {
    const amd64 = await buildImage({ closure: [hello], fileSystem, ...platform });
    const arm64 = await buildImage({
      closure: [glibc],
      fileSystem,
      architecture: "arm64",
      os: "linux",
    });
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ImageIndex,
        manifests: [
          { ...amd64.manifestDescriptor, platform: { architecture: "amd64", os: "linux" } },
          { ...arm64.manifestDescriptor, platform: { architecture: "arm64", os: "linux" } },
        ],
      }),
    );
    const indexDescriptor = {
      mediaType: MediaType.ImageIndex,
      digest: sha256Digest(index),
      size: index.byteLength,
    };
    const archive = writeOciArchive({
      manifests: [{ descriptor: indexDescriptor, names: ["multi:1"] }],
      blobs: new Map([...amd64.blobs, ...arm64.blobs, [indexDescriptor.digest, index]]),
    });
    const image = await buildImage({
      closure: [],
      fromImage: archive,
      fileSystem,
      architecture: "arm64",
      os: "linux",
    });
    expect(image.manifest.layers[0]).toEqual(arm64.layer);
    await expect(
      buildImage({
        closure: [],
        fromImage: archive,
        fileSystem,
        architecture: "riscv64",
        os: "linux",
      }),
    ).rejects.toMatchObject({ code: "NotFound" });
  });

  it("refuses a base image of another platform", async () => {
    const base = await buildImage({ closure: [], fileSystem, architecture: "arm64", os: "linux" });
    await expect(
      buildImage({ closure: [], fromImage: writeImageArchive(base), fileSystem, ...platform }),
    ).rejects.toMatchObject({
      code: "FailedPrecondition",
      message: expect.stringMatching(/linux\/arm64/),
    });
  });

  it("rejects a hostile base archive", async () => {
    const hostileArchive = Buffer.from(
      writeTar([{ name: "index.json", type: "file", data: Buffer.from("{") }]),
    );
    await expect(
      buildImage({ closure: [], fromImage: hostileArchive, fileSystem, ...platform }),
    ).rejects.toThrow(/base image: index\.json: malformed JSON/);
  });
});

describe("format stability", () => {
  // These digests pin the bytes of the tar and JSON this package writes: a change here changes
  // every image's digests, so it must be deliberate (and noted in a changeset).
  it("writes the same uncompressed image as before", async () => {
    // "both" is what the default wrote for a closure-info closure before the default became the
    // closure form alone (2026-12-06): the same bytes as then.
    const image = await buildImage({
      closure: { closureInfo, storePaths: [hello, glibc, script] },
      annotationForm: "both",
      copyToRoot: [hello],
      config: { Entrypoint: ["/bin/hello"], ExposedPorts: { "80/tcp": {}, "443/tcp": {} } },
      compression: "none",
      fileSystem,
      ...platform,
    });
    expect(image.diffId).toBe(
      "sha256:4ef2a411903152f7ad37a9c36cb9c6fbeaec8566a06ef7332f72b5be1848ed9d",
    );
    expect(image.manifestDescriptor.digest).toBe(
      "sha256:2e3d3da49570a4f7d2eadce8a38921ff5204660c4c2658e49b8590c955226069",
    );
  });

  it("compresses the layer (on the thread pool) to the bytes of oci's compress", async () => {
    const build = (compression: "none" | "gzip" | "zstd") =>
      buildImage({ closure: [hello, glibc, script], compression, fileSystem, ...platform });
    const plain = await build("none");
    const tar = plain.blobs.get(plain.layer.digest)!;
    for (const compression of ["gzip", "zstd"] as const) {
      const image = await build(compression);
      expect(
        Buffer.from(image.blobs.get(image.layer.digest)!).equals(compress(tar, compression)),
      ).toBe(true);
    }
  });
});
