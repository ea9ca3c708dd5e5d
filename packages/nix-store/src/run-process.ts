import { type ChildProcess, spawn as nodeSpawn, type SpawnOptions } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";
import { NixStoreError } from "./errors.js";

/**
 * How this package starts processes. The default is `node:child_process` `spawn`; tests inject a
 * recording hook to prove that hostile input never reaches a process.
 */
export type SpawnHook = (
  command: string,
  args: readonly string[],
  options: SpawnOptions,
) => ChildProcess;

/**
 * Starts the process so that it dies with ours: on Linux, through util-linux `setpriv
 * --pdeathsig KILL` (the kernel's `PR_SET_PDEATHSIG`, kept across the exec of the command), so a
 * `kill -9` of the daemon does not leave `nix-store` running, orphaned. Without `setpriv`, or
 * when the command is not found (spawn then reports ENOENT as usual), the command starts as is.
 */
export const defaultSpawn: SpawnHook = (command, args, options) => {
  const env = options.env ?? process.env;
  const setpriv = process.platform === "linux" ? findExecutable("setpriv", env) : undefined;
  const resolved = setpriv === undefined ? undefined : findExecutable(command, env);
  if (setpriv === undefined || resolved === undefined)
    return nodeSpawn(command, [...args], options);
  return nodeSpawn(setpriv, ["--pdeathsig", "KILL", "--", resolved, ...args], options);
};

/**
 * Lookups by PATH and program, made once: every realise spawns, and a PATH search is a
 * synchronous stat per directory on the event loop. A program found once is kept; one not found
 * is looked up again next time (it may have been installed since).
 */
const found = new Map<string, string>();

/** `program` itself when it names a path, else the first executable of that name on PATH. */
function findExecutable(program: string, env: NodeJS.ProcessEnv): string | undefined {
  const key = `${env.PATH ?? ""}\0${program}`;
  const known = found.get(key);
  if (known !== undefined) return known;
  const result = searchExecutable(program, env);
  if (result !== undefined) found.set(key, result);
  return result;
}

function searchExecutable(program: string, env: NodeJS.ProcessEnv): string | undefined {
  const candidates = program.includes("/")
    ? [program]
    : (env.PATH ?? "")
        .split(delimiter)
        .filter((directory) => directory.startsWith("/"))
        .map((directory) => join(directory, program));
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // next
    }
  }
  return undefined;
}

export interface RunProcessOptions {
  spawn: SpawnHook;
  command: string;
  args: readonly string[];
  /** Names the operation in error messages, e.g. `realise of 12 store paths`. */
  description: string;
  env?: NodeJS.ProcessEnv;
  stdin?: string | Uint8Array;
  signal?: AbortSignal | undefined;
  timeoutMs?: number | undefined;
  /** Called for every complete stderr line, without the newline. */
  onStderrLine?: (line: string) => void;
  /** How many stderr lines to keep for error reports. Default 40. */
  stderrTailLines?: number;
  /** Time between SIGTERM and SIGKILL when stopping the child. Default 2000 ms. */
  killGraceMs?: number;
}

export interface RunProcessResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  /** The last lines of stderr. */
  stderrTail: string;
}

/**
 * Runs one process in its own process group and collects its output. Abort and timeout kill
 * the whole group (SIGTERM, then SIGKILL) and reject with `Canceled` / `DeadlineExceeded`
 * once the process has exited. A non-zero exit is not an error here: the caller decides.
 */
export function runProcess(options: RunProcessOptions): Promise<RunProcessResult> {
  const { signal, timeoutMs } = options;
  if (signal?.aborted) {
    return Promise.reject(
      new NixStoreError("Canceled", `${options.description} was canceled before it started`, {
        cause: signal.reason,
      }),
    );
  }
  const tailLimit = options.stderrTailLines ?? 40;
  const killGraceMs = options.killGraceMs ?? 2000;
  return new Promise<RunProcessResult>((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = options.spawn(options.command, options.args, {
        stdio: ["pipe", "pipe", "pipe"],
        detached: true,
        env: options.env ?? process.env,
      });
    } catch (error) {
      reject(
        new NixStoreError("FailedPrecondition", `cannot start ${options.command}`, {
          cause: error,
        }),
      );
      return;
    }
    const stdoutChunks: Buffer[] = [];
    const tail: string[] = [];
    let partial = "";
    let stopReason: NixStoreError | undefined;
    let spawnError: unknown;
    let killTimer: NodeJS.Timeout | undefined;
    let deadline: NodeJS.Timeout | undefined;

    const pushLine = (line: string) => {
      tail.push(line);
      if (tail.length > tailLimit) tail.shift();
      options.onStderrLine?.(line);
    };
    const stop = (reason: NixStoreError) => {
      if (stopReason !== undefined) return;
      stopReason = reason;
      killGroup(child, "SIGTERM");
      killTimer = setTimeout(() => killGroup(child, "SIGKILL"), killGraceMs);
      killTimer.unref();
    };
    const onAbort = () =>
      stop(
        new NixStoreError("Canceled", `${options.description} was canceled`, {
          cause: signal?.reason,
        }),
      );
    signal?.addEventListener("abort", onAbort, { once: true });
    if (timeoutMs !== undefined) {
      deadline = setTimeout(
        () =>
          stop(
            new NixStoreError(
              "DeadlineExceeded",
              `${options.description} did not finish within ${timeoutMs} ms`,
            ),
          ),
        timeoutMs,
      );
    }

    child.stdout?.on("data", (chunk: Buffer) => stdoutChunks.push(chunk));
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (chunk: string) => {
      partial += chunk;
      let newline = partial.indexOf("\n");
      while (newline !== -1) {
        pushLine(partial.slice(0, newline));
        partial = partial.slice(newline + 1);
        newline = partial.indexOf("\n");
      }
    });
    child.on("error", (error) => {
      spawnError = error;
    });
    child.stdin?.on("error", () => {
      // EPIPE when the child exits before reading all input: its exit status tells the story.
    });
    if (options.stdin !== undefined) child.stdin?.end(options.stdin);
    else child.stdin?.end();

    child.on("close", (exitCode, exitSignal) => {
      signal?.removeEventListener("abort", onAbort);
      if (deadline !== undefined) clearTimeout(deadline);
      if (killTimer !== undefined) clearTimeout(killTimer);
      if (partial.length > 0) pushLine(partial);
      const stderrTail = tail.join("\n");
      if (stopReason !== undefined) {
        reject(
          new NixStoreError(stopReason.code, stopReason.message, {
            cause: stopReason.cause,
            stderrTail,
          }),
        );
        return;
      }
      if (spawnError !== undefined) {
        const code = (spawnError as NodeJS.ErrnoException).code;
        reject(
          new NixStoreError(
            code === "ENOENT" || code === "EACCES" ? "FailedPrecondition" : "Internal",
            `cannot run ${options.command} for ${options.description}: ${(spawnError as Error).message}`,
            { cause: spawnError, stderrTail },
          ),
        );
        return;
      }
      resolve({
        exitCode,
        signal: exitSignal,
        stdout: Buffer.concat(stdoutChunks).toString("utf8"),
        stderrTail,
      });
    });
  });
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // Already gone.
    }
  }
}
