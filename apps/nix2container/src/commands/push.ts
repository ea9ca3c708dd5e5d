import type { Command } from "commander";

/** Placeholder until the registry push command lands. */
export function registerPushCommand(program: Command): void {
  program
    .command("push")
    .description("push an OCI archive to a registry (not implemented yet)")
    .argument("<archive>")
    .action(() => {
      throw new Error("not implemented");
    });
}
