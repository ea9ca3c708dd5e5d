import { create } from "@bufbuild/protobuf";
import { TimestampSchema } from "@bufbuild/protobuf/wkt";
import {
  type Info as InfoMessage,
  InfoSchema,
  Kind as KindMessage,
  type UsageResponse,
  UsageResponseSchema,
} from "@nix-snapshotter/api/snapshots/v1";
import { type Mount as MountMessage, MountSchema } from "@nix-snapshotter/api/types";
import { dateFromTimestampParts, timestampParts } from "../clock.js";
import { ErrorCode, SnapshotterError } from "../errors.js";
import { type Info, Kind, type Mount, type Usage } from "../types.js";

const kindToMessage: Record<Kind, KindMessage> = {
  [Kind.View]: KindMessage.VIEW,
  [Kind.Active]: KindMessage.ACTIVE,
  [Kind.Committed]: KindMessage.COMMITTED,
};

/** Our `Info` as containerd's `snapshots.v1.Info`. */
export function infoToMessage(info: Info): InfoMessage {
  return create(InfoSchema, {
    name: info.name,
    parent: info.parent,
    kind: kindToMessage[info.kind],
    // Nanoseconds, as containerd keeps them (a plain Date gives milliseconds).
    createdAt: create(TimestampSchema, timestampParts(info.created)),
    updatedAt: create(TimestampSchema, timestampParts(info.updated)),
    labels: { ...info.labels },
  });
}

/** containerd's kind enum as ours; `UNKNOWN` (what Update requests carry) maps to `undefined`. */
export function kindFromMessage(kind: KindMessage): Kind | undefined {
  switch (kind) {
    case KindMessage.VIEW:
      return Kind.View;
    case KindMessage.ACTIVE:
      return Kind.Active;
    case KindMessage.COMMITTED:
      return Kind.Committed;
    default:
      return undefined;
  }
}

/**
 * The `info` of an Update request as our `Info`. containerd's client sends name and labels (and
 * whatever the caller had in the other fields); missing timestamps become the epoch, an unknown
 * kind becomes `active`: the snapshotter only reads the name and the fields the mask names.
 */
export function infoFromMessage(message: InfoMessage | undefined): Info {
  if (!message) {
    throw new SnapshotterError(
      ErrorCode.InvalidArgument,
      "update request carries no snapshot info",
    );
  }
  return {
    name: message.name,
    parent: message.parent,
    kind: kindFromMessage(message.kind) ?? Kind.Active,
    labels: { ...message.labels },
    created: message.createdAt ? dateFromTimestampParts(message.createdAt) : new Date(0),
    updated: message.updatedAt ? dateFromTimestampParts(message.updatedAt) : new Date(0),
  };
}

/** Our `Mount` as containerd's `types.Mount` (an absent target stays empty on the wire). */
export function mountToMessage(mount: Mount): MountMessage {
  return create(MountSchema, {
    type: mount.type,
    source: mount.source,
    target: mount.target ?? "",
    options: [...mount.options],
  });
}

export function mountsToMessages(mounts: readonly Mount[]): MountMessage[] {
  return mounts.map(mountToMessage);
}

export function usageToMessage(usage: Usage): UsageResponse {
  return create(UsageResponseSchema, {
    size: BigInt(Math.trunc(usage.size)),
    inodes: BigInt(Math.trunc(usage.inodes)),
  });
}
