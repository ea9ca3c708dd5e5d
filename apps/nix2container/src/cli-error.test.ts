import { ContainerdError } from "@nix-snapshotter/containerd-client";
import { CodedError } from "@nix-snapshotter/errdefs";
import { ImageBuildError, RegistryError } from "@nix-snapshotter/image-builder";
import { NixStoreError } from "@nix-snapshotter/nix-store";
import { OciError } from "@nix-snapshotter/oci";
import { describe, expect, it } from "vitest";
import { CliError, toCliError } from "./cli-error.js";

describe("toCliError", () => {
  it("turns every package's coded error into a CliError with its message", () => {
    for (const error of [
      new ImageBuildError("InvalidArgument", "image config: bad"),
      new OciError("DataLoss", "blob sha256:x: wrong digest"),
      new RegistryError("Unauthenticated", "registry: authentication failed"),
      new ContainerdError("Unavailable", "Version.Version: containerd is not reachable"),
      new NixStoreError("NotFound", 'store path "/nix/store/x" is not valid'),
    ]) {
      const shown = toCliError(error, { context: 'archive "a.tar"' });
      expect(shown, error.name).toBeInstanceOf(CliError);
      expect((shown as CliError).message).toBe(`archive "a.tar": ${error.message}`);
      expect((shown as CliError).cause).toBe(error);
    }
  });

  it("keeps a CliError and leaves anything else (a bug) to main's stack trace", () => {
    const cli = new CliError("--ref is required");
    expect(toCliError(cli, { context: "ignored" })).toBe(cli);
    const bug = new TypeError("x is undefined");
    expect(toCliError(bug)).toBe(bug);
    const plain = new CodedError("NotFound", "any coded error");
    expect((toCliError(plain) as CliError).message).toBe("any coded error");
  });
});
