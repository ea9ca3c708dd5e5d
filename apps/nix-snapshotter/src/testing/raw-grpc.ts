import { connect as connectHttp2, constants } from "node:http2";
import { connect } from "node:net";

/**
 * gRPC calls in raw HTTP/2 frames for the server's tests (not part of `nix-snapshotter/testing`):
 * nothing on the client side cleans the request up.
 */

export interface RawResult {
  /** HTTP status of the response headers. */
  httpStatus?: number;
  status?: string;
  message?: string;
  /** Response headers and trailers as received. */
  fields: Record<string, unknown>;
  /** RST_STREAM code when the stream was reset without a gRPC status. */
  reset?: number;
  /** Envelopes received (payloads). */
  messages: Buffer[];
}

export interface RawCallOptions {
  headers?: Record<string, string>;
  /** Called with the open stream once the request is sent (to cancel it, pause it...). */
  onRequest?: (stream: ReturnType<ReturnType<typeof connectHttp2>["request"]>) => void;
}

/** One gRPC call in raw HTTP/2 on the unix socket `address`. */
export function rawCall(
  address: string,
  path: string,
  envelope: Buffer,
  options: RawCallOptions = {},
): Promise<RawResult> {
  return new Promise((resolve) => {
    const session = connectHttp2("http://localhost", { createConnection: () => connect(address) });
    session.on("error", () => {});
    const stream = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      ...options.headers,
    });
    const result: RawResult = { fields: {}, messages: [] };
    let pending = Buffer.alloc(0);
    const take = (fields: Record<string, unknown>) => {
      Object.assign(result.fields, fields);
      if (fields[":status"] !== undefined) result.httpStatus = Number(fields[":status"]);
      if (fields["grpc-status"] !== undefined) result.status = String(fields["grpc-status"]);
      if (fields["grpc-message"] !== undefined)
        result.message = decodeURIComponent(String(fields["grpc-message"]));
    };
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      session.destroy();
      resolve(result);
    };
    stream.on("response", (fields) => {
      take(fields);
      // A trailers-only answer carries its status in the response headers.
      if (result.status !== undefined) finish();
    });
    stream.on("trailers", (fields) => {
      take(fields);
      // The status is final: the client need not finish sending a body the server refused.
      finish();
    });
    stream.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.byteLength >= 5 && pending.byteLength >= 5 + pending.readUInt32BE(1)) {
        const length = pending.readUInt32BE(1);
        result.messages.push(pending.subarray(5, 5 + length));
        pending = pending.subarray(5 + length);
      }
    });
    stream.on("error", () => {});
    stream.on("close", () => {
      if (stream.rstCode !== constants.NGHTTP2_NO_ERROR && result.status === undefined)
        result.reset = stream.rstCode;
      finish();
    });
    stream.end(envelope);
    options.onRequest?.(stream);
  });
}

/** A gRPC envelope: flags (1 = compressed), big-endian length, payload. */
export function envelope(payload: Uint8Array, compressed = false): Buffer {
  const header = Buffer.alloc(5);
  header[0] = compressed ? 1 : 0;
  header.writeUInt32BE(payload.byteLength, 1);
  return Buffer.concat([header, payload]);
}
