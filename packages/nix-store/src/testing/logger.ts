import type { Logger } from "../logger.js";

/** One call of a {@link recordingLogger}. */
export interface LogEntry {
  level: "debug" | "info" | "warn" | "error";
  object: Record<string, unknown>;
  message?: string;
}

/** A Logger that appends every call to `entries`, its children's included (tests and tools). */
export function recordingLogger(entries: LogEntry[]): Logger {
  const at =
    (level: LogEntry["level"]) =>
    (object: Record<string, unknown>, message?: string): void => {
      entries.push(message === undefined ? { level, object } : { level, object, message });
    };
  const logger: Logger = {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: () => logger,
  };
  return logger;
}
