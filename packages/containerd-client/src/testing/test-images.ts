// Images built in memory for this package's tests (not part of the published API).
import { readFileSync } from "node:fs";
import { type ImageConfig, sha256Digest, type TarWriteEntry, writeTar } from "@nix-snapshotter/oci";
import { testImageArchive } from "@nix-snapshotter/oci/testing";

export interface TestImageOptions {
  /** Image name recorded in the archive. */
  name: string;
  /** Entrypoint of the config. */
  entrypoint: string[];
  /** Extra files of a second layer (name -> contents). */
  files?: Record<string, string>;
  /** Replace the config's diff ids (hostile archives). */
  diffIds?: `sha256:${string}`[];
  /** Layer annotations, per layer index. */
  annotations?: Record<number, Record<string, string>>;
}

/** An OCI archive: a static busybox layer (`/bin/busybox`, `/bin/sh`) plus optional files. */
export function busyboxArchive(options: TestImageOptions): Buffer {
  const layers: TarWriteEntry[][] = [
    [
      { name: "bin", type: "directory", mode: 0o755 },
      { name: "bin/busybox", type: "file", mode: 0o755, data: readFileSync("/bin/busybox") },
      { name: "bin/sh", type: "symlink", linkname: "busybox" },
      { name: "bin/echo", type: "symlink", linkname: "busybox" },
      { name: "bin/cat", type: "symlink", linkname: "busybox" },
      { name: "bin/sleep", type: "symlink", linkname: "busybox" },
    ],
  ];
  if (options.files) {
    layers.push(
      Object.entries(options.files).map(([name, contents]) => ({
        name,
        type: "file" as const,
        mode: 0o644,
        data: Buffer.from(contents),
      })),
    );
  }
  return testImageArchive({
    names: [options.name],
    layers,
    config: { Entrypoint: options.entrypoint },
    ...(options.diffIds === undefined ? {} : { diffIds: options.diffIds }),
    ...(options.annotations === undefined ? {} : { annotations: options.annotations }),
  }).archive;
}

/** A docker archive (`docker save` layout: manifest.json, config, uncompressed layer tars). */
export function busyboxDockerArchive(options: { repoTag: string; message: string }): Buffer {
  const layer = writeTar([
    { name: "bin", type: "directory", mode: 0o755 },
    { name: "bin/busybox", type: "file", mode: 0o755, data: readFileSync("/bin/busybox") },
    { name: "bin/cat", type: "symlink", linkname: "busybox" },
    { name: "message", type: "file", mode: 0o644, data: Buffer.from(options.message) },
  ]);
  const config: ImageConfig = {
    architecture: "amd64",
    os: "linux",
    config: { Entrypoint: ["/bin/cat", "/message"] },
    rootfs: { type: "layers", diff_ids: [sha256Digest(layer)] },
  };
  const configBlob = Buffer.from(JSON.stringify(config));
  const configName = `${sha256Digest(configBlob).slice("sha256:".length)}.json`;
  const manifest = [
    { Config: configName, RepoTags: [options.repoTag], Layers: ["layer/layer.tar"] },
  ];
  return writeTar([
    { name: configName, type: "file", mode: 0o644, data: configBlob },
    { name: "layer", type: "directory", mode: 0o755 },
    { name: "layer/layer.tar", type: "file", mode: 0o644, data: layer },
    {
      name: "manifest.json",
      type: "file",
      mode: 0o644,
      data: Buffer.from(JSON.stringify(manifest)),
    },
  ]);
}
