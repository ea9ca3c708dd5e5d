import { DEFAULT_STORE_DIR, isStorePath } from "@nix-snapshotter/nix-store";
import {
  Annotation,
  type ArchiveImage,
  compressAsync,
  type Descriptor,
  type Digest,
  type History,
  type ImageConfig,
  type LayerCompression,
  layerMediaType,
  loadArchiveImage,
  type Manifest,
  MediaType,
  nixLayerAnnotations,
  sha256Digest,
  validateContainerConfig,
  writeTar,
} from "@nix-snapshotter/oci";
import { asBuildError, ImageBuildError } from "./build-error.js";
import { type Closure, closureStorePaths } from "./closure.js";
import { createNodeFileSystem, type StoreFileSystem } from "./file-system.js";
import { hostPlatform, mergeContainerConfig } from "./image-config.js";
import { planMountpointLayer } from "./mountpoint-layer.js";

/**
 * Which nix annotations the layer carries. `auto` (default): the closure form alone
 * (`nix-closure`) when the closure came from a closure-info store path, else the per-path form.
 * `per-path`: only the per-path form (`nix-layer` + one `nix-store-path.<i>` per store path), read
 * by every nix-snapshotter version. `both`: both forms; the closure must come from a
 * closure-info store path. `closure`: only the closure form, one label whatever the closure's
 * size; the closure must come from a closure-info store path. The Go nix-snapshotter reads the
 * closure form only in versions with its pull request #162 (August 2025, none of the v0.1 and
 * v0.2 releases): images for those need `per-path` or `both`. See docs/image-format.md and
 * docs/decisions/2026-12-06-annotation-form-default.md for the figures behind `auto`.
 */
export type AnnotationForm = "auto" | "per-path" | "both" | "closure";

export interface BuildImageOptions {
  /**
   * The container config (`Entrypoint`, `Cmd`, `Env`...), as parsed JSON; keys are matched
   * case-insensitively like the Go tool does. Default `{}`.
   */
  config?: unknown;
  /** The store paths to mount: a list, or a closure-info store path and its list. */
  closure: Closure;
  /** Store paths (or symlinks to store paths) whose contents are linked from `/`. */
  copyToRoot?: readonly string[];
  /** A base image: an OCI or docker archive (bytes, compressed or not), or one already loaded. */
  fromImage?: Uint8Array | ArchiveImage;
  /** Default: the build host's (e.g. `amd64`). */
  architecture?: string;
  /** Default: the build host's (e.g. `linux`). */
  os?: string;
  variant?: string;
  annotationForm?: AnnotationForm;
  /** Compression of the mountpoint layer (default gzip). */
  compression?: LayerCompression;
  /** Read-only view of the store (default: the real file system). */
  fileSystem?: StoreFileSystem;
  storeDir?: string;
}

/** A built image: content-addressed blobs plus their parsed forms. */
export interface BuiltImage {
  manifest: Manifest;
  manifestDescriptor: Descriptor;
  config: ImageConfig;
  configDescriptor: Descriptor;
  /** The mountpoint layer's descriptor, with its nix annotations. */
  layer: Descriptor;
  /** The mountpoint layer's uncompressed digest (its diff_id). */
  diffId: Digest;
  /** The closure, sorted and without duplicates, as annotated. */
  storePaths: string[];
  /** Every blob of the image (manifest, config, base layers, mountpoint layer) by digest. */
  blobs: Map<Digest, Uint8Array>;
  /** Config keys that matched no OCI field and were ignored (as Go's encoding/json does). */
  ignoredConfigKeys: string[];
}

function blob(mediaType: string, data: Uint8Array): Descriptor {
  return { mediaType, digest: sha256Digest(data), size: data.byteLength };
}

function validateStorePaths(paths: readonly string[], what: string, storeDir: string): void {
  for (const path of paths) {
    if (typeof path !== "string" || !isStorePath(path, { storeDir })) {
      throw new ImageBuildError(
        "InvalidArgument",
        `${what} "${String(path)}" is not a canonical store path (${storeDir}/<32 nix-base32 characters>-<name>)`,
      );
    }
  }
}

function loadBase(
  fromImage: BuildImageOptions["fromImage"],
  platform: { architecture: string; os: string },
): ArchiveImage | undefined {
  if (fromImage === undefined) return undefined;
  if (!(fromImage instanceof Uint8Array)) return fromImage;
  try {
    // A multi-platform base archive: take the manifest of the image's platform.
    return loadArchiveImage(fromImage, { platform });
  } catch (error) {
    throw asBuildError(error, "base image");
  }
}

/**
 * Builds a nix image: a config, and one mountpoint layer on top of the base image's layers.
 * Pure and deterministic: it only reads the store through `fileSystem`, creates no files or
 * directories, and the same inputs give the same digests in every run. The gzip bytes come from
 * the zlib bundled with Node: use `compression: "none"` where digests must match across Node
 * releases (the tar, the JSON and so the diff_id never vary).
 */
export async function buildImage(options: BuildImageOptions): Promise<BuiltImage> {
  const storeDir = options.storeDir ?? DEFAULT_STORE_DIR;
  const fileSystem = options.fileSystem ?? createNodeFileSystem();
  const annotationForm = options.annotationForm ?? "auto";
  const closureInfo = "closureInfo" in options.closure ? options.closure.closureInfo : undefined;
  if (closureInfo !== undefined) validateStorePaths([closureInfo], "closure-info", storeDir);
  if ((annotationForm === "both" || annotationForm === "closure") && closureInfo === undefined) {
    throw new ImageBuildError(
      "InvalidArgument",
      `annotation form "${annotationForm}" needs a closure from a closure-info store path`,
    );
  }
  const rawStorePaths = closureStorePaths(options.closure);
  validateStorePaths(rawStorePaths, "closure entry", storeDir);
  const storePaths = [...new Set(rawStorePaths)].sort();
  const copyToRoot = [...new Set(options.copyToRoot ?? [])];
  for (const path of copyToRoot) {
    if (typeof path !== "string" || !path.startsWith(`${storeDir}/`)) {
      throw new ImageBuildError(
        "InvalidArgument",
        `copyToRoot "${String(path)}" is not inside the store ${storeDir}`,
      );
    }
  }

  let containerConfig: ReturnType<typeof validateContainerConfig>;
  try {
    containerConfig = validateContainerConfig(options.config ?? {}, "config");
  } catch (error) {
    throw asBuildError(error, "image config");
  }

  const host = hostPlatform();
  const architecture = options.architecture ?? host.architecture;
  const os = options.os ?? host.os;
  const base = loadBase(options.fromImage, { architecture, os });
  if (base !== undefined && (base.config.architecture !== architecture || base.config.os !== os)) {
    throw new ImageBuildError(
      "FailedPrecondition",
      `base image is ${base.config.os}/${base.config.architecture} but the image is built for ${os}/${architecture}; pass the architecture and OS explicitly`,
    );
  }

  const entries = await planMountpointLayer({ storePaths, copyToRoot, fileSystem, storeDir });
  const layerTar = writeTar(entries);
  const compression = options.compression ?? "gzip";
  // The layer compresses on the thread pool while the main thread hashes the tar and builds the
  // annotations (as `tar | gzip` runs its two halves at once).
  const compressing = compressAsync(layerTar, compression);
  compressing.catch(() => undefined); // awaited below; this only marks the rejection handled
  const diffId = sha256Digest(layerTar);
  const annotations =
    annotationForm === "closure" || (annotationForm === "auto" && closureInfo !== undefined)
      ? { [Annotation.NixClosure]: closureInfo! }
      : nixLayerAnnotations(storePaths, annotationForm === "both" ? closureInfo : undefined);
  const layerData = await compressing;
  const layer: Descriptor = { ...blob(layerMediaType(compression), layerData), annotations };

  const baseLayers = base?.layers ?? [];
  const history: History[] | undefined = (() => {
    const own: History = { created_by: "nix2container build", comment: "nix mountpoint layer" };
    if (base === undefined) return [own];
    const baseHistory = base.config.history ?? [];
    const nonEmpty = baseHistory.filter((entry) => entry.empty_layer !== true).length;
    return nonEmpty === baseLayers.length ? [...baseHistory, own] : undefined;
  })();
  const config: ImageConfig = {
    architecture,
    os,
    ...(options.variant === undefined ? {} : { variant: options.variant }),
    config: mergeContainerConfig(base?.config.config, containerConfig.config),
    rootfs: { type: "layers", diff_ids: [...(base?.config.rootfs.diff_ids ?? []), diffId] },
    ...(history === undefined ? {} : { history }),
  };
  const configData = Buffer.from(JSON.stringify(config));
  const configDescriptor = blob(MediaType.ImageConfig, configData);

  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ImageManifest,
    config: configDescriptor,
    layers: [...baseLayers.map((item) => item.descriptor), layer],
  };
  const manifestData = Buffer.from(JSON.stringify(manifest));
  const manifestDescriptor = blob(MediaType.ImageManifest, manifestData);

  const blobs = new Map<Digest, Uint8Array>();
  for (const item of baseLayers) blobs.set(item.descriptor.digest, item.data);
  blobs.set(layer.digest, layerData);
  blobs.set(configDescriptor.digest, configData);
  blobs.set(manifestDescriptor.digest, manifestData);
  return {
    manifest,
    manifestDescriptor,
    config,
    configDescriptor,
    layer,
    diffId,
    storePaths,
    blobs,
    ignoredConfigKeys: containerConfig.ignoredKeys,
  };
}
