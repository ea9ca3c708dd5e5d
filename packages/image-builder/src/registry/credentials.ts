import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { RegistryError } from "./errors.js";

/** Credentials for one registry. */
export type RegistryCredentials =
  | { kind: "basic"; username: string; password: string; source: string }
  /** An OAuth2 refresh token (docker's `identitytoken`), exchanged at the token realm. */
  | { kind: "identity-token"; identityToken: string; username?: string; source: string };

/** Looks up credentials for a registry host; undefined means anonymous. */
export type CredentialsProvider = (host: string) => Promise<RegistryCredentials | undefined>;

/** The parts of docker's `config.json` that hold credentials. */
export interface DockerConfig {
  auths?: Record<
    string,
    { auth?: string; username?: string; password?: string; identitytoken?: string }
  >;
  credsStore?: string;
  credHelpers?: Record<string, string>;
}

export interface DockerCredentialsOptions {
  /** Directory holding `config.json`; default `$DOCKER_CONFIG`, else `~/.docker`. */
  configDirectory?: string;
  /** Environment used to find the directory and to run helpers (default `process.env`). */
  env?: NodeJS.ProcessEnv;
}

/** Where docker's `config.json` is read from: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. */
export function dockerConfigPath(options: DockerCredentialsOptions = {}): string {
  const env = options.env ?? process.env;
  const directory =
    options.configDirectory ??
    (env.DOCKER_CONFIG !== undefined && env.DOCKER_CONFIG !== ""
      ? env.DOCKER_CONFIG
      : join(env.HOME ?? homedir(), ".docker"));
  return join(directory, "config.json");
}

/** Reads docker's `config.json`; a missing file is an empty config, a malformed one an error. */
export async function readDockerConfig(path: string): Promise<DockerConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw new RegistryError(
      "FailedPrecondition",
      `docker config "${path}": ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new RegistryError("InvalidArgument", `docker config "${path}": not valid JSON`, {
      cause: error,
    });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new RegistryError("InvalidArgument", `docker config "${path}": not a JSON object`);
  }
  const config = parsed as Record<string, unknown>;
  const result: DockerConfig = {};
  if (isRecord(config.auths)) {
    const auths: NonNullable<DockerConfig["auths"]> = {};
    for (const [key, value] of Object.entries(config.auths)) {
      if (!isRecord(value)) continue;
      const entry: NonNullable<DockerConfig["auths"]>[string] = {};
      for (const field of ["auth", "username", "password", "identitytoken"] as const) {
        const fieldValue = value[field];
        if (typeof fieldValue === "string" && fieldValue !== "") entry[field] = fieldValue;
      }
      auths[key] = entry;
    }
    result.auths = auths;
  }
  if (typeof config.credsStore === "string" && config.credsStore !== "") {
    result.credsStore = config.credsStore;
  }
  if (isRecord(config.credHelpers)) {
    const helpers: Record<string, string> = {};
    for (const [key, value] of Object.entries(config.credHelpers)) {
      if (typeof value === "string" && value !== "") helpers[key] = value;
    }
    result.credHelpers = helpers;
  }
  return result;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Docker Hub's credentials live under this key, as the docker CLI writes them. */
export const DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/";

/**
 * The host part of an `auths` key, as the docker CLI matches them: scheme and path are dropped
 * (`https://index.docker.io/v1/` -> `index.docker.io`, `http://localhost:5000` -> `localhost:5000`).
 */
export function authKeyHost(key: string): string {
  let host = key.trim();
  const scheme = host.indexOf("://");
  if (scheme >= 0) host = host.slice(scheme + 3);
  const slash = host.indexOf("/");
  if (slash >= 0) host = host.slice(0, slash);
  return host.toLowerCase();
}

function isDockerHub(host: string): boolean {
  return host === "docker.io" || host === "index.docker.io" || host === "registry-1.docker.io";
}

/** The server URL a credential helper is asked about for a host. */
export function helperServerUrl(host: string): string {
  return isDockerHub(host) ? DOCKER_HUB_AUTH_KEY : host;
}

/**
 * Resolves credentials for `host` from a docker config: `credHelpers[host]` first, then
 * `credsStore`, then `auths` (`auth` = base64 `user:password`, `identitytoken`). A helper that
 * has no credentials for the host gives anonymous access, not an error.
 */
export async function resolveDockerCredentials(
  config: DockerConfig,
  host: string,
  options: { configPath?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<RegistryCredentials | undefined> {
  const wanted = isDockerHub(host.toLowerCase()) ? "index.docker.io" : host.toLowerCase();
  const where = options.configPath ?? "docker config";
  const helperName = findByHost(config.credHelpers ?? {}, wanted) ?? config.credsStore;
  if (helperName !== undefined) {
    const helperOptions = options.env === undefined ? {} : { env: options.env };
    return runCredentialHelper(helperName, helperServerUrl(host), helperOptions);
  }
  const entry = findByHost(config.auths ?? {}, wanted);
  if (entry === undefined) return undefined;
  const source = `${where} (auths)`;
  if (entry.identitytoken !== undefined) {
    const credentials: RegistryCredentials = {
      kind: "identity-token",
      identityToken: entry.identitytoken,
      source,
    };
    const username =
      entry.auth === undefined ? entry.username : decodeAuth(entry.auth, host, where)?.username;
    if (username !== undefined) credentials.username = username;
    return credentials;
  }
  if (entry.auth !== undefined) {
    const decoded = decodeAuth(entry.auth, host, where);
    if (decoded === undefined) return undefined;
    return { kind: "basic", ...decoded, source };
  }
  if (entry.username !== undefined && entry.password !== undefined) {
    return { kind: "basic", username: entry.username, password: entry.password, source };
  }
  return undefined;
}

function findByHost<T>(entries: Record<string, T>, host: string): T | undefined {
  // Exact key first (the docker CLI writes bare hosts), then keys with scheme or path.
  const exact = entries[host];
  if (exact !== undefined) return exact;
  for (const [key, value] of Object.entries(entries)) {
    const keyHost = authKeyHost(key);
    if (keyHost === host || (host === "index.docker.io" && isDockerHub(keyHost))) return value;
  }
  return undefined;
}

function decodeAuth(
  auth: string,
  host: string,
  where: string,
): { username: string; password: string } | undefined {
  const decoded = Buffer.from(auth, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon <= 0) {
    throw new RegistryError(
      "InvalidArgument",
      `${where}: "auth" for registry "${host}" is not base64 of "user:password"`,
      { registry: host },
    );
  }
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

export interface CredentialHelperOptions {
  env?: NodeJS.ProcessEnv;
}

/**
 * Runs `docker-credential-<name> get` with the server URL on stdin and reads
 * `{ServerURL, Username, Secret}` from stdout. `Username` `<token>` means the secret is an
 * identity token. "credentials not found" answers mean anonymous access.
 */
export async function runCredentialHelper(
  name: string,
  serverUrl: string,
  options: CredentialHelperOptions = {},
): Promise<RegistryCredentials | undefined> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) {
    throw new RegistryError("InvalidArgument", `credential helper name "${name}" is not valid`);
  }
  const program = `docker-credential-${name}`;
  const { code, stdout, stderr, spawnError } = await new Promise<{
    code: number | null;
    stdout: string;
    stderr: string;
    spawnError: Error | undefined;
  }>((resolve) => {
    const child = spawn(program, ["get"], {
      env: options.env ?? process.env,
      stdio: ["pipe", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    let failed: Error | undefined;
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      out += chunk;
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      err += chunk;
    });
    child.stdin.on("error", () => {
      // The helper may exit without reading stdin; its exit status tells what happened.
    });
    child.on("error", (error) => {
      failed = error;
    });
    child.on("close", (exitCode) =>
      resolve({ code: exitCode, stdout: out, stderr: err, spawnError: failed }),
    );
    child.stdin.end(serverUrl);
  });
  if (spawnError !== undefined) {
    throw new RegistryError(
      "FailedPrecondition",
      `credential helper ${program} for "${serverUrl}" could not run: ${spawnError.message}`,
      { cause: spawnError, registry: serverUrl },
    );
  }
  const output = `${stdout}${stderr}`.trim();
  if (code !== 0) {
    if (/credentials not found/i.test(output)) return undefined;
    throw new RegistryError(
      "FailedPrecondition",
      `credential helper ${program} failed for "${serverUrl}" (exit ${code}): ${output || "no output"}`,
      { registry: serverUrl },
    );
  }
  let answer: unknown;
  try {
    answer = JSON.parse(stdout);
  } catch (error) {
    throw new RegistryError(
      "FailedPrecondition",
      `credential helper ${program} answered for "${serverUrl}" with something that is not JSON`,
      { cause: error, registry: serverUrl },
    );
  }
  const username =
    isRecord(answer) && typeof answer.Username === "string" ? answer.Username : undefined;
  const secret = isRecord(answer) && typeof answer.Secret === "string" ? answer.Secret : undefined;
  if (secret === undefined || secret === "") {
    throw new RegistryError(
      "FailedPrecondition",
      `credential helper ${program} answered for "${serverUrl}" without a Secret`,
      { registry: serverUrl },
    );
  }
  const source = `credential helper ${program}`;
  if (username === "<token>") return { kind: "identity-token", identityToken: secret, source };
  return { kind: "basic", username: username ?? "", password: secret, source };
}

/**
 * A credentials provider reading docker's `config.json` (from `$DOCKER_CONFIG` or `~/.docker`)
 * once per host lookup, so that `docker login` between runs is seen.
 */
export function createDockerCredentialsProvider(
  options: DockerCredentialsOptions = {},
): CredentialsProvider {
  const configPath = dockerConfigPath(options);
  return async (host) => {
    const config = await readDockerConfig(configPath);
    const resolveOptions =
      options.env === undefined ? { configPath } : { configPath, env: options.env };
    return resolveDockerCredentials(config, host, resolveOptions);
  };
}

/** A provider that always answers the given credentials (or anonymous access). */
export function staticCredentials(
  credentials: RegistryCredentials | undefined,
): CredentialsProvider {
  return async () => credentials;
}
