import { describe, expect, it } from "vitest";
import { compactOverlayOptions } from "./mount.js";

describe("compactOverlayOptions", () => {
  it("leaves short option strings alone", () => {
    const options = ["index=off", "lowerdir=/a/1/fs:/a/2/fs"];
    expect(compactOverlayOptions(options)).toEqual({ options });
  });

  it("rewrites lowerdir relative to the common parent when the options exceed a page", () => {
    const lower = Array.from({ length: 200 }, (_, index) => `/var/lib/x/snapshots/${index}/fs`);
    const options = ["workdir=/w", "upperdir=/u", `lowerdir=${lower.join(":")}`];
    const compact = compactOverlayOptions(options);
    expect(compact.cwd).toBe("/var/lib/x/snapshots");
    expect(compact.options.slice(0, 2)).toEqual(["workdir=/w", "upperdir=/u"]);
    expect(compact.options[2]).toBe(`lowerdir=${lower.map((_, i) => `${i}/fs`).join(":")}`);
    expect(compact.options.join(",").length).toBeLessThan(4096);
  });
});
