import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CliError } from "../cli-error.js";
import { createProgram } from "../program.js";
import { runLoad } from "./load.js";

describe("nix2container load", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "nix2container-load-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("is registered with --snapshotter defaulting to nix", () => {
    const load = createProgram().commands.find((command) => command.name() === "load");
    expect(load).toBeDefined();
    const option = load?.options.find((candidate) => candidate.long === "--snapshotter");
    expect(option?.defaultValue).toBe("nix");
  });

  it("fails with the socket named when containerd is not there, before reading archives", async () => {
    const socket = join(dir, "absent.sock");
    const error = await runLoad([join(dir, "missing.tar")], {
      address: socket,
      namespace: "default",
      connectTimeoutMs: 200,
    }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(CliError);
    expect((error as Error).message).toContain(`containerd at ${socket} is not reachable`);
  });

  it("refuses an address that is not a unix socket path", async () => {
    const error = await runLoad(["x.tar"], {
      address: "tcp://127.0.0.1:1",
      namespace: "default",
    }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(CliError);
    expect((error as Error).message).toMatch(/absolute unix socket path/);
  });

  it("refuses a bad namespace", async () => {
    writeFileSync(join(dir, "x.tar"), "not an archive");
    const error = await runLoad([join(dir, "x.tar")], {
      address: join(dir, "c.sock"),
      namespace: "../etc",
    }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(CliError);
    expect((error as Error).message).toMatch(/namespace "\.\.\/etc"/);
  });
});
