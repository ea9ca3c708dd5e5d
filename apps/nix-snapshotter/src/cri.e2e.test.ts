import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { promisify } from "node:util";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { ImageService } from "@nix-snapshotter/api/cri/v1";
import {
  type ContainerdClient,
  createContainerdClient,
  importArchive,
} from "@nix-snapshotter/containerd-client";
import {
  type Containerd,
  type ContainerdVersion,
  containerdSkipReason,
  startContainerd,
} from "@nix-snapshotter/containerd-client/testing";
import { buildImage, writeImageArchive } from "@nix-snapshotter/image-builder";
import { startRegistry, type TestRegistry } from "@nix-snapshotter/image-builder/testing";
import {
  type BinaryCache,
  createNixFixtures,
  type NixFixtures,
  nixE2eSkipReason,
  type ScriptFixture,
  startBinaryCache,
} from "@nix-snapshotter/nix-store/testing";
import { testImageArchive } from "@nix-snapshotter/oci/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DaemonProcess, daemonEntry, startDaemonProcess } from "./testing/daemon-process.js";
import { pauseArchive, runPod as runPodAsKubelet, until } from "./testing/kubelet.js";

/**
 * The kubelet's part, played by this test: the daemon serves the CRI ImageService; containerd's
 * CRI plugin (snapshotter `nix`) runs the pod. A `nix:0` image whose archive is only in a local
 * binary cache is pulled through the daemon, then a host-network pod runs it.
 */

const execFileAsync = promisify(execFile);
const nixSkip = nixE2eSkipReason(["nix-store", "nix", "patchelf", "skopeo", "docker-registry"]);

const cases: [ContainerdVersion, "bind" | "hardlink"][] = [
  ["1.7", "bind"],
  ["2.1", "bind"],
  ["1.6", "hardlink"],
];

for (const [version, mountMode] of cases) {
  const skip =
    nixSkip ??
    containerdSkipReason(version) ??
    (existsSync(daemonEntry) ? "" : "the daemon is not built");
  describe.skipIf(skip !== "")(
    `kubelet through the daemon's ImageService, containerd ${version} CRI (${mountMode}) ${skip}`,
    () => {
      const nonce = randomBytes(4).toString("hex");
      const sandboxImage = `localhost/pause-${nonce}:test`;
      let work: string;
      let fixtures: NixFixtures;
      let script: ScriptFixture;
      let archivePath: string;
      let cache: BinaryCache;
      let daemon: DaemonProcess;
      let containerd: Containerd | undefined;
      let client: ContainerdClient;
      let containerdLink: string;
      let images: ReturnType<typeof createClient<typeof ImageService>>;
      let reference: string;
      let imageId: string;
      let registry: TestRegistry;
      let registryImage: string;
      let registryConfig: string;

      beforeAll(async () => {
        work = await mkdtemp(join(tmpdir(), "cri-e2e-"));
        fixtures = await createNixFixtures({ label: "cri-e2e" });
        script = await fixtures.script();
        const image = await buildImage({
          config: { entrypoint: [script.executable] },
          closure: script.closure,
        });
        const file = join(work, `nix-image-hello-${nonce}.tar`);
        await writeFile(file, writeImageArchive(image));

        // A second nix image (its mountpoint layer differs: busybox linked from /) in a registry
        // (plain HTTP on 127.0.0.1), for containerd's CRI's own pull path.
        const busybox = await fixtures.busybox();
        const registryArchive = join(work, "registry-image.tar");
        await writeFile(
          registryArchive,
          writeImageArchive(
            await buildImage({
              config: { entrypoint: [script.executable] },
              closure: script.closure,
              copyToRoot: [busybox.storePath],
            }),
          ),
        );
        registry = await startRegistry();
        registryImage = `${registry.host}/nix-hello-${nonce}:1`;
        await execFileAsync("skopeo", [
          "copy",
          "--dest-tls-verify=false",
          `oci-archive:${registryArchive}`,
          `docker://${registryImage}`,
        ]);
        const hostsDir = join(work, "certs.d", registry.host);
        await mkdir(hostsDir, { recursive: true });
        await writeFile(
          join(hostsDir, "hosts.toml"),
          `server = "http://${registry.host}"\n[host."http://${registry.host}"]\n  capabilities = ["pull", "resolve"]\n`,
        );
        const criImages =
          version === "2.1" ? "io.containerd.cri.v1.images" : "io.containerd.grpc.v1.cri";
        registryConfig = `[plugins."${criImages}".registry]\n  config_path = ${JSON.stringify(join(work, "certs.d"))}\n`;
        archivePath = (await execFileAsync("nix-store", ["--add", file])).stdout.trim();
        await fixtures.root("archive", [archivePath]);
        cache = await startBinaryCache({ paths: [archivePath] });
        await fixtures.unroot("archive");
        await fixtures.deletePaths([archivePath]);
        reference = `nix:0${archivePath}`;

        // The daemon starts before containerd: its containerd_address is a link made later.
        containerdLink = join(work, "containerd.sock");
        daemon = await startDaemonProcess({
          mountMode,
          imageService: { containerdAddress: containerdLink },
          env: {
            NIX_CONFIG: Object.entries(cache.nixOptions)
              .map(([key, value]) => `${key} = ${value}`)
              .join("\n"),
          },
        });
        images = createClient(ImageService, daemon.transport);
      });

      afterAll(async () => {
        client?.close();
        await containerd?.stop();
        await daemon?.cleanup();
        await cache?.close();
        await registry?.stop();
        await fixtures?.cleanup();
        if (work) await rm(work, { recursive: true, force: true });
      });

      it("answers ImageFsInfo and refuses hostile references while containerd is away", async () => {
        const info = await images.imageFsInfo({});
        expect(info.imageFilesystems.map((usage) => usage.fsId?.mountpoint)).toEqual([
          daemon.root,
          "/nix/store",
        ]);
        for (const hostile of [
          "nix:0/etc/passwd",
          "nix:0/nix/store/../../etc",
          `${reference}:v1`,
          `${reference}@sha256:${"a".repeat(64)}`,
          `nix:0/nix/store/${basename(archivePath).slice(0, 32)}-Upper-Case.tar`,
        ]) {
          const error = await images
            .pullImage({ image: { image: hostile } })
            .catch((caught: unknown) => caught);
          expect(ConnectError.from(error).code, hostile).toBe(Code.InvalidArgument);
        }
        const unavailable = await images.listImages({}).catch((caught: unknown) => caught);
        expect(ConnectError.from(unavailable).code).toBe(Code.Unavailable);
        expect(ConnectError.from(unavailable).rawMessage).toContain(containerdLink);
        // Nothing was asked of Nix for the hostile references.
        expect(cache.requests()).toBe(0);
      });

      it("recovers by itself when containerd comes up", async () => {
        containerd = await startContainerd({
          version,
          proxyPlugins: { nix: daemon.address },
          cri: { snapshotter: "nix", sandboxImage, restrictOomScoreAdj: true },
          extraConfig: registryConfig,
        });
        await symlink(containerd.address, containerdLink);
        client = createContainerdClient({ address: containerd.address, namespace: "k8s.io" });
        await importArchive(client, await pauseArchive(sandboxImage), {
          snapshotter: "nix",
          labels: { "io.cri-containerd.image": "managed" },
        });
        const listed = await until("ListImages through the daemon", async () => {
          const response = await images.listImages({});
          const tags = response.images.flatMap((image) => image.repoTags);
          return tags.includes(sandboxImage) ? tags : undefined;
        });
        expect(listed).toContain(sandboxImage);
      });

      it("refuses store paths that are not images, or hostile images, and keeps no root", async () => {
        const notArchive = join(work, `nix-image-text-${nonce}.tar`);
        await writeFile(notArchive, "not an archive\n");
        // A layer of its own (no snapshot shares its chain id) whose nix label names /etc.
        const evil = join(work, `nix-image-evil-${nonce}.tar`);
        await writeFile(
          evil,
          testImageArchive({
            layers: [[{ name: "evil", type: "file", mode: 0o644, data: Buffer.from(nonce) }]],
            annotations: {
              0: {
                "containerd.io/snapshot/nix-layer": "true",
                "containerd.io/snapshot/nix-store-path.0": "/etc",
              },
            },
            config: { Entrypoint: ["/etc/passwd"] },
          }).archive,
        );
        for (const file of [notArchive, evil]) {
          const storePath = (await execFileAsync("nix-store", ["--add", file])).stdout.trim();
          await fixtures.root(basename(file).replace(/\.tar$/, ""), [storePath]);
          const error = await images
            .pullImage({ image: { image: `nix:0${storePath}` } })
            .catch((caught: unknown) => caught);
          expect(ConnectError.from(error).code, ConnectError.from(error).rawMessage).toBe(
            Code.InvalidArgument,
          );
          expect(ConnectError.from(error).rawMessage).toMatch(/not an image archive|\/etc/);
          expect(await readdir(daemon.gcRootsDir)).not.toContain(
            `cri-image-${basename(storePath).slice(0, 32)}`,
          );
          const status = await images.imageStatus({ image: { image: `nix:0${storePath}` } });
          expect(status.image).toBeUndefined();
        }
      });

      it("pulls the nix:0 reference from the binary cache, and a second pull is cheap", async () => {
        const response = await images.pullImage({ image: { image: reference } });
        expect(response.imageRef).toMatch(/^sha256:[0-9a-f]{64}$/);
        expect(cache.requests()).toBeGreaterThan(0);
        const status = await images.imageStatus({ image: { image: `${reference}:latest` } });
        expect(status.image?.id).toBe(response.imageRef);
        expect(status.image?.repoTags).toContain(`${reference}:latest`);
        expect(Number(status.image?.size)).toBeGreaterThan(0);
        imageId = response.imageRef;
        expect(await readdir(daemon.gcRootsDir)).toContain(
          `cri-image-${basename(archivePath).slice(0, 32)}`,
        );

        const requests = cache.requests();
        const again = await images.pullImage({ image: { image: `${reference}:latest` } });
        expect(again.imageRef).toBe(imageId);
        expect(cache.requests()).toBe(requests);

        // An image containerd has but whose archive root is gone (loaded by other means) gets
        // its root back on pull, without an import or a substitution.
        const owner = `cri-image-${basename(archivePath).slice(0, 32)}`;
        await rm(join(daemon.gcRootsDir, owner), { recursive: true, force: true });
        const third = await images.pullImage({ image: { image: reference } });
        expect(third.imageRef).toBe(imageId);
        expect(await readdir(join(daemon.gcRootsDir, owner))).toEqual([basename(archivePath)]);
        expect(cache.requests()).toBe(requests);
      });

      /** Runs a host-network pod with one container of `image` and returns the container's log. */
      function runPod(image: string, userSpecifiedImage: string): Promise<string> {
        return runPodAsKubelet({
          client,
          work,
          image,
          userSpecifiedImage,
          expectOutput: "hello from nix store",
        });
      }

      it("runs a pod (host network) with the nix:0 image and reads its output", async () => {
        expect(await runPod(imageId, reference)).toMatch(/ stdout F hello from nix store\n/);
      });

      it("pulls an image with nix layers from a registry through containerd's CRI, and runs it", async () => {
        const before = (await readdir(daemon.gcRootsDir)).filter((owner) =>
          owner.startsWith("snapshot-"),
        );
        const response = await images.pullImage({ image: { image: registryImage } });
        expect(response.imageRef).toMatch(/^sha256:[0-9a-f]{64}$/);
        // CRI's unpacker passed the layer's nix labels: the snapshotter rooted the closure for
        // the new layer's snapshot.
        const after = (await readdir(daemon.gcRootsDir)).filter((owner) =>
          owner.startsWith("snapshot-"),
        );
        expect(after.length).toBeGreaterThan(before.length);
        expect(await runPod(response.imageRef, registryImage)).toMatch(
          / stdout F hello from nix store\n/,
        );
        await images.removeImage({ image: { image: response.imageRef } });
      });

      it("RemoveImage releases the archive's root, and containerd's GC the snapshot's", async () => {
        await images.removeImage({ image: { image: imageId } });
        const status = await images.imageStatus({ image: { image: reference } });
        expect(status.image).toBeUndefined();
        const owners = await until("every nix GC root of the daemon to go", async () => {
          const left = await readdir(daemon.gcRootsDir).catch(() => []);
          return left.length === 0 ? left : undefined;
        });
        expect(owners).toEqual([]);
        // Nothing roots the archive any more: Nix may delete it.
        await execFileAsync("nix-store", ["--delete", archivePath]);
        expect(existsSync(archivePath)).toBe(false);
      });
    },
  );
}
