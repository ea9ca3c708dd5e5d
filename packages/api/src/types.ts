// containerd.types: Mount, Descriptor, Platform.
export * from "./gen/containerd/types/descriptor_pb.js";
export * from "./gen/containerd/types/mount_pb.js";
export * from "./gen/containerd/types/platform_pb.js";
