import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import {
  type AnnotationForm,
  buildImage,
  type Closure,
  closureStorePaths,
  readClosure,
  writeImageArchive,
} from "@nix-snapshotter/image-builder";
import { DEFAULT_STORE_DIR, isStorePath } from "@nix-snapshotter/nix-store";
import { type LayerCompression, normalizeReference, parseJson } from "@nix-snapshotter/oci";
import { type Command, Option } from "commander";
import { CliError, toCliError } from "../cli-error.js";
import { createLogger, globalOptions } from "../global-options.js";
import { writeFileAtomic } from "../write-file-atomic.js";

interface BuildFlags {
  config?: string;
  closure?: string;
  copyToRoot?: string;
  ref?: string;
  fromImage?: string;
  arch?: string;
  os?: string;
  variant?: string;
  annotations: AnnotationForm;
  compression: LayerCompression;
  storeDir: string;
}

async function readInput(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    throw new CliError(`cannot read ${what} "${path}": ${(error as Error).message}`, {
      cause: error,
    });
  }
}

function describe(error: unknown): never {
  throw toCliError(error);
}

async function readCopyToRoot(path: string | undefined): Promise<string[]> {
  if (path === undefined) return [];
  const value = parseJson(await readInput(path, "--copy-to-root file"), `--copy-to-root "${path}"`);
  if (!Array.isArray(value) || value.some((item) => typeof item !== "string")) {
    throw new CliError(`--copy-to-root "${path}": expected a JSON array of store paths`);
  }
  return value as string[];
}

/** The default reference `nix:0<OUT>:latest`, valid only when OUT is a store path. */
function defaultReference(out: string, storeDir: string): string {
  if (!isStorePath(out, { storeDir })) {
    throw new CliError(
      `output "${out}" is not a store path, so the default reference nix:0${out}:latest would be invalid; pass --ref`,
    );
  }
  return `nix:0${out}:latest`;
}

async function runBuild(outArgument: string, flags: BuildFlags, command: Command): Promise<void> {
  const logger = createLogger(globalOptions(command).logLevel).child({ command: "build" });
  const out = resolve(outArgument);
  // Trailing slashes dropped, as Nix canonicalises NIX_STORE_DIR.
  const storeDir = flags.storeDir.replace(/(.)\/+$/, "$1");
  try {
    const name = normalizeReference(flags.ref ?? defaultReference(out, storeDir), { storeDir });
    const config =
      flags.config === undefined
        ? {}
        : parseJson(await readInput(flags.config, "--config file"), `--config "${flags.config}"`);
    let closure: Closure = [];
    if (flags.closure !== undefined) {
      closure = await readClosure(flags.closure, { storeDir });
      // As the Go tool does: the config file itself is in buildImage's closure but is not mounted.
      const configPath = flags.config === undefined ? undefined : resolve(flags.config);
      const storePaths = closureStorePaths(closure).filter((path) => path !== configPath);
      closure =
        "closureInfo" in closure ? { closureInfo: closure.closureInfo, storePaths } : storePaths;
    }
    const copyToRoot = await readCopyToRoot(flags.copyToRoot);
    const fromImage =
      flags.fromImage === undefined ? undefined : await readInput(flags.fromImage, "--from-image");
    const image = await buildImage({
      config,
      closure,
      copyToRoot,
      storeDir,
      annotationForm: flags.annotations,
      compression: flags.compression,
      ...(fromImage === undefined ? {} : { fromImage }),
      ...(flags.arch === undefined ? {} : { architecture: flags.arch }),
      ...(flags.os === undefined ? {} : { os: flags.os }),
      ...(flags.variant === undefined ? {} : { variant: flags.variant }),
    });
    if (image.ignoredConfigKeys.length > 0) {
      logger.warn(
        { keys: image.ignoredConfigKeys },
        "config keys that are no OCI image config field were ignored",
      );
    }
    const archive = writeImageArchive(image, { names: [name], storeDir });
    await writeFileAtomic(out, archive);
    logger.info(
      {
        ref: name,
        manifest: image.manifestDescriptor.digest,
        platform: `${image.config.os}/${image.config.architecture}`,
        storePaths: image.storePaths.length,
        bytes: archive.byteLength,
      },
      "built image",
    );
  } catch (error) {
    describe(error);
  }
}

export function registerBuildCommand(program: Command): void {
  program
    .command("build")
    .description("build a nix-snapshotter image as an OCI archive")
    .argument("<out>", "path of the OCI archive to write")
    .option("--config <file>", "image config JSON (Entrypoint, Cmd, Env...; keys case-insensitive)")
    .option(
      "--closure <file>",
      "closure: a closure-info store path, its store-paths file, or a list of store paths",
    )
    .option("--copy-to-root <file>", "JSON array of store paths linked from the image's root")
    .option("--ref <reference>", "image reference (default nix:0<out>:latest)")
    .option("--from-image <archive>", "base image: an OCI or docker archive, compressed or not")
    .option("--arch <architecture>", "image architecture (default: the build host's)")
    .option("--os <os>", "image OS (default: the build host's)")
    .option("--variant <variant>", "architecture variant, e.g. v8")
    .addOption(
      new Option(
        "--annotations <form>",
        "nix annotation form on the layer: auto (the closure form alone for a closure-info, else per-path), per-path, both, closure",
      )
        .choices(["auto", "per-path", "both", "closure"])
        .default("auto"),
    )
    .addOption(
      new Option("--compression <kind>", "mountpoint layer compression")
        .choices(["gzip", "zstd", "none"])
        .default("gzip"),
    )
    .addOption(
      new Option("--store-dir <dir>", "Nix store directory")
        .env("NIX_STORE_DIR")
        .default(DEFAULT_STORE_DIR),
    )
    .action(async (out: string, flags: BuildFlags, command: Command) =>
      runBuild(out, flags, command),
    );
}
