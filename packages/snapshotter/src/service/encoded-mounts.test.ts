import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient, createRouterTransport } from "@connectrpc/connect";
import {
  MountsResponseSchema,
  PrepareSnapshotResponseSchema,
  Snapshots,
} from "@nix-snapshotter/api/snapshots/v1";
import { describe, expect, it } from "vitest";
import type { Mount, Snapshotter } from "../types.js";
import { encodedMount, mountsToMessages, withEncodedInfos } from "./convert.js";
import { createSnapshotsService } from "./snapshots-service.js";

/** What protobuf-es writes for a Mounts answer holding `mounts`. */
function reference(mounts: Mount[]): Uint8Array {
  return toBinary(
    MountsResponseSchema,
    create(MountsResponseSchema, { mounts: mountsToMessages(mounts) }),
  );
}

/** The same answer with hand-encoded Mounts. */
function handEncoded(mounts: Mount[]): Uint8Array {
  return toBinary(
    MountsResponseSchema,
    withEncodedInfos(create(MountsResponseSchema), 1, mounts.map(encodedMount)),
  );
}

const long = (length: number, unit = "a") => unit.repeat(length);

const cases: Array<[string, Mount[]]> = [
  ["no mount", []],
  ["a bind mount", [{ type: "bind", source: "/snapshots/1/fs", options: ["rbind", "rw"] }]],
  ["everything empty", [{ type: "", source: "", target: "", options: [] }]],
  ["empty options are still written", [{ type: "bind", source: "/s", options: ["", "ro", ""] }]],
  [
    "a target and an overlay's long option",
    [
      {
        type: "overlay",
        source: "overlay",
        target: "/nix/store",
        options: [`lowerdir=${Array.from({ length: 300 }, (_, i) => `/l/${i}`).join(":")}`],
      },
    ],
  ],
  [
    "unicode: accents, CJK, astral, a lone surrogate",
    [
      {
        type: "bïnd",
        source: "/snapshots/名前/😀",
        target: "/t\u{10ffff}",
        options: ["\ud800", "x\udc00y", "ø"],
      },
    ],
  ],
  [
    "lengths on each varint boundary",
    [127, 128, 16_383, 16_384, 2_097_151, 2_097_152].map((length) => ({
      type: long(length),
      source: long(length, "é").slice(0, length),
      options: [long(length, "€").slice(0, length)],
    })),
  ],
  [
    "many mounts and options",
    Array.from({ length: 200 }, (_, i) => ({
      type: "bind",
      source: `/nix/store/${i}-p`,
      target: i % 2 === 0 ? `/nix/store/${i}-p` : undefined,
      options: Array.from({ length: i % 7 }, (_, j) => `o${j}`),
    })),
  ],
];

describe("encodedMount", () => {
  for (const [name, mounts] of cases) {
    it(`writes protobuf-es's bytes: ${name}`, () => {
      const expected = reference(mounts);
      const actual = handEncoded(mounts);
      expect(Buffer.from(actual).equals(Buffer.from(expected))).toBe(true);
      // And they read back as the same Mounts.
      const decoded = fromBinary(MountsResponseSchema, actual);
      expect(decoded.mounts.map((m) => [m.type, m.source, m.target, m.options])).toEqual(
        fromBinary(MountsResponseSchema, expected).mounts.map((m) => [
          m.type,
          m.source,
          m.target,
          m.options,
        ]),
      );
    });
  }

  it("binaryResponses: Prepare and Mounts answer the same Mounts through a binary client", async () => {
    const mounts: Mount[] = [
      { type: "bind", source: "/snapshots/a/fs", options: ["rbind", "rw"] },
      { type: "bind", source: "/nix/store/x", target: "/nix/store/x", options: ["ro", "rbind"] },
    ];
    const snapshotter = {
      prepare: async () => mounts,
      mounts: async () => mounts,
    } as unknown as Snapshotter;
    const answers = [];
    for (const binaryResponses of [false, true]) {
      const client = createClient(
        Snapshots,
        createRouterTransport((router) => {
          router.service(Snapshots, createSnapshotsService(snapshotter, { binaryResponses }));
        }),
      );
      const prepared = await client.prepare({ key: "a" });
      const listed = await client.mounts({ key: "a" });
      answers.push([
        toBinary(PrepareSnapshotResponseSchema, prepared),
        toBinary(MountsResponseSchema, listed),
      ]);
      expect(listed.mounts.map((m) => [m.type, m.source, m.target, m.options])).toEqual([
        ["bind", "/snapshots/a/fs", "", ["rbind", "rw"]],
        ["bind", "/nix/store/x", "/nix/store/x", ["ro", "rbind"]],
      ]);
    }
    expect(answers[1]).toEqual(answers[0]);
  });
});
