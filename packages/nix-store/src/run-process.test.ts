import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { isNixStoreError } from "./errors.js";
import { defaultSpawn, runProcess } from "./run-process.js";

// These run Node itself as the child: no external program is involved.
const node = process.execPath;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The default spawn, remembering the child's pid. */
function recordingSpawn(): { spawn: typeof defaultSpawn; pid(): number } {
  let pid = 0;
  return {
    spawn: (command, args, options) => {
      const child = defaultSpawn(command, args, options);
      pid = child.pid ?? 0;
      return child;
    },
    pid: () => pid,
  };
}

describe("runProcess", () => {
  it("collects stdout, the stderr tail and the exit code", async () => {
    const lines: string[] = [];
    const result = await runProcess({
      spawn: defaultSpawn,
      command: node,
      args: [
        "-e",
        "process.stdin.pipe(process.stdout); for (let i = 0; i < 50; i++) console.error('line ' + i); process.exitCode = 3",
      ],
      description: "test",
      stdin: "from stdin",
      stderrTailLines: 2,
      onStderrLine: (line) => lines.push(line),
    });
    expect(result).toEqual({
      exitCode: 3,
      signal: null,
      stdout: "from stdin",
      stderrTail: "line 48\nline 49",
    });
    expect(lines).toHaveLength(50);
  });

  it("kills the process group on abort and rejects with Canceled", async () => {
    const spawned = recordingSpawn();
    const controller = new AbortController();
    const running = runProcess({
      spawn: spawned.spawn,
      command: node,
      args: ["-e", "console.error('ready'); setInterval(() => {}, 1000)"],
      description: "sleeper",
      signal: controller.signal,
      onStderrLine: () => controller.abort(new Error("stop")),
    });
    await expect(running).rejects.toSatisfy((error) => isNixStoreError(error, "Canceled"));
    expect(spawned.pid()).toBeGreaterThan(0);
    expect(alive(spawned.pid())).toBe(false);
  });

  it("kills a child that ignores SIGTERM once the grace period ends", async () => {
    const spawned = recordingSpawn();
    const running = runProcess({
      spawn: spawned.spawn,
      command: node,
      args: ["-e", "process.on('SIGTERM', () => {}); setInterval(() => {}, 1000)"],
      description: "stubborn",
      timeoutMs: 200,
      killGraceMs: 100,
    });
    const error = await running.catch((e: unknown) => e);
    expect(isNixStoreError(error, "DeadlineExceeded")).toBe(true);
    expect((error as Error).message).toContain("stubborn did not finish within 200 ms");
    expect(alive(spawned.pid())).toBe(false);
  });

  it("reports a program that does not exist", async () => {
    await expect(
      runProcess({
        spawn: defaultSpawn,
        command: "/nonexistent/nix-store",
        args: [],
        description: "x",
      }),
    ).rejects.toSatisfy((error) => isNixStoreError(error, "FailedPrecondition"));
  });
});

/** Alive and not a zombie (an orphan that died waits for init to reap it). */
async function running(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

describe.skipIf(process.platform !== "linux")("children of a killed process", () => {
  it("die with it (kill -9 of the parent leaves no orphan)", async () => {
    const directory = await mkdtemp(join(tmpdir(), "run-process-orphan-"));
    try {
      // The parent: runs a long child through runProcess, prints its pid, waits.
      const hook = join(directory, "hook.mjs");
      await writeFile(
        hook,
        `export async function resolve(specifier, context, next) {
          try { return await next(specifier, context); } catch (error) {
            if (specifier.startsWith(".") && specifier.endsWith(".js")) return next(specifier.slice(0, -3) + ".ts", context);
            throw error;
          }
        }`,
      );
      const register = join(directory, "register.mjs");
      await writeFile(
        register,
        `import { register } from "node:module"; register(${JSON.stringify(pathToFileURL(hook).href)});`,
      );
      const main = join(directory, "main.mjs");
      const module = pathToFileURL(join(import.meta.dirname, "run-process.ts")).href;
      await writeFile(
        main,
        `import { defaultSpawn, runProcess } from ${JSON.stringify(module)};
        await runProcess({
          spawn: (command, args, options) => {
            const child = defaultSpawn(command, args, options);
            console.log("child " + child.pid);
            return child;
          },
          command: ${JSON.stringify(node)},
          args: ["-e", "setInterval(() => {}, 1000)"],
          description: "sleeper",
        });`,
      );
      const parent = spawn(node, ["--no-warnings", "--import", register, main], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      const pid = await new Promise<number>((resolve, reject) => {
        let buffer = "";
        parent.stdout.on("data", (chunk: Buffer) => {
          buffer += chunk.toString();
          const match = /child (\d+)/.exec(buffer);
          if (match !== null) resolve(Number(match[1]));
        });
        parent.once("exit", () => reject(new Error("parent exited first")));
      });
      expect(await running(pid)).toBe(true);
      const exited = new Promise((resolve) => parent.once("exit", resolve));
      parent.kill("SIGKILL");
      await exited;
      // The kernel signals the child when the parent dies; give it a moment to be gone.
      let alive = true;
      for (let index = 0; index < 200 && alive; index++) {
        alive = await running(pid);
        if (alive) await new Promise((resolve) => setTimeout(resolve, 25));
      }
      if (alive) process.kill(pid, "SIGKILL");
      expect(alive).toBe(false);
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });
});
