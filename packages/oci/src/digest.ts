import { createHash, type Hash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import { invalidArgument, OciError } from "./errors.js";

/** A content digest in the form `sha256:<64 lower-case hex>`. */
export type Digest = `sha256:${string}`;

const sha256Pattern = /^sha256:[a-f0-9]{64}$/;
const genericPattern = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/** True when `value` is a well-formed sha256 digest. */
export function isDigest(value: string): value is Digest {
  return sha256Pattern.test(value);
}

/**
 * Validates a digest string. Only sha256 is supported; other algorithms that are well-formed per
 * the image spec are rejected with a message naming the algorithm.
 */
export function parseDigest(value: string): Digest {
  if (isDigest(value)) return value;
  if (genericPattern.test(value) && !value.startsWith("sha256:")) {
    throw invalidArgument(`digest "${value}": unsupported algorithm (only sha256)`);
  }
  throw invalidArgument(`digest "${value}": not of the form sha256:<64 lower-case hex digits>`);
}

/** The encoded (hex) part of a digest. */
export function digestHex(digest: Digest): string {
  return digest.slice("sha256:".length);
}

/** sha256 digest of bytes or a string (UTF-8). */
export function sha256Digest(data: Uint8Array | string): Digest {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** Incremental sha256 digester that also counts bytes. */
export interface Digester {
  update(chunk: Uint8Array): void;
  readonly size: number;
  digest(): Digest;
}

export function createDigester(): Digester {
  const hash: Hash = createHash("sha256");
  let size = 0;
  let result: Digest | undefined;
  return {
    update(chunk) {
      hash.update(chunk);
      size += chunk.byteLength;
    },
    get size() {
      return size;
    },
    digest() {
      result ??= `sha256:${hash.digest("hex")}`;
      return result;
    },
  };
}

/** What a verified read checks: the digest, and the size when given. */
export interface VerifyTarget {
  digest: string;
  size?: number;
}

/** Throws DataLoss unless `data` has the expected digest and size. */
export function verifyBlob(data: Uint8Array, expected: VerifyTarget): void {
  const digest = parseDigest(expected.digest);
  if (expected.size !== undefined && data.byteLength !== expected.size) {
    throw new OciError(
      "DataLoss",
      `blob ${digest}: size ${data.byteLength} does not match expected size ${expected.size}`,
    );
  }
  const actual = sha256Digest(data);
  if (actual !== digest) {
    throw new OciError("DataLoss", `blob ${digest}: content has digest ${actual}`);
  }
}

/**
 * A pass-through stream that computes the digest while data flows and fails at the end (or as
 * soon as too many bytes arrive) when the content does not match.
 */
export function createVerifyStream(expected: VerifyTarget): Transform {
  const digest = parseDigest(expected.digest);
  const digester = createDigester();
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      digester.update(chunk);
      if (expected.size !== undefined && digester.size > expected.size) {
        callback(
          new OciError("DataLoss", `blob ${digest}: more than the expected ${expected.size} bytes`),
        );
        return;
      }
      callback(null, chunk);
    },
    flush(callback: TransformCallback) {
      if (expected.size !== undefined && digester.size !== expected.size) {
        callback(
          new OciError(
            "DataLoss",
            `blob ${digest}: size ${digester.size} does not match expected size ${expected.size}`,
          ),
        );
        return;
      }
      const actual = digester.digest();
      if (actual !== digest) {
        callback(new OciError("DataLoss", `blob ${digest}: content has digest ${actual}`));
        return;
      }
      callback();
    },
  });
}
