import { describe, expect, it } from "vitest";
import { loadArchiveImage, readArchive, writeOciArchive } from "./archive.js";
import { compress } from "./compression.js";
import { sha256Digest } from "./digest.js";
import { MediaType } from "./media-types.js";
import { readTar, writeTar } from "./tar.js";
import type { Descriptor, ImageConfig, Manifest } from "./types.js";

function blob(mediaType: string, data: Buffer): [Descriptor, Buffer] {
  return [{ mediaType, digest: sha256Digest(data), size: data.byteLength }, data];
}

function sampleImage() {
  const layerTar = writeTar([{ name: "hello", type: "file", data: Buffer.from("hi") }]);
  const [layer, layerData] = blob(MediaType.ImageLayerGzip, compress(layerTar, "gzip"));
  const config: ImageConfig = {
    architecture: "amd64",
    os: "linux",
    rootfs: { type: "layers", diff_ids: [sha256Digest(layerTar)] },
  };
  const [configDescriptor, configData] = blob(
    MediaType.ImageConfig,
    Buffer.from(JSON.stringify(config)),
  );
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ImageManifest,
    config: configDescriptor,
    layers: [{ ...layer, annotations: { "containerd.io/snapshot/nix-layer": "true" } }],
  };
  const [manifestDescriptor, manifestData] = blob(
    MediaType.ImageManifest,
    Buffer.from(JSON.stringify(manifest)),
  );
  const blobs = new Map<string, Buffer>([
    [layer.digest, layerData],
    [configDescriptor.digest, configData],
    [manifestDescriptor.digest, manifestData],
  ]);
  return { manifestDescriptor, blobs, layerTar, configData };
}

describe("OCI archives", () => {
  it("writes a layout that reads back with names, annotations and a docker manifest.json", () => {
    const { manifestDescriptor, blobs } = sampleImage();
    const archive = writeOciArchive({
      manifests: [{ descriptor: manifestDescriptor, names: ["docker.io/library/app:1"] }],
      blobs,
    });
    expect(
      writeOciArchive({
        manifests: [{ descriptor: manifestDescriptor, names: ["docker.io/library/app:1"] }],
        blobs,
      }).equals(archive),
    ).toBe(true);
    const names = readTar(archive).map((entry) => entry.name);
    expect(names).toContain("oci-layout");
    expect(names).toContain("index.json");
    expect(names).toContain("manifest.json");
    const contents = readArchive(archive);
    expect(contents.index?.manifests[0]?.annotations).toEqual({
      "io.containerd.image.name": "docker.io/library/app:1",
      "org.opencontainers.image.ref.name": "1",
    });
    expect(contents.dockerManifest?.[0]?.RepoTags).toEqual(["app:1"]);
    const image = loadArchiveImage(contents);
    expect(image.format).toBe("oci");
    expect(image.names).toEqual(["docker.io/library/app:1"]);
    expect(image.manifestDescriptor.digest).toBe(manifestDescriptor.digest);
    expect(image.layers[0]?.descriptor.annotations).toEqual({
      "containerd.io/snapshot/nix-layer": "true",
    });
  });

  it("gives nix:0 names no docker RepoTags", () => {
    const { manifestDescriptor, blobs } = sampleImage();
    const name = "nix:0/nix/store/0c0s3b6kqhq8sd6d0gn9ng9kz1c4dx0q-nix-image-a.tar:latest";
    const contents = readArchive(
      writeOciArchive({ manifests: [{ descriptor: manifestDescriptor, names: [name] }], blobs }),
    );
    expect(contents.dockerManifest?.[0]?.RepoTags).toEqual([]);
    expect(contents.index?.manifests[0]?.annotations?.["org.opencontainers.image.ref.name"]).toBe(
      "latest",
    );
  });

  it("refuses to write missing or corrupt blobs", () => {
    const { manifestDescriptor, blobs } = sampleImage();
    const missing = new Map(blobs);
    const layerDigest = [...blobs.keys()][0]!;
    missing.delete(layerDigest);
    expect(() =>
      writeOciArchive({ manifests: [{ descriptor: manifestDescriptor }], blobs: missing }),
    ).toThrow(/missing/);
    const corrupt = new Map(blobs);
    corrupt.set(layerDigest, Buffer.from("tampered"));
    expect(() =>
      writeOciArchive({ manifests: [{ descriptor: manifestDescriptor }], blobs: corrupt }),
    ).toThrow(/size|digest/);
  });

  it("reads compressed archives", () => {
    const { manifestDescriptor, blobs } = sampleImage();
    const archive = writeOciArchive({ manifests: [{ descriptor: manifestDescriptor }], blobs });
    for (const kind of ["gzip", "zstd"] as const) {
      expect(loadArchiveImage(compress(archive, kind)).manifestDescriptor.digest).toBe(
        manifestDescriptor.digest,
      );
    }
  });

  it("detects tampered blobs when loading", () => {
    const { manifestDescriptor, blobs } = sampleImage();
    const archive = writeOciArchive({ manifests: [{ descriptor: manifestDescriptor }], blobs });
    const contents = readArchive(archive);
    const layerPath = [...contents.files.keys()].find(
      (name) => name.startsWith("blobs/") && contents.files.get(name)?.[0] === 0x1f,
    )!;
    const tampered = Buffer.from(contents.files.get(layerPath)!);
    tampered[tampered.length - 1] = (tampered.at(-1) ?? 0) ^ 0xff;
    contents.files.set(layerPath, tampered);
    expect(() => loadArchiveImage(contents)).toThrow(expect.objectContaining({ code: "DataLoss" }));
  });

  it("loads docker archives, following symlinked layers inside the archive", () => {
    const { layerTar, configData } = sampleImage();
    const archive = writeTar([
      { name: "abc/layer.tar", type: "file", data: layerTar },
      { name: "def/layer.tar", type: "symlink", linkname: "../abc/layer.tar" },
      { name: "config.json", type: "file", data: configData },
      {
        name: "manifest.json",
        type: "file",
        data: Buffer.from(
          JSON.stringify([
            { Config: "config.json", RepoTags: ["app:1"], Layers: ["def/layer.tar"] },
          ]),
        ),
      },
    ]);
    const image = loadArchiveImage(archive);
    expect(image.format).toBe("docker");
    expect(image.names).toEqual(["app:1"]);
    expect(image.layers[0]?.descriptor).toEqual({
      mediaType: MediaType.ImageLayer,
      digest: sha256Digest(layerTar),
      size: layerTar.byteLength,
    });
    expect(image.config.rootfs.diff_ids).toEqual([sha256Digest(layerTar)]);
  });

  it("rejects docker manifests pointing outside the archive", () => {
    const { configData } = sampleImage();
    const archive = writeTar([
      { name: "config.json", type: "file", data: configData },
      {
        name: "manifest.json",
        type: "file",
        data: Buffer.from(
          JSON.stringify([{ Config: "config.json", RepoTags: null, Layers: ["../../etc/passwd"] }]),
        ),
      },
    ]);
    expect(() => loadArchiveImage(archive)).toThrow(/escapes the archive/);
  });

  it("rejects archives that are neither layout nor docker archive", () => {
    expect(() => readArchive(writeTar([{ name: "x", type: "file" }]))).toThrow(/neither/);
  });
});
