import { type ChildProcess, spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const hook = `
export async function resolve(specifier, context, next) {
  try {
    return await next(specifier, context);
  } catch (error) {
    if (/^\\.{1,2}\\//.test(specifier) && specifier.endsWith(".js")) {
      return next(specifier.slice(0, -3) + ".ts", context);
    }
    throw error;
  }
}
`;

/**
 * Starts `node` on an ES module source that may import this package's TypeScript sources
 * directly (Node strips the types; a resolve hook maps `./x.js` to `./x.ts`). Used by tests
 * that must kill a real process in the middle of its work.
 */
export async function spawnTypeScriptChild(
  directory: string,
  source: string,
  args: readonly string[] = [],
  env: NodeJS.ProcessEnv = process.env,
): Promise<ChildProcess> {
  const hookPath = join(directory, "resolve-ts-hook.mjs");
  const registerPath = join(directory, "register-ts-hook.mjs");
  const mainPath = join(directory, "child-main.mjs");
  await writeFile(hookPath, hook);
  await writeFile(
    registerPath,
    `import { register } from "node:module";\nregister(${JSON.stringify(pathToFileURL(hookPath).href)});\n`,
  );
  await writeFile(mainPath, source);
  return spawn(process.execPath, ["--no-warnings", "--import", registerPath, mainPath, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env,
  });
}

/** Resolves with the first stdout line matching `pattern`; rejects if the child exits first. */
export function waitForLine(child: ChildProcess, pattern: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffer = "";
    let stderr = "";
    const onData = (chunk: Buffer) => {
      buffer += chunk.toString();
      const lines = buffer.split("\n");
      buffer = lines.pop() ?? "";
      for (const line of lines) {
        if (pattern.test(line)) {
          child.stdout?.off("data", onData);
          resolve(line);
          return;
        }
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.once("exit", (code, signal) =>
      reject(new Error(`child exited (${code ?? signal}) before ${pattern}: ${stderr}`)),
    );
  });
}

/** Waits for the child to exit; resolves with its exit code or signal, and its stderr. */
export function exitOf(
  child: ChildProcess,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  child.stdout?.resume();
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode, stderr });
      return;
    }
    child.once("close", (code, signal) => resolve({ code, signal, stderr }));
  });
}

/** Sends SIGKILL and waits for the exit. */
export function kill9(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve();
      return;
    }
    child.once("exit", () => resolve());
    child.kill("SIGKILL");
  });
}
