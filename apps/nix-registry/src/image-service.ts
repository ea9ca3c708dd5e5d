import { createHash } from "node:crypto";
import { buildImage, readClosure, type StoreFileSystem } from "@nix-snapshotter/image-builder";
import { MediaType, sha256Digest } from "@nix-snapshotter/oci";
import type { Logger } from "pino";
import { RegistryError } from "./errors.js";
import type { ImageRecord, ImageStore } from "./image-store.js";
import { type ImageName, platforms, quote } from "./names.js";
import {
  buildInputs,
  checkInputs,
  type InputsCheck,
  NixError,
  type PackageSetOptions,
  packageSetRevision,
  queryClosure,
} from "./nix.js";

/** The Nix steps, a seam for unit tests (the real ones run nix-instantiate and nix-build). */
export interface NixSteps {
  revision(signal: AbortSignal, deadline: number): Promise<string>;
  check(names: readonly string[], system: string, deadline: number): Promise<InputsCheck>;
  build(names: readonly string[], system: string, outLink: string, deadline: number): Promise<void>;
  closure(paths: readonly string[], deadline: number): Promise<string[]>;
}

export function createNixSteps(set: PackageSetOptions): NixSteps {
  return {
    revision: (signal, deadline) => packageSetRevision(set, { deadline, signal }),
    check: (names, system, deadline) => checkInputs(set, names, system, { deadline }),
    build: async (names, system, outLink, deadline) => {
      await buildInputs(set, names, system, outLink, { deadline });
    },
    closure: (paths, deadline) => queryClosure(set, paths, { deadline }),
  };
}

export type AnnotationSetting = "both" | "per-path";

export interface ImageServiceOptions {
  store: ImageStore;
  nix: NixSteps;
  logger: Logger;
  /** Seconds one image's Nix steps may take together (NIX_TIMEOUT). */
  nixTimeoutSeconds: number;
  /** Platform keys served (`amd64`, `arm64`). */
  platforms: readonly string[];
  annotationForm: AnnotationSetting;
  /** A fixed revision (`""`: computed by Nix from the package set's source). */
  revision: string;
  /** Seconds a computed revision is reused before Nix computes it again. */
  revisionTtlSeconds: number;
  /** Most image builds at once (others wait). */
  maxConcurrentBuilds: number;
  storeDir: string;
  /** Read-only view of the store (default: the real file system; tests pass a memory one). */
  fileSystem?: StoreFileSystem;
  /** Counters updated by the service. */
  onEvent?: (event: "build" | "cacheHit" | "buildFailure" | "shared") => void;
}

export interface ImageService {
  /** The cached or newly built image of `name` (concurrent callers share one build). */
  image(name: ImageName): Promise<ImageRecord>;
  /** Which names the set lacks (evaluates, builds nothing); throws NAME_UNKNOWN when any. */
  checkName(name: ImageName): Promise<void>;
  /** Builds currently running. */
  running(): number;
}

/** Env of the image config, as Nixery gives it: the packages' bin directories linked at /bin. */
export function imageEnv(packages: readonly string[]): string[] {
  const env = ["PATH=/bin:/sbin:/usr/bin:/usr/sbin"];
  if (packages.includes("cacert")) {
    env.push("SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt");
    env.push("NIX_SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt");
  }
  if (packages.includes("glibcLocales")) {
    env.push("LOCALE_ARCHIVE=/lib/locale/locale-archive");
  }
  return env;
}

export function cacheKey(revision: string, packages: readonly string[], platform: string): string {
  const sorted = [...packages].sort();
  return createHash("sha256")
    .update(JSON.stringify({ revision, packages: sorted, platform }))
    .digest("hex");
}

function unknownNames(check: InputsCheck): RegistryError | undefined {
  const problems = [
    ...check.missing.map((name) => `${quote(name)} is not in the package set`),
    ...check.notPackages.map((name) => `${quote(name)} is not a package (not a derivation)`),
  ];
  if (check.names.length === 0) problems.push("the name expands to no package");
  if (problems.length === 0) return undefined;
  return new RegistryError("NAME_UNKNOWN", `unknown packages: ${problems.join("; ")}`, {
    missing: check.missing,
    notPackages: check.notPackages,
  });
}

function asRegistryError(error: unknown, what: string): RegistryError {
  if (error instanceof RegistryError) return error;
  if (error instanceof NixError && error.code === "Timeout") {
    return new RegistryError(
      "UNAVAILABLE",
      `${what}: Nix did not finish within NIX_TIMEOUT`,
      undefined,
      {
        cause: error,
      },
    );
  }
  const message = error instanceof Error ? error.message : String(error);
  return new RegistryError("UNKNOWN", `${what}: ${message}`, undefined, { cause: error });
}

export function createImageService(options: ImageServiceOptions): ImageService {
  const inFlight = new Map<string, Promise<ImageRecord>>();
  let revisionCache: { value: string; at: number } | undefined;
  let revisionPending: Promise<string> | undefined;
  let active = 0;
  const waiting: (() => void)[] = [];

  const acquire = async () => {
    if (active >= options.maxConcurrentBuilds) {
      await new Promise<void>((resolve) => waiting.push(resolve));
    }
    active++;
  };
  const release = () => {
    active--;
    waiting.shift()?.();
  };

  const deadlineFromNow = () => Date.now() + options.nixTimeoutSeconds * 1000;

  const revision = async (): Promise<string> => {
    if (options.revision !== "") return options.revision;
    const fresh =
      revisionCache !== undefined &&
      Date.now() - revisionCache.at < options.revisionTtlSeconds * 1000;
    if (fresh) return revisionCache!.value;
    revisionPending ??= options.nix
      .revision(new AbortController().signal, deadlineFromNow())
      .then((value) => {
        revisionCache = { value, at: Date.now() };
        return value;
      })
      .finally(() => {
        revisionPending = undefined;
      });
    try {
      return await revisionPending;
    } catch (error) {
      throw asRegistryError(error, "package set revision");
    }
  };

  const checkPlatform = (name: ImageName) => {
    const platform = platforms[name.platform];
    if (platform === undefined || !options.platforms.includes(name.platform)) {
      throw new RegistryError(
        "MANIFEST_UNKNOWN",
        `platform ${quote(name.platform)} is not served by this registry (served: ${options.platforms.join(", ")})`,
      );
    }
    return platform;
  };

  const build = async (name: ImageName, key: string, rev: string): Promise<ImageRecord> => {
    const platform = checkPlatform(name);
    const deadline = deadlineFromNow();
    const log = options.logger.child({ repository: name.repository, key });
    const check = await options.nix.check(name.packages, platform.system, deadline);
    const unknown = unknownNames(check);
    if (unknown) throw unknown;
    const rootsDir = await options.store.newRootsDir(key);
    try {
      options.onEvent?.("build");
      log.info({ packages: check.names, platform: name.platform }, "building image");
      await options.nix.build(name.packages, platform.system, `${rootsDir}/result`, deadline);
      const closure =
        check.closureInfo !== null
          ? await readClosure(check.closureInfo, {
              storeDir: options.storeDir,
              ...(options.fileSystem ? { fileSystem: options.fileSystem } : {}),
            })
          : await options.nix.closure(check.outPaths, deadline);
      const image = await buildImage({
        closure,
        copyToRoot: check.outPaths,
        config: { Env: imageEnv(check.names) },
        architecture: platform.architecture,
        os: platform.os,
        annotationForm:
          options.annotationForm === "both" && check.closureInfo !== null ? "both" : "per-path",
        storeDir: options.storeDir,
        ...(options.fileSystem ? { fileSystem: options.fileSystem } : {}),
      });
      const index = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaType.ImageIndex,
          manifests: [
            {
              ...image.manifestDescriptor,
              platform: { architecture: platform.architecture, os: platform.os },
            },
          ],
        }),
      );
      const indexDigest = sha256Digest(index);
      const blobs = new Map<string, Uint8Array>(image.blobs);
      blobs.set(indexDigest, index);
      const record = await options.store.commit(
        {
          key,
          revision: rev,
          packages: check.names,
          platform: name.platform,
          index: indexDigest,
          manifest: image.manifestDescriptor.digest,
          storePaths: image.storePaths.length,
          createdAt: new Date().toISOString(),
        },
        blobs,
        rootsDir,
      );
      log.info({ index: indexDigest, storePaths: image.storePaths.length }, "image built");
      return record;
    } catch (error) {
      await options.store.discardRoots(rootsDir);
      throw error;
    }
  };

  return {
    async image(name) {
      checkPlatform(name);
      const rev = await revision();
      const key = cacheKey(rev, name.packages, name.platform);
      const cached = options.store.get(key);
      if (cached !== undefined) {
        options.onEvent?.("cacheHit");
        return cached;
      }
      let pending = inFlight.get(key);
      if (pending !== undefined) {
        options.onEvent?.("shared");
        return pending;
      }
      pending = (async () => {
        await acquire();
        try {
          return await build(name, key, rev);
        } catch (error) {
          options.onEvent?.("buildFailure");
          throw asRegistryError(error, `image ${quote(name.repository)}`);
        } finally {
          release();
        }
      })().finally(() => inFlight.delete(key));
      inFlight.set(key, pending);
      return pending;
    },

    async checkName(name) {
      const platform = checkPlatform(name);
      try {
        const check = await options.nix.check(name.packages, platform.system, deadlineFromNow());
        const unknown = unknownNames(check);
        if (unknown) throw unknown;
      } catch (error) {
        throw asRegistryError(error, `name ${quote(name.repository)}`);
      }
    },

    running: () => active,
  };
}
