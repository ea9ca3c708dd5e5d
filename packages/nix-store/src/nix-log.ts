/** Progress of a {@link NixStore.realise} call. */
export type RealiseProgress =
  /** Nix started copying `storePath` from the binary cache `substituter`. */
  | { type: "substitute-start"; storePath: string; substituter: string }
  /** Nix finished (or gave up) substituting `storePath`. */
  | { type: "substitute-end"; storePath: string; substituter: string }
  /** Nix started building `derivation`. */
  | { type: "build-start"; derivation: string }
  /** Nix finished (or gave up) building `derivation`. */
  | { type: "build-end"; derivation: string }
  /** The external builder started for `storePath`. */
  | { type: "external-build-start"; storePath: string }
  /** The external builder finished for `storePath`. */
  | { type: "external-build-end"; storePath: string }
  /** Bytes transferred so far for `storePath` (when Nix reports them). */
  | { type: "download"; storePath: string; done: number; expected: number }
  /** A requested path is valid now. Emitted once per requested path, at the end. */
  | { type: "realised"; storePath: string }
  /** A requested path is not valid after Nix gave up. */
  | { type: "failed"; storePath: string };

// Activity and result types of Nix's internal-json logger (stable since Nix 2.0).
const activitySubstitute = 108;
const activityBuild = 105;
const activityCopyPath = 100;
const resultProgress = 105;

interface Activity {
  kind: "substitute" | "build" | "copy";
  storePath: string;
  substituter: string;
}

const ansiPattern = /\u001b\[[0-9;]*[A-Za-z]/g;

/**
 * Turns Nix's `--log-format internal-json` stderr into progress events and a readable tail of
 * messages. Lines that are not `@nix` JSON are kept as they are.
 */
export class NixLogParser {
  private readonly activities = new Map<number, Activity>();
  private readonly tail: string[] = [];

  constructor(
    private readonly onProgress: ((event: RealiseProgress) => void) | undefined,
    private readonly tailLines = 40,
  ) {}

  get stderrTail(): string {
    return this.tail.join("\n");
  }

  line(line: string): void {
    if (!line.startsWith("@nix ")) {
      this.keep(line);
      return;
    }
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(line.slice(5)) as Record<string, unknown>;
    } catch {
      this.keep(line);
      return;
    }
    const id = typeof entry.id === "number" ? entry.id : -1;
    const fields = Array.isArray(entry.fields) ? entry.fields : [];
    switch (entry.action) {
      case "msg": {
        const level = typeof entry.level === "number" ? entry.level : 0;
        // Errors and warnings (0-2), plus info (3) which carries build failure summaries.
        if (level <= 3 && typeof entry.msg === "string") this.keep(entry.msg);
        break;
      }
      case "start": {
        const text = typeof entry.text === "string" ? entry.text : "";
        if (entry.type === activitySubstitute && typeof fields[0] === "string") {
          const activity: Activity = {
            kind: "substitute",
            storePath: fields[0],
            substituter: typeof fields[1] === "string" ? fields[1] : "",
          };
          this.activities.set(id, activity);
          this.emit({
            type: "substitute-start",
            storePath: activity.storePath,
            substituter: activity.substituter,
          });
        } else if (entry.type === activityBuild && typeof fields[0] === "string") {
          this.activities.set(id, { kind: "build", storePath: fields[0], substituter: "" });
          this.emit({ type: "build-start", derivation: fields[0] });
          if (text !== "") this.keep(text);
        } else if (entry.type === activityCopyPath && typeof fields[0] === "string") {
          this.activities.set(id, {
            kind: "copy",
            storePath: fields[0],
            substituter: typeof fields[1] === "string" ? fields[1] : "",
          });
        }
        break;
      }
      case "stop": {
        const activity = this.activities.get(id);
        if (activity === undefined) break;
        this.activities.delete(id);
        if (activity.kind === "substitute") {
          this.emit({
            type: "substitute-end",
            storePath: activity.storePath,
            substituter: activity.substituter,
          });
        } else if (activity.kind === "build") {
          this.emit({ type: "build-end", derivation: activity.storePath });
        }
        break;
      }
      case "result": {
        const activity = this.activities.get(id);
        if (activity?.kind === "copy" && entry.type === resultProgress) {
          const done = fields[0];
          const expected = fields[1];
          if (typeof done === "number" && typeof expected === "number" && expected > 0) {
            this.emit({ type: "download", storePath: activity.storePath, done, expected });
          }
        } else if (entry.type === 101 && typeof fields[0] === "string") {
          // A build log line.
          this.keep(fields[0]);
        }
        break;
      }
      default:
        break;
    }
  }

  private emit(event: RealiseProgress): void {
    this.onProgress?.(event);
  }

  private keep(text: string): void {
    const clean = text.replace(ansiPattern, "");
    for (const part of clean.split("\n")) {
      this.tail.push(part);
      if (this.tail.length > this.tailLines) this.tail.shift();
    }
  }
}

/** Parses the plain (non-JSON) log of Nix before 2.4: "copying path '...' from '...'...". */
export function parsePlainLogLine(line: string): RealiseProgress | undefined {
  const copying = /^copying path '([^']+)' from '([^']+)'/.exec(line);
  if (copying !== null) {
    return { type: "substitute-start", storePath: copying[1]!, substituter: copying[2]! };
  }
  const building = /^building '([^']+)'/.exec(line);
  if (building !== null) return { type: "build-start", derivation: building[1]! };
  return undefined;
}
