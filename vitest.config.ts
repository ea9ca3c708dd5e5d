import { defineConfig } from "vitest/config";

// One root config with two projects: `unit` (fast, no privileges, no real daemons) and `e2e`
// (real containerd, runc, Nix, registry; needs root). End-to-end files are named *.e2e.test.ts.
const shared = {
  exclude: ["**/node_modules/**", "**/dist/**"],
};

export default defineConfig({
  test: {
    reporters: ["default", "./scripts/summary-reporter.ts"],
    projects: [
      {
        test: {
          ...shared,
          name: "unit",
          include: [
            "packages/*/src/**/*.test.ts",
            "apps/*/src/**/*.test.ts",
            "bench/src/**/*.test.ts",
          ],
          exclude: [...shared.exclude, "**/*.e2e.test.ts"],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          ...shared,
          name: "e2e",
          include: [
            "packages/*/src/**/*.e2e.test.ts",
            "apps/*/src/**/*.e2e.test.ts",
            "nix/tests/**/*.e2e.test.ts",
          ],
          // Copies what other users run (Nix build users, the rootless user) where they can read
          // it, for checkouts they cannot enter; removed after the run.
          globalSetup: ["./scripts/stage-for-other-users.ts"],
          testTimeout: 300_000,
          hookTimeout: 600_000,
          // Real daemons on 2 cores: keep files from starving each other.
          maxWorkers: 2,
          // vitest 4 refuses projects with different maxWorkers in one group: run e2e after unit.
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
