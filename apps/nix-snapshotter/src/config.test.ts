import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  ConfigError,
  defaultConfig,
  flagLayer,
  loadConfigFile,
  mergeConfig,
  parseConfig,
  parseDuration,
  parseMetricsAddress,
} from "./config.js";

const directory = mkdtempSync(join(tmpdir(), "nix-snapshotter-config-"));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(directory, name);
  writeFileSync(path, text);
  return path;
}

describe("defaultConfig", () => {
  it("has the Go daemon's defaults", () => {
    expect(defaultConfig()).toEqual({
      address: "/run/nix-snapshotter/nix-snapshotter.sock",
      root: "/var/lib/containerd/io.containerd.snapshotter.v1.nix",
      externalBuilder: "",
      imageService: { enable: true, containerdAddress: "/run/containerd/containerd.sock" },
      mountMode: "bind",
      storeDir: "/nix/store",
      gcRootsDir: "",
      fuseOverlayfs: false,
      metricsAddress: "",
      realiseTimeoutMs: 0,
    });
  });
});

describe("loadConfigFile", () => {
  it("treats a missing file as empty", async () => {
    expect(await loadConfigFile(join(directory, "missing.toml"))).toEqual({});
  });

  it("reads every key, the Go ones and ours", async () => {
    const path = file(
      "full.toml",
      `address = "/run/x/x.sock"
root = "/var/lib/x"
external_builder = "/usr/bin/builder"
mount_mode = "hardlink"
store_dir = "/custom/store"
gc_roots_dir = "/nix/var/nix/gcroots/x"
fuse_overlayfs = true
metrics_address = "127.0.0.1:9100"
realise_timeout = "1m30s"

[image_service]
enable = false
containerd_address = "unix:///run/containerd/other.sock"
`,
    );
    expect(mergeConfig(defaultConfig(), await loadConfigFile(path))).toEqual({
      address: "/run/x/x.sock",
      root: "/var/lib/x",
      externalBuilder: "/usr/bin/builder",
      imageService: { enable: false, containerdAddress: "/run/containerd/other.sock" },
      mountMode: "hardlink",
      storeDir: "/custom/store",
      gcRootsDir: "/nix/var/nix/gcroots/x",
      fuseOverlayfs: true,
      metricsAddress: "127.0.0.1:9100",
      realiseTimeoutMs: 90_000,
    });
  });

  it("refuses a directory with a message naming it", async () => {
    await expect(loadConfigFile(directory)).rejects.toThrow(`config ${directory}:`);
  });
});

describe("precedence", () => {
  it("is defaults < file < flags, key by key, and honours false", () => {
    const fileLayer = parseConfig(
      `root = "/from/file"\naddress = "/from/file.sock"\n[image_service]\nenable = false\n`,
      "c.toml",
    );
    const config = mergeConfig(defaultConfig(), fileLayer, flagLayer({ root: "/from/flag" }));
    expect(config.root).toBe("/from/flag");
    expect(config.address).toBe("/from/file.sock");
    expect(config.imageService).toEqual({
      enable: false,
      containerdAddress: "/run/containerd/containerd.sock",
    });
    expect(config.mountMode).toBe("bind");
  });

  it("lets an empty string turn metrics off again", () => {
    const config = mergeConfig(
      defaultConfig(),
      parseConfig(`metrics_address = "127.0.0.1:1"`, "a.toml"),
      parseConfig(`metrics_address = ""`, "b.toml"),
    );
    expect(config.metricsAddress).toBe("");
  });
});

describe("parseDuration", () => {
  it.each([
    ["0", 0],
    ["0s", 0],
    ["250ms", 250],
    ["1.5s", 1500],
    ["90s", 90_000],
    ["10m", 600_000],
    ["1h30m", 5_400_000],
    ["2h0m1s", 7_201_000],
    ["24h", 86_400_000],
  ])("reads %j as %d ms", (text, milliseconds) => {
    expect(parseDuration(text, "realise_timeout")).toBe(milliseconds);
  });

  it.each(["", "10", "-5s", "5 s", "1d", "ten seconds", "1.s", "s", `${"1".repeat(70)}s`, "600h"])(
    "refuses %j naming the key",
    (text) => {
      expect(() => parseDuration(text, "realise_timeout")).toThrow(/"realise_timeout" must be/);
    },
  );
});

describe("bad configuration", () => {
  const cases: Array<[string, string, RegExp]> = [
    [
      "realise timeout as a number",
      `realise_timeout = 30`,
      /"realise_timeout" must be a string, got number 30/,
    ],
    [
      "realise timeout without a unit",
      `realise_timeout = "30"`,
      /config c\.toml: "realise_timeout" must be a duration such as "30s"/,
    ],
    ["unknown top-level key", `adress = "/x.sock"`, /config c\.toml: unknown key "adress"/],
    [
      "unknown nested key",
      `[image_service]\nenabled = true`,
      /unknown key "image_service\.enabled"/,
    ],
    [
      "boolean as string",
      `fuse_overlayfs = "yes"`,
      /"fuse_overlayfs" must be true or false, got string "yes"/,
    ],
    ["number for a path", `root = 5`, /"root" must be a string, got number 5/],
    ["relative root", `root = "var/lib/x"`, /"root" must be an absolute path, got "var\/lib\/x"/],
    ["empty address", `address = ""`, /"address" must be an absolute path/],
    [
      "bad mount mode",
      `mount_mode = "overlay"`,
      /"mount_mode" must be "bind" or "hardlink", got "overlay"/,
    ],
    ["image_service not a table", `image_service = true`, /"image_service" must be a table/],
    [
      "relative containerd address",
      `[image_service]\ncontainerd_address = "containerd.sock"`,
      /"image_service\.containerd_address" must be an absolute socket path/,
    ],
    [
      "metrics without port",
      `metrics_address = "localhost"`,
      /"metrics_address" must be host:port/,
    ],
    ["metrics port out of range", `metrics_address = "127.0.0.1:70000"`, /"metrics_address"/],
    [
      "builder with a relative path",
      `external_builder = "./build.sh"`,
      /"external_builder" must be an absolute path or a command name/,
    ],
    ["a NUL in a path", `root = "/var/\\u0000lib"`, /"root" must be an absolute path/],
    [
      "an array for a string",
      `store_dir = ["/nix/store"]`,
      /"store_dir" must be a string, got an array/,
    ],
    ["a date for a string", `root = 1979-05-27`, /"root" must be a string, got a date/],
    ["invalid TOML", `root = "/x"\nroot = "/y"`, /config c\.toml: invalid TOML at line 2/],
    ["unterminated string", `root = "/x`, /invalid TOML at line 1/],
  ];
  for (const [name, text, message] of cases) {
    it(`refuses ${name}`, () => {
      expect(() => parseConfig(text, "c.toml")).toThrow(ConfigError);
      expect(() => parseConfig(text, "c.toml")).toThrow(message);
    });
  }

  it("refuses relative flag values naming the flag", () => {
    expect(() => flagLayer({ root: "relative" })).toThrow(/flag "--root" must be an absolute path/);
    expect(() => flagLayer({ address: "" })).toThrow(/flag "--address"/);
  });
});

describe("parseMetricsAddress", () => {
  it("parses host:port, [v6]:port, :port and socket paths", () => {
    expect(parseMetricsAddress("")).toBeUndefined();
    expect(parseMetricsAddress("127.0.0.1:9100")).toEqual({ host: "127.0.0.1", port: 9100 });
    expect(parseMetricsAddress("[::1]:0")).toEqual({ host: "::1", port: 0 });
    expect(parseMetricsAddress(":8080")).toEqual({ host: "0.0.0.0", port: 8080 });
    expect(parseMetricsAddress("/run/x/metrics.sock")).toEqual({ path: "/run/x/metrics.sock" });
  });
});
