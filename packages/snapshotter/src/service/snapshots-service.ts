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
  encodedMount,
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
  /**
   * Every answer is encoded in protobuf's binary format (a server speaking nothing else, as the
   * daemon's gRPC server): Infos travel pre-encoded without the request's content type being
   * read (building a call's request headers is a cost of its own), and so do the Mounts of
   * Prepare, View and Mounts. Never with a router that also serves JSON: its clients would get
   * answers without their Infos and Mounts.
   */
  binaryResponses?: boolean;
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
const prepareMountsField = PrepareSnapshotResponseSchema.field.mounts.number;
const viewMountsField = ViewSnapshotResponseSchema.field.mounts.number;
const mountsMountsField = MountsResponseSchema.field.mounts.number;
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
  const binary = (context: Pick<HandlerContext, "requestHeader"> | undefined): boolean =>
    options.binaryResponses === true || binaryResponse(context);
  const checkLabels = (labels: Readonly<Record<string, string>>, key: string) =>
    checkLabelLimits(
      labels,
      `snapshot ${JSON.stringify(key.length > 200 ? `${key.slice(0, 200)}...` : key)}`,
      limits,
    );

  /** pino's level check where the logger has one; any other logger is told everything. */
  const debugEnabled = (log: Logger): boolean =>
    (log as Logger & { isLevelEnabled?(level: string): boolean }).isLevelEnabled?.("debug") ?? true;

  // A call's child logger (`rpc`, `key`) is made only when something is logged through it:
  // pino serialises a child's bindings when it is made, a cost on every call otherwise.
  function begin(rpc: string, key: string): void {
    if (logger !== undefined && debugEnabled(logger)) logger.child({ rpc, key }).debug({}, "call");
  }

  /** The error as the call answers it, logged (expected codes at debug, others at warn). */
  function failed(rpc: string, key: string, error: unknown): Error {
    const connectError = toConnectError(error);
    if (logger !== undefined) {
      const expected = expectedCodes.has(connectError.code);
      if (!expected || debugEnabled(logger)) {
        logger
          .child({ rpc, key })
          [expected ? "debug" : "warn"](
            { code: Code[connectError.code], err: error },
            connectError.rawMessage,
          );
      }
    }
    return connectError;
  }

  // Each method is one async function (no wrapper and closure per call): the request path's
  // CPU is what a cycle of calls at concurrency 1 waits on.
  return {
    async prepare(request, context) {
      begin("Prepare", request.key);
      try {
        checkLabels(request.labels, request.key);
        const mounts = await snapshotter.prepare(request.key, request.parent, {
          labels: { ...request.labels },
          signal: context.signal,
        });
        if (options.binaryResponses === true) {
          return withEncodedInfos(
            create(PrepareSnapshotResponseSchema),
            prepareMountsField,
            mounts.map(encodedMount),
          );
        }
        return create(PrepareSnapshotResponseSchema, { mounts: mountsToMessages(mounts) });
      } catch (error) {
        throw failed("Prepare", request.key, error);
      }
    },

    async view(request, context) {
      begin("View", request.key);
      try {
        checkLabels(request.labels, request.key);
        const mounts = await snapshotter.view(request.key, request.parent, {
          labels: { ...request.labels },
          signal: context.signal,
        });
        if (options.binaryResponses === true) {
          return withEncodedInfos(
            create(ViewSnapshotResponseSchema),
            viewMountsField,
            mounts.map(encodedMount),
          );
        }
        return create(ViewSnapshotResponseSchema, { mounts: mountsToMessages(mounts) });
      } catch (error) {
        throw failed("View", request.key, error);
      }
    },

    async mounts(request) {
      begin("Mounts", request.key);
      try {
        const mounts = await snapshotter.mounts(request.key);
        if (options.binaryResponses === true) {
          return withEncodedInfos(
            create(MountsResponseSchema),
            mountsMountsField,
            mounts.map(encodedMount),
          );
        }
        return create(MountsResponseSchema, { mounts: mountsToMessages(mounts) });
      } catch (error) {
        throw failed("Mounts", request.key, error);
      }
    },

    async commit(request, context) {
      begin("Commit", request.key);
      try {
        checkLabels(request.labels, request.name);
        await snapshotter.commit(request.name, request.key, {
          labels: { ...request.labels },
          signal: context.signal,
        });
        return create(EmptySchema);
      } catch (error) {
        throw failed("Commit", request.key, error);
      }
    },

    async remove(request) {
      begin("Remove", request.key);
      try {
        await snapshotter.remove(request.key);
        return create(EmptySchema);
      } catch (error) {
        throw failed("Remove", request.key, error);
      }
    },

    async stat(request, context) {
      begin("Stat", request.key);
      try {
        const info = await snapshotter.stat(request.key);
        if (binary(context)) {
          return withEncodedInfos(create(StatSnapshotResponseSchema), statInfoField, [
            encodedInfo(info),
          ]);
        }
        return create(StatSnapshotResponseSchema, { info: infoToMessage(info) });
      } catch (error) {
        throw failed("Stat", request.key, error);
      }
    },

    async update(request) {
      const name = request.info?.name ?? "";
      begin("Update", name);
      try {
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
      } catch (error) {
        throw failed("Update", name, error);
      }
    },

    async *list(request, context: HandlerContext) {
      const log = logger?.child({ rpc: "List" });
      log?.debug({ filters: request.filters }, "call");
      // Binary responses carry each Info's encoding, kept while its snapshot does not change.
      const binaryAnswers = binary(context);
      const message = (infos: Info[], framed: Uint8Array[]) =>
        binaryAnswers
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

    async usage(request) {
      begin("Usage", request.key);
      try {
        return usageToMessage(await snapshotter.usage(request.key));
      } catch (error) {
        throw failed("Usage", request.key, error);
      }
    },

    async cleanup() {
      begin("Cleanup", "");
      try {
        await snapshotter.cleanup();
        return create(EmptySchema);
      } catch (error) {
        throw failed("Cleanup", "", error);
      }
    },
  };
}
