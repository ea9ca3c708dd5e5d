import { describe, expect, it } from "vitest";
import { isChildUserNamespace } from "./user-namespace.js";

describe("isChildUserNamespace", () => {
  it("is false for the initial namespace", () => {
    expect(isChildUserNamespace("         0          0 4294967295\n")).toBe(false);
  });

  it("is true for a rootlesskit namespace (user's uid plus a subordinate range)", () => {
    expect(
      isChildUserNamespace("         0       1001          1\n         1     100000      65536\n"),
    ).toBe(true);
  });

  it("is true for a single-id map", () => {
    expect(isChildUserNamespace("0 1001 1\n")).toBe(true);
  });

  it("is false for an empty or malformed map (no namespace can be told)", () => {
    expect(isChildUserNamespace("")).toBe(false);
    expect(isChildUserNamespace("garbage\n")).toBe(false);
  });
});
