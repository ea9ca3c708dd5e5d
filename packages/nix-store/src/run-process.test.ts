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
