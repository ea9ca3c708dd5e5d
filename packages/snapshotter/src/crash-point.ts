/**
 * Crash points for tests of crash safety: a test starts a child process with this variable set
 * to a step's name, and the process kills itself with SIGKILL when it reaches that step. The
 * same variable drives `@nix-snapshotter/nix-store`'s GC root steps. Read once; unset in normal
 * operation, where a crash point costs one comparison.
 */
export const crashPointEnv = "NIX_SNAPSHOTTER_TEST_CRASH_AT";

const crashPoint = process.env[crashPointEnv];

/** Kills this process at `point` when {@link crashPointEnv} names it. */
export function crashAt(point: string): void {
  if (crashPoint !== undefined && crashPoint === point) process.kill(process.pid, "SIGKILL");
}
