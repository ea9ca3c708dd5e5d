import { describe, expect, it } from "vitest";
import { readArchive } from "../archive.js";
import { decompress } from "../compression.js";
import { sha256Digest } from "../digest.js";
import { MediaType } from "../media-types.js";
import { readTar } from "../tar.js";
import { testImageArchive } from "./image-archive.js";

const hello = { name: "hello", type: "file" as const, data: Buffer.from("hello\n") };

describe("testImageArchive", () => {
  it("writes a named gzip image whose layer holds the entries and whose config lists them", () => {
    const { archive, manifest } = testImageArchive({
      names: ["example.test/hello:1"],
      layers: [[hello]],
      config: { Entrypoint: ["/bin/cat", "/hello"] },
    });
    const contents = readArchive(archive);
    expect(contents.dockerManifest?.[0]?.RepoTags).toEqual(["example.test/hello:1"]);
    const layer = manifest.layers[0];
    expect(layer?.mediaType).toBe(MediaType.ImageLayerGzip);
    const layerBlob = contents.files.get(`blobs/sha256/${layer?.digest.slice(7)}`);
    expect(layerBlob?.byteLength).toBe(layer?.size);
    const tar = decompress(layerBlob as Buffer);
    expect(readTar(tar).map((entry) => entry.name)).toEqual(["hello"]);
    const config = JSON.parse(
      contents.files.get(`blobs/sha256/${manifest.config.digest.slice(7)}`)?.toString() ?? "",
    );
    expect(config.config.Entrypoint).toEqual(["/bin/cat", "/hello"]);
    expect(config.rootfs.diff_ids).toEqual([sha256Digest(tar)]);
  });

  it("stores uncompressed layers, annotations and replaced diff ids as asked", () => {
    const diffId = sha256Digest("not the layer");
    const { archive, manifest } = testImageArchive({
      layers: [[hello], [{ ...hello, name: "second" }]],
      compression: "none",
      annotations: { 1: { "example.test/key": "value" } },
      diffIds: [diffId, diffId],
    });
    expect(manifest.layers.map((layer) => layer.mediaType)).toEqual([
      MediaType.ImageLayer,
      MediaType.ImageLayer,
    ]);
    expect(manifest.layers[0]?.annotations).toBeUndefined();
    expect(manifest.layers[1]?.annotations).toEqual({ "example.test/key": "value" });
    const contents = readArchive(archive);
    expect(contents.index?.manifests[0]?.annotations).toBeUndefined();
    const config = JSON.parse(
      contents.files.get(`blobs/sha256/${manifest.config.digest.slice(7)}`)?.toString() ?? "",
    );
    expect(config.rootfs.diff_ids).toEqual([diffId, diffId]);
  });
});
