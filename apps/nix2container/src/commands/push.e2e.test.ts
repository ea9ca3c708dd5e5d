import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { promisify } from "node:util";
import {
  createRegistryPool,
  missingRegistryPrograms,
  skopeoRawManifest,
} from "@nix-snapshotter/image-builder/testing";
import { loadArchiveImage } from "@nix-snapshotter/oci";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { CliError } from "../cli-error.js";
import { createFakeStore, type FakeStore } from "../testing/fake-store.js";
import { runCli } from "../testing/run-cli.js";
import { type PushOutput, runPush } from "./push.js";

const execFileAsync = promisify(execFile);

const missingList = missingRegistryPrograms();

function sha256(data: Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

function capture(
  isTTY: boolean,
  columns = 100,
): PushOutput & { text: () => { stdout: string; stderr: string } } {
  const stdout = new PassThrough();
  const stderr = Object.assign(new PassThrough(), { isTTY, columns });
  let out = "";
  let err = "";
  stdout.on("data", (chunk: Buffer) => {
    out += chunk.toString();
  });
  stderr.on("data", (chunk: Buffer) => {
    err += chunk.toString();
  });
  return { stdout, stderr, text: () => ({ stdout: out, stderr: err }) };
}

describe.skipIf(missingList.length > 0)(
  `nix2container push (missing: ${missingList.join(", ") || "none"})`,
  () => {
    let root = "";
    let archive = "";
    let manifestDigest = "";
    const registries = createRegistryPool();
    const start = registries.start;

    let storeDir = "";
    let store: FakeStore;
    async function build(out: string, ...extra: string[]) {
      await runCli(...store.buildArgs(out, ...extra));
    }

    beforeAll(async () => {
      // A fake store (build takes --store-dir), so no Nix is needed to make the archive.
      store = await createFakeStore("nix2container-push-");
      ({ root, storeDir } = store);
      archive = join(root, "image.tar");
      await build(archive, "--ref", "example.com/hello:1");
      manifestDigest = loadArchiveImage(await readFile(archive)).manifestDescriptor.digest;
    });
    afterAll(async () => {
      await store?.cleanup();
    });
    afterEach(() => registries.stopAll());

    it("pushes a built archive without auth; skopeo reads identical digests; plain lines off a TTY", async () => {
      const registry = await start();
      const output = capture(false);
      const result = await runPush(archive, {
        ref: `${registry.host}/cli/hello:v1`,
        plainHttp: true,
        output,
      });
      expect(result.digest).toBe(manifestDigest);
      const { stdout, stderr } = output.text();
      expect(stdout).toBe(`${registry.host}/cli/hello:v1@${manifestDigest}\n`);
      expect(stderr).toContain("uploading 2 blobs");
      expect(stderr).toContain(`pushed manifest ${manifestDigest} as v1`);
      expect(stderr).not.toContain("\r");
      expect(sha256(await skopeoRawManifest(registry, "cli/hello:v1"))).toBe(manifestDigest);

      // skopeo sees the same manifest in the archive and in the registry.
      const { stdout: local } = await execFileAsync(
        "skopeo",
        ["inspect", "--raw", `oci-archive:${archive}`],
        { encoding: "buffer" },
      );
      expect(sha256(local)).toBe(manifestDigest);

      const layout = join(root, "pulled");
      await execFileAsync("skopeo", [
        "copy",
        "--src-tls-verify=false",
        `docker://${registry.host}/cli/hello:v1`,
        `oci:${layout}`,
      ]);
      const index = JSON.parse(await readFile(join(layout, "index.json"), "utf8")) as {
        manifests: { digest: string }[];
      };
      expect(index.manifests[0]?.digest).toBe(manifestDigest);
    });

    it("draws a progress bar on a TTY and skips blobs on a second push", async () => {
      const registry = await start();
      // A terminal that reports no size (as under `script`) still gets an 80-column bar.
      const first = capture(true, 0);
      await runPush(archive, { ref: `${registry.host}/cli/tty`, plainHttp: true, output: first });
      expect(first.text().stderr).toMatch(/\r\x1b\[2K.*cli\/tty:latest \[#+\]/);
      expect(first.text().stderr).toContain("2/2 blobs");
      registry.clearRequests();
      const second = capture(false);
      const result = await runPush(archive, {
        ref: `${registry.host}/cli/tty`,
        plainHttp: true,
        output: second,
      });
      expect(result.uploaded).toEqual([]);
      expect(result.skipped).toHaveLength(2);
      expect(second.text().stderr).toContain("uploading 0 blobs");
      await expect
        .poll(() =>
          registry
            .requests()
            .map((r) => r.method)
            .sort(),
        )
        .toEqual(["HEAD", "HEAD", "PUT"]);
    });

    it("pushes with Basic auth from $DOCKER_CONFIG through the command line", async () => {
      const registry = await start({ auth: "basic" });
      const dockerConfig = join(root, "docker-basic");
      await mkdir(dockerConfig, { recursive: true });
      await writeFile(
        join(dockerConfig, "config.json"),
        JSON.stringify({
          auths: {
            [registry.host]: {
              auth: Buffer.from(`${registry.username}:${registry.password}`).toString("base64"),
            },
          },
        }),
      );
      const saved = process.env.DOCKER_CONFIG;
      process.env.DOCKER_CONFIG = dockerConfig;
      try {
        const stdout = await runCli(
          "push",
          "--plain-http",
          "--ref",
          `${registry.host}/cli/basic:b`,
          archive,
        );
        expect(stdout.trim()).toBe(`${registry.host}/cli/basic:b@${manifestDigest}`);
      } finally {
        if (saved === undefined) delete process.env.DOCKER_CONFIG;
        else process.env.DOCKER_CONFIG = saved;
      }
      expect(sha256(await skopeoRawManifest(registry, "cli/basic:b"))).toBe(manifestDigest);
    });

    it("pushes with token auth and fails clearly with bad credentials", async () => {
      const registry = await start({ auth: "token" });
      const good = join(root, "docker-token-good");
      const bad = join(root, "docker-token-bad");
      for (const [directory, password] of [
        [good, registry.password],
        [bad, "wrong"],
      ] as const) {
        await mkdir(directory, { recursive: true });
        await writeFile(
          join(directory, "config.json"),
          JSON.stringify({
            auths: {
              [registry.host]: {
                auth: Buffer.from(`${registry.username}:${password}`).toString("base64"),
              },
            },
          }),
        );
      }
      const result = await runPush(archive, {
        ref: `${registry.host}/cli/token:t`,
        plainHttp: true,
        dockerConfig: good,
        output: capture(false),
      });
      expect(sha256(await skopeoRawManifest(registry, "cli/token:t"))).toBe(result.digest);

      const error = await runPush(archive, {
        ref: `${registry.host}/cli/token:t`,
        plainHttp: true,
        dockerConfig: bad,
        output: capture(false),
      }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(CliError);
      expect((error as Error).message).toContain(`registry "${registry.host}"`);
      expect((error as Error).message).toContain(`repository "cli/token"`);
      expect((error as Error).message).toContain("HTTP 401");
    });

    it("rejects bad references and tampered archives before contacting the registry", async () => {
      const registry = await start();
      for (const ref of [
        `${registry.host}/cli/Upper:1`,
        `${registry.host}/cli/app:bad tag`,
        `${registry.host}/cli/app:-dash`,
        "nix:0/nix/store/00000000000000000000000000000000-image.tar",
        "",
      ]) {
        await expect(
          runPush(archive, { ref, plainHttp: true, output: capture(false) }),
        ).rejects.toBeInstanceOf(CliError);
      }
      // A reference whose digest is not the archive's manifest.
      await expect(
        runPush(archive, {
          ref: `${registry.host}/cli/app@sha256:${"0".repeat(64)}`,
          plainHttp: true,
          output: capture(false),
        }),
      ).rejects.toThrow(/names digest sha256:0+, but the archive's manifest is/);

      // Flip one byte inside the layer blob of the archive.
      const data = await readFile(archive);
      const image = loadArchiveImage(data);
      const layer = image.layers[0]!.data;
      const offset = data.indexOf(layer);
      expect(offset).toBeGreaterThan(0);
      const tampered = Buffer.from(data);
      tampered[offset + layer.length - 1] = tampered[offset + layer.length - 1]! ^ 0x01;
      const tamperedPath = join(root, "tampered.tar");
      await writeFile(tamperedPath, tampered);
      const error = await runPush(tamperedPath, {
        ref: `${registry.host}/cli/app:1`,
        plainHttp: true,
        output: capture(false),
      }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(CliError);
      expect((error as Error).message).toContain(image.layers[0]!.descriptor.digest);
      expect(registry.requests()).toEqual([]);
    });

    it("uses the archive's own registry name without --ref, and requires --ref for a nix:0 name", async () => {
      const registry = await start();
      const named = join(root, "named.tar");
      await build(named, "--ref", `${registry.host}/cli/named:2`);
      const output = capture(false);
      const result = await runPush(named, { plainHttp: true, output });
      expect(output.text().stdout).toBe(`${registry.host}/cli/named:2@${result.digest}\n`);
      expect(sha256(await skopeoRawManifest(registry, "cli/named:2"))).toBe(result.digest);

      const nixNamed = join(storeDir, `${"d".repeat(32)}-nix-image-hello.tar`);
      await build(nixNamed);
      expect(loadArchiveImage(await readFile(nixNamed)).names).toEqual([`nix:0${nixNamed}:latest`]);
      await expect(runPush(nixNamed, { plainHttp: true, output: capture(false) })).rejects.toThrow(
        /--ref is required/,
      );
    });
  },
);
