import { describe, expect, it } from "vitest";
import { encodeFields, type Field, HpackDecoder, HpackError } from "./hpack.js";

/** The examples of RFC 7541 Appendix C, and the decoder's bounds. */

const hex = (text: string) => Buffer.from(text.replace(/\s+/g, ""), "hex");

function series(tableSize: number, steps: Array<[string, Field[], number]>): void {
  const decoder = new HpackDecoder({ maxTableSize: tableSize });
  for (const [block, fields, size] of steps) {
    expect(decoder.decode(hex(block), 1 << 20)).toEqual(fields);
    expect(decoder.size).toBe(size);
  }
}

const request1: Field[] = [
  [":method", "GET"],
  [":scheme", "http"],
  [":path", "/"],
  [":authority", "www.example.com"],
];
const request2: Field[] = [...request1, ["cache-control", "no-cache"]];
const request3: Field[] = [
  [":method", "GET"],
  [":scheme", "https"],
  [":path", "/index.html"],
  [":authority", "www.example.com"],
  ["custom-key", "custom-value"],
];
const response1: Field[] = [
  [":status", "302"],
  ["cache-control", "private"],
  ["date", "Mon, 21 Oct 2013 20:13:21 GMT"],
  ["location", "https://www.example.com"],
];
const response2: Field[] = [[":status", "307"], ...response1.slice(1)];
const response3: Field[] = [
  [":status", "200"],
  ["cache-control", "private"],
  ["date", "Mon, 21 Oct 2013 20:13:22 GMT"],
  ["location", "https://www.example.com"],
  ["content-encoding", "gzip"],
  ["set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"],
];

describe("HPACK decoding (RFC 7541 Appendix C)", () => {
  it("C.2: each kind of representation", () => {
    series(4096, [
      [
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        [["custom-key", "custom-header"]],
        55,
      ],
    ]);
    series(4096, [["040c 2f73 616d 706c 652f 7061 7468", [[":path", "/sample/path"]], 0]]);
    series(4096, [["1008 7061 7373 776f 7264 0673 6563 7265 74", [["password", "secret"]], 0]]);
    series(4096, [["82", [[":method", "GET"]], 0]]);
  });

  it("C.3: requests without Huffman, sharing the dynamic table", () => {
    series(4096, [
      ["8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d", request1, 57],
      ["8286 84be 5808 6e6f 2d63 6163 6865", request2, 110],
      ["8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65", request3, 164],
    ]);
  });

  it("C.4: the same requests with Huffman", () => {
    series(4096, [
      ["8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff", request1, 57],
      ["8286 84be 5886 a8eb 1064 9cbf", request2, 110],
      ["8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf", request3, 164],
    ]);
  });

  it("C.5: responses with a 256-octet table (evictions)", () => {
    series(256, [
      [
        `4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
         6c65 2e63 6f6d`,
        response1,
        222,
      ],
      ["4803 3330 37c1 c0bf", response2, 222],
      [
        `88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
         3d31`,
        response3,
        215,
      ],
    ]);
  });

  it("C.6: the same responses with Huffman", () => {
    series(256, [
      [
        `4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3`,
        response1,
        222,
      ],
      ["4883 640e ffc1 c0bf", response2, 222],
      [
        `88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
         9587 3160 65c0 03ed 4ee5 b106 3d50 07`,
        response3,
        215,
      ],
    ]);
  });
});

describe("HPACK decoding refuses hostile blocks", () => {
  const fails = (block: Buffer, message: RegExp, tableSize = 4096) => {
    const decoder = new HpackDecoder({ maxTableSize: tableSize });
    expect(() => decoder.decode(block, 1 << 20)).toThrow(HpackError);
    expect(() => new HpackDecoder({ maxTableSize: tableSize }).decode(block, 1 << 20)).toThrow(
      message,
    );
  };

  it("index 0 and indexes beyond both tables", () => {
    fails(Buffer.from([0x80]), /index 0/);
    fails(Buffer.from([0xbe]), /beyond the tables/); // 62: the dynamic table is empty
    fails(Buffer.from([0xff, 0x80, 0x01]), /beyond the tables/);
  });

  it("integers that never end or overflow the bound", () => {
    fails(Buffer.from([0xff, 0xff, 0xff]), /truncated integer/);
    fails(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]), /integer too large/);
  });

  it("strings longer than the block, bad Huffman padding, EOS", () => {
    // Literal without indexing, new name of 10 octets declared, 2 present.
    fails(Buffer.from([0x00, 0x0a, 0x61, 0x62]), /longer than its block/);
    // 'a' is 00011 (5 bits): padding of three zero bits is not a prefix of EOS.
    fails(Buffer.from([0x00, 0x81, 0x18, 0x00]), /padding/);
    // 'a' then eleven one bits: more than 7 bits of padding.
    fails(Buffer.from([0x00, 0x82, 0x1f, 0xff, 0x00]), /padding/);
    // EOS (30 ones) inside the string.
    fails(Buffer.from([0x00, 0x84, 0xff, 0xff, 0xff, 0xff, 0x00]), /EOS/);
  });

  it("table size updates beyond our setting or after a field", () => {
    fails(Buffer.from([0x3f, 0xe2, 0x1f]), /table size 4097 beyond 4096/); // 31 + 4066
    fails(Buffer.from([0x82, 0x20]), /after a field/);
    const decoder = new HpackDecoder({ maxTableSize: 4096 });
    decoder.decode(hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"), 1e6);
    expect(decoder.size).toBe(55);
    // Size 0 then back to 4096: the table is emptied.
    expect(decoder.decode(Buffer.from([0x20, 0x3f, 0xe1, 0x1f, 0x82]), 1e6)).toEqual([
      [":method", "GET"],
    ]);
    expect(decoder.size).toBe(0);
  });

  it("a list beyond the bound is decoded (the table stays in step) but not returned", () => {
    const decoder = new HpackDecoder({ maxTableSize: 4096 });
    const block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
    expect(decoder.decode(block, 40)).toBeUndefined();
    expect(decoder.entries).toEqual([["custom-key", "custom-header"]]);
    expect(decoder.decode(Buffer.from([0xbe]), 1e6)).toEqual([["custom-key", "custom-header"]]);
  });

  it("an entry larger than the table empties it", () => {
    const decoder = new HpackDecoder({ maxTableSize: 64 });
    decoder.decode(Buffer.from([0x40, 0x01, 0x61, 0x01, 0x62]), 1e6); // a: b (34)
    expect(decoder.size).toBe(34);
    const long = Buffer.concat([Buffer.from([0x40, 0x01, 0x63, 0x28]), Buffer.alloc(40, 0x78)]);
    expect(decoder.decode(long, 1e6)).toEqual([["c", "x".repeat(40)]]);
    expect(decoder.entries).toEqual([]);
  });
});

describe("HPACK encoding of answers", () => {
  it("round-trips through the decoder with static indexes and literals, no table change", () => {
    const fields: Field[] = [
      [":status", "200"],
      ["content-type", "application/grpc"],
      ["grpc-accept-encoding", "gzip,br"],
      ["grpc-message", "x".repeat(300)],
    ];
    const block = encodeFields(fields);
    expect(block[0]).toBe(0x88); // :status 200, static index 8
    expect(block[1]).toBe(0x0f); // content-type: literal without indexing, name index 31
    const decoder = new HpackDecoder({ maxTableSize: 4096 });
    expect(decoder.decode(block, 1e6)).toEqual(fields);
    expect(decoder.size).toBe(0);
  });
});
