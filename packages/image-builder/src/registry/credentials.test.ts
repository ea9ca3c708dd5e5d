import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  authKeyHost,
  createDockerCredentialsProvider,
  dockerConfigPath,
  readDockerConfig,
  resolveDockerCredentials,
  runCredentialHelper,
} from "./credentials.js";
import { RegistryError } from "./errors.js";

function auth(user: string, password: string): string {
  return Buffer.from(`${user}:${password}`).toString("base64");
}

let directory = "";
let env: NodeJS.ProcessEnv = {};

/**
 * A test double of the docker credential helper protocol: `get` reads the server URL on stdin,
 * logs it, and answers from a table; unknown servers get "credentials not found".
 */
async function writeHelper(name: string, table: Record<string, unknown>, exitCode = 0) {
  const script = [
    "#!/bin/sh",
    `[ "$1" = get ] || { echo "unexpected command $1" >&2; exit 3; }`,
    "read -r server",
    `printf '%s\\n' "$server" >> "${directory}/${name}.log"`,
    ...Object.entries(table).map(
      ([server, answer]) =>
        `[ "$server" = '${server}' ] && { printf '%s' '${typeof answer === "string" ? answer : JSON.stringify(answer)}'; exit ${exitCode}; }`,
    ),
    'echo "credentials not found in native keychain"',
    "exit 1",
  ].join("\n");
  const path = join(directory, "bin", `docker-credential-${name}`);
  await writeFile(path, `${script}\n`);
  await chmod(path, 0o755);
}

beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), "nix-snapshotter-credentials-"));
  await mkdir(join(directory, "bin"));
  env = { PATH: `${join(directory, "bin")}:/usr/bin:/bin`, HOME: directory };
  await writeHelper("store", {
    "registry.example": { ServerURL: "registry.example", Username: "store-user", Secret: "s1" },
    "https://index.docker.io/v1/": { ServerURL: "x", Username: "hub-user", Secret: "hub" },
  });
  await writeHelper("special", {
    "registry.example": { ServerURL: "registry.example", Username: "<token>", Secret: "refresh-1" },
  });
  await writeHelper("broken", { "registry.example": "not json at all" });
  await writeHelper("nosecret", { "registry.example": { Username: "u" } });
});

afterAll(async () => {
  await rm(directory, { recursive: true, force: true });
});

describe("docker config credentials", () => {
  it("finds config.json in $DOCKER_CONFIG, else ~/.docker", () => {
    expect(dockerConfigPath({ env: { DOCKER_CONFIG: "/etc/dc", HOME: "/home/u" } })).toBe(
      "/etc/dc/config.json",
    );
    expect(dockerConfigPath({ env: { HOME: "/home/u" } })).toBe("/home/u/.docker/config.json");
    expect(dockerConfigPath({ configDirectory: "/x", env: { DOCKER_CONFIG: "/y" } })).toBe(
      "/x/config.json",
    );
  });

  it("matches auths keys with or without scheme and path", () => {
    expect(authKeyHost("https://index.docker.io/v1/")).toBe("index.docker.io");
    expect(authKeyHost("http://LOCALHOST:5000")).toBe("localhost:5000");
    expect(authKeyHost("ghcr.io")).toBe("ghcr.io");
  });

  it("decodes auths: auth (user:password with colons in the password) and identitytoken", async () => {
    const config = {
      auths: {
        "https://registry.example/v2/": { auth: auth("alice", "pa:ss:word") },
        "127.0.0.1:5000": { identitytoken: "refresh-2", auth: auth("bob", "") },
        "https://index.docker.io/v1/": { auth: auth("hubber", "pw") },
      },
    };
    expect(await resolveDockerCredentials(config, "registry.example")).toEqual({
      kind: "basic",
      username: "alice",
      password: "pa:ss:word",
      source: "docker config (auths)",
    });
    expect(await resolveDockerCredentials(config, "127.0.0.1:5000")).toEqual({
      kind: "identity-token",
      identityToken: "refresh-2",
      username: "bob",
      source: "docker config (auths)",
    });
    expect(await resolveDockerCredentials(config, "docker.io")).toMatchObject({
      username: "hubber",
    });
    expect(await resolveDockerCredentials(config, "other.example")).toBeUndefined();
  });

  it("rejects an auth that is not base64 of user:password", async () => {
    await expect(
      resolveDockerCredentials({ auths: { h: { auth: auth("nocolon", "").slice(0, -4) } } }, "h"),
    ).rejects.toThrow(/"auth" for registry "h" is not base64 of "user:password"/);
  });

  it("asks credHelpers per host before credsStore, and credsStore before auths", async () => {
    const config = {
      auths: { "registry.example": { auth: auth("from-auths", "x") } },
      credsStore: "store",
      credHelpers: { "registry.example": "special" },
    };
    expect(await resolveDockerCredentials(config, "registry.example", { env })).toEqual({
      kind: "identity-token",
      identityToken: "refresh-1",
      source: "credential helper docker-credential-special",
    });
    const { credHelpers: _unused, ...withoutHelpers } = config;
    expect(await resolveDockerCredentials(withoutHelpers, "registry.example", { env })).toEqual({
      kind: "basic",
      username: "store-user",
      password: "s1",
      source: "credential helper docker-credential-store",
    });
    // Docker Hub is asked for under its legacy URL.
    expect(await resolveDockerCredentials(withoutHelpers, "docker.io", { env })).toMatchObject({
      username: "hub-user",
    });
    const log = await readFile(join(directory, "store.log"), "utf8");
    expect(log.trim().split("\n")).toEqual(["registry.example", "https://index.docker.io/v1/"]);
  });

  it("treats 'credentials not found' as anonymous and other helper failures as errors", async () => {
    expect(await runCredentialHelper("store", "unknown.example", { env })).toBeUndefined();
    await expect(runCredentialHelper("broken", "registry.example", { env })).rejects.toThrow(
      /docker-credential-broken answered for "registry.example" with something that is not JSON/,
    );
    await expect(runCredentialHelper("nosecret", "registry.example", { env })).rejects.toThrow(
      /without a Secret/,
    );
    const error = await runCredentialHelper("absent", "registry.example", { env }).catch(
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(RegistryError);
    expect((error as RegistryError).message).toMatch(
      /docker-credential-absent for "registry.example" could not run/,
    );
    await expect(runCredentialHelper("../../bin/sh", "x", { env })).rejects.toThrow(/not valid/);
  });

  it("reads config.json through the provider; missing file is anonymous, bad JSON an error", async () => {
    const configDirectory = join(directory, "cfg");
    await mkdir(configDirectory);
    const provider = createDockerCredentialsProvider({ configDirectory, env });
    expect(await provider("registry.example")).toBeUndefined();
    await writeFile(join(configDirectory, "config.json"), "{not json");
    await expect(provider("registry.example")).rejects.toThrow(/not valid JSON/);
    await writeFile(
      join(configDirectory, "config.json"),
      JSON.stringify({ auths: { "registry.example": { auth: auth("u", "p") } }, credHelpers: [] }),
    );
    expect(await provider("registry.example")).toMatchObject({ username: "u", password: "p" });
    expect(await readDockerConfig(join(directory, "nope.json"))).toEqual({});
  });
});
