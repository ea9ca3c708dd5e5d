import { create } from "@bufbuild/protobuf";
import { EmptySchema } from "@bufbuild/protobuf/wkt";
import { Code, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  ListSnapshotsResponseSchema,
  MountsResponseSchema,
  PrepareSnapshotResponseSchema,
  type Snapshots,
  StatSnapshotResponseSchema,
  UpdateSnapshotResponseSchema,
  ViewSnapshotResponseSchema,
} from "@nix-snapshotter/api/snapshots/v1";
import type { Logger } from "../logger.js";
import type { Info, Snapshotter } from "../types.js";
import { infoFromMessage, infoToMessage, mountsToMessages, usageToMessage } from "./convert.js";
import { toConnectError } from "./errors.js";

export interface SnapshotsServiceOptions {
  /**
   * A pino logger (or anything with its shape). Child loggers per call carry `rpc` and `key`;
   * errors of unexpected codes log at warn, the others at debug.
   */
  logger?: Logger;
  /** Infos per List response message (default 100, as containerd's own service). */
  listBatchSize?: number;
}

/** Codes containerd meets in normal operation (the unpacker probes with Stat, retries...). */
const expectedCodes = new Set<Code>([
  Code.NotFound,
  Code.AlreadyExists,
  Code.FailedPrecondition,
  Code.Canceled,
]);

/**
 * containerd's `containerd.services.snapshots.v1.Snapshots` over a Snapshotter: one interface call
 * per RPC (the `snapshotter` field of requests is ignored, as containerd's proxy plugins do),
 * List streamed in batches, errors as gRPC status codes.
 */
export function createSnapshotsService(
  snapshotter: Snapshotter,
  options: SnapshotsServiceOptions = {},
): ServiceImpl<typeof Snapshots> {
  const batchSize = Math.max(1, options.listBatchSize ?? 100);
  const logger = options.logger;

  async function call<T>(rpc: string, key: string, run: () => Promise<T>): Promise<T> {
    const log = logger?.child({ rpc, key });
    log?.debug({}, "call");
    try {
      return await run();
    } catch (error) {
      const connectError = toConnectError(error);
      if (log) {
        const level = expectedCodes.has(connectError.code) ? "debug" : "warn";
        log[level]({ code: Code[connectError.code], err: error }, connectError.rawMessage);
      }
      throw connectError;
    }
  }

  return {
    prepare(request) {
      return call("Prepare", request.key, async () => {
        const mounts = await snapshotter.prepare(request.key, request.parent, {
          labels: { ...request.labels },
        });
        return create(PrepareSnapshotResponseSchema, { mounts: mountsToMessages(mounts) });
      });
    },

    view(request) {
      return call("View", request.key, async () => {
        const mounts = await snapshotter.view(request.key, request.parent, {
          labels: { ...request.labels },
        });
        return create(ViewSnapshotResponseSchema, { mounts: mountsToMessages(mounts) });
      });
    },

    mounts(request) {
      return call("Mounts", request.key, async () => {
        const mounts = await snapshotter.mounts(request.key);
        return create(MountsResponseSchema, { mounts: mountsToMessages(mounts) });
      });
    },

    commit(request) {
      return call("Commit", request.key, async () => {
        await snapshotter.commit(request.name, request.key, { labels: { ...request.labels } });
        return create(EmptySchema);
      });
    },

    remove(request) {
      return call("Remove", request.key, async () => {
        await snapshotter.remove(request.key);
        return create(EmptySchema);
      });
    },

    stat(request) {
      return call("Stat", request.key, async () => {
        const info = await snapshotter.stat(request.key);
        return create(StatSnapshotResponseSchema, { info: infoToMessage(info) });
      });
    },

    update(request) {
      const name = request.info?.name ?? "";
      return call("Update", name, async () => {
        const info = await snapshotter.update(
          infoFromMessage(request.info),
          request.updateMask?.paths ?? [],
        );
        return create(UpdateSnapshotResponseSchema, { info: infoToMessage(info) });
      });
    },

    async *list(request, context: HandlerContext) {
      const log = logger?.child({ rpc: "List" });
      log?.debug({ filters: request.filters }, "call");
      let batch: Info[] = [];
      try {
        for await (const info of snapshotter.list(request.filters)) {
          context.signal.throwIfAborted();
          batch.push(info);
          if (batch.length >= batchSize) {
            yield create(ListSnapshotsResponseSchema, { info: batch.map(infoToMessage) });
            batch = [];
          }
        }
        if (batch.length > 0) {
          yield create(ListSnapshotsResponseSchema, { info: batch.map(infoToMessage) });
        }
      } catch (error) {
        const connectError = toConnectError(error);
        log?.warn({ code: Code[connectError.code], err: error }, connectError.rawMessage);
        throw connectError;
      }
    },

    usage(request) {
      return call("Usage", request.key, async () =>
        usageToMessage(await snapshotter.usage(request.key)),
      );
    },

    cleanup() {
      return call("Cleanup", "", async () => {
        await snapshotter.cleanup();
        return create(EmptySchema);
      });
    },
  };
}
