import type { OutgoingHttpHeaders } from "node:http2";
import { promisify } from "node:util";
import { brotliDecompress, gunzip } from "node:zlib";
import { create, type DescMessage, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";

/**
 * The protocol facts of gRPC over HTTP/2 the daemon's server needs (see the gRPC project's
 * PROTOCOL-HTTP2.md): envelopes, timeouts, status trailers.
 */

/**
 * Largest request message read, in bytes, after decompression: grpc-go's default for a server
 * (4 MiB). containerd's own clients send up to 16 MiB, but nothing they send us comes near 4 MiB
 * (a snapshot's labels are bounded to 1 MiB); a larger or an inflating message is refused with
 * ResourceExhausted before it is parsed (the envelope's length is read first, and gzip or
 * brotli is inflated with zlib's `maxOutputLength` set to this bound).
 */
export const maxReceiveMessageBytes = 4 * 1024 * 1024;

/**
 * Longest status message sent, in characters (before percent-encoding). A longer one is cut:
 * trailers must fit the peer's header limits, or the client gets a reset stream (seen:
 * FRAME_SIZE_ERROR for a 1 MiB message) instead of a gRPC status.
 */
export const maxStatusMessageLength = 1024;

/** Prefix of the message of a request that protobuf cannot decode (InvalidArgument). */
export const malformedRequestPrefix = "malformed request message: ";

/** A status message cut to {@link maxStatusMessageLength} characters, percent-encoded. */
export function encodeStatusMessage(message: string): string {
  const cut =
    message.length > maxStatusMessageLength
      ? `${message.slice(0, maxStatusMessageLength)}... (${message.length} characters)`
      : message;
  return encodeURIComponent(cut);
}

/**
 * The status fields of an error, for trailers (or a trailers-only response): code, bounded
 * message, the error's metadata, and its details as `grpc-status-details-bin` (a
 * google.rpc.Status) when it has any.
 */
export function errorStatus(error: ConnectError): OutgoingHttpHeaders {
  const fields: OutgoingHttpHeaders = {};
  error.metadata.forEach((value, name) => {
    if (!name.startsWith("grpc-") && !name.startsWith(":") && name !== "content-type") {
      fields[name] = value;
    }
  });
  fields["grpc-status"] = String(error.code);
  fields["grpc-message"] = encodeStatusMessage(error.rawMessage);
  if (error.details.length > 0) {
    fields["grpc-status-details-bin"] = Buffer.from(encodeRpcStatus(error)).toString("base64");
  }
  return fields;
}

/** google.rpc.Status { code = 1; message = 2; repeated google.protobuf.Any details = 3 }. */
function encodeRpcStatus(error: ConnectError): Uint8Array {
  const writer = new BinaryWriter();
  writer.uint32((1 << 3) | 0).int32(error.code);
  writer.uint32((2 << 3) | 2).string(error.rawMessage);
  for (const detail of error.details) {
    const [typeName, value] =
      "desc" in detail
        ? [
            detail.desc.typeName,
            toBinary(detail.desc as DescMessage, create(detail.desc as DescMessage, detail.value)),
          ]
        : [detail.type, detail.value];
    writer.uint32((3 << 3) | 2).fork();
    writer.uint32((1 << 3) | 2).string(`type.googleapis.com/${typeName}`);
    writer.uint32((2 << 3) | 2).bytes(value);
    writer.join();
  }
  return writer.finish();
}

const timeoutUnitMs: Record<string, number> = {
  H: 3_600_000,
  M: 60_000,
  S: 1000,
  m: 1,
  u: 0.001,
  n: 0.000001,
};

/**
 * `grpc-timeout` in milliseconds (`undefined` when absent); a malformed value is an
 * InvalidArgument ConnectError.
 */
export function parseGrpcTimeout(value: string | undefined): number | ConnectError | undefined {
  if (value === undefined) return undefined;
  const match = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (match === null) {
    return new ConnectError(`invalid grpc-timeout: ${value.slice(0, 32)}`, Code.InvalidArgument);
  }
  return Number(match[1]) * timeoutUnitMs[match[2]!]!;
}

/** Envelope flag: the message is compressed with the call's `grpc-encoding`. */
export const flagCompressed = 1;

/** One response message in its envelope (not compressed). */
export function envelope(payload: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + payload.byteLength);
  frame[0] = 0;
  frame.writeUInt32BE(payload.byteLength, 1);
  frame.set(payload, 5);
  return frame;
}

function tooLarge(size: number | undefined): ConnectError {
  return new ConnectError(
    size === undefined
      ? `message is larger than the limit of ${maxReceiveMessageBytes} bytes after decompression`
      : `message size ${size} is larger than the limit of ${maxReceiveMessageBytes} bytes`,
    Code.ResourceExhausted,
  );
}

/**
 * Reads a unary request's body: exactly one envelope. The envelope's length is checked against
 * {@link maxReceiveMessageBytes} as soon as its 5 header bytes arrive; `refuse` is then called
 * once with the error and nothing more is kept.
 */
export class UnaryBody {
  private chunks: Buffer[] = [];
  private received = 0;
  private declared = -1;
  failed = false;

  constructor(private readonly refuse: (error: ConnectError) => void) {}

  push(chunk: Buffer): void {
    if (this.failed) return;
    this.chunks.push(chunk);
    this.received += chunk.byteLength;
    if (this.declared < 0 && this.received >= 5) {
      const head = this.chunks.length === 1 ? chunk : Buffer.concat(this.chunks);
      this.declared = head.readUInt32BE(1);
      if (this.declared > maxReceiveMessageBytes) {
        this.fail(tooLarge(this.declared));
        return;
      }
    }
    if (this.declared >= 0 && this.received > 5 + this.declared) {
      this.fail(
        new ConnectError(
          "protocol error: a unary call sent more than one message",
          Code.InvalidArgument,
        ),
      );
    }
  }

  private fail(error: ConnectError): void {
    this.failed = true;
    this.chunks = [];
    this.refuse(error);
  }

  /**
   * The message's bytes, or the error to answer; a compressed message is inflated (the only
   * case that returns a promise: the uncompressed one costs no turn of the event loop).
   */
  message(
    encoding: RequestEncoding | undefined,
  ): Uint8Array | ConnectError | Promise<Uint8Array | ConnectError> {
    if (this.declared < 0 || this.received < 5 + this.declared) {
      return new ConnectError(
        "protocol error: a unary call ended without its request message",
        Code.InvalidArgument,
      );
    }
    const whole = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    this.chunks = [];
    const payload = whole.subarray(5, 5 + this.declared);
    if ((whole[0]! & flagCompressed) === 0) return payload;
    if (encoding === undefined) {
      return new ConnectError(
        "protocol error: compressed message without grpc-encoding",
        Code.Internal,
      );
    }
    return inflate(encoding, payload);
  }
}

/** A compressed message inflated within {@link maxReceiveMessageBytes}, or the error to answer. */
async function inflate(
  encoding: RequestEncoding,
  payload: Uint8Array,
): Promise<Uint8Array | ConnectError> {
  try {
    return await inflaters[encoding](payload, { maxOutputLength: maxReceiveMessageBytes });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE")
      return tooLarge(undefined);
    return new ConnectError(
      `${malformedRequestPrefix}cannot inflate: ${(error as Error).message}`,
      Code.InvalidArgument,
    );
  }
}

/** The `grpc-encoding`s a request may use (besides identity): connect-es's server took both. */
export type RequestEncoding = "gzip" | "br";

/** `grpc-accept-encoding` as sent: what {@link RequestEncoding} lists. */
export const acceptedEncodings = "gzip,br";

type Inflate = (buffer: Uint8Array, options: { maxOutputLength: number }) => Promise<Buffer>;

const inflaters: Record<RequestEncoding, Inflate> = {
  gzip: promisify(gunzip) as Inflate,
  br: promisify(brotliDecompress) as Inflate,
};
