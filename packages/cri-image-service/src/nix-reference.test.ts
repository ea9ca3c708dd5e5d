import { describe, expect, it } from "vitest";
import { ImageServiceError } from "./errors.js";
import { isNixReference, parseNixImageReference } from "./nix-reference.js";
import { hash, hostileReferences, storePath } from "./testing/hostile-references.js";

describe("parseNixImageReference", () => {
  it("accepts a canonical store path with no tag or latest", () => {
    for (const reference of [`nix:0${storePath}`, `nix:0${storePath}:latest`]) {
      expect(parseNixImageReference(reference, "/nix/store")).toEqual({
        storePath,
        name: `nix:0${storePath}:latest`,
        rootOwner: `cri-image-${hash}`,
      });
    }
  });

  it.each(hostileReferences)("refuses %j with InvalidArgument", (reference) => {
    let caught: unknown;
    try {
      parseNixImageReference(reference, "/nix/store");
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ImageServiceError);
    expect((caught as ImageServiceError).code).toBe("InvalidArgument");
    expect((caught as Error).message).toContain("reference");
  });

  it("quotes a 1 MiB reference truncated in its error", () => {
    for (const reference of [
      `nix:0/nix/store/${"a".repeat(1024 * 1024)}`,
      `nix:0${storePath}${"/x".repeat(512 * 1024)}`,
      `nix:0${storePath}:${"t".repeat(1024 * 1024)}`,
    ]) {
      let caught: unknown;
      try {
        parseNixImageReference(reference, "/nix/store");
      } catch (error) {
        caught = error;
      }
      expect((caught as ImageServiceError).code).toBe("InvalidArgument");
      const message = (caught as Error).message;
      expect(message.length).toBeLessThan(600);
      expect(message).toContain(`(${reference.length} characters)`);
    }
  });

  it("honours a custom store directory", () => {
    const custom = `/srv/store/${hash}-nix-image-hello.tar`;
    expect(parseNixImageReference(`nix:0${custom}`, "/srv/store").storePath).toBe(custom);
    expect(() => parseNixImageReference(`nix:0${storePath}`, "/srv/store")).toThrow(
      ImageServiceError,
    );
  });

  it("tells nix references from others", () => {
    expect(isNixReference(`nix:0${storePath}`)).toBe(true);
    expect(isNixReference("nix:0/etc/passwd")).toBe(true);
    expect(isNixReference("docker.io/library/nix:0")).toBe(false);
    expect(isNixReference("nix:0.1")).toBe(false);
    expect(isNixReference("sha256:abc")).toBe(false);
  });
});
