import { spawn } from "node:child_process";

/**
 * Tells systemd about the daemon's state (`READY=1`, `STOPPING=1`, `STATUS=...`) when
 * `NOTIFY_SOCKET` is set.
 *
 * The protocol is one datagram on a unix SOCK_DGRAM socket. Node cannot send unix datagrams
 * without a native addon (`dgram` is UDP only; `net` is SOCK_STREAM and gets EPROTOTYPE), so this
 * runs systemd's own `systemd-notify` with `--pid=<our pid>`. systemd then sees the message coming
 * from a child process: the unit needs `NotifyAccess=all` (the NixOS module sets it). Returns
 * false when NOTIFY_SOCKET is unset; throws when the notification could not be sent.
 */
export async function notifySystemd(
  assignments: readonly string[],
  options: { env?: NodeJS.ProcessEnv; command?: string } = {},
): Promise<boolean> {
  const env = options.env ?? process.env;
  if (!env.NOTIFY_SOCKET) return false;
  const command = options.command ?? "systemd-notify";
  await new Promise<void>((resolve, reject) => {
    const child = spawn(command, [`--pid=${process.pid}`, ...assignments], {
      env,
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk;
    });
    child.once("error", (error) =>
      reject(
        new Error(`cannot run ${command} to notify systemd: ${error.message}`, { cause: error }),
      ),
    );
    child.once("close", (code) => {
      if (code === 0) resolve();
      else
        reject(
          new Error(`${command} ${assignments.join(" ")} exited with ${code}: ${stderr.trim()}`),
        );
    });
  });
  return true;
}
