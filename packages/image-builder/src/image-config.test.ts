import { describe, expect, it } from "vitest";
import { mergeContainerConfig } from "./image-config.js";

describe("mergeContainerConfig", () => {
  it("merges maps by key with sorted keys, the image winning", () => {
    const merged = mergeContainerConfig(
      { ExposedPorts: { "80/tcp": {} }, Volumes: { "/b": {} }, Labels: { z: "base", a: "base" } },
      { ExposedPorts: { "443/tcp": {} }, Volumes: { "/a": {} }, Labels: { z: "image" } },
    );
    expect(merged).toEqual({
      ExposedPorts: { "443/tcp": {}, "80/tcp": {} },
      Volumes: { "/a": {}, "/b": {} },
      Labels: { a: "base", z: "image" },
    });
    expect(Object.keys(merged.Labels ?? {})).toEqual(["a", "z"]);
  });

  it("merges Env by variable name, keeping the base's order", () => {
    expect(
      mergeContainerConfig(
        { Env: ["PATH=/bin", "HOME=/root", "FLAG"] },
        { Env: ["HOME=/home", "X=1", "FLAG=on"] },
      ).Env,
    ).toEqual(["PATH=/bin", "HOME=/home", "FLAG=on", "X=1"]);
  });

  it("replaces scalar and list fields when set, inherits them otherwise", () => {
    const base = {
      User: "0",
      WorkingDir: "/base",
      Cmd: ["a"],
      StopSignal: "SIGINT",
      ArgsEscaped: true,
    };
    expect(mergeContainerConfig(base, { User: "1000", Cmd: ["b"] })).toEqual({
      User: "1000",
      WorkingDir: "/base",
      Cmd: ["b"],
      StopSignal: "SIGINT",
      ArgsEscaped: true,
    });
    expect(mergeContainerConfig(undefined, {})).toEqual({});
  });

  it("drops the base Cmd only when the image sets an Entrypoint without a Cmd", () => {
    expect(mergeContainerConfig({ Entrypoint: ["/e"], Cmd: ["c"] }, {})).toEqual({
      Entrypoint: ["/e"],
      Cmd: ["c"],
    });
    expect(mergeContainerConfig({ Cmd: ["c"] }, { Entrypoint: ["/x"] })).toEqual({
      Entrypoint: ["/x"],
    });
    expect(mergeContainerConfig({ Cmd: ["c"] }, { Entrypoint: ["/x"], Cmd: ["d"] })).toEqual({
      Entrypoint: ["/x"],
      Cmd: ["d"],
    });
  });
});
