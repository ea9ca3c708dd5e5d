import { type Level, type Logger, pino } from "pino";

/** The Go daemon's level names (logrus) as pino's. */
const levels: Record<string, Level> = {
  trace: "trace",
  debug: "debug",
  info: "info",
  warn: "warn",
  warning: "warn",
  error: "error",
  fatal: "fatal",
  panic: "fatal",
};

export function parseLogLevel(text: string): Level {
  const level = levels[text.toLowerCase()];
  if (!level) {
    throw new Error(
      `invalid log level ${JSON.stringify(text)}: use trace, debug, info, warn, error, fatal or panic`,
    );
  }
  return level;
}

/**
 * JSON lines on stderr; human-readable (pino-pretty) only when stderr is a terminal and
 * `NIX_SNAPSHOTTER_LOG_FORMAT` is not `json`.
 */
export function createLogger(level: Level, env: NodeJS.ProcessEnv = process.env): Logger {
  const pretty = process.stderr.isTTY && env.NIX_SNAPSHOTTER_LOG_FORMAT !== "json";
  if (pretty) {
    return pino({
      level,
      transport: { target: "pino-pretty", options: { destination: 2, colorize: true } },
    });
  }
  return pino({ level, base: { pid: process.pid } }, pino.destination({ dest: 2, sync: true }));
}
