import { realpath } from "node:fs/promises";
import { resolve } from "node:path";
import {
  createContainerdClient,
  type ImportResult,
  importArchive,
} from "@nix-snapshotter/containerd-client";
import { CodedError } from "@nix-snapshotter/errdefs";
import { isStorePath } from "@nix-snapshotter/nix-store";
import { loadArchiveFile, nixReferencePrefix } from "@nix-snapshotter/oci";
import { type Command, Option } from "commander";
import { CliError, toCliError } from "../cli-error.js";
import { globalOptions } from "../global-options.js";

export interface RunLoadOptions {
  /** containerd's socket. */
  address: string;
  namespace: string;
  /** Snapshotter that unpacks the layers (default `nix`). */
  snapshotter?: string;
  /** Where each loaded image name is printed (one line each). Default stdout. */
  stdout?: NodeJS.WritableStream;
  /** How long to wait for containerd to answer (ms). Default 10 000. */
  connectTimeoutMs?: number;
}

/**
 * Imports each archive into containerd and unpacks it through the snapshotter. Images are named
 * from the archive; an archive without names that is itself a store path is named
 * `nix:0<store path>:latest`, the reference the CRI image service resolves.
 */
export async function runLoad(
  archives: readonly string[],
  options: RunLoadOptions,
): Promise<ImportResult[]> {
  const snapshotter = options.snapshotter ?? "nix";
  const stdout = options.stdout ?? process.stdout;
  let client: ReturnType<typeof createContainerdClient>;
  try {
    client = createContainerdClient({ address: options.address, namespace: options.namespace });
  } catch (error) {
    throw new CliError((error as Error).message, { cause: error });
  }
  const results: ImportResult[] = [];
  try {
    await client.waitForReady(options.connectTimeoutMs ?? 10_000).catch((error: unknown) => {
      throw new CliError((error as Error).message, { cause: error });
    });
    for (const archive of archives) {
      const path = resolve(archive);
      let image: Awaited<ReturnType<typeof loadArchiveFile>>;
      let real: string;
      try {
        real = await realpath(path);
        // Streamed and bounded like inspect: the user's links are followed, then only a regular
        // file is read (never a device or a FIFO), within defaultArchiveLimits.
        image = await loadArchiveFile(real);
      } catch (error) {
        const message =
          CodedError.is(error) || (error as NodeJS.ErrnoException).code !== undefined
            ? (error as Error).message
            : String(error);
        throw new CliError(`archive "${archive}": ${message}`, { cause: error });
      }
      const names =
        image.names.length === 0 && isStorePath(real)
          ? [`${nixReferencePrefix}${real}`]
          : undefined;
      try {
        const result = await importArchive(client, image, {
          snapshotter,
          ...(names === undefined ? {} : { names }),
        });
        for (const name of result.names) stdout.write(`${name}\n`);
        results.push(result);
      } catch (error) {
        throw toCliError(error, { context: `archive "${archive}"` });
      }
    }
  } finally {
    client.close();
  }
  return results;
}

/** `nix2container load [--snapshotter NAME] ARCHIVE...` */
export function registerLoadCommand(program: Command): void {
  program
    .command("load")
    .description("import image archives into containerd and unpack them through a snapshotter")
    .argument("<archive...>", "OCI layout or docker archive (tar, optionally compressed)")
    .addOption(
      new Option("--snapshotter <name>", "snapshotter that unpacks the layers").default("nix"),
    )
    .action(async (archives: string[], flags: { snapshotter: string }, command: Command) => {
      const global = globalOptions(command);
      await runLoad(archives, {
        address: global.address,
        namespace: global.namespace,
        snapshotter: flags.snapshotter,
      });
    });
}
