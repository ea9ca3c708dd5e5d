import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
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

/**
 * Our `Info` as containerd's `snapshots.v1.Info`. A frozen label map (the metadata store's
 * shared ones) goes into the message as it is: nothing writes to a message after it is built.
 */
export function infoToMessage(info: Info): InfoMessage {
  return create(InfoSchema, {
    name: info.name,
    parent: info.parent,
    kind: kindToMessage[info.kind],
    // Nanoseconds, as containerd keeps them (a plain Date gives milliseconds).
    createdAt: create(TimestampSchema, timestampParts(info.created)),
    updatedAt: create(TimestampSchema, timestampParts(info.updated)),
    labels: Object.isFrozen(info.labels) ? info.labels : { ...info.labels },
  });
}

/** An Info's protobuf encoding, length-prefixed (a field's value), and the fields it encodes. */
interface EncodedInfo {
  readonly name: string;
  readonly parent: string;
  readonly kind: Kind;
  readonly created: string;
  readonly updated: string;
  readonly framed: Uint8Array;
}

/**
 * Encoded Infos by their frozen label map. The metadata store hands out one frozen map per
 * snapshot and makes a new one on every write of that snapshot (its labels cache drops the entry),
 * so a map seen again belongs to a snapshot unchanged since; the other fields are compared too.
 * Weak: an entry goes with the map once the store has dropped it.
 */
const encodedInfos = new WeakMap<object, EncodedInfo>();

function stamp(date: Date): string {
  const { seconds, nanos } = timestampParts(date);
  return `${seconds}.${nanos}`;
}

/**
 * `info` encoded as containerd's `snapshots.v1.Info`, with its length in front (ready to stand
 * as the value of a length-delimited field). Kept while `info.labels` is a frozen map whose
 * snapshot's fields stay the same: a Walk of snapshots that did not change encodes nothing.
 */
export function encodedInfo(info: Info): Uint8Array {
  const labels = info.labels;
  const shared = Object.isFrozen(labels);
  const created = stamp(info.created);
  const updated = stamp(info.updated);
  if (shared) {
    const hit = encodedInfos.get(labels);
    if (
      hit !== undefined &&
      hit.name === info.name &&
      hit.parent === info.parent &&
      hit.kind === info.kind &&
      hit.created === created &&
      hit.updated === updated
    ) {
      return hit.framed;
    }
  }
  const framed = new BinaryWriter().bytes(toBinary(InfoSchema, infoToMessage(info))).finish();
  if (shared) {
    encodedInfos.set(labels, {
      name: info.name,
      parent: info.parent,
      kind: info.kind,
      created,
      updated,
      framed,
    });
  }
  return framed;
}

/**
 * Messages already encoded and length-prefixed (Infos of {@link encodedInfo}, Mounts of
 * {@link encodedMount}) as unknown fields number `field` of a response message: protobuf-es
 * writes them as they are, so the message encodes as if its repeated (or singular) message
 * field `field` held them. Binary encoding only: the JSON codec drops unknown fields.
 */
export function withEncodedInfos<T extends { $unknown?: unknown }>(
  message: T,
  field: number,
  framed: readonly Uint8Array[],
): T {
  message.$unknown = framed.map((data) => ({
    no: field,
    wireType: WireType.LengthDelimited,
    data,
  }));
  return message;
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

/** Bytes of `value` as a protobuf varint (a non-negative integer below 2^32). */
function varintSize(value: number): number {
  if (value < 0x80) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x200000) return 3;
  if (value < 0x10000000) return 4;
  return 5;
}

function writeVarint(buffer: Buffer, offset: number, value: number): number {
  let rest = value;
  let at = offset;
  while (rest >= 0x80) {
    buffer[at++] = (rest & 0x7f) | 0x80;
    rest = Math.floor(rest / 128);
  }
  buffer[at++] = rest;
  return at;
}

/** A length-delimited field's size: tag (fields 1 to 15: one byte), length, UTF-8 bytes. */
function stringFieldSize(bytes: number): number {
  return 1 + varintSize(bytes) + bytes;
}

function writeStringField(
  buffer: Buffer,
  offset: number,
  tag: number,
  value: string,
  bytes: number,
): number {
  buffer[offset] = tag;
  const at = writeVarint(buffer, offset + 1, bytes);
  return at + buffer.write(value, at, bytes, "utf8");
}

// Tags of containerd.types.Mount's fields (wire type 2, length-delimited).
const typeTag = (1 << 3) | WireType.LengthDelimited;
const sourceTag = (2 << 3) | WireType.LengthDelimited;
const targetTag = (3 << 3) | WireType.LengthDelimited;
const optionsTag = (4 << 3) | WireType.LengthDelimited;

/**
 * `mount` encoded as containerd's `types.Mount`, with its length in front (ready to stand as the
 * value of a length-delimited field): the bytes protobuf-es writes for {@link mountToMessage}'s
 * message (fields in number order, empty strings left out, every option written), without the
 * message objects and the per-string encoder calls.
 */
export function encodedMount(mount: Mount): Uint8Array {
  const { type, source, options } = mount;
  const target = mount.target ?? "";
  const typeBytes = Buffer.byteLength(type, "utf8");
  const sourceBytes = Buffer.byteLength(source, "utf8");
  const targetBytes = Buffer.byteLength(target, "utf8");
  let size =
    (typeBytes > 0 ? stringFieldSize(typeBytes) : 0) +
    (sourceBytes > 0 ? stringFieldSize(sourceBytes) : 0) +
    (targetBytes > 0 ? stringFieldSize(targetBytes) : 0);
  const optionBytes: number[] = [];
  for (const option of options) {
    const bytes = Buffer.byteLength(option, "utf8");
    optionBytes.push(bytes);
    size += stringFieldSize(bytes);
  }
  const buffer = Buffer.allocUnsafe(varintSize(size) + size);
  let at = writeVarint(buffer, 0, size);
  if (typeBytes > 0) at = writeStringField(buffer, at, typeTag, type, typeBytes);
  if (sourceBytes > 0) at = writeStringField(buffer, at, sourceTag, source, sourceBytes);
  if (targetBytes > 0) at = writeStringField(buffer, at, targetTag, target, targetBytes);
  for (let index = 0; index < options.length; index++) {
    at = writeStringField(buffer, at, optionsTag, options[index]!, optionBytes[index]!);
  }
  return buffer;
}

export function usageToMessage(usage: Usage): UsageResponse {
  return create(UsageResponseSchema, {
    size: BigInt(Math.trunc(usage.size)),
    inodes: BigInt(Math.trunc(usage.inodes)),
  });
}
