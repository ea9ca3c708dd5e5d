import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, expect, it } from "vitest";
import {
  createDigester,
  createVerifyStream,
  parseDigest,
  sha256Digest,
  verifyBlob,
} from "./digest.js";

const helloDigest = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

describe("digests", () => {
  it("computes sha256 of bytes and of streamed chunks alike", () => {
    expect(sha256Digest("hello")).toBe(helloDigest);
    const digester = createDigester();
    digester.update(Buffer.from("he"));
    digester.update(Buffer.from("llo"));
    expect(digester.digest()).toBe(helloDigest);
    expect(digester.size).toBe(5);
  });

  it("parses only sha256 digests", () => {
    expect(parseDigest(helloDigest)).toBe(helloDigest);
    expect(() => parseDigest("sha512:abcd")).toThrow(/unsupported algorithm/);
    expect(() => parseDigest(helloDigest.toUpperCase())).toThrow(/not of the form/);
    expect(() => parseDigest(`${helloDigest}0`)).toThrow(/not of the form/);
  });

  it("verifies blobs by digest and size", () => {
    expect(() => verifyBlob(Buffer.from("hello"), { digest: helloDigest, size: 5 })).not.toThrow();
    expect(() => verifyBlob(Buffer.from("hellO"), { digest: helloDigest })).toThrow(
      /content has digest/,
    );
    expect(() => verifyBlob(Buffer.from("hello"), { digest: helloDigest, size: 6 })).toThrow(
      /size 5/,
    );
  });

  it("verifies streams while they flow", async () => {
    const chunks: Buffer[] = [];
    await pipeline(
      Readable.from([Buffer.from("hel"), Buffer.from("lo")]),
      createVerifyStream({ digest: helloDigest, size: 5 }),
      async (source: AsyncIterable<Buffer>) => {
        for await (const chunk of source) chunks.push(chunk);
      },
    );
    expect(Buffer.concat(chunks).toString()).toBe("hello");
    await expect(
      pipeline(
        Readable.from([Buffer.from("hellx")]),
        createVerifyStream({ digest: helloDigest }),
        async (source: AsyncIterable<Buffer>) => {
          for await (const _ of source) {
          }
        },
      ),
    ).rejects.toMatchObject({ code: "DataLoss" });
    await expect(
      pipeline(
        Readable.from([Buffer.from("hello!")]),
        createVerifyStream({ digest: helloDigest, size: 5 }),
        async (source: AsyncIterable<Buffer>) => {
          for await (const _ of source) {
          }
        },
      ),
    ).rejects.toThrow(/more than the expected 5 bytes/);
  });
});
