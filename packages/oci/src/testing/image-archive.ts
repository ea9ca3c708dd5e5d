import { writeOciArchive } from "../archive.js";
import { compress } from "../compression.js";
import { type Digest, sha256Digest } from "../digest.js";
import { type LayerCompression, layerMediaType, MediaType } from "../media-types.js";
import { type TarWriteEntry, writeTar } from "../tar.js";
import type { ContainerConfig, Descriptor, ImageConfig, Manifest } from "../types.js";

export interface TestImageArchiveOptions {
  /** Each layer's tar entries, the base layer first. */
  layers: readonly (readonly TarWriteEntry[])[];
  /** Names recorded for the image in the archive; none by default. */
  names?: string[];
  /** The image config's `config` member (entrypoint, env...); `{}` by default. */
  config?: ContainerConfig;
  /** How every layer is stored; gzip by default. */
  compression?: LayerCompression;
  /** Replaces the config's diff ids (for hostile archives). */
  diffIds?: Digest[];
  /** Annotations of a layer, by its index. */
  annotations?: Record<number, Record<string, string>>;
}

export interface TestImageArchive {
  /** The OCI archive (with a docker `manifest.json`), as `writeOciArchive` writes it. */
  archive: Buffer;
  manifest: Manifest;
}

function describeBlob(mediaType: string, data: Uint8Array): Descriptor {
  return { mediaType, digest: sha256Digest(data), size: data.byteLength };
}

/**
 * An OCI archive of an ordinary linux/amd64 image built in memory from tar entries, for tests
 * and benchmarks that need a real image without a registry or a builder.
 */
export function testImageArchive(options: TestImageArchiveOptions): TestImageArchive {
  const compression = options.compression ?? "gzip";
  const blobs = new Map<Digest, Uint8Array>();
  const tars = options.layers.map((entries) => writeTar([...entries]));
  const layers = tars.map((tar, index) => {
    const data = compression === "none" ? tar : compress(tar, compression);
    blobs.set(sha256Digest(data), data);
    const descriptor = describeBlob(layerMediaType(compression), data);
    const annotations = options.annotations?.[index];
    return annotations ? { ...descriptor, annotations } : descriptor;
  });
  const config: ImageConfig = {
    architecture: "amd64",
    os: "linux",
    config: options.config ?? {},
    rootfs: { type: "layers", diff_ids: options.diffIds ?? tars.map((tar) => sha256Digest(tar)) },
  };
  const configBlob = Buffer.from(JSON.stringify(config));
  blobs.set(sha256Digest(configBlob), configBlob);
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ImageManifest,
    config: describeBlob(MediaType.ImageConfig, configBlob),
    layers,
  };
  const manifestBlob = Buffer.from(JSON.stringify(manifest));
  blobs.set(sha256Digest(manifestBlob), manifestBlob);
  const archive = writeOciArchive({
    manifests: [
      {
        descriptor: describeBlob(MediaType.ImageManifest, manifestBlob),
        names: options.names ?? [],
      },
    ],
    blobs,
  });
  return { archive, manifest };
}
