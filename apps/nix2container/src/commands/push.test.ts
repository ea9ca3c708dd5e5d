import { RegistryError } from "@nix-snapshotter/image-builder";
import { describe, expect, it } from "vitest";
import { CliError, toCliError } from "../cli-error.js";
import { formatBytes, plainHttpHint, pushTarget, renderProgress } from "./push.js";

describe("push helpers", () => {
  it("normalises --ref like docker and adds the latest tag", () => {
    expect(pushTarget("127.0.0.1:5000/app")).toEqual({
      kind: "registry",
      domain: "127.0.0.1:5000",
      path: "app",
      tag: "latest",
    });
    expect(pushTarget("busybox:1")).toMatchObject({ domain: "docker.io", path: "library/busybox" });
    expect(pushTarget(`ghcr.io/o/app@sha256:${"a".repeat(64)}`)).toMatchObject({
      path: "o/app",
      digest: `sha256:${"a".repeat(64)}`,
    });
  });

  it("refuses hostile references with CliError", () => {
    for (const ref of [
      "",
      "Host/App",
      "ghcr.io/o/app:bad tag",
      "ghcr.io/o/app:.dot",
      "ghcr.io/o/../app",
      "ghcr.io/o/app@sha256:short",
      "nix:0/nix/store/00000000000000000000000000000000-image.tar",
      "nix:0/etc/passwd",
    ]) {
      expect(() => pushTarget(ref), ref).toThrow(CliError);
    }
  });

  it("adds the --plain-http advice the registry client leaves to the CLI", () => {
    const https = new RegistryError(
      "InvalidArgument",
      'registry "127.0.0.1:5000": GET /v2/: HTTP 400 (the registry speaks HTTPS, the request was plain HTTP)',
      { registrySpeaks: "https" },
    );
    const shown = toCliError(https, { hint: plainHttpHint(https) });
    expect(shown).toBeInstanceOf(CliError);
    expect((shown as CliError).message).toBe(`${https.message} (drop --plain-http)`);
    const http = new RegistryError(
      "Unavailable",
      "unreachable (the registry does not speak TLS here)",
      {
        registrySpeaks: "http",
      },
    );
    expect(plainHttpHint(http)).toBe(" (use --plain-http for a plain-HTTP registry)");
    expect(plainHttpHint(new RegistryError("NotFound", "not found"))).toBe("");
    expect(plainHttpHint(new Error("other"))).toBe("");
  });

  it("formats sizes in binary units", () => {
    expect(formatBytes(0)).toBe("0 B");
    expect(formatBytes(1023)).toBe("1023 B");
    expect(formatBytes(1536)).toBe("1.5 KiB");
    expect(formatBytes(3 * 1024 * 1024)).toBe("3.0 MiB");
  });

  it("renders a bar proportional to bytes sent, within the width", () => {
    const state = {
      totalBytes: 1000,
      sentBytes: 500,
      totalBlobs: 2,
      doneBlobs: 1,
      skippedBlobs: 1,
    };
    const line = renderProgress("r/app:1", state, 80);
    expect(line.length).toBeLessThanOrEqual(80);
    const bar = /\[(#*)(-*)\]/.exec(line);
    expect(bar?.[1]?.length).toBe(bar?.[2]?.length);
    expect(line).toContain("500 B/1000 B  1/2 blobs (1 present)");
    expect(renderProgress("x", { ...state, sentBytes: 1000 }, 80)).toMatch(/\[#+\]/);
    expect(renderProgress("x", { ...state, totalBytes: 0, sentBytes: 0 }, 80)).toMatch(/\[#+\]/);
    expect(renderProgress("a-very-long-label", state, 20).length).toBeLessThanOrEqual(20);
  });
});
