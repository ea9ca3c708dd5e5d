import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import type { BlobDescriptor, RegistryClient } from "./client.js";
import { RegistryError } from "./errors.js";

/** A descriptor as the OCI image spec has it (extra fields are kept as they are). */
export interface ImageDescriptor extends BlobDescriptor {
  annotations?: Record<string, string>;
}

/**
 * Where the image to push comes from: an OCI layout archive, the in-memory output of the
 * builder, or anything else that can hand out blobs by descriptor.
 */
export interface ImageSource {
  /** The manifest or index to push under the tag. */
  rootDescriptor: ImageDescriptor;
  /** The bytes of a blob (manifest, index, config or layer), whole or as a stream. */
  readBlob(descriptor: ImageDescriptor): Promise<Readable | Uint8Array> | Readable | Uint8Array;
}

/** What happens during a push, for progress bars and logs. */
export type PushEvent =
  | { type: "plan"; blobs: number; bytes: number; manifests: number }
  | { type: "blob-exists"; digest: string; size: number }
  | { type: "blob-start"; digest: string; size: number }
  | { type: "blob-progress"; digest: string; size: number; sent: number }
  | { type: "blob-done"; digest: string; size: number; how: "uploaded" | "mounted" }
  | { type: "manifest"; digest: string; mediaType: string; reference: string };

export interface PushImageOptions {
  client: RegistryClient;
  /** Repository inside the registry, e.g. `library/hello`. */
  repository: string;
  /** Tag for the root manifest; without one the image is pushed by digest only. */
  tag?: string;
  source: ImageSource;
  /** Blobs uploaded at the same time (default 3). */
  concurrency?: number;
  /** Blobs above this size go up in chunks (default 16 MiB). */
  chunkSize?: number;
  /** Another repository of the same registry to mount blobs from before uploading them. */
  mountFrom?: string;
  onEvent?: (event: PushEvent) => void;
}

export interface PushResult {
  /** Digest of the root manifest or index, as stored. */
  digest: string;
  mediaType: string;
  size: number;
  /** `<registry>/<repository>@<digest>` */
  reference: string;
  uploaded: string[];
  mounted: string[];
  /** Blobs the registry already had. */
  skipped: string[];
}

const MANIFEST_TYPES = new Set([
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
]);
const INDEX_TYPES = new Set([
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
]);

const digestPattern = /^sha256:[a-f0-9]{64}$/;
const tagPattern = /^[\w][\w.-]{0,127}$/;
const repositoryPattern =
  /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;

interface PlannedManifest {
  descriptor: ImageDescriptor;
  data: Buffer;
}

/**
 * Pushes an image (a manifest and its config and layers, or an index and its manifests) to a
 * repository: reads and verifies every manifest, asks the registry which blobs it lacks, reads
 * and verifies those blobs (nothing is uploaded if one does not match its digest), uploads them,
 * then PUTs the manifests (children first) and finally the root under the tag.
 */
export async function pushImage(options: PushImageOptions): Promise<PushResult> {
  const { client, repository, source } = options;
  if (!repositoryPattern.test(repository) || repository.length > 255) {
    throw new RegistryError("InvalidArgument", `repository name "${repository}" is not valid`);
  }
  if (options.tag !== undefined && !tagPattern.test(options.tag)) {
    throw new RegistryError(
      "InvalidArgument",
      `tag "${options.tag}" is not valid (1-128 characters of [A-Za-z0-9_.-], not starting with . or -)`,
    );
  }
  const emit = options.onEvent ?? (() => {});

  // 1. The manifests, verified, children before parents; the blobs they name.
  const manifests: PlannedManifest[] = [];
  const blobs = new Map<string, ImageDescriptor>();
  await collect(source, source.rootDescriptor, manifests, blobs, 0);

  // 2. Which blobs the registry lacks.
  const missing: ImageDescriptor[] = [];
  const skipped: string[] = [];
  await forEachLimit([...blobs.values()], options.concurrency ?? 3, async (blob) => {
    if (await client.hasBlob(repository, blob.digest)) {
      skipped.push(blob.digest);
      emit({ type: "blob-exists", digest: blob.digest, size: blob.size });
    } else {
      missing.push(blob);
    }
  });
  emit({
    type: "plan",
    blobs: missing.length,
    bytes: missing.reduce((sum, blob) => sum + blob.size, 0),
    manifests: manifests.length,
  });

  // 3. Refuse before uploading anything if a blob does not match its descriptor.
  for (const blob of missing) await verifySourceBlob(source, blob);

  // 4. Upload.
  const uploaded: string[] = [];
  const mounted: string[] = [];
  await forEachLimit(missing, options.concurrency ?? 3, async (blob) => {
    emit({ type: "blob-start", digest: blob.digest, size: blob.size });
    const how = await client.uploadBlob(repository, blob, () => source.readBlob(blob), {
      ...(options.chunkSize === undefined ? {} : { chunkSize: options.chunkSize }),
      ...(options.mountFrom === undefined ? {} : { mountFrom: options.mountFrom }),
      onProgress: (sent) =>
        emit({ type: "blob-progress", digest: blob.digest, size: blob.size, sent }),
    });
    (how === "mounted" ? mounted : uploaded).push(blob.digest);
    emit({ type: "blob-done", digest: blob.digest, size: blob.size, how });
  });

  // 5. Manifests, children by digest, the root by tag (or digest).
  const root = manifests.at(-1)!;
  for (const manifest of manifests) {
    const isRoot = manifest === root;
    const reference =
      isRoot && options.tag !== undefined ? options.tag : manifest.descriptor.digest;
    await client.putManifest(repository, reference, manifest.descriptor.mediaType, manifest.data);
    emit({
      type: "manifest",
      digest: manifest.descriptor.digest,
      mediaType: manifest.descriptor.mediaType,
      reference,
    });
  }
  return {
    digest: root.descriptor.digest,
    mediaType: root.descriptor.mediaType,
    size: root.descriptor.size,
    reference: `${client.registry}/${repository}@${root.descriptor.digest}`,
    uploaded,
    mounted,
    skipped,
  };
}

async function collect(
  source: ImageSource,
  descriptor: ImageDescriptor,
  manifests: PlannedManifest[],
  blobs: Map<string, ImageDescriptor>,
  depth: number,
): Promise<void> {
  checkDescriptor(descriptor, "root");
  if (depth > 4) {
    throw new RegistryError("InvalidArgument", `image source: indexes nested more than 4 deep`);
  }
  if (manifests.some((manifest) => manifest.descriptor.digest === descriptor.digest)) return;
  const isIndex = INDEX_TYPES.has(descriptor.mediaType);
  if (!isIndex && !MANIFEST_TYPES.has(descriptor.mediaType)) {
    throw new RegistryError(
      "InvalidArgument",
      `image source: ${descriptor.digest} has media type "${descriptor.mediaType}", not an image manifest or index`,
    );
  }
  const data = await readWhole(source, descriptor, 4 * 1024 * 1024);
  verify(descriptor, data);
  let parsed: unknown;
  try {
    parsed = JSON.parse(data.toString("utf8"));
  } catch (error) {
    throw new RegistryError(
      "InvalidArgument",
      `image source: ${descriptor.digest} is not valid JSON`,
      {
        cause: error,
      },
    );
  }
  if (typeof parsed !== "object" || parsed === null) {
    throw new RegistryError(
      "InvalidArgument",
      `image source: ${descriptor.digest} is not a JSON object`,
    );
  }
  const document = parsed as {
    mediaType?: unknown;
    manifests?: unknown;
    config?: unknown;
    layers?: unknown;
  };
  if (typeof document.mediaType === "string" && document.mediaType !== descriptor.mediaType) {
    throw new RegistryError(
      "InvalidArgument",
      `image source: ${descriptor.digest} says media type "${document.mediaType}", its descriptor "${descriptor.mediaType}"`,
    );
  }
  if (isIndex) {
    if (!Array.isArray(document.manifests)) {
      throw new RegistryError(
        "InvalidArgument",
        `image source: index ${descriptor.digest} has no manifests array`,
      );
    }
    for (const child of document.manifests as unknown[]) {
      await collect(
        source,
        checkDescriptor(child, `manifest of index ${descriptor.digest}`),
        manifests,
        blobs,
        depth + 1,
      );
    }
  } else {
    const config = checkDescriptor(document.config, `config of manifest ${descriptor.digest}`);
    if (!Array.isArray(document.layers)) {
      throw new RegistryError(
        "InvalidArgument",
        `image source: manifest ${descriptor.digest} has no layers array`,
      );
    }
    for (const blob of [
      config,
      ...(document.layers as unknown[]).map((layer, index) =>
        checkDescriptor(layer, `layer ${index} of manifest ${descriptor.digest}`),
      ),
    ]) {
      const known = blobs.get(blob.digest);
      if (known !== undefined && known.size !== blob.size) {
        throw new RegistryError(
          "InvalidArgument",
          `image source: blob ${blob.digest} appears with sizes ${known.size} and ${blob.size}`,
        );
      }
      blobs.set(blob.digest, blob);
    }
  }
  manifests.push({ descriptor, data });
}

function checkDescriptor(value: unknown, what: string): ImageDescriptor {
  if (typeof value !== "object" || value === null) {
    throw new RegistryError("InvalidArgument", `image source: ${what} is not a descriptor`);
  }
  const { mediaType, digest, size } = value as {
    mediaType?: unknown;
    digest?: unknown;
    size?: unknown;
  };
  if (typeof mediaType !== "string" || mediaType === "") {
    throw new RegistryError("InvalidArgument", `image source: ${what} has no mediaType`);
  }
  if (typeof digest !== "string" || !digestPattern.test(digest)) {
    throw new RegistryError(
      "InvalidArgument",
      `image source: ${what} has digest ${JSON.stringify(digest)}, not sha256:<64 lower-case hex digits>`,
    );
  }
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
    throw new RegistryError(
      "InvalidArgument",
      `image source: ${what} has an invalid size ${JSON.stringify(size)}`,
    );
  }
  return value as ImageDescriptor;
}

function verify(descriptor: ImageDescriptor, data: Uint8Array): void {
  if (data.byteLength !== descriptor.size) {
    throw new RegistryError(
      "DataLoss",
      `image source: blob ${descriptor.digest} has ${data.byteLength} bytes, its descriptor says ${descriptor.size}; refusing to push`,
    );
  }
  const actual = `sha256:${createHash("sha256").update(data).digest("hex")}`;
  if (actual !== descriptor.digest) {
    throw new RegistryError(
      "DataLoss",
      `image source: blob ${descriptor.digest} has content with digest ${actual}; refusing to push`,
    );
  }
}

async function readWhole(
  source: ImageSource,
  descriptor: ImageDescriptor,
  limit: number,
): Promise<Buffer> {
  const content = await source.readBlob(descriptor);
  if (content instanceof Uint8Array)
    return Buffer.from(content.buffer, content.byteOffset, content.byteLength);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of content as AsyncIterable<Buffer>) {
    total += chunk.byteLength;
    if (total > limit || total > descriptor.size) {
      content.destroy();
      throw new RegistryError(
        "DataLoss",
        `image source: blob ${descriptor.digest} is longer than its descriptor's ${descriptor.size} bytes; refusing to push`,
      );
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** Hashes a blob from the source (streaming) and throws DataLoss when it does not match. */
async function verifySourceBlob(source: ImageSource, descriptor: ImageDescriptor): Promise<void> {
  const content = await source.readBlob(descriptor);
  if (content instanceof Uint8Array) {
    verify(descriptor, content);
    return;
  }
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of content as AsyncIterable<Buffer>) {
    size += chunk.byteLength;
    if (size > descriptor.size) {
      content.destroy();
      break;
    }
    hash.update(chunk);
  }
  if (size !== descriptor.size) {
    throw new RegistryError(
      "DataLoss",
      `image source: blob ${descriptor.digest} has ${size > descriptor.size ? "more than " : ""}${size} bytes, its descriptor says ${descriptor.size}; refusing to push`,
    );
  }
  const actual = `sha256:${hash.digest("hex")}`;
  if (actual !== descriptor.digest) {
    throw new RegistryError(
      "DataLoss",
      `image source: blob ${descriptor.digest} has content with digest ${actual}; refusing to push`,
    );
  }
}

async function forEachLimit<T>(
  items: T[],
  limit: number,
  action: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      const item = items[next++]!;
      try {
        await action(item);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
}

/** An image source over blobs held in memory, keyed by digest. */
export function createMemoryImageSource(
  rootDescriptor: ImageDescriptor,
  blobs: Iterable<Uint8Array> | Map<string, Uint8Array>,
): ImageSource {
  const byDigest = new Map<string, Uint8Array>();
  if (blobs instanceof Map) {
    for (const [digest, data] of blobs) byDigest.set(digest, data);
  } else {
    for (const data of blobs)
      byDigest.set(`sha256:${createHash("sha256").update(data).digest("hex")}`, data);
  }
  return {
    rootDescriptor,
    readBlob(descriptor) {
      const data = byDigest.get(descriptor.digest);
      if (data === undefined) {
        throw new RegistryError("NotFound", `image source: blob ${descriptor.digest} is missing`);
      }
      return data;
    },
  };
}
