// The Nix interface's last step, end to end: `buildImage` (resolvedByNix = true) evaluated against
// the stand-in nixpkgs is built with nix-build from a fixture closure; the passthru `image`
// (evaluated with nix-instantiate) is the reference this test, playing the kubelet, pulls through
// the daemon's CRI ImageService and runs in a pod with containerd's CRI plugin.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  Code,
  ConnectError,
  type Containerd,
  type ContainerdClient,
  type ContainerdVersion,
  containerdSkipReason,
  createContainerdClient,
  criImageClient,
  type DaemonProcess,
  daemonEntry,
  importArchive,
  pauseArchive,
  runPod,
  startContainerd,
  startDaemonProcess,
  testGcRootsParent,
  until,
} from "../../apps/nix-snapshotter/src/testing/kubelet.js";
import { otherUsersStage } from "../../apps/nix-snapshotter/src/testing/other-users.js";

const run = promisify(execFile);
const testsDir = dirname(fileURLToPath(import.meta.url));
const repo = resolve(testsDir, "../..");
const nix2containerMain = join(repo, "apps/nix2container/dist/main.js");
/** Node and the built apps where Nix build users can run them (the stand-in's nix2container). */
const staged = otherUsersStage(repo);

/** Appended to every nix-build: the stand-in nixpkgs builds with host programs (see nix.e2e.test.ts). */
const hostBuildOptions = ["--option", "sandbox", "false"];

async function exec(file: string, args: string[]): Promise<string> {
  if (file === "nix-build") args = [...args, ...hostBuildOptions];
  try {
    const { stdout } = await run(file, args, { cwd: testsDir, maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const failure = error as Error & { stderr?: string };
    throw new Error(`${file} ${args.join(" ")} failed: ${failure.stderr ?? failure.message}`);
  }
}

function nixString(value: string): string {
  return JSON.stringify(value).replaceAll("${", "\\${");
}

const isRoot = process.getuid?.() === 0;
const missing = [
  "/usr/bin/nix-build",
  "/usr/bin/nix-instantiate",
  "/usr/bin/nix-store",
  daemonEntry,
  nix2containerMain,
].filter((path) => !existsSync(path));

/**
 * containerd 1.6 with hardlinks, and 1.7 with the default bind mounts (the system's or fetched). buildImage's
 * closure-info lists the image's config file, which has no mountpoint in the layer; bind mode
 * runs only because the snapshotter creates missing mountpoints at commit.
 */
const cases: [ContainerdVersion, "bind" | "hardlink"][] = [
  ["1.6", "hardlink"],
  ["1.7", "bind"],
];

for (const [version, mountMode] of cases) {
  const skip = !isRoot
    ? "needs root"
    : missing.length > 0
      ? `missing ${missing.join(", ")}`
      : (containerdSkipReason(version) ?? "");

  describe.skipIf(skip !== "")(
    `nix:0 image from buildImage through the CRI, containerd ${version} (${mountMode}) ${skip}`,
    () => {
      const nonce = randomBytes(6).toString("hex");
      const gcRoots = join(testGcRootsParent, `nix-cri-${nonce}`);
      const sandboxImage = `localhost/pause-${nonce}:test`;
      // The image: a salted busybox fixture and a script that names it, put in the image with
      // resolvedByNix so that the store path is the reference.
      const expression = `let
    pkgs = import ${nixString(join(testsDir, "stand-in/pkgs.nix"))} {
      node = ${nixString(staged.node)};
      repo = ${nixString(staged.repo)};
    };
    busybox = pkgs.runCommand "busybox-fixture" { salt = ${nixString(nonce)}; } ''
      mkdir -p "$out/bin"
      cp /bin/busybox "$out/bin/busybox"
      ln -s busybox "$out/bin/sh"
    '';
    hello = pkgs.writeShellScriptBin "hello" ''
      echo "hello from nix store ${nonce} via ${"$"}{busybox}"
    '';
  in {
    inherit busybox;
    image = pkgs.buildImage {
      name = "example.org/cri-hello-${nonce}";
      resolvedByNix = true;
      config.entrypoint = [ "${"$"}{busybox}/bin/sh" "${"$"}{hello}/bin/hello" ];
    };
  }`;
      let work: string;
      let out: string;
      let busybox: string;
      let reference: string;
      let daemon: DaemonProcess;
      let containerd: Containerd | undefined;
      let client: ContainerdClient | undefined;
      let images: ReturnType<typeof criImageClient>;
      let imageId: string;
      const owner = () => `cri-image-${basename(out).slice(0, 32)}`;

      beforeAll(async () => {
        work = await mkdtemp(join(tmpdir(), "nix-cri-e2e-"));
        await mkdir(gcRoots, { recursive: true });
        const built = await exec("nix-build", [
          "-E",
          expression,
          "-A",
          "image",
          "-o",
          join(gcRoots, "image"),
          "--option",
          "substituters",
          "",
        ]);
        out = built.trim().split("\n").at(-1) ?? "";
        busybox = JSON.parse(
          await exec("nix-instantiate", [
            "--eval",
            "--json",
            "-E",
            `(${expression}).busybox.outPath`,
          ]),
        ) as string;
        // What a pod spec written with buildImage would say.
        reference = JSON.parse(
          await exec("nix-instantiate", ["--eval", "--json", "-E", `(${expression}).image.image`]),
        ) as string;

        const containerdLink = join(work, "containerd.sock");
        daemon = await startDaemonProcess({
          mountMode,
          imageService: { containerdAddress: containerdLink },
          env: { NIX_CONFIG: "substituters =" },
        });
        images = criImageClient(daemon.transport);
        containerd = await startContainerd({
          version,
          proxyPlugins: { nix: daemon.address },
          cri: { snapshotter: "nix", sandboxImage, restrictOomScoreAdj: true },
        });
        await symlink(containerd.address, containerdLink);
        client = createContainerdClient({ address: containerd.address, namespace: "k8s.io" });
        await importArchive(client, await pauseArchive(sandboxImage), {
          snapshotter: "nix",
          labels: { "io.cri-containerd.image": "managed" },
        });
        await until("ListImages through the daemon", async () => {
          const response = await images.listImages({});
          const tags = response.images.flatMap((image) => image.repoTags);
          return tags.includes(sandboxImage) ? tags : undefined;
        });
      });

      afterAll(async () => {
        client?.close();
        await containerd?.stop();
        await daemon?.cleanup();
        // Our paths only: the image's runtime closure (all salted by the nonce), their
        // derivations, and the build inputs named after the nonce with their outputs.
        const ours = new Set<string>();
        if (out) {
          const lines = async (args: string[]) =>
            (await exec("nix-store", args).catch(() => "")).split("\n").filter(Boolean);
          const runtime = await lines(["--query", "--requisites", out]);
          const derivers = (await lines(["--query", "--deriver", ...runtime])).filter((path) =>
            path.startsWith("/nix/store/"),
          );
          const inputs = (await lines(["--query", "--requisites", ...derivers])).filter((path) =>
            basename(path).includes(nonce),
          );
          const inputOutputs = await lines([
            "--query",
            "--outputs",
            ...inputs.filter((path) => path.endsWith(".drv")),
          ]);
          for (const path of [...runtime, ...derivers, ...inputs, ...inputOutputs]) ours.add(path);
        }
        await rm(gcRoots, { recursive: true, force: true });
        // One at a time, referrers first (the queries list dependencies first), in rounds until
        // a round deletes nothing: a path still referred to by another of ours goes next round.
        for (let deleted = true; deleted && ours.size > 0; ) {
          deleted = false;
          for (const path of [...ours].reverse()) {
            await exec("nix-store", ["--delete", path]).then(
              () => {
                ours.delete(path);
                deleted = true;
              },
              () => undefined,
            );
          }
        }
        if (work) await rm(work, { recursive: true, force: true });
      });

      it("buildImage's passthru image is nix:0 followed by the store path nix-build produced", () => {
        expect(out).toMatch(
          new RegExp(`^/nix/store/[a-z0-9]{32}-nix-image-cri-hello-${nonce}\\.tar$`),
        );
        expect(reference).toBe(`nix:0${out}`);
        expect(busybox).toMatch(/^\/nix\/store\/[a-z0-9]{32}-busybox-fixture$/);
      });

      it("refuses hostile neighbours of the reference and store paths that are not images", async () => {
        const drv = (await exec("nix-store", ["--query", "--deriver", out])).trim();
        for (const hostile of [
          `nix:0${out}/../../../etc/passwd`,
          `${reference}@sha256:${"0".repeat(64)}`,
          `nix:0${busybox}`,
          `nix:0${drv}`,
        ]) {
          const error = await images
            .pullImage({ image: { image: hostile } })
            .catch((caught: unknown) => caught);
          expect(ConnectError.from(error).code, hostile).toBe(Code.InvalidArgument);
        }
        expect(await readdir(daemon.gcRootsDir).catch(() => [])).not.toContain(owner());
      });

      it("pulls the reference through the daemon's ImageService and roots the archive", async () => {
        const response = await images.pullImage({ image: { image: reference } });
        expect(response.imageRef).toMatch(/^sha256:[0-9a-f]{64}$/);
        imageId = response.imageRef;
        const status = await images.imageStatus({ image: { image: reference } });
        expect(status.image?.id).toBe(imageId);
        expect(status.image?.repoTags).toContain(`${reference}:latest`);
        expect(await readdir(join(daemon.gcRootsDir, owner()))).toEqual([basename(out)]);
      });

      it("runs the image in a pod: the output comes from the store's script and busybox", async () => {
        const pod = runPod({
          client: client as ContainerdClient,
          work,
          image: imageId,
          userSpecifiedImage: reference,
          expectOutput: `hello from nix store ${nonce}`,
        });
        expect(await pod).toMatch(
          new RegExp(
            ` stdout F hello from nix store ${nonce} via ${busybox.replaceAll(".", "\\.")}\\n`,
          ),
        );
      });

      it("RemoveImage releases the daemon's roots; only our out-link keeps the image", async () => {
        await images.removeImage({ image: { image: imageId } });
        const status = await images.imageStatus({ image: { image: reference } });
        expect(status.image).toBeUndefined();
        const left = await until("every nix GC root of the daemon to go", async () => {
          const owners = await readdir(daemon.gcRootsDir).catch(() => []);
          return owners.length === 0 ? owners : undefined;
        });
        expect(left).toEqual([]);
        const roots = (await exec("nix-store", ["--query", "--roots", out])).trim().split("\n");
        const links = roots.map((line) => line.split(" -> ")[0] ?? "");
        expect(links).toContain(join(gcRoots, "image"));
        expect(links.filter((link) => link.startsWith(daemon.gcRootsDir))).toEqual([]);
      });
    },
  );
}
