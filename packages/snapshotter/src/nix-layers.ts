import { CodedError, errorCodeOf, messageOf } from "@nix-snapshotter/errdefs";
import type { Logger } from "@nix-snapshotter/nix-store";
import { ErrorCode, SnapshotterError } from "./errors.js";
import { ensureMountpoints, linkStorePaths } from "./link-tree.js";
import { mergePaths } from "./merge-paths.js";
import {
  type NixLayerRequest,
  nixClosureLabel,
  parseClosureStorePaths,
  parseNixLabels,
} from "./nix-labels.js";
import type { NixStorePort, RootLeftover } from "./nix-store-port.js";
import type { MetadataStore, SnapshotHeader } from "./storage/metastore.js";

/**
 * A Nix store failure keeps its code (a coded error of any package, or an abort reason: a
 * timeout is DeadlineExceeded, a cancel Canceled); anything else is Unavailable.
 */
export function nixError(error: unknown, message: string): SnapshotterError {
  const code = errorCodeOf(error);
  const kept =
    CodedError.is(error) || code === ErrorCode.Canceled || code === ErrorCode.DeadlineExceeded;
  return new SnapshotterError(
    kept ? code : ErrorCode.Unavailable,
    `${message}: ${messageOf(error)}`,
    {
      cause: error,
    },
  );
}

/**
 * Realise failures that say something about the paths (rather than the caller's cancellation
 * or deadline, a refused permission or a bad argument): the paths' state decides the answer.
 */
function realiseFailureIsAboutPaths(code: ErrorCode): boolean {
  return (
    code === ErrorCode.NotFound ||
    code === ErrorCode.Unavailable ||
    code === ErrorCode.Internal ||
    code === ErrorCode.Unknown ||
    code === ErrorCode.FailedPrecondition
  );
}

/** The store paths of a realised nix layer and the label that named each. */
export interface RealisedLayer {
  paths: string[];
  labelOf: ReadonlyMap<string, string>;
}

export interface NixLayersOptions {
  nixStore: NixStorePort | undefined;
  storeDir: string;
  /** Prefix of the GC root owners: `<prefix><snapshot id>`. */
  ownerPrefix: string;
  store: MetadataStore;
  /** The `fs` directory of a snapshot (where links and mountpoints go). */
  upperDir(id: number): string;
  logger: Logger;
  realiseTimeoutMs: number | undefined;
}

/**
 * The Nix side of nix layers: reading their labels, GC roots (one owner per snapshot) and
 * realisation, the flattened store paths of committed chains, hard-linking store paths into a
 * layer and making mountpoints for bind mounts, and Cleanup of roots nothing owns. Which of
 * these a snapshot gets is the mount mode's choice (see mount-modes/).
 */
export class NixLayers {
  readonly nixStore: NixStorePort | undefined;
  readonly storeDir: string;
  private readonly ownerPrefix: string;
  private readonly store: MetadataStore;
  private readonly upperDir: (id: number) => string;
  private readonly logger: Logger;
  private readonly realiseTimeoutMs: number | undefined;
  /** Flattened store paths of committed snapshots, by id (immutable once committed). */
  private readonly flattenedCache = new Map<number, string[]>();
  /** Linking in progress, by snapshot id. */
  private readonly linking = new Map<number, Promise<void>>();

  constructor(options: NixLayersOptions) {
    this.nixStore = options.nixStore;
    this.storeDir = options.storeDir;
    this.ownerPrefix = options.ownerPrefix;
    this.store = options.store;
    this.upperDir = options.upperDir;
    this.logger = options.logger;
    this.realiseTimeoutMs = options.realiseTimeoutMs;
  }

  /** The GC root owner of snapshot `id`. */
  owner(id: number): string {
    return `${this.ownerPrefix}${id}`;
  }

  /** The snapshot id of one of our GC root owners; null for a foreign owner. */
  private ownerId(owner: string): number | undefined | null {
    if (!owner.startsWith(this.ownerPrefix)) return null;
    const rest = owner.slice(this.ownerPrefix.length);
    return /^[0-9]+$/.test(rest) ? Number(rest) : undefined;
  }

  /**
   * The nix layer that `labels` ask for (validated store paths), undefined for an ordinary
   * layer; FailedPrecondition when there is one but no Nix store.
   */
  request(key: string, labels: Readonly<Record<string, string>>): NixLayerRequest | undefined {
    const request = parseNixLabels(labels, this.storeDir);
    if (request !== undefined && this.nixStore === undefined) {
      throw new SnapshotterError(
        ErrorCode.FailedPrecondition,
        `snapshot "${key}" is a nix layer but the snapshotter has no Nix store`,
      );
    }
    return request;
  }

  /**
   * Roots and realises the store paths of a nix layer in one batch (GC root owner of snapshot
   * `id`), reads and validates the closure file, and checks every path is valid. Returns every
   * store path to expose, with the label that named it.
   */
  async realise(
    key: string,
    request: NixLayerRequest,
    id: number,
    log: Logger,
    callerSignal: AbortSignal | undefined,
  ): Promise<RealisedLayer> {
    const nixStore = this.nixStore!;
    const owner = this.owner(id);
    const signals: AbortSignal[] = [];
    if (callerSignal !== undefined) signals.push(callerSignal);
    const timeout =
      this.realiseTimeoutMs === undefined ? undefined : AbortSignal.timeout(this.realiseTimeoutMs);
    if (timeout !== undefined) signals.push(timeout);
    const signal = signals.length === 0 ? undefined : AbortSignal.any(signals);
    const toRealise =
      request.closure === undefined ? request.storePaths : [...request.storePaths, request.closure];
    const labelOf = new Map(request.labelOf);
    if (toRealise.length === 0) return { paths: [], labelOf };
    log.debug({ storePaths: toRealise.length }, "realising nix layer");
    if (request.closure !== undefined) labelOf.set(request.closure, nixClosureLabel);
    const realiseOptions = signal === undefined ? { owner } : { owner, signal };
    const what = `snapshot "${key}": realising ${toRealise.length} store path(s) named by its nix labels`;
    for (let attempt = 1; ; attempt++) {
      try {
        signal?.throwIfAborted();
        await nixStore.realise(toRealise, realiseOptions);
        break;
      } catch (error) {
        // Nix reports any abort as Canceled: our own realise timeout is a deadline.
        if (timeout?.aborted === true && callerSignal?.aborted !== true) {
          throw new SnapshotterError(
            ErrorCode.DeadlineExceeded,
            `${what}: not done within the realise timeout (${this.realiseTimeoutMs} ms)`,
            { cause: error },
          );
        }
        const failure = nixError(error, what);
        if (!realiseFailureIsAboutPaths(failure.code)) throw failure;
        // Nix failed for the paths themselves: a path missing now (not substitutable, or
        // collected while Nix worked) is NotFound, named; none missing means one came back
        // while Nix worked, and one more try settles it.
        const valid = await nixStore.queryValidPaths(toRealise).catch(() => undefined);
        if (valid === undefined) throw failure;
        const missing = toRealise.find((path) => !valid.has(path));
        if (missing !== undefined) {
          throw new SnapshotterError(
            ErrorCode.NotFound,
            `snapshot "${key}": label "${labelOf.get(missing)}": store path "${missing}" could not be realised: ${failure.message}`,
            { cause: error },
          );
        }
        if (attempt >= 2) {
          throw new SnapshotterError(
            ErrorCode.FailedPrecondition,
            `${failure.message} (every path is valid now; Nix failed twice)`,
            { cause: error },
          );
        }
        log.debug({ err: error }, "realise failed, but every path is valid now: trying again");
      }
    }
    let paths = [...request.storePaths];
    if (request.closure !== undefined) {
      let lines: string[];
      try {
        lines = await nixStore.readClosureInfo(request.closure);
      } catch (error) {
        throw nixError(
          error,
          `snapshot "${key}": label "${nixClosureLabel}": reading closure ${request.closure}`,
        );
      }
      const listed = parseClosureStorePaths(lines, request.closure, this.storeDir);
      for (const path of listed) if (!labelOf.has(path)) labelOf.set(path, nixClosureLabel);
      paths = mergePaths(paths, listed);
    }
    const valid = await nixStore.queryValidPaths(paths).catch((error: unknown) => {
      throw nixError(error, `snapshot "${key}": querying store path validity`);
    });
    const missing = paths.find((path) => !valid.has(path));
    if (missing !== undefined) {
      throw new SnapshotterError(
        ErrorCode.FailedPrecondition,
        `snapshot "${key}": label "${labelOf.get(missing)}": store path "${missing}" is not valid in the Nix store`,
      );
    }
    return { paths, labelOf };
  }

  /** Removes the GC roots of snapshot `id` (no error when there are none). */
  removeRoots(id: number): Promise<void> {
    return this.nixStore === undefined
      ? Promise.resolve()
      : this.nixStore.removeRoots(this.owner(id));
  }

  /** Every store path of committed snapshot `id` and its ancestors (cached). */
  flattened(id: number): string[] {
    let paths = this.flattenedCache.get(id);
    if (paths === undefined) {
      paths = this.store.flattenedOf(id) ?? [];
      this.flattenedCache.set(id, paths);
    }
    return paths;
  }

  /** The flattened store paths of a snapshot about to be committed. */
  flatten(record: SnapshotHeader): string[] {
    const parentPaths = record.parentId === null ? [] : this.flattened(record.parentId);
    return mergePaths(parentPaths, record.hasNixPaths ? this.store.nixPathsOf(record.id) : []);
  }

  remember(id: number, flattened: string[]): void {
    this.flattenedCache.set(id, flattened);
  }

  forget(id: number): void {
    this.flattenedCache.delete(id);
  }

  /** Hard-links a layer's own store paths into its directory (one at a time per layer). */
  linkLayer(record: SnapshotHeader, key: string): Promise<void> {
    const running = this.linking.get(record.id);
    if (running !== undefined) return running;
    const promise = (async () => {
      try {
        const stats = await linkStorePaths(
          this.upperDir(record.id),
          this.store.nixPathsOf(record.id),
        );
        this.logger.debug({ key, id: record.id, ...stats }, "store paths linked into layer");
      } catch (error) {
        throw SnapshotterError.from(error, `snapshot "${key}": linking store paths`);
      } finally {
        this.linking.delete(record.id);
      }
    })();
    this.linking.set(record.id, promise);
    return promise;
  }

  /** Makes a directory or file in the layer for each of its store paths, to bind-mount onto. */
  async ensureMountpoints(record: SnapshotHeader, key: string): Promise<void> {
    await ensureMountpoints(this.upperDir(record.id), this.store.nixPathsOf(record.id)).catch(
      (error: unknown) => {
        throw SnapshotterError.from(error, `mountpoints of snapshot "${key}"`);
      },
    );
  }

  /**
   * Removes our GC roots that no snapshot and no call in flight owns (`owned`), and the hidden
   * directories of root creations and removals a kill interrupted (a staged one of an id that a
   * call in flight holds, `busy`, is still being filled).
   */
  async removeOrphanedRoots(
    owned: (id: number) => boolean,
    busy: (id: number) => boolean,
  ): Promise<void> {
    const nixStore = this.nixStore;
    if (nixStore === undefined) return;
    let owners: string[];
    try {
      owners = await nixStore.listRootOwners();
    } catch (error) {
      throw nixError(error, "cleanup: listing GC root owners");
    }
    for (const owner of owners) {
      const id = this.ownerId(owner);
      if (id === null || (id !== undefined && owned(id))) continue;
      this.logger.info({ owner }, "cleanup: removing orphaned GC roots");
      await nixStore.removeRoots(owner).catch((error: unknown) => {
        throw nixError(error, `cleanup: removing GC roots of ${owner}`);
      });
    }
    if (nixStore.listRootLeftovers === undefined || nixStore.removeRootLeftover === undefined) {
      return;
    }
    let leftovers: RootLeftover[];
    try {
      leftovers = await nixStore.listRootLeftovers();
    } catch (error) {
      throw nixError(error, "cleanup: listing interrupted GC root directories");
    }
    for (const leftover of leftovers) {
      const id = this.ownerId(leftover.owner);
      if (id === null) continue;
      // A staged directory of a call in flight is still being filled; any other was left by an
      // interrupted call (a completed add renamed or deleted its staging directory).
      if (leftover.state === "staged" && id !== undefined && busy(id)) continue;
      this.logger.info({ ...leftover }, "cleanup: removing interrupted GC root directory");
      await nixStore.removeRootLeftover(leftover.name).catch((error: unknown) => {
        throw nixError(error, `cleanup: removing GC root directory ${leftover.name}`);
      });
    }
  }
}
