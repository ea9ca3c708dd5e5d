import { describe, expect, it } from "vitest";
import {
  familiarReference,
  normalizeReference,
  parseReference,
  withDefaultTag,
} from "./reference.js";

const storePath = "/nix/store/0c0s3b6kqhq8sd6d0gn9ng9kz1c4dx0q-nix-image-hello.tar";

describe("parseReference", () => {
  it.each([
    ["busybox", "docker.io/library/busybox:latest"],
    ["busybox:1.36", "docker.io/library/busybox:1.36"],
    ["user/app", "docker.io/user/app:latest"],
    ["index.docker.io/library/busybox", "docker.io/library/busybox:latest"],
    ["localhost/app:dev", "localhost/app:dev"],
    ["localhost:5000/a/b/c:v1", "localhost:5000/a/b/c:v1"],
    ["127.0.0.1:5000/hello", "127.0.0.1:5000/hello:latest"],
    ["Example.COM/app", "Example.COM/app:latest"],
    ["[::1]:5000/app:1", "[::1]:5000/app:1"],
    ["Registry/app", "Registry/app:latest"],
    ["a/b/c", "docker.io/a/b/c:latest"],
    ["ghcr.io/a-b__c/d.e:1.0-rc_1", "ghcr.io/a-b__c/d.e:1.0-rc_1"],
    [`busybox@sha256:${"a".repeat(64)}`, `docker.io/library/busybox@sha256:${"a".repeat(64)}`],
  ])("normalises %s", (input, expected) => {
    expect(normalizeReference(input)).toBe(expected);
  });

  it("keeps tag and digest together", () => {
    const reference = parseReference(`r.io/app:1@sha256:${"b".repeat(64)}`);
    expect(reference).toEqual({
      kind: "registry",
      domain: "r.io",
      path: "app",
      tag: "1",
      digest: `sha256:${"b".repeat(64)}`,
    });
  });

  it.each([
    ["", /empty/],
    ["app:bad tag", /white space/],
    ["app:-x", /invalid tag "-x"/],
    [`app:${"a".repeat(129)}`, /invalid tag/],
    ["app:a/b", /invalid registry host/],
    ["User/App", /lowercase/],
    ["app@sha256:abc", /digest/],
    ["app@md5:abcdef", /unsupported algorithm/],
    ["r.io//app", /invalid repository name component ""/],
    ["-r.io/app", /invalid/],
    ["r.io/app/", /invalid repository name component/],
    [`r.io/${"a".repeat(260)}`, /longer than 255/],
  ])("rejects %j", (input, message) => {
    expect(() => parseReference(input)).toThrow(message);
  });

  it("accepts nix:0 references to canonical store paths only", () => {
    expect(parseReference(`nix:0${storePath}:latest`)).toEqual({
      kind: "nix",
      storePath,
      tag: "latest",
    });
    expect(normalizeReference(`nix:0${storePath}`)).toBe(`nix:0${storePath}:latest`);
    for (const bad of [
      "nix:0/etc/passwd",
      "nix:0/nix/store/../../etc",
      `nix:0${storePath}/sub`,
      "nix:0/nix/store/0c0s3b6kqhq8sd6d0gn9ng9kz1c4dx0e-bad-hash-letter",
      "nix:0/nix/store/short-name",
      `nix:0/nix/store//0c0s3b6kqhq8sd6d0gn9ng9kz1c4dx0q-x`,
    ]) {
      expect(() => parseReference(bad), bad).toThrow(/not a canonical store path/);
    }
    expect(() => parseReference(`nix:0${storePath}:bad!`)).toThrow(/invalid tag/);
  });

  it("honours a custom store dir for nix:0 references", () => {
    const custom = "/custom/store/0c0s3b6kqhq8sd6d0gn9ng9kz1c4dx0q-image.tar";
    expect(() => parseReference(`nix:0${custom}`)).toThrow(/canonical/);
    expect(parseReference(`nix:0${custom}`, { storeDir: "/custom/store" })).toMatchObject({
      storePath: custom,
    });
  });
});

describe("familiarReference", () => {
  it.each([
    ["docker.io/library/busybox:latest", "busybox:latest"],
    ["docker.io/user/app:1", "user/app:1"],
    ["docker.io/library/a/b:1", "library/a/b:1"],
    ["127.0.0.1:5000/app:1", "127.0.0.1:5000/app:1"],
  ])("%s -> %s", (input, expected) => {
    expect(familiarReference(parseReference(input))).toBe(expected);
  });

  it("adds latest only when neither tag nor digest is set", () => {
    expect(withDefaultTag(parseReference("a")).tag).toBe("latest");
    expect(withDefaultTag(parseReference(`a@sha256:${"c".repeat(64)}`)).tag).toBeUndefined();
  });
});
