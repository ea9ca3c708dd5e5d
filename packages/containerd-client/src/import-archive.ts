import { randomBytes } from "node:crypto";
import { WriteAction } from "@nix-snapshotter/api/content/v1";
import {
  type ArchiveImage,
  type Descriptor,
  type LoadImageOptions,
  loadArchiveImage,
  normalizeReference,
  type ParseReferenceOptions,
} from "@nix-snapshotter/oci";
import { chainIds } from "./chain-id.js";
import type { ContainerdClient } from "./client.js";
import { ContainerdError, isContainerdError } from "./errors.js";
import { gcContentLabel, gcSnapshotLabel, Label, snapshotLabelsOf } from "./labels.js";
import type { CallOptions } from "./service-client.js";

/** Progress of an import, for logs. */
export type ImportEvent =
  | { kind: "content"; digest: string; size: number; written: boolean }
  | { kind: "layer"; chainId: string; index: number; applied: boolean }
  | { kind: "image"; name: string; created: boolean };

export interface ImportArchiveOptions {
  /** Unpack through this snapshotter (`nix`, `overlayfs`...). */
  snapshotter: string;
  /** Namespace (default: the client's). */
  namespace?: string;
  /**
   * Image names (full references). Default: the names the archive carries (OCI
   * `io.containerd.image.name` annotations or docker `RepoTags`), normalised as containerd does.
   */
  names?: readonly string[];
  /** Labels of the image records. */
  labels?: Readonly<Record<string, string>>;
  /** Unpack the layers into snapshots (default true). */
  unpack?: boolean;
  /** With several images in the archive, the platform to take. */
  platform?: LoadImageOptions["platform"];
  /** How `nix:0` names are parsed (store directory). */
  referenceOptions?: ParseReferenceOptions;
  /** The import's lease expires after this long if the importer dies (ms). Default 1 hour. */
  leaseExpireMs?: number;
  /** Bytes per Content.Write message. Default 1 MiB. */
  chunkSize?: number;
  /** Cancels the import (the lease is still deleted). */
  signal?: AbortSignal;
  onEvent?: (event: ImportEvent) => void;
}

export interface ImportResult {
  /** The image records created or updated. */
  names: string[];
  /** The images' target (the manifest). */
  target: Descriptor;
  /** Digest of the image config (CRI's image id). */
  configDigest: string;
  /** Chain ids of the layers; the last is the image's top snapshot. */
  chainIds: string[];
  /** Blobs written (not already stored). */
  contentWritten: number;
  /** Layers applied (not already unpacked). */
  layersApplied: number;
}

const uploadRetryDelayMs = 100;
const uploadRetryLimitMs = 60_000;

function delay(milliseconds: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}

function uniqueSuffix(): string {
  return `${process.hrtime.bigint()}-${randomBytes(4).toString("hex")}`;
}

/**
 * Writes one blob into containerd's content store unless it is there already (then its labels
 * are merged into the stored ones). Returns true when bytes were written.
 */
export async function writeContent(
  client: ContainerdClient,
  blob: { digest: string; data: Uint8Array; labels?: Readonly<Record<string, string>> },
  options: CallOptions & { chunkSize?: number } = {},
): Promise<boolean> {
  const labels = { ...blob.labels };
  const total = BigInt(blob.data.byteLength);
  const ref = `nix-snapshotter-import-${blob.digest}`;
  const chunkSize = options.chunkSize ?? 1024 * 1024;
  const started = Date.now();
  for (;;) {
    const stream = client.content.write(options);
    try {
      const status = await stream.exchange({
        action: WriteAction.STAT,
        ref,
        total,
        expected: blob.digest,
      });
      let offset = status.offset > total ? 0n : status.offset;
      while (offset < total) {
        const end = Math.min(Number(offset) + chunkSize, blob.data.byteLength);
        const response = await stream.exchange({
          action: WriteAction.WRITE,
          ref,
          offset,
          data: blob.data.subarray(Number(offset), end),
        });
        offset = response.offset;
      }
      await stream.exchange({
        action: WriteAction.COMMIT,
        ref,
        // Offset 0 on COMMIT would truncate what was written: give the end.
        offset: total,
        total,
        expected: blob.digest,
        labels,
      });
      stream.close();
      return true;
    } catch (error) {
      stream.cancel();
      if (isContainerdError(error, "AlreadyExists")) {
        if (Object.keys(labels).length > 0) {
          await client.content.update(
            {
              info: { digest: blob.digest, labels },
              updateMask: { paths: Object.keys(labels).map((key) => `labels.${key}`) },
            },
            options,
          );
        }
        return false;
      }
      // Another writer holds the ref (a concurrent import of the same blob): wait for it.
      if (isContainerdError(error, "Unavailable") && /locked/i.test(error.message)) {
        if (Date.now() - started > uploadRetryLimitMs) throw error;
        await delay(uploadRetryDelayMs);
        continue;
      }
      throw new ContainerdError(
        error instanceof ContainerdError ? error.code : "Unknown",
        `content ${blob.digest}: ${(error as Error).message}`,
        { cause: error },
      );
    }
  }
}

/** The image names of an archive, normalised (`busybox:1` -> `docker.io/library/busybox:1`). */
export function imageNamesOf(image: ArchiveImage, options: ParseReferenceOptions = {}): string[] {
  return [...new Set(image.names.map((name) => normalizeReference(name, options)))];
}

/**
 * Imports one image from an OCI layout or docker archive into containerd and unpacks it through
 * a named snapshotter, driving the unpack itself (works the same on containerd 1.6, 1.7, 2.x):
 * a lease for the duration; content written once with the GC labels that keep it referenced;
 * per layer Stat, Prepare with the layer's `containerd.io/snapshot/*` annotations as labels,
 * Diff.Apply, Commit under the chain id; then the image records.
 */
export async function importArchive(
  client: ContainerdClient,
  archive: Uint8Array | ArchiveImage,
  options: ImportArchiveOptions,
): Promise<ImportResult> {
  const image =
    archive instanceof Uint8Array
      ? loadArchiveImage(
          archive,
          options.platform === undefined ? {} : { platform: options.platform },
        )
      : archive;
  const names =
    options.names === undefined
      ? imageNamesOf(image, options.referenceOptions)
      : options.names.map((name) => normalizeReference(name, options.referenceOptions));
  if (names.length === 0) {
    throw new ContainerdError(
      "InvalidArgument",
      `image ${image.manifestDescriptor.digest}: the archive names no image; give a name`,
    );
  }
  const diffIds = image.config.rootfs.diff_ids;
  if (diffIds.length !== image.layers.length) {
    throw new ContainerdError(
      "InvalidArgument",
      `image ${image.manifestDescriptor.digest}: config lists ${diffIds.length} diff_ids for ${image.layers.length} layers`,
    );
  }
  const chain = chainIds(diffIds);
  const unpack = options.unpack ?? true;
  const namespace = options.namespace ?? client.namespace;
  const base: CallOptions = {
    namespace,
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  };
  const lease = `nix-snapshotter-import-${uniqueSuffix()}`;
  const expires = new Date(Date.now() + (options.leaseExpireMs ?? 3_600_000));
  await client.leases.create(
    { id: lease, labels: { [Label.GcExpire]: expires.toISOString() } },
    base,
  );
  const call: CallOptions = { ...base, lease };
  let contentWritten = 0;
  let layersApplied = 0;
  try {
    const write = async (digest: string, data: Uint8Array, labels: Record<string, string>) => {
      const written = await writeContent(
        client,
        { digest, data, labels },
        {
          ...call,
          ...(options.chunkSize === undefined ? {} : { chunkSize: options.chunkSize }),
        },
      );
      if (written) contentWritten++;
      options.onEvent?.({ kind: "content", digest, size: data.byteLength, written });
    };
    // Children before parents, so that a parent's GC labels never point at missing content.
    for (const [index, layer] of image.layers.entries()) {
      const labels: Record<string, string> = {};
      const diffId = diffIds[index]!;
      if (diffId !== layer.descriptor.digest) labels[Label.Uncompressed] = diffId;
      await write(layer.descriptor.digest, layer.data, labels);
    }
    const topChainId = chain.at(-1);
    await write(
      image.manifest.config.digest,
      image.configBlob,
      unpack && topChainId !== undefined
        ? { [gcSnapshotLabel(options.snapshotter)]: topChainId }
        : {},
    );
    const manifestLabels: Record<string, string> = {
      [gcContentLabel("config")]: image.manifest.config.digest,
    };
    for (const [index, layer] of image.manifest.layers.entries()) {
      manifestLabels[gcContentLabel(`l.${index}`)] = layer.digest;
    }
    await write(image.manifestDescriptor.digest, image.manifestBlob, manifestLabels);

    if (unpack) {
      for (const [index, layer] of image.layers.entries()) {
        const applied = await unpackLayer(client, {
          snapshotter: options.snapshotter,
          chainId: chain[index]!,
          parent: index === 0 ? "" : chain[index - 1]!,
          diffId: diffIds[index]!,
          layer: layer.descriptor,
          call,
        });
        if (applied) layersApplied++;
        options.onEvent?.({ kind: "layer", chainId: chain[index]!, index, applied });
      }
    }

    const target = {
      mediaType: image.manifestDescriptor.mediaType,
      digest: image.manifestDescriptor.digest,
      size: BigInt(image.manifestDescriptor.size),
    };
    for (const name of names) {
      const record = { name, labels: { ...options.labels }, target };
      try {
        await client.images.create({ image: record }, call);
        options.onEvent?.({ kind: "image", name, created: true });
      } catch (error) {
        if (!isContainerdError(error, "AlreadyExists")) {
          throw new ContainerdError(
            error instanceof ContainerdError ? error.code : "Unknown",
            `image "${name}": ${(error as Error).message}`,
            { cause: error },
          );
        }
        await client.images.update({ image: record }, call);
        options.onEvent?.({ kind: "image", name, created: false });
      }
    }
    return {
      names,
      target: image.manifestDescriptor,
      configDigest: image.manifest.config.digest,
      chainIds: chain,
      contentWritten,
      layersApplied,
    };
  } finally {
    await client.leases.delete({ id: lease }, { namespace }).catch(() => {
      // The lease expires on its own (gc.expire).
    });
  }
}

interface UnpackLayerRequest {
  snapshotter: string;
  chainId: string;
  parent: string;
  diffId: string;
  layer: Descriptor;
  call: CallOptions;
}

async function snapshotExists(
  client: ContainerdClient,
  snapshotter: string,
  key: string,
  call: CallOptions,
): Promise<boolean> {
  try {
    await client.snapshots.stat({ snapshotter, key }, call);
    return true;
  } catch (error) {
    if (isContainerdError(error, "NotFound")) return false;
    throw error;
  }
}

/** Unpacks one layer as containerd's unpacker does. Returns false when it was there already. */
async function unpackLayer(
  client: ContainerdClient,
  request: UnpackLayerRequest,
): Promise<boolean> {
  const { snapshotter, chainId, parent, call } = request;
  const what = `layer ${request.layer.digest} (snapshot ${chainId} in "${snapshotter}")`;
  if (await snapshotExists(client, snapshotter, chainId, call)) return false;
  const labels = { ...snapshotLabelsOf(request.layer.annotations), [Label.SnapshotRef]: chainId };
  const key = `extract-${uniqueSuffix()} ${chainId}`;
  let mounts: Awaited<ReturnType<ContainerdClient["snapshots"]["prepare"]>>["mounts"];
  try {
    mounts = (await client.snapshots.prepare({ snapshotter, key, parent, labels }, call)).mounts;
  } catch (error) {
    // A snapshotter may answer AlreadyExists when it has the layer already (remote snapshots).
    if (
      isContainerdError(error, "AlreadyExists") &&
      (await snapshotExists(client, snapshotter, chainId, call))
    ) {
      return false;
    }
    throw new ContainerdError(
      error instanceof ContainerdError ? error.code : "Unknown",
      `${what}: prepare: ${(error as Error).message}`,
      { cause: error },
    );
  }
  try {
    const response = await client.diff.apply(
      {
        diff: {
          mediaType: request.layer.mediaType,
          digest: request.layer.digest,
          size: BigInt(request.layer.size),
          annotations: { ...request.layer.annotations },
        },
        mounts,
      },
      { ...call, timeoutMs: 0 },
    );
    const applied = response.applied?.digest;
    if (applied !== request.diffId) {
      throw new ContainerdError(
        "InvalidArgument",
        `diff id ${applied ?? "(none)"} does not match the config's ${request.diffId}`,
      );
    }
    try {
      await client.snapshots.commit({ snapshotter, name: chainId, key, labels }, call);
    } catch (error) {
      if (!isContainerdError(error, "AlreadyExists")) throw error;
      // Committed meanwhile by a concurrent unpack of the same layer: that one wins.
      await client.snapshots.remove({ snapshotter, key }, call).catch(() => {});
      return false;
    }
    return true;
  } catch (error) {
    await client.snapshots.remove({ snapshotter, key }, call).catch(() => {});
    throw new ContainerdError(
      error instanceof ContainerdError ? error.code : "Unknown",
      `${what}: ${(error as Error).message}`,
      { cause: error },
    );
  }
}
