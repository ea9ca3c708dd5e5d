import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  ConfigError,
  defaultConfig,
  envLayer,
  fileLayer,
  flagLayer,
  loadConfigFile,
  mergeConfig,
} from "./config.js";

describe("configuration", () => {
  it("reads Nixery's environment variables", () => {
    const layer = envLayer({
      PORT: "5000",
      NIXERY_PKGS_PATH: "/srv/nixpkgs",
      NIX_TIMEOUT: "120",
      STORAGE_BACKEND: "filesystem",
      STORAGE_PATH: "/var/cache/images/",
    });
    expect(layer).toEqual({
      port: 5000,
      pkgsPath: "/srv/nixpkgs",
      nixTimeout: 120,
      storageBackend: "filesystem",
      storagePath: "/var/cache/images",
    });
    expect(envLayer({ PKGS_PATH: "/a", NIXERY_PKGS_PATH: "/b" }).pkgsPath).toBe("/a");
  });

  it("refuses bad values, naming the variable or key", () => {
    expect(() => envLayer({ STORAGE_BACKEND: "gcs" })).toThrow(
      /STORAGE_BACKEND: "storage_backend" must be one of "filesystem"/,
    );
    expect(() => envLayer({ NIX_TIMEOUT: "soon" })).toThrow(/NIX_TIMEOUT/);
    expect(() => fileLayer({ pkgs_path: "relative" })).toThrow(/absolute path/);
    expect(() => fileLayer({ gc_roots_dir: "/tmp/roots" })).toThrow(
      /below \/nix\/var\/nix\/gcroots/,
    );
    expect(() => fileLayer({ platforms: ["riscv64"] })).toThrow(/unknown platform "riscv64"/);
    expect(() => fileLayer({ colour: "blue" })).toThrow(/unknown key "colour"/);
    expect(() => mergeConfig(defaultConfig())).toThrow(ConfigError);
    expect(() => fileLayer({ pkgs_repo: "--upload-pack=evil" })).toThrow(/must be a git URL/);
    expect(envLayer({ NIXERY_PKGS_REPO: "https://example.invalid/pkgs.git" }).pkgsRepo).toBe(
      "https://example.invalid/pkgs.git",
    );
    expect(() =>
      mergeConfig(defaultConfig(), { pkgsPath: "/srv/set", pkgsRepo: "file:///srv/repo" }),
    ).toThrow(/both set/);
  });

  it("takes a git branch name as the default branch, and nothing else", () => {
    expect(fileLayer({ default_branch: "release/24.05" }).defaultBranch).toBe("release/24.05");
    expect(envLayer({ NIX_REGISTRY_DEFAULT_BRANCH: "main" }).defaultBranch).toBe("main");
    expect(defaultConfig().defaultBranch).toBe("");
    for (const bad of [
      "-main",
      "a..b",
      "a//b",
      "main/",
      "main.lock",
      "a/.b",
      "x".repeat(256),
      "a b",
    ]) {
      expect(() => fileLayer({ default_branch: bad }), bad).toThrow(/must be a git branch name/);
    }
  });

  it("layers defaults, file, environment and flags in that order", async () => {
    const dir = await mkdtemp(join(tmpdir(), "nix-registry-config-"));
    try {
      const path = join(dir, "config.toml");
      await writeFile(
        path,
        'pkgs_path = "/srv/set"\nport = 6000\nplatforms = ["amd64", "arm64"]\nmax_images = 3\nannotation_form = "per-path"\n',
      );
      const config = mergeConfig(
        defaultConfig(),
        await loadConfigFile(path, true),
        envLayer({ PORT: "7000" }),
        flagLayer({ port: "8000", storage_path: undefined }),
      );
      expect(config).toMatchObject({
        pkgsPath: "/srv/set",
        port: 8000,
        platforms: ["amd64", "arm64"],
        maxImages: 3,
        annotationForm: "per-path",
        storageBackend: "filesystem",
      });
      expect(await loadConfigFile(join(dir, "missing.toml"), false)).toEqual({});
      await expect(loadConfigFile(join(dir, "missing.toml"), true)).rejects.toThrow(/cannot read/);
      await writeFile(path, "port = [");
      await expect(loadConfigFile(path, true)).rejects.toThrow(ConfigError);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
