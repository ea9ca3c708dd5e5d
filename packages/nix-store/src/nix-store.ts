import { accessSync, constants } from "node:fs";
import { access, lstat, open } from "node:fs/promises";
import { delimiter, join } from "node:path";
import { isNixStoreError, NixStoreError } from "./errors.js";
import {
  createGcRoots,
  DEFAULT_NIX_STATE_DIR,
  defaultGcRootsDir,
  forEachLimited,
  type GcRootSet,
  validateRootOwner,
} from "./gc-roots.js";
import { type Logger, silentLogger } from "./logger.js";
import { NixLogParser, parsePlainLogLine, type RealiseProgress } from "./nix-log.js";
import {
  detectNixFeatures,
  featureProbeArgs,
  type NixFeatures,
  type NixVersion,
  nixFeatures,
  parseNixVersion,
} from "./nix-version.js";
import { defaultSpawn, type RunProcessResult, runProcess, type SpawnHook } from "./run-process.js";
import {
  DEFAULT_STORE_DIR,
  parseStorePath,
  parseStorePaths,
  type StorePath,
  validateStoreDir,
} from "./store-path.js";

export interface NixStoreOptions {
  /** The store directory. Default `/nix/store`. Non-default values are passed to Nix as `NIX_STORE_DIR`. */
  storeDir?: string;
  /**
   * Where GC roots live. Default `/nix/var/nix/gcroots/nix-snapshotter` for root and
   * `/nix/var/nix/gcroots/per-user/<user>/nix-snapshotter` for other users.
   */
  gcRootsDir?: string;
  /** Directory holding `nix-store`; default: found on `PATH`. */
  nixBin?: string;
  /**
   * The Go daemon's `external_builder`: an executable called as `<exe> <outLink> <storePath>`
   * for each path that is not valid yet, instead of `nix-store --realise`.
   */
  externalBuilder?: string;
  /** How many external builder processes run at once. Default 1 (as the Go daemon). */
  externalBuilderConcurrency?: number;
  /** Nix settings passed as `--option <name> <value>` to every Nix call (e.g. `substituters`). */
  nixOptions?: Readonly<Record<string, string>>;
  /**
   * Parallel substitutions. Nix before 2.17 runs substitutions in build slots, so this becomes
   * `--max-jobs` there; newer Nix gets `max-substitution-jobs`. Default 16.
   */
  substitutionJobs?: number;
  /** Nix's state directory (holds `gc.lock` and `gcroots`). Default `/nix/var/nix`. */
  nixStateDir?: string;
  /**
   * Before `nix-store --realise`, check validity while holding a shared lock on Nix's
   * `gc.lock` (with util-linux `flock`, without waiting) and hand only the invalid paths to Nix.
   * Default true; falls back to realising every path when `flock` or the lock file is not
   * usable, or while a garbage collection holds the lock.
   */
  gcLockShortcut?: boolean;
  /** Environment of Nix processes. Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
  /** How processes are started (tests inject a recording hook). */
  spawn?: SpawnHook;
}

/** What Nix knows about a valid path. */
export interface PathInfo {
  storePath: string;
  /** SHA-256 of the NAR serialisation, lower-case hex. */
  narHash: string;
  narSize: number;
  /** The derivation that produced it, or undefined. */
  deriver: string | undefined;
  /** Store paths it refers to (may include itself). */
  references: string[];
}

export interface RealiseOptions {
  /** Create GC roots for the paths, owned by `owner`, before anything is fetched. */
  roots?: { owner: string };
  signal?: AbortSignal;
  /** Kill Nix and fail with `DeadlineExceeded` after this long. */
  timeoutMs?: number;
  onProgress?: (event: RealiseProgress) => void;
  /** Extra Nix settings for this call (e.g. `{ substituters: "http://127.0.0.1:1234" }`). */
  nixOptions?: Readonly<Record<string, string>>;
}

export interface RealiseResult {
  /** The requested paths, all valid now, without duplicates, in input order. */
  paths: string[];
  /** Paths Nix reported substituting during this call. */
  substituted: string[];
  /** Derivations Nix reported building during this call. */
  built: string[];
  /**
   * Requested paths found valid (under the GC lock) after the roots existed, so Nix was not
   * asked to realise them. Empty when the shortcut is off or unavailable.
   */
  alreadyValid: string[];
  /** The roots created for `roots.owner`, if requested. */
  roots: GcRootSet | undefined;
}

export interface NixStore {
  readonly storeDir: string;
  readonly gcRootsDir: string;
  /** Validates one path against this store's directory (throws `InvalidArgument`). */
  parseStorePath(path: string): StorePath;
  /** The Nix version (run once, then cached). */
  version(): Promise<NixVersion>;
  features(): Promise<NixFeatures>;
  /** True when every given path is valid. One process for all. */
  isValid(paths: string | readonly string[]): Promise<boolean>;
  /** The subset of `paths` that is valid, in input order. One process per ~1 MB of arguments. */
  queryValidPaths(paths: readonly string[]): Promise<string[]>;
  /** The closure (all requisites) of valid paths, sorted. `NotFound` names invalid inputs. */
  closure(paths: readonly string[]): Promise<string[]>;
  /** Path info of valid paths, keyed by path. `NotFound` names invalid inputs. */
  pathInfo(paths: readonly string[]): Promise<Map<string, PathInfo>>;
  /** Reads `<storePath>/store-paths` of a valid closure-info path, every line validated. */
  readClosureInfo(storePath: string): Promise<string[]>;
  /** Makes paths valid in one Nix process, roots first. See {@link RealiseOptions}. */
  realise(paths: readonly string[], options?: RealiseOptions): Promise<RealiseResult>;
  /** Creates the owner's roots (one symlink per path) in one batch. */
  addRoots(owner: string, paths: readonly string[]): Promise<GcRootSet>;
  /** Removes all roots of the owner; false when it had none. */
  removeRoots(owner: string): Promise<boolean>;
  /** Owners that have roots, sorted. */
  listRootOwners(): Promise<string[]>;
  /** The store paths an owner roots, sorted. */
  listRoots(owner: string): Promise<string[]>;
}

/** Arguments per process stay below this many bytes (Linux allows about 2 MB with the env). */
const maxArgumentBytes = 1_000_000;
const optionNamePattern = /^[a-z][a-z0-9-]*$/;
const closureInfoMaxBytes = 64 * 1024 * 1024;
/** Exit code `flock` reports when the lock is held by someone else (a garbage collector). */
const gcLockBusyExitCode = 75;

export function createNixStore(options: NixStoreOptions = {}): NixStore {
  const storeDir = validateStoreDir(options.storeDir ?? DEFAULT_STORE_DIR);
  const nixStateDir = options.nixStateDir ?? DEFAULT_NIX_STATE_DIR;
  const gcRootsDir = options.gcRootsDir ?? defaultGcRootsDir(nixStateDir);
  const gcLockPath = join(nixStateDir, "gc.lock");
  const flockCommand =
    options.gcLockShortcut === false ? undefined : findOnPath("flock", options.env ?? process.env);
  if (!gcRootsDir.startsWith("/")) {
    throw new NixStoreError(
      "InvalidArgument",
      `gcRootsDir ${JSON.stringify(gcRootsDir)} is not absolute`,
    );
  }
  const logger = options.logger ?? silentLogger;
  const spawn = options.spawn ?? defaultSpawn;
  const nixStoreCommand =
    options.nixBin === undefined ? "nix-store" : join(options.nixBin, "nix-store");
  const env: NodeJS.ProcessEnv = { ...(options.env ?? process.env) };
  if (storeDir !== DEFAULT_STORE_DIR) env.NIX_STORE_DIR = storeDir;
  const baseOptions = checkNixOptions(options.nixOptions ?? {});
  const substitutionJobs = options.substitutionJobs ?? 16;
  const externalBuilderConcurrency = options.externalBuilderConcurrency ?? 1;
  const gcRoots = createGcRoots(gcRootsDir);
  const pathOptions = { storeDir };

  let versionPromise: Promise<NixVersion> | undefined;
  const version = () => {
    versionPromise ??= (async () => {
      const result = await runProcess({
        spawn,
        command: nixStoreCommand,
        args: ["--version"],
        description: "nix-store --version",
        env,
      });
      if (result.exitCode !== 0) {
        throw new NixStoreError("FailedPrecondition", `nix-store --version failed`, {
          stderrTail: result.stderrTail,
        });
      }
      const parsed = parseNixVersion(result.stdout);
      logger.debug({ nixVersion: parsed.text }, "nix version");
      return parsed;
    })();
    versionPromise.catch(() => {
      versionPromise = undefined;
    });
    return versionPromise;
  };

  let featuresPromise: Promise<NixFeatures> | undefined;
  /** The version's expectations, corrected by one probe of Nix itself (see nix-version.ts). */
  const features = () => {
    featuresPromise ??= (async () => {
      const prior = nixFeatures(await version());
      const result = await runProcess({
        spawn,
        command: nixStoreCommand,
        args: featureProbeArgs(storeDir),
        description: "nix-store feature probe",
        env,
      });
      const detected = detectNixFeatures(prior, {
        exitCode: result.exitCode,
        stderr: result.stderrTail,
      });
      logger.debug({ prior, detected }, "nix features");
      return detected;
    })();
    featuresPromise.catch(() => {
      featuresPromise = undefined;
    });
    return featuresPromise;
  };

  const optionArgs = (extra: Readonly<Record<string, string>> = {}) => {
    const merged = { ...baseOptions, ...checkNixOptions(extra) };
    return Object.entries(merged).flatMap(([name, value]) => ["--option", name, value]);
  };

  const run = (
    args: string[],
    description: string,
    extra: Partial<Parameters<typeof runProcess>[0]> = {},
  ) => runProcess({ spawn, command: nixStoreCommand, args, description, env, ...extra });

  const failed = (what: string, result: RunProcessResult, paths: readonly string[] = []) =>
    new NixStoreError(
      classifyFailure(result.stderrTail),
      `${what} failed (exit ${result.exitCode ?? result.signal}): ${lastLine(result.stderrTail)}`,
      { failedPaths: paths, stderrTail: result.stderrTail },
    );

  async function queryValidPaths(paths: readonly string[]): Promise<string[]> {
    const parsed = parseStorePaths(paths, pathOptions).map((storePath) => storePath.path);
    const invalid = new Set<string>();
    for (const chunk of chunkByBytes(parsed)) {
      const result = await run(
        ["--check-validity", "--print-invalid", ...optionArgs(), ...chunk],
        `validity check of ${chunk.length} store paths`,
      );
      if (result.exitCode !== 0)
        throw failed(`validity check of ${chunk.length} store paths`, result);
      for (const line of lines(result.stdout)) invalid.add(line);
    }
    return parsed.filter((path) => !invalid.has(path));
  }

  async function requireValid(paths: string[], what: string): Promise<void> {
    const valid = new Set(await queryValidPaths(paths));
    const missing = paths.filter((path) => !valid.has(path));
    if (missing.length > 0) {
      throw new NixStoreError(
        "NotFound",
        `${what}: ${missing.length} store path(s) are not valid, e.g. ${JSON.stringify(missing[0])}`,
        { failedPaths: missing },
      );
    }
  }

  async function closure(paths: readonly string[]): Promise<string[]> {
    const parsed = parseStorePaths(paths, pathOptions).map((storePath) => storePath.path);
    if (parsed.length === 0) return [];
    const all = new Set<string>();
    for (const chunk of chunkByBytes(parsed)) {
      const result = await run(
        ["--query", "--requisites", ...optionArgs(), ...chunk],
        `closure of ${chunk.length} store paths`,
      );
      if (result.exitCode !== 0) {
        await requireValid(chunk, "closure");
        throw failed(`closure of ${chunk.length} store paths`, result, chunk);
      }
      for (const line of lines(result.stdout)) all.add(parseStorePath(line, pathOptions).path);
    }
    return [...all].sort();
  }

  async function pathInfo(paths: readonly string[]): Promise<Map<string, PathInfo>> {
    const parsed = parseStorePaths(paths, pathOptions).map((storePath) => storePath.path);
    const infos = new Map<string, PathInfo>();
    for (const chunk of chunkByBytes(parsed)) {
      const result = await run(
        ["--dump-db", ...optionArgs(), ...chunk],
        `path info of ${chunk.length} store paths`,
      );
      if (result.exitCode !== 0) {
        await requireValid(chunk, "path info");
        throw failed(`path info of ${chunk.length} store paths`, result, chunk);
      }
      for (const info of parseRegistration(result.stdout)) infos.set(info.storePath, info);
    }
    const ordered = new Map<string, PathInfo>();
    for (const path of parsed) {
      const info = infos.get(path);
      if (info === undefined) {
        throw new NixStoreError(
          "Internal",
          `nix-store --dump-db printed nothing for store path ${JSON.stringify(path)}`,
        );
      }
      ordered.set(path, info);
    }
    return ordered;
  }

  async function readClosureInfo(path: string): Promise<string[]> {
    const storePath = parseStorePath(path, pathOptions);
    await requireValid([storePath.path], `closure info ${JSON.stringify(storePath.path)}`);
    const stat = await lstat(storePath.path).catch((error: unknown) => {
      throw new NixStoreError(
        "NotFound",
        `closure info ${JSON.stringify(storePath.path)} cannot be read`,
        { cause: error },
      );
    });
    if (!stat.isDirectory()) {
      throw new NixStoreError(
        "InvalidArgument",
        `closure info ${JSON.stringify(storePath.path)} is not a directory with a store-paths file`,
        { failedPaths: [storePath.path] },
      );
    }
    const file = join(storePath.path, "store-paths");
    let text: string;
    try {
      const handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
      try {
        const fileStat = await handle.stat();
        if (!fileStat.isFile()) throw new Error("not a regular file");
        if (fileStat.size > closureInfoMaxBytes)
          throw new Error(`larger than ${closureInfoMaxBytes} bytes`);
        text = await handle.readFile("utf8");
      } finally {
        await handle.close();
      }
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw new NixStoreError(
        code === "ENOENT" ? "NotFound" : "InvalidArgument",
        `closure info ${JSON.stringify(storePath.path)}: cannot read store-paths: ${(error as Error).message}`,
        { cause: error, failedPaths: [storePath.path] },
      );
    }
    const result: string[] = [];
    const seen = new Set<string>();
    for (const [index, line] of text.split("\n").entries()) {
      if (line === "") continue;
      try {
        const entry = parseStorePath(line, pathOptions).path;
        if (!seen.has(entry)) {
          seen.add(entry);
          result.push(entry);
        }
      } catch (error) {
        throw new NixStoreError(
          "InvalidArgument",
          `closure info ${JSON.stringify(storePath.path)}: line ${index + 1} is not a store path`,
          { cause: error, failedPaths: [storePath.path] },
        );
      }
    }
    return result;
  }

  /**
   * The invalid subset of `paths`, checked while holding a shared lock on Nix's GC lock, or
   * undefined when that is not possible or a collection holds the lock right now. Nix's garbage collector holds that lock exclusively for
   * its whole run, so once we hold it shared, no collection that started before our roots
   * existed is still running, and later ones see the roots: paths valid now stay valid.
   */
  async function invalidUnderGcLock(
    paths: string[],
    realiseOptions: RealiseOptions,
  ): Promise<Set<string> | undefined> {
    if (flockCommand === undefined) return undefined;
    try {
      await access(gcLockPath, constants.R_OK);
    } catch {
      return undefined;
    }
    const invalid = new Set<string>();
    for (const chunk of chunkByBytes(paths)) {
      const result = await runProcess({
        spawn,
        command: flockCommand,
        args: [
          "--shared",
          "--nonblock",
          "--conflict-exit-code",
          String(gcLockBusyExitCode),
          gcLockPath,
          nixStoreCommand,
          "--check-validity",
          "--print-invalid",
          ...optionArgs(realiseOptions.nixOptions),
          ...chunk,
        ],
        description: `validity check of ${chunk.length} store path(s) under the GC lock`,
        env,
        signal: realiseOptions.signal,
        timeoutMs: realiseOptions.timeoutMs,
      });
      if (result.exitCode === gcLockBusyExitCode) {
        // A garbage collection is running: do not wait for it (it may take minutes); Nix's own
        // temporary roots protect what `nix-store --realise` checks while it runs.
        logger.debug({}, "garbage collector running; realising every path through Nix");
        return undefined;
      }
      if (result.exitCode !== 0) {
        logger.debug(
          { stderr: result.stderrTail },
          "validity check under the GC lock failed; realising every path",
        );
        return undefined;
      }
      for (const line of lines(result.stdout)) invalid.add(line);
    }
    return invalid;
  }

  async function realiseWithNix(allPaths: string[], realiseOptions: RealiseOptions) {
    const invalid = await invalidUnderGcLock(allPaths, realiseOptions);
    const paths = invalid === undefined ? allPaths : allPaths.filter((path) => invalid.has(path));
    const alreadyValid = invalid === undefined ? [] : allPaths.filter((path) => !invalid.has(path));
    if (paths.length === 0) return { substituted: [], built: [], alreadyValid };
    const [nixVersion, nixFeatureSet] = await Promise.all([version(), features()]);
    const substituted = new Set<string>();
    const built = new Set<string>();
    const onEvent = (event: RealiseProgress) => {
      if (event.type === "substitute-start") substituted.add(event.storePath);
      if (event.type === "build-start") built.add(event.derivation);
      realiseOptions.onProgress?.(event);
    };
    const parser = new NixLogParser(onEvent);
    const jobArgs = nixFeatureSet.maxSubstitutionJobs
      ? ["--option", "max-substitution-jobs", String(substitutionJobs)]
      : ["--max-jobs", String(substitutionJobs)];
    const logArgs = nixFeatureSet.internalJsonLog ? ["--log-format", "internal-json"] : [];
    const failures: NixStoreError[] = [];
    for (const chunk of chunkByBytes(paths)) {
      const description = `realise of ${chunk.length} store path(s)`;
      logger.debug({ paths: chunk.length, nixVersion: nixVersion.text }, "nix-store --realise");
      const result = await run(
        [
          "--realise",
          "--keep-going",
          ...logArgs,
          ...jobArgs,
          ...optionArgs(realiseOptions.nixOptions),
          ...chunk,
        ],
        description,
        {
          signal: realiseOptions.signal,
          timeoutMs: realiseOptions.timeoutMs,
          // JSON entries when Nix writes them, else the plain log: whichever Nix really prints.
          onStderrLine: (line) => {
            parser.line(line);
            if (line.startsWith("@nix ")) return;
            const event = parsePlainLogLine(line);
            if (event !== undefined) onEvent(event);
          },
        },
      ).catch((error: unknown) => {
        if (isNixStoreError(error) && parser.stderrTail !== "") {
          throw new NixStoreError(error.code, error.message, {
            cause: error.cause,
            failedPaths: chunk,
            stderrTail: parser.stderrTail,
          });
        }
        throw error;
      });
      if (result.exitCode !== 0) {
        const valid = new Set(await queryValidPaths(chunk));
        const missing = chunk.filter((path) => !valid.has(path));
        for (const path of missing)
          realiseOptions.onProgress?.({ type: "failed", storePath: path });
        const tail = parser.stderrTail || result.stderrTail;
        failures.push(
          new NixStoreError(
            missing.length === 0 ? "Internal" : classifyFailure(tail),
            `${description} failed (exit ${result.exitCode ?? result.signal}); ${missing.length} path(s) not valid${
              missing[0] === undefined ? "" : `, e.g. ${JSON.stringify(missing[0])}`
            }: ${lastLine(tail)}`,
            { failedPaths: missing, stderrTail: tail },
          ),
        );
      }
    }
    if (failures.length > 0) {
      const first = failures[0]!;
      throw new NixStoreError(first.code, first.message, {
        failedPaths: failures.flatMap((failure) => failure.failedPaths),
        stderrTail: first.stderrTail,
      });
    }
    return { substituted: [...substituted], built: [...built], alreadyValid };
  }

  async function realiseWithExternalBuilder(
    builder: string,
    paths: StorePath[],
    roots: GcRootSet | undefined,
    realiseOptions: RealiseOptions,
  ) {
    const valid = new Set(await queryValidPaths(paths.map((storePath) => storePath.path)));
    const missing = paths.filter((storePath) => !valid.has(storePath.path));
    const failures: NixStoreError[] = [];
    const linkOf = new Map(paths.map((storePath, index) => [storePath.path, roots?.links[index]]));
    await forEachLimited(missing, externalBuilderConcurrency, async (storePath) => {
      if (realiseOptions.signal?.aborted) return;
      const outLink =
        linkOf.get(storePath.path) ?? join(gcRootsDir, `.external-${storePath.baseName}`);
      realiseOptions.onProgress?.({ type: "external-build-start", storePath: storePath.path });
      const description = `external builder ${builder} for ${JSON.stringify(storePath.path)}`;
      try {
        const result = await runProcess({
          spawn,
          command: builder,
          args: [outLink, storePath.path],
          description,
          env,
          signal: realiseOptions.signal,
          timeoutMs: realiseOptions.timeoutMs,
        });
        if (result.exitCode !== 0) {
          failures.push(
            new NixStoreError(
              classifyFailure(result.stderrTail),
              `${description} failed (exit ${result.exitCode ?? result.signal}): ${lastLine(result.stderrTail)}`,
              { failedPaths: [storePath.path], stderrTail: result.stderrTail },
            ),
          );
        }
      } catch (error) {
        failures.push(
          isNixStoreError(error)
            ? new NixStoreError(error.code, error.message, {
                cause: error.cause,
                failedPaths: [storePath.path],
                stderrTail: error.stderrTail,
              })
            : new NixStoreError("Internal", `${description}: ${(error as Error).message}`, {
                cause: error,
              }),
        );
      } finally {
        realiseOptions.onProgress?.({ type: "external-build-end", storePath: storePath.path });
      }
    });
    if (realiseOptions.signal?.aborted && failures.length === 0) {
      throw new NixStoreError("Canceled", `realise of ${paths.length} store path(s) was canceled`, {
        cause: realiseOptions.signal.reason,
      });
    }
    if (failures.length > 0) {
      const first = failures[0]!;
      throw new NixStoreError(first.code, first.message, {
        cause: first.cause,
        failedPaths: failures.flatMap((failure) => failure.failedPaths),
        stderrTail: first.stderrTail,
      });
    }
    // The builder must have made them valid.
    const after = new Set(await queryValidPaths(missing.map((storePath) => storePath.path)));
    const stillMissing = missing
      .filter((storePath) => !after.has(storePath.path))
      .map((storePath) => storePath.path);
    if (stillMissing.length > 0) {
      throw new NixStoreError(
        "Internal",
        `external builder ${builder} exited 0 but ${stillMissing.length} path(s) are not valid, e.g. ${JSON.stringify(stillMissing[0])}`,
        { failedPaths: stillMissing },
      );
    }
    return {
      substituted: [],
      built: missing.map((storePath) => storePath.path),
      alreadyValid: paths
        .filter((storePath) => valid.has(storePath.path))
        .map((storePath) => storePath.path),
    };
  }

  async function realise(
    paths: readonly string[],
    realiseOptions: RealiseOptions = {},
  ): Promise<RealiseResult> {
    // Everything is validated before any file or process is touched.
    const parsed = parseStorePaths(paths, pathOptions);
    const owner = realiseOptions.roots?.owner;
    if (owner !== undefined) validateRootOwner(owner);
    if (realiseOptions.nixOptions !== undefined) checkNixOptions(realiseOptions.nixOptions);
    if (realiseOptions.timeoutMs !== undefined && !(realiseOptions.timeoutMs > 0)) {
      throw new NixStoreError(
        "InvalidArgument",
        `timeoutMs must be positive, got ${realiseOptions.timeoutMs}`,
      );
    }
    if (realiseOptions.signal?.aborted) {
      throw new NixStoreError(
        "Canceled",
        `realise of ${parsed.length} store path(s) was canceled before it started`,
        {
          cause: realiseOptions.signal.reason,
        },
      );
    }
    const list = parsed.map((storePath) => storePath.path);
    if (list.length === 0) {
      return { paths: [], substituted: [], built: [], alreadyValid: [], roots: undefined };
    }
    const roots = owner === undefined ? undefined : await gcRoots.add(owner, parsed);
    try {
      const outcome =
        options.externalBuilder === undefined
          ? await realiseWithNix(list, realiseOptions)
          : await realiseWithExternalBuilder(
              options.externalBuilder,
              parsed,
              roots,
              realiseOptions,
            );
      for (const path of list) realiseOptions.onProgress?.({ type: "realised", storePath: path });
      logger.debug(
        {
          paths: list.length,
          substituted: outcome.substituted.length,
          built: outcome.built.length,
          owner,
        },
        "realised",
      );
      return { paths: list, ...outcome, roots };
    } catch (error) {
      if (roots?.created === true && owner !== undefined) {
        // This call created the owner's roots: do not leave them behind.
        await gcRoots.remove(owner).catch((cleanupError: unknown) => {
          logger.warn(
            { owner, err: cleanupError },
            "cannot remove GC roots after a failed realise",
          );
        });
      }
      // Not logged here: the caller that handles the failure logs it once (the gRPC adapters).
      throw error;
    }
  }

  return {
    storeDir,
    gcRootsDir,
    parseStorePath: (path) => parseStorePath(path, pathOptions),
    version,
    features,
    async isValid(paths) {
      const list = typeof paths === "string" ? [paths] : paths;
      const parsed = parseStorePaths(list, pathOptions);
      if (parsed.length === 0) return true;
      return (await queryValidPaths(list)).length === parsed.length;
    },
    queryValidPaths,
    closure,
    pathInfo,
    readClosureInfo,
    realise,
    async addRoots(owner, paths) {
      return gcRoots.add(owner, parseStorePaths(paths, pathOptions));
    },
    removeRoots: (owner) => gcRoots.remove(owner),
    listRootOwners: () => gcRoots.owners(),
    listRoots: (owner) => gcRoots.list(owner),
  };
}

function checkNixOptions(nixOptions: Readonly<Record<string, string>>): Record<string, string> {
  const checked: Record<string, string> = {};
  for (const [name, value] of Object.entries(nixOptions)) {
    if (!optionNamePattern.test(name) || typeof value !== "string" || value.includes("\0")) {
      throw new NixStoreError(
        "InvalidArgument",
        `Nix option ${JSON.stringify(name)} is not a valid setting`,
      );
    }
    checked[name] = value;
  }
  return checked;
}

function* chunkByBytes(paths: readonly string[]): Generator<string[]> {
  let chunk: string[] = [];
  let bytes = 0;
  for (const path of paths) {
    const size = Buffer.byteLength(path) + 1;
    if (chunk.length > 0 && bytes + size > maxArgumentBytes) {
      yield chunk;
      chunk = [];
      bytes = 0;
    }
    chunk.push(path);
    bytes += size;
  }
  if (chunk.length > 0) yield chunk;
}

function lines(text: string): string[] {
  return text.split("\n").filter((line) => line !== "");
}

function lastLine(text: string): string {
  const all = lines(text);
  const errorLine = all.findLast((line) => /error/i.test(line));
  return (errorLine ?? all.at(-1) ?? "no output").trim();
}

/** Maps Nix's complaint to a code: no way to get the path is NotFound; the rest Unavailable. */
export function classifyFailure(stderr: string): "NotFound" | "Unavailable" | "PermissionDenied" {
  if (
    /don't know how to build|no substituter that can build it|is not valid|does not exist|cannot be found|HTTP error 404/i.test(
      stderr,
    )
  ) {
    return "NotFound";
  }
  if (/permission denied|not allowed|not a trusted user/i.test(stderr)) return "PermissionDenied";
  return "Unavailable";
}

/** Parses `nix-store --dump-db` output (path, hash, size, deriver, reference count, references). */
export function parseRegistration(text: string): PathInfo[] {
  const all = text.split("\n");
  const infos: PathInfo[] = [];
  let index = 0;
  while (index < all.length && all[index] !== "") {
    const storePath = all[index++]!;
    const narHash = (all[index++] ?? "").replace(/^sha256:/, "");
    const narSize = Number(all[index++]);
    const deriver = all[index++] ?? "";
    const count = Number(all[index++]);
    if (!Number.isSafeInteger(narSize) || !Number.isSafeInteger(count) || count < 0) {
      throw new NixStoreError(
        "Internal",
        `cannot parse nix-store --dump-db output near ${JSON.stringify(storePath)}`,
      );
    }
    const references = all.slice(index, index + count);
    index += count;
    infos.push({
      storePath,
      narHash,
      narSize,
      deriver: deriver === "" ? undefined : deriver,
      references,
    });
  }
  return infos;
}

/** The first executable named `program` in `env.PATH`, or undefined. */
export function findOnPath(program: string, env: NodeJS.ProcessEnv): string | undefined {
  for (const directory of (env.PATH ?? "").split(delimiter)) {
    if (directory === "") continue;
    const candidate = join(directory, program);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // next
    }
  }
  return undefined;
}
