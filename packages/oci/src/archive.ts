import { Annotation } from "./annotations.js";
import { defaultArchiveLimits, limitExceeded } from "./archive-limits.js";
import { decompress, detectCompression } from "./compression.js";
import { type Digest, digestHex, parseDigest, sha256Digest, verifyBlob } from "./digest.js";
import { invalidArgument, OciError } from "./errors.js";
import { isIndexMediaType, isManifestMediaType, layerMediaType, MediaType } from "./media-types.js";
import { familiarReference, type ParseReferenceOptions, parseReference } from "./reference.js";
import { readTar, resolveLinkTarget, type TarWriteEntry, writeTar } from "./tar.js";
import type {
  Descriptor,
  DockerManifestEntry,
  ImageConfig,
  ImageLayout,
  Index,
  Manifest,
  Platform,
} from "./types.js";
import {
  parseJson,
  validateDockerManifest,
  validateImageConfig,
  validateImageLayout,
  validateIndex,
  validateManifest,
} from "./validate.js";

/** A manifest to list in the archive's index, with the image names it is known by. */
export interface ArchiveManifest {
  descriptor: Descriptor;
  /** Full references, e.g. `docker.io/library/app:1` or `nix:0/nix/store/...tar:latest`. */
  names?: string[];
}

export interface WriteOciArchiveOptions {
  manifests: ArchiveManifest[];
  /** Every blob the manifests reference (and the manifests themselves), by digest. */
  blobs: ReadonlyMap<string, Uint8Array>;
  /** Omit the docker-archive `manifest.json` (default false). */
  skipDockerManifest?: boolean;
  /** How to parse names (store dir for nix:0 names). */
  referenceOptions?: ParseReferenceOptions;
}

function blobPath(digest: Digest): string {
  return `blobs/sha256/${digestHex(digest)}`;
}

/** The tag (or `tag@digest`) part of a name, as containerd writes `org.opencontainers.image.ref.name`. */
function ociRefName(name: string, options: ParseReferenceOptions | undefined): string {
  const reference = parseReference(name, options);
  if (reference.tag !== undefined && reference.digest !== undefined)
    return `${reference.tag}@${reference.digest}`;
  return reference.tag ?? reference.digest ?? name;
}

function readBlobJson(
  blobs: ReadonlyMap<string, Uint8Array>,
  descriptor: Descriptor,
  what: string,
  verified: Set<Digest>,
): unknown {
  const data = blobs.get(descriptor.digest);
  if (data === undefined)
    throw new OciError("NotFound", `${what} ${descriptor.digest}: blob missing`);
  verifyBlob(data, descriptor);
  verified.add(descriptor.digest);
  return parseJson(data, `${what} ${descriptor.digest}`);
}

/**
 * Writes an OCI image layout as one tar archive in memory: `oci-layout`, `index.json`, `blobs/`
 * and, unless skipped, a docker `manifest.json` listing each manifest's config and layers.
 * Every blob is verified against its digest; a manifest whose blobs are missing is rejected.
 * The output is deterministic: entries sorted, owner 0, mtime 0, fixed modes.
 */
export function writeOciArchive(options: WriteOciArchiveOptions): Buffer {
  const needed = new Map<Digest, Descriptor>();
  // Digests whose blob was already hashed (a manifest is read, then written): hashed once.
  const verified = new Set<Digest>();
  const dockerEntries: DockerManifestEntry[] = [];
  const indexManifests: Descriptor[] = [];
  for (const { descriptor, names = [] } of options.manifests) {
    needed.set(descriptor.digest, descriptor);
    if (isManifestMediaType(descriptor.mediaType)) {
      const manifest = validateManifest(
        readBlobJson(options.blobs, descriptor, "manifest", verified),
      );
      for (const blob of [manifest.config, ...manifest.layers]) needed.set(blob.digest, blob);
      const repoTags: string[] = [];
      for (const name of names) {
        const reference = parseReference(name, options.referenceOptions);
        if (reference.kind === "registry" && reference.tag !== undefined) {
          repoTags.push(
            familiarReference({
              kind: "registry",
              domain: reference.domain,
              path: reference.path,
              tag: reference.tag,
            }),
          );
        }
      }
      dockerEntries.push({
        Config: blobPath(manifest.config.digest),
        RepoTags: repoTags,
        Layers: manifest.layers.map((layer) => blobPath(layer.digest)),
      });
    } else if (isIndexMediaType(descriptor.mediaType)) {
      const index = validateIndex(readBlobJson(options.blobs, descriptor, "index", verified));
      for (const child of index.manifests) {
        needed.set(child.digest, child);
        if (isManifestMediaType(child.mediaType)) {
          const manifest = validateManifest(
            readBlobJson(options.blobs, child, "manifest", verified),
          );
          for (const blob of [manifest.config, ...manifest.layers]) needed.set(blob.digest, blob);
        }
      }
    } else {
      throw invalidArgument(
        `archive manifest ${descriptor.digest}: unsupported media type "${descriptor.mediaType}"`,
      );
    }
    if (names.length === 0) indexManifests.push(descriptor);
    for (const name of names) {
      indexManifests.push({
        ...descriptor,
        annotations: {
          ...descriptor.annotations,
          [Annotation.ContainerdImageName]: name,
          [Annotation.RefName]: ociRefName(name, options.referenceOptions),
        },
      });
    }
  }
  const entries: TarWriteEntry[] = [
    { name: "blobs", type: "directory" },
    { name: "blobs/sha256", type: "directory" },
  ];
  for (const digest of [...needed.keys()].sort()) {
    const descriptor = needed.get(digest)!;
    const data = options.blobs.get(digest);
    if (data === undefined)
      throw new OciError("NotFound", `blob ${digest} (${descriptor.mediaType}): missing`);
    if (!verified.has(digest) || data.byteLength !== descriptor.size) verifyBlob(data, descriptor);
    entries.push({ name: blobPath(digest), type: "file", mode: 0o444, data });
  }
  const layout: ImageLayout = { imageLayoutVersion: "1.0.0" };
  const index: Index = {
    schemaVersion: 2,
    mediaType: MediaType.ImageIndex,
    manifests: indexManifests,
  };
  entries.push(
    { name: "oci-layout", type: "file", mode: 0o444, data: Buffer.from(JSON.stringify(layout)) },
    { name: "index.json", type: "file", data: Buffer.from(JSON.stringify(index)) },
  );
  if (options.skipDockerManifest !== true && dockerEntries.length > 0) {
    entries.push({
      name: "manifest.json",
      type: "file",
      data: Buffer.from(JSON.stringify(dockerEntries)),
    });
  }
  return writeTar(entries);
}

/** The files of an archive, links resolved, plus its parsed OCI and docker metadata. */
export interface ArchiveContents {
  /** Regular files by normalised name; links appear under their own names too. */
  files: Map<string, Buffer>;
  /** sha256 of files, when computed while reading (streaming reader). */
  digests?: Map<string, Digest>;
  layout?: ImageLayout;
  index?: Index;
  dockerManifest?: DockerManifestEntry[];
}

/**
 * Reads an OCI layout or docker-archive tarball (itself optionally gzip or zstd compressed) held in
 * memory. Hostile entries (absolute names, `..`, links escaping the archive) are rejected.
 * Decompression here is synchronous: for files, prefer `readArchiveFile`, which streams and
 * enforces {@link ArchiveLimits}.
 */
export function readArchive(data: Uint8Array): ArchiveContents {
  const tar = detectCompression(data) === "none" ? data : decompress(data);
  const entries = readTar(tar);
  const files = new Map<string, Buffer>();
  const links = new Map<string, string>();
  for (const entry of entries) {
    if (entry.type === "file") files.set(entry.name, entry.data);
    else if (entry.type === "symlink" || entry.type === "hardlink")
      links.set(entry.name, resolveLinkTarget(entry));
    else if (entry.type === "other")
      throw invalidArgument(`archive entry "${entry.name}": unsupported type "${entry.typeflag}"`);
  }
  return archiveContents(files, links);
}

/**
 * Resolves links to files, parses `oci-layout`, `index.json` and `manifest.json`. `digests`, when
 * given, holds the sha256 of files computed while they were read (so loading need not hash again).
 */
export function archiveContents(
  files: Map<string, Buffer>,
  links: ReadonlyMap<string, string>,
  digests?: Map<string, Digest>,
): ArchiveContents {
  for (const [name] of links) {
    let target = name;
    for (let hops = 0; hops < 40 && links.has(target); hops++) target = links.get(target)!;
    const file = files.get(target);
    if (file !== undefined) {
      files.set(name, file);
      const digest = digests?.get(target);
      if (digest !== undefined) digests?.set(name, digest);
    }
  }
  const contents: ArchiveContents = { files };
  if (digests !== undefined) contents.digests = digests;
  const layout = files.get("oci-layout");
  if (layout !== undefined) contents.layout = validateImageLayout(parseJson(layout, "oci-layout"));
  const index = files.get("index.json");
  if (index !== undefined)
    contents.index = validateIndex(parseJson(index, "index.json"), "index.json");
  const docker = files.get("manifest.json");
  if (docker !== undefined)
    contents.dockerManifest = validateDockerManifest(parseJson(docker, "manifest.json"));
  if (contents.index === undefined && contents.dockerManifest === undefined) {
    throw invalidArgument(
      "archive: neither an OCI layout (index.json) nor a docker archive (manifest.json)",
    );
  }
  return contents;
}

/** A blob read from an archive and verified against its descriptor. */
export interface ArchiveLayer {
  descriptor: Descriptor;
  data: Buffer;
}

/** One image loaded from an archive: every blob verified. */
export interface ArchiveImage {
  format: "oci" | "docker";
  manifest: Manifest;
  /** The manifest as stored (OCI) or as synthesised from a docker archive. */
  manifestBlob: Buffer;
  manifestDescriptor: Descriptor;
  config: ImageConfig;
  configBlob: Buffer;
  layers: ArchiveLayer[];
  /** Names from index annotations or docker RepoTags. */
  names: string[];
}

export interface LoadImageOptions {
  /** With several images in the archive, the platform to select. */
  platform?: Pick<Platform, "architecture" | "os">;
  /** Bound on an index, manifest or config document (default {@link defaultArchiveLimits}). */
  maxMetadataBytes?: number;
}

/** Verifies `data` against `expected`, using the digest computed while reading when there is one. */
function verify(data: Buffer, expected: Descriptor, known: Digest | undefined): void {
  if (known === undefined) {
    verifyBlob(data, expected);
    return;
  }
  const digest = parseDigest(expected.digest);
  if (data.byteLength !== expected.size) {
    throw new OciError(
      "DataLoss",
      `blob ${digest}: size ${data.byteLength} does not match expected size ${expected.size}`,
    );
  }
  if (known !== digest)
    throw new OciError("DataLoss", `blob ${digest}: content has digest ${known}`);
}

function fileOfBlob(
  contents: ArchiveContents,
  descriptor: Descriptor,
  what: string,
  maxBytes = Number.POSITIVE_INFINITY,
): Buffer {
  const path = blobPath(descriptor.digest);
  const data = contents.files.get(path);
  if (data === undefined)
    throw new OciError("NotFound", `archive: ${what} ${descriptor.digest} missing`);
  if (data.byteLength > maxBytes)
    throw limitExceeded(`archive: ${what} ${descriptor.digest}`, "maxMetadataBytes", maxBytes);
  verify(data, descriptor, contents.digests?.get(path));
  return data;
}

function archiveFile(
  contents: ArchiveContents,
  path: string,
  what: string,
  maxBytes = Number.POSITIVE_INFINITY,
): { data: Buffer; digest: Digest } {
  const normalized = path
    .split("/")
    .filter((segment) => segment !== "" && segment !== ".")
    .join("/");
  if (path.startsWith("/") || normalized.split("/").includes("..")) {
    throw invalidArgument(`archive: ${what} path "${path}" escapes the archive`);
  }
  const data = contents.files.get(normalized);
  if (data === undefined) throw new OciError("NotFound", `archive: ${what} "${path}" missing`);
  if (data.byteLength > maxBytes)
    throw limitExceeded(`archive: ${what} "${path}"`, "maxMetadataBytes", maxBytes);
  return { data, digest: contents.digests?.get(normalized) ?? sha256Digest(data) };
}

function matchesPlatform(descriptor: Descriptor, platform: LoadImageOptions["platform"]): boolean {
  if (platform === undefined || descriptor.platform === undefined) return true;
  return (
    descriptor.platform.architecture === platform.architecture &&
    descriptor.platform.os === platform.os
  );
}

function loadOci(contents: ArchiveContents, index: Index, options: LoadImageOptions): ArchiveImage {
  const maxMetadata = options.maxMetadataBytes ?? defaultArchiveLimits.maxMetadataBytes;
  let candidates = index.manifests.filter((descriptor) =>
    matchesPlatform(descriptor, options.platform),
  );
  let names: string[] = [];
  for (let depth = 0; depth < 4; depth++) {
    const digests = new Set(candidates.map((descriptor) => descriptor.digest));
    if (digests.size === 0) throw new OciError("NotFound", "archive: no image matches");
    if (digests.size > 1) {
      throw invalidArgument(
        `archive: ${digests.size} images in the archive; exactly one is supported`,
      );
    }
    names = [
      ...new Set(
        candidates.flatMap((descriptor) => {
          const name = descriptor.annotations?.[Annotation.ContainerdImageName];
          return name === undefined ? [] : [name];
        }),
      ),
    ];
    const descriptor = candidates[0]!;
    if (isIndexMediaType(descriptor.mediaType)) {
      const child = validateIndex(
        parseJson(fileOfBlob(contents, descriptor, "index", maxMetadata), "index"),
      );
      candidates = child.manifests.filter((item) => matchesPlatform(item, options.platform));
      continue;
    }
    if (!isManifestMediaType(descriptor.mediaType)) {
      throw invalidArgument(`archive: unsupported manifest media type "${descriptor.mediaType}"`);
    }
    const manifestBlob = fileOfBlob(contents, descriptor, "manifest", maxMetadata);
    const manifest = validateManifest(parseJson(manifestBlob, `manifest ${descriptor.digest}`));
    const configBlob = fileOfBlob(contents, manifest.config, "config", maxMetadata);
    const config = validateImageConfig(parseJson(configBlob, `config ${manifest.config.digest}`));
    const layers = manifest.layers.map((layer) => ({
      descriptor: layer,
      data: fileOfBlob(contents, layer, "layer"),
    }));
    const manifestDescriptor: Descriptor = {
      mediaType: descriptor.mediaType,
      digest: descriptor.digest,
      size: descriptor.size,
    };
    return {
      format: "oci",
      manifest,
      manifestBlob,
      manifestDescriptor,
      config,
      configBlob,
      layers,
      names,
    };
  }
  throw invalidArgument("archive: indexes nested too deeply");
}

function loadDocker(
  contents: ArchiveContents,
  entries: DockerManifestEntry[],
  options: LoadImageOptions,
): ArchiveImage {
  const maxMetadata = options.maxMetadataBytes ?? defaultArchiveLimits.maxMetadataBytes;
  if (entries.length !== 1) {
    throw invalidArgument(
      `archive: manifest.json lists ${entries.length} images; exactly one is supported`,
    );
  }
  const entry = entries[0]!;
  const { data: configBlob, digest: configDigest } = archiveFile(
    contents,
    entry.Config,
    "config",
    maxMetadata,
  );
  const config = validateImageConfig(parseJson(configBlob, `config "${entry.Config}"`));
  const layers = entry.Layers.map((path) => {
    const { data, digest } = archiveFile(contents, path, "layer");
    const descriptor: Descriptor = {
      mediaType: layerMediaType(detectCompression(data)),
      digest,
      size: data.byteLength,
    };
    return { descriptor, data };
  });
  if (config.rootfs.diff_ids.length !== layers.length) {
    throw invalidArgument(
      `archive: config lists ${config.rootfs.diff_ids.length} diff_ids but manifest.json ${layers.length} layers`,
    );
  }
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ImageManifest,
    config: {
      mediaType: MediaType.ImageConfig,
      digest: configDigest,
      size: configBlob.byteLength,
    },
    layers: layers.map((layer) => layer.descriptor),
  };
  const manifestBlob = Buffer.from(JSON.stringify(manifest));
  return {
    format: "docker",
    manifest,
    manifestBlob,
    manifestDescriptor: {
      mediaType: MediaType.ImageManifest,
      digest: sha256Digest(manifestBlob),
      size: manifestBlob.byteLength,
    },
    config,
    configBlob,
    layers,
    names: entry.RepoTags ?? [],
  };
}

/**
 * Loads the single image of an OCI layout or docker archive, verifying every blob. When the
 * archive has an OCI layout it wins over its docker `manifest.json` (as in containerd's importer).
 */
export function loadArchiveImage(
  data: Uint8Array | ArchiveContents,
  options: LoadImageOptions = {},
): ArchiveImage {
  const contents = data instanceof Uint8Array ? readArchive(data) : data;
  if (contents.index !== undefined) return loadOci(contents, contents.index, options);
  return loadDocker(contents, contents.dockerManifest ?? [], options);
}
