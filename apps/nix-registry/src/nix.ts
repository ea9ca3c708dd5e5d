import { stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { CodedError, type CodedErrorOptions, ErrorCode } from "@nix-snapshotter/errdefs";
import { defaultSpawn, isStorePath } from "@nix-snapshotter/nix-store";

/** The fixed expressions shipped with the app (`nix/` beside `dist/` and `src/`). */
export const imageInputsExpression = fileURLToPath(
  new URL("../nix/image-inputs.nix", import.meta.url),
);
export const revisionExpression = fileURLToPath(new URL("../nix/revision.nix", import.meta.url));
export const gitRevisionExpression = fileURLToPath(
  new URL("../nix/git-revision.nix", import.meta.url),
);

/** Most bytes kept of a Nix process's standard output and of its standard error (the tail). */
const MAX_OUTPUT = 1024 * 1024;

/**
 * A Nix program that failed (Unknown: its error output says why), passed its deadline
 * (DeadlineExceeded) or was canceled (Canceled); `stderr` is the tail of its error output.
 */
export class NixError extends CodedError {
  static override readonly marker: symbol = Symbol.for("nix-registry.NixError");

  readonly stderr: string;

  constructor(
    code: ErrorCode,
    message: string,
    options: CodedErrorOptions & { stderr?: string } = {},
  ) {
    super(code, message, options.cause === undefined ? {} : { cause: options.cause });
    this.name = "NixError";
    this.stderr = options.stderr ?? "";
  }
}

export interface RunNixOptions {
  /** Directory of the Nix programs; `""` = found on PATH. */
  nixBin: string;
  /** Absolute deadline (ms since the epoch); the process group is killed when it passes. */
  deadline: number;
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
}

/** Last lines of Nix's error output, for a message a client can read. */
export function nixErrorSummary(stderr: string): string {
  const lines = stderr
    .split("\n")
    .map((line) => line.trimEnd())
    .filter((line) => line !== "" && !line.startsWith("warning:"));
  const errorLine = lines.findIndex((line) => line.startsWith("error:"));
  const picked = errorLine >= 0 ? lines.slice(errorLine, errorLine + 4) : lines.slice(-4);
  return picked.join(" ").replace(/\s+/g, " ").slice(0, 600);
}

/**
 * Runs a Nix program in its own process group with arguments as an array (no shell), stdout and
 * stderr bounded; at the deadline or on abort the whole group gets SIGKILL. Started through the
 * nix-store package's spawn (`setpriv --pdeathsig KILL` where present): a `kill -9` of the
 * registry does not leave nix-build running and creating roots after the restart's cleanup.
 */
export function runNix(
  program: string,
  args: readonly string[],
  options: RunNixOptions,
): Promise<string> {
  const command = options.nixBin === "" ? program : join(options.nixBin, program);
  return new Promise((resolve, reject) => {
    const child = defaultSpawn(command, args, {
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
      env: options.env ?? process.env,
    });
    let stdout = "";
    let stderr = "";
    let stopped: "Timeout" | "Canceled" | undefined;
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      if (stdout.length < MAX_OUTPUT) stdout += chunk;
    });
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      stderr = (stderr + chunk).slice(-MAX_OUTPUT);
    });
    const kill = (code: "Timeout" | "Canceled") => {
      stopped ??= code;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
    };
    const remaining = Math.max(0, options.deadline - Date.now());
    const timer = setTimeout(() => kill("Timeout"), remaining);
    const onAbort = () => kill("Canceled");
    options.signal?.addEventListener("abort", onAbort, { once: true });
    const done = () => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    };
    child.once("error", (error) => {
      done();
      reject(
        new NixError(ErrorCode.FailedPrecondition, `cannot run ${command}: ${error.message}`, {
          cause: error,
        }),
      );
    });
    child.once("close", (code, signal) => {
      done();
      if (stopped === "Timeout") {
        reject(
          new NixError(ErrorCode.DeadlineExceeded, `${program} killed: NIX_TIMEOUT passed`, {
            stderr,
          }),
        );
      } else if (stopped === "Canceled") {
        reject(new NixError(ErrorCode.Canceled, `${program} canceled`, { stderr }));
      } else if (code !== 0) {
        reject(
          new NixError(
            ErrorCode.Unknown,
            `${program} failed (${code ?? signal}): ${nixErrorSummary(stderr)}`,
            { stderr },
          ),
        );
      } else resolve(stdout);
    });
  });
}

/** What the fixed expression's `check` reports for a list of names. */
export interface InputsCheck {
  missing: string[];
  notPackages: string[];
  /** Names after `shell` expansion and deduplication. */
  names: string[];
  outPaths: string[];
  closureInfo: string | null;
}

export interface PackageSetOptions {
  /** Absolute path of the package set (file or directory); unused when `gitUrl` is set. */
  pkgsPath: string;
  /** A git repository holding the package set (`""`: use `pkgsPath`). */
  gitUrl?: string;
  nixBin: string;
  storeDir: string;
  env?: NodeJS.ProcessEnv;
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((item) => typeof item === "string");
}

function parseCheck(stdout: string, storeDir: string): InputsCheck {
  let value: unknown;
  try {
    value = JSON.parse(stdout);
  } catch {
    throw new NixError(ErrorCode.Unknown, "nix-instantiate printed no JSON for the package check");
  }
  const record = value as Record<string, unknown>;
  const closureInfo = record.closureInfo ?? null;
  if (
    typeof value !== "object" ||
    value === null ||
    !isStringArray(record.missing) ||
    !isStringArray(record.notPackages) ||
    !isStringArray(record.names) ||
    !isStringArray(record.outPaths) ||
    (closureInfo !== null && typeof closureInfo !== "string")
  ) {
    throw new NixError(ErrorCode.Unknown, "the package check's JSON is not of the expected shape");
  }
  for (const path of [...record.outPaths, ...(closureInfo === null ? [] : [closureInfo])]) {
    if (!isStorePath(path, { storeDir })) {
      throw new NixError(
        ErrorCode.Unknown,
        `the package set gave ${JSON.stringify(path)}, not a store path`,
      );
    }
  }
  return {
    missing: record.missing,
    notPackages: record.notPackages,
    names: record.names,
    outPaths: record.outPaths,
    closureInfo,
  };
}

/** Which source the package set comes from: a local path, or a git ref at a resolved commit. */
export interface SourceRevision {
  /** The cache key's revision: the source's store hash, or the git commit. */
  revision: string;
  /** For a git set: the ref the tag resolved through (`refs/heads/main`, `refs/tags/v1`), or the commit. */
  gitRef?: string;
}

/** Arguments common to both steps: every request value is a string argument. */
function inputArgs(
  set: PackageSetOptions,
  source: SourceRevision,
  names: readonly string[],
  system: string,
): string[] {
  const git =
    set.gitUrl !== undefined && set.gitUrl !== ""
      ? ["--argstr", "gitUrl", set.gitUrl, "--argstr", "gitRev", source.revision]
      : [];
  return [
    imageInputsExpression,
    ...git,
    "--argstr",
    "pkgsPath",
    set.pkgsPath,
    "--argstr",
    "namesJson",
    JSON.stringify(names),
    "--argstr",
    "system",
    system,
  ];
}

/** Evaluates which names exist and which output paths they have (nothing is built). */
export async function checkInputs(
  set: PackageSetOptions,
  source: SourceRevision,
  names: readonly string[],
  system: string,
  options: Omit<RunNixOptions, "nixBin" | "env">,
): Promise<InputsCheck> {
  const stdout = await runNix(
    "nix-instantiate",
    ["--eval", "--strict", "--json", ...inputArgs(set, source, names, system), "-A", "check"],
    { ...options, nixBin: set.nixBin, ...(set.env ? { env: set.env } : {}) },
  );
  return parseCheck(stdout, set.storeDir);
}

/**
 * Builds (or substitutes) the packages and their closure info; `outLink` (`<dir>/result`)
 * becomes a GC root of each output (`result`, `result-2`...).
 */
export async function buildInputs(
  set: PackageSetOptions,
  source: SourceRevision,
  names: readonly string[],
  system: string,
  outLink: string,
  options: Omit<RunNixOptions, "nixBin" | "env">,
): Promise<string[]> {
  const stdout = await runNix(
    "nix-build",
    [...inputArgs(set, source, names, system), "-A", "build", "--out-link", outLink],
    { ...options, nixBin: set.nixBin, ...(set.env ? { env: set.env } : {}) },
  );
  return stdout.split("\n").filter((line) => line !== "");
}

/** The closure of `paths` (`nix-store --query --requisites`), sorted. */
export async function queryClosure(
  set: PackageSetOptions,
  paths: readonly string[],
  options: Omit<RunNixOptions, "nixBin" | "env">,
): Promise<string[]> {
  const stdout = await runNix("nix-store", ["--query", "--requisites", ...paths], {
    ...options,
    nixBin: set.nixBin,
    ...(set.env ? { env: set.env } : {}),
  });
  const closure = stdout.split("\n").filter((line) => line !== "");
  for (const path of closure) {
    if (!isStorePath(path, { storeDir: set.storeDir })) {
      throw new NixError(
        ErrorCode.Unknown,
        `nix-store listed ${JSON.stringify(path)}, not a store path`,
      );
    }
  }
  return closure.sort();
}

/**
 * Copies store paths into a binary cache directory (`nix copy --to file://<dir>`), signing the
 * narinfos with the secret key file.
 */
export async function exportToBinaryCache(
  set: PackageSetOptions,
  paths: readonly string[],
  cacheDir: string,
  secretKeyFile: string,
  options: Omit<RunNixOptions, "nixBin" | "env">,
): Promise<void> {
  const params = new URLSearchParams({ "secret-key": secretKeyFile, compression: "zstd" });
  await runNix(
    "nix",
    [
      "--extra-experimental-features",
      "nix-command",
      "copy",
      "--to",
      `file://${cacheDir}?${params.toString()}`,
      ...paths,
    ],
    { ...options, nixBin: set.nixBin, ...(set.env ? { env: set.env } : {}) },
  );
}

/** A full commit hash, as a tag may name one. */
export const commitPattern = /^[0-9a-f]{40}$/;

/**
 * The commit a branch or a git tag of the set's repository points at (`git ls-remote`, the name
 * an argument, no shell): a branch wins over a tag of the same name, an annotated tag is peeled
 * to its commit; `HEAD` is the repository's default branch. Undefined when no ref has the name.
 * `name` must have passed the tag or branch grammar (it never starts with `-`).
 */
export async function gitRefRevision(
  set: PackageSetOptions,
  name: string,
  options: Omit<RunNixOptions, "nixBin" | "env">,
): Promise<SourceRevision | undefined> {
  const wanted =
    name === "HEAD"
      ? ["HEAD"]
      : [`refs/heads/${name}`, `refs/tags/${name}^{}`, `refs/tags/${name}`];
  const found = await lsRemote(set, [], wanted, options);
  for (const ref of wanted) {
    const revision = found.get(ref);
    if (revision !== undefined) return { revision, gitRef: ref.replace(/\^\{\}$/, "") };
  }
  return undefined;
}

/**
 * Names of the set's branches and git tags (`git ls-remote --heads --tags`), each once, as a tag
 * may name them.
 */
export async function gitRefNames(
  set: PackageSetOptions,
  options: Omit<RunNixOptions, "nixBin" | "env">,
): Promise<string[]> {
  const names = new Set<string>();
  for (const ref of (await lsRemote(set, ["--heads", "--tags"], [], options)).keys()) {
    const match = /^refs\/(?:heads|tags)\/(.+?)(?:\^\{\})?$/.exec(ref);
    if (match !== null) names.add(match[1]!);
  }
  return [...names];
}

/**
 * `git ls-remote <flags> <set's url> <patterns>` (no shell, no prompt): each ref and the commit it
 * names.
 * Only complete lines of the bounded output count, so a listing cut at the bound loses its last
 * refs and never gives a truncated one.
 */
async function lsRemote(
  set: PackageSetOptions,
  flags: readonly string[],
  patterns: readonly string[],
  options: Omit<RunNixOptions, "nixBin" | "env">,
): Promise<Map<string, string>> {
  const stdout = await runNix("git", ["ls-remote", ...flags, set.gitUrl ?? "", ...patterns], {
    ...options,
    nixBin: "",
    env: { ...(set.env ?? process.env), GIT_TERMINAL_PROMPT: "0" },
  });
  const found = new Map<string, string>();
  for (const line of stdout.slice(0, stdout.lastIndexOf("\n") + 1).split("\n")) {
    const [hash, ref] = line.split("\t");
    if (hash !== undefined && ref !== undefined && commitPattern.test(hash)) found.set(ref, hash);
  }
  return found;
}

/** Checks that `commit` is in the set's git repository (Nix fetches it); gives it back. */
export async function gitRevision(
  set: PackageSetOptions,
  commit: string,
  options: Omit<RunNixOptions, "nixBin" | "env">,
): Promise<string> {
  const stdout = await runNix(
    "nix-instantiate",
    [
      "--eval",
      "--json",
      gitRevisionExpression,
      "--argstr",
      "gitUrl",
      set.gitUrl ?? "",
      "--argstr",
      "gitRev",
      commit,
    ],
    { ...options, nixBin: set.nixBin, ...(set.env ? { env: set.env } : {}) },
  );
  const rev = JSON.parse(stdout) as unknown;
  if (typeof rev !== "string" || !commitPattern.test(rev)) {
    throw new NixError(
      ErrorCode.Unknown,
      `git revision of ${commit}: unexpected output ${stdout.slice(0, 200)}`,
    );
  }
  return rev;
}

/** The package set's revision: the store path its source directory hashes to. */
export async function packageSetRevision(
  set: PackageSetOptions,
  options: Omit<RunNixOptions, "nixBin" | "env">,
): Promise<string> {
  const info = await stat(set.pkgsPath);
  const sourceDir = info.isDirectory() ? set.pkgsPath : dirname(set.pkgsPath);
  const stdout = await runNix(
    "nix-instantiate",
    ["--eval", "--json", revisionExpression, "--argstr", "sourceDir", sourceDir],
    { ...options, nixBin: set.nixBin, ...(set.env ? { env: set.env } : {}) },
  );
  const path = JSON.parse(stdout) as unknown;
  if (typeof path !== "string" || !isStorePath(path, { storeDir: set.storeDir })) {
    throw new NixError(
      ErrorCode.Unknown,
      `revision of ${set.pkgsPath}: unexpected output ${stdout.slice(0, 200)}`,
    );
  }
  return path.slice(set.storeDir.length + 1, set.storeDir.length + 33);
}
