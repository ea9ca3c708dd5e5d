import { vi } from "vitest";
import { createProgram } from "../program.js";

/** Runs the CLI program in-process (log level `error`), returning what it wrote to stdout. */
export async function runCli(...args: string[]): Promise<string> {
  const output: string[] = [];
  const spy = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    output.push(String(chunk));
    return true;
  });
  try {
    await createProgram()
      .exitOverride()
      .configureOutput({ writeErr: () => {}, writeOut: () => {} })
      .parseAsync(["node", "nix2container", "-l", "error", ...args]);
  } finally {
    spy.mockRestore();
  }
  return output.join("");
}
