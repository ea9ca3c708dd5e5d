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
import { toConnectError } from "@nix-snapshotter/errdefs/connect";
import type { Logger } from "@nix-snapshotter/nix-store";
import type { Info, Snapshotter } from "../types.js";
import {
  encodedInfo,
  infoFromMessage,
  infoToMessage,
  mountsToMessages,
  usageToMessage,
  withEncodedInfos,
} from "./convert.js";
import {
  checkLabelLimits,
  defaultLabelLimits,
  type LabelLimits,
  labelsAfterUpdate,
} from "./label-limits.js";

/**
 * Bytes of Infos per List response message (default): a quarter of grpc-go's 4 MiB default and of
 * what containerd's proxy client accepts (16 MiB), whatever the snapshots' labels.
 */
export const maxListMessageBytes = 1024 * 1024;

export interface SnapshotsServiceOptions {
  /**
   * A pino logger (or anything with its shape). Child loggers per call carry `rpc` and `key`;
   * errors of unexpected codes log at warn, the others at debug.
   */
  logger?: Logger;
  /** Infos per List response message (default 100, as containerd's own service). */
  listBatchSize?: number;
  /** Bytes of Infos per List response message (default {@link maxListMessageBytes}). */
  listMessageBytes?: number;
  /** Bounds on a snapshot's labels (default {@link defaultLabelLimits}). */
  labelLimits?: Partial<LabelLimits>;
}

/** Codes containerd meets in normal operation (the unpacker probes with Stat, retries...). */
const expectedCodes = new Set<Code>([
  Code.NotFound,
  Code.AlreadyExists,
  Code.FailedPrecondition,
  Code.Canceled,
]);

/** Request content types whose responses are protobuf's binary encoding (gRPC, gRPC-web, Connect). */
const binaryContentType =
  /^application\/(?:grpc(?:-web)?(?:\+proto)?|connect\+proto|proto)\s*(?:;|$)/i;

/**
 * The response goes out in protobuf's binary encoding, so Infos may travel pre-encoded (see
 * `encodedInfo`); not for JSON, nor for a direct call without request headers.
 */
function binaryResponse(context: Pick<HandlerContext, "requestHeader"> | undefined): boolean {
  return binaryContentType.test(context?.requestHeader?.get("content-type") ?? "");
}

const statInfoField = StatSnapshotResponseSchema.field.info.number;
const listInfoField = ListSnapshotsResponseSchema.field.info.number;

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
  const messageBytes = Math.max(1, options.listMessageBytes ?? maxListMessageBytes);
  const limits: LabelLimits = { ...defaultLabelLimits, ...options.labelLimits };
  const logger = options.logger;
  const checkLabels = (labels: Readonly<Record<string, string>>, key: string) =>
    checkLabelLimits(
      labels,
      `snapshot ${JSON.stringify(key.length > 200 ? `${key.slice(0, 200)}...` : key)}`,
      limits,
    );

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
    prepare(request, context) {
      return call("Prepare", request.key, async () => {
        checkLabels(request.labels, request.key);
        const mounts = await snapshotter.prepare(request.key, request.parent, {
          labels: { ...request.labels },
          signal: context.signal,
        });
        return create(PrepareSnapshotResponseSchema, { mounts: mountsToMessages(mounts) });
      });
    },

    view(request, context) {
      return call("View", request.key, async () => {
        checkLabels(request.labels, request.key);
        const mounts = await snapshotter.view(request.key, request.parent, {
          labels: { ...request.labels },
          signal: context.signal,
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

    commit(request, context) {
      return call("Commit", request.key, async () => {
        checkLabels(request.labels, request.name);
        await snapshotter.commit(request.name, request.key, {
          labels: { ...request.labels },
          signal: context.signal,
        });
        return create(EmptySchema);
      });
    },

    remove(request) {
      return call("Remove", request.key, async () => {
        await snapshotter.remove(request.key);
        return create(EmptySchema);
      });
    },

    stat(request, context) {
      return call("Stat", request.key, async () => {
        const info = await snapshotter.stat(request.key);
        if (binaryResponse(context)) {
          return withEncodedInfos(create(StatSnapshotResponseSchema), statInfoField, [
            encodedInfo(info),
          ]);
        }
        return create(StatSnapshotResponseSchema, { info: infoToMessage(info) });
      });
    },

    update(request) {
      const name = request.info?.name ?? "";
      return call("Update", name, async () => {
        const paths = request.updateMask?.paths ?? [];
        const requested = request.info?.labels ?? {};
        checkLabels(requested, name);
        // A per-key update adds to the labels already there: bound the result. (Two such
        // Updates racing can each pass on the labels before the other: the overshoot is at most
        // one label per concurrent call.)
        if (paths.some((path) => path.startsWith("labels."))) {
          const current = (await snapshotter.stat(name)).labels;
          checkLabels(labelsAfterUpdate(current, requested, paths), name);
        }
        const info = await snapshotter.update(infoFromMessage(request.info), paths);
        return create(UpdateSnapshotResponseSchema, { info: infoToMessage(info) });
      });
    },

    async *list(request, context: HandlerContext) {
      const log = logger?.child({ rpc: "List" });
      log?.debug({ filters: request.filters }, "call");
      // Binary responses carry each Info's encoding, kept while its snapshot does not change.
      const binary = binaryResponse(context);
      const message = (infos: Info[], framed: Uint8Array[]) =>
        binary
          ? withEncodedInfos(create(ListSnapshotsResponseSchema), listInfoField, framed)
          : create(ListSnapshotsResponseSchema, { info: infos.map(infoToMessage) });
      let batch: Info[] = [];
      let framed: Uint8Array[] = [];
      let bytes = 0;
      try {
        for await (const info of snapshotter.list(request.filters)) {
          context.signal.throwIfAborted();
          // Sent by count and by size (the Info's encoding and its field tag), so that no
          // message nears containerd's receive limit.
          const encoded = encodedInfo(info);
          const size = 1 + encoded.byteLength;
          if (batch.length > 0 && bytes + size > messageBytes) {
            yield message(batch, framed);
            batch = [];
            framed = [];
            bytes = 0;
          }
          batch.push(info);
          framed.push(encoded);
          bytes += size;
          if (batch.length >= batchSize) {
            yield message(batch, framed);
            batch = [];
            framed = [];
            bytes = 0;
          }
        }
        if (batch.length > 0) {
          yield message(batch, framed);
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
