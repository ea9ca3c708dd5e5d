import { lstat } from "node:fs/promises";
import { basename, join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  ImageService,
  ImageSpecSchema,
  type ImageStatusResponse,
  type PullImageResponseSchema,
} from "@nix-snapshotter/api/cri/v1";
import {
  type CallOptions,
  type ContainerdClient,
  createContainerdClient,
  importArchive,
  isContainerdError,
  Label,
} from "@nix-snapshotter/containerd-client";
import { toConnectError } from "@nix-snapshotter/errdefs/connect";
import type { Logger, NixStore } from "@nix-snapshotter/nix-store";
import {
  type ArchiveImage,
  type ArchiveLimits,
  loadArchiveFile,
  resolveArchiveLimits,
} from "@nix-snapshotter/oci";
import { ImageServiceError } from "./errors.js";
import { filesystemUsage } from "./image-fs-info.js";
import { isNixReference, type NixImageReference, parseNixImageReference } from "./nix-reference.js";

/** The namespace containerd's CRI plugin keeps its images in. */
export const criNamespace = "k8s.io";

export interface ImageServiceOptions {
  /** containerd's socket; its CRI plugin serves `runtime.v1.ImageService` there. */
  containerdAddress: string;
  /** A client for that socket (default: one is created, and closed by `close()`). */
  containerd?: ContainerdClient;
  nixStore: NixStore;
  logger: Logger;
  /** Snapshotter that unpacks `nix:0` images (default `nix`); must be CRI's snapshotter too. */
  snapshotter?: string;
  /** The snapshotter's root directory, reported by ImageFsInfo. */
  snapshotterRoot: string;
  /** How long PullImage waits for containerd's CRI to list an image it imported (ms). */
  criSyncTimeoutMs?: number;
  /** Deadline of forwarded calls when the caller gave none (ms). Default 120 000. */
  defaultTimeoutMs?: number;
  /**
   * Longest the realise of a `nix:0` archive may take (ms); Nix is then killed and PullImage
   * fails with DeadlineExceeded. Default: no limit but the caller's deadline or cancellation.
   */
  realiseTimeoutMs?: number;
  /** Bounds on a `nix:0` archive (default {@link nixArchiveLimits}). */
  archiveLimits?: Partial<ArchiveLimits>;
}

const mebibyte = 1024 * 1024;

/**
 * Bounds on a `nix:0` image archive: 128 MiB for the archive, its decompressed stream and any one
 * entry; 4 MiB JSON documents; 65 536 entries. A nix image is metadata plus a small mountpoint
 * layer (and a base image's layers with `--from-image`). The archive is held in memory while it
 * is imported, so the decompressed bound is also about the memory one pull may take.
 */
export const nixArchiveLimits: Readonly<ArchiveLimits> = Object.freeze(
  resolveArchiveLimits({
    maxArchiveBytes: 128 * mebibyte,
    maxUncompressedBytes: 128 * mebibyte,
    maxEntryBytes: 128 * mebibyte,
  }),
);

/** The service, ready for `router.service(ImageService, service.impl)`. */
export interface CriImageService {
  readonly impl: ServiceImpl<typeof ImageService>;
  /** Pulls a `nix:0` reference (what PullImage does for it); returns the image id. */
  pullNixImage(reference: string, options?: { signal?: AbortSignal }): Promise<string>;
  /** Closes the containerd client if this service created it. */
  close(): void;
}

function delay(milliseconds: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, milliseconds);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(new ImageServiceError("Canceled", "canceled"));
      },
      { once: true },
    );
  });
}

/**
 * Creates the CRI ImageService: `nix:0` references are resolved through Nix and imported into
 * containerd (namespace `k8s.io`, unpacked through the nix snapshotter); every other call is
 * forwarded to containerd's CRI. ImageFsInfo answers without containerd.
 */
export function createImageService(options: ImageServiceOptions): CriImageService {
  const { nixStore, logger } = options;
  const snapshotter = options.snapshotter ?? "nix";
  const ownsClient = options.containerd === undefined;
  const containerd = (
    options.containerd ?? createContainerdClient({ address: options.containerdAddress })
  ).withNamespace(criNamespace);
  const cri = containerd.service(ImageService);
  const criSyncTimeoutMs = options.criSyncTimeoutMs ?? 30_000;
  const defaultTimeoutMs = options.defaultTimeoutMs ?? 120_000;
  /** Pulls in progress by image name: one pull, stopped when every caller waiting on it left. */
  const pulling = new Map<
    string,
    { promise: Promise<string>; controller: AbortController; waiting: number }
  >();
  const archiveLimits = resolveArchiveLimits({ ...nixArchiveLimits, ...options.archiveLimits });

  const callOptions = (context: HandlerContext | undefined, timeout = true): CallOptions => {
    const remaining = context?.timeoutMs();
    return {
      ...(context ? { signal: context.signal } : {}),
      timeoutMs: remaining ?? (timeout ? defaultTimeoutMs : 0),
    };
  };

  const parseNix = (reference: string) => parseNixImageReference(reference, nixStore.storeDir);

  /** The image CRI knows by this name, or undefined. */
  const criImage = async (name: string, call: CallOptions) => {
    const status: ImageStatusResponse = await cri.imageStatus({ image: { image: name } }, call);
    return status.image !== undefined && status.image.id !== "" ? status.image : undefined;
  };

  const rootExists = async (reference: NixImageReference) =>
    lstat(join(nixStore.gcRootsDir, reference.rootOwner, basename(reference.storePath))).then(
      () => true,
      () => false,
    );

  async function pullNix(reference: NixImageReference, signal?: AbortSignal): Promise<string> {
    const log = logger.child({ rpc: "PullImage", image: reference.name });
    const call: CallOptions = { timeoutMs: defaultTimeoutMs, ...(signal ? { signal } : {}) };
    const present = await criImage(reference.name, call);
    if (present !== undefined) {
      // Already imported (by an earlier pull, or `nix2container load -n k8s.io`): keep the archive
      // rooted while the image exists, when it is in the store; no import, no realise.
      if (!(await rootExists(reference)) && (await nixStore.isValid(reference.storePath))) {
        await nixStore.addRoots(reference.rootOwner, [reference.storePath]);
      }
      log.debug({ id: present.id }, "already present");
      return present.id;
    }
    const realised = await nixStore.realise([reference.storePath], {
      roots: { owner: reference.rootOwner },
      ...(signal ? { signal } : {}),
      ...(options.realiseTimeoutMs !== undefined ? { timeoutMs: options.realiseTimeoutMs } : {}),
    });
    log.info(
      { substituted: realised.substituted.length, built: realised.built.length },
      "archive realised",
    );
    try {
      let archive: ArchiveImage;
      try {
        // A regular file only (never a link out of the store, a device or a FIFO), bounded, read
        // as a stream that stops when the caller cancels.
        archive = await loadArchiveFile(reference.storePath, {
          limits: archiveLimits,
          ...(signal ? { signal } : {}),
        });
      } catch (error) {
        if (signal?.aborted === true) {
          throw new ImageServiceError("Canceled", `pull of "${reference.name}" canceled`, {
            cause: error,
          });
        }
        // Whatever the reason (a link, a directory, a device, a bound, a bad archive), the
        // reference names no image archive: InvalidArgument, as before the archive is read.
        throw new ImageServiceError(
          "InvalidArgument",
          `store path "${reference.storePath}" is not an image archive: ${(error as Error).message}`,
          { cause: error },
        );
      }
      const result = await importArchive(containerd, archive, {
        snapshotter,
        names: [reference.name],
        labels: { [Label.CriImage]: "managed" },
        ...(signal ? { signal } : {}),
      });
      log.info(
        { layersApplied: result.layersApplied, contentWritten: result.contentWritten },
        "imported",
      );
    } catch (error) {
      // Nothing uses the archive: release its root.
      await nixStore.removeRoots(reference.rootOwner).catch(() => {});
      throw error;
    }
    // containerd's CRI learns of the image from the create event: wait until it lists it, so that
    // the kubelet's ImageStatus and CreateContainer right after this answer find it.
    const deadline = Date.now() + criSyncTimeoutMs;
    for (;;) {
      const image = await criImage(reference.name, call);
      if (image !== undefined) return image.id;
      if (Date.now() > deadline) {
        throw new ImageServiceError(
          "Internal",
          `image "${reference.name}" was imported but containerd's CRI does not list it after ${criSyncTimeoutMs} ms (is its snapshotter "${snapshotter}"?)`,
        );
      }
      await delay(50, signal);
    }
  }

  function pullNixImage(
    reference: string,
    pullOptions: { signal?: AbortSignal } = {},
  ): Promise<string> {
    const parsed = parseNix(reference);
    const signal = pullOptions.signal;
    if (signal?.aborted) {
      return Promise.reject(
        new ImageServiceError("Canceled", `pull of "${parsed.name}" canceled`, {
          cause: signal.reason,
        }),
      );
    }
    let pull = pulling.get(parsed.name);
    if (pull === undefined) {
      const controller = new AbortController();
      const entry = {
        controller,
        waiting: 0,
        promise: pullNix(parsed, controller.signal).finally(() => pulling.delete(parsed.name)),
      };
      // Handled by every waiter; this keeps a pull whose waiters all left from being unhandled.
      entry.promise.catch(() => {});
      pulling.set(parsed.name, entry);
      pull = entry;
    }
    const shared = pull;
    shared.waiting += 1;
    // Each caller waits for the shared pull or its own cancel; the pull (Nix, the archive's read,
    // the import) stops when the last caller waiting on it cancels.
    return new Promise<string>((resolve, reject) => {
      let left = false;
      const leave = () => {
        if (left) return;
        left = true;
        signal?.removeEventListener("abort", onAbort);
        shared.waiting -= 1;
      };
      const onAbort = () => {
        if (left) return;
        leave();
        if (shared.waiting === 0) shared.controller.abort(signal?.reason);
        reject(
          new ImageServiceError("Canceled", `pull of "${parsed.name}" canceled`, {
            cause: signal?.reason,
          }),
        );
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      shared.promise.then(
        (id) => {
          leave();
          resolve(id);
        },
        (error: unknown) => {
          leave();
          reject(error);
        },
      );
    });
  }

  /** The reference with a `nix:0` one validated and normalised; others unchanged. */
  const normalise = (reference: string): string =>
    isNixReference(reference) ? parseNix(reference).name : reference;

  // Where a call's failure is handled, so where it is logged, once (NotFound, the answer to
  // ImageStatus of an image not pulled yet, at debug).
  const forward = async <T>(rpc: string, run: () => Promise<T>): Promise<T> => {
    try {
      return await run();
    } catch (error) {
      const connectError = toConnectError(error, rpc);
      const level = connectError.code === Code.NotFound ? "debug" : "warn";
      logger[level]({ rpc, code: Code[connectError.code], err: error }, connectError.rawMessage);
      throw connectError;
    }
  };

  const impl: ServiceImpl<typeof ImageService> = {
    listImages: (request, context) =>
      forward("ListImages", () => cri.listImages(request, callOptions(context))),
    async *streamImages(request, context) {
      try {
        yield* cri.streamImages(request, callOptions(context, false));
      } catch (error) {
        throw toConnectError(error, "StreamImages");
      }
    },
    imageStatus: (request, context) =>
      forward("ImageStatus", async () => {
        const spec = request.image ?? create(ImageSpecSchema);
        spec.image = normalise(spec.image);
        request.image = spec;
        return cri.imageStatus(request, callOptions(context));
      }),
    pullImage: (request, context) =>
      forward("PullImage", async (): Promise<MessageInitShape<typeof PullImageResponseSchema>> => {
        const image = request.image?.image ?? "";
        if (isNixReference(image)) {
          return { imageRef: await pullNixImage(image, { signal: context.signal }) };
        }
        return cri.pullImage(request, callOptions(context, false));
      }),
    removeImage: (request, context) =>
      forward("RemoveImage", async () => {
        const spec = request.image ?? create(ImageSpecSchema);
        spec.image = normalise(spec.image);
        request.image = spec;
        const image = spec.image;
        const call = callOptions(context);
        // The kubelet removes by image id: find the nix:0 names first, to release their roots.
        let tags: string[] = [];
        try {
          tags = (await criImage(image, call))?.repoTags ?? [];
        } catch (error) {
          if (!isContainerdError(error, "NotFound")) throw error;
        }
        const response = await cri.removeImage(request, call);
        for (const tag of tags) {
          if (!isNixReference(tag)) continue;
          const reference = parseNix(tag);
          await nixStore.removeRoots(reference.rootOwner);
          logger.info({ rpc: "RemoveImage", image: tag }, "released the archive's GC root");
        }
        return response;
      }),
    imageFsInfo: () =>
      forward("ImageFsInfo", async () => {
        const timestamp = BigInt(Date.now()) * 1_000_000n;
        const usage = await Promise.all(
          [options.snapshotterRoot, nixStore.storeDir].map((path) => filesystemUsage(path)),
        );
        return {
          imageFilesystems: usage.map((figures) => ({
            timestamp,
            fsId: { mountpoint: figures.mountpoint },
            usedBytes: { value: figures.usedBytes },
            inodesUsed: { value: figures.inodesUsed },
          })),
          containerFilesystems: [],
        };
      }),
  };

  return {
    impl,
    pullNixImage,
    close() {
      if (ownsClient) containerd.close();
    },
  };
}
