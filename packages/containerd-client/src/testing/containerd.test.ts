import { describe, expect, it } from "vitest";
import { containerdVersionOf } from "./containerd.js";

describe("containerdVersionOf", () => {
  it("reads the release of Debian's containerd version lines", () => {
    expect(
      containerdVersionOf("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1"),
    ).toBe("1.6");
    expect(
      containerdVersionOf(
        "containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6+deb13u1",
      ),
    ).toBe("1.7");
    expect(
      containerdVersionOf("containerd github.com/containerd/containerd/v2 v2.1.4 2.1.4~ds1-1"),
    ).toBe("2.1");
  });

  it("is undefined for a release the harness does not know, or no version at all", () => {
    expect(containerdVersionOf("containerd github.com/containerd/containerd 1.5.9 1.5.9")).toBe(
      undefined,
    );
    expect(containerdVersionOf("containerd: command not found")).toBe(undefined);
  });
});
