import { type Level, type Logger, pino } from "pino";

const levels: readonly Level[] = ["trace", "debug", "info", "warn", "error", "fatal"];

export function parseLogLevel(text: string): Level {
  const level = text.toLowerCase() === "warning" ? "warn" : text.toLowerCase();
  if (!(levels as readonly string[]).includes(level)) {
    throw new Error(`invalid log level ${JSON.stringify(text)}: use ${levels.join(", ")}`);
  }
  return level as Level;
}

/** JSON lines on stderr; pino-pretty only when stderr is a terminal and NIX_REGISTRY_LOG_FORMAT is not `json`. */
export function createLogger(level: Level, env: NodeJS.ProcessEnv = process.env): Logger {
  if (process.stderr.isTTY && env.NIX_REGISTRY_LOG_FORMAT !== "json") {
    return pino({
      level,
      transport: { target: "pino-pretty", options: { destination: 2, colorize: true } },
    });
  }
  return pino({ level, base: { pid: process.pid } }, pino.destination({ dest: 2, sync: true }));
}
