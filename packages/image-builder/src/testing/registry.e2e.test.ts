import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { DOCKER_REGISTRY_BINARY, startRegistry, type TestRegistry } from "./registry.js";

const execFileAsync = promisify(execFile);

function hasProgram(name: string): boolean {
  return ["/usr/bin", "/bin", "/usr/local/bin"].some((dir) => existsSync(`${dir}/${name}`));
}

const missing = [
  existsSync(DOCKER_REGISTRY_BINARY) ? undefined : "docker-registry",
  hasProgram("htpasswd") ? undefined : "htpasswd",
  hasProgram("openssl") ? undefined : "openssl",
].filter((name) => name !== undefined);

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
}

/** Upload one blob with the monolithic POST + PUT flow, returning the PUT status. */
async function uploadBlob(registry: TestRegistry, repository: string, data: Buffer, auth?: string) {
  const headers: Record<string, string> = auth ? { Authorization: auth } : {};
  const start = await fetch(`${registry.url}/v2/${repository}/blobs/uploads/`, {
    method: "POST",
    headers,
  });
  await start.body?.cancel();
  if (start.status !== 202) return start.status;
  const location = new URL(start.headers.get("location")!, registry.url);
  location.searchParams.set("digest", `sha256:${createHash("sha256").update(data).digest("hex")}`);
  const put = await fetch(location, {
    method: "PUT",
    headers: { ...headers, "Content-Type": "application/octet-stream" },
    body: data,
  });
  await put.body?.cancel();
  return put.status;
}

describe.skipIf(missing.length > 0)(
  `test registry fixture (missing: ${missing.join(", ") || "none"})`,
  () => {
    let registry: TestRegistry | undefined;
    afterEach(async () => {
      await registry?.stop();
      registry = undefined;
    });

    it("serves without auth on 127.0.0.1, logs requests and removes its directory on stop", async () => {
      registry = await startRegistry();
      expect(registry.host).toMatch(/^127\.0\.0\.1:\d+$/);
      const response = await fetch(`${registry.url}/v2/`);
      expect(response.status).toBe(200);
      expect(await uploadBlob(registry, "fixture/none", Buffer.from("hello"))).toBe(201);
      // The access log is written after the response: wait for it.
      await expect
        .poll(() => registry!.requests().map((r) => `${r.method} ${r.status}`))
        .toEqual(["GET 200", "POST 202", "PUT 201"]);
      const directory = registry.directory;
      await registry.stop();
      await registry.stop();
      expect(existsSync(directory)).toBe(false);
      registry = undefined;
    });

    it("requires htpasswd Basic credentials", async () => {
      registry = await startRegistry({ auth: "basic" });
      const anonymous = await fetch(`${registry.url}/v2/`);
      expect(anonymous.status).toBe(401);
      expect(anonymous.headers.get("www-authenticate")).toMatch(/^Basic realm=/);
      const wrong = await fetch(`${registry.url}/v2/`, {
        headers: { Authorization: basic(registry.username, "wrong") },
      });
      expect(wrong.status).toBe(401);
      const right = await fetch(`${registry.url}/v2/`, {
        headers: { Authorization: basic(registry.username, registry.password) },
      });
      expect(right.status).toBe(200);
    });

    it("issues tokens the registry accepts and refuses bad credentials", async () => {
      registry = await startRegistry({ auth: "token" });
      const challenge = await fetch(`${registry.url}/v2/fixture/token/blobs/uploads/`, {
        method: "POST",
      });
      expect(challenge.status).toBe(401);
      const header = challenge.headers.get("www-authenticate") ?? "";
      expect(header).toContain(`realm="${registry.tokenRealm}"`);
      // docker-registry lists the actions in no fixed order (seen: "pull,push" and "push,pull").
      const scope = /scope="repository:fixture\/token:([^"]*)"/.exec(header);
      expect(scope?.[1]?.split(",").sort()).toEqual(["pull", "push"]);

      const tokenUrl = new URL(registry.tokenRealm!);
      tokenUrl.searchParams.set("service", registry.tokenService!);
      tokenUrl.searchParams.set("scope", "repository:fixture/token:pull,push");
      const refused = await fetch(tokenUrl, {
        headers: { Authorization: basic(registry.username, "wrong") },
      });
      expect(refused.status).toBe(401);
      const granted = await fetch(tokenUrl, {
        headers: { Authorization: basic(registry.username, registry.password) },
      });
      expect(granted.status).toBe(200);
      const { token } = (await granted.json()) as { token: string };
      expect(await uploadBlob(registry, "fixture/token", Buffer.from("x"), `Bearer ${token}`)).toBe(
        201,
      );
      // A token for one repository does not open another.
      expect(await uploadBlob(registry, "fixture/other", Buffer.from("x"), `Bearer ${token}`)).toBe(
        401,
      );
      expect(registry.tokenRequests().map((r) => r.status)).toEqual([401, 200]);
    });

    it("issues tokens for a refresh token (OAuth2 POST)", async () => {
      registry = await startRegistry({ auth: "token", tokenField: "access_token" });
      const response = await fetch(registry.tokenRealm!, {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({
          grant_type: "refresh_token",
          refresh_token: registry.refreshToken!,
          service: registry.tokenService!,
          scope: "repository:fixture/refresh:pull,push",
          client_id: "test",
        }),
      });
      expect(response.status).toBe(200);
      const body = (await response.json()) as { access_token: string; token?: string };
      expect(body.token).toBeUndefined();
      expect(
        await uploadBlob(
          registry,
          "fixture/refresh",
          Buffer.from("y"),
          `Bearer ${body.access_token}`,
        ),
      ).toBe(201);
    });

    it.skipIf(!hasProgram("skopeo"))(
      "is reachable by skopeo with the same credentials",
      async () => {
        registry = await startRegistry({ auth: "token" });
        const { stdout } = await execFileAsync("skopeo", [
          "login",
          "--tls-verify=false",
          "--authfile",
          `${registry.directory}/auth.json`,
          "-u",
          registry.username,
          "-p",
          registry.password,
          registry.host,
        ]);
        expect(stdout).toContain("Login Succeeded");
      },
    );
  },
);
