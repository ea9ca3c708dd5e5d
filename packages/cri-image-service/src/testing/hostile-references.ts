// Hostile nix:0 references shared by this package's tests.
export const hash = "0c8x3v4aw9lpqyhjxnbss3mrdr1hw1mm";
export const storePath = `/nix/store/${hash}-nix-image-hello.tar`;

/** References the service must refuse with InvalidArgument, touching nothing. */
export const hostileReferences = [
  "nix:0/etc/passwd",
  "nix:0/nix/store/../../etc",
  `nix:0/nix/store/${hash}-nix-image-hello.tar/../../../etc`,
  `nix:0${storePath}:v1`,
  `nix:0${storePath}:LATEST`,
  `nix:0${storePath}@sha256:${"a".repeat(64)}`,
  `nix:0${storePath}:latest@sha256:${"a".repeat(64)}`,
  `nix:0/nix/store/${hash}-Nix-Image-Hello.tar`,
  `nix:0/nix/store/${hash}-hello+world.tar`,
  `nix:0/nix/store/${hash}-hello.tar/sub`,
  `nix:0//nix/store/${hash}-hello.tar`,
  `nix:0/nix/store//${hash}-hello.tar`,
  "nix:0/nix/store/0c8x3v4aw9lpqyhjxnbss3mrdr1hw1m-short.tar",
  "nix:0/nix/store/0c8x3v4aw9lpqyhjxnbss3mrdr1hw1me-bad-base32.tar",
  "nix:0/nix/store/",
  "nix:0/",
  "nix:0/tmp/x",
  `nix:0/other/store/${hash}-hello.tar`,
  `nix:0${storePath} `,
  `nix:0${storePath}\n`,
];
