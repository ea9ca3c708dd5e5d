import { describe, expect, it } from "vitest";
import { ErrorCode, SnapshotterError } from "./errors.js";
import {
  legacyNixStoreLabelPrefix,
  nixClosureLabel,
  nixLayerLabel,
  nixStorePathLabelPrefix,
  parseClosureStorePaths,
  parseNixLabels,
} from "./nix-labels.js";

const a = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-hello-2.12";
const b = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-glibc-2.37";
const closure = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-closure-info";

function expectInvalid(fn: () => unknown, mention: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(SnapshotterError.is(caught, ErrorCode.InvalidArgument)).toBe(true);
  expect((caught as Error).message).toContain(mention);
}

describe("parseNixLabels", () => {
  it("returns undefined for ordinary layers", () => {
    expect(parseNixLabels({ "containerd.io/snapshot.ref": "sha256:x" }, "/nix/store")).toBe(
      undefined,
    );
  });

  it("reads the per-path form in index order, deduplicated", () => {
    const request = parseNixLabels(
      {
        [nixLayerLabel]: "true",
        [`${nixStorePathLabelPrefix}10`]: a,
        [`${nixStorePathLabelPrefix}2`]: b,
        [`${nixStorePathLabelPrefix}3`]: a,
      },
      "/nix/store",
    );
    expect(request?.storePaths).toEqual([b, a]);
    expect(request?.closure).toBeUndefined();
    expect(request?.labelOf.get(a)).toBe(`${nixStorePathLabelPrefix}3`);
  });

  it("reads the legacy base-name form of the first Go releases", () => {
    const request = parseNixLabels(
      {
        [nixLayerLabel]: "true",
        [`${legacyNixStoreLabelPrefix}0`]: a.slice("/nix/store/".length),
        [`${nixStorePathLabelPrefix}0`]: b,
      },
      "/nix/store",
    );
    expect(request?.storePaths).toEqual([b, a]);
    expect(request?.labelOf.get(a)).toBe(`${legacyNixStoreLabelPrefix}0`);
  });

  it.each(["../etc", "..", "x", "/etc", `${"0".repeat(32)}-a/../../etc`])(
    "rejects legacy label value %j",
    (value) => {
      expectInvalid(
        () => parseNixLabels({ [`${legacyNixStoreLabelPrefix}0`]: value }, "/nix/store"),
        `${legacyNixStoreLabelPrefix}0`,
      );
    },
  );

  it("reads the closure form", () => {
    const request = parseNixLabels({ [nixClosureLabel]: closure }, "/nix/store");
    expect(request).toMatchObject({ storePaths: [], closure });
  });

  it.each(["/etc", "/nix/store/../etc", "/nix/store/x", `${a}/../../../etc`, ""])(
    "rejects store-path label value %j naming the label",
    (value) => {
      expectInvalid(
        () =>
          parseNixLabels(
            {
              [nixLayerLabel]: "true",
              [`${nixStorePathLabelPrefix}0`]: a,
              [`${nixStorePathLabelPrefix}1`]: value,
            },
            "/nix/store",
          ),
        `${nixStorePathLabelPrefix}1`,
      );
    },
  );

  it.each(["/etc", "/nix/store/../etc", "/nix/store/x"])("rejects closure label %j", (value) => {
    expectInvalid(
      () => parseNixLabels({ [nixClosureLabel]: value }, "/nix/store"),
      nixClosureLabel,
    );
  });

  it.each(["x", "-1", "01", "1.5", "", "99999999999"])("rejects index %j", (index) => {
    expectInvalid(
      () => parseNixLabels({ [`${nixStorePathLabelPrefix}${index}`]: a }, "/nix/store"),
      "index",
    );
  });

  it("rejects a nix-layer flag other than true", () => {
    expectInvalid(() => parseNixLabels({ [nixLayerLabel]: "yes" }, "/nix/store"), nixLayerLabel);
  });
});

describe("parseClosureStorePaths", () => {
  it("keeps canonical lines in order, skipping empty ones", () => {
    expect(parseClosureStorePaths([b, "", a, b], closure, "/nix/store")).toEqual([b, a]);
  });

  it.each(["/etc", "/nix/store/../etc", "/nix/store/x", ` ${a}`])(
    "rejects a closure listing %j",
    (line) => {
      expectInvalid(() => parseClosureStorePaths([a, line], closure, "/nix/store"), closure);
    },
  );
});
