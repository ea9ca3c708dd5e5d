import { createHash } from "node:crypto";
import { CodedError, ErrorCode } from "@nix-snapshotter/errdefs";
import { buildImage, readClosure, type StoreFileSystem } from "@nix-snapshotter/image-builder";
import type { Logger } from "@nix-snapshotter/nix-store";
import { MediaType, sha256Digest } from "@nix-snapshotter/oci";
import { RegistryError } from "./errors.js";
import type { ImageRecord, ImageStore } from "./image-store.js";
import { type ImageName, platforms, quote } from "./names.js";
import {
  buildInputs,
  checkInputs,
  commitPattern,
  exportToBinaryCache,
  gitRefNames,
  gitRefRevision,
  gitRevision,
  type InputsCheck,
  NixError,
  type PackageSetOptions,
  packageSetRevision,
  queryClosure,
  type SourceRevision,
} from "./nix.js";

/** The Nix steps, a seam for unit tests (the real ones run nix-instantiate and nix-build). */
export interface NixSteps {
  /**
   * The source revision of a tag: `latest` for a local set; for a git set, a branch, a git tag or
   * a full commit hash (`latest`: the configured default branch).
   */
  revision(tag: string, deadline: number): Promise<SourceRevision>;
  check(
    names: readonly string[],
    system: string,
    source: SourceRevision,
    deadline: number,
  ): Promise<InputsCheck>;
  build(
    names: readonly string[],
    system: string,
    source: SourceRevision,
    outLink: string,
    deadline: number,
  ): Promise<void>;
  closure(paths: readonly string[], deadline: number): Promise<string[]>;
  /** Copies paths into the binary cache (only called when one is configured). */
  exportPaths(paths: readonly string[], deadline: number): Promise<void>;
  /** Branch and git tag names of a git set (unfiltered); none for a local set. */
  refNames(deadline: number): Promise<string[]>;
}

/** The tag served for a local package set; for a git one, its default branch. */
export const LATEST_TAG = "latest";

export function createNixSteps(
  set: PackageSetOptions,
  binaryCache?: { dir: string; secretKeyFile: string },
  /** The branch `latest` names in a git set; `""`: the repository's HEAD. */
  defaultBranch = "",
): NixSteps {
  const git = set.gitUrl !== undefined && set.gitUrl !== "";
  return {
    revision: async (tag, deadline) => {
      if (!git) return { revision: await packageSetRevision(set, { deadline }) };
      if (commitPattern.test(tag)) {
        try {
          return { revision: await gitRevision(set, tag, { deadline }), gitRef: tag };
        } catch (error) {
          if (!NixError.is(error, ErrorCode.Unknown)) throw error;
          throw new RegistryError(
            ErrorCode.NotFound,
            `tag ${quote(tag)}: no such commit in the package set's repository (${error.message})`,
            { subject: "manifest", cause: error },
          );
        }
      }
      const ref = tag === LATEST_TAG ? (defaultBranch === "" ? "HEAD" : defaultBranch) : tag;
      const source = await gitRefRevision(set, ref, { deadline });
      if (source === undefined) {
        throw new RegistryError(
          ErrorCode.NotFound,
          tag === LATEST_TAG
            ? `tag "latest": the package set's repository has no branch ${quote(ref)} (its default branch)`
            : `tag ${quote(tag)}: no branch, git tag or commit of that name in the package set's repository`,
          { subject: "manifest" },
        );
      }
      return source;
    },
    check: (names, system, source, deadline) =>
      checkInputs(set, source, names, system, { deadline }),
    build: async (names, system, source, outLink, deadline) => {
      await buildInputs(set, source, names, system, outLink, { deadline });
    },
    closure: (paths, deadline) => queryClosure(set, paths, { deadline }),
    refNames: async (deadline) => (git ? gitRefNames(set, { deadline }) : []),
    exportPaths: async (paths, deadline) => {
      if (binaryCache === undefined) throw new Error("no binary cache configured");
      await exportToBinaryCache(set, paths, binaryCache.dir, binaryCache.secretKeyFile, {
        deadline,
      });
    },
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
  /** A fixed revision of a local set (`""`: computed by Nix from the package set's source). */
  revision: string;
  /** Whether tags other than `latest` name branches, git tags or commits of a git package set. */
  gitTags: boolean;
  /** Export each built closure to the binary cache before the image is served. */
  binaryCache: boolean;
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
  /** The cached or newly built image of `name` at `tag` (concurrent callers share one build). */
  image(name: ImageName, tag: string): Promise<ImageRecord>;
  /** Which names the set lacks (evaluates, builds nothing); throws NAME_UNKNOWN when any. */
  checkName(name: ImageName): Promise<void>;
  /** Whether `tag` may name a revision (`latest`, or any tag for a git set). */
  servesTag(tag: string): boolean;
  /**
   * Tags a client can pull besides `latest`: a git set's branches and git tags (commit hashes
   * are served too but not listed); none for a local set.
   */
  listedTags(): Promise<string[]>;
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
  return new RegistryError(ErrorCode.NotFound, `unknown packages: ${problems.join("; ")}`, {
    subject: "name",
    detail: { missing: check.missing, notPackages: check.notPackages },
  });
}

/** Any error of a build or check as the registry's, naming `what` (a timeout says NIX_TIMEOUT). */
function asRegistryError(error: unknown, what: string): RegistryError {
  if (NixError.is(error, ErrorCode.DeadlineExceeded)) {
    return new RegistryError(
      ErrorCode.DeadlineExceeded,
      `${what}: Nix did not finish within NIX_TIMEOUT`,
      { cause: error },
    );
  }
  return RegistryError.from(error, what);
}

export function createImageService(options: ImageServiceOptions): ImageService {
  const inFlight = new Map<string, Promise<ImageRecord>>();
  const revisionCache = new Map<string, { value: SourceRevision; at: number }>();
  const revisionPending = new Map<string, Promise<SourceRevision>>();
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

  const revision = async (tag: string): Promise<SourceRevision> => {
    if (options.revision !== "" && !options.gitTags) return { revision: options.revision };
    const cached = revisionCache.get(tag);
    if (cached !== undefined && Date.now() - cached.at < options.revisionTtlSeconds * 1000) {
      return cached.value;
    }
    let pending = revisionPending.get(tag);
    if (pending === undefined) {
      pending = options.nix
        .revision(tag, deadlineFromNow())
        .then((value) => {
          // Bounded: one entry per tag asked for; forget the oldest beyond 1024.
          if (revisionCache.size >= 1024) {
            revisionCache.delete(revisionCache.keys().next().value as string);
          }
          revisionCache.set(tag, { value, at: Date.now() });
          return value;
        })
        .finally(() => revisionPending.delete(tag));
      revisionPending.set(tag, pending);
    }
    try {
      return await pending;
    } catch (error) {
      throw asRegistryError(error, `package set revision of tag ${quote(tag)}`);
    }
  };

  const checkPlatform = (name: ImageName) => {
    const platform = platforms[name.platform];
    if (platform === undefined || !options.platforms.includes(name.platform)) {
      throw new RegistryError(
        ErrorCode.NotFound,
        `platform ${quote(name.platform)} is not served by this registry (served: ${options.platforms.join(", ")})`,
        { subject: "manifest" },
      );
    }
    return platform;
  };

  /** The platforms an image of `name` offers: the `arm64/` one it names, else every one served. */
  const platformsOf = (name: ImageName): string[] =>
    name.platformExplicit ? [name.platform] : [...options.platforms];

  /** Builds the image of one platform (its own check: outputs differ per system). */
  const buildPlatform = async (
    name: ImageName,
    platformKey: string,
    source: SourceRevision,
    rootsDir: string,
    deadline: number,
    firstCheck: InputsCheck | undefined,
  ) => {
    const platform = platforms[platformKey]!;
    const check =
      firstCheck ?? (await options.nix.check(name.packages, platform.system, source, deadline));
    const unknown = unknownNames(check);
    if (unknown) throw unknown;
    await options.nix.build(
      name.packages,
      platform.system,
      source,
      `${rootsDir}/result-${platformKey}`,
      deadline,
    );
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
    const closureInfo = "closureInfo" in closure ? [closure.closureInfo] : [];
    return { key: platformKey, platform, image, exported: [...image.storePaths, ...closureInfo] };
  };

  const build = async (
    name: ImageName,
    key: string,
    source: SourceRevision,
  ): Promise<ImageRecord> => {
    checkPlatform(name);
    const wanted = platformsOf(name);
    const deadline = deadlineFromNow();
    const log = options.logger.child({ repository: name.repository, key });
    // Names are checked once, on the first platform, before anything is built.
    const check = await options.nix.check(
      name.packages,
      platforms[wanted[0]!]!.system,
      source,
      deadline,
    );
    const unknown = unknownNames(check);
    if (unknown) throw unknown;
    let exported: string[] | undefined;
    let unpin: (() => void) | undefined;
    const rootsDir = await options.store.newRootsDir(key);
    try {
      options.onEvent?.("build");
      log.info({ packages: check.names, platforms: wanted }, "building image");
      const built: Awaited<ReturnType<typeof buildPlatform>>[] = [];
      let firstError: unknown;
      for (const platformKey of wanted) {
        try {
          built.push(
            await buildPlatform(
              name,
              platformKey,
              source,
              rootsDir,
              deadline,
              platformKey === wanted[0] ? check : undefined,
            ),
          );
        } catch (error) {
          // A timeout or cancel ends the whole image; a platform Nix cannot build is left out.
          if (
            wanted.length === 1 ||
            CodedError.is(error, ErrorCode.DeadlineExceeded, ErrorCode.Canceled)
          ) {
            throw error;
          }
          firstError ??= error;
          log.warn(
            { err: error, platform: platformKey },
            "platform left out of the image index: its closure cannot be built or substituted here",
          );
        }
      }
      if (built.length === 0) throw firstError;
      const chosen = built.find((entry) => entry.key === name.platform) ?? built[0]!;
      if (options.binaryCache) {
        // The packages first: a node that pulls the image can substitute them at once.
        exported = [...new Set(built.flatMap((entry) => entry.exported))];
        unpin = await options.store.pin(exported);
        await options.nix.exportPaths(exported, deadline);
      }
      const index = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaType.ImageIndex,
          manifests: built.map((entry) => ({
            ...entry.image.manifestDescriptor,
            platform: { architecture: entry.platform.architecture, os: entry.platform.os },
          })),
        }),
      );
      const indexDigest = sha256Digest(index);
      const blobs = new Map<string, Uint8Array>();
      for (const entry of built) {
        for (const [digest, data] of entry.image.blobs) blobs.set(digest, data);
      }
      blobs.set(indexDigest, index);
      const record = await options.store.commit(
        {
          key,
          revision: source.revision,
          packages: check.names,
          platform: chosen.key,
          platforms: built.map((entry) => entry.key),
          index: indexDigest,
          manifest: chosen.image.manifestDescriptor.digest,
          storePaths: chosen.image.storePaths.length,
          ...(exported === undefined ? {} : { exported }),
          createdAt: new Date().toISOString(),
        },
        blobs,
        rootsDir,
      );
      log.info(
        {
          index: indexDigest,
          platforms: built.map((entry) => entry.key),
          storePaths: chosen.image.storePaths.length,
        },
        "image built",
      );
      return record;
    } catch (error) {
      await options.store.discardRoots(rootsDir);
      throw error;
    } finally {
      if (unpin !== undefined) {
        unpin();
        // What an export killed earlier left (the registry restarted since) or this one failed
        // to finish: removed once no export runs.
        await options.store.collectOrphans().catch((error: unknown) => {
          log.warn({ err: error }, "binary cache collection failed");
        });
      }
    }
  };

  return {
    async image(name, tag) {
      checkPlatform(name);
      const source = await revision(tag);
      const key = cacheKey(source.revision, name.packages, platformsOf(name).join(","));
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
          return await build(name, key, source);
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
        const source = await revision(LATEST_TAG);
        const check = await options.nix.check(
          name.packages,
          platform.system,
          source,
          deadlineFromNow(),
        );
        const unknown = unknownNames(check);
        if (unknown) throw unknown;
      } catch (error) {
        throw asRegistryError(error, `name ${quote(name.repository)}`);
      }
    },

    running: () => active,

    servesTag: (tag) => tag === LATEST_TAG || options.gitTags,

    async listedTags() {
      if (!options.gitTags) return [];
      try {
        return await options.nix.refNames(deadlineFromNow());
      } catch (error) {
        throw asRegistryError(error, "tags of the package set");
      }
    },
  };
}
