import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { defaultConfig } from "./config.js";
import { imageInputsExpression, nixErrorSummary } from "./nix.js";
import { type RunningRegistry, startRegistry } from "./registry.js";

/** A Nix antiquotation that would read a secret if it were ever evaluated. */
const SHADOW = ["$", "{builtins.readFile /etc/shadow}"].join("");

/**
 * The real Nix steps against fake Nix programs (shell scripts on `nix_bin`) that record every
 * invocation: proves what reaches Nix (names only as one JSON string argument, hostile names
 * never) and that a process past NIX_TIMEOUT is killed.
 */

let dir: string;
let registry: RunningRegistry;
const log = () => join(dir, "invocations.log");

const recorder = (name: string, body: string) => `#!/bin/sh
for arg in "$@"; do printf '%s\\n' "$arg" >> "${dir}/${name}.args"; done
printf '%s\\n' "${name} $*" >> "${dir}/invocations.log"
${body}
`;

function get(path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest({ host: "127.0.0.1", port: registry.port, path }, (response) => {
      let body = "";
      response.setEncoding("utf8").on("data", (chunk: string) => {
        body += chunk;
      });
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
    });
    request.on("error", reject);
    request.end();
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "nix-registry-fake-nix-"));
  const bin = join(dir, "bin");
  await import("node:fs/promises").then((fs) => fs.mkdir(bin));
  const outPath = "/nix/store/1xh3qd2y5n6drp0kb3ks96mlpgm4rv0x-slow";
  await writeFile(
    join(bin, "nix-instantiate"),
    recorder(
      "nix-instantiate",
      `case "$*" in
  *'["slow"]'*) printf '{"missing":[],"notPackages":[],"names":["slow"],"outPaths":["${outPath}"],"closureInfo":null}' ;;
  *) printf '{"missing":["hello"],"notPackages":[],"names":["hello","busybox"],"outPaths":[],"closureInfo":null}' ;;
esac`,
    ),
  );
  await writeFile(
    join(bin, "nix-build"),
    recorder("nix-build", `echo $$ > "${dir}/nix-build.pid"\nsleep 60\n`),
  );
  await writeFile(join(bin, "nix-store"), recorder("nix-store", "exit 1"));
  for (const program of ["nix-instantiate", "nix-build", "nix-store"]) {
    await chmod(join(bin, program), 0o755);
  }
  registry = await startRegistry({
    config: {
      ...defaultConfig(),
      host: "127.0.0.1",
      port: 0,
      pkgsPath: join(dir, "set"),
      storagePath: join(dir, "storage"),
      gcRootsDir: join(dir, "gcroots"),
      platforms: ["amd64"],
      nixBin: bin,
      nixTimeout: 2,
      revision: "fixed",
    },
    logger: pino({ level: "silent" }),
  });
});

afterAll(async () => {
  await registry?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("what reaches Nix", () => {
  it("nothing, for hostile names", async () => {
    const hostile = [
      "../etc",
      SHADOW.replace(/ /g, "%20"),
      "%24%7Bbuiltins.readFile%20%2Fetc%2Fshadow%7D",
      'a"b'.replace('"', "%22"),
      "a'b",
      `${"a".repeat(10_000)}`,
      Array(500).fill("a").join("/"),
      "hello/%0Abusybox",
    ];
    for (const name of hostile) {
      const response = await get(`/v2/${name}/manifests/latest`);
      expect(response.status, name.slice(0, 40)).toBeGreaterThanOrEqual(400);
      expect(response.status).toBeLessThan(500);
      expect(JSON.parse(response.body).errors[0].code).toBe("NAME_INVALID");
    }
    await expect(readFile(log(), "utf8")).rejects.toThrow(/ENOENT/);
  });

  it("names only as a JSON string argument of the fixed expression", async () => {
    const response = await get("/v2/hello/busybox/manifests/latest");
    expect(response.status).toBe(404);
    expect(JSON.parse(response.body).errors[0]).toMatchObject({
      code: "NAME_UNKNOWN",
      message: 'unknown packages: "hello" is not in the package set',
    });
    const args = (await readFile(join(dir, "nix-instantiate.args"), "utf8")).split("\n");
    expect(args.slice(0, 13)).toEqual([
      "--eval",
      "--strict",
      "--json",
      imageInputsExpression,
      "--argstr",
      "pkgsPath",
      join(dir, "set"),
      "--argstr",
      "namesJson",
      '["hello","busybox"]',
      "--argstr",
      "system",
      "x86_64-linux",
    ]);
    expect(args).not.toContain("--arg");
    expect(args).not.toContain("-E");
    expect(await readFile(log(), "utf8")).not.toContain("nix-build");
  });

  it("a build past NIX_TIMEOUT is killed and answered UNAVAILABLE", async () => {
    const response = await get("/v2/slow/manifests/latest");
    expect(response.status).toBe(503);
    expect(JSON.parse(response.body).errors[0].message).toMatch(/NIX_TIMEOUT/);
    const pid = Number(await readFile(join(dir, "nix-build.pid"), "utf8"));
    expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
    expect(await import("node:fs/promises").then((fs) => fs.readdir(join(dir, "gcroots")))).toEqual(
      [],
    );
  });
});

describe("nixErrorSummary", () => {
  it("keeps the error line and what follows, without warnings", () => {
    const stderr = [
      "warning: unable to download 'x'",
      "building '/nix/store/x.drv'...",
      "error: a 'aarch64-linux' with features {} is required to build '/nix/store/y.drv', but I am a 'x86_64-linux' with features {}",
    ].join("\n");
    expect(nixErrorSummary(stderr)).toBe(
      "error: a 'aarch64-linux' with features {} is required to build '/nix/store/y.drv', but I am a 'x86_64-linux' with features {}",
    );
  });
});
