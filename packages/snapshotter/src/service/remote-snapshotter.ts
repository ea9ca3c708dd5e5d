import { create } from "@bufbuild/protobuf";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { type CallOptions, createClient, type Transport } from "@connectrpc/connect";
import { type Info as InfoMessage, Snapshots } from "@nix-snapshotter/api/snapshots/v1";
import type { Mount as MountMessage } from "@nix-snapshotter/api/types";
import { fromConnectError } from "@nix-snapshotter/errdefs/connect";
import { ErrorCode, SnapshotterError } from "../errors.js";
import type { Info, Mount, Snapshotter } from "../types.js";
import { infoFromMessage, kindFromMessage } from "./convert.js";

export interface RemoteSnapshotterOptions {
  /** Passed to every call (e.g. `timeoutMs`, `headers`). */
  callOptions?: CallOptions;
}

function mountFromMessage(message: MountMessage): Mount {
  return {
    type: message.type,
    source: message.source,
    ...(message.target ? { target: message.target } : {}),
    options: [...message.options],
  };
}

function infoOf(message: InfoMessage | undefined, key: string): Info {
  if (!message || kindFromMessage(message.kind) === undefined) {
    throw new SnapshotterError(
      ErrorCode.Internal,
      `server sent no valid info for snapshot "${key}"`,
    );
  }
  return infoFromMessage(message);
}

/** gRPC status -> SnapshotterError with the same code and message. */
function fromConnect(error: unknown): SnapshotterError {
  return SnapshotterError.from(fromConnectError(error));
}

async function wrap<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw fromConnect(error);
  }
}

/**
 * A Snapshotter that calls a Snapshots gRPC server (the daemon) the way containerd's proxy
 * plugin does: each method is one RPC, gRPC codes come back as SnapshotterError codes. The
 * `signal` of prepare, view and commit cancels the RPC: the server sees the cancellation and the
 * call fails with `Canceled`. Lets the conformance suite and benchmarks drive the daemon over its
 * socket. `close()` does not close the transport.
 */
export function createRemoteSnapshotter(
  transport: Transport,
  options: RemoteSnapshotterOptions = {},
): Snapshotter {
  const client = createClient(Snapshots, transport);
  const callOptions = options.callOptions ?? {};
  const snapshotter = "nix";
  /** The call options with the caller's signal (and the configured one, if any) added. */
  const withSignal = (signal: AbortSignal | undefined): CallOptions => {
    if (signal === undefined) return callOptions;
    const configured = callOptions.signal;
    return {
      ...callOptions,
      signal: configured === undefined ? signal : AbortSignal.any([configured, signal]),
    };
  };

  async function* list(filters: readonly string[] = []): AsyncIterable<Info> {
    try {
      for await (const response of client.list(
        { snapshotter, filters: [...filters] },
        callOptions,
      )) {
        for (const info of response.info) yield infoOf(info, info.name);
      }
    } catch (error) {
      throw fromConnect(error);
    }
  }

  return {
    stat: (key) =>
      wrap(async () => infoOf((await client.stat({ snapshotter, key }, callOptions)).info, key)),
    update: (info, fieldPaths = []) =>
      wrap(async () => {
        const response = await client.update(
          {
            snapshotter,
            info: {
              name: info.name,
              parent: info.parent,
              labels: { ...info.labels },
            },
            updateMask: create(FieldMaskSchema, { paths: [...fieldPaths] }),
          },
          callOptions,
        );
        return infoOf(response.info, info.name);
      }),
    usage: (key) =>
      wrap(async () => {
        const response = await client.usage({ snapshotter, key }, callOptions);
        return { size: Number(response.size), inodes: Number(response.inodes) };
      }),
    mounts: (key) =>
      wrap(async () =>
        (await client.mounts({ snapshotter, key }, callOptions)).mounts.map(mountFromMessage),
      ),
    prepare: (key, parent, prepareOptions = {}) =>
      wrap(async () =>
        (
          await client.prepare(
            { snapshotter, key, parent, labels: { ...prepareOptions.labels } },
            withSignal(prepareOptions.signal),
          )
        ).mounts.map(mountFromMessage),
      ),
    view: (key, parent, viewOptions = {}) =>
      wrap(async () =>
        (
          await client.view(
            { snapshotter, key, parent, labels: { ...viewOptions.labels } },
            withSignal(viewOptions.signal),
          )
        ).mounts.map(mountFromMessage),
      ),
    commit: (name, key, commitOptions = {}) =>
      wrap(async () => {
        await client.commit(
          { snapshotter, name, key, labels: { ...commitOptions.labels } },
          withSignal(commitOptions.signal),
        );
      }),
    remove: (key) =>
      wrap(async () => {
        await client.remove({ snapshotter, key }, callOptions);
      }),
    async walk(fn, filters) {
      for await (const info of list(filters)) await fn(info);
    },
    list,
    cleanup: () =>
      wrap(async () => {
        await client.cleanup({ snapshotter }, callOptions);
      }),
    async close() {},
  };
}
