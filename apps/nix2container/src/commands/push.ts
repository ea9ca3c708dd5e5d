import { readFile } from "node:fs/promises";
import {
  type ArchiveImageSource,
  createArchiveImageSource,
  createDockerCredentialsProvider,
  createRegistryClient,
  type PushEvent,
  type PushResult,
  pushImage,
  RegistryError,
} from "@nix-snapshotter/image-builder";
import type { Logger } from "@nix-snapshotter/nix-store";
import {
  familiarReference,
  parseReference,
  type RegistryReference,
  withDefaultTag,
} from "@nix-snapshotter/oci";
import type { Command } from "commander";
import { CliError, toCliError } from "../cli-error.js";
import { createLogger, globalOptions } from "../global-options.js";

interface PushFlags {
  ref?: string;
  plainHttp?: boolean;
}

/** Where `push` writes: progress and log lines to `stderr`, the pushed reference to `stdout`. */
export interface PushOutput {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
}

export interface RunPushOptions {
  ref?: string;
  plainHttp?: boolean;
  /** Log level of the CLI: progress lines are written at `info` and below. */
  logLevel?: string;
  /** docker config directory (default `$DOCKER_CONFIG` or `~/.docker`). */
  dockerConfig?: string;
  /** Receives request logs (debug) and retries (warn); default: the CLI's logger at `logLevel`. */
  logger?: Logger;
  output?: PushOutput;
}

/** The CLI's advice when the registry speaks the other protocol than `--plain-http` chose. */
export function plainHttpHint(error: unknown): string {
  if (!RegistryError.is(error)) return "";
  if (error.registrySpeaks === "https") return " (drop --plain-http)";
  if (error.registrySpeaks === "http") return " (use --plain-http for a plain-HTTP registry)";
  return "";
}

/** Parses `--ref` (or the archive's own name): only registry references can be pushed to. */
export function pushTarget(ref: string): RegistryReference {
  let parsed: ReturnType<typeof parseReference>;
  try {
    parsed = parseReference(ref);
  } catch (error) {
    throw toCliError(error);
  }
  if (parsed.kind === "nix") {
    throw new CliError(
      `reference "${ref}" is a nix:0 reference; push needs a registry reference (--ref host/name:tag)`,
    );
  }
  return withDefaultTag(parsed);
}

/** Without --ref, the archive's own registry name (a nix:0 name cannot be pushed to). */
function archiveReference(source: ArchiveImageSource): RegistryReference {
  const names = source.names.filter((name) => !name.startsWith("nix:"));
  if (names.length === 0) {
    throw new CliError("--ref is required: the archive names no registry reference to push to");
  }
  return pushTarget(names[0]!);
}

const units = ["B", "KiB", "MiB", "GiB", "TiB"];

export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** State of the progress bar. */
export interface ProgressState {
  totalBytes: number;
  sentBytes: number;
  totalBlobs: number;
  doneBlobs: number;
  skippedBlobs: number;
}

/** One line of progress, at most `width` characters: `[#####-----]  1.0 MiB/2.0 MiB  1/2 blobs`. */
export function renderProgress(label: string, state: ProgressState, width: number): string {
  const fraction = state.totalBytes === 0 ? 1 : Math.min(1, state.sentBytes / state.totalBytes);
  const counts = `${formatBytes(state.sentBytes)}/${formatBytes(state.totalBytes)}  ${state.doneBlobs}/${state.totalBlobs} blobs${state.skippedBlobs > 0 ? ` (${state.skippedBlobs} present)` : ""}`;
  const barWidth = Math.max(10, Math.min(40, width - label.length - counts.length - 6));
  const filled = Math.round(fraction * barWidth);
  const line = `${label} [${"#".repeat(filled)}${"-".repeat(barWidth - filled)}] ${counts}`;
  return line.length > width ? line.slice(0, Math.max(0, width)) : line;
}

/** Progress on a terminal (one redrawn line) or plain lines otherwise. */
function createReporter(label: string, stderr: PushOutput["stderr"], quiet: boolean) {
  const tty = stderr.isTTY === true;
  const state: ProgressState = {
    totalBytes: 0,
    sentBytes: 0,
    totalBlobs: 0,
    doneBlobs: 0,
    skippedBlobs: 0,
  };
  const sentByBlob = new Map<string, number>();
  let lastDraw = 0;
  const draw = (force: boolean) => {
    if (quiet || !tty) return;
    const now = Date.now();
    if (!force && now - lastDraw < 100) return;
    lastDraw = now;
    stderr.write(`\r\x1b[2K${renderProgress(label, state, (stderr.columns || 80) - 1)}`);
  };
  const line = (text: string) => {
    if (!quiet && !tty) stderr.write(`${text}\n`);
  };
  return {
    event(event: PushEvent) {
      switch (event.type) {
        case "blob-exists":
          state.skippedBlobs++;
          line(`blob ${event.digest} already present (${formatBytes(event.size)})`);
          break;
        case "plan":
          state.totalBlobs = event.blobs;
          state.totalBytes = event.bytes;
          line(
            `uploading ${event.blobs} blobs (${formatBytes(event.bytes)}) and ${event.manifests} manifest(s) to ${label}`,
          );
          draw(true);
          break;
        case "blob-start":
          line(`uploading blob ${event.digest} (${formatBytes(event.size)})`);
          break;
        case "blob-progress": {
          const previous = sentByBlob.get(event.digest) ?? 0;
          sentByBlob.set(event.digest, event.sent);
          state.sentBytes += event.sent - previous;
          draw(false);
          break;
        }
        case "blob-done":
          state.doneBlobs++;
          state.sentBytes += event.size - (sentByBlob.get(event.digest) ?? 0);
          sentByBlob.set(event.digest, event.size);
          line(`${event.how} blob ${event.digest}`);
          draw(true);
          break;
        case "manifest":
          line(`pushed manifest ${event.digest} as ${event.reference}`);
          break;
      }
    },
    finish() {
      if (!quiet && tty)
        stderr.write(`\r\x1b[2K${renderProgress(label, state, (stderr.columns || 80) - 1)}\n`);
    },
    abort() {
      if (!quiet && tty) stderr.write("\n");
    },
  };
}

/** `nix2container push`: pushes the image of an archive to a registry. */
export async function runPush(
  archivePath: string,
  options: RunPushOptions = {},
): Promise<PushResult> {
  const output = options.output ?? { stdout: process.stdout, stderr: process.stderr };
  let data: Buffer;
  try {
    data = await readFile(archivePath);
  } catch (error) {
    throw new CliError(`cannot read archive "${archivePath}": ${(error as Error).message}`, {
      cause: error,
    });
  }
  // The reference is checked before the archive is loaded only when given: a bad --ref fails fast.
  const early = options.ref === undefined ? undefined : pushTarget(options.ref);
  let source: ArchiveImageSource;
  try {
    source = createArchiveImageSource(data);
  } catch (error) {
    throw toCliError(error, { context: `archive "${archivePath}"` });
  }
  const target = early ?? archiveReference(source);
  if (target.digest !== undefined && target.digest !== source.rootDescriptor.digest) {
    throw new CliError(
      `reference "${familiarReference(target)}" names digest ${target.digest}, but the archive's manifest is ${source.rootDescriptor.digest}`,
    );
  }
  const label = familiarReference(target);
  const level = options.logLevel ?? "info";
  const quiet = !["trace", "debug", "info"].includes(level);
  const reporter = createReporter(label, output.stderr, quiet);
  const client = createRegistryClient({
    registry: target.domain,
    plainHttp: options.plainHttp === true,
    credentials: createDockerCredentialsProvider(
      options.dockerConfig === undefined ? {} : { configDirectory: options.dockerConfig },
    ),
    logger: options.logger ?? createLogger(level).child({ command: "push", ref: label }),
  });
  try {
    const result = await pushImage({
      client,
      repository: target.path,
      ...(target.tag === undefined ? {} : { tag: target.tag }),
      source,
      onEvent: (event) => reporter.event(event),
    });
    reporter.finish();
    output.stdout.write(
      `${target.domain}/${target.path}${target.tag === undefined ? "" : `:${target.tag}`}@${result.digest}\n`,
    );
    return result;
  } catch (error) {
    reporter.abort();
    throw toCliError(error, { hint: plainHttpHint(error) });
  } finally {
    client.close();
  }
}

export function registerPushCommand(program: Command): void {
  program
    .command("push")
    .description("pushes an OCI archive to a Docker Registry")
    .option("--ref <reference>", "image reference to push image to (default: the archive's name)")
    .option("--plain-http", "allow connections using plain HTTP", false)
    .argument("<archive>", "OCI or docker archive")
    .action(async (archive: string, flags: PushFlags, command: Command) => {
      await runPush(archive, {
        ...(flags.ref === undefined ? {} : { ref: flags.ref }),
        plainHttp: flags.plainHttp === true,
        logLevel: globalOptions(command).logLevel,
      });
    });
}
