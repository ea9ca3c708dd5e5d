import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createPrivateKey, createSign, type KeyObject, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import {
  createServer,
  get as httpGet,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { get as httpsGet } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

/** Path of Debian's `docker-registry` (distribution 2.8). */
export const DOCKER_REGISTRY_BINARY = "/usr/bin/docker-registry";

export type RegistryAuth = "none" | "basic" | "token";

export interface StartRegistryOptions {
  /** How clients authenticate: none (default), htpasswd Basic, or Bearer tokens from a token server. */
  auth?: RegistryAuth;
  /** User name accepted by Basic auth and by the token server (default `tester`). */
  username?: string;
  /** Password for `username` (default: random). */
  password?: string;
  /** Path of the registry binary (default {@link DOCKER_REGISTRY_BINARY}). */
  binary?: string;
  /**
   * Token server only: which JSON fields carry the token. `token` (default) answers `{token}`,
   * `access_token` answers `{access_token}`, `both` answers both.
   */
  tokenField?: "token" | "access_token" | "both";
  /** Token server only: anonymous requests get a token with pull access (default false: 401). */
  anonymousPull?: boolean;
  /**
   * Serve HTTPS with a self-signed certificate for IP 127.0.0.1 (made with `openssl`); clients
   * trust it through `caCertificate`. Default false: plain HTTP.
   */
  tls?: boolean;
}

/** One request as written to the registry's access log. */
export interface RegistryRequest {
  method: string;
  /** Path and query, as the registry received them. */
  uri: string;
  status: number;
}

/** One request seen by the fixture's token server. */
export interface TokenRequest {
  method: string;
  /** `service` parameter. */
  service: string | undefined;
  /** Every `scope` parameter. */
  scopes: string[];
  /** User name from Basic auth or the POST form, if any. */
  username: string | undefined;
  /** `grant_type` of a POST (OAuth2 form), undefined for GET. */
  grantType: string | undefined;
  status: number;
}

export interface TestRegistry {
  /** `127.0.0.1:<port>`: the host part of image references. */
  host: string;
  /** `http://127.0.0.1:<port>` (`https://` with `tls`). */
  url: string;
  /** PEM of the registry's self-signed certificate when `tls` is set. */
  caCertificate: string | undefined;
  /** Accepted user name (also set, but ignored by the registry, when auth is `none`). */
  username: string;
  password: string;
  auth: RegistryAuth;
  /** Token server realm (`http://127.0.0.1:<port>/token`) when auth is `token`. */
  tokenRealm: string | undefined;
  /** Token server `service` name when auth is `token`. */
  tokenService: string | undefined;
  /** A refresh token the token server accepts (auth `token`): use as a docker `identitytoken`. */
  refreshToken: string | undefined;
  /** Directory holding the registry's storage, config and credentials. */
  directory: string;
  /** Requests the registry has logged so far (its access log, in order). */
  requests(): RegistryRequest[];
  /** Forget the requests logged so far. */
  clearRequests(): void;
  /** Requests the token server has answered so far. */
  tokenRequests(): TokenRequest[];
  /** Stop the registry and the token server and remove the directory. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Start Debian's `docker-registry` on 127.0.0.1 with its own config and storage in a temporary
 * directory, and wait until it answers `/v2/`. With `auth: "basic"` it uses a bcrypt htpasswd
 * file; with `auth: "token"` a token server in this process signs ES256 JWTs with a
 * self-signed certificate (made with `openssl`) carried in the JWT header's `x5c`.
 */
export async function startRegistry(options: StartRegistryOptions = {}): Promise<TestRegistry> {
  const auth = options.auth ?? "none";
  const username = options.username ?? "tester";
  const password = options.password ?? randomBytes(12).toString("hex");
  const binary = options.binary ?? DOCKER_REGISTRY_BINARY;
  const directory = await mkdtemp(join(tmpdir(), "nix-snapshotter-registry-"));
  let tokenServer: TokenServer | undefined;
  try {
    let authConfig = "";
    if (auth === "basic") {
      const { stdout } = await execFileAsync("htpasswd", ["-Bbn", username, password]);
      await writeFile(join(directory, "htpasswd"), stdout);
      authConfig = [
        "auth:",
        "  htpasswd:",
        "    realm: nix-snapshotter-test",
        `    path: ${join(directory, "htpasswd")}`,
      ].join("\n");
    } else if (auth === "token") {
      tokenServer = await startTokenServer({
        directory,
        username,
        password,
        tokenField: options.tokenField ?? "token",
        anonymousPull: options.anonymousPull ?? false,
      });
      authConfig = [
        "auth:",
        "  token:",
        `    realm: ${tokenServer.realm}`,
        `    service: ${tokenServer.service}`,
        `    issuer: ${tokenServer.issuer}`,
        `    rootcertbundle: ${tokenServer.certificatePath}`,
      ].join("\n");
    }
    let tls: RegistryTls | undefined;
    if (options.tls === true) {
      tls = {
        certificatePath: join(directory, "tls-cert.pem"),
        keyPath: join(directory, "tls-key.pem"),
        certificate: "",
      };
      tls.certificate = await selfSignedCertificate(tls.keyPath, tls.certificatePath, [
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
      ]);
    }
    const registry = await launchRegistry(binary, directory, authConfig, tls);
    const stop = once(async () => {
      await registry.stop();
      await tokenServer?.close();
      await rm(directory, { recursive: true, force: true });
    });
    return {
      host: `127.0.0.1:${registry.port}`,
      url: `${tls === undefined ? "http" : "https"}://127.0.0.1:${registry.port}`,
      caCertificate: tls?.certificate,
      username,
      password,
      auth,
      tokenRealm: tokenServer?.realm,
      tokenService: tokenServer?.service,
      refreshToken: tokenServer?.refreshToken,
      directory,
      requests: () => [...registry.requests],
      clearRequests: () => {
        registry.requests.length = 0;
      },
      tokenRequests: () => [...(tokenServer?.requests ?? [])],
      stop,
    };
  } catch (error) {
    await tokenServer?.close();
    await rm(directory, { recursive: true, force: true });
    throw error;
  }
}

function once(action: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | undefined;
  return () => {
    running ??= action();
    return running;
  };
}

interface RunningRegistry {
  port: number;
  requests: RegistryRequest[];
  stop(): Promise<void>;
}

interface RegistryTls {
  certificatePath: string;
  keyPath: string;
  certificate: string;
}

async function launchRegistry(
  binary: string,
  directory: string,
  authConfig: string,
  tls: RegistryTls | undefined,
): Promise<RunningRegistry> {
  let lastError: unknown;
  // The free port is found by binding port 0 and releasing it: another process may take it in
  // between, so retry with a new port when the registry cannot listen.
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const configPath = join(directory, "config.yml");
    await writeFile(configPath, registryConfig(directory, port, authConfig, tls));
    try {
      return await spawnRegistry(binary, configPath, port, tls);
    } catch (error) {
      lastError = error;
      if (!(error instanceof Error && /address already in use/.test(error.message))) throw error;
    }
  }
  throw lastError;
}

function registryConfig(
  directory: string,
  port: number,
  authConfig: string,
  tls: RegistryTls | undefined,
): string {
  return `${[
    "version: 0.1",
    "log:",
    "  level: info",
    "  formatter: text",
    "storage:",
    "  filesystem:",
    `    rootdirectory: ${join(directory, "storage")}`,
    "  delete:",
    "    enabled: true",
    "http:",
    `  addr: 127.0.0.1:${port}`,
    `  secret: ${randomBytes(16).toString("hex")}`,
    "  headers:",
    "    X-Content-Type-Options: [nosniff]",
    ...(tls === undefined
      ? []
      : ["  tls:", `    certificate: ${tls.certificatePath}`, `    key: ${tls.keyPath}`]),
    authConfig,
  ]
    .filter((line) => line !== "")
    .join("\n")}\n`;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

// Combined log format written by the registry's access log on stdout:
// 127.0.0.1 - - [23/Nov/2026:18:00:00 +0000] "HEAD /v2/x/blobs/sha256:... HTTP/1.1" 404 157 "" "ua"
const ACCESS_LOG_LINE = /"([A-Z]+) (\S+) HTTP\/[\d.]+" (\d{3}) /;

async function spawnRegistry(
  binary: string,
  configPath: string,
  port: number,
  tls: RegistryTls | undefined,
): Promise<RunningRegistry> {
  const environment: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    // REGISTRY_* variables override the config file: keep the caller's out.
    if (!name.startsWith("REGISTRY_")) environment[name] = value;
  }
  const child = spawn(binary, ["serve", configPath], {
    env: environment,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const requests: RegistryRequest[] = [];
  let stderrTail = "";
  let stdoutBuffer = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => {
    stdoutBuffer += chunk;
    let newline = stdoutBuffer.indexOf("\n");
    while (newline !== -1) {
      const line = stdoutBuffer.slice(0, newline);
      stdoutBuffer = stdoutBuffer.slice(newline + 1);
      const match = ACCESS_LOG_LINE.exec(line);
      if (match) requests.push({ method: match[1]!, uri: match[2]!, status: Number(match[3]) });
      newline = stdoutBuffer.indexOf("\n");
    }
  });
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => {
    stderrTail = (stderrTail + chunk).slice(-8192);
  });
  const exited = new Promise<number | null>((resolve) => {
    child.once("exit", (code) => resolve(code));
    child.once("error", () => resolve(null));
  });
  const spawnError = new Promise<Error>((resolve) => child.once("error", resolve));

  const url = `${tls === undefined ? "http" : "https"}://127.0.0.1:${port}/v2/`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const outcome = await Promise.race([
      exited.then(() => "exited" as const),
      probe(url, tls?.certificate).then((ok) => (ok ? ("ready" as const) : ("waiting" as const))),
    ]);
    if (outcome === "ready") break;
    if (outcome === "exited") {
      const error = await Promise.race([spawnError, Promise.resolve(undefined)]);
      throw new Error(
        `docker-registry (${binary}) exited before answering ${url}: ${error?.message ?? stderrTail.trim()}`,
      );
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`docker-registry did not answer ${url} within 30 s: ${stderrTail.trim()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  // The probes above are part of the access log: start the log empty.
  await new Promise((resolve) => setTimeout(resolve, 20));
  requests.length = 0;
  return { port, requests, stop: () => stopChild(child, exited) };
}

/** GET /v2/: 200 without auth, 401 with a challenge when auth is on; both mean it is serving. */
function probe(url: string, ca: string | undefined): Promise<boolean> {
  return new Promise((resolve) => {
    const target = new URL(url);
    const send = target.protocol === "https:" ? httpsGet : httpGet;
    const request = send(
      target,
      { timeout: 2000, ...(ca === undefined ? {} : { ca }) },
      (response) => {
        response.resume();
        resolve(response.statusCode === 200 || response.statusCode === 401);
      },
    );
    request.on("timeout", () => request.destroy());
    request.on("error", () => resolve(false));
  });
}

async function stopChild(child: ChildProcess, exited: Promise<number | null>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  certificatePath: string;
  refreshToken: string;
  requests: TokenRequest[];
  close(): Promise<void>;
}

interface TokenServerOptions {
  directory: string;
  username: string;
  password: string;
  tokenField: "token" | "access_token" | "both";
  anonymousPull: boolean;
}

/**
 * Writes a P-256 key and a self-signed certificate valid for two days (`openssl req -x509` with
 * `subjectOptions` such as `-subj`), and returns the certificate's PEM.
 */
async function selfSignedCertificate(
  keyPath: string,
  certificatePath: string,
  subjectOptions: string[],
): Promise<string> {
  await execFileAsync("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    keyPath,
    "-out",
    certificatePath,
    "-days",
    "2",
    ...subjectOptions,
  ]);
  return readFile(certificatePath, "utf8");
}

async function startTokenServer(options: TokenServerOptions): Promise<TokenServer> {
  const keyPath = join(options.directory, "token-key.pem");
  const certificatePath = join(options.directory, "token-cert.pem");
  const certificatePem = await selfSignedCertificate(keyPath, certificatePath, [
    "-subj",
    "/CN=nix-snapshotter test token issuer",
  ]);
  const key = createPrivateKey(await readFile(keyPath));
  const certificateDer = certificatePem
    .replace(/-----(BEGIN|END) CERTIFICATE-----/g, "")
    .replace(/\s+/g, "");
  const service = "nix-snapshotter-test-registry";
  const issuer = "nix-snapshotter-test-token-issuer";
  const refreshToken = randomBytes(24).toString("hex");
  const requests: TokenRequest[] = [];

  const server: Server = createServer((request, response) => {
    handleTokenRequest(request, response).catch((error: unknown) => {
      if (!response.headersSent) response.writeHead(500);
      response.end(String(error));
    });
  });

  async function handleTokenRequest(request: IncomingMessage, response: ServerResponse) {
    const url = new URL(request.url ?? "/", "http://127.0.0.1");
    const answer = (status: number, body: unknown, record: Omit<TokenRequest, "status">) => {
      requests.push({ ...record, status });
      response.writeHead(status, { "Content-Type": "application/json" });
      response.end(JSON.stringify(body));
    };
    if (url.pathname !== "/token") {
      response.writeHead(404);
      response.end();
      return;
    }
    let parameters = url.searchParams;
    let user: string | undefined;
    let authenticated = false;
    let grantType: string | undefined;
    if (request.method === "POST") {
      // OAuth2 form (docker's token spec): grant_type=password or refresh_token.
      const chunks: Buffer[] = [];
      for await (const chunk of request) chunks.push(chunk as Buffer);
      parameters = new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
      grantType = parameters.get("grant_type") ?? undefined;
      if (grantType === "password") {
        user = parameters.get("username") ?? undefined;
        authenticated =
          user === options.username && parameters.get("password") === options.password;
      } else if (grantType === "refresh_token") {
        authenticated = parameters.get("refresh_token") === refreshToken;
        user = authenticated ? options.username : undefined;
      }
    } else if (request.method === "GET") {
      const header = request.headers.authorization;
      if (header?.startsWith("Basic ")) {
        const decoded = Buffer.from(header.slice(6), "base64").toString("utf8");
        const colon = decoded.indexOf(":");
        user = decoded.slice(0, colon);
        authenticated = user === options.username && decoded.slice(colon + 1) === options.password;
      }
    } else {
      response.writeHead(405);
      response.end();
      return;
    }
    const scopes = parameters.getAll("scope").flatMap((scope) => scope.split(" "));
    const record = {
      method: request.method,
      service: parameters.get("service") ?? undefined,
      scopes,
      username: user,
      grantType,
    };
    const anonymous = user === undefined && grantType === undefined;
    if (!authenticated && !(anonymous && options.anonymousPull)) {
      answer(401, { errors: [{ code: "UNAUTHORIZED", message: "bad credentials" }] }, record);
      return;
    }
    const access = scopes.flatMap((scope) => {
      // repository:<name>:<actions>; the name itself may contain ':' only with a port, never here.
      const parts = scope.split(":");
      if (parts.length < 3) return [];
      const actions = parts.at(-1)!.split(",");
      const granted = authenticated ? actions : actions.filter((action) => action === "pull");
      return [{ type: parts[0], name: parts.slice(1, -1).join(":"), actions: granted }];
    });
    const now = Math.floor(Date.now() / 1000);
    const token = signJwt(key, certificateDer, {
      iss: issuer,
      sub: authenticated ? options.username : "",
      aud: service,
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: randomBytes(8).toString("hex"),
      access,
    });
    const body: Record<string, unknown> = { expires_in: 300, issued_at: new Date().toISOString() };
    if (options.tokenField !== "access_token") body.token = token;
    if (options.tokenField !== "token") body.access_token = token;
    if (grantType !== undefined && parameters.get("access_type") === "offline") {
      body.refresh_token = refreshToken;
    }
    answer(200, body, record);
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address() as AddressInfo;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certificatePath,
    refreshToken,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function base64Url(data: Buffer | string): string {
  return Buffer.from(data).toString("base64url");
}

/** ES256 JWT whose header carries the signing certificate (`x5c`), as distribution 2.8 verifies. */
function signJwt(key: KeyObject, certificateDer: string, claims: Record<string, unknown>): string {
  const header = { typ: "JWT", alg: "ES256", x5c: [certificateDer] };
  const signingInput = `${base64Url(JSON.stringify(header))}.${base64Url(JSON.stringify(claims))}`;
  const signature = createSign("SHA256")
    .update(signingInput)
    .sign({ key, dsaEncoding: "ieee-p1363" });
  return `${signingInput}.${base64Url(signature)}`;
}
