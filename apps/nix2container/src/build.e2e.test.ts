import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { type Containerd, startContainerd } from "@nix-snapshotter/containerd-client/testing";
import { startRegistry, type TestRegistry } from "@nix-snapshotter/image-builder/testing";
import { HOST_BUILD_OPTIONS } from "@nix-snapshotter/nix-store/testing";
import { loadArchiveImage, sha256Digest } from "@nix-snapshotter/oci";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const execFileAsync = promisify(execFile);
const cli = join(dirname(fileURLToPath(import.meta.url)), "..", "dist", "main.js");
const programs = [
  "/usr/bin/nix-build",
  "/usr/bin/skopeo",
  "/usr/bin/docker-registry",
  "/usr/bin/containerd",
];
const missing = programs.filter((program) => !existsSync(program));
const isRoot = process.getuid?.() === 0;
const skipReason = !isRoot
  ? "needs root"
  : missing.length > 0
    ? `missing ${missing.join(", ")}`
    : "";

// Busybox in a store path, a store path that is a symlink to it, a config file and a closure-info
// listing all three, like nix/buildImage makes. The nonce keeps this test's paths its own.
const expression = `{ nonce }:
let
  system = builtins.currentSystem;
  busyboxEnv = builtins.derivation {
    name = "busybox-env"; inherit system; builder = "/bin/sh";
    args = [ "-c" "PATH=/usr/bin:/bin; mkdir -p $out/bin $out/etc; cp /bin/busybox $out/bin/busybox; ln -s busybox $out/bin/sh; echo \${nonce} > $out/etc/nonce" ];
  };
  alias = builtins.derivation {
    name = "busybox-alias"; inherit system; builder = "/bin/sh";
    args = [ "-c" "PATH=/usr/bin:/bin; ln -s \${busyboxEnv} $out" ];
  };
  config = builtins.toFile "config-e2e.json" (builtins.toJSON {
    entrypoint = [ "/bin/sh" "-c" "echo hello" ];
    env = [ "NONCE=\${nonce}" ];
  });
in builtins.derivation {
  name = "closure-info"; inherit system; builder = "/bin/sh";
  args = [ "-c" "PATH=/usr/bin:/bin; mkdir $out; printf '%s\\\\n' \${busyboxEnv} \${alias} \${config} | sort > $out/store-paths" ];
}
`;

async function nix2container(...args: string[]): Promise<string> {
  const { stdout } = await execFileAsync(process.execPath, [cli, "-l", "warn", ...args], {
    maxBuffer: 1 << 26,
  });
  return stdout;
}

async function skopeo(...args: string[]): Promise<string> {
  const { stdout } = await execFileAsync("skopeo", args, { maxBuffer: 1 << 26 });
  return stdout;
}

describe.skipIf(skipReason !== "")(`nix2container build with real programs ${skipReason}`, () => {
  let work: string;
  let gcRoot: string;
  let closureInfo: string;
  let storePaths: string[];
  let configPath: string;
  let aliasPath: string;
  let archive: string;
  let archiveBytes: Buffer;

  async function build(out: string, ...extra: string[]): Promise<void> {
    await nix2container(
      "build",
      "--config",
      configPath,
      "--closure",
      join(closureInfo, "store-paths"),
      "--copy-to-root",
      join(work, "copy-to-root.json"),
      ...extra,
      out,
    );
  }

  beforeAll(async () => {
    if (!existsSync(cli)) throw new Error(`${cli} is missing: run pnpm build first`);
    const nonce = randomBytes(6).toString("hex");
    work = await mkdtemp(join(tmpdir(), "nix2container-e2e-"));
    gcRoot = `/nix/var/nix/gcroots/nix-snapshotter-tests/nix2container-${nonce}`;
    await mkdir(gcRoot, { recursive: true });
    await writeFile(join(work, "image.nix"), expression);
    // nix-build registers the root itself before releasing its temporary roots: no GC window.
    await execFileAsync("nix-build", [
      join(work, "image.nix"),
      "--argstr",
      "nonce",
      nonce,
      "-o",
      join(gcRoot, "closure-info"),
      // The builders copy the host's /bin/busybox with host programs: unsandboxed.
      ...HOST_BUILD_OPTIONS,
    ]);
    closureInfo = await readlink(join(gcRoot, "closure-info"));
    storePaths = (await readFile(join(closureInfo, "store-paths"), "utf8")).trim().split("\n");
    configPath = storePaths.find((path) => path.endsWith("-config-e2e.json"))!;
    aliasPath = storePaths.find((path) => path.endsWith("-busybox-alias"))!;
    await writeFile(join(work, "copy-to-root.json"), JSON.stringify([aliasPath]));
    archive = join(work, "image.tar");
    await build(archive, "--ref", "localhost/nix2container-e2e:1");
    archiveBytes = await readFile(archive);
  });

  afterAll(async () => {
    if (gcRoot !== undefined) await rm(gcRoot, { recursive: true, force: true });
    if (work !== undefined) await rm(work, { recursive: true, force: true });
  });

  it("builds the same archive twice, and a nix base image keeps its annotations", async () => {
    const again = join(work, "again.tar");
    await build(again, "--ref", "localhost/nix2container-e2e:1");
    expect((await readFile(again)).equals(archiveBytes)).toBe(true);

    const image = loadArchiveImage(archiveBytes);
    // The default for a closure-info: the closure form alone.
    expect(image.layers[0]?.descriptor.annotations).toEqual({
      "containerd.io/snapshot/nix-closure": closureInfo,
    });
    const both = join(work, "both.tar");
    await build(both, "--ref", "localhost/nix2container-e2e:1", "--annotations", "both");
    const mounted = storePaths.filter((path) => path !== configPath);
    expect(loadArchiveImage(await readFile(both)).layers[0]?.descriptor.annotations).toEqual({
      "containerd.io/snapshot/nix-layer": "true",
      ...Object.fromEntries(
        mounted.map((path, index) => [`containerd.io/snapshot/nix-store-path.${index}`, path]),
      ),
      "containerd.io/snapshot/nix-closure": closureInfo,
    });

    const derived = join(work, "derived.tar");
    await build(derived, "--ref", "localhost/derived:1", "--from-image", archive);
    const derivedImage = loadArchiveImage(await readFile(derived));
    expect(derivedImage.layers[0]?.descriptor).toEqual(image.layers[0]?.descriptor);
    expect(derivedImage.config.rootfs.diff_ids.slice(0, 1)).toEqual(image.config.rootfs.diff_ids);
  });

  it("takes base images written by skopeo: docker-archive (plain and gzip) and oci-archive", async () => {
    const image = loadArchiveImage(archiveBytes);
    const dockerBase = join(work, "base-docker.tar");
    await skopeo("copy", `oci-archive:${archive}`, `docker-archive:${dockerBase}:base:1`);
    await writeFile(`${dockerBase}.gz`, gzipSync(await readFile(dockerBase)));
    const ociBase = join(work, "base-oci.tar");
    await skopeo("copy", `oci-archive:${archive}`, `oci-archive:${ociBase}:base`);
    for (const base of [dockerBase, `${dockerBase}.gz`, ociBase]) {
      const out = join(work, "derived-from-skopeo.tar");
      await build(out, "--ref", "localhost/derived:2", "--from-image", base);
      const derived = loadArchiveImage(await readFile(out));
      expect(derived.layers, base).toHaveLength(2);
      if (base === ociBase) {
        // skopeo keeps the OCI layer as it was, annotations included.
        expect(derived.layers[0]?.descriptor).toEqual(image.layers[0]?.descriptor);
      } else {
        // docker-archive stores layers uncompressed: the blob is the diff itself.
        expect(derived.layers[0]?.descriptor.digest, base).toBe(image.config.rootfs.diff_ids[0]);
        expect(derived.layers[0]?.descriptor.mediaType, base).toBe(
          "application/vnd.oci.image.layer.v1.tar",
        );
      }
      expect(derived.config.rootfs.diff_ids[0], base).toBe(image.config.rootfs.diff_ids[0]);
      expect(derived.config.config?.Entrypoint, base).toEqual(["/bin/sh", "-c", "echo hello"]);
      const inspected = JSON.parse(await skopeo("inspect", `oci-archive:${out}`)) as {
        Layers: string[];
      };
      expect(inspected.Layers).toEqual(derived.layers.map((layer) => layer.descriptor.digest));
    }
  });

  it("is accepted by skopeo inspect oci-archive:", async () => {
    const image = loadArchiveImage(archiveBytes);
    const inspected = JSON.parse(await skopeo("inspect", `oci-archive:${archive}`)) as Record<
      string,
      unknown
    >;
    expect(inspected.Digest).toBe(image.manifestDescriptor.digest);
    expect(inspected.Architecture).toBe(image.config.architecture);
    expect(inspected.Layers).toEqual([image.layers[0]?.descriptor.digest]);
    const raw = await skopeo("inspect", "--raw", `oci-archive:${archive}`);
    expect(sha256Digest(raw)).toBe(image.manifestDescriptor.digest);
  });

  describe("with a docker-registry on 127.0.0.1", () => {
    let registry: TestRegistry;
    beforeAll(async () => {
      registry = await startRegistry();
    });
    afterAll(async () => {
      await registry?.stop();
    });

    it("is copied by skopeo and comes back with identical digests and annotations", async () => {
      const image = loadArchiveImage(archiveBytes);
      const destination = `docker://${registry.host}/nix2container-e2e:1`;
      await skopeo("copy", "--dest-tls-verify=false", `oci-archive:${archive}`, destination);
      const raw = await skopeo("inspect", "--raw", "--tls-verify=false", destination);
      expect(sha256Digest(raw)).toBe(image.manifestDescriptor.digest);
      const manifest = JSON.parse(raw) as {
        layers: Array<{ annotations?: Record<string, string> }>;
      };
      expect(manifest.layers[0]?.annotations?.["containerd.io/snapshot/nix-closure"]).toBe(
        closureInfo,
      );
    });
  });

  describe("with containerd 1.6", () => {
    let containerd: Containerd;
    beforeAll(async () => {
      containerd = await startContainerd({ version: "1.6" });
    });
    afterAll(async () => {
      await containerd?.stop();
    });

    it("is imported (and unpacked) by ctr images import, also under a nix:0 name", async () => {
      const image = loadArchiveImage(archiveBytes);
      await containerd.ctr(["images", "import", archive]);
      const nixName = `nix:0/nix/store/${"0".repeat(32)}-nix-image-e2e.tar:latest`;
      const nixArchive = join(work, "nix-named.tar");
      await build(nixArchive, "--ref", nixName);
      await containerd.ctr(["images", "import", nixArchive]);
      const { stdout } = await containerd.ctr(["images", "ls"]);
      const lines = stdout.split("\n");
      for (const name of ["localhost/nix2container-e2e:1", nixName]) {
        const line = lines.find((candidate) => candidate.startsWith(`${name} `));
        expect(line, stdout).toContain(image.manifestDescriptor.digest);
      }
      const { stdout: snapshots } = await containerd.ctr(["snapshots", "ls"]);
      const chainId = image.config.rootfs.diff_ids[0]!;
      expect(snapshots).toContain(chainId);

      // A nix image on top of a nix base: two layers, unpacked as a chain.
      const derivedArchive = join(work, "derived-for-containerd.tar");
      await build(derivedArchive, "--ref", "localhost/derived:3", "--from-image", archive);
      await containerd.ctr(["images", "import", derivedArchive]);
      const derived = loadArchiveImage(await readFile(derivedArchive));
      const [first, second] = derived.config.rootfs.diff_ids;
      const topChainId = sha256Digest(`${first} ${second}`);
      const { stdout: after } = await containerd.ctr(["snapshots", "ls"]);
      expect(after).toMatch(new RegExp(`${topChainId}\\s+${chainId}`));
    });
  });
});
