import type { Command } from "commander";
import { type Logger, pino } from "pino";

export const defaultAddress = "/run/containerd/containerd.sock";
export const defaultNamespace = "default";
export const logLevels = ["trace", "debug", "info", "warn", "error", "fatal", "panic"] as const;

/** The global flags, as the Go tool has them. */
export interface GlobalOptions {
  logLevel: string;
  address: string;
  namespace: string;
}

/** The global flags seen from any (sub)command. */
export function globalOptions(command: Command): GlobalOptions {
  return command.optsWithGlobals<GlobalOptions>();
}

/**
 * The CLI's logger: JSON lines on stderr, pretty when stderr is a terminal. `panic` (a logrus
 * level the Go tool accepts) maps to `fatal`.
 */
export function createLogger(
  level: string,
  destination: NodeJS.WritableStream = process.stderr,
): Logger {
  const pinoLevel = level === "panic" ? "fatal" : level;
  const pretty = destination === process.stderr && process.stderr.isTTY === true;
  if (pretty) {
    return pino({
      level: pinoLevel,
      transport: { target: "pino-pretty", options: { destination: 2, colorize: true } },
    });
  }
  return pino({ level: pinoLevel }, destination);
}
