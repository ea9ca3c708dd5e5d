import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { createRegistryClient, registryApiHost } from "./client.js";
import { staticCredentials } from "./credentials.js";
import { RegistryError } from "./errors.js";
import type { HttpRequest, HttpResponse, HttpTransport } from "./http.js";

type Reply = { status: number; headers?: Record<string, string>; body?: string };

/**
 * A scripted transport: our own seam below the client, answering each request with the next
 * reply from a handler and recording what was sent.
 */
function scripted(handler: (request: HttpRequest, index: number) => Reply) {
  const sent: HttpRequest[] = [];
  const transport: HttpTransport = async (request) => {
    sent.push(request);
    const reply = handler(request, sent.length - 1);
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(reply.headers ?? {})) {
      headers[name.toLowerCase()] = value;
    }
    const response: HttpResponse = {
      status: reply.status,
      headers,
      body: Readable.from(reply.body === undefined ? [] : [Buffer.from(reply.body)]),
    };
    return response;
  };
  return { transport, sent };
}

const digest = `sha256:${"a".repeat(64)}`;

describe("RegistryClient", () => {
  it("follows a Bearer challenge to the realm with service and scope, and reuses the token", async () => {
    const { transport, sent } = scripted((request) => {
      if (request.url.host === "auth.example") {
        return { status: 200, body: JSON.stringify({ access_token: "tok-1", expires_in: 300 }) };
      }
      if (request.headers.Authorization !== "Bearer tok-1") {
        return {
          status: 401,
          headers: {
            "WWW-Authenticate":
              'Bearer realm="https://auth.example/token",service="reg",scope="repository:app:pull,push"',
          },
        };
      }
      return { status: 404 };
    });
    const client = createRegistryClient({
      registry: "reg.example",
      transport,
      credentials: staticCredentials({
        kind: "basic",
        username: "u",
        password: "p",
        source: "test",
      }),
    });
    expect(await client.hasBlob("app", digest)).toBe(false);
    expect(await client.hasBlob("app", digest)).toBe(false);
    const token = sent.filter((request) => request.url.host === "auth.example");
    expect(token).toHaveLength(1);
    expect(token[0]!.url.searchParams.get("service")).toBe("reg");
    expect(token[0]!.url.searchParams.getAll("scope")).toEqual(["repository:app:pull,push"]);
    expect(token[0]!.headers.Authorization).toBe(`Basic ${Buffer.from("u:p").toString("base64")}`);
    // The second HEAD went straight out with the cached token.
    expect(sent.map((request) => `${request.method} ${request.url.host}`)).toEqual([
      "HEAD reg.example",
      "GET auth.example",
      "HEAD reg.example",
      "HEAD reg.example",
    ]);
    expect(sent[0]!.url.protocol).toBe("https:");
  });

  it("fails with Unauthenticated naming registry and repository when the token is refused", async () => {
    const { transport, sent } = scripted((request) =>
      request.url.pathname === "/token"
        ? { status: 200, body: JSON.stringify({ token: "t" }) }
        : {
            status: 401,
            headers: { "WWW-Authenticate": 'Bearer realm="https://reg.example/token"' },
            body: JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "no" }] }),
          },
    );
    const client = createRegistryClient({
      registry: "reg.example",
      transport,
      credentials: staticCredentials(undefined),
    });
    const error = await client.hasBlob("team/app", digest).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(RegistryError);
    expect((error as RegistryError).code).toBe("Unauthenticated");
    expect((error as RegistryError).repository).toBe("team/app");
    expect((error as RegistryError).message).toContain(
      'registry "reg.example" repository "team/app": HEAD blob',
    );
    expect((error as RegistryError).message).toContain("no credentials");
    expect(sent.filter((request) => request.url.pathname !== "/token")).toHaveLength(2);
  });

  it("maps 403 and 404 to PermissionDenied and NotFound without retrying", async () => {
    let calls = 0;
    const sleeps: number[] = [];
    const { transport } = scripted((request) => {
      calls++;
      return request.url.pathname.includes("/manifests/")
        ? {
            status: 404,
            body: JSON.stringify({
              errors: [{ code: "MANIFEST_UNKNOWN", message: "manifest unknown" }],
            }),
          }
        : { status: 403, body: "forbidden" };
    });
    const client = createRegistryClient({
      registry: "reg.example",
      transport,
      credentials: staticCredentials(undefined),
      sleep: async (milliseconds) => {
        sleeps.push(milliseconds);
      },
    });
    await expect(client.getManifest("app", "v1")).rejects.toMatchObject({
      code: "NotFound",
      message: expect.stringContaining("MANIFEST_UNKNOWN: manifest unknown"),
    });
    await expect(client.hasBlob("app", digest)).rejects.toMatchObject({ code: "PermissionDenied" });
    expect(calls).toBe(2);
    expect(sleeps).toEqual([]);
  });

  it("retries 503 and 429 with Retry-After, then succeeds; gives up after the attempts", async () => {
    const sleeps: number[] = [];
    const { transport } = scripted((_request, index) =>
      index === 0
        ? { status: 503 }
        : index === 1
          ? { status: 429, headers: { "Retry-After": "2" } }
          : { status: 200 },
    );
    const client = createRegistryClient({
      registry: "reg.example",
      transport,
      credentials: staticCredentials(undefined),
      retry: { attempts: 3, baseDelay: 100, maxDelay: 10_000 },
      sleep: async (milliseconds) => {
        sleeps.push(milliseconds);
      },
    });
    expect(await client.hasBlob("app", digest)).toBe(true);
    expect(sleeps).toHaveLength(2);
    expect(sleeps[0]).toBeGreaterThanOrEqual(50);
    expect(sleeps[0]).toBeLessThanOrEqual(100);
    expect(sleeps[1]).toBe(2000);

    const { transport: alwaysBusy } = scripted(() => ({ status: 503 }));
    const giveUp = createRegistryClient({
      registry: "reg.example",
      transport: alwaysBusy,
      credentials: staticCredentials(undefined),
      retry: { attempts: 2, baseDelay: 1, maxDelay: 1 },
      sleep: async () => {},
    });
    await expect(giveUp.hasBlob("app", digest)).rejects.toMatchObject({
      code: "Unavailable",
      message: expect.stringContaining("gave up after 2 attempts"),
    });
  });

  it("retries connection resets, not other network errors", async () => {
    let calls = 0;
    const reset: HttpTransport = async () => {
      calls++;
      throw Object.assign(new Error("socket hang up"), {
        code: calls < 2 ? "ECONNRESET" : "ENOTFOUND",
      });
    };
    const client = createRegistryClient({
      registry: "reg.example",
      transport: reset,
      credentials: staticCredentials(undefined),
      retry: { attempts: 5, baseDelay: 1, maxDelay: 1 },
      sleep: async () => {},
    });
    await expect(client.hasBlob("app", digest)).rejects.toMatchObject({
      code: "Unavailable",
      message: expect.stringContaining(
        'registry "reg.example" repository "app" unreachable at https://reg.example',
      ),
    });
    expect(calls).toBe(2);
  });

  it("says so when an HTTPS request meets a plain-HTTP server, naming no CLI flag", async () => {
    const client = createRegistryClient({
      registry: "127.0.0.1:5000",
      credentials: staticCredentials(undefined),
      retry: { attempts: 1 },
      transport: async () => {
        throw Object.assign(new Error("write EPROTO ... wrong version number"), { code: "EPROTO" });
      },
    });
    const error = await client.hasBlob("app", digest).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(RegistryError);
    expect((error as RegistryError).message).toContain("(the registry does not speak TLS here)");
    expect((error as RegistryError).message).not.toContain("--");
    expect((error as RegistryError).registrySpeaks).toBe("http");
  });

  it("refuses hostile registry hosts and maps docker.io to its API host", () => {
    expect(() => createRegistryClient({ registry: "evil.example/path" })).toThrow(/not valid/);
    expect(() => createRegistryClient({ registry: "user@host" })).toThrow(/not valid/);
    expect(registryApiHost("docker.io")).toBe("registry-1.docker.io");
    expect(registryApiHost("ghcr.io")).toBe("ghcr.io");
  });

  it("sends Basic credentials only after a Basic challenge, and only to the registry", async () => {
    const { transport, sent } = scripted((request) =>
      request.headers.Authorization === undefined
        ? { status: 401, headers: { "WWW-Authenticate": 'Basic realm="r"' } }
        : { status: 200 },
    );
    const client = createRegistryClient({
      registry: "reg.example",
      transport,
      credentials: staticCredentials({
        kind: "basic",
        username: "u",
        password: "p",
        source: "test",
      }),
    });
    await client.ping();
    expect(sent.map((request) => request.headers.Authorization)).toEqual([
      undefined,
      `Basic ${Buffer.from("u:p").toString("base64")}`,
    ]);
  });
});
