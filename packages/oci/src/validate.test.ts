import { describe, expect, it } from "vitest";
import {
  parseJson,
  validateContainerConfig,
  validateDescriptor,
  validateDockerManifest,
  validateImageConfig,
  validateManifest,
} from "./validate.js";

const digest = `sha256:${"a".repeat(64)}`;

describe("validation", () => {
  it("matches container config keys case-insensitively and writes OCI spelling", () => {
    const { config, ignoredKeys } = validateContainerConfig({
      entrypoint: ["/bin/hello"],
      CMD: ["--greeting", "hi"],
      env: ["A=1"],
      exposedPorts: { "80/tcp": {} },
      volumes: { "/data": null },
      workingdir: "/",
      user: "1000:1000",
      labels: { a: "b" },
      stopsignal: "SIGTERM",
      argsescaped: true,
      hostname: "ignored",
    });
    expect(config).toEqual({
      Entrypoint: ["/bin/hello"],
      Cmd: ["--greeting", "hi"],
      Env: ["A=1"],
      ExposedPorts: { "80/tcp": {} },
      Volumes: { "/data": {} },
      WorkingDir: "/",
      User: "1000:1000",
      Labels: { a: "b" },
      StopSignal: "SIGTERM",
      ArgsEscaped: true,
    });
    expect(ignoredKeys).toEqual(["hostname"]);
  });

  it("lets the last of several spellings win, like Go", () => {
    expect(validateContainerConfig({ Cmd: ["a"], cmd: ["b"] }).config.Cmd).toEqual(["b"]);
  });

  it.each([
    [{ Entrypoint: "/bin/sh" }, /config\.Entrypoint: expected an array of strings/],
    [{ env: ["A=1", 2] }, /config\.env\[1\]: expected a string/],
    [{ Env: ["=x"] }, /expected NAME=value/],
    [{ Labels: { a: 1 } }, /config\.Labels\.a: expected a string/],
    [{ ExposedPorts: ["80/tcp"] }, /expected a JSON object/],
    [[], /expected a JSON object/],
  ])("rejects malformed config %j", (input, message) => {
    expect(() => validateContainerConfig(input)).toThrow(message);
  });

  it("names the file in malformed JSON errors", () => {
    expect(() => parseJson("{", "config.json")).toThrow(/config\.json: malformed JSON/);
  });

  it("validates descriptors and manifests", () => {
    const descriptor = { mediaType: "x", digest, size: 3, annotations: { k: "v" } };
    expect(validateDescriptor(descriptor)).toEqual(descriptor);
    expect(() => validateDescriptor({ ...descriptor, size: -1 })).toThrow(/size/);
    expect(() => validateDescriptor({ ...descriptor, digest: "sha256:zz" })).toThrow(/digest/);
    expect(() => validateDescriptor({ ...descriptor, annotations: { k: 1 } })).toThrow(
      /annotations\.k/,
    );
    expect(() => validateManifest({ schemaVersion: 1, config: descriptor, layers: [] })).toThrow(
      /schemaVersion/,
    );
    expect(
      validateManifest({ schemaVersion: 2, config: descriptor, layers: [descriptor] }).layers,
    ).toHaveLength(1);
  });

  it("validates image configs and keeps unknown members", () => {
    const config = validateImageConfig({
      architecture: "amd64",
      os: "linux",
      docker_version: "20",
      config: { cmd: ["x"] },
      rootfs: { type: "layers", diff_ids: [digest] },
    });
    expect(config.config).toEqual({ Cmd: ["x"] });
    expect((config as unknown as Record<string, unknown>).docker_version).toBe("20");
    expect(() =>
      validateImageConfig({
        architecture: "amd64",
        os: "linux",
        rootfs: { type: "x", diff_ids: [] },
      }),
    ).toThrow(/rootfs\.type/);
    expect(() => validateImageConfig({ os: "linux", rootfs: { type: "layers" } })).toThrow(
      /architecture/,
    );
  });

  it("validates docker manifest.json", () => {
    expect(
      validateDockerManifest([{ Config: "c.json", RepoTags: null, Layers: ["l/layer.tar"] }]),
    ).toEqual([{ Config: "c.json", RepoTags: null, Layers: ["l/layer.tar"] }]);
    expect(() => validateDockerManifest({})).toThrow(/expected an array/);
    expect(() => validateDockerManifest([{ Layers: [] }])).toThrow(/Config/);
  });
});
