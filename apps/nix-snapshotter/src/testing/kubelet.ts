import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { type Client, createClient, type Transport } from "@connectrpc/connect";
import { ImageService, NamespaceMode, RuntimeService } from "@nix-snapshotter/api/cri/v1";
import {
  type ContainerdClient,
  ContainerdError,
  type ServiceClient,
} from "@nix-snapshotter/containerd-client";
import { testImageArchive } from "@nix-snapshotter/oci/testing";

export { Code, ConnectError } from "@connectrpc/connect";
export {
  type ContainerdClient,
  createContainerdClient,
  importArchive,
} from "@nix-snapshotter/containerd-client";
export {
  type Containerd,
  type ContainerdVersion,
  containerdSkipReason,
  startContainerd,
} from "@nix-snapshotter/containerd-client/testing";
export {
  type DaemonProcess,
  daemonEntry,
  startDaemonProcess,
  testGcRootsParent,
} from "./daemon-process.js";

/**
 * The kubelet's part in end-to-end tests outside this package (nix/tests): a CRI ImageService
 * client for the daemon, a sandbox image, and a pod run through containerd's CRI RuntimeService.
 */

const delay = (milliseconds: number) => new Promise((resolve) => setTimeout(resolve, milliseconds));

/** A CRI ImageService client over `transport` (the daemon's socket). */
export function criImageClient(transport: Transport): Client<typeof ImageService> {
  return createClient(ImageService, transport);
}

/** A sandbox ("pause") image archive named `name`: static busybox sleeping. */
export async function pauseArchive(name: string): Promise<Buffer> {
  return testImageArchive({
    names: [name],
    layers: [
      [
        { name: "bin", type: "directory", mode: 0o755 },
        { name: "bin/busybox", type: "file", mode: 0o755, data: await readFile("/bin/busybox") },
        { name: "bin/sleep", type: "symlink", linkname: "busybox" },
      ],
    ],
    config: { Entrypoint: ["/bin/sleep", "100000"] },
  }).archive;
}

/** Polls `probe` every 100 ms until it returns a value, or throws after `ms`. */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  ms = 60_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(100);
  }
}

export interface RunPodOptions {
  /** containerd client in the CRI namespace (k8s.io). */
  client: ContainerdClient;
  /** Directory under which the pod's log directory is made. */
  work: string;
  /** The image id (or reference) the container is created from. */
  image: string;
  /** What the pod spec said (the reference the kubelet pulled). */
  userSpecifiedImage: string;
  /** The log is read until it contains this text. */
  expectOutput: string;
}

/**
 * Runs a host-network pod with one container of `image`, waits until its log contains
 * `expectOutput`, removes the pod and returns the log.
 */
export async function runPod(options: RunPodOptions): Promise<string> {
  const runtime = options.client.service(RuntimeService);
  const name = `pod-${randomBytes(3).toString("hex")}`;
  const logDirectory = join(options.work, name);
  const sandboxConfig = {
    metadata: { name, uid: name, namespace: "default", attempt: 0 },
    logDirectory,
    linux: {
      securityContext: {
        namespaceOptions: {
          network: NamespaceMode.NODE,
          pid: NamespaceMode.POD,
          ipc: NamespaceMode.POD,
        },
      },
    },
  };
  const sandbox = await runtime.runPodSandbox({ config: sandboxConfig }, { timeoutMs: 120_000 });
  try {
    const container = await runtime.createContainer(
      {
        podSandboxId: sandbox.podSandboxId,
        config: {
          metadata: { name: "main", attempt: 0 },
          image: { image: options.image, userSpecifiedImage: options.userSpecifiedImage },
          logPath: "main.log",
        },
        sandboxConfig,
      },
      { timeoutMs: 120_000 },
    );
    await runtime.startContainer({ containerId: container.containerId });
    return await until("the container's output", async () => {
      const text = await readFile(join(logDirectory, "main.log"), "utf8");
      return text.includes(options.expectOutput) ? text : undefined;
    });
  } finally {
    await stopAndRemovePodSandbox(runtime, sandbox.podSandboxId);
  }
}

/**
 * Stops and removes a pod sandbox the way the kubelet does: StopPodSandbox is idempotent and the
 * kubelet calls it again on its next sync when it fails. containerd 2.1 can answer a stop with
 * Unknown "ttrpc: closed" when the shim exits in the middle of the call (seen once here under
 * load; a known containerd behaviour the kubelet absorbs), so up to 5 attempts, 200 ms apart;
 * the last error is thrown.
 */
export async function stopAndRemovePodSandbox(
  runtime: ServiceClient<(typeof RuntimeService)["method"]>,
  podSandboxId: string,
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await runtime.stopPodSandbox({ podSandboxId });
      break;
    } catch (error) {
      if (attempt >= 5 || !(error instanceof ContainerdError) || error.code !== "Unknown") {
        throw error;
      }
      await delay(200);
    }
  }
  await runtime.removePodSandbox({ podSandboxId });
}
